"""The ELF reader: real objects of both byte orders read right; every malformed input is a
ParseError (hand-made corruptions, then hypothesis on random and mutated bytes)."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfsim.elf.reader import (
    R_BPF_64_32,
    R_BPF_64_64,
    SHT_NOBITS,
    SHT_PROGBITS,
    STT_FUNC,
    read_elf,
)
from bpfsim.errors import ParseError

PROGS = Path(__file__).resolve().parents[1] / "fixtures" / "progs"
LE = PROGS / "globals.bpf.o"
BE = PROGS / "globals.bpfeb.o"


def test_reads_little_endian_object() -> None:
    o = read_elf(LE)
    assert o.byteorder == "little"
    names = [s.name for s in o.sections]
    assert {".text", "socket", "xdp", ".maps", ".rodata", ".data", ".bss", ".BTF",
            ".data.custom", ".rodata.custom", "license"} <= set(names)
    assert o.section("license").data == b"GPL\0"
    assert o.section(".bss").type == SHT_NOBITS
    assert o.section(".bss").data == bytes(o.section(".bss").size)
    assert o.section("socket").type == SHT_PROGBITS and o.section("socket").is_exec
    funcs = {s.name for s in o.symbols if s.type == STT_FUNC}
    assert {"sock_one", "sock_two", "xdp_count", "bump", "add_port"} <= funcs


def test_relocations_are_attached_to_their_target_section() -> None:
    o = read_elf(LE)
    xdp = o.section("xdp")
    kinds = {r.type for r in xdp.relocations}
    assert kinds == {R_BPF_64_64, R_BPF_64_32}
    targets = {o.symbols[r.symbol].name for r in xdp.relocations}
    assert {"lru", ".text"} <= targets or {"lru", "bump"} <= targets


def test_big_endian_object_reads_the_same_layout() -> None:
    le, be = read_elf(LE), read_elf(BE)
    assert be.byteorder == "big"
    assert [s.name for s in le.sections] == [s.name for s in be.sections]
    assert [(s.name, s.value, s.size) for s in le.symbols] == \
        [(s.name, s.value, s.size) for s in be.symbols]
    assert be.section(".data").data == struct.pack(">Q", 7) + struct.pack(">I", 3)
    assert le.section(".data").data == struct.pack("<Q", 7) + struct.pack("<I", 3)
    for a, b in zip(le.sections, be.sections):
        assert [(r.offset, r.type) for r in a.relocations] == [(r.offset, r.type) for r in b.relocations]


def test_reads_bytes_and_paths_alike() -> None:
    a, b = read_elf(LE), read_elf(LE.read_bytes())
    assert [s.data for s in a.sections] == [s.data for s in b.sections]


def _patch(data: bytes, off: int, fmt: str, value: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, off, value)
    return bytes(buf)


def _shdr_off(data: bytes, index: int) -> int:
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    return shoff + index * 64


@pytest.mark.parametrize("mutate,msg", [
    (lambda d: d[:10], "not an ELF"),
    (lambda d: b"\x7fELG" + d[4:], "not an ELF"),
    (lambda d: d[:4] + b"\x01" + d[5:], "64-bit"),
    (lambda d: d[:5] + b"\x07" + d[6:], "data encoding"),
    (lambda d: _patch(d, 0x12, "<H", 62), "not a BPF object"),          # EM_X86_64
    (lambda d: _patch(d, 0x10, "<H", 2), "not a relocatable"),          # ET_EXEC
    (lambda d: _patch(d, 0x3E, "<H", 0x7FFF), "string table index"),    # e_shstrndx
    (lambda d: _patch(d, 0x28, "<Q", 1 << 40), "out of bounds"),        # e_shoff
    (lambda d: d[: len(d) - 200], "out of bounds"),                     # truncated headers
])
def test_malformed_headers(mutate, msg: str) -> None:
    data = LE.read_bytes()
    with pytest.raises(ParseError, match=msg):
        read_elf(mutate(data))


def test_section_data_out_of_bounds() -> None:
    data = LE.read_bytes()
    o = read_elf(data)
    idx = o.section(".data").index
    bad = _patch(data, _shdr_off(data, idx) + 0x18, "<Q", len(data) + 8)    # sh_offset
    with pytest.raises(ParseError, match="out of bounds"):
        read_elf(bad)


def test_bad_symbol_section_index() -> None:
    data = LE.read_bytes()
    o = read_elf(data)
    symtab = next(s for s in o.sections if s.type == 2)
    off = struct.unpack_from("<Q", data, _shdr_off(data, symtab.index) + 0x18)[0]
    sym = next(s for s in o.symbols if s.name == "bump")
    bad = _patch(data, off + sym.index * 24 + 6, "<H", 999)                # st_shndx
    with pytest.raises(ParseError, match="refers to section 999"):
        read_elf(bad)


def test_bad_relocation_symbol_and_offset() -> None:
    data = LE.read_bytes()
    o = read_elf(data)
    rel = next(s for s in o.sections if s.name == ".relxdp")
    off = struct.unpack_from("<Q", data, _shdr_off(data, rel.index) + 0x18)[0]
    bad_sym = _patch(data, off + 8, "<Q", (5000 << 32) | R_BPF_64_64)
    with pytest.raises(ParseError, match="refers to symbol 5000"):
        read_elf(bad_sym)
    bad_off = _patch(data, off, "<Q", 1 << 20)
    with pytest.raises(ParseError, match="outside 'xdp'"):
        read_elf(bad_off)
    bad_target = _patch(data, _shdr_off(data, rel.index) + 0x2C, "<I", 4000)  # sh_info
    with pytest.raises(ParseError, match="targets bad section"):
        read_elf(bad_target)


def test_missing_file_is_a_parse_error(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="cannot read"):
        read_elf(tmp_path / "nope.o")


_REAL = [p.read_bytes() for p in (LE, BE, PROGS / "map_in_map.bpf.o")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_fuzz_random_bytes_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        read_elf(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(_REAL))),
       st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8),
       st.one_of(st.none(), st.integers(0, 1 << 16)))
def test_fuzz_mutated_objects_only_parse_error(which: int, flips: list[tuple[int, int]],
                                               cut: int | None) -> None:
    buf = bytearray(_REAL[which])
    for pos, val in flips:
        buf[pos % len(buf)] = val
    if cut is not None:
        del buf[cut % len(buf):]
    with contextlib.suppress(ParseError):
        read_elf(bytes(buf))


def _structural_offsets(data: bytes) -> list[int]:
    """Byte offsets of the ELF header, the section header table, the symbol table and the
    relocation tables: where a flipped byte exercises index and bound checks."""
    o = read_elf(data)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    spans = [(0, 64), (shoff, shoff + 64 * len(o.sections))]
    for s in o.sections:
        if s.type in (2, 9):                                # SYMTAB, REL
            off = struct.unpack_from("<Q", data, _shdr_off(data, s.index) + 0x18)[0]
            spans.append((off, off + s.size))
    return [i for a, b in spans for i in range(a, b)]


_HOT = _structural_offsets(_REAL[0])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_HOT), st.integers(0, 255)), min_size=1, max_size=4))
def test_fuzz_structural_bytes_only_parse_error(flips: list[tuple[int, int]]) -> None:
    buf = bytearray(_REAL[0])
    for pos, val in flips:
        buf[pos] = val
    with contextlib.suppress(ParseError):
        read_elf(bytes(buf))
