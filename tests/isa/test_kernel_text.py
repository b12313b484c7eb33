"""The kernel dialect of the disassembler (kernel/bpf/disasm.c: print_bpf_insn, the text of
the verifier log): unit checks, and every row against Linux's own listing (the "Live regs
before insn" block a log_level 2 BPF_PROG_LOAD prints)."""

from __future__ import annotations

import contextlib
import random
import re

import pytest
from isa_forms import random_insn

from bpfsim.errors import KernelError
from bpfsim.isa.disasm import format_insn
from bpfsim.isa.insn import Instruction, encode_slots, lddw_pair
from bpfsim.isa.opcodes import OPCODES
from bpfsim.uapi.helper_ids import HELPER_NAMES


def _names(src: int, imm: int) -> str:
    """disasm.c: __func_get_name (func_id_str[0] is "bpf_unspec")."""
    return "bpf_unspec" if imm == 0 else HELPER_NAMES.get(imm, "unknown")


def test_kernel_dialect_examples():
    k = {"dialect": "kernel", "call_name": _names}
    assert format_insn(Instruction(0xB7, 0, 0, 0, 0), **k) == "(b7) r0 = 0"
    assert format_insn(Instruction(0x07, 1, 0, 0, -8), **k) == "(07) r1 += -8"
    assert format_insn(Instruction(0x7B, 10, 0, -8, 0), **k) == "(7b) *(u64 *)(r10 -8) = r0"
    assert format_insn(Instruction(0x61, 1, 2, 0, 0), **k) == "(61) r1 = *(u32 *)(r2 +0)"
    assert format_insn(Instruction(0x66, 5, 0, 1, 7), **k) == "(66) if w5 s> 0x7 goto pc+1"
    assert format_insn(Instruction(0x16, 0, 0, 0, -1), **k) == "(16) if w0 == 0xffffffff goto pc+0"
    assert format_insn(Instruction(0x85, 0, 0, 0, 5), **k) == "(85) call bpf_ktime_get_ns#5"
    assert format_insn(Instruction(0x85, 0, 1, 0, 3), **k) == "(85) call pc+3"
    assert format_insn(Instruction(0xDB, 10, 3, -8, 0x41), **k) == \
        "(db) r3 = atomic64_fetch_or((u64 *)(r10 -8), r3)"
    assert format_insn(Instruction(0xC3, 10, 4, -8, 0x51), **k) == \
        "(c3) r4 = atomic_fetch_and((u32 *)(r10 -8), r4)"
    assert format_insn(lddw_pair(6, 0, 0x1122334455667788)[0], **k) == "(18) r6 = 0x1122334455667788"
    assert format_insn(Instruction(0x06, 0, 0, 0, 0), **k) == "(06) gotol pc+0"
    assert format_insn(Instruction(0xFF), **k) == "(ff) <unknown>"


def _kernel() -> tuple[bool, str]:
    try:
        from bpfsim.kernel.probes import kernel_available
    except ImportError:  # pragma: no cover
        return False, "no kernel backend"
    return kernel_available()


_OK, _WHY = _kernel()
_LIVE = re.compile(r"^\s*(\d+): [0-9.]{10} (\(.*)$")
# rows whose structural checks need objects we do not create here (maps, BTF, kfuncs)
_SKIP = {"callx", "call local", "lddw_func", "lddw_map_fd", "lddw_map_value", "lddw_btf_id",
         "lddw_map_idx", "lddw_map_idx_value", "call runtime", "exit"}


@pytest.mark.kernel
@pytest.mark.skipif(not _OK, reason=_WHY or "no bpf(2)")
@pytest.mark.parametrize("seed", range(2))
def test_every_row_prints_like_the_kernel(seed):
    from bpfsim.kernel import syscall as sc

    rng = random.Random(seed)
    checked = 0
    for spec in OPCODES:
        if spec.name in _SKIP:
            continue
        for _ in range(3):
            init = [Instruction(0xB7, r, 0, 0, 0) for r in range(10)]
            body = random_insn(spec, rng, pc=len(init), n=len(init) + 4)
            if spec.jump_field:  # a target inside the program and reachable
                b = body[0]
                body = [Instruction(b.opcode, b.dst, b.src, 0 if spec.jump_field == "off" else b.off,
                                    0 if spec.jump_field == "imm" else b.imm)]
            insns = [*init, *body, Instruction(0xB7), Instruction(0x95)]
            log = sc.Log(1 << 20, 2)
            with contextlib.suppress(KernelError):
                sc.close(sc.prog_load(1, encode_slots(insns), "GPL", log=log))
            listing = {int(m.group(1)): m.group(2) for m in map(_LIVE.match, log.text.splitlines()) if m}
            pc = len(init)
            assert listing.get(pc) == format_insn(insns[pc], dialect="kernel", call_name=_names), spec.name
            checked += 1
    assert checked > 300
