"""The user-facing `Map` handle: a dict-like view of one map that is also a user reference (an fd).

Job: encode/decode keys and values through BTF (`btf.encode` / `btf.decode`; without BTF the
map speaks raw bytes, and ints are accepted as little-endian keys/values), give the raw-bytes
view `m.raw`, the queue/stack/ringbuf/bloom operations, `dump()` in exactly the shape of
`bpftool map dump -j`, `pin`, `freeze` and `close`.  Creating a handle takes a user
reference (or adopts the creator's); `close()` drops it, and a closed handle refuses every
use with a clear error.  Wrong key/value sizes are a UsageError naming the expected size
and never reach the map.
Must not import `kernel`; talks to maps only through runtime/maps/ and runtime/kobject.py.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from bpfsim.errors import BpfError, KeyNotFound, UsageError
from bpfsim.runtime.maps.base import MapBase, round_up
from bpfsim.runtime.maps.bloom import BloomFilterMap
from bpfsim.runtime.maps.queue_stack import QueueMap
from bpfsim.runtime.maps.ringbuf import RingBufMap
from bpfsim.uapi.constants import BPF_ANY

_MISSING: Any = object()


@dataclass(frozen=True)
class MapInfo:
    """BPF_OBJ_GET_INFO_BY_FD for a map (the fields bpftool map show prints)."""

    id: int
    type: str            # bpftool's name: "hash", "array", "percpu_array", ...
    type_id: int
    name: str
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    frozen: bool
    btf_key_type_id: int
    btf_value_type_id: int


def _hex(data: bytes) -> list[str]:
    """bpftool's print_hex_data_json: ["0x01", "0x00", ...]."""
    return [f"0x{b:02x}" for b in data]


def _int_bytes(value: int, size: int, what: str) -> bytes:
    try:
        return int(value).to_bytes(size, "little", signed=int(value) < 0)
    except OverflowError:
        raise UsageError(f"{what} {value} does not fit in {size} bytes") from None


class Map(MutableMapping):
    """A handle on a live map (see the module docstring).

    `Map(kmap)` adopts a user reference the caller already holds (the creator's, like the fd
    BPF_MAP_CREATE returns); `Map(kmap, owned=False)` takes a new one (BPF_OBJ_GET,
    BPF_MAP_GET_FD_BY_ID)."""

    def __init__(self, kmap: MapBase, *, owned: bool = True) -> None:
        if not isinstance(kmap, MapBase):
            raise UsageError(f"not a map: {kmap!r}")
        if not owned and not kmap.inc_uref_not_zero():
            raise UsageError(f"map '{kmap.name}' is already freed")
        self._map: MapBase | None = kmap
        self._name = kmap.name

    @classmethod
    def from_pin(cls, kmap: MapBase) -> Map:
        """A new handle (a new user reference) on a pinned map."""
        return cls(kmap, owned=False)

    # -- lifetime -------------------------------------------------------------------------------
    @property
    def kernel_map(self) -> MapBase:
        """The live map; UsageError once the handle is closed."""
        if self._map is None:
            raise UsageError(f"map handle '{self._name}' is closed")
        return self._map

    @property
    def closed(self) -> bool:
        return self._map is None

    def close(self) -> None:
        """Drop this handle's user reference (closing twice is harmless)."""
        m, self._map = self._map, None
        if m is not None:
            m.put_with_uref()

    def __enter__(self) -> Map:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clone(self) -> Map:
        """A second handle on the same map (dup(2) of the fd: a new user reference)."""
        return Map(self.kernel_map, owned=False)

    def pin(self, path: str) -> None:
        """BPF_OBJ_PIN at `path` in the runtime's bpffs (the pin is a user reference too)."""
        m = self.kernel_map
        pins = getattr(m.kernel, "pins", None)
        if pins is None:
            raise UsageError("this runtime has no bpffs pin namespace")
        pins.pin(path, m)

    # -- identity -------------------------------------------------------------------------------
    @property
    def id(self) -> int:
        return self.kernel_map.id

    @property
    def name(self) -> str:
        return self._name

    @property
    def type(self) -> int:
        return self.kernel_map.map_type

    @property
    def key_size(self) -> int:
        return self.kernel_map.key_size

    @property
    def value_size(self) -> int:
        return self.kernel_map.value_size

    @property
    def max_entries(self) -> int:
        return self.kernel_map.max_entries

    @property
    def flags(self) -> int:
        return self.kernel_map.map_flags

    @property
    def info(self) -> MapInfo:
        m = self.kernel_map
        own = getattr(m, "kernel_btf", True)     # BPF_OBJ_GET_INFO_BY_FD: the map's own BTF ids
        return MapInfo(id=m.id, type=m.type_name, type_id=m.map_type, name=m.name, key_size=m.key_size,
                       value_size=m.value_size, max_entries=m.max_entries, flags=m.map_flags,
                       frozen=m.frozen, btf_key_type_id=m.key_type_id if own else 0,
                       btf_value_type_id=m.value_type_id if own else 0)

    def __repr__(self) -> str:
        if self._map is None:
            return f"<Map '{self._name}' (closed)>"
        return f"<Map '{self._name}' id={self._map.id} {self._map.type_name}>"

    # -- encoding -------------------------------------------------------------------------------
    def encode_key(self, key: Any) -> bytes:
        m = self.kernel_map
        if isinstance(key, (bytes, bytearray, memoryview)):
            key = bytes(key)
            if len(key) != m.key_size:
                raise UsageError(f"map '{m.name}': key must be {m.key_size} bytes, got {len(key)}")
            return key
        if m.btf is not None and m.key_type_id:
            return self._encode(m.key_type_id, key, m.key_size, "key")
        if isinstance(key, int) and not isinstance(key, bool) and m.key_size:
            return _int_bytes(key, m.key_size, "key")
        raise UsageError(f"map '{m.name}' has no key BTF: use bytes of {m.key_size} bytes (or an int)")

    def _encode(self, tid: int, value: Any, size: int, what: str) -> bytes:
        m = self.kernel_map
        try:
            data = m.btf.encode(tid, value)
        except BpfError as e:
            raise UsageError(f"map '{m.name}': bad {what}: {e}") from None
        if len(data) != size:
            raise UsageError(f"map '{m.name}': {what} must be {size} bytes, encoded {len(data)}")
        return data

    def decode_key(self, data: bytes) -> Any:
        m = self.kernel_map
        if m.btf is not None and m.key_type_id:
            return m.btf.decode(m.key_type_id, data)
        return data

    def _encode_one(self, value: Any) -> bytes:
        """One value_size-bytes value."""
        m = self.kernel_map
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value)
            if len(value) != m.value_size:
                raise UsageError(f"map '{m.name}': value must be {m.value_size} bytes, got {len(value)}")
            return value
        if m.btf is not None and m.value_type_id:
            return self._encode(m.value_type_id, value, m.value_size, "value")
        if isinstance(value, int) and not isinstance(value, bool):
            return _int_bytes(value, m.value_size, "value")
        raise UsageError(f"map '{m.name}' has no value BTF: use bytes of {m.value_size} bytes (or an int)")

    def encode_value(self, value: Any) -> bytes:
        """User-space value bytes: per-CPU maps take a list of ncpus values (or one value for
        every CPU, or the full ncpus * round_up(value_size, 8) bytes); fd maps take a handle,
        a kernel object or an id."""
        m = self.kernel_map
        if m.fd_values:
            obj_id = value if isinstance(value, int) else getattr(value, "id", None)
            if not isinstance(obj_id, int):
                raise UsageError(f"map '{m.name}' stores maps/programs: give a handle or an id")
            return _int_bytes(obj_id, 4, "id")
        if not m.percpu:
            return self._encode_one(value)
        step = round_up(m.value_size)
        if isinstance(value, (bytes, bytearray)) and len(value) == m.user_value_size:
            return bytes(value)
        if isinstance(value, (list, tuple)) and len(value) == m.ncpus:
            values = list(value)
        else:
            values = [value] * m.ncpus
        return b"".join(self._encode_one(v).ljust(step, b"\0") for v in values)

    def _decode_one(self, data: bytes) -> Any:
        m = self.kernel_map
        if m.btf is not None and m.value_type_id:
            return m.btf.decode(m.value_type_id, data)
        return data

    def decode_value(self, data: bytes) -> Any:
        """Per-CPU maps decode to a list with one value per CPU; fd maps to the object id."""
        m = self.kernel_map
        if m.fd_values:
            return int.from_bytes(data[:4], "little")
        if m.percpu:
            step = round_up(m.value_size)
            return [self._decode_one(data[c * step:c * step + m.value_size]) for c in range(m.ncpus)]
        return self._decode_one(data)

    # -- dict interface -------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        return self.decode_value(self.kernel_map.lookup(self.encode_key(key)))

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update(key, value)

    def __delitem__(self, key: Any) -> None:
        self.kernel_map.delete(self.encode_key(key))

    def __iter__(self) -> Iterator[Any]:
        for k in self._raw_keys():
            yield self.decode_key(k)

    def __len__(self) -> int:
        return sum(1 for _ in self._raw_keys())

    def __contains__(self, key: object) -> bool:
        m = self.kernel_map
        if isinstance(m, BloomFilterMap):
            return m.contains(self._encode_one(key))
        try:
            m.lookup(self.encode_key(key))
        except KeyNotFound:
            return False
        return True

    def _raw_keys(self) -> Iterator[bytes]:
        m = self.kernel_map
        if not m.iterable:
            raise UsageError(f"map '{m.name}' ({m.type_name}) has no keys to iterate")
        return self._key_walk(m)

    @staticmethod
    def _key_walk(m: Any) -> Iterator[bytes]:
        # MapBase.iter_keys; the kernel backend's KernelMapOps spells it keys()
        walk = getattr(m, "iter_keys", None)
        return walk() if walk is not None else m.keys()

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyNotFound:
            return default

    def update(self, key: Any = _MISSING, value: Any = _MISSING, flags: int = BPF_ANY, **kw: Any) -> None:
        """`update(key, value, flags=BPF_ANY)` (BPF_MAP_UPDATE_ELEM), or dict.update(other)."""
        if value is _MISSING:
            other = {} if key is _MISSING else key
            MutableMapping.update(self, other, **kw)
            return
        if kw:
            raise UsageError(f"unexpected arguments {sorted(kw)}")
        self.kernel_map.update(self.encode_key(key), self.encode_value(value), flags)

    def lookup(self, key: Any, flags: int = 0) -> Any:
        """BPF_MAP_LOOKUP_ELEM with flags (BPF_F_LOCK); KeyNotFound if absent."""
        return self.decode_value(self.kernel_map.lookup(self.encode_key(key), flags))

    def delete(self, key: Any) -> None:
        del self[key]

    def lookup_and_delete(self, key: Any = None, flags: int = 0) -> Any:
        """BPF_MAP_LOOKUP_AND_DELETE_ELEM (hash maps; queue/stack pop with key None)."""
        m = self.kernel_map
        raw = None if m.key_size == 0 else self.encode_key(key)
        return self.decode_value(m.lookup_and_delete(raw, flags))

    def pop(self, key: Any = _MISSING, default: Any = _MISSING) -> Any:
        """Queue/stack: `pop()` takes the next value.  Hash maps: dict.pop(key[, default])."""
        m = self.kernel_map
        if isinstance(m, QueueMap) and key is _MISSING:
            return self.decode_value(m.lookup_and_delete(None))
        if key is _MISSING:
            raise UsageError("pop() needs a key")
        try:
            return self.lookup_and_delete(key)
        except KeyNotFound:
            if default is _MISSING:
                raise
            return default

    def push(self, value: Any, flags: int = BPF_ANY) -> None:
        """Queue/stack/bloom filter push (BPF_MAP_UPDATE_ELEM with a NULL key)."""
        m = self.kernel_map
        if not isinstance(m, (QueueMap, BloomFilterMap)):
            raise UsageError(f"map '{m.name}' ({m.type_name}) has no push")
        m.update(None, self._encode_one(value), flags)

    def peek(self) -> Any:
        """Queue/stack: the next value without taking it; KeyNotFound when empty."""
        m = self.kernel_map
        if not isinstance(m, QueueMap):
            raise UsageError(f"map '{m.name}' ({m.type_name}) has no peek")
        return self.decode_value(m.lookup(None))

    def drain(self) -> list[bytes]:
        """RINGBUF: the committed records, in order, as bytes (consumed)."""
        m = self.kernel_map
        if not isinstance(m, RingBufMap):
            raise UsageError(f"map '{m.name}' ({m.type_name}) is not a ring buffer")
        return m.drain()

    def freeze(self) -> None:
        self.kernel_map.freeze()

    def mmap(self) -> memoryview:
        """mmap(2) of the map (BPF_F_MMAPABLE arrays, ring buffers): a writable view of its
        memory.  Maps holding a bpf_timer or spin lock refuse with errno 524 (ENOTSUPP)."""
        return self.kernel_map.mmap()

    @property
    def raw(self) -> RawView:
        """The same map keyed and valued by raw bytes (MutableMapping[bytes, bytes])."""
        return RawView(self)

    # -- bpftool ---------------------------------------------------------------------------------
    def dump(self) -> list[dict[str, Any]]:
        """Exactly `bpftool map dump -j`: raw "key"/"value" hex bytes (per-CPU: "values" with
        one {"cpu", "value"} per CPU) plus "formatted" when the map has BTF.  Empty slots of
        fd maps are skipped, like bpftool does."""
        m = self.kernel_map
        if not m.iterable:
            return []        # queue/stack/ringbuf/bloom: bpftool prints [] (get_next_key fails)
        # bpftool formats through the BTF the map carries in the kernel (none after libbpf's
        # retry without BTF), not through the object file's
        btf = m.btf is not None and bool(m.value_type_id) and getattr(m, "kernel_btf", True)
        out: list[dict[str, Any]] = []
        for key in list(self._key_walk(m)):
            try:
                data = m.lookup(key)
            except KeyNotFound:
                continue            # deleted meanwhile: bpftool skips it too
            entry: dict[str, Any] = {"key": _hex(key)}
            if m.percpu:
                step = round_up(m.value_size)
                chunks = [data[c * step:c * step + m.value_size] for c in range(m.ncpus)]
                entry["values"] = [{"cpu": c, "value": _hex(v)} for c, v in enumerate(chunks)]
                if btf:
                    entry["formatted"] = {**self._fmt_key(key), "values": [
                        {"cpu": c, "value": self._decode_one(v)} for c, v in enumerate(chunks)]}
            else:
                entry["value"] = _hex(data)       # fd maps: the object id (bpftool 7.1 adds nothing)
                if btf:
                    entry["formatted"] = {**self._fmt_key(key), "value": self._decode_one(data)}
            out.append(entry)
        return out

    def _fmt_key(self, key: bytes) -> dict[str, Any]:
        """bpftool's do_dump_btf prints "key" only when the map has key BTF (global data maps
        have none)."""
        m = self.kernel_map
        if m.btf is not None and m.key_type_id:
            return {"key": m.btf.decode(m.key_type_id, key)}
        return {}


class RawView(MutableMapping):
    """`m.raw`: the map as MutableMapping[bytes, bytes] (user-space value layout)."""

    def __init__(self, handle: Map) -> None:
        self._h = handle

    def __getitem__(self, key: bytes) -> bytes:
        return self._h.kernel_map.lookup(self._bytes(key, "key"))

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._h.kernel_map.update(self._bytes(key, "key"), self._bytes(value, "value"), BPF_ANY)

    def __delitem__(self, key: bytes) -> None:
        self._h.kernel_map.delete(self._bytes(key, "key"))

    def _bytes(self, data: Any, what: str) -> bytes:
        """Only bytes-like: `bytes(4)` would silently turn `raw[4]` into the key 00000000,
        and `bytes("ab")` is a TypeError, not the UsageError bad input gets."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise UsageError(f"map '{self._h.name}': raw {what} must be bytes, "
                             f"not {type(data).__name__}")
        return bytes(data)

    def __iter__(self) -> Iterator[bytes]:
        return self._h._raw_keys()

    def __len__(self) -> int:
        return sum(1 for _ in self._h._raw_keys())

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (bytes, bytearray)):
            return False
        try:
            self._h.kernel_map.lookup(bytes(key))
        except KeyNotFound:
            return False
        return True

    def update(self, *args: Any, flags: int = BPF_ANY, **kw: Any) -> None:   # type: ignore[override]
        """`raw.update(key, value, flags=...)` or dict.update(other)."""
        if len(args) == 2:
            self._h.kernel_map.update(self._bytes(args[0], "key"), self._bytes(args[1], "value"), flags)
            return
        MutableMapping.update(self, *args, **kw)
