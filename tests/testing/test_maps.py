"""Map handles on both backends, on maps built from hand-made specs (no compiler).

The kernel's answers are the reference; a known emulator difference is marked xfail."""

from __future__ import annotations

import struct

import pytest

from bpfsim.errors import KeyNotFound, MapError, MapFull, UsageError
from bpfsim.spec.collection import CollectionSpec, MapSpec
from bpfsim.uapi.constants import BPF_F_NO_PREALLOC, MapType


def _load(backend, *maps: MapSpec):
    return backend(CollectionSpec(maps={m.name: m for m in maps}))


def test_queue_and_stack_push_pop_peek(backend):
    # queue_stack_maps.c: __queue_map_get returns -ENOENT on an empty queue/stack.
    q = MapSpec(name="q", type=MapType.QUEUE, key_size=0, value_size=4, max_entries=2)
    s = MapSpec(name="s", type=MapType.STACK, key_size=0, value_size=4, max_entries=2)
    with _load(backend, q, s) as coll:
        for name in ("q", "s"):
            m = coll.maps[name]
            m.push(1)
            m.push(2)
            with pytest.raises(MapFull):
                m.push(3)
            first = 1 if name == "q" else 2
            assert m.peek() == struct.pack("<I", first)
            assert m.pop() == struct.pack("<I", first)
            assert m.pop() == struct.pack("<I", 3 - first)
            with pytest.raises(KeyNotFound):
                m.pop()
            assert m.dump() == []
            with pytest.raises(UsageError):
                list(m)


def test_bloom_filter_contains(backend):
    b = MapSpec(name="b", type=MapType.BLOOM_FILTER, key_size=0, value_size=4, max_entries=64,
                map_extra=3)
    with _load(backend, b) as coll:
        m = coll.maps["b"]
        m.push(42)
        assert 42 in m


def test_lru_percpu_hash_and_map_full(backend):
    lru = MapSpec(name="lru", type=MapType.LRU_PERCPU_HASH, key_size=4, value_size=4, max_entries=8)
    h = MapSpec(name="h", type=MapType.HASH, key_size=4, value_size=4, max_entries=1,
                flags=BPF_F_NO_PREALLOC)
    with _load(backend, lru, h) as coll:
        m = coll.maps["lru"]
        m[1] = 5                                    # one value: copied to every CPU
        assert m[1] == [struct.pack("<I", 5)] * backend.ncpus
        coll.maps["h"][1] = 1
        with pytest.raises(MapFull):
            coll.maps["h"][2] = 2


def test_fd_maps_take_and_give_ids(backend):
    inner = MapSpec(name="inner", type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1)
    tmpl = MapSpec(name="outer.inner", type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1)
    outer = MapSpec(name="outer", type=MapType.ARRAY_OF_MAPS, key_size=4, value_size=4,
                    max_entries=2, inner=tmpl)
    with _load(backend, inner, outer) as coll:
        o, i = coll.maps["outer"], coll.maps["inner"]
        o[0] = i                                     # a handle...
        assert o[0] == i.id                          # ...reads back as the map's id
        o[1] = i.id                                  # an id works too
        assert o.dump()[1]["value"] == [f"0x{b:02x}" for b in struct.pack("<I", i.id)]
        with pytest.raises(MapError):
            o[1] = 0x7FFFFFF0                        # no such map id


def test_clone_frozen_and_closed_handles(backend):
    a = MapSpec(name="a", type=MapType.ARRAY, key_size=4, value_size=8, max_entries=2)
    with _load(backend, a) as coll:
        m = coll.maps["a"]
        c = m.clone()
        try:
            m[1] = b"\x01" * 8
            assert c[1] == b"\x01" * 8 and c.id == m.id and c is not m
            assert not m.info.frozen
            m.freeze()
            assert c.info.frozen
            with pytest.raises(MapError) as e:
                c[1] = bytes(8)
            assert e.value.errno == 1
        finally:
            c.close()
        with pytest.raises(UsageError):
            c[1]
