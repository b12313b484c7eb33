"""The opcode table: one row per form, no two rows claiming the same instruction, templates
that name exactly the operands the row takes."""

from __future__ import annotations

import itertools
import re

from bpfsim.isa.opcodes import BY_NAME, OPCODES, candidates, lookup


def test_names_unique():
    assert len(BY_NAME) == len(OPCODES)


def test_no_two_rows_match_one_instruction():
    for a, b in itertools.combinations(OPCODES, 2):
        if a.opcode != b.opcode:
            continue
        fa, fb = dict(a.fixed), dict(b.fixed)
        # rows sharing an opcode must disagree on some field both fix
        assert any(k in fb and fb[k] != v for k, v in fa.items()), (a.name, b.name)


def test_lookup_finds_every_row():
    for s in OPCODES:
        f = dict(s.fixed)
        assert lookup(s.opcode, f.get("src", 0), f.get("off", 0), f.get("imm", 0), f.get("dst", 0)) is s


def test_templates_use_the_same_operands():
    """Both dialects render the same fields (modulo llvm's documented losses)."""
    for s in OPCODES:
        conf = set(re.findall(r"\{(\w+)\}", s.conf))
        for tmpl in filter(None, (s.llvm_rt, s.llvm32 or s.llvm)):
            llvm = set(re.findall(r"\{(\w+)\}", tmpl))
            norm = {"md": {"d", "off"}, "ms": {"s", "off"}, "lo": {"imm64"}, "idx": {"imm"}}
            c = set().union(*(norm.get(x, {x}) for x in conf))
            ll = set().union(*(norm.get(x, {x}) for x in llvm))
            if tmpl == s.llvm_rt or s.llvm_rt is None:
                assert c == ll, (s.name, tmpl)


_ALU = "add sub mul div mod or and lsh rsh arsh xor mov neg sdiv smod"
_JMP = "jeq jgt jge jset jne jsgt jsge jlt jle jslt jsle"
_OTHER = ("movsx864 movsx832 movsx1664 movsx1632 movsx3264 le16 le32 le64 be16 be32 be64 "
          "swap16 swap32 swap64 bswap16 bswap32 bswap64 ldxb ldxh ldxw ldxdw ldxsb ldxsh ldxsw "
          "stb sth stw stdw stxb stxh stxw stxdw lddw ja ja32 exit call")


def test_format_md_mnemonics_present():
    """Every mnemonic FORMAT.md lists for the conformance dialect has a row."""
    words = {s.conf.split("{")[0].strip() for s in OPCODES} | {a for s in OPCODES for a in s.aliases}
    for base in _ALU.split():
        assert base in words and base + "32" in words
    for m in _OTHER.split():
        assert m in words, m
    for j in ["jeq", "jgt", "jge", "jset", "jne", "jsgt", "jsge", "jlt", "jle", "jslt", "jsle"]:
        assert j in words and j + "32" in words
    for op in ("add", "and", "or", "xor"):
        for sfx in ("", "32"):
            assert f"lock {op}{sfx}" in words and f"lock fetch {op}{sfx}" in words
    assert {"lock xchg", "lock xchg32", "lock cmpxchg", "lock cmpxchg32", "call local"} <= words


def test_known_encodings():
    """Spot checks against RFC 9669 / linux/bpf.h numbers."""
    assert lookup(0x18, 0, 0, 0).name == "lddw"
    assert lookup(0x18, 4, 0, 0).name == "lddw_func"
    assert lookup(0x3F, 0, 1, 0).name == "sdiv_reg"
    assert lookup(0x9C, 0, 1, 0).name == "smod32_reg"
    assert lookup(0xBF, 0, 16, 0).name == "movsx1664"
    assert lookup(0xBC, 0, 32, 0) is None  # no 32-bit movsx32
    assert lookup(0xD7, 0, 0, 64).name == "bswap64"
    assert lookup(0xD7, 0, 0, 8) is None
    assert lookup(0xDB, 0, 0, 0xF1).name == "lock cmpxchg"
    assert lookup(0xC3, 0, 0, 0xA1).name == "lock fetch xor32"
    assert lookup(0x06, 0, 0, 5).name == "ja32"
    assert lookup(0x85, 2, 3, 5).name == "call runtime"
    assert lookup(0x8D, 0, 0, 0, dst=3).name == "callx"
    assert lookup(0x91, 0, 0, 0).name == "ldxsb"
    assert lookup(0x20, 0, 0, 4).name == "ldabsw"
    assert not candidates(0xFF)
    opcodes = {s.opcode for s in OPCODES}
    assert len(opcodes) == 129  # 53 ALU, 27 JMP, 23 JMP32, 7 LDX, 4 ST, 4 STX, 4 ATOMIC, 7 LD
