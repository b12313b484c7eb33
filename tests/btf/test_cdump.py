"""`--format c` (libbpf's btf_dump as bpftool v7.1 prints it): golden headers of the
fixtures, hand-built corner cases against the bpftool binary, and the machine's vmlinux."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bpfsim.btf import Btf, BtfType, EnumValue, Member, Param
from bpfsim.btf.cdump import dump_c
from bpfsim.cli.cmd_btf import read_btf

from .conftest import FIXTURES

needs_bpftool = pytest.mark.skipif(not shutil.which("bpftool"), reason="needs the bpftool binary")


@pytest.mark.parametrize("obj", ["types.bpf.o", "core.bpf.o"])
def test_fixture_headers(obj):
    assert dump_c(read_btf(str(FIXTURES / obj))) == (FIXTURES / f"{obj[:-2]}.btf.h").read_text()


def _corner_cases() -> Btf:
    b = Btf()

    def add(kind: str, name: str = "", **kw) -> int:
        return b.add(BtfType(kind, name, **kw))

    i32 = add("INT", "int", size=4, encoding=1, nr_bits=32)
    u8 = add("INT", "unsigned char", size=1, nr_bits=8)
    i64 = add("INT", "long", size=8, encoding=1, nr_bits=64)
    u16 = add("INT", "unsigned short", size=2, nr_bits=16)
    char = add("INT", "char", size=1, encoding=1, nr_bits=8)
    dbl = add("FLOAT", "double", size=8)
    pint = add("PTR", type=i32)
    cpint = add("CONST", type=pint)
    rpint = add("RESTRICT", type=pint)
    vcchar = add("VOLATILE", type=add("CONST", type=char))
    # two structs called foo, two enums with the same enumerator: libbpf renames with ___2
    add("STRUCT", "foo", size=4, members=[Member("a", i32, 0)])
    add("STRUCT", "foo", size=8, members=[Member("b", i64, 0)])
    add("ENUM", "ea", size=4, values=[EnumValue("SAME", 1)])
    add("ENUM", "eb", size=4, values=[EnumValue("SAME", 2)])
    add("ENUM", "", size=4, values=[EnumValue("TOP_LEVEL_ANON", 3)])        # unreferenced anon
    add("ENUM", "e1", size=1, values=[EnumValue("B1", 1)])
    add("ENUM64", "e64", size=8, values=[EnumValue("SMALL64", 1)])
    # packed struct, a misaligned member, bitfield gaps, tail padding, an empty struct
    add("STRUCT", "packed", size=7, members=[Member("c", u8, 0), Member("x", i32, 8),
                                              Member("s", u16, 40)])
    add("STRUCT", "gaps", size=24, kflag=True, members=[
        Member("a", i32, 0, 3), Member("b", i32, 20, 4), Member("c", i64, 64), Member("d", u8, 136, 2),
        Member("e", u8, 160)])
    add("STRUCT", "empty", size=0)
    add("UNION", "un", size=16, members=[Member("x", i32, 0), Member("d", dbl, 0)])
    # declarators: function pointers, arrays of them, varargs, void params, pointer qualifiers
    proto = add("FUNC_PROTO", type=pint, params=[Param("a", i32), Param("b", cpint), Param("", 0)])
    fptr = add("PTR", type=proto)
    void_proto = add("FUNC_PROTO", type=0, params=[Param("", 0)])
    arr_fp = add("ARRAY", type=fptr, index_type=i32, nelems=3)
    arr2 = add("ARRAY", type=add("ARRAY", type=vcchar, index_type=i32, nelems=4), index_type=i32, nelems=2)
    fwd_u = add("FWD", "opaque_u", kflag=True)
    add("TYPEDEF", "handler_t", type=add("PTR", type=void_proto))
    add("TYPEDEF", "__builtin_va_list", type=add("PTR", type=char))
    self_ptr = add("PTR")
    decls = add("STRUCT", "decls", size=88, members=[
        Member("fp", fptr, 0), Member("fps", arr_fp, 64), Member("grid", arr2, 256),
        Member("cp", cpint, 320), Member("rp", rpint, 384), Member("u", add("PTR", type=fwd_u), 448),
        Member("self", self_ptr, 512),
        Member("anon", add("STRUCT", size=8, members=[Member("z", i64, 0)]), 576),
        Member("h", b.find("handler_t"), 640)])
    b.types[self_ptr].type = decls
    return b


@needs_bpftool
def test_corner_cases_match_bpftool(tmp_path):
    b = _corner_cases()
    blob = tmp_path / "corner.btf"
    blob.write_bytes(b.to_bytes())
    expected = subprocess.run(["bpftool", "btf", "dump", "file", str(blob), "format", "c"], check=True,
                              capture_output=True, text=True).stdout
    assert dump_c(Btf.parse(blob.read_bytes())) == expected
    assert dump_c(b) == expected          # built in Python: names without string offsets


def test_cli_format_c(capsys):
    from bpfsim.cli.main import main

    assert main(["btf", "dump", "--format", "c", str(FIXTURES / "core.bpf.o")]) == 0
    assert capsys.readouterr().out == (FIXTURES / "core.bpf.btf.h").read_text()
    assert main(["btf", "dump", "--format", "c", "--json", str(FIXTURES / "core.bpf.o")]) == 2
    assert "not supported" in capsys.readouterr().err


VMLINUX = Path("/sys/kernel/btf/vmlinux")


@pytest.mark.kernel
@needs_bpftool
@pytest.mark.skipif(not VMLINUX.exists(), reason="needs /sys/kernel/btf/vmlinux")
def test_vmlinux_header_matches_bpftool():
    expected = subprocess.run(["bpftool", "btf", "dump", "file", str(VMLINUX), "format", "c"], check=True,
                              capture_output=True, text=True).stdout
    assert dump_c(read_btf(str(VMLINUX))) == expected
