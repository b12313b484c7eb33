"""`KernelMap`: a user handle (one fd) on a map in the real kernel, dict-like through BTF.

Job: the same user-space interface as the emulator's `Map` handle -- `m[k]`, `m[k] = v`,
`del m[k]`, `keys()`, `m.raw` keyed by bytes, `pin`, `close`, `dump()` -- on top of the
byte-level bpf(2) wrappers in `kernel.syscall`.  Errors follow the emulator's: a missing key
is `KeyNotFound`, a refused operation `MapError` (with the kernel's errno), a full map
`MapFull`, a pin problem `PinError`.
Must not call bpf(2) itself (only `kernel.syscall` does) and must not import `runtime`
internals other than the shared value codec.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from bpfsim.errors import KernelError, KeyNotFound, MapError, MapFull, PinError, UsageError
from bpfsim.kernel import syscall as sc
from bpfsim.uapi.constants import BPF_ANY, MapType

if TYPE_CHECKING:
    from bpfsim.btf import Btf

PERCPU_TYPES = frozenset({MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH,
                          MapType.PERCPU_CGROUP_STORAGE})
# Maps without keys: user space pushes with update(NULL key) and pops with lookup_and_delete.
KEYLESS_TYPES = frozenset({MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER})
# Maps whose values are fds on update and ids on lookup.
FD_VALUE_TYPES = frozenset({MapType.PROG_ARRAY, MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS,
                            MapType.PERF_EVENT_ARRAY, MapType.CGROUP_ARRAY, MapType.SOCKMAP,
                            MapType.SOCKHASH})


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


def _map_error(e: KernelError, what: str) -> MapError:
    if e.errno == 7:  # E2BIG
        return MapFull(f"{what}: map is full", e.errno)
    return MapError(f"{what}: {e}", e.errno)


class _RawView(MutableMapping):
    """The map keyed and valued by raw bytes (per-CPU values: one bytes per CPU, in a list)."""

    def __init__(self, m: KernelMap) -> None:
        self._m = m

    def __getitem__(self, key: bytes) -> Any:
        v = self._m.lookup(bytes(key))
        if v is None:
            raise KeyNotFound(f"map '{self._m.name}': key {bytes(key).hex()} not found")
        return v

    def __setitem__(self, key: bytes, value: Any) -> None:
        self._m.update(bytes(key), value)

    def __delitem__(self, key: bytes) -> None:
        self._m.delete(bytes(key))

    def __iter__(self) -> Iterator[bytes]:
        return self._m._iter_raw_keys()

    def __len__(self) -> int:
        return sum(1 for _ in self._m._iter_raw_keys())


class KernelMap(MutableMapping):
    """One user reference (an fd) on a kernel map.

    Keys and values are decoded and encoded through BTF when the map has BTF type ids
    (`btf.decode` / `btf.encode`, the same codec the emulator uses); otherwise they are raw
    bytes.  Per-CPU maps take and give a list with one value per possible CPU.
    """

    def __init__(self, fd: int, *, name: str, map_type: int, key_size: int, value_size: int,
                 max_entries: int, flags: int = 0, btf: Btf | None = None, key_type_id: int = 0,
                 value_type_id: int = 0, ncpus: int | None = None) -> None:
        self.fd = fd
        self.name = name
        self.type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.flags = flags
        self.btf = btf
        self.key_type_id = key_type_id
        self.value_type_id = value_type_id
        self.ncpus = ncpus or possible_cpus()
        self.kernel_btf = bool(key_type_id or value_type_id)   # did the kernel get BTF ids?
        self.raw = _RawView(self)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_fd(cls, fd: int, *, name: str | None = None, btf: Btf | None = None) -> KernelMap:
        """A handle on an fd we already own (BPF_OBJ_GET, MAP_GET_FD_BY_ID), described by the
        kernel's `bpf_map_info`; BTF ids are used only when `btf` is given."""
        info = sc.map_get_info(fd)
        return cls(fd, name=name if name is not None else info.name, map_type=info.type,
                   key_size=info.key_size, value_size=info.value_size,
                   max_entries=info.max_entries, flags=info.map_flags, btf=btf,
                   key_type_id=info.btf_key_type_id if btf else 0,
                   value_type_id=info.btf_value_type_id if btf else 0)

    # -- identity ---------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self.fd < 0

    def _fd(self) -> int:
        if self.fd < 0:
            raise UsageError(f"map '{self.name}' handle is closed")
        return self.fd

    @property
    def id(self) -> int:
        return sc.map_get_info(self._fd()).id

    @property
    def percpu(self) -> bool:
        return self.type in PERCPU_TYPES

    def __repr__(self) -> str:
        kind = MapType(self.type).name if self.type in MapType._value2member_map_ else self.type
        return f"<KernelMap {self.name!r} {kind} fd={self.fd}>"

    # -- byte level -------------------------------------------------------------------------
    @property
    def _slot(self) -> int:
        return (self.value_size + 7) // 8 * 8

    def _kernel_value_size(self) -> int:
        """Per-CPU lookups copy round_up(value_size, 8) bytes per possible CPU (syscall.c:
        bpf_map_value_size)."""
        return self._slot * self.ncpus if self.percpu else self.value_size

    def _check_key(self, key: bytes | None) -> None:
        if key is not None and len(key) != self.key_size:
            raise UsageError(f"map '{self.name}': key is {len(key)} bytes, expected {self.key_size}")

    def _pack_value(self, value: Any) -> bytes:
        if self.percpu:
            if isinstance(value, (bytes, bytearray)):
                values = [bytes(value)] * self.ncpus
            else:
                values = [bytes(v) for v in value]
                if len(values) != self.ncpus:
                    raise UsageError(f"map '{self.name}': per-CPU value needs {self.ncpus} entries, "
                                     f"got {len(values)}")
            for v in values:
                if len(v) != self.value_size:
                    raise UsageError(f"map '{self.name}': value is {len(v)} bytes, expected "
                                     f"{self.value_size}")
            return b"".join(v.ljust(self._slot, b"\0") for v in values)
        value = bytes(value)
        if len(value) != self.value_size:
            raise UsageError(f"map '{self.name}': value is {len(value)} bytes, expected {self.value_size}")
        return value

    def _unpack_value(self, data: bytes) -> Any:
        if self.percpu:
            return [data[i * self._slot:i * self._slot + self.value_size] for i in range(self.ncpus)]
        return data

    def lookup(self, key: bytes) -> Any:
        """Raw value (a list for per-CPU maps) or None."""
        self._check_key(key)
        try:
            data = sc.map_lookup(self._fd(), key, self._kernel_value_size())
        except KernelError as e:
            raise _map_error(e, f"lookup in map '{self.name}'") from None
        return None if data is None else self._unpack_value(data)

    def update(self, key: bytes | None, value: Any, flags: int = BPF_ANY) -> None:
        """BPF_MAP_UPDATE_ELEM with raw bytes (`key=None` for queue/stack/bloom filter)."""
        self._check_key(key)
        try:
            sc.map_update(self._fd(), key if key is not None else b"", self._pack_value(value), flags)
        except KernelError as e:
            if e.errno == 17:
                raise MapError(f"update of map '{self.name}': key exists (BPF_NOEXIST)", 17) from None
            if e.errno == 2:
                raise KeyNotFound(f"update of map '{self.name}': key not found (BPF_EXIST)") from None
            raise _map_error(e, f"update of map '{self.name}'") from None

    def delete(self, key: bytes) -> None:
        """BPF_MAP_DELETE_ELEM; KeyNotFound when absent."""
        self._check_key(key)
        try:
            found = sc.map_delete(self._fd(), key)
        except KernelError as e:
            raise _map_error(e, f"delete from map '{self.name}'") from None
        if not found:
            raise KeyNotFound(f"map '{self.name}': key {key.hex()} not found")

    def lookup_and_delete(self, key: bytes | None = None) -> Any:
        """BPF_MAP_LOOKUP_AND_DELETE_ELEM (pop for queue/stack); KeyNotFound when absent/empty."""
        self._check_key(key)
        try:
            data = sc.map_lookup_and_delete(self._fd(), key, self._kernel_value_size())
        except KernelError as e:
            raise _map_error(e, f"lookup_and_delete in map '{self.name}'") from None
        if data is None:
            raise KeyNotFound(f"map '{self.name}': nothing to pop" if key is None
                              else f"map '{self.name}': key {key.hex()} not found")
        return self._unpack_value(data)

    def get_next_key(self, key: bytes | None) -> bytes | None:
        self._check_key(key)
        try:
            return sc.map_get_next_key(self._fd(), key, self.key_size)
        except KernelError as e:
            raise _map_error(e, f"get_next_key in map '{self.name}'") from None

    def _iter_raw_keys(self) -> Iterator[bytes]:
        if self.type in KEYLESS_TYPES or self.key_size == 0:
            return
        key = None
        for _ in range(self.max_entries + 1):
            nxt = self.get_next_key(key)
            if nxt is None:
                return
            yield nxt
            key = nxt

    def freeze(self) -> None:
        """BPF_MAP_FREEZE: user space may no longer write."""
        try:
            sc.map_freeze(self._fd())
        except KernelError as e:
            raise _map_error(e, f"freeze of map '{self.name}'") from None

    # -- decoded (BTF) level ----------------------------------------------------------------
    def _enc(self, tid: int, size: int, value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if self.btf is not None and tid:
            return self.btf.encode(tid, value)
        if isinstance(value, int):
            return value.to_bytes(size, "little", signed=value < 0)
        raise UsageError(f"map '{self.name}' has no BTF: give bytes or int, not {type(value).__name__}")

    def _dec(self, tid: int, data: bytes) -> Any:
        if self.btf is not None and tid:
            return self.btf.decode(tid, data)
        return data

    def encode_key(self, key: Any) -> bytes:
        return self._enc(self.key_type_id, self.key_size, key)

    def encode_value(self, value: Any) -> Any:
        if self.percpu and isinstance(value, (list, tuple)):
            return [self._enc(self.value_type_id, self.value_size, v) for v in value]
        return self._enc(self.value_type_id, self.value_size, value)

    def decode_key(self, data: bytes) -> Any:
        return self._dec(self.key_type_id, data)

    def decode_value(self, data: Any) -> Any:
        if self.percpu:
            return [self._dec(self.value_type_id, v) for v in data]
        return self._dec(self.value_type_id, data)

    def __getitem__(self, key: Any) -> Any:
        return self.decode_value(self.raw[self.encode_key(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update(self.encode_key(key), self.encode_value(value))

    def __delitem__(self, key: Any) -> None:
        self.delete(self.encode_key(key))

    def __iter__(self) -> Iterator[Any]:
        return (self.decode_key(k) for k in self._iter_raw_keys())

    def __len__(self) -> int:
        return len(self.raw)

    def __contains__(self, key: object) -> bool:
        try:
            return self.lookup(self.encode_key(key)) is not None
        except UsageError:
            return False

    def push(self, value: Any) -> None:
        """Queue/stack/bloom filter: add a value."""
        self.update(None, self.encode_value(value))

    def pop(self, *args: Any) -> Any:  # type: ignore[override]
        """Queue/stack: pop a value; keyed maps: MutableMapping.pop (lookup-and-delete)."""
        if self.type in (MapType.QUEUE, MapType.STACK) and not args:
            return self.decode_value(self.lookup_and_delete(None))
        return super().pop(*args)

    def raw_items(self) -> list[tuple[bytes, Any]]:
        """(key bytes, value bytes) in the kernel's iteration order, skipping keys that vanish
        between get_next_key and lookup."""
        out = []
        for k in self._iter_raw_keys():
            v = self.lookup(k)
            if v is not None:
                out.append((k, v))
        return out

    # -- ring buffer --------------------------------------------------------------------------
    def drain(self) -> list[bytes]:
        """RINGBUF: the committed records not yet consumed, in order, as bytes (what libbpf's
        ring_buffer__consume hands its callback); advances the consumer position.

        Layout (kernel/bpf/ringbuf.c): page 0 holds consumer_pos (user-writable), page 1
        producer_pos, then the data area mapped twice so a record never wraps.  Each record
        has an 8-byte header: u32 len with BUSY (bit 31) and DISCARD (bit 30), u32 pgoff."""
        if self.type != MapType.RINGBUF:
            raise UsageError(f"map '{self.name}' is not a ring buffer")
        import mmap

        page = mmap.PAGESIZE
        size = self.max_entries
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
                cons += (length + 8 + 7) // 8 * 8
            cons_map[0:8] = cons.to_bytes(8, "little")
        finally:
            prod_map.close()
            cons_map.close()
        return out

    # -- lifetime ---------------------------------------------------------------------------
    def pin(self, path: str) -> None:
        """BPF_OBJ_PIN at a bpffs path (a new user reference that outlives this handle)."""
        try:
            sc.obj_pin(self._fd(), path)
        except KernelError as e:
            raise PinError(f"pin map '{self.name}' at {path}: {e}") from None

    def close(self) -> None:
        """Drop this user reference (closing the fd); idempotent."""
        if self.fd >= 0:
            sc.close(self.fd)
            self.fd = -1

    def __enter__(self) -> KernelMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # an unclosed handle must not leak an fd
        with contextlib.suppress(Exception):
            self.close()
