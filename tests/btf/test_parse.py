"""Parsing, serialising and querying `.BTF`; malformed input gives ParseError only."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfsim.btf import Btf, BtfType, Member
from bpfsim.btf.dump import dump_raw
from bpfsim.errors import BpfError, LinkError, ParseError, UsageError

from .conftest import raw_btf

OBJECTS = ["types.bpf.o", "core.bpf.o"]


@pytest.mark.parametrize("obj", OBJECTS)
def test_round_trip_is_byte_exact(obj):
    data = raw_btf(obj)
    assert Btf.parse(data).to_bytes() == data


def test_big_endian_round_trip():
    btf = Btf.parse(raw_btf("types.bpf.o"))
    btf.byteorder = "big"
    be = btf.to_bytes()
    assert be[:2] == b"\xeb\x9f"
    again = Btf.parse(be, "big")
    assert dump_raw(again) == dump_raw(btf)
    with pytest.raises(ParseError, match="big-endian"):
        Btf.parse(be, "little")


def test_queries(types_btf):
    b = types_btf
    assert b.types[0].kind == "UNKNOWN" and b.kind_of(0) == "void"
    rich = b.find("rich", "STRUCT")
    t = b.type(rich)
    assert (t.kind, t.name, t.size) == ("STRUCT", "rich", 192)
    assert [m.name for m in t.members[:3]] == ["i", "name", "raw"]
    bits = b.type(b.find("bits"))
    assert [(m.name, m.bit_offset, m.bitfield_size) for m in bits.members] == [
        ("a", 0, 3), ("b", 3, 5), ("c", 8, 1), ("d", 9, 40), ("e", 49, 4)]
    assert b.size_of(b.find("u64_t")) == 8
    cv = next(m for m in t.members if m.name == "cv")
    assert b.type(cv.type).kind == "CONST"
    assert b.resolved(cv.type).kind == "INT" and b.size_of(cv.type) == 4
    matrix = next(m for m in t.members if m.name == "matrix")
    assert b.size_of(matrix.type) == 24
    uptr = next(m for m in t.members if m.name == "uptr")
    assert b.size_of(uptr.type) == 8 and b.type(b.type(uptr.type).type).kind == "TYPE_TAG"
    sign = b.type(b.find("sign", "ENUM"))
    assert sign.kflag and [(v.name, v.value) for v in sign.values] == [("NEG", -2), ("ZERO", 0), ("POS", 3)]
    big = b.type(b.find("big", "ENUM64"))
    assert [(v.name, v.value) for v in big.values] == [("SMALL", 1), ("HUGE", 0x123456789A)]
    assert b.type(b.find("sbig")).values[0].value == -0x100000000
    helper = b.type(b.find("helper", "FUNC"))
    assert helper.linkage == 0
    assert [p.name for p in b.type(helper.type).params] == ["x", "b"]
    assert b.decl_tags(b.find("helper")) == ["func_tag"]
    assert b.decl_tags(b.find("helper"), 0) == ["param_tag"]
    assert b.decl_tags(rich, 0) == ["field_tag"]
    assert b.type(b.find("fwd_only")).kind == "FWD"
    assert b.type(b.find("static_var", "VAR")).linkage == 0
    assert b.describe(rich) == "struct rich"


def test_lookup_errors(types_btf):
    with pytest.raises(LinkError, match="no STRUCT 'nope'"):
        types_btf.find("nope", "STRUCT")
    with pytest.raises(LinkError):
        types_btf.find_datasec(".nothere")
    with pytest.raises(LinkError, match="no BTF type with id 100000"):
        types_btf.type(100000)
    with pytest.raises(UsageError, match="has no size"):
        types_btf.size_of(types_btf.find("prog", "FUNC"))
    with pytest.raises(UsageError, match="unknown BTF kind"):
        types_btf.find("rich", "STRUKT")


def test_fixup_datasec(types_btf):
    """libbpf's btf_fixup_datasec: section size from ELF, global VAR offsets from symbols,
    entries sorted by offset; `static_var` keeps clang's offset.  The kernel's copy (as bpftool
    shows it for the loaded .bss map) is the reference."""
    import json

    from bpfsim.btf.dump import type_fields

    from .conftest import FIXTURES

    golden = json.loads((FIXTURES / "types.maps.json").read_text())
    for name, sec in (("types_bss", ".bss"), ("types_data", ".data"), ("types_rodata", ".rodata")):
        ours = type_fields(types_btf, types_btf.find_datasec(sec))
        kernel = golden[name]["value_type"]
        assert ours == kernel


def test_fixup_datasec_errors():
    from .conftest import load_btf

    b = load_btf("types.bpf.o")
    with pytest.raises(LinkError, match="failed to determine size"):
        b.fixup_datasec(".bss", 0, {})
    with pytest.raises(LinkError, match="failed to find ELF symbol for VAR 'bss_var'"):
        b.fixup_datasec(".bss", 208, {})
    b.fixup_datasec(".data", 4, {"data_var": 0}, hidden=["data_var"])
    assert b.type(b.find("data_var", "VAR")).linkage == 0


def test_built_btf_serialises():
    b = Btf()
    i = b.add(BtfType("INT", "int", size=4, encoding=1, nr_bits=32))
    s = b.add(BtfType("STRUCT", "pair", size=8, members=[Member("a", i, 0), Member("b", i, 32)]))
    again = Btf.parse(b.to_bytes())
    assert dump_raw(again) == dump_raw(b)
    assert again.find("pair") == s and again.size_of(s) == 8


def test_guards_against_deep_and_cyclic_pointers():
    b = Btf()
    prev = b.add(BtfType("INT", "int", size=4, encoding=1, nr_bits=32))
    for k in range(200):
        prev = b.add(BtfType("STRUCT", f"s{k}", size=4, members=[Member("m", prev, 0)]))
    with pytest.raises(ParseError, match="nests more than 128 levels"):
        Btf.parse(b.to_bytes())
    loop = b.add(BtfType("PTR"))
    b.types[loop].type = loop            # a pointer to itself: legal to hold, finite to describe
    assert b.describe(loop).startswith("(deep type) * *")


def _hdr(type_len: int, str_len: int, magic: int = 0xEB9F, version: int = 1) -> bytes:
    return struct.pack("<HBBIIIII", magic, version, 0, 24, 0, type_len, type_len, str_len)


INT_REC = struct.pack("<IIII", 1, 1 << 24, 4, (1 << 24) | 32)


@pytest.mark.parametrize("data, msg", [
    (b"", "too short"),
    (_hdr(0, 1, magic=0x1234) + b"\0", "invalid BTF magic"),
    (_hdr(0, 1, version=2) + b"\0", "unsupported BTF version"),
    (_hdr(16, 4) + INT_REC + b"\0int", "invalid BTF string section"),
    (_hdr(16, 5) + INT_REC, "past the end"),
    (_hdr(12, 5) + INT_REC[:12] + b"\0int\0", "truncated"),
    (_hdr(12, 1) + struct.pack("<III", 0, 25 << 24, 0) + b"\0", "unsupported BTF kind 25"),
    (_hdr(16, 5) + struct.pack("<IIII", 99, 1 << 24, 4, 32) + b"\0int\0", "string offset 99"),
    (_hdr(12, 1) + struct.pack("<III", 0, 2 << 24, 7) + b"\0", "refers to type id 7"),
    (_hdr(12, 1) + struct.pack("<III", 0, 8 << 24, 1) + b"\0", "reference loop"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed(data, msg):
    with pytest.raises(ParseError, match=msg):
        Btf.parse(data)


def _exercise(btf: Btf) -> None:
    """Everything a parsed BTF offers must either work or raise a BpfError."""
    from bpfsim.btf.cdump import dump_c
    from bpfsim.btf.dump import dump_json

    dump_raw(btf)
    dump_json(btf)
    btf.to_bytes()
    for call in (lambda: dump_c(btf), btf.load_error):
        with contextlib.suppress(BpfError):
            call()
    for tid in range(len(btf.types)):
        try:
            size = btf.size_of(tid)
            if size <= 4096:
                btf.decode(tid, bytes(size))
            btf.field_record(tid)
        except BpfError:
            pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data):
    try:
        btf = Btf.parse(_hdr(len(data) // 2 // 4 * 4, len(data) - len(data) // 2 // 4 * 4) + data)
    except ParseError:
        return
    _exercise(btf)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_object_btf(data):
    blob = bytearray(raw_btf("types.bpf.o"))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[:data.draw(st.integers(0, len(blob)))]
    try:
        btf = Btf.parse(bytes(blob))
    except ParseError:
        return
    _exercise(btf)
