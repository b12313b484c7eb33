"""Special fields in map values: timers and spin locks (bpf_timer.md sections 1 and 10).

Creation rules (syscall.c: map_check_btf), the copy rules (copy_map_value never writes them,
user lookups return them zeroed: check_and_init_map_value, checked with bpftool on 6.18), and
when a map frees an element's timer (cancel_and_free on delete, replace, LRU eviction, array
update with any flags; a BPF_F_LOCK hash update keeps it).
"""

from __future__ import annotations

import errno
import struct

import pytest

from bpfsim.btf.types import SpecialField
from bpfsim.errors import MapError, MemoryFault
from bpfsim.runtime.maps import create_map
from bpfsim.spec.collection import MapSpec
from bpfsim.uapi.constants import (
    BPF_ANY,
    BPF_EXIST,
    BPF_F_LOCK,
    BPF_F_NO_PREALLOC,
    BPF_F_RDONLY,
    BPF_F_RDONLY_PROG,
    BPF_F_WRONLY_PROG,
    MapType,
)
from bpfsim.vm.memory import AddressSpace

T = MapType
ENOTSUPP = 524

# value layouts (type ids of the stub BTF): 1 = u32 key, 2 = {lock@0, timer@8} 24 bytes,
# 3 = {u64 a, timer@8} 24 bytes, 4 = {timer@0, timer@16} 32 bytes (two timers: no record)
SIZES = {1: 4, 2: 24, 3: 24, 4: 32}
FIELDS = {
    2: [SpecialField("bpf_spin_lock", 0, 4), SpecialField("bpf_timer", 8, 16)],
    3: [SpecialField("bpf_timer", 8, 16)],
    4: [],
}


class StubBtf:
    def size_of(self, tid: int) -> int:
        return SIZES[tid]

    def special_fields(self, tid: int, value_size: int | None = None) -> list[SpecialField]:
        return FIELDS.get(tid, [])


class FakeTimers:
    """Records what the maps ask of the TimerManager."""

    def __init__(self) -> None:
        self.freed: list = []
        self.released: list = []

    def cancel_and_free(self, slot) -> None:
        self.freed.append(slot)
        slot.timer = None

    def release_map(self, m) -> None:
        self.released.append(m)
        for s in m.timer_slots():
            if s.timer is not None:
                self.cancel_and_free(s)


class FakeKernel:
    def __init__(self) -> None:
        self.mem = AddressSpace()
        self.ncpus = 2
        self.timers = FakeTimers()
        self.cpu = 0


@pytest.fixture
def k():
    return FakeKernel()


def u32(x: int) -> bytes:
    return struct.pack("<I", x)


def mk(k, mtype, vtid, me=4, flags=0):
    spec = MapSpec("m", int(mtype), 4, SIZES[vtid], me, flags=flags, key_type_id=1, value_type_id=vtid)
    return create_map(k, spec, StubBtf())


def arm(m, key: bytes):
    """Pretend a program initialized the element's timer (bpf_timer_init)."""
    kaddr = m.mem.map(bytearray(key))
    e = m.prog_lookup(kaddr.base)
    assert e
    from bpfsim.runtime.maps import element_at

    elem, _ = element_at(m.mem, e)
    elem.timer_slot.timer = object()
    return elem.timer_slot, e


def errno_of(fn, *a):
    try:
        fn(*a)
    except MapError as e:
        return e.errno
    return 0


# -- creation -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mtype,vtid,flags,want", [
    (T.HASH, 3, 0, 0),
    (T.HASH, 3, BPF_F_NO_PREALLOC, 0),
    (T.LRU_HASH, 3, 0, 0),
    (T.ARRAY, 3, 0, 0),
    (T.PERCPU_HASH, 3, 0, errno.EOPNOTSUPP),        # bpf_timer.md 1.5 (checked on 6.18)
    (T.PERCPU_ARRAY, 3, 0, errno.EOPNOTSUPP),
    (T.LRU_PERCPU_HASH, 3, 0, errno.EOPNOTSUPP),
    (T.LRU_HASH, 2, 0, errno.EOPNOTSUPP),           # bpf_spin_lock: HASH/ARRAY/storages only
    (T.HASH, 3, BPF_F_RDONLY_PROG, errno.EACCES),
    (T.HASH, 3, BPF_F_WRONLY_PROG, errno.EACCES),
    (T.HASH, 3, BPF_F_RDONLY, 0),                   # the user-side flag is fine
    (T.PERCPU_ARRAY, 4, 0, 0),                      # two timers: no record, plain bytes
])
def test_special_field_map_types(k, mtype, vtid, flags, want):
    assert errno_of(mk, k, mtype, vtid, 4, flags) == want


def test_btf_size_mismatch(k):
    spec = MapSpec("m", int(T.HASH), 4, 16, 4, key_type_id=1, value_type_id=3)
    with pytest.raises(MapError) as e:
        create_map(k, spec, StubBtf())
    assert e.value.errno == errno.EINVAL


def test_freeze_refused_with_special_fields(k):
    assert errno_of(mk(k, T.ARRAY, 3).freeze) == ENOTSUPP     # map_freeze: record present


# -- copies ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mtype", [T.HASH, T.ARRAY, T.LRU_HASH])
def test_timer_bytes_never_written_and_read_as_zero(k, mtype):
    m = mk(k, mtype, 3)
    m.update(u32(1), b"\xff" * 24)
    assert m.lookup(u32(1)) == b"\xff" * 8 + bytes(16)
    slot, addr = arm(m, u32(1))
    region, off = k.mem.find(addr)
    assert bytes(region.buf[off + 8:off + 24]) == bytes(16)      # never copied in
    assert k.mem.load(addr, 8) == (1 << 64) - 1
    with pytest.raises(MemoryFault):                            # Region.guards
        k.mem.load(addr + 8, 8)
    with pytest.raises(MemoryFault):
        k.mem.store(addr + 16, 4, 0)


def test_timer_slot_layout(k):
    h = mk(k, T.HASH, 3)
    h.update(u32(7), bytes(24))
    slot, addr = arm(h, u32(7))
    assert slot.map is h and slot.value_addr == addr
    assert k.mem.read(slot.key_addr, 4) == u32(7)        # hash: the element's key storage
    region, off = k.mem.find(addr + 8)
    assert region.owner.timer_slot_at(off) is slot
    assert region.owner.timer_slot_at(off - 8) is None
    a = mk(k, T.ARRAY, 3)
    slot, addr = arm(a, u32(1))
    assert k.mem.read(slot.key_addr, 4) == u32(1)        # array: a u32 holding the index


# -- when the timer is freed ------------------------------------------------------------------------
def test_hash_replace_frees_old_timer_and_new_element_is_uninit(k):
    h = mk(k, T.HASH, 3)
    h.update(u32(1), bytes(24))
    slot, addr = arm(h, u32(1))
    h.update(u32(1), b"\1" * 24)
    assert k.timers.freed == [slot]
    new_slot, new_addr = None, None
    kaddr = k.mem.map(bytearray(u32(1)))
    new_addr = h.prog_lookup(kaddr.base)
    assert new_addr != addr
    from bpfsim.runtime.maps import element_at

    new_slot = element_at(k.mem, new_addr)[0].timer_slot
    assert new_slot is not slot and new_slot.timer is None


def test_hash_f_lock_update_keeps_timer(k):
    h = mk(k, T.HASH, 2)
    h.update(u32(1), bytes(24))
    slot, addr = arm(h, u32(1))
    h.update(u32(1), b"\2" * 24, BPF_F_LOCK | BPF_EXIST)
    assert k.timers.freed == [] and slot.timer is not None
    assert h.lookup(u32(1), BPF_F_LOCK) == bytes(4) + b"\2" * 4 + bytes(16)
    kaddr = k.mem.map(bytearray(u32(1)))
    assert h.prog_lookup(kaddr.base) == addr                      # updated in place


@pytest.mark.parametrize("flags", [BPF_ANY, BPF_EXIST, BPF_F_LOCK])
def test_array_update_frees_timer_whatever_the_flags(k, flags):
    a = mk(k, T.ARRAY, 2)
    slot, addr = arm(a, u32(0))
    a.update(u32(0), b"\3" * 24, flags)
    assert k.timers.freed == [slot] and slot.timer is None
    kaddr = k.mem.map(bytearray(u32(0)))
    assert a.prog_lookup(kaddr.base) == addr                      # arrays never move


def test_array_prog_update_frees_timer(k):
    a = mk(k, T.ARRAY, 3)
    slot, addr = arm(a, u32(0))
    kaddr = k.mem.map(bytearray(u32(0)))
    src = k.mem.map(bytearray(24))
    assert a.prog_update(kaddr.base, src.base, BPF_ANY) == 0
    assert k.timers.freed == [slot]


@pytest.mark.parametrize("how", ["delete", "lookup_and_delete", "prog_delete"])
def test_hash_delete_frees_timer(k, how):
    h = mk(k, T.HASH, 3, flags=BPF_F_NO_PREALLOC)
    h.update(u32(1), bytes(24))
    slot, _ = arm(h, u32(1))
    if how == "prog_delete":
        kaddr = k.mem.map(bytearray(u32(1)))
        assert h.prog_delete(kaddr.base) == 0
    else:
        getattr(h, how)(u32(1))
    assert k.timers.freed == [slot]
    h.update(u32(1), bytes(24))                                   # re-insert: a fresh, UNINIT slot
    kaddr = k.mem.map(bytearray(u32(1)))
    from bpfsim.runtime.maps import element_at

    assert element_at(k.mem, h.prog_lookup(kaddr.base))[0].timer_slot.timer is None


def test_lru_eviction_frees_timer(k):
    m = mk(k, T.LRU_HASH, 3, me=4)
    m.update(u32(0), bytes(24))
    slot, _ = arm(m, u32(0))
    for i in range(1, 10):
        m.update(u32(i), bytes(24))
    assert u32(0) not in set(m.iter_keys())
    assert slot in k.timers.freed and slot.timer is None


def test_release_uref_frees_every_timer(k):
    a = mk(k, T.ARRAY, 3)
    s0, _ = arm(a, u32(0))
    s1, _ = arm(a, u32(1))
    a.inc()                        # a program holds the map
    a.put_with_uref()              # the last user reference goes
    assert k.timers.released == [a]
    assert s0.timer is None and s1.timer is None
    assert not a.freed
    a.put()
    assert a.freed


def test_percpu_with_two_timers_is_plain_bytes(k):
    pa = mk(k, T.PERCPU_ARRAY, 4)
    pa.update(u32(0), b"\7" * 64)
    assert pa.lookup(u32(0)) == b"\7" * 64
    assert pa.timer_slots() == []
