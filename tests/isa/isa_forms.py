"""Random valid instructions of a given opcode-table row (shared by the property tests and
the fixture generator tests/fixtures/isa/gen_all_forms.py)."""

from __future__ import annotations

import random

from bpfsim.isa.insn import Instruction, lddw_pair
from bpfsim.isa.opcodes import FP, OpSpec

_OFFS = (0, 1, -1, 8, -8, 0x7FFF, -0x8000)
_IMMS = (0, 1, -1, 0x7FFFFFFF, -0x80000000)


def random_insn(spec: OpSpec, rng: random.Random, pc: int, n: int) -> list[Instruction]:
    """The slot(s) of one valid instance of `spec` at slot `pc` of an `n`-slot program
    (jump targets land inside [0, n); the caller keeps them off lddw tails if it cares)."""
    fixed = dict(spec.fixed)
    ops = spec.operands

    def val(k: str) -> int:
        if k in fixed:
            return fixed[k]
        if k not in ops:
            return 0
        if k in ("dst", "src"):
            return rng.randrange(0, FP)  # r10 is never written; keep it out of both
        if k == "off":
            if spec.jump_field == "off":
                return max(-0x8000, min(0x7FFF, rng.randrange(-pc - 1, n - pc - 1)))
            return rng.choice(_OFFS) if rng.random() < 0.5 else rng.randrange(-0x8000, 0x8000)
        if spec.jump_field == "imm":
            return rng.randrange(-pc - 1, n - pc - 1)
        if spec.name == "addr_space_cast":
            return rng.choice((1, 1 << 16))
        return rng.choice(_IMMS) if rng.random() < 0.5 else rng.randrange(-(1 << 31), 1 << 31)

    dst, src, off, imm = (val(k) for k in ("dst", "src", "off", "imm"))
    if spec.is_lddw:
        v = rng.choice((0, 1, (1 << 64) - 1, 1 << 63, rng.randrange(1 << 64), rng.randrange(1 << 32)))
        if spec.name in ("lddw_map_fd", "lddw_map_idx"):
            v &= 0xFFFFFFFF
        return lddw_pair(dst, src, v)
    return [Instruction(spec.opcode, dst, src, off, imm)]
