"""The emulated kernel's clocks, and what drives timer expiry: a virtual clock and a real one.

Job: answer `now(clockid)` for CLOCK_MONOTONIC, CLOCK_BOOTTIME, CLOCK_REALTIME and CLOCK_TAI
(what `bpf_ktime_get_*_ns` read), and decide *when* the timer manager's softirq runs:

* `VirtualClock` (the default): time stands still until the test moves it.  `advance(ns)`
  fires every due timer in deadline order, each at its own deadline (a callback's
  `bpf_ktime_get_ns` reads that deadline), including timers armed by callbacks meanwhile.
* `RealClock`: the host's clocks; one background thread per emulated CPU fires timers at
  their real deadlines, like soft hrtimers, holding `kernel.cpu_locks[cpu]` while a callback
  runs so it never overlaps a program or another callback on that CPU.

The queue itself (which timer is due, the hrtimer walk) lives in `timers.py`; a clock only
owns time.  Must not import `vm`, `kernel` or the maps.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from bpfsim.errors import ExecutionError, UsageError
from bpfsim.uapi.constants import CLOCK_BOOTTIME, CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_TAI


def _as_ns(value: Any, what: str) -> int:
    """A time in nanoseconds from the caller: an int (or float); anything else (a "30s"
    string, None) is a UsageError rather than int()'s ValueError/TypeError."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    raise UsageError(f"{what} takes nanoseconds (e.g. bpfsim.ms(5)), not {value!r}")

if TYPE_CHECKING:
    from bpfsim.runtime.timers import TimerManager

CLOCK_IDS = (CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME, CLOCK_TAI)
CLOCK_NAMES = {CLOCK_REALTIME: "realtime", CLOCK_MONOTONIC: "monotonic",
               CLOCK_BOOTTIME: "boottime", CLOCK_TAI: "tai"}

# A machine that booted about 3 h 25 min ago, on 2026-01-01 00:00:00 UTC: plausible values a
# program may print or compare, and the same in every run.
DEFAULT_MONOTONIC_NS = 12_345_678_901_234
DEFAULT_REALTIME_NS = 1_767_225_600_000_000_000
TAI_OFFSET_NS = 37_000_000_000           # TAI - UTC since 2017 (the kernel's default is 0
                                         # until NTP sets it; 37 s is what a synced host shows)
DEFAULT_FIRING_LIMIT = 1_000_000          # advance(): a callback chain re-arming at 0 ns
DEFAULT_IDLE_LIMIT = 100_000              # run_until_idle()


class Clock:
    """Base: `now(clockid)` from a monotonic reading plus per-clock offsets.

    Subclasses supply `_monotonic()` and how timers are driven.  `bind(timers, kernel)` is
    called once by the TimerManager (the Runtime constructs the clock first).
    """

    kind = "base"

    def __init__(self) -> None:
        self._timers: TimerManager | None = None
        self._kernel: Any = None

    def bind(self, timers: TimerManager, kernel: Any) -> None:
        """Attach the timer queue this clock drives (one runtime per clock)."""
        if self._timers is not None and self._timers is not timers:
            raise UsageError("a clock drives the timers of one runtime only")
        self._timers = timers
        self._kernel = kernel

    # -- reading ---------------------------------------------------------------------------
    def _monotonic(self) -> int:
        raise NotImplementedError

    def offset(self, clockid: int) -> int:
        """`now(clockid) - now(CLOCK_MONOTONIC)` (the kernel's `base->offset`)."""
        raise NotImplementedError

    def now(self, clockid: int = CLOCK_MONOTONIC) -> int:
        """The clock `clockid` in nanoseconds (CLOCK_MONOTONIC when omitted)."""
        if clockid not in CLOCK_IDS:
            raise UsageError(f"unknown clock id {clockid}")
        return self._monotonic() + self.offset(clockid)

    def monotonic(self) -> int:
        return self.now(CLOCK_MONOTONIC)

    def boottime(self) -> int:
        return self.now(CLOCK_BOOTTIME)

    def realtime(self) -> int:
        return self.now(CLOCK_REALTIME)

    def tai(self) -> int:
        return self.now(CLOCK_TAI)

    # -- driving timers ----------------------------------------------------------------------
    def next_deadline(self) -> int | None:
        """CLOCK_MONOTONIC time of the earliest pending timer that can fire, or None."""
        if self._timers is None:
            return None
        nxt = self._timers.next_event()
        return None if nxt is None else nxt[0]

    def timers_changed(self) -> None:
        """Called by the TimerManager (holding its lock) after a queue changed."""

    def in_firing_context(self) -> bool:
        """True while this clock is inside a firing loop on the calling thread."""
        return False

    def close(self) -> None:
        """Stop any background activity (idempotent)."""


class VirtualClock(Clock):
    """Time under the test's control.  Nothing fires until `advance`, `advance_to`, `suspend`
    or `run_until_idle` is called; then every due timer fires at its own deadline."""

    kind = "virtual"

    def __init__(self, start_ns: int = DEFAULT_MONOTONIC_NS, *, realtime_ns: int = DEFAULT_REALTIME_NS,
                 firing_limit: int = DEFAULT_FIRING_LIMIT) -> None:
        super().__init__()
        if start_ns < 0:
            raise UsageError("the monotonic clock cannot start below 0")
        self._mono = int(start_ns)
        self._suspended = 0                               # BOOTTIME - MONOTONIC
        self._real_offset = int(realtime_ns) - self._mono  # REALTIME - MONOTONIC
        self.firing_limit = firing_limit
        self._firing = threading.local()

    def _monotonic(self) -> int:
        return self._mono

    def offset(self, clockid: int) -> int:
        if clockid == CLOCK_MONOTONIC:
            return 0
        if clockid == CLOCK_BOOTTIME:
            return self._suspended
        if clockid == CLOCK_REALTIME:
            return self._real_offset
        if clockid == CLOCK_TAI:
            return self._real_offset + TAI_OFFSET_NS
        raise UsageError(f"unknown clock id {clockid}")

    def in_firing_context(self) -> bool:
        return getattr(self._firing, "active", False)

    def set_realtime(self, ns: int) -> None:
        """Set the wall clock (like settimeofday); MONOTONIC/BOOTTIME and timers are unaffected
        (bpf timers on CLOCK_REALTIME run on the MONOTONIC base, spec §7)."""
        self._real_offset = _as_ns(ns, "set_realtime()") - self._mono

    def advance(self, ns: int) -> int:
        """Move time forward by `ns` and fire what became due; returns the number fired."""
        ns = _as_ns(ns, "advance()")
        if ns < 0:
            raise UsageError("time cannot go backwards: advance() needs ns >= 0")
        return self.advance_to(self._mono + ns)

    def advance_to(self, t: int, *, limit: int | None = None) -> int:
        """Move CLOCK_MONOTONIC to `t` (>= now), firing every timer due on the way."""
        t = _as_ns(t, "advance_to()")
        if t < self._mono:
            raise UsageError(f"time cannot go backwards: {t} < now {self._mono}")
        fired = self._fire_until(t, limit if limit is not None else self.firing_limit)
        self._mono = t
        return fired

    def run_until_idle(self, limit: int = DEFAULT_IDLE_LIMIT) -> int:
        """Advance from deadline to deadline until no timer can fire any more; returns the
        number fired.  A chain that re-arms forever raises ExecutionError after `limit`."""
        return self._fire_until(None, limit)

    def suspend(self, ns: int) -> int:
        """Suspend the machine for `ns`: BOOTTIME (and REALTIME) move on, MONOTONIC does not.
        A BOOTTIME timer that came due during the suspend fires at resume."""
        ns = _as_ns(ns, "suspend()")
        if ns < 0:
            raise UsageError("suspend() needs ns >= 0")
        if self.in_firing_context():
            raise UsageError("the machine cannot be suspended from inside a timer callback")
        self._suspended += ns
        self._real_offset += ns
        return self.advance_to(self._mono)

    def _fire_until(self, target: int | None, limit: int) -> int:
        timers = self._timers
        if timers is None:
            return 0
        if self.in_firing_context():
            raise UsageError("the virtual clock cannot be advanced from inside a timer callback")
        fired = 0
        self._firing.active = True
        try:
            while True:
                nxt = timers.next_event()
                if nxt is None:
                    break
                deadline, cpu = nxt
                if target is not None and deadline > target:
                    break
                # A callback reads its own deadline; a BOOTTIME timer that came due during a
                # suspend fires at resume (its deadline is in the past).
                self._mono = max(self._mono, deadline)
                # A walk can itself loop (a callback re-arming with an absolute past expiry).
                fired += timers.run_softirq(cpu, limit=limit - fired + 1)
                if fired > limit:
                    raise ExecutionError(
                        f"timer callbacks fired more than {limit} times without the clock "
                        f"reaching {'idle' if target is None else target}: a callback keeps "
                        "re-arming (raise the limit if this is intended)")
        finally:
            self._firing.active = False
        return fired

    def __repr__(self) -> str:
        return f"<VirtualClock monotonic={self._mono} suspended={self._suspended}>"


_HOST_CLOCKS = {CLOCK_MONOTONIC: time.CLOCK_MONOTONIC, CLOCK_BOOTTIME: getattr(time, "CLOCK_BOOTTIME", 7),
                CLOCK_REALTIME: time.CLOCK_REALTIME, CLOCK_TAI: getattr(time, "CLOCK_TAI", 11)}


class RealClock(Clock):
    """The host's clocks; timers fire by themselves at real deadlines.

    One daemon thread per emulated CPU plays that CPU's HRTIMER_SOFTIRQ: it sleeps until the
    CPU's earliest deadline, takes `kernel.cpu_locks[cpu]` (so the callback never overlaps a
    program or another callback on that CPU), and runs the hrtimer walk.  `close()` stops and
    joins the threads.
    """

    kind = "real"

    def __init__(self) -> None:
        super().__init__()
        self._threads: list[threading.Thread] = []
        self._stop = False
        self._local = threading.local()
        self.errors: list[BaseException] = []   # exceptions raised by callbacks (kept, logged)

    def _monotonic(self) -> int:
        return time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    def now(self, clockid: int = CLOCK_MONOTONIC) -> int:
        if clockid not in CLOCK_IDS:
            raise UsageError(f"unknown clock id {clockid}")
        return time.clock_gettime_ns(_HOST_CLOCKS[clockid])

    def offset(self, clockid: int) -> int:
        if clockid == CLOCK_MONOTONIC:
            return 0
        host = _HOST_CLOCKS[clockid]
        a = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        b = time.clock_gettime_ns(host)
        c = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        return b - (a + c) // 2

    def bind(self, timers: TimerManager, kernel: Any) -> None:
        super().bind(timers, kernel)
        if self._threads:
            return
        ncpus = int(getattr(kernel, "ncpus", 1) or 1)
        for cpu in range(ncpus):
            th = threading.Thread(target=self._worker, args=(cpu,), name=f"bpfsim-hrtimer/{cpu}",
                                  daemon=True)
            self._threads.append(th)
            th.start()

    def in_firing_context(self) -> bool:
        return getattr(self._local, "active", False)

    def advance(self, ns: int) -> int:
        """Let `ns` of real time pass (sleep); returns the number of callbacks fired meanwhile."""
        ns = _as_ns(ns, "advance()")
        if ns < 0:
            raise UsageError("time cannot go backwards: advance() needs ns >= 0")
        return self.advance_to(self._monotonic() + ns)

    def advance_to(self, t: int) -> int:
        """Sleep until CLOCK_MONOTONIC reaches `t`; returns the number of callbacks fired."""
        t = _as_ns(t, "advance_to()")
        if self.in_firing_context():
            raise UsageError("the clock cannot be advanced from inside a timer callback")
        timeline = getattr(self._timers, "timeline", None)
        before = len(timeline.events("fire")) if timeline is not None else 0
        while True:
            left = int(t) - self._monotonic()
            if left <= 0:
                break
            time.sleep(left / 1e9)
        return (len(timeline.events("fire")) - before) if timeline is not None else 0

    def suspend(self, ns: int) -> int:
        raise UsageError("the real clock cannot suspend the host; use the virtual clock")

    def run_until_idle(self, limit: int = DEFAULT_IDLE_LIMIT) -> int:
        raise UsageError("run_until_idle needs the virtual clock (real timers fire by themselves)")

    def timers_changed(self) -> None:
        if self._timers is not None:
            self._timers.cond.notify_all()

    def _cpu_lock(self, cpu: int) -> Any:
        locks = getattr(self._kernel, "cpu_locks", None)
        if locks is None:
            if not hasattr(self, "_own_locks"):
                self._own_locks = [threading.RLock() for _ in range(max(1, len(self._threads)))]
            locks = self._own_locks
        return locks[cpu]

    def _worker(self, cpu: int) -> None:
        timers = self._timers
        assert timers is not None
        self._local.active = True
        while True:
            with timers.cond:
                while not self._stop:
                    nxt = timers.next_event(cpu)
                    if nxt is None:
                        timers.cond.wait()
                        continue
                    delay = nxt[0] - self._monotonic()
                    if delay > 0:
                        timers.cond.wait(delay / 1e9)
                        continue
                    break
                if self._stop:
                    return
            # Lock order: the CPU lock first, then the manager lock (inside run_softirq); a
            # program on this CPU holds its CPU lock and then takes the manager lock too.
            with self._cpu_lock(cpu):
                if self._stop:
                    return
                try:
                    timers.run_softirq(cpu)
                except BaseException as exc:  # noqa: BLE001 - a faulting callback must not kill the CPU
                    self.errors.append(exc)

    def close(self) -> None:
        """Stop the CPU threads and wait for them (a running callback finishes first)."""
        self._stop = True
        if self._timers is not None:
            with self._timers.cond:
                self._timers.cond.notify_all()
        me = threading.current_thread()
        for th in self._threads:
            if th is not me:
                th.join()
        self._threads = [th for th in self._threads if th.is_alive()]

    def __repr__(self) -> str:
        return f"<RealClock threads={len(self._threads)}>"
