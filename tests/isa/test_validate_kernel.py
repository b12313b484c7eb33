"""isa.validate against Linux itself: malformed instructions are refused by the kernel with
the words our ParseError starts with, and every row of the opcode table (but callx) is an
instruction the kernel knows (whatever it then thinks of the operands)."""

from __future__ import annotations

import re

import pytest

from bpfsim.errors import KernelError, ParseError
from bpfsim.isa.insn import Instruction, encode_slots, lddw_pair
from bpfsim.isa.opcodes import OPCODES
from bpfsim.isa.validate import validate


def _kernel() -> tuple[bool, str]:
    try:
        from bpfsim.kernel.probes import kernel_available
    except ImportError:  # pragma: no cover
        import os
        ok = os.geteuid() == 0 and os.path.exists("/sys/fs/bpf")
        return ok, "" if ok else "needs root and bpffs"
    return kernel_available()


_OK, _WHY = _kernel()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(not _OK, reason=_WHY or "no bpf(2)")]

I = Instruction  # noqa: E741
M, E = I(0xB7, 0, 0, 0, 0), I(0x95)
XDP, SOCKET_FILTER = 6, 1


def _kernel_log(insns: list[Instruction], prog_type: int = XDP) -> str | None:
    """None if the kernel loads the program, else the verifier log."""
    from bpfsim.kernel import syscall as sc

    log = sc.Log(1 << 16, 1)
    try:
        fd = sc.prog_load(prog_type, encode_slots(insns), "GPL", log=log)
    except KernelError:
        return log.text
    sc.close(fd)
    return None


BAD = [
    [M, I(0xFF), E], [M, I(0x07, 0, 2, 0, 1), E], [M, I(0x0F, 0, 0, 0, 7), E],
    [M, I(0x07, 0, 0, 5, 1), E], [M, I(0x37, 0, 0, 2, 1), E], [M, I(0xD4, 0, 0, 0, 8), E],
    [M, I(0xDF, 0, 0, 0, 16), E], [M, I(0x7B, 10, 0, -8, 0), I(0xDB, 10, 0, -8, 2), E],
    [M, I(0x63, 10, 0, -8, 0), I(0xC3, 10, 0, -8, 0xE0), E], [M, I(0xBC, 0, 0, 32, 0), E],
    [M, I(0x61, 0, 10, -8, 5), E], [M, I(0x62, 10, 1, -8, 5), E], [M, I(0x95, 1)],
    [M, I(0x05, 1, 0, 0, 0), E], [M, I(0x85, 0, 3, 0, 1), E], [M, I(0x07, 11, 0, 0, 1), E],
    [M, I(0x0F, 0, 12, 0, 0), E], [M, I(0x07, 10, 0, 0, 1), E], [M, I(0x61, 10, 10, -8, 0), E],
    [M, I(0x7B, 10, 0, -8, 0), I(0xDB, 10, 10, -8, 1), E], [M, I(0xBF, 0, 0, 1, 5), E], [M],
    [M, I(0x05, 0, 0, 5, 0), E], [M, I(0x85, 0, 1, 0, 5), E], [M, *lddw_pair(1, 1, 1 << 32 | 3), E],
    [M, I(0x38, 0, 0, 0, 4), E], [M, I(0x86, 0, 0, 0, 5), E], [M, I(0x06, 0, 0, 1, 0), E],
    [M, I(0xE5, 0, 0, 0, 1), E], [I(0x85, 0, 1, 0, 2), I(0x05, 0, 0, 1, 0), E, M, E],
    [I(0x85, 0, 1, 0, 1), M, M, E], [M, I(0x87, 0, 1, 0, 0), E], [M, I(0xDC, 0, 1, 0, 16), E],
]


@pytest.mark.parametrize("insns", BAD, ids=range(len(BAD)))
def test_kernel_refuses_with_our_words(insns):
    with pytest.raises(ParseError) as ei:
        validate(insns)
    words = ei.value.message.split(":")[0]
    log = _kernel_log(insns)
    assert log is not None
    assert words in log, (words, log)


_STRUCTURAL = re.compile(r"unknown opcode|uses reserved fields|invalid atomic opcode|"
                         r"unrecognized bpf_ld_imm64|invalid may_goto|\bR\d+ is invalid")


def test_every_row_is_known_to_the_kernel():
    init = [I(0xB7, r, 0, 0, 0) for r in range(10)] + [I(0x7A, 10, 0, -8, 0)]
    for spec in OPCODES:
        if spec.name == "callx":
            continue  # in the ISA (bpf_conformance), refused by Linux: "unknown opcode 8d"
        f = dict(spec.fixed)
        dst = f.get("dst", 1 if "dst" in spec.operands else 0)
        src = f.get("src", 2 if "src" in spec.operands else 0)
        off = f.get("off", (0 if spec.jump_field == "off" else -8) if "off" in spec.operands else 0)
        imm = f.get("imm", 0 if spec.jump_field == "imm" else (1 << 16 if spec.name == "addr_space_cast"
                                                               else 8 if "imm" in spec.operands else 0))
        if spec.cls in (3, 2) or spec.name.startswith(("lock", "store_release")):
            dst = 10  # stores go to the stack
        if spec.name.startswith("load_acquire"):
            dst, src = 1, 10
        tail: list[Instruction] = []
        if spec.name in ("call local", "lddw_func"):  # target: a subprogram after the exit
            imm = 2 if spec.name == "call local" else 3  # slots to the M after the exit
            tail = [M, E]
        body = lddw_pair(dst, src, imm if spec.name == "lddw_func" else 8) if spec.is_lddw \
            else [I(spec.opcode, dst, src, off, imm)]
        insns = [*init, *body, I(0xB7, 0, 0, 0, 0), E, *tail]
        validate(insns)
        log = _kernel_log(insns, SOCKET_FILTER)
        if log is not None:
            assert not _STRUCTURAL.search(log), (spec.name, log[-300:])


_KERNEL_STRUCTURAL = re.compile(
    r"unknown opcode|uses reserved fields|invalid atomic opcode|invalid atomic operand size|"
    r"unrecognized bpf_ld_imm64|invalid may_goto|\bR\d+ is invalid|frame pointer is read only|"
    r"addr_space_cast insn can only convert|jump out of range|last insn is not|"
    r"call to invalid destination")


@pytest.mark.parametrize("seed", range(2))
def test_random_instructions_agree_with_the_kernel(seed):
    """Random single instructions (all 256 opcodes, field values near the interesting ones):
    whatever the kernel loads we accept, and whatever we accept the kernel does not refuse for
    a structural reason (it may still refuse on semantics: maps, BTF, types)."""
    import random

    rng = random.Random(seed)
    init = [I(0xB7, r, 0, 0, 0) for r in range(10)] + [I(0x7A, 10, 0, -8, 0)]
    for _ in range(1500):
        op = rng.randrange(256)
        fields = (rng.choice([0, 1, 2, 10, 11, rng.randrange(16)]),
                  rng.choice([0, 1, 2, 10, rng.randrange(16)]),
                  rng.choice([0, 1, 8, 16, 32, -8, rng.randrange(-4, 5)]),
                  rng.choice([0, 1, 8, 16, 32, 64, 0x50, 0x51, 0xE1, 0xF1, 0x100, 0x110, 0x10000,
                              rng.randrange(-4, 300)]))
        body = [I(op, *fields)]
        if op == 0x18:
            body = [I(op, *fields, imm64=fields[3] & 0xFFFFFFFF), I(0, lddw_tail=True)]
        insns = [*init, *body, M, E]
        try:
            validate(insns)
            ours = None
        except ParseError as e:
            ours = e.message
        log = _kernel_log(insns, SOCKET_FILTER)
        if log is None:
            assert ours is None, (body[0], ours)
        elif ours is None:
            assert not _KERNEL_STRUCTURAL.search(log), (body[0], log[-300:])
