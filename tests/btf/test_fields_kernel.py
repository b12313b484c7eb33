"""`Btf.field_record` against Linux: BTF built with our own serialiser is loaded with
BPF_BTF_LOAD and used to create maps; two observable effects of the kernel's btf_record tell
us what it found:
* a BPF_F_LOCK lookup succeeds only if the record is valid and holds a bpf_spin_lock;
* a PERCPU_ARRAY with the value type fails with EOPNOTSUPP only if the record is valid and
  holds a bpf_timer or a bpf_spin_lock (syscall.c: map_check_btf)."""

from __future__ import annotations

import errno
import os

import pytest

from bpfsim.btf import Btf, BtfType, Member, VarSecinfo

from . import kbpf

ARRAY, PERCPU_ARRAY = 2, 6

pytestmark = pytest.mark.kernel


def _btf() -> tuple[Btf, dict[str, int]]:
    b = Btf()
    i32 = b.add(BtfType("INT", "int", size=4, encoding=1, nr_bits=32))
    u32 = b.add(BtfType("INT", "unsigned int", size=4, nr_bits=32))
    i64 = b.add(BtfType("INT", "long", size=8, encoding=1, nr_bits=64))
    lock = b.add(BtfType("STRUCT", "bpf_spin_lock", size=4, members=[Member("val", u32, 0)]))
    timer = b.add(BtfType("STRUCT", "bpf_timer", size=16))
    timers2 = b.add(BtfType("ARRAY", nelems=2, type=timer, index_type=i32))
    user = b.add(BtfType("TYPE_TAG", "user", type=i32))
    uptr = b.add(BtfType("PTR", type=user))
    iptr = b.add(BtfType("PTR", type=i32))

    def s(name: str, size: int, *members: tuple, kflag: bool = False) -> int:
        return b.add(BtfType("STRUCT", name, size=size, kflag=kflag, members=[Member(*m) for m in members]))

    inner_lock = s("inner_lock", 4, ("l", lock, 0))
    inner_timer = s("inner_timer", 24, ("x", i32, 0), ("t", timer, 64))
    cases = {
        "lock": s("v_lock", 8, ("l", lock, 0), ("x", i32, 32)),
        "timer_lock": s("v_timer_lock", 24, ("t", timer, 0), ("l", lock, 128)),
        "two_timers_lock": s("v_two", 40, ("a", timer, 0), ("b", timer, 128), ("l", lock, 256)),
        "timer_array_lock": s("v_tarr", 40, ("t", timers2, 0), ("l", lock, 256)),
        "nested_lock_bitfield": s("v_bits", 8, ("in", inner_lock, 0), ("a", u32, 32, 3), ("b", u32, 35, 5),
                                  kflag=True),
        "nested_lock": s("v_nl", 8, ("in", inner_lock, 0), ("x", i32, 32)),
        "misaligned_timer": s("v_mis", 20, ("x", i32, 0), ("t", timer, 32)),
        "nested_timer": s("v_nt", 32, ("pad", i64, 0), ("n", inner_timer, 64)),
        "user_tag_timer": s("v_utag", 24, ("p", uptr, 0), ("t", timer, 64)),
        "plain_ptr_timer": s("v_ptr", 24, ("p", iptr, 0), ("t", timer, 64)),
        "timer_only": s("v_t", 16, ("t", timer, 0)),
    }
    vl = b.add(BtfType("VAR", "glock", type=lock, linkage=1))
    vx = b.add(BtfType("VAR", "gx", type=i32, linkage=1))
    cases["datasec_lock"] = b.add(BtfType("DATASEC", ".data", size=8,
                                          vars=[VarSecinfo(vl, 0, 4), VarSecinfo(vx, 4, 4)]))
    cases["_int"] = i32
    return b, cases


@pytest.fixture(scope="module")
def loaded():
    if not kbpf.available():
        pytest.skip("needs root and bpf(2) (bpffs at /sys/fs/bpf)")
    b, cases = _btf()
    fd, log = kbpf.btf_load(b.to_bytes())
    assert fd >= 0, f"kernel refused our serialised BTF ({-fd}):\n{log[-2000:]}"
    yield b, cases, fd
    os.close(fd)


def _kernel_record(b: Btf, cases: dict[str, int], btf_fd: int, name: str) -> tuple[bool, bool]:
    """(kernel's record has a spin lock, kernel's record has a timer or a spin lock)."""
    tid = cases[name]
    size = b.size_of(tid)
    key_tid = 0 if b.type(tid).kind == "DATASEC" else cases["_int"]
    m = kbpf.map_create(ARRAY, 4, size, 1, btf_fd, key_tid, tid)
    assert m >= 0, f"map create {name}: {-m}"
    try:
        r = kbpf.lookup_locked(m, bytes(4), size)
        assert r in (0, -errno.EINVAL)
    finally:
        os.close(m)
    has_lock = r == 0
    has_timer_or_lock = False
    if key_tid:
        p = kbpf.map_create(PERCPU_ARRAY, 4, size, 1, btf_fd, key_tid, tid)
        if p >= 0:
            os.close(p)
        else:
            assert p == -errno.EOPNOTSUPP, f"percpu create {name}: {-p}"
            has_timer_or_lock = True
    return has_lock, has_timer_or_lock


EXPECTED = {   # what we predict, and the kernel must agree (lock, timer, valid)
    "lock": (True, False, True),
    "timer_lock": (True, True, True),
    "two_timers_lock": (False, False, False),
    "timer_array_lock": (False, False, False),
    "nested_lock_bitfield": (False, False, False),
    "nested_lock": (True, False, True),
    "misaligned_timer": (False, False, True),
    "nested_timer": (False, True, True),
    "user_tag_timer": (False, False, False),
    "plain_ptr_timer": (False, True, True),
    "timer_only": (False, True, True),
    "datasec_lock": (True, False, True),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_record_matches_kernel(loaded, name):
    b, cases, fd = loaded
    rec = b.field_record(cases[name])
    ours = (rec.spin_lock_off is not None, rec.timer_off is not None, rec.valid)
    assert ours == EXPECTED[name], rec
    if b.type(cases[name]).kind == "DATASEC":
        assert _kernel_record(b, cases, fd, name)[0] == ours[0]
    else:
        assert _kernel_record(b, cases, fd, name) == (ours[0], ours[0] or ours[1])
