"""Clocks: the virtual clock's readings and control, and the real clock's firing thread."""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from bpfsim.errors import UsageError
from bpfsim.runtime.clock import (
    DEFAULT_MONOTONIC_NS,
    TAI_OFFSET_NS,
    RealClock,
    VirtualClock,
)
from bpfsim.runtime.kobject import BpfMap, BpfProg
from bpfsim.runtime.timers import TimerManager, TimerSlot
from bpfsim.uapi.constants import CLOCK_BOOTTIME, CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_TAI
from bpfsim.units import ms, s
from bpfsim.vm.memory import AddressSpace


def test_virtual_readings():
    c = VirtualClock()
    assert c.now() == c.now(CLOCK_MONOTONIC) == DEFAULT_MONOTONIC_NS
    assert c.now(CLOCK_BOOTTIME) == c.now()
    assert c.now(CLOCK_TAI) - c.now(CLOCK_REALTIME) == TAI_OFFSET_NS
    real0 = c.now(CLOCK_REALTIME)
    c.advance(ms(5))
    assert c.now() == DEFAULT_MONOTONIC_NS + ms(5)
    assert c.now(CLOCK_REALTIME) == real0 + ms(5)
    c.suspend(s(2))
    assert c.now() == DEFAULT_MONOTONIC_NS + ms(5)
    assert c.now(CLOCK_BOOTTIME) == c.now() + s(2)
    c.advance_to(c.now() + 1)
    with pytest.raises(UsageError):
        c.advance(-1)
    with pytest.raises(UsageError):
        c.advance_to(0)
    with pytest.raises(UsageError):
        c.now(5)
    assert c.next_deadline() is None
    assert c.run_until_idle() == 0


def test_virtual_custom_start():
    c = VirtualClock(start_ns=1000, realtime_ns=5000)
    assert c.now() == 1000 and c.now(CLOCK_REALTIME) == 5000


def test_real_readings_follow_host():
    c = RealClock()
    a = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    b = c.now()
    assert 0 <= b - a < ms(50)
    assert abs(c.now(CLOCK_REALTIME) - time.time_ns()) < ms(50)
    c.close()


class RealKernel:
    def __init__(self, ncpus=2):
        self.mem = AddressSpace()
        self.ncpus = ncpus
        self.cpu_locks = [threading.RLock() for _ in range(ncpus)]
        self.clock = RealClock()
        self.callbacks = {}
        self.timers = TimerManager(self)

    def run_callback(self, prog, fn, args, cpu):
        with self.cpu_locks[cpu]:        # the runtime's run_callback takes it too
            return self.callbacks[fn](cpu, *args)


class Map(BpfMap):
    def __init__(self, kernel):
        super().__init__(kernel, "m")
        self.key_size = 4
        self.type = 1

    def slot(self, i):
        kr = self.kernel.mem.map(bytearray(i.to_bytes(4, "little")), owner=self)
        vr = self.kernel.mem.map(bytearray(16), owner=self)
        return TimerSlot(self, kr.base, vr.base)


def _threads():
    return [t for t in threading.enumerate() if t.name.startswith("bpfsim-hrtimer/")]


def test_real_clock_fires_on_time_and_joins():
    """100 timers of 10 ms fire by themselves, each within 2 ms of its deadline (on an idle
    machine; the figure is printed for the report)."""
    before = len(_threads())
    k = RealKernel()
    assert len(_threads()) == before + 2
    m = Map(k)
    prog = BpfProg(k, "p")
    late: list[int] = []
    cpus: list[int] = []
    done = threading.Event()
    deadlines: dict[int, int] = {}

    def cb(cpu, mp, key, val):
        i = k.mem.load(key, 4)
        late.append(k.clock.now() - deadlines[i])
        cpus.append(cpu)
        if len(late) == 100:
            done.set()

    k.callbacks[0xFF00000001] = cb
    for i in range(100):
        sl = m.slot(i)
        assert k.timers.init(sl, m, CLOCK_MONOTONIC) == 0
        assert k.timers.set_callback(sl, 0xFF00000001, prog) == 0
        cpu = i % 2
        with k.cpu_locks[cpu]:
            deadlines[i] = k.clock.now() + ms(10)
            assert k.timers.start(sl, ms(10), 0, cpu=cpu) == 0
        time.sleep(0.0003)
    assert done.wait(5)
    k.timers.close()
    assert len(_threads()) == before
    mean, worst = statistics.mean(late), max(late)
    print(f"real clock lateness over 100 x 10 ms timers: mean {mean / 1e3:.0f} us, max {worst / 1e3:.0f} us")
    assert min(late) >= 0
    assert worst < 1_000_000_000   # behaviour, not speed: on an idle machine max is ~0.5 ms
    assert sorted(set(cpus)) == [0, 1]


def test_real_clock_start_zero_then_cancel_in_program_returns_1():
    """A program on CPU 0 holds cpu_locks[0]: its 0 ns timer cannot run before it cancels."""
    k = RealKernel()
    m = Map(k)
    sl = m.slot(0)
    fired = []
    k.callbacks[0xFF00000001] = lambda cpu, *a: fired.append(cpu)
    k.timers.init(sl, m, CLOCK_MONOTONIC)
    k.timers.set_callback(sl, 0xFF00000001, BpfProg(k, "p"))
    with k.cpu_locks[0]:
        assert k.timers.start(sl, 0, 0, cpu=0) == 0
        time.sleep(0.01)
        assert k.timers.cancel(sl, 0) == 1
    assert k.timers.set_callback(sl, 0xFF00000001, BpfProg(k, "p")) == 0
    k.timers.start(sl, 0, 0, cpu=1)
    deadline = time.monotonic() + 2
    while not fired and time.monotonic() < deadline:
        time.sleep(0.001)
    assert fired == [1]
    k.timers.close()


def test_real_clock_cancel_waits_for_running_callback():
    k = RealKernel()
    m = Map(k)
    sl = m.slot(0)
    entered, log = threading.Event(), []

    def cb(cpu, *a):
        entered.set()
        time.sleep(0.05)
        log.append("callback done")

    k.callbacks[0xFF00000001] = cb
    k.timers.init(sl, m, CLOCK_MONOTONIC)
    k.timers.set_callback(sl, 0xFF00000001, BpfProg(k, "p"))
    k.timers.start(sl, 0, 0, cpu=1)
    assert entered.wait(2)
    with k.cpu_locks[0]:
        ret = k.timers.cancel(sl, 0)
        log.append(("cancel", ret))
    assert log == ["callback done", ("cancel", 0)]
    k.timers.close()


def test_real_clock_mutual_cancel_one_waits_one_edeadlk():
    """Two timers on different CPUs fire together; each spins 20 ms, then cancels the other.
    The first canceller waits for the other callback and gets 0; the second gets -EDEADLK
    (helpers.c: the `cancelling` counter; spec §6, measured the same way on 6.18)."""
    k = RealKernel()
    m = Map(k)
    a, b = m.slot(0), m.slot(1)
    res: dict[str, int] = {}
    done = threading.Event()
    other = {"a": b, "b": a}

    def make(name):
        def cb(cpu, *args):
            time.sleep(0.02 if name == "a" else 0.03)
            res[name] = k.timers.cancel(other[name], cpu)
            if len(res) == 2:
                done.set()
        return cb

    prog = BpfProg(k, "p")
    for i, (name, sl) in enumerate((("a", a), ("b", b))):
        k.callbacks[0xFF00000010 + i] = make(name)
        k.timers.init(sl, m, CLOCK_MONOTONIC)
        k.timers.set_callback(sl, 0xFF00000010 + i, prog)
    deadline = k.clock.now() + ms(5)
    k.timers.start(a, deadline, 1 | 2, cpu=0)   # ABS | CPU_PIN
    k.timers.start(b, deadline, 1 | 2, cpu=1)
    assert done.wait(2)
    k.timers.close()
    assert res == {"a": 0, "b": -35}


def test_real_clock_advance_sleeps_and_refuses_virtual_only_calls():
    c = RealClock()
    t0 = c.now()
    assert c.advance(ms(5)) == 0
    assert c.now() - t0 >= ms(5)
    with pytest.raises(UsageError):
        c.suspend(1)
    with pytest.raises(UsageError):
        c.run_until_idle()
    with pytest.raises(UsageError):
        c.advance(-1)
    c.close()
