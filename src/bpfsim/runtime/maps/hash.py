"""HASH, PERCPU_HASH, LRU_HASH and LRU_PERCPU_HASH (kernel/bpf/hashtab.c).

Job: keyed elements with the kernel's update rules: a plain hash update of an existing key
allocates a NEW element (the old one's timer is cancelled and freed) unless BPF_F_LOCK updates
it in place; per-CPU hashes update in place; LRU inserts take a node from the LRU (lru.py)
*before* looking at the key, which may evict even when the update then fails.

Element memory mirrors the kernel: preallocated maps (the default) own a pool of
max_entries elements (+ one spare per CPU for plain hashes: htab->extra_elems) that are reused
LIFO and never unmapped before the map is freed, so a stale pointer reads whatever the element
holds now; BPF_F_NO_PREALLOC maps allocate per insert and retire the old memory (still
readable until the running program ends).

Iteration order (get_next_key, for_each, dumps): the kernel walks its buckets in jhash order
with a random seed, which nothing can predict; we use insertion order, and a replaced
element keeps its key's place.  With BPF_F_ZERO_SEED the seed is 0 and the order is the
kernel's exactly: bucket jhash(key) & (n_buckets - 1) in bucket order, newest first within a
bucket (hlist_nulls_add_head_rcu; a replacement moves to the head).  A missing key restarts
from the first key, like htab_map_get_next_key.
Must not import `kernel` or `vm` internals.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bpfsim.errors import MapError, MapFull
from bpfsim.runtime.maps.base import (
    BPF_F_ACCESS_MASK,
    ENOTSUPP,
    KMALLOC_MAX_SIZE,
    PCPU_MIN_UNIT_SIZE,
    Element,
    MapBase,
    einval,
    flags_access_ok,
    round_up,
)
from bpfsim.runtime.maps.jhash import htab_hash
from bpfsim.runtime.maps.lru import BpfLru
from bpfsim.uapi.constants import (
    BPF_EXIST,
    BPF_F_LOCK,
    BPF_F_NO_COMMON_LRU,
    BPF_F_NO_PREALLOC,
    BPF_F_NUMA_NODE,
    BPF_F_ZERO_SEED,
    BPF_NOEXIST,
    E2BIG,
    EEXIST,
    ENOENT,
    ENOMEM,
    MapType,
)

if TYPE_CHECKING:
    from bpfsim.spec.collection import MapSpec

HTAB_CREATE_FLAG_MASK = (BPF_F_NO_PREALLOC | BPF_F_NO_COMMON_LRU | BPF_F_NUMA_NODE | BPF_F_ACCESS_MASK
                         | BPF_F_ZERO_SEED)
HTAB_ELEM_SIZE = 48      # sizeof(struct htab_elem) on x86-64


def htab_alloc_check(spec: MapSpec, ncpus: int) -> None:
    """hashtab.c: htab_map_alloc_check, in its order."""
    percpu = spec.type in (MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH)
    lru = spec.type in (MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
    if spec.flags & ~HTAB_CREATE_FLAG_MASK or not flags_access_ok(spec.flags):
        raise einval(f"bad hash map flags {spec.flags:#x}")
    if not lru and spec.flags & BPF_F_NO_COMMON_LRU:
        raise einval("BPF_F_NO_COMMON_LRU is for LRU maps only")
    if lru and spec.flags & BPF_F_NO_PREALLOC:
        raise MapError("LRU maps are always preallocated (BPF_F_NO_PREALLOC)", ENOTSUPP)
    if spec.max_entries == 0 or spec.key_size == 0 or spec.value_size == 0:
        raise einval("hash maps need key_size, value_size and max_entries > 0")
    if spec.key_size + spec.value_size >= KMALLOC_MAX_SIZE - HTAB_ELEM_SIZE:
        raise MapFull("key_size + value_size too large", E2BIG)
    if percpu and round_up(spec.value_size) > PCPU_MIN_UNIT_SIZE:
        raise MapFull(f"per-CPU value size is limited to {PCPU_MIN_UNIT_SIZE} bytes", E2BIG)


class HashMap(MapBase):
    """BPF_MAP_TYPE_HASH (and the base of the other hash families)."""

    lru = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_len = round_up(self.key_size)
        self.prealloc = not (self.map_flags & BPF_F_NO_PREALLOC)
        if self.lru and self.map_flags & BPF_F_NO_COMMON_LRU:
            # htab_map_alloc: each CPU's list gets the same number of elements
            n = self.ncpus
            me = -(-self.max_entries // n) * n
            if me > 0xFFFFFFFF:
                me = self.max_entries // n * n
            self.max_entries = me
        self._table: dict[bytes, Element] = {}
        self._zero_seed = bool(self.map_flags & BPF_F_ZERO_SEED)
        self._n_buckets = 1 << max(self.max_entries - 1, 0).bit_length()   # roundup_pow_of_two
        self._buckets: dict[int, list[bytes]] = {}     # ZERO_SEED: bucket -> keys, head first
        self._nonempty: list[int] = []                 # sorted bucket numbers
        self._next: dict[bytes, bytes | None] = {}
        self._prev: dict[bytes, bytes | None] = {}
        self._head: bytes | None = None
        self._tail: bytes | None = None
        self._all: list[Element] = []           # every element ever created (prealloc/LRU)
        self._free: list[Element] = []          # prealloc free list (LIFO, pcpu_freelist)
        self._virgin = self.max_entries         # pool elements not created yet
        has_extra = self.prealloc and not self.percpu and not self.lru
        self._extra: list[Element | None] | None = [None] * self.ncpus if has_extra else None
        self._lru: BpfLru | None = None
        if self.lru:
            self._lru = BpfLru(self.max_entries, self.ncpus, bool(self.map_flags & BPF_F_NO_COMMON_LRU),
                               self._lru_evict, lambda cpu: self._new_elem())

    @classmethod
    def alloc_check(cls, spec: MapSpec, ncpus: int) -> None:
        htab_alloc_check(spec, ncpus)

    # -- the table (insertion-ordered, O(1) next-key) -------------------------------------------
    def _bucket(self, key: bytes) -> int:
        return htab_hash(key) & (self._n_buckets - 1)

    def _link(self, key: bytes, e: Element) -> None:
        """Insert `e` (or replace the key's element by the new `e`)."""
        replaced = key in self._table
        self._table[key] = e
        if self._zero_seed:
            b = self._bucket(key)
            chain = self._buckets.get(b)
            if chain is None:
                chain = self._buckets[b] = []
                bisect.insort(self._nonempty, b)
            if replaced:
                chain.remove(key)
            chain.insert(0, key)       # hlist_nulls_add_head_rcu
            return
        if replaced:
            return                     # a replacement keeps the key's place
        self._prev[key] = self._tail
        self._next[key] = None
        if self._tail is None:
            self._head = key
        else:
            self._next[self._tail] = key
        self._tail = key

    def _unlink(self, key: bytes) -> Element:
        e = self._table.pop(key)
        if self._zero_seed:
            b = self._bucket(key)
            chain = self._buckets[b]
            chain.remove(key)
            if not chain:
                del self._buckets[b]
                self._nonempty.pop(bisect.bisect_left(self._nonempty, b))
            return e
        p, n = self._prev.pop(key), self._next.pop(key)
        if p is None:
            self._head = n
        else:
            self._next[p] = n
        if n is None:
            self._tail = p
        else:
            self._prev[n] = p
        return e

    def _zero_seed_next(self, key: bytes | None) -> bytes | None:
        """htab_map_get_next_key over the real buckets."""
        start = 0
        if key is not None and key in self._table:
            b = self._bucket(key)
            chain = self._buckets[b]
            i = chain.index(key)
            if i + 1 < len(chain):
                return chain[i + 1]
            start = b + 1
        j = bisect.bisect_left(self._nonempty, start)
        return self._buckets[self._nonempty[j]][0] if j < len(self._nonempty) else None

    def __len__(self) -> int:
        return len(self._table)

    # -- element memory -------------------------------------------------------------------------
    def _new_elem(self) -> Element:
        e = Element(self, key_len=self.key_len)
        if self.prealloc:
            self._all.append(e)
        return e

    def _pool_pop(self, cpu: int) -> Element:
        """A free preallocated element (pcpu_freelist_pop) or -E2BIG."""
        if self._free:
            return self._free.pop()
        if self._virgin:
            self._virgin -= 1
            return self._new_elem()
        raise MapFull(f"map '{self.name}' is full ({self.max_entries} entries)", E2BIG)

    def _alloc(self, key: bytes, old: Element | None, cpu: int) -> Element:
        """hashtab.c: alloc_htab_elem (the value is written by the caller)."""
        if self.prealloc:
            if old is not None and self._extra is not None:
                e = self._extra[cpu % self.ncpus] or self._new_elem()
                self._extra[cpu % self.ncpus] = old
            else:
                e = self._pool_pop(cpu)
        else:
            if old is None and len(self._table) >= self.max_entries:
                raise MapFull(f"map '{self.name}' is full ({self.max_entries} entries)", E2BIG)
            e = Element(self, key_len=self.key_len)
        self._set_key(e, key)
        return e

    def _set_key(self, e: Element, key: bytes) -> None:
        e.key = key
        e.region.buf[:len(key)] = key

    def _free_elem(self, e: Element, *, replaced: bool = False) -> None:
        """free_htab_elem / htab_lru_push_free: fields first, then the memory goes back."""
        self.free_fields(e)
        if self._lru is not None:
            self._lru.push_free(e)
        elif self.prealloc:
            if not replaced:          # a replaced element became this CPU's extra element
                self._free.append(e)
        else:
            self.retire(e)

    def _lru_evict(self, e: Element) -> bool:
        """htab_lru_map_delete_node: remove an LRU victim if it is still in the table."""
        if self._table.get(e.key) is not e:
            return False
        self._unlink(e.key)
        self.free_fields(e)
        return True

    def elements(self) -> list[Element]:
        if self.prealloc:
            return list(self._all)
        return list(self._table.values())

    def _drop_storage(self) -> None:
        self._table.clear()
        self._buckets.clear()
        self._nonempty.clear()
        self._next.clear()
        self._prev.clear()
        self._head = self._tail = None
        self._all.clear()
        self._free.clear()

    # -- values ---------------------------------------------------------------------------------
    def _write_value(self, e: Element, value: bytes, cpu: int, onallcpus: bool, fresh: bool) -> None:
        """copy_map_value / pcpu_copy_value / pcpu_init_value."""
        if not self.percpu:
            if fresh:
                e.init_fields()
            e.write(value)
            return
        step = round_up(self.value_size)
        if onallcpus:
            for c in range(self.ncpus):
                e.write(value[c * step:(c + 1) * step], c)
        else:
            for c in range(self.ncpus):
                if c == cpu:
                    e.write(value, c)
                elif fresh:   # pcpu_init_value: zero the other CPUs of a new element
                    e.write(bytes(step), c)

    def _read_out(self, e: Element) -> bytes:
        if self.percpu:
            step = round_up(self.value_size)
            return b"".join(e.read(c, step) for c in range(self.ncpus))
        return self.record.copy_out(e.read())

    # -- update/delete core (both sides) --------------------------------------------------------
    def _check_flags(self, old: Element | None, flags: int) -> None:
        f = flags & ~BPF_F_LOCK
        if old is not None and f == BPF_NOEXIST:
            raise MapError("key already exists (BPF_NOEXIST)", EEXIST)
        if old is None and f == BPF_EXIST:
            raise MapError("key does not exist (BPF_EXIST)", ENOENT)

    def _update(self, key: bytes, value: bytes, flags: int, cpu: int, onallcpus: bool) -> None:
        with self.lock:
            if self.lru:
                self._lru_update(key, value, flags, cpu, onallcpus)
            elif self.percpu:
                self._percpu_update(key, value, flags, cpu, onallcpus)
            else:
                self._htab_update(key, value, flags, cpu)

    def _htab_update(self, key: bytes, value: bytes, flags: int, cpu: int) -> None:
        """htab_map_update_elem."""
        if (flags & ~BPF_F_LOCK) > BPF_EXIST:
            raise einval(f"bad update flags {flags:#x}")
        old = self._table.get(key)
        self._check_flags(old, flags)
        if old is not None and flags & BPF_F_LOCK:
            if self.record.spin_lock_off is None:
                raise einval("BPF_F_LOCK needs a bpf_spin_lock in the value")
            with self.value_locked(old):      # copy_map_value_locked: in place, the timer survives
                old.write(value)
            return
        new = self._alloc(key, old, cpu)
        self._write_value(new, value, cpu, False, True)
        self._link(key, new)
        if old is not None:
            self._free_elem(old, replaced=True)

    def _percpu_update(self, key: bytes, value: bytes, flags: int, cpu: int, onallcpus: bool) -> None:
        """__htab_percpu_map_update_elem: existing elements are updated in place."""
        if flags > BPF_EXIST:
            raise einval(f"bad update flags {flags:#x}")
        old = self._table.get(key)
        self._check_flags(old, flags)
        if old is not None:
            self._write_value(old, value, cpu, onallcpus, False)
            return
        new = self._alloc(key, None, cpu)
        self._write_value(new, value, cpu, onallcpus, True)
        self._link(key, new)

    def _lru_update(self, key: bytes, value: bytes, flags: int, cpu: int, onallcpus: bool) -> None:
        """htab_lru_map_update_elem / __htab_lru_percpu_map_update_elem."""
        assert self._lru is not None
        if flags > BPF_EXIST:
            raise einval(f"bad update flags {flags:#x}")
        new = None
        if not (self.percpu and flags == BPF_EXIST):
            new = self._lru.pop_free(cpu)      # may evict, before the key is even looked at
            if new is None:
                raise MapError(f"LRU map '{self.name}' has no free element", ENOMEM)
            self._set_key(new, key)
            if not self.percpu:
                self._write_value(new, value, cpu, onallcpus, True)
        old = self._table.get(key)
        try:
            self._check_flags(old, flags)
        except MapError:
            if new is not None:
                self._free_elem(new)
            raise
        if self.percpu and old is not None:
            BpfLru.set_ref(old)
            self._write_value(old, value, cpu, onallcpus, False)
            if new is not None:
                self._lru.push_free(new)
            return
        assert new is not None
        if self.percpu:
            self._write_value(new, value, cpu, onallcpus, True)
        self._link(key, new)
        if old is not None:
            BpfLru.set_ref(new)
            self._free_elem(old)

    def _delete(self, key: bytes) -> Element:
        with self.lock:
            e = self._table.get(key)
            if e is None:
                raise self._not_found(key)
            self._unlink(key)
            return e

    # -- syscall side ---------------------------------------------------------------------------
    def _sys_lookup(self, key: bytes, flags: int) -> bytes:
        e = self._table.get(key)     # map_lookup_elem_sys_only: no LRU ref bit
        if e is None:
            raise self._not_found(key)
        if flags & BPF_F_LOCK:
            with self.value_locked(e):
                return self.record.copy_out(e.read())
        return self._read_out(e)

    def _sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        self._update(key, value, flags, self._user_cpu(), True)

    def _user_cpu(self) -> int:
        """The CPU a syscall runs on: the runtime's current CPU (`kernel.cpu`, as `rt.cpu`)."""
        return int(getattr(self.kernel, "cpu", 0) or 0) % self.ncpus

    def _sys_delete(self, key: bytes) -> None:
        e = self._delete(key)
        self._free_elem(e)

    def _sys_lookup_and_delete(self, key: bytes, flags: int) -> bytes:
        with self.lock:
            e = self._table.get(key)
            if e is None:
                raise self._not_found(key)
            if flags & BPF_F_LOCK:
                with self.value_locked(e):
                    out = self.record.copy_out(e.read())
            else:
                out = self._read_out(e)
            self._unlink(key)
            self._free_elem(e)
            return out

    def _next_key(self, key: bytes | None) -> bytes | None:
        with self.lock:
            if self._zero_seed:
                return self._zero_seed_next(key)
            if key is None or key not in self._table:
                return self._head
            return self._next[key]

    def items_raw(self) -> list[tuple[bytes, Element]]:
        """(key, element) in iteration order."""
        with self.lock:
            if self._zero_seed:
                return [(k, self._table[k]) for b in self._nonempty for k in self._buckets[b]]
            return list(self._table.items())

    # -- program side ---------------------------------------------------------------------------
    def _prog_elem(self, key_addr: int) -> Element | None:
        e = self._table.get(self._read_key(key_addr))
        if e is not None and self._lru is not None:
            BpfLru.set_ref(e)      # htab_lru_map_lookup_elem
        return e

    def prog_lookup(self, key_addr: int, cpu: int = 0) -> int:
        e = self._prog_elem(key_addr)
        return 0 if e is None else e.value_addr(cpu if self.percpu else 0)

    def prog_lookup_percpu(self, key_addr: int, target_cpu: int) -> int:
        if not self.percpu or target_cpu >= self.ncpus:
            return 0
        e = self._prog_elem(key_addr)
        return 0 if e is None else e.value_addr(target_cpu)

    def prog_update(self, key_addr: int, value_addr: int, flags: int, cpu: int = 0) -> int:
        key = self._read_key(key_addr)
        value = self._read_value(value_addr)
        try:
            self._update(key, value, flags, cpu, False)
        except MapError as e:
            return -e.errno
        return 0

    def prog_delete(self, key_addr: int, cpu: int = 0) -> int:
        try:
            e = self._delete(self._read_key(key_addr))
        except MapError as err:
            return -err.errno
        except KeyError:
            return -ENOENT
        self._free_elem(e)
        return 0

    def for_each(self, fn: Callable[[int, int], int], cpu: int = 0) -> int:
        """bpf_for_each_hash_elem over a snapshot (the callback may delete)."""
        n = 0
        for key, e in self.items_raw():
            if self._table.get(key) is not e:
                continue
            n += 1
            if fn(e.key_addr, e.value_addr(cpu if self.percpu else 0)):
                break
        return n


class PercpuHashMap(HashMap):
    percpu = True


class LruHashMap(HashMap):
    lru = True


class LruPercpuHashMap(HashMap):
    lru = True
    percpu = True
