"""Edge cases of the instruction semantics, checked both on the pure functions of
isa.semantics and through the interpreter (the two must agree: they share the templates)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsim.isa import semantics as sem
from bpfsim.isa.asm import assemble
from bpfsim.isa.insn import Instruction
from bpfsim.vm.interpreter import Interpreter
from bpfsim.vm.memory import AddressSpace

M64, M32 = sem.M64, sem.M32
INT64_MIN, INT32_MIN = 1 << 63, 1 << 31
NEG1 = M64


def run(text: str, r1: int = 0, r2: int = 0) -> int:
    return Interpreter(assemble(text, dialect="conformance"), mem=AddressSpace()).run(r1, r2)


def _run_regs(prog: list[Instruction], r0: int, r1: int) -> int:
    """Run `prog` with r0 = r0 and r1 = r1 (arguments arrive in r1..r5, so r0 comes via r2)."""
    full = [Instruction(0xBF, 0, 2, 0, 0), *prog]
    return Interpreter(full, mem=AddressSpace()).run(r1, r0)


# -- division and modulo ----------------------------------------------------------------------
@pytest.mark.parametrize(("opcode", "off", "dst", "src", "want"), [
    (0x3F, 0, 7, 0, 0),                          # div64 by 0 -> 0
    (0x9F, 0, 7, 0, 7),                          # mod64 by 0 -> dst
    (0x3C, 0, 0x1_0000_0007, 0, 0),              # div32 by 0 -> 0
    (0x9C, 0, 0x1_0000_0007, 0, 7),              # mod32 by 0 -> dst, zero-extended
    (0x3C, 0, 0x1_0000_0007, 0x1_0000_0002, 3),  # div32 uses only the low halves
    (0x3F, 1, INT64_MIN, NEG1, INT64_MIN),       # sdiv64 INT_MIN / -1 -> INT_MIN
    (0x9F, 1, INT64_MIN, NEG1, 0),               # smod64 INT_MIN % -1 -> 0
    (0x3C, 1, INT32_MIN, M32, INT32_MIN),        # sdiv32 INT_MIN / -1 -> INT_MIN (32 bits)
    (0x9C, 1, INT32_MIN, M32, 0),                # smod32 -> 0
    (0x3F, 1, (-7) & M64, 2, (-3) & M64),        # sdiv truncates toward zero
    (0x9F, 1, (-7) & M64, 2, (-1) & M64),        # smod has the dividend's sign
    (0x9F, 1, 7, (-2) & M64, 1),
    (0x3F, 1, 5, 0, 0),                          # sdiv by 0 -> 0
    (0x9F, 1, (-5) & M64, 0, (-5) & M64),        # smod by 0 -> dst
    (0x9C, 1, 0xFFFF_FFFF_FFFF_FFFB, 0, 0xFFFF_FFFB),  # smod32 by 0 -> dst zero-extended
    (0x3C, 1, (-7) & M32, 2, (-3) & M32),
])
def test_division(opcode: int, off: int, dst: int, src: int, want: int) -> None:
    assert sem.alu(opcode, off, 0, dst, src) == want
    prog = [Instruction(opcode, 0, 1, off, 0), Instruction(0x95)]
    assert _run_regs(prog, dst, src) == want


def test_div_imm_is_sign_extended_for_64_bit() -> None:
    # core.c: ALU64_DIV_K divides by (u64)(s64)imm: -1 is 2**64-1
    assert sem.alu(0x37, 0, -1, 12345) == 0
    assert sem.alu(0x34, 0, -1, 0xFFFF_FFFF) == 1   # 32-bit: (u32)imm


# -- shifts -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("opcode", "dst", "src", "want"), [
    (0x6F, 1, 65, 2),                        # lsh64 count & 63
    (0x6C, 1, 33, 2),                        # lsh32 count & 31
    (0x6C, 0x8000_0000, 1, 0),               # lsh32 drops bit 32 (zero-extension)
    (0x7F, INT64_MIN, 64, INT64_MIN),        # rsh64 by 64 == by 0
    (0x7C, 0xFFFF_FFFF_8000_0000, 31, 1),    # rsh32 on the low half only
    (0xCF, INT64_MIN, 63, M64),              # arsh64
    (0xCC, 0x8000_0000, 4, 0xF800_0000),     # arsh32 sign of bit 31, zero-extended
    (0xCC, 0x1_7FFF_FFFF, 4, 0x07FF_FFFF),
    (0xCF, 0x10, (-1) & M64, 0),             # count -1 & 63 = 63
])
def test_shifts(opcode: int, dst: int, src: int, want: int) -> None:
    assert sem.alu(opcode, 0, 0, dst, src) == want
    assert _run_regs([Instruction(opcode, 0, 1, 0, 0), Instruction(0x95)], dst, src) == want


# -- 32-bit zero extension and mov/movsx -------------------------------------------------------
def test_alu32_zero_extends() -> None:
    assert sem.alu(0x04, 0, 1, M64) == 0                 # add32 wraps and clears the top
    assert sem.alu(0x84, 0, 0, INT32_MIN) == INT32_MIN   # neg32 INT_MIN
    assert sem.alu(0x87, 0, 0, INT64_MIN) == INT64_MIN
    assert sem.alu(0xB4, 0, -1, 0) == M32                # mov32 imm -1
    assert sem.alu(0xB7, 0, -1, 0) == M64                # mov64 imm -1 sign-extends


@pytest.mark.parametrize(("opcode", "off", "src", "want"), [
    (0xBF, 8, 0x80, 0xFFFF_FFFF_FFFF_FF80),
    (0xBF, 16, 0x1_8000, 0xFFFF_FFFF_FFFF_8000),
    (0xBF, 32, 0x8000_0000, 0xFFFF_FFFF_8000_0000),
    (0xBC, 8, 0xFF, 0xFFFF_FFFF),
    (0xBC, 16, 0x7FFF, 0x7FFF),
])
def test_movsx(opcode: int, off: int, src: int, want: int) -> None:
    assert sem.alu(opcode, off, 0, 0, src) == want
    assert _run_regs([Instruction(opcode, 0, 1, off, 0), Instruction(0x95)], 0, src) == want


def test_movsx32_with_off_32_does_not_exist() -> None:
    assert sem.alu_template(0xBC, 32, 0) is None


# -- byte order -------------------------------------------------------------------------------
V = 0x1122334455667788


@pytest.mark.parametrize(("opcode", "imm", "want"), [
    (0xD4, 16, 0x7788), (0xD4, 32, 0x55667788), (0xD4, 64, V),
    (0xDC, 16, 0x8877), (0xDC, 32, 0x88776655), (0xDC, 64, 0x8877665544332211),
    (0xD7, 16, 0x8877), (0xD7, 32, 0x88776655), (0xD7, 64, 0x8877665544332211),
])
def test_byte_order(opcode: int, imm: int, want: int) -> None:
    assert sem.alu(opcode, 0, imm, V) == want
    assert _run_regs([Instruction(opcode, 0, 0, 0, imm), Instruction(0x95)], V, 0) == want


# -- jumps ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("opcode", "imm", "dst", "taken"), [
    (0xA5, 0, 1, False),             # jlt64 1 < 0
    (0x65, -1, 0, True),             # jsgt64 0 > -1 (imm sign-extended)
    (0x25, -1, 0, False),            # jgt64 0 > 2**64-1
    (0x66, -1, 0x1_0000_0000, True),  # jsgt32: low half 0 > -1
    (0x26, 1, 0x1_0000_0000, False),  # jgt32 looks at the low half only
    (0xD6, -1, 0x1_FFFF_FFFE, True),  # jsle32 -2 <= -1
    (0xC6, 0, 0x8000_0000, True),    # jslt32 INT_MIN < 0
    (0x46, 0, 0xFFFF_FFFF, False),   # jset32 with 0
    (0x45, 0x100, 0x1_0000_0100, True),
])
def test_conditional_jumps(opcode: int, imm: int, dst: int, taken: bool) -> None:
    assert sem.jump_taken(opcode, imm, dst) is taken
    prog = [Instruction(0xB7, 0, 0, 0, 0), Instruction(opcode, 1, 0, 1, imm),
            Instruction(0x95), Instruction(0xB7, 0, 0, 0, 1), Instruction(0x95)]
    assert Interpreter(prog, mem=AddressSpace()).run(dst) == int(taken)


# -- atomics ----------------------------------------------------------------------------------
def test_atomic_pure() -> None:
    r = sem.atomic(sem.ATOMIC_CMPXCHG, 4, 5, 9, 0x1_0000_0005)   # compares the low 32 bits of r0
    assert (r.store, r.fetched, r.fetch_reg) == (9, 5, "r0")
    r = sem.atomic(sem.ATOMIC_CMPXCHG, 8, 5, 9, 6)
    assert (r.store, r.fetched) == (None, 5)
    r = sem.atomic(0x00 | sem.ATOMIC_FETCH, 4, M32, 2, 0)
    assert (r.store, r.fetched, r.fetch_reg) == (1, M32, "src")
    assert sem.atomic(0x50, 8, 0b1100, 0b1010, 0).store == 0b1000
    assert sem.atomic(0x50, 8, 0b1100, 0b1010, 0).fetched is None
    assert not sem.atomic_valid(0x02, 8)
    assert not sem.atomic_valid(0x00, 2)


def test_atomics_through_the_interpreter() -> None:
    # 32-bit fetch-add zero-extends the fetched value into the source register
    assert run("""
        lddw %r1, 0xffffffffffffffff
        stxdw [%r10-8], %r1
        mov %r2, 1
        lock fetch add32 [%r10-8], %r2
        mov %r0, %r2
        exit""") == M32
    # the add wrapped within 32 bits: the upper half of the slot is untouched
    assert run("""
        lddw %r1, 0xffffffffffffffff
        stxdw [%r10-8], %r1
        mov %r2, 1
        lock add32 [%r10-8], %r2
        ldxdw %r0, [%r10-8]
        exit""") == 0xFFFF_FFFF_0000_0000
    # cmpxchg: success stores src and puts the old value in r0; failure only loads
    assert run("""
        mov %r1, 5
        stxdw [%r10-8], %r1
        mov %r0, 5
        mov %r2, 9
        lock cmpxchg [%r10-8], %r2
        ldxdw %r3, [%r10-8]
        lsh %r0, 8
        or %r0, %r3
        exit""") == (5 << 8) | 9
    assert run("""
        mov %r1, 5
        stxdw [%r10-8], %r1
        mov %r0, 6
        mov %r2, 9
        lock cmpxchg [%r10-8], %r2
        ldxdw %r3, [%r10-8]
        lsh %r0, 8
        or %r0, %r3
        exit""") == (5 << 8) | 5
    assert run("""
        mov %r1, 3
        stxw [%r10-4], %r1
        lddw %r2, 0x1234567800000007
        lock xchg32 [%r10-4], %r2
        ldxw %r0, [%r10-4]
        lsh %r0, 8
        or %r0, %r2
        exit""") == (7 << 8) | 3


def test_sign_extending_loads() -> None:
    mem = AddressSpace()
    region = mem.map(bytearray(b"\x80\xff\x00\x80\xff\xff\xff\xff"))
    for text, want in [("ldxsb %r0, [%r1]", 0xFFFF_FFFF_FFFF_FF80),
                       ("ldxsh %r0, [%r1+2]", 0xFFFF_FFFF_FFFF_8000),
                       ("ldxsw %r0, [%r1+4]", M64),
                       ("ldxw %r0, [%r1+4]", M32),
                       ("ldxh %r0, [%r1]", 0xFF80)]:
        prog = assemble(text + "\nexit", dialect="conformance")
        assert Interpreter(prog, mem=mem).run(region.base) == want, text


# -- the interpreter agrees with the pure semantics -------------------------------------------
ALU_OPS = [0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0]
u64 = st.one_of(st.integers(0, M64), st.sampled_from([0, 1, M64, INT64_MIN, M32, INT32_MIN, 0x80]))


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from(ALU_OPS), cls=st.sampled_from([sem.ALU, sem.ALU64]), x=st.booleans(),
       off=st.sampled_from([0, 1, 8, 16, 32]), imm=st.integers(-(1 << 31), (1 << 31) - 1),
       dst=u64, src=u64)
def test_interpreter_matches_semantics(op: int, cls: int, x: bool, off: int, imm: int,
                                       dst: int, src: int) -> None:
    opcode = op | cls | (sem.SRC_X if x else 0)
    if sem.alu_template(opcode, off, imm) is None:
        return
    want = sem.alu(opcode, off, imm, dst, src)
    prog = [Instruction(0xBF, 0, 2, 0, 0), Instruction(opcode, 0, 1, off, imm), Instruction(0x95)]
    assert Interpreter(prog, mem=AddressSpace()).run(src, dst) == want
