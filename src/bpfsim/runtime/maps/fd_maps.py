"""Maps whose values are kernel objects: PROG_ARRAY, ARRAY_OF_MAPS, HASH_OF_MAPS.

Job (arraymap.c: fd_array_map_*, prog_array_*, array_of_map_*; hashtab.c: htab_of_map_*;
map_in_map.c): user space stores an object (by handle id, where the kernel takes an fd) and
reads back its id; the map holds a refcnt on every object it stores; a program lookup in a
map-in-map yields the inner map's address (a CONST_PTR_TO_MAP), tail calls read
`prog_at(index)`.  Inner maps must match the template the outer map was created with
(bpf_map_meta_equal); a prog array accepts only programs of one type (bpf_prog_map_compatible)
and is cleared when its last user reference goes (prog_array_map_clear).
Must not import `kernel` or `vm` internals.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bpfsim.errors import MapError, MapFull
from bpfsim.runtime.kobject import object_by_id
from bpfsim.runtime.maps.array import array_alloc_check
from bpfsim.runtime.maps.base import MapBase, einval
from bpfsim.runtime.maps.fields import FieldRecord
from bpfsim.runtime.maps.hash import htab_alloc_check
from bpfsim.uapi.constants import (
    BPF_ANY,
    BPF_EXIST,
    BPF_F_INNER_MAP,
    BPF_F_RDONLY_PROG,
    BPF_F_WRONLY_PROG,
    BPF_NOEXIST,
    E2BIG,
    EBADF,
    EEXIST,
    ENOENT,
    MapType,
)

if TYPE_CHECKING:
    from bpfsim.spec.collection import MapSpec

_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class InnerMeta:
    """map_in_map.c: bpf_map_meta_alloc: what an inner map must look like."""

    map_type: int
    key_size: int
    value_size: int
    map_flags: int
    max_entries: int
    record: FieldRecord

    @classmethod
    def of(cls, m: MapBase) -> InnerMeta:
        return cls(m.map_type, m.key_size, m.value_size, m.map_flags, m.max_entries, m.record)

    def accepts(self, m: MapBase) -> bool:
        """bpf_map_meta_equal (+ array_map_meta_equal's max_entries rule)."""
        if (m.map_type, m.key_size, m.value_size, m.map_flags) != (
                self.map_type, self.key_size, self.value_size, self.map_flags):
            return False
        if m.record.fields != self.record.fields:
            return False
        if self.map_type in (MapType.ARRAY, MapType.PERCPU_ARRAY) and not self.map_flags & BPF_F_INNER_MAP:
            return m.max_entries == self.max_entries
        return True


class _ObjectValues(MapBase):
    """Shared object handling: values are refcounted kernel objects, user-visible as ids."""

    fd_values = True
    object_kind = "map"

    @property
    def user_value_size(self) -> int:
        return 4

    def _object(self, value: bytes) -> Any:
        """map_fd_get_ptr: the object named by a u32 id, with a refcnt taken."""
        obj_id = _U32.unpack(value)[0]
        obj = object_by_id(self.kernel, self.object_kind, obj_id)
        if obj is None or obj.refcnt <= 0:
            raise MapError(f"no live {self.object_kind} with id {obj_id}", EBADF)
        self._accept(obj)
        obj.inc()
        return obj

    def _accept(self, obj: Any) -> None:
        """Compatibility check for a new value (overridden)."""

    @staticmethod
    def _put(obj: Any) -> None:
        if obj is not None:
            obj.put()


class _InnerMaps:
    """Mixin for *_OF_MAPS: the inner-map template."""

    inner_meta: InnerMeta | None = None
    object_kind = "map"

    def set_inner(self, inner: MapBase) -> None:
        if inner.map_type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
            raise einval("maps of maps cannot nest")      # bpf_map_meta_alloc
        self.inner_meta = InnerMeta.of(inner)

    def _accept(self, obj: Any) -> None:
        if self.inner_meta is None or not self.inner_meta.accepts(obj):
            raise einval(f"map '{getattr(obj, 'name', '?')}' does not match the inner map template")


class FdArrayMap(_ObjectValues):
    """Common part of PROG_ARRAY and ARRAY_OF_MAPS (fd_array_map_*)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots: list[Any] = [None] * self.max_entries

    @classmethod
    def alloc_check(cls, spec: MapSpec, ncpus: int) -> None:
        """fd_array_map_alloc_check."""
        if spec.value_size != 4:
            raise einval("fd arrays need value_size 4")
        if spec.flags & (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG):
            raise einval("fd arrays cannot be BPF_F_RDONLY_PROG/WRONLY_PROG")
        array_alloc_check(spec, ncpus)

    def get(self, index: int) -> Any:
        return self._slots[index] if 0 <= index < self.max_entries else None

    def _sys_lookup(self, key: bytes, flags: int) -> bytes:
        index = _U32.unpack(key)[0]
        obj = self.get(index)
        if obj is None:
            raise self._not_found(key)
        return _U32.pack(obj.id)

    def _sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        """bpf_fd_array_map_update_elem."""
        if flags != BPF_ANY:
            raise einval("fd arrays take BPF_ANY only")
        index = _U32.unpack(key)[0]
        if index >= self.max_entries:
            raise MapFull(f"index {index} out of range", E2BIG)
        obj = self._object(value)
        with self.lock:
            old, self._slots[index] = self._slots[index], obj
        self._put(old)

    def _sys_delete(self, key: bytes) -> None:
        index = _U32.unpack(key)[0]
        if index >= self.max_entries:
            raise MapFull(f"index {index} out of range", E2BIG)
        with self.lock:
            old, self._slots[index] = self._slots[index], None
        if old is None:
            raise self._not_found(key)
        self._put(old)

    def _next_key(self, key: bytes | None) -> bytes | None:
        index = _U32.unpack(key)[0] if key is not None else self.max_entries
        if index >= self.max_entries:
            return _U32.pack(0)
        if index == self.max_entries - 1:
            return None
        return _U32.pack(index + 1)

    def clear(self) -> None:
        with self.lock:
            old, self._slots = self._slots, [None] * self.max_entries
        for obj in old:
            self._put(obj)

    def _free_contents(self) -> None:
        self.clear()


class ProgArrayMap(FdArrayMap):
    """BPF_MAP_TYPE_PROG_ARRAY: tail-call targets."""

    object_kind = "prog"
    owner_type: int | None = None

    def _accept(self, prog: Any) -> None:
        """bpf_prog_map_compatible: every program must have the first one's type."""
        ptype = getattr(prog, "prog_type", None)
        if self.owner_type is None:
            self.owner_type = ptype
        elif ptype != self.owner_type:
            raise einval("program type differs from the prog array's owner type")

    def prog_at(self, index: int) -> Any:
        """The program a tail call through `index` jumps to, or None."""
        return self.get(index)

    def release_uref(self) -> None:
        """prog_array_map_clear: the last user reference empties the array."""
        super().release_uref()
        self.clear()


class ArrayOfMapsMap(_InnerMaps, FdArrayMap):
    """BPF_MAP_TYPE_ARRAY_OF_MAPS."""

    def prog_lookup(self, key_addr: int, cpu: int = 0) -> int:
        inner = self.get(self.mem.load(key_addr, 4))
        return 0 if inner is None else inner.address


class HashOfMapsMap(_InnerMaps, _ObjectValues):
    """BPF_MAP_TYPE_HASH_OF_MAPS (preallocated htab semantics: replacing never fails)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._table: dict[bytes, Any] = {}

    @classmethod
    def alloc_check(cls, spec: MapSpec, ncpus: int) -> None:
        """fd_htab_map_alloc_check."""
        if spec.value_size != 4:
            raise einval("maps of maps need value_size 4")
        htab_alloc_check(spec, ncpus)

    def __len__(self) -> int:
        return len(self._table)

    def _sys_lookup(self, key: bytes, flags: int) -> bytes:
        obj = self._table.get(key)
        if obj is None:
            raise self._not_found(key)
        return _U32.pack(obj.id)

    def _sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        if flags > BPF_EXIST:
            raise einval(f"bad update flags {flags:#x}")
        obj = self._object(value)
        try:
            with self.lock:
                old = self._table.get(key)
                if old is not None and flags == BPF_NOEXIST:
                    raise MapError("key already exists (BPF_NOEXIST)", EEXIST)
                if old is None and flags == BPF_EXIST:
                    raise MapError("key does not exist (BPF_EXIST)", ENOENT)
                if old is None and len(self._table) >= self.max_entries:
                    raise MapFull(f"map '{self.name}' is full", E2BIG)
                self._table[key] = obj
        except MapError:
            obj.put()
            raise
        self._put(old)

    def _sys_delete(self, key: bytes) -> None:
        with self.lock:
            old = self._table.pop(key, None)
        if old is None:
            raise self._not_found(key)
        self._put(old)

    def _next_key(self, key: bytes | None) -> bytes | None:
        with self.lock:
            keys = list(self._table)
        if not keys:
            return None
        if key is None or key not in self._table:
            return keys[0]
        i = keys.index(key)
        return keys[i + 1] if i + 1 < len(keys) else None

    def prog_lookup(self, key_addr: int, cpu: int = 0) -> int:
        inner = self._table.get(self._read_key(key_addr))
        return 0 if inner is None else inner.address

    def prog_delete(self, key_addr: int, cpu: int = 0) -> int:
        try:
            self._sys_delete(self._read_key(key_addr))
        except KeyError:
            return -ENOENT
        return 0

    def _free_contents(self) -> None:
        with self.lock:
            old, self._table = list(self._table.values()), {}
        for obj in old:
            self._put(obj)



