"""Special fields of a map value (bpf_timer, bpf_spin_lock, bpf_wq, kptrs...) and value copies.

Job: the map's `btf_record` as the maps need it (syscall.c: map_check_btf's type rules) and
the kernel's value-copy rules around it:
* `copy_in` = copy_map_value: an update never writes the bytes of a special field;
* `copy_out` = copy_map_value + check_and_init_map_value: a user-space lookup returns those
  bytes zeroed;
* `guards` = the byte ranges programs may never load or store (verifier.c: check_map_access),
  installed as `Region.guards`.
Must not import `kernel`, `vm` internals or the other map modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bpfsim.errors import BpfError, MapError
from bpfsim.uapi.constants import BPF_F_RDONLY_PROG, BPF_F_WRONLY_PROG, EACCES, MapType

EOPNOTSUPP = 95   # not in uapi.constants (errno.EOPNOTSUPP)


TIMER = "bpf_timer"
SPIN_LOCK = "bpf_spin_lock"
RES_SPIN_LOCK = "bpf_res_spin_lock"
WQ = "bpf_wq"
TASK_WORK = "bpf_task_work"

# syscall.c: map_check_btf: which map types accept which special field (else -EOPNOTSUPP).
_LOCK_TYPES = {MapType.HASH, MapType.ARRAY, MapType.CGROUP_STORAGE, MapType.SK_STORAGE,
               MapType.INODE_STORAGE, MapType.TASK_STORAGE, MapType.CGRP_STORAGE}
_ASYNC_TYPES = {MapType.HASH, MapType.LRU_HASH, MapType.ARRAY}
_ALLOWED = {SPIN_LOCK: _LOCK_TYPES, RES_SPIN_LOCK: _LOCK_TYPES, TIMER: _ASYNC_TYPES,
            WQ: _ASYNC_TYPES, TASK_WORK: _ASYNC_TYPES}
# kptrs, graph roots and refcounts (not emulated beyond being protected bytes) are accepted
# by the kernel in these types.
_OTHER_TYPES = {MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH,
                MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.SK_STORAGE, MapType.INODE_STORAGE,
                MapType.TASK_STORAGE, MapType.CGRP_STORAGE}


@dataclass(frozen=True)
class Field:
    kind: str
    offset: int
    size: int


@dataclass(frozen=True)
class FieldRecord:
    """The special fields of one map's value; empty when the value has none (or no BTF)."""

    fields: tuple[Field, ...] = ()
    ranges: tuple[tuple[int, int], ...] = field(default=(), compare=False)

    @classmethod
    def of(cls, fields: list[Field]) -> FieldRecord:
        fs = tuple(sorted(fields, key=lambda f: f.offset))
        return cls(fs, tuple((f.offset, f.offset + f.size) for f in fs))

    def __bool__(self) -> bool:
        return bool(self.fields)

    def offset_of(self, kind: str) -> int | None:
        for f in self.fields:
            if f.kind == kind:
                return f.offset
        return None

    @property
    def timer_off(self) -> int | None:
        return self.offset_of(TIMER)

    @property
    def spin_lock_off(self) -> int | None:
        off = self.offset_of(SPIN_LOCK)
        return off if off is not None else self.offset_of(RES_SPIN_LOCK)

    def guards(self, base: int = 0) -> tuple[tuple[int, int], ...]:
        """Byte ranges (shifted by `base`, the value's offset in its region) no program may touch."""
        return tuple((lo + base, hi + base) for lo, hi in self.ranges)

    # -- copies (bpf.h: copy_map_value, check_and_init_map_value) -------------------------------
    def copy_in(self, dst: bytearray | memoryview, dst_off: int, src: bytes) -> None:
        """Write `src` into the value at `dst[dst_off:]`, skipping every special field."""
        if not self.ranges:
            dst[dst_off:dst_off + len(src)] = src
            return
        pos = 0
        for lo, hi in self.ranges:
            if lo > pos:
                dst[dst_off + pos:dst_off + lo] = src[pos:lo]
            pos = max(pos, hi)
        if pos < len(src):
            dst[dst_off + pos:dst_off + len(src)] = src[pos:]

    def copy_out(self, data: bytes) -> bytes:
        """What user space sees: the value with every special field zeroed."""
        if not self.ranges:
            return bytes(data)
        out = bytearray(data)
        for lo, hi in self.ranges:
            out[lo:min(hi, len(out))] = bytes(max(0, min(hi, len(out)) - lo))
        return bytes(out)

    def init(self, dst: bytearray | memoryview, dst_off: int) -> None:
        """check_and_init_map_value: zero the special fields of a fresh value."""
        for lo, hi in self.ranges:
            dst[dst_off + lo:dst_off + hi] = bytes(hi - lo)


EMPTY = FieldRecord()


def parse_record(btf: Any, value_type_id: int, value_size: int) -> FieldRecord:
    """The record the kernel builds at map creation (btf.c: btf_parse_fields).

    An invalid record (two timers, a timer array...) is an empty one: the kernel keeps the
    map but treats its value as plain bytes (bpf_timer.md section 1.3); the BTF package's
    `special_fields` already returns [] in that case.
    """
    if btf is None or not value_type_id:
        return EMPTY
    try:
        found = btf.special_fields(value_type_id, value_size)
    except BpfError:
        return EMPTY
    return FieldRecord.of([Field(str(f.kind), int(f.offset), int(f.size)) for f in found])


def check_record(record: FieldRecord, map_type: int, map_flags: int) -> None:
    """syscall.c: map_check_btf: special fields need a suitable map type and no *_PROG flags."""
    if not record:
        return
    if map_flags & (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG):
        raise MapError("a map value with special fields cannot be BPF_F_RDONLY_PROG/WRONLY_PROG",
                       EACCES)
    for f in record.fields:
        allowed = _ALLOWED.get(f.kind, _OTHER_TYPES)
        if map_type not in allowed:
            name = MapType(map_type).name if map_type in MapType._value2member_map_ else map_type
            raise MapError(f"{f.kind} is not supported in a map of type {name}", EOPNOTSUPP)
