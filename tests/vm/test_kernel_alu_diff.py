"""Random ALU/JMP programs (optionally with stack loads, stores and atomics): the kernel (XDP
test_run) and the interpreter must leave the same values in r0..r9.  This checks isa.semantics
against Linux itself, not against typed-in numbers."""

from __future__ import annotations

import random
import struct

import pytest

from bpfsim.errors import KernelError
from bpfsim.isa.insn import Instruction, encode_slots, lddw_pair
from bpfsim.vm.interpreter import Interpreter
from bpfsim.vm.memory import AddressSpace

I = Instruction  # noqa: E741
ALU_OPS = [0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0]
JMP_OPS = [0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xA0, 0xB0, 0xC0, 0xD0]
INTERESTING = [0, 1, -1, 2, -2, 7, 0x7FFFFFFF, -0x80000000, 0xFFFF, 0x8000, 0x80, 31, 32, 63]
VALUES = [0, 1, (1 << 64) - 1, 1 << 63, (1 << 63) - 1, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF,
          0xFFFFFFFF80000000, 0x8000, 0xFF, 2, 3]


def _value(rng: random.Random) -> int:
    return rng.choice(VALUES) if rng.random() < 0.5 else rng.getrandbits(64)


def _imm(rng: random.Random) -> int:
    return rng.choice(INTERESTING) if rng.random() < 0.6 else rng.randint(-(1 << 31), (1 << 31) - 1)


def _alu(rng: random.Random) -> Instruction:
    cls = rng.choice([0x04, 0x07])
    width = 32 if cls == 0x04 else 64
    if rng.random() < 0.08:                       # byte order
        return I(rng.choice([0xD4, 0xDC, 0xD7]), rng.randint(0, 9), 0, 0, rng.choice([16, 32, 64]))
    op = rng.choice(ALU_OPS)
    dst, src = rng.randint(0, 9), rng.randint(0, 9)
    if op == 0x80:                                # neg: K form, no operands
        return I(cls | op, dst)
    off = 0
    if op in (0x30, 0x90):
        off = rng.choice([0, 1])
    x = rng.random() < 0.6
    if op == 0xB0 and x and rng.random() < 0.4:   # movsx
        off = rng.choice([8, 16, 32] if width == 64 else [8, 16])
    if x:
        return I(cls | 0x08 | op, dst, src, off, 0)
    imm = _imm(rng)
    if op in (0x60, 0x70, 0xC0):
        imm = rng.randrange(width)                # the verifier rejects larger K shifts
    if op in (0x30, 0x90) and imm == 0:
        imm = 3                                   # and K division by zero
    return I(cls | op, dst, 0, off, imm)


SIZE_BITS = {4: 0x00, 2: 0x08, 1: 0x10, 8: 0x18}
ATOMIC_OPS = [0x00, 0x01, 0x40, 0x41, 0x50, 0x51, 0xA0, 0xA1, 0xE1, 0xF1]
SLOTS = range(3, 11)   # stack slots r10-24 .. r10-80 (the wrapper uses r10-8 and r10-16)


def _mem(rng: random.Random) -> Instruction:
    """A stack access: store, store-imm, load, sign-extending load, atomic, acquire/release."""
    kind = rng.random()
    size = rng.choice([4, 8]) if kind >= 0.75 and kind < 0.9 else rng.choice([1, 2, 4, 8])
    if 0.6 <= kind < 0.75 and size == 8:
        size = 4
    off = -8 * rng.choice(SLOTS) + rng.randrange(0, 8, size)
    sz, reg = SIZE_BITS[size], rng.randint(0, 9)
    if kind < 0.25:
        return I(0x63 | sz, 10, reg, off)                       # stx
    if kind < 0.35:
        return I(0x62 | sz, 10, 0, off, _imm(rng))              # st imm
    if kind < 0.6:
        return I(0x61 | sz, reg, 10, off)                       # ldx
    if kind < 0.75:
        return I(0x81 | sz, reg, 10, off)                       # ldxs
    if kind < 0.9:
        return I(0xC3 | sz, 10, reg, off, rng.choice(ATOMIC_OPS))
    if rng.random() < 0.5:
        return I(0xC3 | sz, reg, 10, off, 0x100)                # load-acquire
    return I(0xC3 | sz, 10, reg, off, 0x110)                    # store-release


def random_body(rng: random.Random, n: int, memory: bool = False) -> list[Instruction]:
    body: list[Instruction] = []
    for r in range(10):
        body += lddw_pair(r, 0, _value(rng))
    if memory:
        body += [I(0x7A, 10, 0, -8 * k, 0) for k in SLOTS]
    for _ in range(n):
        if memory and rng.random() < 0.35:
            body.append(_mem(rng))
            continue
        if rng.random() < 0.2:
            cls = rng.choice([0x05, 0x06])
            op = rng.choice(JMP_OPS)
            if rng.random() < 0.5:
                body.append(I(cls | 0x08 | op, rng.randint(0, 9), rng.randint(0, 9), 1, 0))
            else:
                body.append(I(cls | op, rng.randint(0, 9), 0, 1, _imm(rng)))
        body.append(_alu(rng))
    return body


def kernel_regs(body: list[Instruction]) -> list[int] | None:
    from bpfsim.kernel import syscall
    from bpfsim.uapi.constants import ProgType

    head = [I(0x61, 6, 1, 0), I(0x61, 7, 1, 4), I(0xBF, 8, 6), I(0x07, 8, 0, 0, 80),
            I(0x2D, 8, 7, 0),                     # patched below: if r8 > r7 goto fail
            I(0x7B, 10, 6, -8)]                   # spill the data pointer
    tail = [I(0x7B, 10, 9, -16), I(0x79, 9, 10, -8)]
    tail += [I(0x7B, 9, r, 8 * r) for r in range(9)]
    tail += [I(0x79, 8, 10, -16), I(0x7B, 9, 8, 72), I(0xB7, 0, 0, 0, 2), I(0x95)]
    fail = [I(0xB7, 0, 0, 0, 0), I(0x95)]
    prog = head + body + tail + fail
    prog[4] = I(0x2D, 8, 7, len(prog) - 2 - 5)
    try:
        fd = syscall.prog_load(ProgType.XDP, encode_slots(prog), "GPL", name="alu_diff")
    except KernelError:
        return None
    try:
        res = syscall.prog_test_run(fd, bytes(80))
    finally:
        syscall.close(fd)
    assert res.retval == 2
    return list(struct.unpack_from("<10Q", res.data))


def sim_regs(body: list[Instruction]) -> list[int]:
    out = []
    for r in range(10):
        prog = body + [I(0xBF, 0, r), I(0x95)]
        out.append(Interpreter(prog, mem=AddressSpace()).run())
    return out


@pytest.mark.kernel
@pytest.mark.parametrize("memory", [False, True], ids=["alu", "alu+stack"])
@pytest.mark.parametrize("seed", range(40))
def test_random_alu_programs_match_the_kernel(seed: int, memory: bool) -> None:
    try:
        from bpfsim.kernel.probes import kernel_available
    except ImportError:  # pragma: no cover
        pytest.skip("bpfsim.kernel.probes is missing")
    ok, why = kernel_available()
    if not ok:
        pytest.skip(why)
    rng = random.Random(seed)
    loaded = 0
    for _ in range(10):
        body = random_body(rng, 25, memory)
        want = kernel_regs(body)
        if want is None:
            continue
        loaded += 1
        assert sim_regs(body) == want, [str(i) for i in body]
    assert loaded >= 5   # the generator avoids what the verifier rejects; most programs load
