"""`Btf.decode`/`encode`: the shape is bpftool's, proven against the kernel.

tests/fixtures/btf/types.maps.json holds what `bpftool -j map dump` printed for maps of
types.bpf.o loaded into Linux 6.18 with known bytes (make maps-golden); decoding the same
bytes with our BTF must give bpftool's "formatted" values exactly.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsim.errors import UsageError

from .conftest import FIXTURES, load_btf

GOLDEN = json.loads((FIXTURES / "types.maps.json").read_text())
ENTRIES = [(name, i) for name, m in GOLDEN.items() for i in range(len(m["dump"]))]


def _bytes(hexes: list[str]) -> bytes:
    return bytes(int(x, 16) for x in hexes)


@pytest.mark.parametrize("name, i", ENTRIES)
def test_decode_matches_bpftool(types_btf, name, i):
    m = GOLDEN[name]
    entry = m["dump"][i]
    fm = entry["formatted"]
    assert types_btf.decode(m["value_type_id"], _bytes(entry["value"])) == fm["value"]
    if "key" in fm:
        assert types_btf.decode(m["key_type_id"], _bytes(entry["key"])) == fm["key"]
        assert types_btf.encode(m["key_type_id"], fm["key"]) == _bytes(entry["key"])


@pytest.mark.parametrize("name, i", ENTRIES)
def test_encode_inverts_decode(types_btf, name, i):
    m = GOLDEN[name]
    fm = m["dump"][i]["formatted"]["value"]
    raw = types_btf.encode(m["value_type_id"], fm)
    assert types_btf.decode(m["value_type_id"], raw) == fm


def test_shapes(types_btf):
    """The bpftool rules, spelled out on one decoded `struct rich`."""
    rich = types_btf.find("rich", "STRUCT")
    raw = next(_bytes(e["value"]) for e in GOLDEN["rich_map"]["dump"] if e["formatted"]["key"] == 1)
    v = types_btf.decode(rich, raw)
    assert v["name"] == "abc"                    # char array with a NUL: a string
    assert v["raw"] == [1, 2, 255]               # unsigned char: always a list
    assert v["full"] == [119, 120, 121, 122]     # no NUL: a list
    assert v["bf"] == {"a": "0x5", "b": "0x1d", "c": "0x1", "d": "0x123456789a", "e": "0x5"}
    assert (v["col"], v["sg"], v["bg"], v["sb"]) == ("GREEN", "NEG", "HUGE", "SNEG")
    assert v["wide"] == "0x991122334455667788"   # __int128: hex string
    assert v["flag"] is False
    assert v["anon"] == {"x": 7, "": {"y": 97, "z": 97}}


def test_special_structs_decode_as_bpftool(types_btf):
    tv = types_btf.find("timer_val", "STRUCT")
    assert types_btf.decode(tv, bytes(24)) == {"t": {}, "lock": {"val": 0}, "counter": 0}


def test_floats_round_trip(types_btf):
    """bpftool 7.1 cannot print FLOAT; we give Python floats (documented deviation)."""
    f = types_btf.find("floats", "STRUCT")
    raw = types_btf.encode(f, {"f": 1.5, "d": -2.25})
    assert types_btf.decode(f, raw) == {"f": 1.5, "d": -2.25}


def test_encode_partial_and_names(types_btf):
    rich = types_btf.find("rich", "STRUCT")
    raw = types_btf.encode(rich, {"col": "BLUE", "bf": {"b": -3}, "name": "hi", "wide": "0x10"})
    v = types_btf.decode(rich, raw)
    assert (v["col"], v["bf"]["b"], v["name"], v["wide"], v["i"]) == ("BLUE", "0x1d", "hi", "0x10", 0)
    bss = types_btf.find_datasec(".bss")
    raw = types_btf.encode(bss, {"bss_var": 5, "rich_global": {"i": 3}})
    v = types_btf.decode(bss, raw)[".bss"]
    assert v[0] == {"bss_var": 5} and v[2]["rich_global"]["i"] == 3


@pytest.mark.parametrize("value, msg", [
    ({"nope": 1}, "has no member 'nope'"),
    ({"i": 1 << 31}, r"value.i: 2147483648 does not fit in 32 bits"),
    ({"in": {"uc": -1}}, "does not fit in 8 bits"),
    ({"name": "123456789"}, "9 bytes do not fit in 8"),
    ({"raw": "ab"}, "a string only fits a char array"),
    ({"matrix": [[1, 2, 3, 4]]}, "4 elements do not fit in 3"),
    ({"col": "PURPLE"}, "has no enumerator 'PURPLE'"),
    ({"bf": {"a": 8}}, "does not fit in 3 bits"),
    ({"flag": 2}, "expected a bool"),
    ({"arr": 5}, "an array needs a list"),
    ([1], "needs a dict"),
    ({"i": "x"}, "expected an integer"),
])
def test_encode_errors(types_btf, value, msg):
    with pytest.raises(UsageError, match=msg):
        types_btf.encode(types_btf.find("rich", "STRUCT"), value)


def test_decode_wrong_length(types_btf):
    with pytest.raises(UsageError, match="struct rich is 192 bytes, got 4"):
        types_btf.decode(types_btf.find("rich", "STRUCT"), bytes(4))


_B = load_btf("types.bpf.o", fixup=True)
_VALUE_TYPES = [_B.find(n) for n in ("rich", "timer_val", "nested_timer", "floats", "bits", "u")] + \
    [_B.find_datasec(s) for s in (".bss", ".data", ".rodata")]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_VALUE_TYPES), st.data())
def test_decode_encode_decode_is_stable(tid, data):
    """Whatever the bytes, encoding the decoded value and decoding again gives the same value
    (bytes may differ: padding, NUL tails after strings and bits bpftool never shows)."""
    raw = data.draw(st.binary(min_size=_B.size_of(tid), max_size=_B.size_of(tid)))
    value = _B.decode(tid, raw)
    again = _B.decode(tid, _B.encode(tid, value))
    if tid == _B.find("floats"):   # NaN != NaN
        assert [repr(v) for v in again.values()] == [repr(v) for v in value.values()]
    else:
        assert again == value
