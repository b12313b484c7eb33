"""`Btf.decode` against `bpftool map dump -j` live, on layouts clang rarely emits but BTF
allows: packed enums, old-style (kflag=0) bitfield INTs, INT bit offsets, odd-width ints,
CHAR/BOOL encodings, typedef'd and const char arrays, 2-D char arrays, zero-length arrays,
128-bit ints, struct keys.  We build the BTF ourselves, the kernel accepts it (BTF_LOAD),
maps are filled with seeded random bytes (biased to printable characters and NULs), and
every entry bpftool prints must equal our decode of the same bytes."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess

import pytest

from bpfsim.btf import Btf, BtfType, EnumValue, Member

from . import kbpf

pytestmark = pytest.mark.kernel

ARRAY, HASH = 2, 1
ENTRIES = 64


def _layouts() -> tuple[Btf, dict[str, tuple[int, int]]]:
    b = Btf()

    def add(kind: str, name: str = "", **kw) -> int:
        return b.add(BtfType(kind, name, **kw))

    def st(name: str, size: int, members: list[tuple], kflag: bool = False, kind: str = "STRUCT") -> int:
        return add(kind, name, size=size, kflag=kflag, members=[Member(*m) for m in members])

    i32 = add("INT", "int", size=4, encoding=1, nr_bits=32)
    u8 = add("INT", "unsigned char", size=1, nr_bits=8)
    char = add("INT", "char", size=1, encoding=1, nr_bits=8)
    mychar = add("INT", "mychar", size=1, encoding=2, nr_bits=8)       # BTF_INT_CHAR
    boolean = add("INT", "_Bool", size=1, encoding=4, nr_bits=8)
    u16 = add("INT", "unsigned short", size=2, nr_bits=16)
    i64 = add("INT", "long long", size=8, encoding=1, nr_bits=64)
    u64 = add("INT", "unsigned long long", size=8, nr_bits=64)
    i128 = add("INT", "__int128", size=16, encoding=1, nr_bits=128)
    u24 = add("INT", "u24", size=4, nr_bits=24)
    s12 = add("INT", "s12", size=2, encoding=1, nr_bits=12)
    off_int = add("INT", "offint", size=4, nr_bits=8, bits_offset=4)
    bits3 = add("INT", "unsigned int", size=4, nr_bits=3)                # old-style bitfield int
    bits5s = add("INT", "int", size=4, encoding=1, nr_bits=5)
    ptr = add("PTR", type=i32)

    def arr(elem: int, n: int) -> int:
        return add("ARRAY", type=elem, index_type=i32, nelems=n)

    e1 = add("ENUM", "e1", size=1, kflag=True, values=[EnumValue("M1", -1), EnumValue("P5", 5)])
    e2 = add("ENUM", "e2", size=2, values=[EnumValue("A", 0), EnumValue("B", 0xFFFF)])
    e8 = add("ENUM", "e8", size=8, values=[EnumValue("X", 7), EnumValue("Y", 0x80000000)])
    e4 = add("ENUM", "e4", size=4, values=[EnumValue("HI", 0xFFFFFFFF), EnumValue("ONE", 1)])
    e64 = add("ENUM64", "e64", size=8, values=[EnumValue("BIG", 0xFFFFFFFF00000000),
                                                EnumValue("ONE", 1)])
    e64s = add("ENUM64", "e64s", size=8, kflag=True, values=[EnumValue("NEG", -5), EnumValue("Z", 0)])
    char_td = add("TYPEDEF", "char_t", type=char)
    cchar = add("CONST", type=char)
    vchar = add("VOLATILE", type=cchar)

    layouts: dict[str, tuple[int, int]] = {}
    layouts["enums"] = (i32, st("enums", 40, [("a", e1, 0), ("b", e2, 16), ("c", e4, 32), ("d", e8, 64),
                                              ("e", e64, 128), ("f", e64s, 192), ("g", e4, 256)]))
    layouts["ints"] = (i32, st("ints", 64, [
        ("c", mychar, 0), ("b", boolean, 8), ("h", u16, 16), ("w", u24, 32), ("s", s12, 64),
        ("o", off_int, 96), ("q", i64, 128), ("u", u64, 192), ("big", i128, 256), ("p", ptr, 384),
        ("cs", arr(mychar, 4), 448)]))
    layouts["oldbits"] = (i32, st("oldbits", 8, [
        ("a", bits3, 0), ("b", bits5s, 3), ("c", bits3, 8), ("d", bits5s, 27), ("e", u8, 32),
        ("f", bits3, 45)]))
    layouts["kbits"] = (i32, st("kbits", 16, [
        ("a", u64, 0, 1), ("b", i64, 1, 63), ("c", i32, 64, 7), ("d", u8, 71, 1), ("e", e4, 72, 20),
        ("f", u64, 92, 36)], kflag=True))
    layouts["chars"] = (i32, st("chars", 40, [
        ("plain", arr(char, 6), 0), ("td", arr(char_td, 6), 48), ("cv", arr(vchar, 6), 96),
        ("grid", arr(arr(char, 3), 2), 144), ("u", arr(u8, 4), 192), ("bools", arr(boolean, 3), 224),
        ("one", arr(char, 1), 248), ("z", arr(i32, 0), 256), ("tail", i32, 256)]))
    inner = st("", 4, [("x", u16, 0), ("y", char, 16)])
    un = st("un", 8, [("i", i64, 0), ("s", inner, 0), ("k", u8, 0, 3)], kflag=True, kind="UNION")
    layouts["union"] = (i32, st("uwrap", 16, [("", un, 0), ("t", arr(un, 1), 64)]))
    key = st("key", 8, [("id", i32, 0), ("tag", arr(char, 4), 32)])
    layouts["struct_key"] = (key, st("val", 4, [("v", i32, 0)]))
    return b, layouts


def _random_value(rng: random.Random, size: int) -> bytes:
    pick = rng.random()
    if pick < 0.15:
        return bytes(size)
    if pick < 0.3:
        return bytes([0xFF] * size)
    pool = [0, 0, 0x41, 0x7A, 0x20, 0x7E, 0x7F, 0x1F, 0x80, 0xFF, 1]
    raw = bytes(rng.choice(pool) if rng.random() < 0.6 else rng.randrange(256) for _ in range(size))
    # bpftool prints a BTF_INT_CHAR '\\' or '"' unescaped (btf_dumper_int: "\"%c\""), which is
    # not JSON at all; keep those bytes out so there is a shape to compare with.
    return raw.replace(b"\\", b"A").replace(b'"', b"A")


@pytest.fixture(scope="module")
def kernel_btf():
    if not kbpf.available() or not shutil.which("bpftool"):
        pytest.skip("needs root, bpf(2) and bpftool")
    b, layouts = _layouts()
    fd, log = kbpf.btf_load(b.to_bytes())
    assert fd >= 0, f"kernel refused our BTF ({-fd}):\n{log[-1500:]}"
    yield b, layouts, fd
    os.close(fd)


@pytest.mark.parametrize("name", ["enums", "ints", "oldbits", "kbits", "chars", "union", "struct_key"])
def test_decode_matches_live_bpftool(kernel_btf, name):
    b, layouts, btf_fd = kernel_btf
    key_tid, value_tid = layouts[name]
    ksize, vsize = b.size_of(key_tid), b.size_of(value_tid)
    map_type = ARRAY if key_tid == layouts["enums"][0] else HASH
    m = kbpf.map_create(map_type, ksize, vsize, ENTRIES, btf_fd, key_tid, value_tid)
    assert m >= 0, f"map create: {-m}"
    pin = f"/sys/fs/bpf/bpfsim_btf_values_{os.getpid()}_{name}"
    rng = random.Random(name)
    keys = set()
    try:
        for i in range(ENTRIES):
            key = i.to_bytes(4, "little") if map_type == ARRAY else _random_value(rng, ksize)
            keys.add(key)
            assert kbpf.map_update(m, key, _random_value(rng, vsize)) == 0
        assert kbpf.obj_pin(m, pin) == 0
        out = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", pin], check=True,
                             capture_output=True, text=True).stdout
    finally:
        if os.path.exists(pin):
            os.unlink(pin)
        os.close(m)
    dump = json.loads(out)
    assert len(dump) == len(keys)
    for entry in dump:
        key = bytes(int(x, 16) for x in entry["key"])
        value = bytes(int(x, 16) for x in entry["value"])
        assert b.decode(key_tid, key) == entry["formatted"]["key"]
        assert b.decode(value_tid, value) == entry["formatted"]["value"], entry["value"]
        assert b.decode(value_tid, b.encode(value_tid, entry["formatted"]["value"])) == \
            entry["formatted"]["value"]
