"""Structural validation: one ParseError naming the instruction for each kind of defect, and
nothing but ParseError whatever the bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsim.errors import ParseError
from bpfsim.isa.asm import assemble
from bpfsim.isa.insn import Instruction, encode_slots, lddw_pair
from bpfsim.isa.validate import decode_program, validate

EXIT = Instruction(0x95)


def _err(insns: list[Instruction]) -> ParseError:
    with pytest.raises(ParseError) as ei:
        validate(insns)
    return ei.value


@pytest.mark.parametrize("insn, words", [
    (Instruction(0xFF), "unknown opcode ff"),
    (Instruction(0x07, 1, 2, 0, 1), "reserved field src"),          # add64 imm with src set
    (Instruction(0x0F, 1, 2, 0, 7), "reserved field imm"),          # add64 reg with imm set
    (Instruction(0x07, 1, 0, 5, 1), "reserved field off is 0x5"),   # add: off must be 0
    (Instruction(0x37, 1, 0, 2, 1), "invalid off 0x2"),             # div: off 0 or 1
    (Instruction(0xD4, 1, 0, 0, 8), "invalid imm 0x8"),             # END width 16/32/64
    (Instruction(0xDF, 1, 0, 0, 16), "unknown opcode df"),        # ALU64 END TO_BE
    (Instruction(0xDB, 1, 2, 0, 0x02), "invalid imm 0x2"),          # atomic op
    (Instruction(0xC3, 1, 2, 0, 0xE0), "invalid imm 0xe0"),         # xchg without fetch
    (Instruction(0xBC, 1, 2, 32, 0), "invalid off 0x20"),           # movsx32 in ALU32
    (Instruction(0x61, 1, 2, 0, 5), "reserved field imm"),          # ldxw with imm
    (Instruction(0x62, 1, 2, 0, 5), "reserved field src"),          # st with src
    (Instruction(0x95, 1), "reserved field dst"),                   # exit with dst
    (Instruction(0x05, 1, 0, 0, 0), "reserved field dst"),          # ja with dst
    (Instruction(0x85, 0, 3, 0, 1), "invalid src 0x3"),             # call src 3
    (Instruction(0x07, 11, 0, 0, 1), "R11 is invalid"),
    (Instruction(0x0F, 1, 12, 0, 0), "R12 is invalid"),
    (Instruction(0x07, 10, 0, 0, 1), "frame pointer is read only"),
    (Instruction(0x61, 10, 1, 0, 0), "frame pointer is read only"),
    (Instruction(0xDB, 1, 10, 0, 0x01), "frame pointer is read only"),  # fetch writes src
    (Instruction(0xBF, 1, 2, 1, 5), "addr_space_cast"),
])
def test_bad_instruction(insn, words):
    e = _err([insn, EXIT])
    assert words in str(e), str(e)
    if not any(w in words for w in ("unknown", "R1", "frame", "addr_space_cast")):
        assert any(w in str(e) for w in ("uses reserved fields", "uses invalid atomic opcode")), str(e)
    assert e.insn == 0


def test_store_through_r10_is_fine():
    validate([Instruction(0x7B, 10, 1, -8, 0), Instruction(0xDB, 10, 1, -8, 0), EXIT])


def test_lddw_rules():
    head, tail = lddw_pair(1, 0, 5)
    assert "missing second slot" in str(_err([EXIT, head]))
    assert _err([head, Instruction(0x18, 0, 0, 0, 0, lddw_tail=True), EXIT]).insn == 1
    assert _err([head, Instruction(0, 1, 0, 0, 0, lddw_tail=True), EXIT]).insn == 1
    assert _err([head, Instruction(0, 0, 0, 2, 0, lddw_tail=True), EXIT]).insn == 1
    m_head, m_tail = lddw_pair(1, 1, 1 << 32 | 3)  # map fd with a value offset
    assert "second slot imm must be 0" in str(_err([m_head, m_tail, EXIT]))
    v_head, v_tail = lddw_pair(1, 2, 1 << 32 | 3)  # map value + offset: fine
    validate([v_head, v_tail, EXIT])
    assert "without a first" in str(_err([tail, EXIT]))


def test_control_flow_rules():
    e = _err(assemble("ja +5\nexit"))
    assert "jump out of range" in str(e) and e.insn == 0
    assert _err(assemble("ja -2\nexit")).insn == 0
    e = _err(assemble("ja +1\nlddw %r0, 1\nexit"))
    assert "jump into the middle of ldimm64 insn 1" in str(e)
    e = _err(assemble("call local +1\nlddw %r0, 1\nexit"))
    assert "call into the middle of ldimm64 insn 1" in str(e)
    e = _err(assemble("call local +5\nexit"))
    assert "call to invalid destination" in str(e)
    # subprograms: no jump across a boundary, no fall-through into the next one
    e = _err(assemble("call local f\nja +1\nexit\nf:\nmov %r0, 0\nexit"))
    assert "jump out of range from insn 1 to 3" in str(e)
    e = _err(assemble("call local f\nmov %r0, 1\nf:\nmov %r0, 0\nexit"))
    assert "last insn is not an exit or jmp" in str(e) and e.insn == 1
    e = _err(assemble("lddw %r1, func +2\nexit\nmov %r0, 0"))  # lddw func target starts one
    assert e.insn == 3
    validate(assemble("call local f\nexit\nf:\nmov %r0, 0\nexit"))
    e = _err(assemble("mov %r0, 0"))
    assert "last insn is not an exit or jmp" in str(e) and e.insn == 0
    validate(assemble("mov %r0, 0\nja -2"))
    assert "empty" in str(_err([]))


def test_decode_program():
    insns = decode_program(encode_slots(assemble("lddw %r1, 7\nexit")))
    assert len(insns) == 3 and insns[0].imm64 == 7
    with pytest.raises(ParseError, match="not a multiple of 8"):
        decode_program(b"\x95" * 9)
    with pytest.raises(ParseError, match="truncated lddw"):
        decode_program(encode_slots(assemble("exit"))[:0] + bytes([0x18]) + bytes(7))
    big = decode_program(encode_slots(assemble("mov %r1, 2\nexit"), "big"), "big")
    assert big == assemble("mov %r1, 2\nexit")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=96), st.sampled_from(["little", "big"]))
def test_random_bytes_only_parse_error(data, order):
    with contextlib.suppress(ParseError):
        decode_program(data, order)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x05, 0x15, 0x18, 0x85, 0x95, 0xB7, 0x06, 0x00, 0xDB]),
                          st.integers(0, 15), st.integers(0, 15), st.integers(-4, 4),
                          st.integers(-4, 4)), max_size=12))
def test_structured_random_programs_only_parse_error(fields):
    """Near-valid programs (jumps, lddw, calls with small fields) reach the deeper checks."""
    data = encode_slots([Instruction(o, d, s, off, imm) for o, d, s, off, imm in fields])
    with contextlib.suppress(ParseError):
        decode_program(data)
