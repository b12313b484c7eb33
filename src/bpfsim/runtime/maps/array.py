"""BPF_MAP_TYPE_ARRAY and PERCPU_ARRAY (kernel/bpf/arraymap.c).

Job: fixed u32-indexed elements that always exist (zero-filled), never deleted; an update
frees the element's special fields (bpf_obj_free_fields: the timer is cancelled even with
BPF_F_LOCK).  Element memory is created on first touch (a never-touched element reads as
zeros), so a huge max_entries costs nothing until used.
Must not import `kernel` or `vm` internals.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bpfsim.errors import MapError, MapFull
from bpfsim.runtime.maps.base import (
    BPF_F_ACCESS_MASK,
    INT_MAX,
    PCPU_MIN_UNIT_SIZE,
    Element,
    MapBase,
    einval,
    flags_access_ok,
    round_up,
)
from bpfsim.uapi.constants import (
    BPF_EXIST,
    BPF_F_INNER_MAP,
    BPF_F_LOCK,
    BPF_F_MMAPABLE,
    BPF_F_NUMA_NODE,
    BPF_F_PRESERVE_ELEMS,
    BPF_NOEXIST,
    E2BIG,
    EEXIST,
    EINVAL,
    MapType,
)

if TYPE_CHECKING:
    from bpfsim.spec.collection import MapSpec

ARRAY_CREATE_FLAG_MASK = (BPF_F_NUMA_NODE | BPF_F_MMAPABLE | BPF_F_ACCESS_MASK | BPF_F_PRESERVE_ELEMS
                          | BPF_F_INNER_MAP)
_U32 = struct.Struct("<I")


def array_alloc_check(spec: MapSpec, ncpus: int) -> None:
    """arraymap.c: array_map_alloc_check."""
    percpu = spec.type == MapType.PERCPU_ARRAY
    if (spec.max_entries == 0 or spec.key_size != 4 or spec.value_size == 0
            or spec.flags & ~ARRAY_CREATE_FLAG_MASK or not flags_access_ok(spec.flags)):
        raise einval("array maps need key_size 4, value_size > 0, max_entries > 0 and valid flags")
    if spec.type != MapType.ARRAY and spec.flags & (BPF_F_MMAPABLE | BPF_F_INNER_MAP):
        raise einval("BPF_F_MMAPABLE/BPF_F_INNER_MAP are for BPF_MAP_TYPE_ARRAY only")
    if spec.type != MapType.PERF_EVENT_ARRAY and spec.flags & BPF_F_PRESERVE_ELEMS:
        raise einval("BPF_F_PRESERVE_ELEMS is for perf event arrays only")
    if spec.value_size > INT_MAX:
        raise MapFull("value_size too large", E2BIG)
    if percpu and round_up(spec.value_size) > PCPU_MIN_UNIT_SIZE:
        raise MapFull(f"per-CPU value size is limited to {PCPU_MIN_UNIT_SIZE} bytes", E2BIG)


class ArrayMap(MapBase):
    """BPF_MAP_TYPE_ARRAY; `percpu` subclasses keep one value per CPU."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._elems: dict[int, Element] = {}

    @classmethod
    def alloc_check(cls, spec: MapSpec, ncpus: int) -> None:
        array_alloc_check(spec, ncpus)

    # -- elements -------------------------------------------------------------------------------
    def elem(self, index: int) -> Element:
        """The element at `index`, creating its memory on first touch."""
        e = self._elems.get(index)
        if e is None:
            with self.lock:
                e = self._elems.get(index)
                if e is None:
                    e = Element(self, index=index)
                    self._elems[index] = e
        return e

    def elements(self) -> list[Element]:
        return list(self._elems.values())

    def _drop_storage(self) -> None:
        self._elems.clear()

    def _index(self, key: bytes) -> int:
        return _U32.unpack(key)[0]

    def _read_out(self, index: int) -> bytes:
        """One element as user space sees it (special fields zeroed; per-CPU: every CPU)."""
        e = self._elems.get(index)
        if self.percpu:
            step = round_up(self.value_size)
            if e is None:
                return bytes(step * self.ncpus)
            return b"".join(e.read(c, step) for c in range(self.ncpus))
        if e is None:
            return bytes(self.value_size)
        return self.record.copy_out(e.read())

    # -- syscall side ---------------------------------------------------------------------------
    def _sys_lookup(self, key: bytes, flags: int) -> bytes:
        index = self._index(key)
        if index >= self.max_entries:
            raise self._not_found(key)
        if flags & BPF_F_LOCK:
            e = self.elem(index)
            with self.value_locked(e):     # copy_map_value_locked
                return self.record.copy_out(e.read())
        return self._read_out(index)

    def _check_update(self, index: int, flags: int) -> None:
        """arraymap.c: array_map_update_elem's checks, in order."""
        if (flags & ~BPF_F_LOCK) > BPF_EXIST:
            raise einval(f"bad update flags {flags:#x}")
        if index >= self.max_entries:
            raise MapFull(f"index {index} out of range (max_entries {self.max_entries})", E2BIG)
        if flags & BPF_NOEXIST:
            raise MapError("array elements always exist (BPF_NOEXIST)", EEXIST)
        if flags & BPF_F_LOCK and self.record.spin_lock_off is None:
            raise einval("BPF_F_LOCK needs a bpf_spin_lock in the value")

    def _sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        index = self._index(key)
        if self.percpu and flags > BPF_EXIST:      # bpf_percpu_array_update
            raise einval(f"bad update flags {flags:#x}")
        self._check_update(index, flags)
        e = self.elem(index)
        if self.percpu:
            step = round_up(self.value_size)
            for c in range(self.ncpus):
                e.write(value[c * step:(c + 1) * step], c)
            return
        self._store(e, value, flags)

    def _store(self, e: Element, value: bytes, flags: int) -> None:
        if flags & BPF_F_LOCK:
            with self.value_locked(e):     # copy_map_value_locked
                e.write(value)
        else:
            e.write(value)
        self.free_fields(e)  # bpf_obj_free_fields: any update frees the timer

    def _sys_delete(self, key: bytes) -> None:
        raise einval("array elements cannot be deleted")

    def _next_key(self, key: bytes | None) -> bytes | None:
        """array_map_get_next_key: index order; a missing/out-of-range key restarts at 0."""
        index = self._index(key) if key is not None else self.max_entries
        if index >= self.max_entries:
            return _U32.pack(0)
        if index == self.max_entries - 1:
            return None
        return _U32.pack(index + 1)

    # -- program side ---------------------------------------------------------------------------
    def _prog_index(self, key_addr: int) -> int:
        return self.mem.load(key_addr, 4)

    def prog_lookup(self, key_addr: int, cpu: int = 0) -> int:
        index = self._prog_index(key_addr)
        if index >= self.max_entries:
            return 0
        return self.elem(index).value_addr(cpu if self.percpu else 0)

    def prog_lookup_percpu(self, key_addr: int, target_cpu: int) -> int:
        if not self.percpu or target_cpu >= self.ncpus:
            return 0
        return self.prog_lookup(key_addr, target_cpu)

    def prog_update(self, key_addr: int, value_addr: int, flags: int, cpu: int = 0) -> int:
        index = self._prog_index(key_addr)
        try:
            self._check_update(index, flags)
        except MapError as e:
            return -e.errno
        value = self._read_value(value_addr)
        e = self.elem(index)
        if self.percpu:
            e.write(value, cpu)
            self.free_fields(e)
        else:
            self._store(e, value, flags)
        return 0

    def prog_delete(self, key_addr: int, cpu: int = 0) -> int:
        return -EINVAL

    def for_each(self, fn: Callable[[int, int], int], cpu: int = 0) -> int:
        """bpf_for_each_array_elem: indexes in order; the key is a u32 on the stack."""
        scratch = self.mem.map(bytearray(4), name=f"{self.name}.iter_key", kind="stack", writable=False)
        try:
            n = 0
            for i in range(self.max_entries):
                scratch.buf[:4] = _U32.pack(i)
                n += 1
                if fn(scratch.base, self.elem(i).value_addr(cpu if self.percpu else 0)):
                    break
            return n
        finally:
            self.mem.unmap(scratch)


class PercpuArrayMap(ArrayMap):
    """BPF_MAP_TYPE_PERCPU_ARRAY."""

    percpu = True
