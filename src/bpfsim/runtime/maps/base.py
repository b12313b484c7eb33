"""What every map family shares: element storage in the address space and the syscall rules.

Job:
* `Element`: one element's memory (key storage + value, like `struct htab_elem`; per-CPU
  values in one region per CPU), its `TimerSlot` and its spin lock.  Every region's `owner` is
  the element, so a helper finds the element (and the timer) from any pointer into a value
  (`timer_slot_at(offset)` answers the bpf_timer helpers).
* `MapBase`: the user-space operations on bytes with the checks syscall.c makes before the
  map's own code runs (permissions, frozen, BPF_F_LOCK, lookup_and_delete support), in the
  kernel's order and with its errnos; the program-side operations on addresses returning
  0/-errno like the helpers; creation-time checks shared by several families; freeing.
Must not import `kernel` or `vm` internals (only `vm.memory` types).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from bpfsim.errors import KeyNotFound, MapError, NotSupported, UsageError
from bpfsim.runtime.kobject import BpfMap
from bpfsim.runtime.maps.fields import EMPTY, EOPNOTSUPP, FieldRecord
from bpfsim.uapi.constants import (
    BPF_F_LOCK,
    BPF_F_MMAPABLE,
    BPF_F_RDONLY,
    BPF_F_RDONLY_PROG,
    BPF_F_WRONLY,
    BPF_F_WRONLY_PROG,
    EINVAL,
    EPERM,
    MapType,
)

if TYPE_CHECKING:
    from bpfsim.spec.collection import MapSpec
    from bpfsim.vm.memory import AddressSpace, Region

ENOTSUPP = 524          # the kernel-internal errno bpf(2) leaks for "not supported"
KMALLOC_MAX_SIZE = 1 << 22        # x86-64: 1 << (PAGE_SHIFT + MAX_PAGE_ORDER)
PCPU_MIN_UNIT_SIZE = 32 << 10
INT_MAX = (1 << 31) - 1
BPF_F_ACCESS_MASK = BPF_F_RDONLY | BPF_F_RDONLY_PROG | BPF_F_WRONLY | BPF_F_WRONLY_PROG
MAP_DESCRIPTOR_SIZE = 64          # the read-only region a CONST_PTR_TO_MAP points at


def round_up(n: int, a: int = 8) -> int:
    return (n + a - 1) // a * a


def flags_access_ok(flags: int) -> bool:
    """bpf.h: bpf_map_flags_access_ok: not both RDONLY_PROG and WRONLY_PROG."""
    return (flags & (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG)) != (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG)


def einval(msg: str) -> MapError:
    return MapError(msg, EINVAL)


def make_timer_slot(mp: Any, key_addr: int, value_addr: int) -> Any:
    """A TimerSlot as runtime/timers.py defines it (imported lazily: timers is a peer module)."""
    from bpfsim.runtime.timers import TimerSlot

    return TimerSlot(mp, key_addr, value_addr)


# Map types with map_ops.map_mmap (arraymap.c, ringbuf.c, arena.c).
_MMAP_TYPES = frozenset({MapType.ARRAY, MapType.RINGBUF, MapType.USER_RINGBUF, MapType.ARENA})


class MapLock:
    """A re-entrant lock whose outermost release runs the actions deferred while it was held."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._deferred: list[Any] = []

    def __enter__(self) -> MapLock:
        self._lock.acquire()
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        run = []
        if self._depth == 0 and self._deferred:
            run, self._deferred = self._deferred, []
        self._lock.release()
        for action in run:
            action()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        ok = self._lock.acquire(blocking, timeout)
        if ok:
            self._depth += 1
        return ok

    def release(self) -> None:
        self.__exit__()

    def defer(self, action: Any) -> bool:
        """Queue `action` for the outermost release if this thread holds the lock."""
        if self._depth and self._lock._is_owned():  # type: ignore[attr-defined]
            self._deferred.append(action)
            return True
        return False


class Element:
    """One element's storage.

    `region` holds `key_len` bytes of key storage followed by the value (hash: key_len =
    round_up(key_size, 8), exactly `htab_elem`'s layout; arrays: key_len = 0).  Per-CPU maps
    keep the value in `pcpu[cpu]` regions of round_up(value_size, 8) bytes instead (the kernel
    copies that many bytes per CPU to and from user space).
    """

    __slots__ = ("map", "region", "key_len", "pcpu", "timer_slot", "spin", "key", "index",
                 "key_region", "lru", "__weakref__")

    def __init__(self, mp: MapBase, *, key: bytes = b"", key_len: int = 0, index: int = -1) -> None:
        self.map = mp
        self.key = key
        self.index = index
        self.key_len = key_len
        self.lru: Any = None
        self.key_region: Region | None = None
        mem = mp.mem
        vs = mp.value_size
        if mp.percpu:
            self.region = mem.map(bytearray(max(key_len, 1)), name=f"{mp.name}.key", kind="map_key",
                                  writable=False, owner=self)
            self.pcpu = [mem.map(bytearray(round_up(vs)), name=f"{mp.name}.value[cpu{c}]",
                                 kind="map_value", writable=mp.prog_writable, owner=self,
                                 guards=mp.record.guards())
                         for c in range(mp.ncpus)]
        else:
            self.region = mem.map(bytearray(key_len + vs), name=f"{mp.name}.value", kind="map_value",
                                  writable=mp.prog_writable, owner=self,
                                  guards=mp.record.guards(key_len))
            self.pcpu = None
        if key:
            self.region.buf[:len(key)] = key
        self.timer_slot: Any = None
        if mp.record.timer_off is not None:
            key_addr = self.region.base
            if index >= 0:   # helpers.c: map_key_from_value: arrays pass the index as a u32
                self.key_region = mem.map(bytearray(index.to_bytes(4, "little")), name=f"{mp.name}.index",
                                          kind="map_key", writable=False, owner=self)
                key_addr = self.key_region.base
            self.timer_slot = make_timer_slot(mp, key_addr, self.value_addr(0))
        self.spin = threading.Lock() if mp.record.spin_lock_off is not None else None

    # -- addresses ------------------------------------------------------------------------------
    @property
    def key_addr(self) -> int:
        return self.region.base

    def value_addr(self, cpu: int = 0) -> int:
        if self.pcpu is not None:
            return self.pcpu[cpu].base
        return self.region.base + self.key_len

    def timer_slot_at(self, off: int) -> Any:
        """The TimerSlot whose bpf_timer starts at region offset `off` (bpf_timer helpers)."""
        t = self.map.record.timer_off
        if self.timer_slot is None or t is None or self.pcpu is not None:
            return None
        return self.timer_slot if off == self.key_len + t else None

    # -- value bytes ----------------------------------------------------------------------------
    def _buf(self, cpu: int) -> tuple[bytearray, int]:
        if self.pcpu is not None:
            return self.pcpu[cpu].buf, 0
        return self.region.buf, self.key_len

    def read(self, cpu: int = 0, n: int | None = None) -> bytes:
        buf, off = self._buf(cpu)
        return bytes(buf[off:off + (self.map.value_size if n is None else n)])

    def write(self, data: bytes, cpu: int = 0) -> None:
        """copy_map_value: special fields are never written."""
        buf, off = self._buf(cpu)
        self.map.record.copy_in(buf, off, data)

    def init_fields(self) -> None:
        """check_and_init_map_value for a reused element: special bytes back to zero."""
        if self.map.record:
            buf, off = self._buf(0)
            self.map.record.init(buf, off)

    def regions(self) -> list[Region]:
        out = [self.region]
        if self.pcpu:
            out.extend(self.pcpu)
        if self.key_region is not None:
            out.append(self.key_region)
        return out

    def __repr__(self) -> str:
        return f"<Element {self.map.name} key={self.key.hex() or self.index}>"


class MapBase(BpfMap):
    """A live map.  Subclasses implement the `_`-prefixed hooks."""

    percpu = False
    fd_values = False       # PROG_ARRAY / *_OF_MAPS: values are object ids from user space
    iterable = True         # get_next_key works

    def __init__(self, kernel: Any, spec: MapSpec, btf: Any = None, record: FieldRecord = EMPTY) -> None:
        super().__init__(kernel, spec.name)
        self.map_type = int(spec.type)
        self.key_size = int(spec.key_size)
        self.value_size = int(spec.value_size)
        self.max_entries = int(spec.max_entries)
        self.map_flags = int(spec.flags)
        self.map_extra = int(spec.map_extra)
        self.btf = btf
        self.key_type_id = int(spec.key_type_id) if btf is not None else 0
        self.value_type_id = int(spec.value_type_id) if btf is not None else 0
        # Whether the map itself carries BTF (what bpftool sees); False after libbpf's retry
        # without BTF, when `btf` may still be attached for decoding in Python.
        self.kernel_btf = btf is not None
        self.record = record
        self.frozen = False
        self.mem: AddressSpace = kernel.mem
        self.ncpus = int(kernel.ncpus)
        self.prog_writable = not (self.map_flags & BPF_F_RDONLY_PROG)
        self.region = self.mem.map(bytearray(MAP_DESCRIPTOR_SIZE), name=self.name, kind="map",
                                   writable=False, owner=self)
        self._retired: list[Region] = []
        self.lock = MapLock()              # serializes structure changes (bucket locks)

    # -- identity -------------------------------------------------------------------------------
    @property
    def type(self) -> int:
        return self.map_type

    @property
    def flags(self) -> int:
        return self.map_flags

    @property
    def address(self) -> int:
        """The CONST_PTR_TO_MAP value programs hold for this map."""
        return self.region.base

    @property
    def type_name(self) -> str:
        try:
            return MapType(self.map_type).name.lower()
        except ValueError:
            return str(self.map_type)

    @property
    def user_value_size(self) -> int:
        """Bytes user space reads and writes per element (bpf_map_value_size)."""
        if self.percpu:
            return self.ncpus * round_up(self.value_size)
        return self.value_size

    def __repr__(self) -> str:
        return f"<{type(self).__name__} '{self.name}' id={self.id} {self.type_name}>"

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def alloc_check(cls, spec: MapSpec, ncpus: int) -> None:
        """The family's map_alloc_check; raise MapError with the kernel's errno."""

    # -- syscall side (bytes) -------------------------------------------------------------------
    def _can(self, write: bool) -> None:
        """syscall.c: map_get_sys_perms: a frozen map (or a BPF_F_RDONLY one) is not writable."""
        if write and (self.map_flags & BPF_F_RDONLY or self.frozen):
            raise MapError(f"map '{self.name}' is read-only for user space"
                           + (" (frozen)" if self.frozen else ""), EPERM)
        if not write and self.map_flags & BPF_F_WRONLY:
            raise MapError(f"map '{self.name}' is write-only for user space", EPERM)

    def _key(self, key: bytes | None) -> bytes:
        if self.key_size == 0:
            return b""
        if key is None or len(key) != self.key_size:
            got = "no key" if key is None else f"{len(key)} bytes"
            raise UsageError(f"map '{self.name}': key must be {self.key_size} bytes, got {got}")
        return bytes(key)

    def _value(self, value: bytes) -> bytes:
        n = self.user_value_size
        if value is None or len(value) != n:
            got = "no value" if value is None else f"{len(value)} bytes"
            raise UsageError(f"map '{self.name}': value must be {n} bytes, got {got}")
        return bytes(value)

    def _check_lock_flag(self, flags: int) -> None:
        if flags & BPF_F_LOCK and self.record.spin_lock_off is None:
            raise einval(f"map '{self.name}': BPF_F_LOCK needs a bpf_spin_lock in the value")

    def lookup(self, key: bytes | None, flags: int = 0) -> bytes:
        """BPF_MAP_LOOKUP_ELEM: the value bytes (special fields zeroed); KeyNotFound if absent."""
        if flags & ~BPF_F_LOCK:
            raise einval(f"map '{self.name}': bad lookup flags {flags:#x}")
        self._can(False)
        self._check_lock_flag(flags)
        key = self._key(key)
        self._flush_retired()
        return self._sys_lookup(key, flags)

    def update(self, key: bytes | None, value: bytes, flags: int = 0) -> None:
        """BPF_MAP_UPDATE_ELEM."""
        self._can(True)
        self._check_lock_flag(flags)
        key = self._key(key)
        value = self._value(value)
        self._flush_retired()
        self._sys_update(key, value, flags)

    def delete(self, key: bytes | None) -> None:
        """BPF_MAP_DELETE_ELEM; KeyNotFound if absent."""
        self._can(True)
        key = self._key(key)
        self._flush_retired()
        self._sys_delete(key)

    def get_next_key(self, key: bytes | None) -> bytes | None:
        """BPF_MAP_GET_NEXT_KEY: the key after `key` (the first one for None or a missing key);
        None at the end (the kernel's -ENOENT)."""
        self._can(False)
        if key is not None:
            key = self._key(key)
        return self._next_key(key)

    def lookup_and_delete(self, key: bytes | None, flags: int = 0) -> bytes:
        """BPF_MAP_LOOKUP_AND_DELETE_ELEM (hash families; queue/stack pop)."""
        if flags & ~BPF_F_LOCK:
            raise einval(f"map '{self.name}': bad flags {flags:#x}")
        if self.map_flags & (BPF_F_RDONLY | BPF_F_WRONLY) or self.frozen:
            raise MapError(f"map '{self.name}' needs read and write access", EPERM)
        if flags and self.map_type in (MapType.QUEUE, MapType.STACK):
            raise einval("queue/stack pop takes no flags")
        self._check_lock_flag(flags)
        key = self._key(key)
        self._flush_retired()
        return self._sys_lookup_and_delete(key, flags)

    def freeze(self) -> None:
        """BPF_MAP_FREEZE: user space can no longer write (programs still can, unless
        BPF_F_RDONLY_PROG)."""
        if self.record or self.map_type == MapType.STRUCT_OPS:
            raise MapError(f"map '{self.name}': cannot freeze a map with special fields", ENOTSUPP)
        with self.lock:
            # map_freeze checks map_get_sys_perms, which already drops write on a frozen
            # map: a second freeze is -EPERM on 6.18 (checked), not the -EBUSY further down
            self._can(True)
            self.frozen = True

    def mmap(self) -> memoryview:
        """mmap(2) of the map's fd (syscall.c: bpf_map_mmap), as far as the kernel's refusals
        go: a map with special fields (a bpf_timer, a spin lock) or of a type without
        map_mmap is -ENOTSUPP (524) even with BPF_F_MMAPABLE; an ARRAY needs BPF_F_MMAPABLE
        (-EINVAL).  Mapping the memory itself is not emulated yet."""
        if self.record or self.map_type not in _MMAP_TYPES:
            raise MapError(f"map '{self.name}': mmap is not supported for this map", ENOTSUPP)
        if self.map_type == MapType.ARRAY and not self.map_flags & BPF_F_MMAPABLE:
            raise MapError(f"map '{self.name}': mmap needs BPF_F_MMAPABLE", EINVAL)
        raise NotSupported("mmap of map memory", detail="the emulator does not map a map's "
                           "memory into user space yet")

    @contextlib.contextmanager
    def value_locked(self, e: Element) -> Iterator[None]:
        """copy_map_value_locked: hold the value's bpf_spin_lock, the very lock programs take
        with bpf_spin_lock (the runtime's `kernel.spin_lock(addr)` when it has one)."""
        off = self.record.spin_lock_off
        lock = getattr(self.kernel, "spin_lock", None)
        unlock = getattr(self.kernel, "spin_unlock", None)
        if off is not None and callable(lock) and callable(unlock):
            addr = e.value_addr(0) + off
            lock(addr)
            try:
                yield
            finally:
                unlock(addr)
        elif e.spin is not None:
            with e.spin:
                yield
        else:
            yield

    def iter_keys(self) -> Iterator[bytes]:
        """Every key in get_next_key order (a snapshot walk, like bpftool)."""
        key = self.get_next_key(None)
        seen = 0
        while key is not None and seen <= self.max_entries + 1:
            yield key
            seen += 1
            key = self.get_next_key(key)

    # hooks (defaults: what the kernel says for a family that lacks the operation)
    def _sys_lookup(self, key: bytes, flags: int) -> bytes:
        raise einval(f"map '{self.name}' does not support lookup")

    def _sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        raise einval(f"map '{self.name}' does not support update")

    def _sys_delete(self, key: bytes) -> None:
        raise einval(f"map '{self.name}' does not support delete")

    def _next_key(self, key: bytes | None) -> bytes | None:
        raise einval(f"map '{self.name}' does not support get_next_key")

    def _sys_lookup_and_delete(self, key: bytes, flags: int) -> bytes:
        raise MapError(f"map '{self.name}': lookup_and_delete is not supported", ENOTSUPP)

    @staticmethod
    def _not_found(key: bytes) -> KeyNotFound:
        return KeyNotFound(f"key {key.hex() or '(none)'} not found")

    # -- program side (addresses; return 0 / -errno like the helpers) ---------------------------
    def prog_lookup(self, key_addr: int, cpu: int = 0) -> int:
        """bpf_map_lookup_elem: the value's address, or 0."""
        return 0

    def prog_lookup_percpu(self, key_addr: int, target_cpu: int) -> int:
        """bpf_map_lookup_percpu_elem: `target_cpu`'s value, or 0 (also for a bad CPU)."""
        return 0

    def prog_update(self, key_addr: int, value_addr: int, flags: int, cpu: int = 0) -> int:
        """bpf_map_update_elem."""
        return -EINVAL

    def prog_delete(self, key_addr: int, cpu: int = 0) -> int:
        """bpf_map_delete_elem."""
        return -EINVAL

    def prog_push(self, value_addr: int, flags: int, cpu: int = 0) -> int:
        return -EOPNOTSUPP

    def prog_pop(self, value_addr: int, cpu: int = 0) -> int:
        return -EOPNOTSUPP

    def prog_peek(self, value_addr: int, cpu: int = 0) -> int:
        return -EOPNOTSUPP

    def for_each(self, fn: Callable[[int, int], int], cpu: int = 0) -> int:
        """bpf_for_each_map_elem: call fn(key_addr, value_addr) per element until it returns
        non-zero; the number of elements visited."""
        return -EINVAL

    def _read_key(self, key_addr: int) -> bytes:
        return self.mem.read(key_addr, self.key_size) if self.key_size else b""

    def _read_value(self, value_addr: int) -> bytes:
        return self.mem.read(value_addr, self.value_size)

    # -- elements, timers, freeing --------------------------------------------------------------
    def elements(self) -> list[Element]:
        """Live elements (those whose memory exists), for timers and freeing."""
        return []

    def timer_slots(self) -> list[Any]:
        return [e.timer_slot for e in self.elements() if e.timer_slot is not None]

    def free_fields(self, elem: Element) -> None:
        """bpf_obj_free_fields: cancel and free the element's timer.

        Under the map lock the cancel is deferred to the lock's release: cancel_and_free may
        wait for a running callback, and that callback may need this very map (a callback
        deleting its own element while user space replaces it).  6.18 frees special fields
        after dropping the bucket lock for the same reason (hashtab.c: free_htab_elem after
        htab_unlock_bucket)."""
        slot = elem.timer_slot
        if slot is None or slot.timer is None:
            return
        timers = getattr(self.kernel, "timers", None)
        if timers is None:
            slot.timer = None
        elif not self.lock.defer(lambda: timers.cancel_and_free(slot)):
            timers.cancel_and_free(slot)

    def retire(self, elem: Element) -> None:
        """A freed element's memory stays readable until the running program ends (RCU).

        With a runtime hook `kernel.defer_free(fn)` (run fn once no program or callback is
        running), unmap through it; otherwise at the next user-space operation on this map."""
        regions = elem.regions()
        defer = getattr(self.kernel, "defer_free", None)
        if callable(defer):
            defer(lambda: [self.mem.unmap(r) for r in regions])
        else:
            self._retired.extend(regions)

    def _flush_retired(self) -> None:
        if self._retired:
            retired, self._retired = self._retired, []
            for r in retired:
                self.mem.unmap(r)

    def free(self) -> None:
        """refcnt -> 0 (bpf_map_free_deferred): free every field, drop held objects, unmap."""
        for e in self.elements():
            self.free_fields(e)
        self._free_contents()
        for e in self.elements():
            for r in e.regions():
                self.mem.unmap(r)
        self._drop_storage()
        self._flush_retired()
        self.mem.unmap(self.region)

    def _free_contents(self) -> None:
        """Drop references the map holds on other objects (inner maps, programs)."""

    def _drop_storage(self) -> None:
        """Forget element bookkeeping after the regions are gone."""
