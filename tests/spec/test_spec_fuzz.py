"""Whatever the bytes, `load_spec` raises only BpfErrors (ParseError/LinkError), never
IndexError, struct.error or friends: random bytes and mutated real objects."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfsim.errors import BpfError
from bpfsim.spec import load_spec

PROGS = Path(__file__).resolve().parents[1] / "fixtures" / "progs"
REAL = [(PROGS / f).read_bytes() for f in
        ("globals.bpf.o", "globals.bpfeb.o", "map_in_map.bpf.o", "callbacks.bpf.o", "core.bpf.o")]


def _try(data: bytes) -> None:
    with contextlib.suppress(BpfError):
        load_spec(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=256))
def test_random_bytes(data: bytes) -> None:
    _try(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(REAL))),
       st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_objects(which: int, flips: list[tuple[int, int]]) -> None:
    buf = bytearray(REAL[which])
    for pos, val in flips:
        buf[pos % len(buf)] = val
    _try(bytes(buf))


def _section_spans(data: bytes) -> list[tuple[int, int]]:
    """File spans of the sections the loader interprets (BTF, BTF.ext, .maps, code,
    symbols, relocations, license)."""
    import struct

    from bpfsim.elf.reader import read_elf

    o = read_elf(data)
    e = "<" if o.byteorder == "little" else ">"
    shoff = struct.unpack_from(e + "Q", data, 0x28)[0]
    keep = {".BTF", ".BTF.ext", ".maps", ".symtab", "license", ".text", "xdp", "socket", "tc"}
    spans = []
    for s in o.sections:
        if (s.name in keep or s.name.startswith(".rel")) and s.size and s.type != 8:
            off = struct.unpack_from(e + "Q", data, shoff + s.index * 64 + 0x18)[0]
            spans.append((off, s.size))
    return spans


SPANS = [_section_spans(d) for d in REAL]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_interpreted_sections(data: st.DataObject) -> None:
    which = data.draw(st.sampled_from(range(len(REAL))))
    buf = bytearray(REAL[which])
    for _ in range(data.draw(st.integers(1, 4))):
        off, size = data.draw(st.sampled_from(SPANS[which]))
        buf[off + data.draw(st.integers(0, size - 1))] = data.draw(st.integers(0, 255))
    _try(bytes(buf))
