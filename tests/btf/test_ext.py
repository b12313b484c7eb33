"""`.BTF.ext`: func_info, line_info and CO-RE records of core.bpf.o; malformed -> ParseError."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsim.btf import BtfExt
from bpfsim.errors import ParseError

from .conftest import FIXTURES, load_ext


def test_func_and_line_info():
    btf, ext = load_ext("core.bpf.o")
    main, sub = "tp_btf/sched_switch", ".text"
    assert [(r.insn, btf.name_of(r.type_id)) for r in ext.func_info[main]] == [(0, "handle")]
    assert [(r.insn, btf.name_of(r.type_id)) for r in ext.func_info[sub]] == [(0, "sub")]
    first = ext.line_info[main][0]
    assert (first.insn, first.file_name, first.line, first.line_num, first.line_col) == (
        0, "./core.bpf.c", "int handle(struct task *t)", 23, 0)
    src = (FIXTURES / "core.bpf.c").read_text().splitlines()
    for recs in ext.line_info.values():
        for r in recs:
            assert src[r.line_num - 1] == r.line     # the text clang stored is the source line
    assert ext.line_info[sub][1].line == "\treturn BPF_CORE_READ(t, inner.a);"


def test_core_relos():
    btf, ext = load_ext("core.bpf.o")
    got = [(r.insn, btf.describe(r.type_id), r.access_str, r.kind_name)
           for r in ext.core_relos["tp_btf/sched_switch"]]
    assert got == [
        (0, "struct task", "0:0", "field_exists"),
        (1, "struct task", "0", "type_exists"),
        (3, "enum state", "1", "enumval_value"),
        (6, "struct task", "0:1", "byte_sz"),
    ]
    (r,) = ext.core_relos[".text"]
    assert (r.insn, r.access, r.kind_name) == (1, "0:1:0", "byte_off")


def _ext_data() -> bytes:
    from bpfsim.elf.reader import read_elf

    return read_elf(FIXTURES / "core.bpf.o").section(".BTF.ext").data


@pytest.mark.parametrize("mutate, msg", [
    (lambda d: d[:6], "too short"),
    (lambda d: b"\0\0" + d[2:], "magic"),
    (lambda d: d[:4] + struct.pack("<I", 4) + d[8:], "header length"),
    (lambda d: d[:32] + struct.pack("<I", 3) + d[36:], "record size 3"),
    (lambda d: d[:-8], "past the end"),
])
def test_malformed(mutate, msg):
    btf, _ = load_ext("core.bpf.o")
    with pytest.raises(ParseError, match=msg):
        BtfExt.parse(mutate(_ext_data()), btf)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz(data):
    btf, _ = load_ext("core.bpf.o")
    blob = bytearray(_ext_data())
    for _ in range(data.draw(st.integers(1, 6))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    blob = blob[:data.draw(st.integers(0, len(blob)))]
    with contextlib.suppress(ParseError):
        BtfExt.parse(bytes(blob), btf)
