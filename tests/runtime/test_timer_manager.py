"""The TimerManager's rules (spec bpf_timer.md §2-§7, §10-§11) on a stub kernel.

The stub replaces the VM with Python callbacks so every rule is checked without clang, ELF
or the interpreter; the BPF-level twins live in test_timer_programs.py.
"""

from __future__ import annotations

import threading

import pytest

from bpfsim.errors import ExecutionError
from bpfsim.runtime.clock import VirtualClock
from bpfsim.runtime.kobject import BpfMap, BpfProg
from bpfsim.runtime.timers import KTIME_MAX_CLAMP, TimerManager, TimerSlot
from bpfsim.uapi.constants import (
    BPF_F_TIMER_ABS,
    BPF_F_TIMER_CPU_PIN,
    CLOCK_BOOTTIME,
    CLOCK_MONOTONIC,
    CLOCK_REALTIME,
    EBUSY,
    EDEADLK,
    EINVAL,
    EPERM,
)
from bpfsim.units import ms, s
from bpfsim.vm.memory import AddressSpace

U64_MAX = (1 << 64) - 1


class StubKernel:
    """Just enough of Runtime for the TimerManager: mem, clock, ncpus, run_callback."""

    def __init__(self, ncpus: int = 2) -> None:
        self.mem = AddressSpace()
        self.ncpus = ncpus
        self.cpu_locks = [threading.RLock() for _ in range(ncpus)]
        self.clock = VirtualClock()
        self.callbacks: dict[int, object] = {}
        self.timers = TimerManager(self)

    def run_callback(self, prog, fn, args, cpu):
        return self.callbacks[fn](cpu, *args)


class Map(BpfMap):
    def __init__(self, kernel, name="m", map_type=1, key_size=4):
        super().__init__(kernel, name)
        self.type = map_type
        self.key_size = key_size
        self.region = kernel.mem.map(bytearray(8), name=name, kind="map", writable=False, owner=self)
        self.slots = []

    def slot(self, key: int) -> TimerSlot:
        kr = self.kernel.mem.map(bytearray(key.to_bytes(4, "little")), name="k", owner=self)
        vr = self.kernel.mem.map(bytearray(32), name="v", owner=self)
        sl = TimerSlot(self, kr.base, vr.base)
        self.slots.append(sl)
        return sl

    def timer_slots(self):
        return self.slots


@pytest.fixture
def k():
    kern = StubKernel()
    yield kern
    kern.timers.close()


def setup(k, slot, fn, prog=None, clock=CLOCK_MONOTONIC):
    """init + set_callback with a Python callback `fn(cpu, map, key, value)`; returns prog."""
    prog = prog or BpfProg(k, "p")
    fid = 0xFF00000000 + len(k.callbacks) + 1
    k.callbacks[fid] = fn
    assert k.timers.init(slot, slot.map, clock, cpu=0) == 0
    assert k.timers.set_callback(slot, fid, prog, cpu=0) == 0
    return prog


def test_init_flags_order_and_ebusy(k):
    m = Map(k)
    sl = m.slot(0)
    for bad in (2, 3, 4, 5, 6, 8, 9, 11, 15, 0x10, 1 << 32):
        assert k.timers.init(sl, m, bad) == -EINVAL
    assert sl.timer is None
    for good in (CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME):
        s2 = m.slot(good)
        assert k.timers.init(s2, m, good) == 0
        assert k.timers.init(s2, m, good) == -EBUSY
        assert k.timers.init(s2, m, 0x10) == -EINVAL      # flags before "already initialized"


def test_init_eperm_without_user_reference(k):
    m = Map(k)
    m.inc()                       # a program's reference (refcnt only)
    m.put_with_uref()             # the creator's fd closes: usercnt 0
    sl = m.slot(0)
    assert k.timers.init(sl, m, CLOCK_MONOTONIC) == -EPERM
    assert sl.timer is None
    assert m.inc_uref_not_zero()  # BPF_MAP_GET_FD_BY_ID raises it again
    assert k.timers.init(sl, m, CLOCK_MONOTONIC) == 0


def test_set_callback_and_start_need_init_and_callback(k):
    m = Map(k)
    sl = m.slot(0)
    p = BpfProg(k, "p")
    assert k.timers.set_callback(sl, 0xFF00000001, p) == -EINVAL
    assert k.timers.start(sl, 0, 4, cpu=0) == -EINVAL       # reserved flag, even uninit
    assert k.timers.start(sl, 0, 0, cpu=0) == -EINVAL       # uninit
    assert k.timers.init(sl, m, CLOCK_MONOTONIC) == 0
    assert k.timers.start(sl, 0, 0, cpu=0) == -EINVAL       # no callback
    assert k.timers.cancel(sl, cpu=0) == 0


def test_fires_at_deadline_once_and_callback_args(k):
    m = Map(k)
    sl = m.slot(7)
    seen = []
    setup(k, sl, lambda cpu, mp, key, val: seen.append((k.clock.now(), cpu, mp, k.mem.load(key, 4), val)))
    t0 = k.clock.now()
    assert k.timers.start(sl, ms(10), 0, cpu=1) == 0
    assert k.clock.next_deadline() == t0 + ms(10)
    assert k.clock.advance(ms(9)) == 0 and seen == []
    assert k.clock.advance(ms(5)) == 1
    assert seen == [(t0 + ms(10), 1, m.region.base, 7, sl.value_addr)]
    assert k.clock.now() == t0 + ms(14)
    assert k.clock.advance(s(10)) == 0                        # one-shot
    assert k.timers.start(sl, 0, 0, cpu=0) == 0               # firing keeps the callback
    assert k.clock.advance(0) == 1


def test_restart_replaces_expiry_and_set_callback_at_expiry_wins(k):
    m = Map(k)
    sl = m.slot(0)
    seen = []
    setup(k, sl, lambda cpu, *a: seen.append("old"))
    k.callbacks[0xFF000000AA] = lambda cpu, *a: seen.append(("new", k.clock.now()))
    t0 = k.clock.now()
    k.timers.start(sl, s(1), 0, cpu=0)
    k.timers.start(sl, ms(5), 0, cpu=0)
    k.timers.set_callback(sl, 0xFF000000AA, sl.timer.prog)
    k.clock.advance(s(2))
    assert seen == [("new", t0 + ms(5))]


def test_self_rearm_chain_and_run_until_idle_limit(k):
    m = Map(k)
    sl = m.slot(0)
    times = []

    def cb(cpu, mp, key, val):
        times.append(k.clock.now())
        if len(times) <= 5:
            assert k.timers.start(sl, ms(1), 0, cpu=cpu) == 0

    setup(k, sl, cb)
    t0 = k.clock.now()
    k.timers.start(sl, ms(1), 0, cpu=0)
    assert k.clock.run_until_idle() == 6
    assert times == [t0 + ms(i) for i in range(1, 7)]

    forever = m.slot(1)
    setup(k, forever, lambda cpu, *a: k.timers.start(forever, 0, 0, cpu=cpu))
    k.timers.start(forever, 0, 0, cpu=0)
    with pytest.raises(ExecutionError, match="re-arming"):
        k.clock.run_until_idle(limit=50)


def test_ties_fifo_and_restart_moves_behind(k):
    m = Map(k)
    order = []
    slots = [m.slot(i) for i in range(3)]
    for i, sl in enumerate(slots):
        setup(k, sl, lambda cpu, *a, i=i: order.append(i))
    for sl in slots:
        k.timers.start(sl, ms(5), 0, cpu=0)
    k.timers.start(slots[0], ms(5), 0, cpu=0)                 # same deadline: now last
    k.clock.advance(ms(5))
    assert order == [1, 2, 0]


def test_mutual_cancel_tied_first_wins(k):
    m = Map(k)
    a, b = m.slot(0), m.slot(1)
    res = {}
    setup(k, a, lambda cpu, *x: res.setdefault("a", k.timers.cancel(b, cpu)))
    setup(k, b, lambda cpu, *x: res.setdefault("b", k.timers.cancel(a, cpu)))
    k.timers.start(a, ms(1), BPF_F_TIMER_CPU_PIN, cpu=0)
    k.timers.start(b, ms(1), BPF_F_TIMER_CPU_PIN, cpu=1)
    k.clock.advance(ms(1))
    assert res == {"a": 1}


def test_cancel_semantics(k):
    m = Map(k)
    sl = m.slot(0)
    assert k.timers.cancel(sl, 0) == -EINVAL
    res = []
    prog = setup(k, sl, lambda cpu, *a: res.append(k.timers.cancel(sl, cpu)))
    assert prog.refcnt == 2                                    # the timer's reference
    k.timers.start(sl, ms(1), 0, cpu=0)
    k.clock.advance(ms(1))
    assert res == [-EDEADLK]                                   # own callback; not dropped
    assert k.timers.start(sl, ms(1), 0, cpu=0) == 0
    assert k.timers.cancel(sl, 0) == 1
    assert prog.refcnt == 1                                    # cancel drops the prog ref
    assert k.timers.start(sl, ms(1), 0, cpu=0) == -EINVAL      # and the callback
    assert k.timers.init(sl, m, CLOCK_MONOTONIC) == -EBUSY
    assert k.timers.cancel(sl, 0) == 0
    assert k.clock.advance(s(1)) == 0


def test_expiry_arithmetic(k):
    m = Map(k)
    fired = []
    big_rel, max_rel, abs_max, abs_past = (m.slot(i) for i in range(4))
    for name, sl in (("big_rel", big_rel), ("max_rel", max_rel), ("abs_max", abs_max),
                     ("abs_past", abs_past)):
        setup(k, sl, lambda cpu, *a, n=name: fired.append(n))
    k.timers.start(big_rel, 1 << 63, 0, cpu=0)
    k.timers.start(max_rel, (1 << 63) - 1, 0, cpu=0)
    assert big_rel.timer.expires == KTIME_MAX_CLAMP
    k.clock.advance(s(3600))
    assert fired == []
    assert k.timers.cancel(big_rel, 0) == 1 and k.timers.cancel(max_rel, 0) == 1
    k.timers.start(abs_past, 0, BPF_F_TIMER_ABS, cpu=0)
    k.clock.advance(0)
    assert fired == ["abs_past"]


def test_abs_u64_max_quirk(k):
    """A negative absolute expiry is queued at KTIME_MAX but its soft expiry is negative: it
    runs when an earlier timer on the same CPU and base expires (spec §5)."""
    m = Map(k)
    fired = []
    q, trig, other_cpu = m.slot(0), m.slot(1), m.slot(2)
    setup(k, q, lambda cpu, *a: fired.append("quirk"))
    setup(k, trig, lambda cpu, *a: fired.append("trigger"))
    setup(k, other_cpu, lambda cpu, *a: fired.append("other"))
    k.timers.start(q, U64_MAX, BPF_F_TIMER_ABS, cpu=0)
    k.clock.advance(s(10))
    assert fired == []
    k.timers.start(other_cpu, ms(1), 0, cpu=1)
    k.clock.advance(ms(1))
    assert fired == ["other"]
    k.timers.start(trig, ms(1), 0, cpu=0)
    k.clock.advance(ms(1))
    assert fired == ["other", "trigger", "quirk"]
    # A relative 2^63 timer queued ahead at KTIME_MAX stops the walk.
    fired.clear()
    blocker = m.slot(3)
    setup(k, blocker, lambda cpu, *a: fired.append("blocker"))
    k.timers.start(blocker, 1 << 63, 0, cpu=0)
    k.timers.start(q, U64_MAX, BPF_F_TIMER_ABS, cpu=0)
    k.timers.start(trig, ms(1), 0, cpu=0)
    k.clock.advance(ms(1))
    assert fired == ["trigger"]


def test_realtime_runs_on_monotonic_base(k):
    m = Map(k)
    sl = m.slot(0)
    fired = []
    setup(k, sl, lambda cpu, *a: fired.append(k.clock.now()), clock=CLOCK_REALTIME)
    assert sl.timer.base == CLOCK_MONOTONIC
    k.timers.start(sl, k.clock.now(CLOCK_REALTIME) + ms(20), BPF_F_TIMER_ABS, cpu=0)
    k.clock.advance(s(60))
    assert fired == [] and k.timers.cancel(sl, 0) == 1
    setup_cb = sl.timer
    assert setup_cb is not None
    k.timers.set_callback(sl, 0xFF00000001, BpfProg(k, "q"))
    k.timers.start(sl, k.clock.now() + ms(20), BPF_F_TIMER_ABS, cpu=0)
    t = k.clock.now()
    k.clock.advance(ms(20))
    assert fired == [t + ms(20)]


def test_boottime_vs_monotonic_across_suspend(k):
    m = Map(k)
    mono, boot = m.slot(0), m.slot(1)
    fired = []
    setup(k, mono, lambda cpu, *a: fired.append(("mono", k.clock.now())))
    setup(k, boot, lambda cpu, *a: fired.append(("boot", k.clock.now())), clock=CLOCK_BOOTTIME)
    t0 = k.clock.now()
    b0 = k.clock.now(CLOCK_BOOTTIME)
    k.timers.start(mono, s(10), 0, cpu=0)
    k.timers.start(boot, s(10), 0, cpu=0)
    assert k.clock.suspend(s(30)) == 1                        # boottime timer fires at resume
    assert fired == [("boot", t0)]
    assert k.clock.now() == t0 and k.clock.now(CLOCK_BOOTTIME) == b0 + s(30)
    k.clock.advance(s(10))
    assert fired[-1] == ("mono", t0 + s(10))


def test_cancel_and_free_and_release_map(k):
    m = Map(k)
    a, b = m.slot(0), m.slot(1)
    fired = []
    prog = setup(k, a, lambda cpu, *x: fired.append("a"))
    setup(k, b, lambda cpu, *x: fired.append("b"), prog=prog)
    assert prog.refcnt == 3                                    # one ref per timer
    k.timers.start(a, ms(1), 0, cpu=0)
    k.timers.start(b, ms(1), 0, cpu=0)
    k.timers.cancel_and_free(a)
    assert a.timer is None
    k.mem.store(b.value_addr + 16, 8, 0x1234)
    m.put_with_uref()                                          # usercnt -> 0: release_map
    assert b.timer is None and prog.refcnt == 1
    k.clock.advance(s(1))
    assert fired == []
    assert k.mem.load(b.value_addr + 16, 8) == 0x1234          # other bytes stay
    assert k.timers.set_callback(b, 0xFF00000001, prog) == -EINVAL


def test_cancel_and_free_from_own_callback(k):
    m = Map(k)
    sl = m.slot(0)
    setup(k, sl, lambda cpu, *a: k.timers.cancel_and_free(sl))
    k.timers.start(sl, 0, 0, cpu=0)
    assert k.clock.advance(0) == 1
    assert sl.timer is None


def test_timeline_records(k):
    m = Map(k, name="tmap")
    sl = m.slot(3)
    setup(k, sl, lambda cpu, *a: None)
    k.timers.start(sl, ms(1), 0, cpu=1)
    k.clock.advance(ms(1))
    k.timers.cancel(sl, 0)
    k.timers.cancel_and_free(sl)
    evs = [r["event"] for r in k.timers.timeline]
    assert evs == ["init", "set_callback", "start", "fire", "cancel", "free"]
    fire = k.timers.timeline.events("fire")[0]
    assert fire["cpu"] == 1 and fire["map"] == "tmap" and fire["key"] == "03000000"
    import json
    assert json.loads(k.timers.timeline.to_json())[2]["ret"] == 0


def test_irq_exit_fires_only_due_timers_and_not_from_callbacks(k):
    """Process-context programs: a due timer fires right after start (spec: EMP on 6.18)."""
    m = Map(k)
    a, b = m.slot(0), m.slot(1)
    fired = []
    setup(k, a, lambda cpu, *x: fired.append(("a", k.timers.irq_exit(cpu))))
    setup(k, b, lambda cpu, *x: fired.append("b"))
    k.timers.start(b, ms(1), 0, cpu=0)
    assert k.timers.irq_exit(0) == 0 and fired == []
    k.timers.start(a, 0, 0, cpu=0)
    k.timers.start(b, 0, 0, cpu=0)
    assert k.timers.irq_exit(1) == 0                  # nothing due on CPU 1
    assert k.timers.irq_exit(0) == 2
    assert fired == [("a", 0), "b"]                   # no nested softirq inside a callback


def test_init_enomem_fault_injection(k):
    m = Map(k)
    k.timers.max_timers = 1
    assert k.timers.init(m.slot(0), m, CLOCK_MONOTONIC) == 0
    sl = m.slot(1)
    assert k.timers.init(sl, m, CLOCK_MONOTONIC) == -12
    assert k.timers.init(sl, m, 0x20) == -EINVAL          # flags still come first
    assert sl.timer is None


def test_walk_loop_with_absolute_past_rearm_is_guarded(k):
    """A callback re-arming itself with an absolute past expiry would keep one softirq walk
    busy forever (the kernel livelocks too); the virtual clock's limit stops it."""
    m = Map(k)
    sl = m.slot(0)
    setup(k, sl, lambda cpu, *a: k.timers.start(sl, 0, BPF_F_TIMER_ABS, cpu=cpu))
    k.timers.start(sl, 0, BPF_F_TIMER_ABS, cpu=0)
    with pytest.raises(ExecutionError):
        k.clock.run_until_idle(limit=20)


def test_clock_cannot_move_from_inside_a_callback(k):
    from bpfsim.errors import UsageError

    m = Map(k)
    sl = m.slot(0)
    errors = []

    def cb(cpu, *a):
        for move in (lambda: k.clock.advance(1), lambda: k.clock.suspend(1)):
            try:
                move()
            except UsageError as e:
                errors.append(str(e))

    setup(k, sl, cb)
    k.timers.start(sl, ms(1), 0, cpu=0)
    t0, b0 = k.clock.now(), k.clock.now(CLOCK_BOOTTIME)
    k.clock.advance(ms(1))
    assert len(errors) == 2
    assert k.clock.now() == t0 + ms(1) and k.clock.now(CLOCK_BOOTTIME) == b0 + ms(1)
