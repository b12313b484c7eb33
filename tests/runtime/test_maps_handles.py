"""The user-facing `Map` handle (runtime/handles.py) on maps with real BTF.

The maps come from tests/runtime/maps_fixtures/maps.bpf.o (rebuild with its Makefile).  The
dump shapes were taken from `bpftool map dump -j` on 6.18; `test_dump_matches_bpftool`
compares them live.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest

from bpfsim.errors import KeyNotFound, UsageError
from bpfsim.runtime.handles import Map
from bpfsim.runtime.maps import create_map
from bpfsim.runtime.pinfs import PinFS
from bpfsim.spec.collection import MapSpec
from bpfsim.uapi.constants import BPF_F_LOCK, BPF_NOEXIST, MapType
from bpfsim.vm.memory import AddressSpace

FIXTURE = Path(__file__).parent / "maps_fixtures" / "maps.bpf.o"
T = MapType


class FakeKernel:
    def __init__(self) -> None:
        self.mem = AddressSpace()
        self.ncpus = 2
        self.timers = None
        self.pins = PinFS(self)


@pytest.fixture(scope="module")
def spec():
    from bpfsim.spec.reader import load_spec

    return load_spec(str(FIXTURE))


@pytest.fixture
def k():
    return FakeKernel()


@pytest.fixture
def maps(k, spec):
    return {name: Map(create_map(k, ms, spec.btf)) for name, ms in spec.maps.items()
            if not ms.is_global_data}


def test_btf_values(maps):
    h = maps["h"]
    h[1] = {"a": 5, "s": "AB", "t": {}}
    assert h[1] == {"a": 5, "s": "AB", "t": {}}
    assert list(h) == [1] and 1 in h and 2 not in h and len(h) == 1
    assert h.get(2, "none") == "none"
    with pytest.raises(KeyNotFound):
        h[2]
    assert h.raw[struct.pack("<I", 1)][:6] == b"\5\0\0\0AB"
    h.update(1, {"a": 6}, flags=0)
    with pytest.raises(Exception) as e:
        h.update(1, {"a": 7}, flags=BPF_NOEXIST)
    assert getattr(e.value, "errno", None) == 17
    assert h.pop(1)["a"] == 6 and len(h) == 0
    assert h.pop(1, None) is None
    h.update({3: {"a": 3}})                               # dict.update form
    assert dict(h.items()) == {3: {"a": 3, "s": "", "t": {}}}


def test_struct_keys_and_percpu_values(maps):
    ph = maps["ph"]
    ph[{"x": 1, "y": 2}] = [10, 20]                       # one value per CPU
    assert ph[{"x": 1, "y": 2}] == [10, 20]
    ph[{"x": 1, "y": 2}] = 7                              # one value for every CPU
    assert ph[{"x": 1, "y": 2}] == [7, 7]
    assert list(ph) == [{"x": 1, "y": 2}]
    assert ph.raw[b"\1\0\2\0"] == struct.pack("<II", 7, 0) + struct.pack("<II", 7, 0)
    pa = maps["pa"]
    assert pa[0] == [0, 0] and len(pa) == 2


def test_spin_lock_values(maps):
    lk = maps["lk"]
    lk[0] = {"n": 3}
    assert lk.lookup(0, BPF_F_LOCK)["n"] == 3
    lk.update(0, {"n": 4}, flags=BPF_F_LOCK)
    assert lk[0]["n"] == 4


def test_sizes_and_types_are_checked(maps):
    h = maps["h"]
    with pytest.raises(UsageError, match="4 bytes"):
        h.raw[b"\0"] = bytes(24)
    with pytest.raises(UsageError, match="24 bytes"):
        h.raw[b"\0\0\0\0"] = bytes(3)
    with pytest.raises(UsageError):
        h[1] = {"nope": 1}
    assert len(h) == 0                                    # nothing was written


def test_info_and_identity(maps):
    info = maps["lru"].info
    assert (info.type, info.key_size, info.value_size, info.max_entries, info.name) == \
        ("lru_hash", 8, 4, 8, "lru")
    assert maps["lru"].id == info.id


def test_dump_shapes(maps):
    h, pa = maps["h"], maps["pa"]
    h.raw[b"\1\0\0\0"] = b"\5\0\0\0AB\0\0" + b"\1" * 16     # timer bytes are never written
    assert h.dump() == [{
        "key": ["0x01", "0x00", "0x00", "0x00"],
        "value": ["0x05", "0x00", "0x00", "0x00", "0x41", "0x42"] + ["0x00"] * 18,
        "formatted": {"key": 1, "value": {"a": 5, "s": "AB", "t": {}}},
    }]
    d = pa.dump()
    assert d[0] == {
        "key": ["0x00"] * 4,
        "values": [{"cpu": 0, "value": ["0x00"] * 8}, {"cpu": 1, "value": ["0x00"] * 8}],
        "formatted": {"key": 0, "values": [{"cpu": 0, "value": 0}, {"cpu": 1, "value": 0}]},
    }
    assert len(d) == 2


def test_maps_without_btf(k):
    m = Map(create_map(k, MapSpec("raw", int(T.HASH), 4, 8, 4)))
    m[1] = 2                                              # ints are little-endian bytes
    assert m[1] == struct.pack("<Q", 2)
    assert list(m) == [b"\1\0\0\0"]
    assert m.dump() == [{"key": ["0x01", "0x00", "0x00", "0x00"],
                         "value": ["0x02"] + ["0x00"] * 7}]
    with pytest.raises(UsageError, match="no key BTF"):
        m["x"] = 1


def test_queue_stack_ringbuf_bloom_handles(k):
    q = Map(create_map(k, MapSpec("q", int(T.STACK), 0, 4, 2)))
    q.push(1)
    q.push(2)
    assert q.peek() == b"\2\0\0\0" and q.pop() == b"\2\0\0\0" and len(q.dump()) == 0
    with pytest.raises(UsageError):
        list(q)
    rb = Map(create_map(k, MapSpec("rb", int(T.RINGBUF), 0, 0, 4096)))
    assert rb.kernel_map.output(b"rec") == 0
    assert rb.drain() == [b"rec"] and rb.drain() == []
    with pytest.raises(UsageError):
        q.drain()
    bf = Map(create_map(k, MapSpec("bf", int(T.BLOOM_FILTER), 0, 4, 8)))
    bf.push(5)
    assert 5 in bf and 6 not in bf


def test_pin_and_get(k, maps):
    h = maps["h"]
    h[1] = {"a": 1}
    h.pin("/sys/fs/bpf/h")
    h2 = Map.from_pin(k.pins.get("/sys/fs/bpf/h"))
    h.close()
    assert h2[1]["a"] == 1
    h2.close()
    assert h2.closed
    assert k.pins.get("/sys/fs/bpf/h").usercnt == 1        # the pin alone keeps it


def test_freeze(maps):
    lru = maps["lru"]
    lru[1] = -1
    lru.freeze()
    with pytest.raises(Exception) as e:
        lru[2] = 2
    assert getattr(e.value, "errno", None) == 1
    assert lru[1] == -1


@pytest.mark.kernel
def test_dump_matches_bpftool(k, spec, maps):
    """Same updates through bpf(2) on maps bpftool loaded from the same object; the dumps must
    be identical JSON (keys sorted, since hash bucket order is the kernel's secret)."""
    try:
        from bpfsim.kernel.probes import kernel_available
        ok, why = kernel_available()
    except ImportError:
        ok, why = os.geteuid() == 0, "needs root"
    if not ok:
        pytest.skip(f"kernel not available: {why}")
    bpftool = shutil.which("bpftool")
    if bpftool is None:
        pytest.skip("bpftool is not installed")
    from bpfsim.kernel import syscall as sc

    d = f"/sys/fs/bpf/bpfsim_dump_{uuid.uuid4().hex[:8]}"
    os.mkdir(d)
    try:
        subprocess.run([bpftool, "prog", "load", str(FIXTURE), f"{d}/prog", "pinmaps", d],
                       check=True, capture_output=True)
        updates = {
            "h": [(struct.pack("<I", 1), b"\5\0\0\0AB\0\0" + b"\xff" * 16)],
            "arr": [(struct.pack("<I", 1), b"\7\0\0\0x\0\0\0" + b"\xff" * 16)],
            "lk": [(struct.pack("<I", 2), b"\xff\xff\xff\xff\3\0\0\0")],
            "pa": [(struct.pack("<I", 1), struct.pack("<QQ", 5, 6))],
            "ph": [(b"\1\0\2\0", struct.pack("<II", 9, 0) + struct.pack("<II", 8, 0))],
            "lru": [(struct.pack("<Q", i), struct.pack("<i", -i)) for i in range(3)],
        }
        for name, kvs in updates.items():
            fd = sc.obj_get(f"{d}/{name}")
            try:
                for key, val in kvs:
                    sc.map_update(fd, key, val)
                    maps[name].raw[key] = val
            finally:
                sc.close(fd)
            out = subprocess.run([bpftool, "map", "dump", "pinned", f"{d}/{name}", "-j"],
                                 check=True, capture_output=True, text=True).stdout
            want = sorted(json.loads(out), key=lambda e: e["key"])
            got = sorted(maps[name].dump(), key=lambda e: e["key"])
            assert got == want, name
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_fd_map_dump_skips_empty_slots(k):
    # bpftool 7.1 on 6.18: [{"key": [...], "value": [the inner map id as 4 bytes]}] only
    inner = create_map(k, MapSpec("in", int(T.ARRAY), 4, 4, 1))
    outer = Map(create_map(k, MapSpec("out", int(T.ARRAY_OF_MAPS), 4, 4, 2), inner_map=inner))
    outer[0] = Map(inner)
    mid = inner.id.to_bytes(4, "little")
    assert outer.dump() == [{"key": ["0x00"] * 4, "value": [f"0x{b:02x}" for b in mid]}]
    assert outer[0] == inner.id
