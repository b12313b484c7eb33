"""The assembler: the conformance dialect (every vendored .data program), llvm-objdump's
syntax (checked against llvm-mc-19's encoding of tests/fixtures/isa/syntax.s), labels,
round trips through the disassembler, and one clear ParseError per mistake."""

from __future__ import annotations

import struct

import pytest
from elftools.elf.elffile import ELFFile
from isa_fixtures import FIXTURES, asm_and_raw, conformance_files

from bpfsim.errors import ParseError
from bpfsim.isa.asm import assemble
from bpfsim.isa.disasm import format_program
from bpfsim.isa.insn import Instruction, decode_slots, encode_slots
from bpfsim.isa.validate import validate

CONF = conformance_files()


@pytest.mark.skipif(not CONF, reason="no conformance .data files")
def test_every_conformance_program_assembles_validates_and_round_trips():
    assert len(CONF) == 313
    for path in CONF:
        text, raw = asm_and_raw(path)
        insns = assemble(text, dialect="conformance")
        assert assemble(text) == insns, path.name  # auto-detection picks the same dialect
        assert decode_slots(encode_slots(insns)) == insns
        validate(insns)
        for dialect in ("conformance", "llvm"):
            for labels in (False, True):
                back = assemble(format_program(insns, dialect=dialect, labels=labels))
                assert encode_slots(back) == encode_slots(insns), (path.name, dialect, labels)
        if raw:
            assert encode_slots(insns) == b"".join(struct.pack("<Q", w) for w in raw), path.name


def test_lddw_data_raw_encoding():
    text = "lddw %r0, 0x1122334455667788\nexit"
    assert encode_slots(assemble(text)) == struct.pack("<QQQ", 0x5566778800000018,
                                                        0x1122334400000000, 0x95)


def _text_section(name: str) -> bytes:
    with open(FIXTURES / name, "rb") as f:
        return ELFFile(f).get_section_by_name(".text").data()


def test_llvm_syntax_matches_llvm_mc():
    """Our llvm-dialect assembler encodes syntax.s exactly as llvm-mc-19 did."""
    ours = encode_slots(assemble((FIXTURES / "syntax.s").read_text(), dialect="llvm"))
    assert ours == _text_section("syntax.o")


def test_objdump_listing_assembles_back():
    """llvm-objdump output assembles back to the object's code, except that llvm prints a
    local call (src=1) like a helper call (`call 0xb`): that is what round-trip mode is for."""
    listing = (FIXTURES / "golden" / "syntax.o.v4.txt").read_text()
    body = [ln for ln in listing.splitlines() if ln.startswith(" ") and ":\t" in ln]
    ours = assemble("\n".join(body), dialect="llvm")
    ref = decode_slots(_text_section("syntax.o"))
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        if b.opcode == 0x85 and b.src == 1:
            assert a == Instruction(0x85, 0, 0, 0, b.imm)
        else:
            assert a == b


def test_conformance_dialect_details():
    insns = assemble("""
        mov %r0, 0
        jne32 %r0, 1, exit   # implicit label: the first exit
        ja32 +0
        call local f
        call %r2
        call 5
        lock fetch add32 [%r10-8], %r1
        ldxsh %r3, [%r1+0x10]
        stw [%r1], 0xffffffff
        movsx1632 %r1, %r2
        exit
    f:
        be16 %r0
        exit
    """)
    assert insns[1] == Instruction(0x56, 0, 0, 8, 1)
    assert insns[2] == Instruction(0x06, 0, 0, 0, 0)
    assert insns[3] == Instruction(0x85, 0, 1, 0, 7)
    assert insns[4] == Instruction(0x8D, 2, 0, 0, 0)  # callx: register in dst
    assert insns[5] == Instruction(0x85, 0, 0, 0, 5)
    assert insns[6] == Instruction(0xC3, 10, 1, -8, 0x01)
    assert insns[7] == Instruction(0x89, 3, 1, 16, 0)
    assert insns[8] == Instruction(0x62, 1, 0, 0, -1)
    assert insns[9] == Instruction(0xBC, 1, 2, 16, 0)
    assert insns[11] == Instruction(0xDC, 0, 0, 0, 16)


def test_llvm_dialect_details():
    insns = assemble("""
        r1 = 0x1122334455667788 ll
        w1 += w2
        if r1 > 0x5 goto +3 <LBB0_2>
        *(u32 *)(r10 - 0x4) = r1
        r0 = *(u64 *)(r1 + 0x8)
        lock *(u64 *)(r1 + 0x0) += r2
        call 0x5
        exit
    """, dialect="llvm")
    assert insns[0].imm64 == 0x1122334455667788
    assert insns[2] == Instruction(0x0C, 1, 2, 0, 0)
    assert insns[3] == Instruction(0x25, 1, 0, 3, 5)
    assert insns[4] == Instruction(0x63, 10, 1, -4, 0)
    assert insns[5] == Instruction(0x79, 0, 1, 8, 0)
    assert insns[6] == Instruction(0xDB, 1, 2, 0, 0)
    assert insns[7] == Instruction(0x85, 0, 0, 0, 5)


@pytest.mark.parametrize("text, line, words", [
    ("mov %r0, 1\nfoo %r1\nexit", 2, "unknown mnemonic"),
    ("mov %r0, %r16\nexit", 1, "bad operands"),
    ("ja nowhere\nexit", 1, "undefined label"),
    ("a:\na:\nexit", 2, "duplicate label"),
    ("mov %r0, 0x100000000\nexit", 1, "does not fit"),
    ("ldxw %r0, [%r1+40000]\nexit", 1, "does not fit"),
    ("lddw %r0, 0x10000000000000000\nexit", 1, "does not fit"),
    ("exit\nr0 = = 1", 2, "cannot parse"),
    ("ja +40000\nexit", 1, "jump offset"),
    ("mov %r0\nexit", 1, "bad operands"),
])
def test_errors_name_the_line(text, line, words):
    with pytest.raises(ParseError) as ei:
        assemble(text)
    assert f"line {line}" in str(ei.value) and words in str(ei.value)
    assert ei.value.offset == line


def test_bad_dialect():
    with pytest.raises(ParseError):
        assemble("exit", dialect="nasm")
