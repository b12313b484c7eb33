"""Object lifetimes in the emulated kernel (runtime/kobject.py), as syscall.c counts them.

Handles and pins are user references (refcnt + usercnt); programs, outer maps and prog
arrays hold refcnt only.  usercnt -> 0 releases the timers (and clears a prog array);
refcnt -> 0 frees the object and unmaps its memory.  The timer facts are bpf_timer.md
section 3 (checked on 6.18: fd close, GET_FD_BY_ID, pin and unpin).
"""

from __future__ import annotations

import struct

import pytest

from bpfsim.errors import MapError, UsageError
from bpfsim.runtime.handles import Map
from bpfsim.runtime.kobject import BpfProg, live_objects, object_by_id
from bpfsim.runtime.maps import create_map
from bpfsim.runtime.pinfs import PinFS
from bpfsim.spec.collection import MapSpec
from bpfsim.uapi.constants import MapType
from bpfsim.vm.memory import AddressSpace

T = MapType


class Timers:
    def __init__(self) -> None:
        self.released: list = []

    def release_map(self, m) -> None:
        self.released.append(m)

    def cancel_and_free(self, slot) -> None:
        slot.timer = None


class FakeKernel:
    def __init__(self) -> None:
        self.mem = AddressSpace()
        self.ncpus = 2
        self.timers = Timers()
        self.pins = PinFS(self)


@pytest.fixture
def k():
    return FakeKernel()


def u32(x: int) -> bytes:
    return struct.pack("<I", x)


def new_map(k, mtype=T.HASH, name="m", ks=4, vs=4, me=4, inner=None):
    return create_map(k, MapSpec(name, int(mtype), ks, vs, me), None, inner_map=inner)


def test_create_and_close(k):
    m = new_map(k)
    assert (m.refcnt, m.usercnt) == (1, 1)
    h = Map(m)                                  # adopts the creator's reference
    h[1] = 2
    addr = m.address
    assert object_by_id(k, "map", m.id) is m
    h.close()
    assert m.freed and m.usercnt == 0 and m.refcnt == 0
    assert k.timers.released == [m]
    assert k.mem.find(addr) is None            # the descriptor and the elements are unmapped
    assert object_by_id(k, "map", m.id) is None
    h.close()                                   # closing twice is harmless
    with pytest.raises(UsageError, match="closed"):
        h[1]
    with pytest.raises(UsageError, match="closed"):
        _ = h.info


def test_ids_increase_and_are_not_reused(k):
    a = new_map(k, name="a")
    b = new_map(k, name="b")
    assert b.id == a.id + 1
    a.put_with_uref()
    c = new_map(k, name="c")
    assert c.id == b.id + 1
    assert [m.name for m in live_objects(k, "map")] == ["b", "c"]


def test_program_holds_refcnt_not_usercnt(k):
    m = new_map(k)
    prog = BpfProg(k, "p", 3)
    prog.use_map(m)
    prog.use_map(m)                             # once per program
    assert m.refcnt == 2
    m.put_with_uref()                           # the fd is closed
    assert m.usercnt == 0 and k.timers.released == [m]   # timers go at uref 0 ...
    assert not m.freed                          # ... but the program keeps the map
    prog.put()
    assert prog.freed and m.freed


def test_pin_is_a_user_reference(k):
    m = new_map(k)
    h = Map(m)
    h.pin("/sys/fs/bpf/m")
    assert (m.refcnt, m.usercnt) == (2, 2)
    h.close()
    assert k.timers.released == [] and not m.freed
    h2 = Map.from_pin(k.pins.get("/sys/fs/bpf/m"))   # BPF_OBJ_GET: a new user reference
    assert m.usercnt == 2
    k.pins.unpin("/sys/fs/bpf/m")
    assert m.usercnt == 1 and not m.freed
    h2.close()
    assert m.freed and k.timers.released == [m]


def test_usercnt_can_rise_again_while_programs_hold_the_map(k):
    # BPF_MAP_GET_FD_BY_ID after the last fd closed: __bpf_map_inc_not_zero(map, true)
    m = new_map(k)
    m.inc()
    m.put_with_uref()
    h = Map(m, owned=False)
    assert m.usercnt == 1
    h.close()
    assert k.timers.released == [m, m]
    m.put()
    with pytest.raises(UsageError):
        Map(m, owned=False)                    # freed: no new handle


def test_double_put_is_an_error(k):
    m = new_map(k)
    m.put_with_uref()
    with pytest.raises(UsageError):
        m.put()


def test_inner_maps_are_held_by_the_outer_map(k):
    tmpl = new_map(k, T.ARRAY, "tmpl", vs=8, me=2)
    outer = new_map(k, T.ARRAY_OF_MAPS, "outer", me=2, inner=tmpl)
    tmpl.put_with_uref()
    inner = new_map(k, T.ARRAY, "inner", vs=8, me=2)
    ho = Map(outer)
    ho[0] = inner.id                            # user space passes the inner map (an fd)
    assert inner.refcnt == 2 and inner.usercnt == 1
    assert ho[0] == inner.id                    # lookups return the inner map's id
    inner.put_with_uref()                       # close the inner fd: uref 0, timers go
    assert k.timers.released[-1] is inner and not inner.freed
    key = k.mem.map(bytearray(u32(0)))
    assert outer.prog_lookup(key.base) == inner.address
    del ho[0]
    assert inner.freed
    ho.close()
    assert outer.freed


def test_inner_map_template_is_enforced(k):
    tmpl = new_map(k, T.ARRAY, "tmpl", vs=8, me=2)
    outer = new_map(k, T.HASH_OF_MAPS, "outer", me=2, inner=tmpl)
    other = new_map(k, T.ARRAY, "other", vs=8, me=3)     # max_entries differs
    with pytest.raises(MapError) as e:
        outer.update(u32(1), u32(other.id))
    assert e.value.errno == 22 and other.refcnt == 1
    with pytest.raises(MapError) as e:
        outer.update(u32(1), u32(9999))                 # no such map
    assert e.value.errno == 9
    same = new_map(k, T.ARRAY, "same", vs=8, me=2)
    outer.update(u32(1), u32(same.id))
    outer.put_with_uref()
    assert same.refcnt == 1                             # the outer map let go when freed


def test_maps_of_maps_cannot_nest(k):
    tmpl = new_map(k, T.ARRAY, "tmpl", vs=8, me=2)
    outer = new_map(k, T.ARRAY_OF_MAPS, "outer", me=2, inner=tmpl)
    with pytest.raises(MapError):
        new_map(k, T.ARRAY_OF_MAPS, "outer2", me=2, inner=outer)


def test_prog_array_holds_programs_and_is_cleared_at_uref_zero(k):
    pa = new_map(k, T.PROG_ARRAY, "jmp", me=4)
    p1, p2 = BpfProg(k, "a", 3), BpfProg(k, "b", 3)
    xdp = BpfProg(k, "x", 6)
    pa.update(u32(0), u32(p1.id))
    pa.update(u32(1), u32(p2.id))
    assert p1.refcnt == 2 and pa.prog_at(0) is p1
    with pytest.raises(MapError):
        pa.update(u32(2), u32(xdp.id))                   # bpf_prog_map_compatible
    assert pa.lookup(u32(1)) == u32(p2.id)
    with pytest.raises(MapError):
        pa.update(u32(2), u32(p1.id), 1)                 # fd arrays take BPF_ANY only
    pa.delete(u32(1))
    assert p2.refcnt == 1
    pa.inc()                                             # a program holding the prog array
    pa.put_with_uref()                                   # prog_array_map_clear
    assert pa.prog_at(0) is None and p1.refcnt == 1
    pa.put()


def test_handle_is_a_context_manager(k):
    m = new_map(k)
    with Map(m) as h:
        h[3] = 4
    assert m.freed
