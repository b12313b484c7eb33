"""The emulated kernel's maps: `create_map` (BPF_MAP_CREATE) and one module per family.

Job: validate a `MapSpec` the way the kernel's map_create does (generic checks, the family's
map_alloc_check, BTF sizes, the special-field rules of map_check_btf) and build the live map;
plus the lookups helpers need from a program pointer (`element_at`, `map_at`).
Must not import `kernel` or `vm` internals.

Families: array.py (ARRAY, PERCPU_ARRAY), hash.py (+ lru.py: HASH, PERCPU_HASH, LRU_HASH,
LRU_PERCPU_HASH), fd_maps.py (PROG_ARRAY, ARRAY_OF_MAPS, HASH_OF_MAPS), queue_stack.py,
ringbuf.py, lpm.py, bloom.py.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from bpfsim.errors import BpfError, MapError, MemoryFault, NotSupported
from bpfsim.runtime.maps.array import ArrayMap, PercpuArrayMap
from bpfsim.runtime.maps.base import Element, MapBase, einval, round_up
from bpfsim.runtime.maps.bloom import BloomFilterMap
from bpfsim.runtime.maps.fd_maps import ArrayOfMapsMap, HashOfMapsMap, ProgArrayMap
from bpfsim.runtime.maps.fields import FieldRecord, check_record, parse_record
from bpfsim.runtime.maps.hash import HashMap, LruHashMap, LruPercpuHashMap, PercpuHashMap
from bpfsim.runtime.maps.lpm import LpmTrieMap
from bpfsim.runtime.maps.queue_stack import QueueMap, StackMap
from bpfsim.runtime.maps.ringbuf import RingBufMap
from bpfsim.uapi.constants import (
    BPF_F_NO_PREALLOC,
    BPF_F_RDONLY,
    BPF_F_WRONLY,
    BPF_OBJ_NAME_LEN,
    ENOMEM,
    MapType,
)

if TYPE_CHECKING:
    from bpfsim.spec.collection import MapSpec
    from bpfsim.vm.memory import AddressSpace

MAP_CLASSES: dict[int, type[MapBase]] = {
    MapType.HASH: HashMap,
    MapType.ARRAY: ArrayMap,
    MapType.PROG_ARRAY: ProgArrayMap,
    MapType.PERCPU_HASH: PercpuHashMap,
    MapType.PERCPU_ARRAY: PercpuArrayMap,
    MapType.LRU_HASH: LruHashMap,
    MapType.LRU_PERCPU_HASH: LruPercpuHashMap,
    MapType.LPM_TRIE: LpmTrieMap,
    MapType.ARRAY_OF_MAPS: ArrayOfMapsMap,
    MapType.HASH_OF_MAPS: HashOfMapsMap,
    MapType.QUEUE: QueueMap,
    MapType.STACK: StackMap,
    MapType.RINGBUF: RingBufMap,
    MapType.BLOOM_FILTER: BloomFilterMap,
}
_NAME_OK = re.compile(r"^[A-Za-z0-9_.]*$")


# The emulator's stand-in for "the kernel could not allocate it": a map whose preallocated
# memory would exceed this (Runtime(max_map_bytes=...)) fails creation with -ENOMEM instead
# of taking the Python process down.
DEFAULT_MAX_MAP_BYTES = 1 << 30
_PREALLOCATED = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.PROG_ARRAY,
                           MapType.ARRAY_OF_MAPS, MapType.HASH, MapType.PERCPU_HASH,
                           MapType.LRU_HASH, MapType.LRU_PERCPU_HASH, MapType.HASH_OF_MAPS,
                           MapType.RINGBUF, MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER})


def _check_memory(kernel: Any, spec: MapSpec, ncpus: int) -> None:
    mtype = int(spec.type)
    if mtype not in _PREALLOCATED or (spec.flags & BPF_F_NO_PREALLOC and mtype != MapType.BLOOM_FILTER):
        return
    if mtype == MapType.RINGBUF:
        need = spec.max_entries
    else:
        per_cpu = ncpus if mtype in (MapType.PERCPU_ARRAY, MapType.PERCPU_HASH,
                                     MapType.LRU_PERCPU_HASH) else 1
        need = spec.max_entries * (((spec.key_size + 7) & ~7) + ((spec.value_size + 7) & ~7) * per_cpu)
    limit = int(getattr(kernel, "max_map_bytes", DEFAULT_MAX_MAP_BYTES))
    if need > limit:
        raise MapError(f"map '{spec.name}' would preallocate {need:,} bytes, more than the "
                       f"emulator's limit of {limit:,} (Runtime(max_map_bytes=...))", ENOMEM)


def create_map(kernel: Any, spec: MapSpec, btf: Any = None, *, inner_map: MapBase | None = None) -> MapBase:
    """BPF_MAP_CREATE: a live map holding one user reference (the creator's), or MapError with
    the errno the kernel would return.  *_OF_MAPS need an inner template: `inner_map` (a live
    map, like the kernel's inner_map_fd) or else `spec.inner` (created and dropped here)."""
    mtype = int(spec.type)
    if mtype not in MapType._value2member_map_ or mtype == MapType.UNSPEC:
        raise einval(f"unknown map type {mtype}")
    cls = MAP_CLASSES.get(mtype)
    if cls is None:
        raise NotSupported(f"map type {MapType(mtype).name} in the simulator")
    # syscall.c: map_create's generic checks, before the family's
    if spec.map_extra and mtype not in (MapType.BLOOM_FILTER, MapType.ARENA):
        raise einval("map_extra is only for bloom filters and arenas")
    if spec.flags & BPF_F_RDONLY and spec.flags & BPF_F_WRONLY:
        raise einval("BPF_F_RDONLY and BPF_F_WRONLY together")
    if len(spec.name) >= BPF_OBJ_NAME_LEN or not _NAME_OK.match(spec.name):
        raise einval(f"bad map name {spec.name!r} (at most 15 of [A-Za-z0-9_.])")
    ncpus = int(kernel.ncpus)
    cls.alloc_check(spec, ncpus)
    _check_memory(kernel, spec, ncpus)
    record = _check_btf(spec, btf)
    check_record(record, mtype, spec.flags)
    inner = None
    if mtype in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
        inner = inner_map
        own_inner = False
        if inner is None:
            if spec.inner is None:
                raise einval(f"map '{spec.name}': a map of maps needs an inner map template")
            inner = create_map(kernel, spec.inner, btf)
            own_inner = True
        try:
            m = cls(kernel, spec, btf, record)
            m.set_inner(inner)   # type: ignore[attr-defined]
        except BpfError:
            if own_inner:
                inner.put_with_uref()
            raise
        if own_inner:
            inner.put_with_uref()
        return m
    return cls(kernel, spec, btf, record)


def _check_btf(spec: MapSpec, btf: Any) -> FieldRecord:
    """syscall.c: map_check_btf: BTF sizes must match; then the value's special fields."""
    if btf is None:
        return FieldRecord()
    for what, tid, size in (("key", spec.key_type_id, spec.key_size),
                            ("value", spec.value_type_id, spec.value_size)):
        if not tid:
            continue
        try:
            actual = btf.size_of(tid)
        except BpfError as e:
            raise einval(f"map '{spec.name}': bad BTF {what} type {tid}: {e}") from None
        if actual != size:
            raise einval(f"map '{spec.name}': BTF {what} type is {actual} bytes, {what}_size is {size}")
    return parse_record(btf, spec.value_type_id, spec.value_size)


def element_at(mem: AddressSpace, addr: int) -> tuple[Element, int]:
    """The element a program pointer points into and the offset from its value's start."""
    found = mem.find(addr)
    if found is not None:
        region, off = found
        owner = region.owner
        if isinstance(owner, Element):
            if owner.pcpu is not None and region is not owner.region:
                return owner, off
            return owner, off - owner.key_len
    raise MemoryFault(f"{addr:#x} is not inside a map value", address=addr)


def map_at(mem: AddressSpace, addr: int) -> MapBase:
    """The map a CONST_PTR_TO_MAP value names."""
    found = mem.find(addr)
    if found is None or found[0].kind != "map" or not isinstance(found[0].owner, MapBase):
        raise MemoryFault(f"{addr:#x} is not a map pointer", address=addr)
    return found[0].owner


__all__ = [
    "MAP_CLASSES", "ArrayMap", "ArrayOfMapsMap", "BloomFilterMap", "Element", "FieldRecord", "HashMap",
    "HashOfMapsMap", "LpmTrieMap", "LruHashMap", "LruPercpuHashMap", "MapBase", "MapError", "PercpuArrayMap",
    "PercpuHashMap", "ProgArrayMap", "QueueMap", "RingBufMap", "StackMap", "create_map", "element_at",
    "map_at", "round_up",
]
