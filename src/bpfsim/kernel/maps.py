"""`KernelMap`: the emulator's `Map` handle over a map in the real kernel (one fd).

Job: the byte-level user operations of a kernel map (`KernelMapOps`: lookup, update, delete,
keys, lookup_and_delete, freeze, ring buffer drain, through `kernel.syscall`), shaped like the
emulator's `runtime.maps.MapBase` so that the handle on top *is* the emulator's
`runtime.handles.Map`: the same BTF codec, dict interface, raw view and `dump()` (bpftool's
JSON) -- one implementation for both backends.  Errors follow the emulator's: a missing key is
`KeyNotFound`, a refused operation `MapError` with the kernel's errno (E2BIG is `MapFull`), a
pin problem `PinError`.
Must not call bpf(2) itself (only `kernel.syscall` does).
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bpfsim.errors import KernelError, KeyNotFound, MapError, MapFull, PinError, UsageError
from bpfsim.kernel import syscall as sc
from bpfsim.runtime.handles import Map
from bpfsim.uapi.constants import BPF_ANY, MapType

if TYPE_CHECKING:
    from bpfsim.btf import Btf

PERCPU_TYPES = frozenset({MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH,
                          MapType.PERCPU_CGROUP_STORAGE})
# User space writes an fd and reads back an id (map_fd_sys_lookup_elem, prog_fd_array_sys_lookup_elem).
FD_VALUE_TYPES = frozenset({MapType.PROG_ARRAY, MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS})
# No get_next_key: bpftool dumps them as [] and the handle refuses to iterate.
NOT_ITERABLE = frozenset({MapType.QUEUE, MapType.STACK, MapType.RINGBUF, MapType.USER_RINGBUF,
                          MapType.BLOOM_FILTER, MapType.ARENA})


def possible_cpus() -> int:
    """Number of possible CPUs, like libbpf_num_possible_cpus (/sys/devices/system/cpu/possible)."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += (int(hi) if hi else int(lo)) - int(lo) + 1
    return n


def _round8(n: int) -> int:
    return (n + 7) // 8 * 8


class KernelMapOps:
    """A kernel map's user-space operations on bytes, owning one fd (the user reference).

    Duck-types what `runtime.handles.Map` uses of an emulated map (`MapBase`)."""

    def __init__(self, fd: int, *, name: str, map_type: int, key_size: int, value_size: int,
                 max_entries: int, flags: int = 0, map_extra: int = 0, btf: Btf | None = None,
                 key_type_id: int = 0, value_type_id: int = 0, ncpus: int | None = None,
                 kernel_btf: bool = False) -> None:
        self.fd = fd
        self.name = name
        self.map_type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.map_flags = flags
        self.map_extra = map_extra
        self.btf = btf if (key_type_id or value_type_id) else None
        self.key_type_id = key_type_id if self.btf is not None else 0
        self.value_type_id = value_type_id if self.btf is not None else 0
        self.ncpus = ncpus or possible_cpus()
        self.kernel_btf = kernel_btf          # False after libbpf's retry without BTF
        self.percpu = map_type in PERCPU_TYPES
        self.fd_values = map_type in FD_VALUE_TYPES
        self.iterable = map_type not in NOT_ITERABLE

    # -- identity ---------------------------------------------------------------------------
    def _fd(self) -> int:
        if self.fd < 0:
            raise UsageError(f"map handle '{self.name}' is closed")
        return self.fd

    @property
    def id(self) -> int:
        return sc.map_get_info(self._fd()).id

    @property
    def type(self) -> int:
        return self.map_type

    @property
    def flags(self) -> int:
        return self.map_flags

    @property
    def type_name(self) -> str:
        return MapType(self.map_type).name.lower() if self.map_type in MapType._value2member_map_ \
            else str(self.map_type)

    @property
    def user_value_size(self) -> int:
        """Bytes per element from user space (syscall.c: bpf_map_value_size)."""
        return _round8(self.value_size) * self.ncpus if self.percpu else self.value_size

    @property
    def frozen(self) -> bool:
        """From the fd's fdinfo ("frozen:" line, syscall.c: bpf_map_show_fdinfo)."""
        try:
            with open(f"/proc/self/fdinfo/{self._fd()}") as f:
                for line in f:
                    if line.startswith("frozen:"):
                        return line.split()[1] == "1"
        except OSError:
            pass
        return False

    def __repr__(self) -> str:
        return f"<KernelMapOps '{self.name}' fd={self.fd} {self.type_name}>"

    # -- bytes ------------------------------------------------------------------------------
    def _err(self, e: KernelError, what: str, key: bytes | None = None) -> Exception:
        if e.errno == 2:
            shown = f"key {key.hex()} not found" if key else "no such element"
            return KeyNotFound(f"map '{self.name}': {shown}")
        if e.errno == 7:
            return MapFull(f"{what} map '{self.name}': map is full (E2BIG)", 7)
        return MapError(f"{what} map '{self.name}': {e}", e.errno)

    def _key(self, key: bytes | None) -> bytes | None:
        if self.key_size == 0:
            return None
        if key is None or len(key) != self.key_size:
            got = "no key" if key is None else f"{len(key)} bytes"
            raise UsageError(f"map '{self.name}': key must be {self.key_size} bytes, got {got}")
        return bytes(key)

    def lookup(self, key: bytes | None, flags: int = 0) -> bytes:
        """BPF_MAP_LOOKUP_ELEM (queue/stack: peek); KeyNotFound if absent."""
        k = self._key(key)
        try:
            data = sc.map_lookup(self._fd(), k if k is not None else b"", self.user_value_size, flags)
        except KernelError as e:
            raise self._err(e, "lookup in", k) from None
        if data is None:
            raise KeyNotFound(f"map '{self.name}': key {(k or b'').hex()} not found")
        return data

    def update(self, key: bytes | None, value: bytes, flags: int = BPF_ANY) -> None:
        """BPF_MAP_UPDATE_ELEM.  For fd-valued maps `value` holds an object *id* (what the
        emulator's handle encodes); the kernel wants an fd, so one is opened for the call."""
        k = self._key(key)
        if len(value) != self.user_value_size:
            raise UsageError(f"map '{self.name}': value must be {self.user_value_size} bytes, "
                             f"got {len(value)}")
        tmp = -1
        if self.fd_values:
            obj_id = struct.unpack_from("<I", value)[0]
            get = sc.prog_get_fd_by_id if self.map_type == MapType.PROG_ARRAY else sc.map_get_fd_by_id
            try:
                tmp = get(obj_id)
            except KernelError as e:
                raise MapError(f"update map '{self.name}': no object with id {obj_id}: {e}",
                               e.errno) from None
            value = struct.pack("<I", tmp)
        try:
            sc.map_update(self._fd(), k if k is not None else b"", value, flags)
        except KernelError as e:
            raise self._err(e, "update", k) from None
        finally:
            if tmp >= 0:
                sc.close(tmp)

    def delete(self, key: bytes | None) -> None:
        """BPF_MAP_DELETE_ELEM; KeyNotFound if absent."""
        k = self._key(key)
        try:
            found = sc.map_delete(self._fd(), k if k is not None else b"")
        except KernelError as e:
            raise self._err(e, "delete from", k) from None
        if not found:
            raise KeyNotFound(f"map '{self.name}': key {(k or b'').hex()} not found")

    def get_next_key(self, key: bytes | None) -> bytes | None:
        """BPF_MAP_GET_NEXT_KEY; None at the end."""
        try:
            return sc.map_get_next_key(self._fd(), self._key(key) if key is not None else None,
                                       self.key_size)
        except KernelError as e:
            raise self._err(e, "get_next_key in") from None

    def keys(self) -> Iterator[bytes]:
        """Every key in get_next_key order (a snapshot walk, like bpftool)."""
        key = self.get_next_key(None)
        seen = 0
        while key is not None and seen <= self.max_entries + 1:
            yield key
            seen += 1
            key = self.get_next_key(key)

    iter_keys = keys

    def lookup_and_delete(self, key: bytes | None, flags: int = 0) -> bytes:
        """BPF_MAP_LOOKUP_AND_DELETE_ELEM (queue/stack pop with key None)."""
        k = self._key(key)
        try:
            data = sc.map_lookup_and_delete(self._fd(), k, self.user_value_size, flags)
        except KernelError as e:
            raise self._err(e, "lookup_and_delete in", k) from None
        if data is None:
            raise KeyNotFound(f"map '{self.name}': " + ("empty" if k is None else f"key {k.hex()} not found"))
        return data

    def contains(self, value: bytes) -> bool:
        """BLOOM_FILTER: "maybe present" (lookup with a NULL key; bloom_map_peek_elem)."""
        try:
            return sc.map_lookup(self._fd(), b"", 0, 0, value=value) is not None
        except KernelError as e:
            raise self._err(e, "lookup in") from None

    def mmap(self) -> memoryview:
        """mmap(2) of the map fd, shared and writable: the kernel refuses maps with special
        fields (ENOTSUPP, 524) and arrays without BPF_F_MMAPABLE (EINVAL)."""
        import mmap as _mmap

        page = _mmap.PAGESIZE
        length = max(page, -(-self.value_size * self.max_entries // page) * page)
        try:
            mapped = _mmap.mmap(self._fd(), length, _mmap.MAP_SHARED,
                                _mmap.PROT_READ | _mmap.PROT_WRITE)
        except OSError as e:
            raise self._err(KernelError("mmap", e.errno or 0), "mmap") from None
        self._mmaps = [*getattr(self, "_mmaps", []), mapped]
        return memoryview(mapped)

    def freeze(self) -> None:
        """BPF_MAP_FREEZE."""
        try:
            sc.map_freeze(self._fd())
        except KernelError as e:
            raise self._err(e, "freeze") from None

    def drain(self) -> list[bytes]:
        """RINGBUF: the committed records not yet consumed, in order, as bytes (what libbpf's
        ring_buffer__consume hands its callback); advances the consumer position.

        Layout (kernel/bpf/ringbuf.c): page 0 holds consumer_pos (user-writable), page 1
        producer_pos, then the data area mapped twice so a record never wraps.  Each record
        has an 8-byte header: u32 len with BUSY (bit 31) and DISCARD (bit 30), u32 pgoff."""
        if self.map_type != MapType.RINGBUF:
            raise UsageError(f"map '{self.name}' ({self.type_name}) is not a ring buffer")
        import mmap

        page, size = mmap.PAGESIZE, self.max_entries
        cons_map = mmap.mmap(self._fd(), page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            prod_map = mmap.mmap(self._fd(), page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                 offset=page)
        except OSError as e:
            cons_map.close()
            raise MapError(f"mmap of ring buffer '{self.name}': {e.strerror}", e.errno or 22) from None
        out: list[bytes] = []
        try:
            cons = int.from_bytes(cons_map[0:8], "little")
            prod = int.from_bytes(prod_map[0:8], "little")
            while cons < prod:
                off = page + (cons & (size - 1))
                hdr = int.from_bytes(prod_map[off:off + 4], "little")
                if hdr & (1 << 31):      # BPF_RINGBUF_BUSY_BIT: reserved, not committed yet
                    break
                length = hdr & ~((1 << 31) | (1 << 30))
                if not hdr & (1 << 30):  # BPF_RINGBUF_DISCARD_BIT
                    out.append(bytes(prod_map[off + 8:off + 8 + length]))
                cons += _round8(length + 8)
            cons_map[0:8] = cons.to_bytes(8, "little")
        finally:
            prod_map.close()
            cons_map.close()
        return out

    # -- lifetime ---------------------------------------------------------------------------
    def inc_uref_not_zero(self) -> bool:
        return self.fd >= 0

    def put_with_uref(self) -> None:
        """Close the fd (drop the user reference); idempotent."""
        if self.fd >= 0:
            sc.close(self.fd)
            self.fd = -1


class KernelMap(Map):
    """The emulator's `Map` handle on a kernel map: everything but the operations that are
    typed by emulator map classes (queue/bloom/ringbuf) and the fd-level ones (pin, clone)."""

    def __init__(self, ops: KernelMapOps) -> None:   # noqa: D107 - replaces Map's MapBase check
        self._map = ops  # type: ignore[assignment]
        self._name = ops.name

    @classmethod
    def create(cls, fd: int, **kw: Any) -> KernelMap:
        return cls(KernelMapOps(fd, **kw))

    @classmethod
    def from_fd(cls, fd: int, *, name: str | None = None, btf: Btf | None = None) -> KernelMap:
        """A handle on an fd we own (BPF_OBJ_GET, MAP_GET_FD_BY_ID), described by the kernel's
        `bpf_map_info`; decoded through `btf` when given (the map's own BTF)."""
        info = sc.map_get_info(fd)
        return cls.create(fd, name=name if name is not None else info.name, map_type=info.type,
                          key_size=info.key_size, value_size=info.value_size,
                          max_entries=info.max_entries, flags=info.map_flags,
                          map_extra=info.map_extra, btf=btf, key_type_id=info.btf_key_type_id,
                          value_type_id=info.btf_value_type_id,
                          kernel_btf=bool(info.btf_value_type_id))

    @property
    def ops(self) -> KernelMapOps:
        return self.kernel_map  # type: ignore[return-value]

    @property
    def fd(self) -> int:
        """The handle's fd (-1 once closed)."""
        return self._map.fd if self._map is not None else -1  # type: ignore[union-attr]

    @property
    def kernel_btf(self) -> bool:
        """Did the kernel get BTF ids for this map (False after libbpf's retry without BTF)?"""
        return self.ops.kernel_btf

    @property
    def percpu(self) -> bool:
        return self.ops.percpu

    @property
    def ncpus(self) -> int:
        return self.ops.ncpus

    @property
    def key_type_id(self) -> int:
        return self.ops.key_type_id

    @property
    def value_type_id(self) -> int:
        return self.ops.value_type_id

    def __repr__(self) -> str:
        if self._map is None:
            return f"<KernelMap '{self._name}' (closed)>"
        return f"<KernelMap '{self._name}' fd={self.fd} {self.ops.type_name}>"

    # -- the operations the emulator's handle types by map class ------------------------------
    def __contains__(self, key: object) -> bool:
        if self.ops.map_type == MapType.BLOOM_FILTER:
            return self.ops.contains(self._encode_one(key))
        try:
            self.ops.lookup(self.encode_key(key))
        except KeyNotFound:
            return False
        return True

    def pop(self, key: Any = None, default: Any = KeyNotFound) -> Any:  # type: ignore[override]
        """Queue/stack: `pop()` takes the next value.  Hash maps: dict.pop(key[, default])."""
        if self.ops.map_type in (MapType.QUEUE, MapType.STACK) and key is None:
            return self.decode_value(self.ops.lookup_and_delete(None))
        if key is None:
            raise UsageError("pop() needs a key")
        try:
            return self.lookup_and_delete(key)
        except KeyNotFound:
            if default is KeyNotFound:
                raise
            return default

    def push(self, value: Any, flags: int = BPF_ANY) -> None:
        """Queue/stack/bloom filter push (BPF_MAP_UPDATE_ELEM with a NULL key)."""
        if self.ops.map_type not in (MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER):
            raise UsageError(f"map '{self._name}' ({self.ops.type_name}) has no push")
        self.ops.update(None, self._encode_one(value), flags)

    def peek(self) -> Any:
        """Queue/stack: the next value without taking it; KeyNotFound when empty."""
        if self.ops.map_type not in (MapType.QUEUE, MapType.STACK):
            raise UsageError(f"map '{self._name}' ({self.ops.type_name}) has no peek")
        return self.decode_value(self.ops.lookup(None))

    def drain(self) -> list[bytes]:
        return self.ops.drain()

    # -- fd level ---------------------------------------------------------------------------
    def pin(self, path: str) -> None:
        """BPF_OBJ_PIN at a bpffs path (a user reference of its own)."""
        try:
            sc.obj_pin(self.ops._fd(), path)
        except KernelError as e:
            raise PinError(f"pin map '{self._name}' at {path}: {e}") from None

    def clone(self) -> KernelMap:
        """A second handle (dup(2) of the fd: a new user reference)."""
        o = self.ops
        return KernelMap.create(os.dup(o._fd()), name=o.name, map_type=o.map_type,
                                key_size=o.key_size, value_size=o.value_size,
                                max_entries=o.max_entries, flags=o.map_flags, map_extra=o.map_extra,
                                btf=o.btf, key_type_id=o.key_type_id, value_type_id=o.value_type_id,
                                ncpus=o.ncpus, kernel_btf=o.kernel_btf)

    def __del__(self) -> None:  # an unclosed handle must not leak an fd
        with contextlib.suppress(Exception):
            self.close()
