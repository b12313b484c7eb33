"""Map families of the emulated kernel, case by case (runtime/maps/).

Every expected errno below was checked once on Linux 6.18 (bpf(2) through a ctypes probe, or
bpftool) — the comment on each case names the kernel check behind it — and the `kernel`
tests at the end run the same tables through `bpfsim.kernel.syscall` and compare.
"""

from __future__ import annotations

import errno
import os
import struct

import pytest

from bpfsim.errors import KeyNotFound, MapError, NotSupported, UsageError
from bpfsim.runtime.maps import create_map
from bpfsim.spec.collection import MapSpec
from bpfsim.uapi.constants import (
    BPF_ANY,
    BPF_EXIST,
    BPF_F_LOCK,
    BPF_F_NO_COMMON_LRU,
    BPF_F_NO_PREALLOC,
    BPF_F_RDONLY,
    BPF_F_RDONLY_PROG,
    BPF_F_WRONLY,
    BPF_F_ZERO_SEED,
    BPF_NOEXIST,
    MapType,
)
from bpfsim.vm.memory import AddressSpace

ENOTSUPP = 524
T = MapType


class FakeKernel:
    """The slice of the Runtime maps use: mem, ncpus, timers (None), cpu."""

    def __init__(self, ncpus: int = 2) -> None:
        self.mem = AddressSpace()
        self.ncpus = ncpus
        self.timers = None
        self.cpu = 0
        # the kernel's own creation checks are under test here, not the emulator's memory cap
        self.max_map_bytes = 1 << 40


def u32(x: int) -> bytes:
    return struct.pack("<I", x)


def u64(x: int) -> bytes:
    return struct.pack("<Q", x)


def mk(k, mtype, ks, vs, me, flags=0, extra=0, name="m"):
    return create_map(k, MapSpec(name, int(mtype), ks, vs, me, flags=flags, map_extra=extra))


@pytest.fixture
def k():
    return FakeKernel()


def errno_of(fn, *a):
    try:
        fn(*a)
    except MapError as e:
        return e.errno
    except KeyNotFound:
        return errno.ENOENT
    return 0


# -- creation (map_create + each family's map_alloc_check) ------------------------------------
# (type, key_size, value_size, max_entries, flags, map_extra, expected errno or 0)
CREATE_CASES = [
    (T.HASH, 4, 8, 4, 0, 0, 0),
    (T.HASH, 0, 8, 4, 0, 0, errno.EINVAL),                 # htab_map_alloc_check: key_size 0
    (T.HASH, 4, 0, 4, 0, 0, errno.EINVAL),                 # value_size 0
    (T.HASH, 4, 8, 0, 0, 0, errno.EINVAL),                 # max_entries 0
    (T.HASH, 600, 8, 4, 0, 0, 0),                          # no MAX_BPF_STACK key limit any more
    (T.HASH, 4, 1 << 22, 2, 0, 0, errno.E2BIG),            # >= KMALLOC_MAX_SIZE - sizeof(htab_elem)
    (T.HASH, 4, 8, 4, BPF_F_NO_COMMON_LRU, 0, errno.EINVAL),   # NO_COMMON_LRU on a non-LRU map
    (T.HASH, 4, 8, 4, BPF_F_RDONLY | BPF_F_WRONLY, 0, errno.EINVAL),  # bpf_get_file_flag
    (T.HASH, 4, 8, 4, 1 << 10, 0, errno.EINVAL),           # MMAPABLE not in HTAB_CREATE_FLAG_MASK
    (T.HASH, 4, 8, 4, 0, 1, errno.EINVAL),                 # map_extra only for bloom/arena
    (T.LRU_HASH, 4, 8, 4, BPF_F_NO_PREALLOC, 0, ENOTSUPP),  # lru && !prealloc
    (T.LRU_HASH, 4, 8, 4, BPF_F_NO_COMMON_LRU, 0, 0),
    (T.LRU_PERCPU_HASH, 4, 8, 4, BPF_F_NO_COMMON_LRU, 0, 0),
    (T.ARRAY, 8, 8, 4, 0, 0, errno.EINVAL),                # array_map_alloc_check: key_size != 4
    (T.ARRAY, 4, 0, 4, 0, 0, errno.EINVAL),
    (T.ARRAY, 4, 8, 4, BPF_F_NO_PREALLOC, 0, errno.EINVAL),
    (T.ARRAY, 4, 8, 4, 1 << 10, 0, 0),                     # BPF_F_MMAPABLE
    (T.ARRAY, 4, 1 << 20, 2, 0, 0, 0),
    (T.ARRAY, 4, 1 << 31, 2, 0, 0, errno.E2BIG),           # value_size > INT_MAX
    (T.ARRAY, 4, 8, 1 << 31, 0, 0, 0),                     # element memory is lazy here
    (T.PERCPU_ARRAY, 4, 32768, 4, 0, 0, 0),
    (T.PERCPU_ARRAY, 4, 32769, 4, 0, 0, errno.E2BIG),      # round_up(vs, 8) > PCPU_MIN_UNIT_SIZE
    (T.QUEUE, 4, 8, 4, 0, 0, errno.EINVAL),                # queue_stack_map_alloc_check: key_size
    (T.QUEUE, 0, 8, 4, 0, 0, 0),
    (T.QUEUE, 0, 8, 2, BPF_F_NO_PREALLOC, 0, errno.EINVAL),
    (T.QUEUE, 0, 8, 2, BPF_F_RDONLY_PROG, 0, 0),
    (T.STACK, 0, 0, 2, 0, 0, errno.EINVAL),
    (T.STACK, 0, 8, 0, 0, 0, errno.EINVAL),
    (T.RINGBUF, 0, 0, 4096, 0, 0, 0),
    (T.RINGBUF, 0, 0, 3000, 0, 0, errno.EINVAL),           # ringbuf_map_alloc: not a power of 2
    (T.RINGBUF, 0, 0, 1024, 0, 0, errno.EINVAL),           # not page aligned
    (T.RINGBUF, 4, 0, 8192, 0, 0, errno.EINVAL),           # key_size
    (T.LPM_TRIE, 8, 4, 4, 0, 0, errno.EINVAL),             # trie_alloc: needs NO_PREALLOC
    (T.LPM_TRIE, 8, 4, 4, BPF_F_NO_PREALLOC, 0, 0),
    (T.LPM_TRIE, 8, 4, 4, BPF_F_NO_PREALLOC | BPF_F_RDONLY_PROG, 0, 0),
    (T.LPM_TRIE, 4, 4, 4, BPF_F_NO_PREALLOC, 0, errno.EINVAL),   # key_size < 5
    (T.LPM_TRIE, 5, 4, 4, BPF_F_NO_PREALLOC, 0, 0),
    (T.LPM_TRIE, 21, 4, 4, BPF_F_NO_PREALLOC, 0, 0),
    (T.LPM_TRIE, 8, 0, 4, BPF_F_NO_PREALLOC, 0, errno.EINVAL),
    (T.LPM_TRIE, 8, 4, 0, BPF_F_NO_PREALLOC, 0, errno.EINVAL),
    (T.BLOOM_FILTER, 0, 4, 10, 0, 0, 0),
    (T.BLOOM_FILTER, 4, 4, 10, 0, 0, errno.EINVAL),        # bloom_map_alloc_check: key_size
    (T.BLOOM_FILTER, 0, 4, 10, 0, 16, errno.EINVAL),       # map_extra > 15
    (T.BLOOM_FILTER, 0, 4, 10, 0, 15, 0),
    (T.BLOOM_FILTER, 0, 0, 10, 0, 0, errno.EINVAL),
    (T.PROG_ARRAY, 4, 4, 4, 0, 0, 0),
    (T.PROG_ARRAY, 4, 8, 4, 0, 0, errno.EINVAL),           # fd_array_map_alloc_check
    (T.PROG_ARRAY, 8, 4, 4, 0, 0, errno.EINVAL),
    (T.PROG_ARRAY, 4, 4, 4, BPF_F_NO_PREALLOC, 0, errno.EINVAL),
]


def _case_id(c):
    return f"{T(c[0]).name}-k{c[1]}-v{c[2]}-n{c[3]}-f{c[4]:#x}-x{c[5]}"


@pytest.mark.parametrize("case", CREATE_CASES, ids=_case_id)
def test_create_checks(k, case):
    mtype, ks, vs, me, flags, extra, want = case
    assert errno_of(mk, k, mtype, ks, vs, me, flags, extra) == want


def test_create_unknown_and_unsupported_types(k):
    assert errno_of(mk, k, 99, 4, 4, 1) == errno.EINVAL
    with pytest.raises(NotSupported):
        mk(k, T.SOCKMAP, 4, 4, 1)


def test_create_bad_name(k):
    with pytest.raises(MapError) as e:
        create_map(k, MapSpec("bad-name", T.HASH, 4, 4, 1))
    assert e.value.errno == errno.EINVAL   # syscall.c: bpf_obj_name_cpy


# -- ARRAY ------------------------------------------------------------------------------------
def test_array_basics(k):
    a = mk(k, T.ARRAY, 4, 8, 3)
    assert a.lookup(u32(2)) == bytes(8)                     # elements always exist, zeroed
    a.update(u32(1), u64(7))
    assert a.lookup(u32(1)) == u64(7)
    assert errno_of(a.lookup, u32(3)) == errno.ENOENT        # index >= max_entries
    assert errno_of(a.update, u32(3), u64(1)) == errno.E2BIG
    assert errno_of(a.update, u32(1), u64(1), BPF_NOEXIST) == errno.EEXIST
    assert errno_of(a.update, u32(1), u64(1), BPF_EXIST) == 0
    assert errno_of(a.update, u32(1), u64(1), 8) == errno.EINVAL
    assert errno_of(a.update, u32(1), u64(1), BPF_F_LOCK) == errno.EINVAL   # no bpf_spin_lock
    assert errno_of(a.delete, u32(1)) == errno.EINVAL
    assert errno_of(a.lookup_and_delete, u32(0)) == ENOTSUPP
    assert errno_of(a.lookup, u32(0), 1) == errno.EINVAL     # lookup flags other than F_LOCK


def test_array_get_next_key(k):
    a = mk(k, T.ARRAY, 4, 8, 3)
    # array_map_get_next_key: NULL / out of range -> 0, last -> ENOENT
    assert a.get_next_key(None) == u32(0)
    assert a.get_next_key(u32(0)) == u32(1)
    assert a.get_next_key(u32(2)) is None
    assert a.get_next_key(u32(3)) == u32(0)
    assert a.get_next_key(u32(100)) == u32(0)
    assert list(a.iter_keys()) == [u32(0), u32(1), u32(2)]


def test_wrong_sizes_are_usage_errors(k):
    a = mk(k, T.ARRAY, 4, 8, 3)
    with pytest.raises(UsageError, match="key must be 4 bytes"):
        a.lookup(b"\0\0")
    with pytest.raises(UsageError, match="value must be 8 bytes"):
        a.update(u32(0), b"\1" * 9)
    assert a.lookup(u32(0)) == bytes(8)


# -- HASH -------------------------------------------------------------------------------------
def test_hash_update_rules(k):
    h = mk(k, T.HASH, 4, 8, 2)
    h.update(u32(1), u64(1))
    h.update(u32(2), u64(2))
    assert errno_of(h.update, u32(3), u64(3)) == errno.E2BIG           # full
    assert errno_of(h.update, u32(3), u64(3), BPF_EXIST) == errno.ENOENT
    assert errno_of(h.update, u32(1), u64(9)) == 0                     # replacing never fails
    assert errno_of(h.update, u32(1), u64(9), BPF_NOEXIST) == errno.EEXIST
    assert errno_of(h.update, u32(1), u64(9), 3) == errno.EINVAL
    assert errno_of(h.update, u32(1), u64(9), BPF_F_LOCK) == errno.EINVAL
    assert h.lookup(u32(1)) == u64(9)
    assert errno_of(h.delete, u32(7)) == errno.ENOENT
    assert h.lookup_and_delete(u32(2)) == u64(2)
    assert errno_of(h.lookup_and_delete, u32(2)) == errno.ENOENT
    assert errno_of(h.lookup, u32(1), BPF_F_LOCK) == errno.EINVAL


@pytest.mark.parametrize("flags", [0, BPF_F_NO_PREALLOC])
def test_hash_full_then_delete(k, flags):
    h = mk(k, T.HASH, 4, 4, 3, flags)
    for i in range(3):
        h.update(u32(i), u32(i))
    assert errno_of(h.update, u32(9), u32(9)) == errno.E2BIG
    h.delete(u32(0))
    h.update(u32(9), u32(9))
    assert sorted(h.iter_keys()) == sorted([u32(1), u32(2), u32(9)])


def test_hash_get_next_key(k):
    h = mk(k, T.HASH, 4, 8, 8)
    for i in (5, 3, 9):
        h.update(u32(i), u64(i))
    # order: insertion order (the kernel's jhash bucket order is unknowable); a missing key
    # restarts from the first key (htab_map_get_next_key), the last gives ENOENT (None).
    assert list(h.iter_keys()) == [u32(5), u32(3), u32(9)]
    assert h.get_next_key(u32(77)) == u32(5)
    assert h.get_next_key(u32(9)) is None
    h.update(u32(3), u64(33))                 # replacement keeps the key's place
    assert list(h.iter_keys()) == [u32(5), u32(3), u32(9)]


# -- permissions, freezing ------------------------------------------------------------------
def test_freeze(k):
    h = mk(k, T.HASH, 4, 8, 2)
    h.update(u32(1), u64(1))
    h.freeze()
    assert errno_of(h.freeze) == errno.EPERM                  # map_freeze: sys perms say frozen
    assert errno_of(h.update, u32(1), u64(2)) == errno.EPERM  # map_get_sys_perms drops write
    assert errno_of(h.delete, u32(1)) == errno.EPERM
    assert errno_of(h.lookup_and_delete, u32(1)) == errno.EPERM
    assert h.lookup(u32(1)) == u64(1)
    # programs may still write a frozen map (only BPF_F_RDONLY_PROG stops them)
    key = k.mem.map(bytearray(u32(1)))
    val = k.mem.map(bytearray(u64(5)))
    assert h.prog_update(key.base, val.base, BPF_ANY) == 0


def test_rdonly_wronly(k):
    ro = mk(k, T.HASH, 4, 8, 2, BPF_F_RDONLY)
    wo = mk(k, T.HASH, 4, 8, 2, BPF_F_WRONLY)
    assert errno_of(ro.update, u32(1), u64(1)) == errno.EPERM
    assert errno_of(ro.delete, u32(1)) == errno.EPERM
    assert errno_of(ro.lookup, u32(1)) == errno.ENOENT
    assert errno_of(ro.freeze) == errno.EPERM
    assert errno_of(ro.lookup_and_delete, u32(1)) == errno.EPERM
    assert errno_of(wo.lookup, u32(1)) == errno.EPERM
    assert errno_of(wo.update, u32(1), u64(1)) == 0
    assert errno_of(wo.get_next_key, None) == errno.EPERM
    assert errno_of(wo.freeze) == 0


def test_rdonly_prog_values_are_not_program_writable(k):
    a = mk(k, T.ARRAY, 4, 8, 1, BPF_F_RDONLY_PROG)
    key = k.mem.map(bytearray(4))
    addr = a.prog_lookup(key.base)
    assert k.mem.load(addr, 8) == 0
    from bpfsim.errors import MemoryFault
    with pytest.raises(MemoryFault):
        k.mem.store(addr, 8, 1)
    a.update(u32(0), u64(3))                  # user space still can
    assert k.mem.load(addr, 8) == 3


# -- per-CPU ----------------------------------------------------------------------------------
def test_percpu_array_user_layout(k):
    pa = mk(k, T.PERCPU_ARRAY, 4, 4, 2)
    # bpf_percpu_array_copy: ncpus * round_up(4, 8) bytes, padding kept (checked on 6.18)
    blob = bytes(range(16))
    pa.update(u32(0), blob)
    assert pa.lookup(u32(0)) == blob
    with pytest.raises(UsageError, match="16 bytes"):
        pa.update(u32(0), bytes(4))
    assert errno_of(pa.update, u32(0), blob, BPF_NOEXIST) == errno.EEXIST


def test_percpu_prog_side(k):
    ph = mk(k, T.PERCPU_HASH, 4, 4, 4)
    key = k.mem.map(bytearray(u32(1)))
    val = k.mem.map(bytearray(u32(0xAA)))
    assert ph.prog_update(key.base, val.base, BPF_ANY, cpu=1) == 0
    # pcpu_init_value: a new element from a program zeroes the other CPUs
    assert ph.lookup(u32(1)) == bytes(8) + u32(0xAA) + bytes(4)
    k.mem.write(val.base, u32(0xBB))
    assert ph.prog_update(key.base, val.base, BPF_ANY, cpu=0) == 0   # in place, this CPU only
    assert ph.lookup(u32(1)) == u32(0xBB) + bytes(4) + u32(0xAA) + bytes(4)
    a0, a1 = ph.prog_lookup(key.base, 0), ph.prog_lookup(key.base, 1)
    assert a0 != a1 and k.mem.load(a1, 4) == 0xAA
    assert ph.prog_lookup_percpu(key.base, 1) == a1
    assert ph.prog_lookup_percpu(key.base, 2) == 0            # no such CPU
    assert ph.prog_update(key.base, val.base, BPF_F_LOCK, 0) == -errno.EINVAL


# -- program side -------------------------------------------------------------------------------
def test_prog_side_errnos(k):
    h = mk(k, T.HASH, 4, 8, 1)
    key = k.mem.map(bytearray(u32(1)))
    key2 = k.mem.map(bytearray(u32(2)))
    val = k.mem.map(bytearray(u64(1)))
    assert h.prog_lookup(key.base) == 0
    assert h.prog_delete(key.base) == -errno.ENOENT
    assert h.prog_update(key.base, val.base, BPF_EXIST) == -errno.ENOENT
    assert h.prog_update(key.base, val.base, BPF_ANY) == 0
    assert h.prog_update(key2.base, val.base, BPF_ANY) == -errno.E2BIG
    assert h.prog_update(key.base, val.base, BPF_NOEXIST) == -errno.EEXIST
    addr = h.prog_lookup(key.base)
    k.mem.store(addr, 8, 42)
    assert h.lookup(u32(1)) == u64(42)
    assert h.prog_delete(key.base) == 0


def test_value_addresses_are_stable_and_owned(k):
    from bpfsim.runtime.maps import element_at

    h = mk(k, T.HASH, 4, 8, 4)
    h.update(u32(1), u64(1))
    key = k.mem.map(bytearray(u32(1)))
    addr = h.prog_lookup(key.base)
    assert h.prog_lookup(key.base) == addr
    elem, off = element_at(k.mem, addr + 3)
    assert elem.map is h and off == 3
    # htab_elem layout: the key storage (round_up(key_size, 8)) right before the value
    assert k.mem.read(addr - 8, 4) == u32(1)


@pytest.mark.parametrize("flags", [0, BPF_F_NO_PREALLOC])
def test_stale_pointer_after_delete_stays_readable(k, flags):
    h = mk(k, T.HASH, 4, 8, 4, flags)
    h.update(u32(1), u64(11))
    key = k.mem.map(bytearray(u32(1)))
    addr = h.prog_lookup(key.base)
    assert h.prog_delete(key.base) == 0
    assert k.mem.load(addr, 8) == 11          # RCU: still readable in the same program run


def test_no_prealloc_memory_goes_after_the_run(k):
    freed = []
    k.defer_free = freed.append               # the runtime's "after the current run" hook
    h = mk(k, T.HASH, 4, 8, 4, BPF_F_NO_PREALLOC)
    h.update(u32(1), u64(11))
    key = k.mem.map(bytearray(u32(1)))
    addr = h.prog_lookup(key.base)
    h.prog_delete(key.base)
    assert k.mem.load(addr, 8) == 11
    for fn in freed:
        fn()
    assert k.mem.find(addr) is None


def test_prealloc_replace_reuses_memory_like_extra_elems(k):
    h = mk(k, T.HASH, 4, 8, 1)
    h.update(u32(1), u64(1))
    key = k.mem.map(bytearray(u32(1)))
    first = h.prog_lookup(key.base)
    h.update(u32(1), u64(2))                  # a new element: this CPU's extra element
    second = h.prog_lookup(key.base)
    assert second != first
    assert k.mem.load(first, 8) == 1          # the old element still holds the old value
    h.update(u32(1), u64(3))                  # and is the next spare
    assert h.prog_lookup(key.base) == first


def test_for_each(k):
    h = mk(k, T.HASH, 4, 8, 4)
    for i in range(3):
        h.update(u32(i), u64(i * 10))
    seen = []

    def cb(key_addr, value_addr):
        seen.append((k.mem.load(key_addr, 4), k.mem.load(value_addr, 8)))
        return 1 if len(seen) == 2 else 0

    assert h.for_each(cb) == 2
    assert seen == [(0, 0), (1, 10)]
    a = mk(k, T.ARRAY, 4, 8, 3)
    assert a.for_each(lambda kk, v: 0) == 3


# -- LRU ----------------------------------------------------------------------------------------
def test_lru_fill_one_cpu(k):
    # matches 6.18 (see test_lru_matches_kernel): target_free = clamp(4/2/2, 1, 128) = 1
    m = mk(k, T.LRU_HASH, 4, 8, 4)
    for i in range(10):
        m.update(u32(i), u64(i))
    assert sorted(struct.unpack("<I", x)[0] for x in m.iter_keys()) == [6, 7, 8, 9]


def test_lru_ref_bit_protects_looked_up_elements(k):
    m = mk(k, T.LRU_HASH, 4, 8, 4, BPF_F_NO_COMMON_LRU)   # per-CPU lists: 2 elements per CPU
    m.update(u32(0), u64(0))
    m.update(u32(1), u64(1))
    key = k.mem.map(bytearray(u32(0)))
    assert m.prog_lookup(key.base) != 0        # sets the ref bit on key 0
    m.update(u32(2), u64(2))
    keys = {struct.unpack("<I", x)[0] for x in m.iter_keys()}
    assert keys == {0, 2}                      # 1 was evicted, 0 survived


def test_lru_update_takes_a_node_before_checking_flags(k):
    # htab_lru_map_update_elem pops a free node (which may evict) before it looks at the key.
    # Per-CPU lists of 2: the pop shrinks up to PERCPU_FREE_TARGET (4) nodes, so both keys go
    # and the BPF_NOEXIST update of key 1 then succeeds.  Checked on 6.18: same errnos, [1].
    m = mk(k, T.LRU_HASH, 4, 8, 4, BPF_F_NO_COMMON_LRU)
    m.update(u32(0), u64(0))
    m.update(u32(1), u64(1))
    assert errno_of(m.update, u32(1), u64(1), BPF_NOEXIST) == 0
    assert errno_of(m.update, u32(9), u64(9), BPF_EXIST) == errno.ENOENT
    assert list(m.iter_keys()) == [u32(1)]
    assert errno_of(m.update, u32(1), u64(1), BPF_F_LOCK) == errno.EINVAL
    c = mk(k, T.LRU_HASH, 4, 8, 4)
    for i in range(4):
        c.update(u32(i), u64(i))
    assert errno_of(c.update, u32(3), u64(1), BPF_NOEXIST) == errno.EEXIST


def test_lru_percpu_user_value(k):
    m = mk(k, T.LRU_PERCPU_HASH, 4, 4, 4)
    m.update(u32(1), bytes(range(16)))
    assert m.lookup(u32(1)) == bytes(range(16))


# -- QUEUE / STACK --------------------------------------------------------------------------------
@pytest.mark.parametrize("mtype,order", [(T.QUEUE, [2, 3, 4]), (T.STACK, [4, 3, 2])])
def test_queue_stack(k, mtype, order):
    q = mk(k, mtype, 0, 8, 3)
    assert errno_of(q.lookup, None) == errno.ENOENT          # peek empty
    for i in (1, 2, 3):
        q.update(None, u64(i))
    assert errno_of(q.update, None, u64(4)) == errno.E2BIG
    assert errno_of(q.update, None, u64(4), BPF_NOEXIST) == errno.EINVAL
    assert errno_of(q.update, None, u64(4), BPF_F_LOCK) == errno.EINVAL
    q.update(None, u64(4), BPF_EXIST)                          # drops the oldest (1), both kinds
    assert q.lookup(None) == u64(order[0])
    assert [struct.unpack("<Q", q.lookup_and_delete(None))[0] for _ in range(3)] == order
    assert errno_of(q.lookup_and_delete, None) == errno.ENOENT
    assert errno_of(q.delete, None) == errno.EINVAL
    assert errno_of(q.get_next_key, None) == errno.EINVAL
    assert errno_of(q.lookup_and_delete, None, BPF_F_LOCK) == errno.EINVAL


def test_queue_prog_side(k):
    q = mk(k, T.QUEUE, 0, 4, 1)
    buf = k.mem.map(bytearray(u32(7)))
    assert q.prog_push(buf.base, 0) == 0
    assert q.prog_push(buf.base, 0) == -errno.E2BIG
    k.mem.write(buf.base, u32(0))
    assert q.prog_peek(buf.base) == 0 and k.mem.load(buf.base, 4) == 7
    assert q.prog_pop(buf.base) == 0
    assert q.prog_pop(buf.base) == -errno.ENOENT


# -- RINGBUF ----------------------------------------------------------------------------------
def test_ringbuf_records(k):
    rb = mk(k, T.RINGBUF, 0, 0, 4096)
    a = rb.reserve(10)
    b = rb.reserve(3)
    c = rb.reserve(5)
    k.mem.write(a, b"A" * 10)
    k.mem.write(c, b"C" * 5)
    assert rb.query(1) == 4096                                 # BPF_RB_RING_SIZE
    assert rb.query(3) == 24 + 16 + 16                         # PROD_POS: round_up(len + 8, 8)
    assert rb.submit(c) == 0
    assert rb.drain() == []                                    # the first record is still busy
    assert rb.discard(b) == 0 and rb.submit(a) == 0
    assert rb.drain() == [b"A" * 10, b"C" * 5]
    assert rb.query(0) == 0 and rb.query(2) == 56              # AVAIL_DATA, CONS_POS
    assert rb.submit(a) == -errno.EINVAL                       # not a live record any more
    assert errno_of(rb.lookup, None) == errno.EINVAL
    assert errno_of(rb.get_next_key, None) == ENOTSUPP


def test_ringbuf_space(k):
    rb = mk(k, T.RINGBUF, 0, 0, 4096)
    assert rb.reserve(4096 - 8 + 1) == 0                       # larger than the ring
    # the producer may never get more than size-1 bytes ahead of the consumer
    assert rb.reserve(4096 - 8) == 0
    big = rb.reserve(4096 - 16)
    assert big
    assert rb.reserve(1) == 0
    assert rb.output(b"x") == -errno.EAGAIN
    rb.submit(big)
    assert len(rb.drain()[0]) == 4080
    assert rb.output(b"hello") == 0
    assert rb.output(b"x", 4) == -errno.EINVAL
    assert rb.drain() == [b"hello"]


# -- LPM_TRIE ---------------------------------------------------------------------------------
def lpm_key(plen, *octets):
    return u32(plen) + bytes(octets)


def test_lpm(k):
    t = mk(k, T.LPM_TRIE, 8, 4, 4, BPF_F_NO_PREALLOC)
    t.update(lpm_key(16, 192, 168, 0, 0), u32(16))
    t.update(lpm_key(24, 192, 168, 1, 0), u32(24))
    assert t.lookup(lpm_key(32, 192, 168, 1, 7)) == u32(24)
    assert t.lookup(lpm_key(32, 192, 168, 2, 7)) == u32(16)
    assert t.lookup(lpm_key(20, 192, 168, 1, 7)) == u32(16)    # only 20 bits of the key count
    assert errno_of(t.lookup, lpm_key(32, 10, 0, 0, 1)) == errno.ENOENT
    assert errno_of(t.update, lpm_key(33, 1, 2, 3, 4), u32(0)) == errno.EINVAL
    assert errno_of(t.update, lpm_key(16, 192, 168, 9, 9), u32(0), BPF_NOEXIST) == errno.EEXIST
    assert errno_of(t.delete, lpm_key(24, 192, 168, 0, 0)) == errno.ENOENT   # exact match only
    t.delete(lpm_key(24, 192, 168, 1, 0))
    assert t.lookup(lpm_key(32, 192, 168, 1, 7)) == u32(16)
    for i in range(3):
        t.update(lpm_key(32, 10, 0, 0, i), u32(i))
    assert errno_of(t.update, lpm_key(32, 10, 0, 0, 9), u32(0)) == errno.ENOSPC


def test_lpm_get_next_key_postorder(k):
    # lpm_trie.c's own example: more specific prefixes first, /16 last
    t = mk(k, T.LPM_TRIE, 8, 4, 8, BPF_F_NO_PREALLOC)
    keys = [lpm_key(16, 192, 168, 0, 0), lpm_key(24, 192, 168, 0, 0), lpm_key(24, 192, 168, 1, 0),
            lpm_key(24, 192, 168, 128, 0)]
    for key in keys:
        t.update(key, u32(0))
    assert list(t.iter_keys()) == keys[1:] + keys[:1]


# -- BLOOM_FILTER -----------------------------------------------------------------------------
def test_bloom(k):
    b = mk(k, T.BLOOM_FILTER, 0, 4, 8)
    b.update(None, u32(5))
    assert b.contains(u32(5)) and not b.contains(u32(6))
    assert errno_of(b.update, None, u32(5), BPF_EXIST) == errno.EINVAL
    assert errno_of(b.delete, None) == errno.EOPNOTSUPP
    v = k.mem.map(bytearray(u32(5)))
    assert b.prog_peek(v.base) == 0
    k.mem.write(v.base, u32(9))
    assert b.prog_peek(v.base) == -errno.ENOENT
    assert b.prog_push(v.base, 0) == 0 and b.prog_peek(v.base) == 0


# -- the same tables in the kernel --------------------------------------------------------------
def _kernel_ok() -> tuple[bool, str]:
    try:
        from bpfsim.kernel.probes import kernel_available
    except ImportError:
        return os.geteuid() == 0 and os.path.exists("/sys/fs/bpf"), "needs root and bpffs"
    return kernel_available()


def _skip_without_kernel():
    ok, why = _kernel_ok()
    if not ok:
        pytest.skip(f"kernel not available: {why}")


@pytest.mark.kernel
@pytest.mark.parametrize("case", CREATE_CASES, ids=_case_id)
def test_create_checks_match_kernel(case):
    _skip_without_kernel()
    from bpfsim.errors import KernelError
    from bpfsim.kernel import syscall as sc

    mtype, ks, vs, me, flags, extra, want = case
    if mtype == T.ARRAY and me == 1 << 31:
        pytest.skip("a 16 GiB array is too much to ask of the test machine")
    try:
        fd = sc.map_create(int(mtype), ks, vs, me, flags=flags, map_extra=extra, name="t")
    except KernelError as e:
        got = e.errno
    else:
        sc.close(fd)
        got = 0
    assert got == want
    assert errno_of(mk, FakeKernel(), mtype, ks, vs, me, flags, extra) == got


def _kernel_errno(fn, *a):
    """The errno of a kernel.syscall call; its None/False answers mean ENOENT for lookups and
    deletes (map_update and map_freeze return None on success)."""
    from bpfsim.errors import KernelError
    from bpfsim.kernel import syscall as sc

    try:
        r = fn(*a)
    except KernelError as e:
        return e.errno
    if fn in (sc.map_update, sc.map_freeze):
        return 0
    return errno.ENOENT if r is None or r is False else 0


@pytest.mark.kernel
def test_element_ops_match_kernel():
    """The same sequence of syscalls on the kernel and on the emulator gives the same errnos
    and values (hash, array, queue, frozen)."""
    _skip_without_kernel()
    from bpfsim.kernel import syscall as sc

    script = [
        (T.HASH, 4, 8, 2, 0, [("u", 1, 1, 0), ("u", 2, 2, 0), ("u", 3, 3, 0), ("u", 3, 3, BPF_EXIST),
                              ("u", 1, 9, 0), ("u", 1, 9, BPF_NOEXIST), ("u", 1, 9, 3), ("l", 1),
                              ("d", 7), ("x", 2), ("x", 2), ("f",), ("f",), ("u", 1, 1, 0), ("d", 1),
                              ("l", 1)]),
        (T.ARRAY, 4, 8, 3, 0, [("l", 3), ("u", 3, 1, 0), ("u", 1, 1, BPF_NOEXIST), ("u", 1, 5, BPF_EXIST),
                               ("l", 1), ("d", 1), ("u", 1, 1, 8), ("x", 0)]),
        (T.LRU_HASH, 4, 8, 4, 0, [("u", i, i, 0) for i in range(10)] + [("l", i) for i in range(10)]),
    ]
    for mtype, ks, vs, me, flags, ops in script:
        fd = sc.map_create(int(mtype), ks, vs, me, flags=flags, name="t")
        em = mk(FakeKernel(), mtype, ks, vs, me, flags)
        try:
            for op in ops:
                if op[0] == "u":
                    a = _kernel_errno(sc.map_update, fd, u32(op[1]), u64(op[2]), op[3])
                    b = errno_of(em.update, u32(op[1]), u64(op[2]), op[3])
                elif op[0] == "l":
                    a = (_kernel_errno(sc.map_lookup, fd, u32(op[1]), vs), sc.map_lookup(fd, u32(op[1]), vs))
                    b = (errno_of(em.lookup, u32(op[1])), None)
                    b = (b[0], em.lookup(u32(op[1])) if b[0] == 0 else None)
                elif op[0] == "d":
                    a = _kernel_errno(sc.map_delete, fd, u32(op[1]))
                    b = errno_of(em.delete, u32(op[1]))
                elif op[0] == "x":
                    a = _kernel_errno(sc.map_lookup_and_delete, fd, u32(op[1]), vs)
                    b = errno_of(em.lookup_and_delete, u32(op[1]))
                else:
                    a = _kernel_errno(sc.map_freeze, fd)
                    b = errno_of(em.freeze)
                assert a == b, (T(mtype).name, op)
        finally:
            sc.close(fd)


@pytest.mark.kernel
def test_lru_matches_kernel():
    """Which keys survive: random inserts from two CPUs, common and per-CPU LRU lists."""
    _skip_without_kernel()
    import random

    from bpfsim.kernel import syscall as sc

    if os.cpu_count() != 2:
        pytest.skip("the comparison is calibrated for a 2-CPU machine")
    rnd = random.Random(7)
    old = os.sched_getaffinity(0)
    try:
        for n in (4, 16, 300):
            for flags in (0, BPF_F_NO_COMMON_LRU):
                for mtype in (T.LRU_HASH, T.LRU_PERCPU_HASH):
                    vsz = 8 if mtype == T.LRU_HASH else 16
                    ops = [(rnd.randrange(2), rnd.randrange(4 * n)) for _ in range(5 * n)]
                    fd = sc.map_create(int(mtype), 4, 8, n, flags=flags, name="lru")
                    kern = FakeKernel()
                    em = mk(kern, mtype, 4, 8, n, flags)
                    try:
                        for cpu, key in ops:
                            os.sched_setaffinity(0, {cpu})
                            sc.map_update(fd, u32(key), bytes(vsz))
                            kern.cpu = cpu
                            em.update(u32(key), bytes(vsz))
                        got, key = [], None
                        while (key := sc.map_get_next_key(fd, key, 4)) is not None:
                            got.append(key)
                        assert sorted(got) == sorted(em.iter_keys()), (T(mtype).name, n, flags)
                    finally:
                        sc.close(fd)
    finally:
        os.sched_setaffinity(0, old)


@pytest.mark.kernel
def test_lpm_order_matches_kernel():
    _skip_without_kernel()
    from bpfsim.kernel import syscall as sc

    keys = [lpm_key(16, 192, 168, 0, 0), lpm_key(24, 192, 168, 128, 0), lpm_key(24, 192, 168, 0, 0),
            lpm_key(8, 10, 0, 0, 0), lpm_key(24, 192, 168, 1, 0), lpm_key(0, 0, 0, 0, 0)]
    fd = sc.map_create(int(T.LPM_TRIE), 8, 4, 8, flags=BPF_F_NO_PREALLOC, name="lpm")
    em = mk(FakeKernel(), T.LPM_TRIE, 8, 4, 8, BPF_F_NO_PREALLOC)
    try:
        for key in keys:
            sc.map_update(fd, key, u32(key[4]))
            em.update(key, u32(key[4]))
        got, key = [], None
        while (key := sc.map_get_next_key(fd, key, 8)) is not None:
            got.append(key)
        assert got == list(em.iter_keys())
        for probe in (lpm_key(32, 192, 168, 1, 1), lpm_key(32, 10, 1, 1, 1), lpm_key(32, 11, 0, 0, 0)):
            assert sc.map_lookup(fd, probe, 4) == em.lookup(probe)
    finally:
        sc.close(fd)


@pytest.mark.kernel
def test_queue_stack_ringbuf_match_kernel():
    _skip_without_kernel()
    from bpfsim.kernel import syscall as sc
    from bpfsim.uapi.constants import Cmd

    def push(fd, value, flags=0):
        # a key_size-0 map needs a NULL key (syscall.c: ___bpf_copy_key), which map_update
        # cannot express
        v = sc._cbuf(value)
        sc.bpf(Cmd.MAP_UPDATE_ELEM, sc.MapElemAttr(map_fd=fd, key=0, value=sc._addr(v), flags=flags))

    for mtype in (T.QUEUE, T.STACK):
        fd = sc.map_create(int(mtype), 0, 8, 3, name="q")
        em = mk(FakeKernel(), mtype, 0, 8, 3)
        try:
            for i in range(1, 4):
                push(fd, u64(i))
                em.update(None, u64(i))
            push(fd, u64(4), BPF_EXIST)
            em.update(None, u64(4), BPF_EXIST)
            assert [sc.map_lookup_and_delete(fd, None, 8) for _ in range(3)] == \
                [em.lookup_and_delete(None) for _ in range(3)]
        finally:
            sc.close(fd)


def test_zero_seed_order_is_bucket_order(k):
    from bpfsim.runtime.maps.jhash import htab_hash, jhash, jhash2

    assert jhash(b"") == 0xDEADBEEF
    assert jhash2((1, 2, 3, 4)) == htab_hash(struct.pack("<4I", 1, 2, 3, 4))
    h = mk(k, T.HASH, 4, 8, 8, BPF_F_ZERO_SEED)
    for i in range(8):
        h.update(u32(i), u64(i))
    keys = list(h.iter_keys())
    buckets = [htab_hash(x) & 7 for x in keys]
    assert buckets == sorted(buckets) and sorted(keys) == [u32(i) for i in range(8)]


@pytest.mark.kernel
@pytest.mark.parametrize("mtype,ks", [(T.HASH, 4), (T.HASH, 6), (T.HASH, 13), (T.HASH, 16),
                                      (T.LRU_HASH, 8), (T.PERCPU_HASH, 4)])
def test_zero_seed_order_matches_kernel(mtype, ks):
    """BPF_F_ZERO_SEED makes the kernel's bucket order knowable: get_next_key must agree,
    through inserts, replacements (which move a key to its bucket's head) and deletes."""
    _skip_without_kernel()
    import random

    from bpfsim.kernel import syscall as sc

    rnd = random.Random(ks)
    vs = 8
    uvs = vs * 2 if mtype == T.PERCPU_HASH else vs
    fd = sc.map_create(int(mtype), ks, vs, 64, flags=BPF_F_ZERO_SEED, name="zs")
    kern = FakeKernel()
    em = mk(kern, mtype, ks, vs, 64, BPF_F_ZERO_SEED)
    pool = [bytes(rnd.randrange(256) for _ in range(ks)) for _ in range(80)]
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        for _ in range(150):
            key = rnd.choice(pool)
            if rnd.random() < 0.25:
                want = _kernel_errno(sc.map_delete, fd, key)
                got = errno_of(em.delete, key)
            else:
                want = _kernel_errno(sc.map_update, fd, key, bytes(uvs))
                got = errno_of(em.update, key, bytes(uvs))
            assert got == want
        order, key = [], None
        while (key := sc.map_get_next_key(fd, key, ks)) is not None:
            order.append(key)
        assert list(em.iter_keys()) == order
    finally:
        os.sched_setaffinity(0, old)
        sc.close(fd)


@pytest.mark.kernel
@pytest.mark.parametrize("vs,extra", [(4, 3), (6, 0), (16, 2)])
def test_zero_seed_bloom_matches_kernel(vs, extra):
    """With BPF_F_ZERO_SEED the bloom filter's bitset (and its false positives) is the kernel's."""
    _skip_without_kernel()
    import random

    from bpfsim.errors import KernelError
    from bpfsim.kernel import syscall as sc
    from bpfsim.uapi.constants import Cmd

    def call(cmd, fd, value):
        v = sc._cbuf(value)
        try:
            sc.bpf(cmd, sc.MapElemAttr(map_fd=fd, key=0, value=sc._addr(v)))
        except KernelError as e:
            return e.errno
        return 0

    rnd = random.Random(vs)
    fd = sc.map_create(int(T.BLOOM_FILTER), 0, vs, 5, flags=BPF_F_ZERO_SEED, map_extra=extra, name="bf")
    em = mk(FakeKernel(), T.BLOOM_FILTER, 0, vs, 5, BPF_F_ZERO_SEED, extra)
    try:
        for _ in range(8):
            v = bytes(rnd.randrange(256) for _ in range(vs))
            assert call(Cmd.MAP_UPDATE_ELEM, fd, v) == 0
            em.update(None, v)
        positives = 0
        for _ in range(500):
            v = bytes(rnd.randrange(256) for _ in range(vs))
            kernel_has = call(Cmd.MAP_LOOKUP_ELEM, fd, v) == 0
            assert em.contains(v) == kernel_has
            positives += kernel_has
        assert positives > 0          # false positives happen, and happen alike
    finally:
        sc.close(fd)


def test_emulator_memory_cap_is_enomem() -> None:
    """A map whose preallocation exceeds Runtime(max_map_bytes=...) fails like an allocation
    failure (-ENOMEM) instead of exhausting the Python process."""
    k = FakeKernel()
    k.max_map_bytes = 1 << 20
    with pytest.raises(MapError) as exc:
        mk(k, T.ARRAY, 4, 8, 1 << 20)
    assert exc.value.errno == 12
    mk(k, T.HASH, 4, 8, 1 << 20, flags=1)          # BPF_F_NO_PREALLOC: allocated on demand
