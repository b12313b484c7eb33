"""The raw instruction: five fields of one 8-byte slot, decoded and encoded without judgement.

Validity (which opcodes exist, which fields must be zero) lives in `isa.opcodes` / `isa.validate`;
this module only moves bits.  Must not know about ELF, maps or helpers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from bpfsim.errors import ParseError

INSN_SIZE = 8
_LE = struct.Struct("<BBhi")
_BE = struct.Struct(">BBhi")


@dataclass(frozen=True, slots=True)
class Instruction:
    """One slot.  `off` and `imm` are signed, as in the kernel's `struct bpf_insn`.

    For `lddw` (opcode 0x18) the instruction at slot i carries `imm64`, the full 64-bit
    unsigned constant built from its imm and the next slot's imm; the next slot itself is
    decoded as an Instruction with `lddw_tail=True`.
    """

    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    imm64: int | None = None
    lddw_tail: bool = False

    @property
    def cls(self) -> int:
        return self.opcode & 0x07

    def encode(self, byteorder: str = "little") -> bytes:
        """The 8 bytes of this slot (a lddw head encodes only its own slot; see encode_program)."""
        if byteorder == "little":
            return _LE.pack(self.opcode, (self.src << 4) | self.dst, self.off, self.imm)
        return _BE.pack(self.opcode, (self.dst << 4) | self.src, self.off, self.imm)


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def decode_slots(data: bytes, byteorder: str = "little") -> list[Instruction]:
    """Decode every 8-byte slot.  Raises ParseError for a length that is not a multiple of 8
    and for a truncated lddw (no second slot)."""
    if len(data) % INSN_SIZE:
        raise ParseError(f"program length {len(data)} is not a multiple of {INSN_SIZE}",
                         offset=len(data) - len(data) % INSN_SIZE)
    unpack = _LE.unpack_from if byteorder == "little" else _BE.unpack_from
    n = len(data) // INSN_SIZE
    out: list[Instruction] = []
    i = 0
    while i < n:
        opcode, regs, off, imm = unpack(data, i * INSN_SIZE)
        if byteorder == "little":
            dst, src = regs & 0xF, regs >> 4
        else:
            dst, src = regs >> 4, regs & 0xF
        if opcode == 0x18:
            if i + 1 >= n:
                raise ParseError("truncated lddw: missing second slot", insn=i)
            op2, regs2, off2, imm2 = unpack(data, (i + 1) * INSN_SIZE)
            imm64 = (imm & 0xFFFFFFFF) | ((imm2 & 0xFFFFFFFF) << 32)
            out.append(Instruction(opcode, dst, src, off, imm, imm64=imm64))
            t_dst, t_src = (regs2 & 0xF, regs2 >> 4) if byteorder == "little" else (regs2 >> 4, regs2 & 0xF)
            out.append(Instruction(op2, t_dst, t_src, off2, imm2, lddw_tail=True))
            i += 2
            continue
        out.append(Instruction(opcode, dst, src, off, imm))
        i += 1
    return out


def encode_slots(insns: list[Instruction], byteorder: str = "little") -> bytes:
    """Inverse of decode_slots."""
    return b"".join(i.encode(byteorder) for i in insns)


def lddw_pair(dst: int, src: int, imm64: int) -> list[Instruction]:
    """The two slots of `lddw dst, imm64` with pseudo source `src`."""
    imm64 &= (1 << 64) - 1
    lo, hi = _signed32(imm64), _signed32(imm64 >> 32)
    return [Instruction(0x18, dst, src, 0, lo, imm64=imm64), Instruction(0, 0, 0, 0, hi, lddw_tail=True)]
