"""bpf_timer, as Linux 6.18 does it: the per-slot state machine and the soft-hrtimer queues.

Job: `TimerManager` (one per Runtime, `kernel.timers`) implements the run-time part of
helpers #169-#172 (kernel/bpf/helpers.c: bpf_timer_init, __bpf_async_set_callback,
bpf_timer_start, bpf_timer_cancel), `cancel_and_free` (bpf_timer_cancel_and_free, called by
the maps on delete/replace/evict/array update) and `release_map` (map_release_uref), plus
the hrtimer core the timers sit on (per-CPU, per-base queues ordered by expiry then FIFO;
__hrtimer_run_queues' walk).  The rulebook is /work/shared/spec/bpf_timer.md (§2-§7, §10,
§11, §15).  A clock (`clock.py`) decides *when* a CPU's softirq runs; this module decides
*what* runs.

State lives out of band (spec §1.2): a `TimerSlot` per element (created by the maps) points
to a `Timer` (struct bpf_hrtimer) or None (UNINIT); the 16 bytes in the value stay zero.

Must not import `kernel`, nor `vm` beyond `vm.env` (callbacks run through the runtime's
`kernel.run_callback(prog, func_ptr, args, cpu=)`, or the program's engine).
"""

from __future__ import annotations

import bisect
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

from bpfsim.errors import BpfError, ExecutionError
from bpfsim.runtime.timeline import Timeline
from bpfsim.uapi.constants import (
    BPF_F_TIMER_ABS,
    BPF_F_TIMER_CPU_PIN,
    CLOCK_BOOTTIME,
    CLOCK_MONOTONIC,
    CLOCK_REALTIME,
    EBUSY,
    EDEADLK,
    EINVAL,
    ENOENT,
    ENOMEM,
    EPERM,
    MapType,
)
from bpfsim.vm.env import func_pointer_target

U64_MASK = (1 << 64) - 1
KTIME_MAX = (1 << 63) - 1
KTIME_SEC_MAX = KTIME_MAX // 1_000_000_000
KTIME_MAX_CLAMP = KTIME_SEC_MAX * 1_000_000_000     # ktime_set(KTIME_SEC_MAX, 0)
IRQ_WALK_LIMIT = 100_000          # one softirq run from irq_exit (a livelocked walk)
TIMER_CLOCKS = (CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME)
# The soft hrtimer bases a softirq walks, in hrtimer_bases order (MONOTONIC_SOFT comes before
# BOOTTIME_SOFT).  REALTIME timers never get a base of their own (spec §7).
BASES = (CLOCK_MONOTONIC, CLOCK_BOOTTIME)


def _s64(v: int) -> int:
    v &= U64_MASK
    return v - (1 << 64) if v >> 63 else v


def ktime_add_safe(lhs: int, rhs: int) -> int:
    """kernel/time/hrtimer.c: ktime_add_safe: saturate to KTIME_MAX_CLAMP on negative/overflow."""
    res = _s64(lhs + rhs)
    if res < 0 or res < lhs or res < rhs:
        res = KTIME_MAX_CLAMP
    return res


@dataclass(eq=False)
class TimerSlot:
    """The out-of-band state of one `struct bpf_timer` in one map element.

    Created by the maps for every element whose value holds a timer.  `key_addr` is what the
    callback receives as its key (the element's key storage for hash/LRU; for arrays a
    scratch u32 holding the index, helpers.c: map_key_from_value); `value_addr` the element's
    value.  `timer` is None while UNINIT.
    """

    map: Any
    key_addr: int
    value_addr: int
    timer: Timer | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Timer:
    """struct bpf_hrtimer: the state behind an initialized slot (spec §15 `Timer`)."""

    __slots__ = ("id", "map", "slot", "clockid", "base", "prog", "callback", "expires",
                 "softexpires", "cpu", "seq", "pinned", "cancelling", "running_on",
                 "running_thread")

    def __init__(self, tid: int, mp: Any, slot: Any, clockid: int) -> None:
        self.id = tid
        self.map = mp
        self.slot = slot
        self.clockid = clockid
        # __hrtimer_init: a relative CLOCK_REALTIME hrtimer is put on the MONOTONIC base.
        self.base = CLOCK_MONOTONIC if clockid == CLOCK_REALTIME else clockid
        self.prog: Any = None
        self.callback: int | None = None
        self.expires: int | None = None        # hard expiry on `base`; None = not queued
        self.softexpires: int | None = None
        self.cpu: int | None = None            # the CPU whose queue holds it
        self.seq = 0                           # enqueue order: FIFO among equal expiries
        self.pinned = False
        self.cancelling = 0                    # atomic_t cancelling (mutual-cancel rule)
        self.running_on: int | None = None     # CPU executing its callback right now
        self.running_thread: threading.Thread | None = None

    @property
    def queued(self) -> bool:
        return self.expires is not None

    def __repr__(self) -> str:
        state = "armed" if self.queued else ("ready" if self.prog is not None else "init")
        return f"<Timer #{self.id} {state} base={self.base} expires={self.expires}>"


class TimerManager:
    """All bpf timers of one runtime.  Thread-safe: one lock (`cond`) stands for the
    per-timer `bpf_spin_lock`s and the hrtimer base locks; callbacks run without it."""

    def __init__(self, kernel: Any, *, timeline: Timeline | None = None) -> None:
        self.kernel = kernel
        self.cond = threading.Condition(threading.RLock())
        self.timeline = timeline if timeline is not None else Timeline()
        self._queues: dict[tuple[int, int], list[Timer]] = {}
        self._by_map: dict[int, dict[int, Any]] = {}       # id(map) -> {id(slot): slot}
        self._running: dict[int, Timer] = {}                # cpu -> hrtimer_running
        self._tls = threading.local()                       # this thread's running callback
        self._next_id = 1
        self._seq = 0
        # Fault injection: at most this many initialized timers, then init gets -ENOMEM (the
        # kernel's allocation is charged to the map's memcg and can fail).  None = no limit.
        self.max_timers: int | None = None
        clock = getattr(kernel, "clock", None)
        if clock is not None:
            clock.bind(self, kernel)

    # -- small pieces --------------------------------------------------------------------------
    @property
    def clock(self) -> Any:
        return self.kernel.clock

    def hrtimer_running(self, cpu: int) -> Timer | None:
        """The timer whose callback runs on `cpu` right now (helpers.c: hrtimer_running)."""
        return self._running.get(cpu)

    def in_callback(self) -> bool:
        """True when the calling thread is executing a timer callback."""
        return getattr(self._tls, "timer", None) is not None

    def _live_timers(self) -> int:
        return sum(len(v) for v in self._by_map.values())

    def timers_of(self, mp: Any) -> list[Timer]:
        """The initialized timers of map `mp` (for tests and dumps)."""
        with self.cond:
            return [s.timer for s in self._by_map.get(id(mp), {}).values() if s.timer is not None]

    def pending(self) -> list[Timer]:
        """Queued timers, earliest first."""
        with self.cond:
            out = [t for q in self._queues.values() for t in q]
        return sorted(out, key=lambda t: (self._mono_deadline(t), t.seq))

    def _record(self, event: str, slot: Any, cpu: int | None, ret: int | None, **extra: Any) -> None:
        tl = self.timeline
        if not tl.enabled:
            return
        mp = getattr(slot, "map", None)
        tid = slot.timer.id if getattr(slot, "timer", None) is not None else extra.pop("timer", None)
        extra.pop("timer", None)
        tl.record(event, time=self.clock.now(CLOCK_MONOTONIC), cpu=cpu,
                  map=getattr(mp, "name", None), key=self._key_hex(slot), timer=tid, ret=ret, **extra)

    def _key_hex(self, slot: Any) -> str | None:
        mp = getattr(slot, "map", None)
        n = int(getattr(mp, "key_size", 0) or 0)
        if getattr(mp, "map_type", getattr(mp, "type", None)) == MapType.ARRAY:
            n = 4                                  # map_key_from_value: the u32 index
        try:
            return self.kernel.mem.read(slot.key_addr, n).hex() if n else None
        except BpfError:                           # a freed element: keep the record anyway
            return None

    @staticmethod
    def _prog_get(prog: Any) -> bool:
        """bpf_prog_inc_not_zero: False when the program is already being freed."""
        if prog is None:
            return False
        inc = getattr(prog, "inc_not_zero", None)
        if inc is not None:
            return bool(inc())
        inc = getattr(prog, "inc", None)
        if inc is not None:
            inc()
        return True

    @staticmethod
    def _prog_put(prog: Any) -> None:
        put = getattr(prog, "put", None)
        if put is not None:
            put()

    def _drop_prog_refcnt(self, t: Timer) -> None:
        """helpers.c: drop_prog_refcnt: put the prog, forget the callback."""
        prog, t.prog, t.callback = t.prog, None, None
        if prog is not None:
            self._prog_put(prog)

    def _usercnt(self, mp: Any) -> int:
        return int(getattr(mp, "usercnt", 1))

    # -- the hrtimer queues --------------------------------------------------------------------
    def _mono_deadline(self, t: Timer) -> int:
        assert t.expires is not None
        return t.expires - self.clock.offset(t.base)

    def _enqueue(self, t: Timer, cpu: int, soft: int, hard: int) -> None:
        self._dequeue(t)
        self._seq += 1
        t.seq, t.cpu, t.softexpires, t.expires = self._seq, cpu, soft, hard
        q = self._queues.setdefault((cpu, t.base), [])
        bisect.insort_right(q, t, key=_queue_key)      # timerqueue: equal keys go right (FIFO)
        self.clock.timers_changed()

    def _dequeue(self, t: Timer) -> bool:
        """hrtimer_try_to_cancel's dequeue: True if it was queued."""
        if t.expires is None:
            return False
        q = self._queues.get((t.cpu, t.base))   # type: ignore[arg-type]
        if q is not None:
            with contextlib.suppress(ValueError):
                q.remove(t)
            if not q:
                del self._queues[(t.cpu, t.base)]   # type: ignore[arg-type]
        t.expires = t.softexpires = None
        self.clock.timers_changed()
        return True

    def next_event(self, cpu: int | None = None) -> tuple[int, int] | None:
        """(CLOCK_MONOTONIC deadline, cpu) of the earliest queued timer whose *hard* expiry
        can ever be reached (hrtimer: __hrtimer_get_next_event), on `cpu` or any CPU."""
        with self.cond:
            best: tuple[int, int, int] | None = None
            for (qcpu, base), q in self._queues.items():
                if cpu is not None and qcpu != cpu:
                    continue
                head = q[0]
                if head.expires is None or head.expires >= KTIME_MAX_CLAMP:
                    continue        # KTIME_MAX: never due by itself
                cand = (head.expires - self.clock.offset(base), head.seq, qcpu)
                if best is None or cand < best:
                    best = cand
            return None if best is None else (best[0], best[2])

    def run_softirq(self, cpu: int, limit: int | None = None) -> int:
        """HRTIMER_SOFTIRQ on `cpu` (hrtimer.c: __hrtimer_run_queues): walk each soft base from
        the head, running every timer whose *soft* expiry has passed, and stop at the first
        one that has not.  Returns the number of callbacks invoked.

        A timer (re)armed by a callback during this walk runs in it only if its soft expiry is
        strictly in the past: on a real machine the walk's `basenow` is older than the
        arming time, so a 0 ns re-arm waits for the next softirq, while an absolute past (or
        negative, the §5 quirk) expiry is picked up at once."""
        fired = 0
        with self.cond:
            start_seq = self._seq
            basenows = {base: self.clock.now(base) for base in BASES}
        for base in BASES:
            basenow = basenows[base]
            while limit is None or fired < limit:
                with self.cond:
                    q = self._queues.get((cpu, base))
                    if not q:
                        break
                    t = q[0]
                    soft = t.softexpires if t.softexpires is not None else t.expires
                    assert soft is not None
                    if soft > basenow or (t.seq > start_seq and soft >= basenow):
                        break
                    self._dequeue(t)      # __run_hrtimer: dequeued before the callback runs
                    fn, prog = t.callback, t.prog
                    if fn is None or prog is None:
                        continue          # bpf_timer_cb: callback_fn NULL -> nothing to do
                    self._running[cpu] = t
                    t.running_on, t.running_thread = cpu, threading.current_thread()
                    self._record("fire", t.slot, cpu, None, callback=_callback_name(prog, fn),
                                 prog=getattr(prog, "name", None))
                self._invoke(t, prog, fn, cpu)
                fired += 1
        return fired

    def irq_exit(self, cpu: int) -> int:
        """A process-context program (SEC("syscall")) just armed a timer on `cpu`: if one is
        already due, the hrtimer interrupt arrives within microseconds and HRTIMER_SOFTIRQ runs
        on irq exit, in the middle of the program (hrtimer.c: hrtimer_reprogram programs the
        clock event for an expiry in the past).  [EMP] on 6.18: init + start(0 ns) + cancel in
        one syscall program gets 0 from cancel and the callback has run; the same sequence in
        a tc program (bottom halves disabled) gets 1.  Returns the number fired."""
        if self.in_callback():
            return 0                      # softirqs do not nest
        nxt = self.next_event(cpu)
        if nxt is None or nxt[0] > self.clock.now(CLOCK_MONOTONIC):
            return 0
        fired = self.run_softirq(cpu, limit=IRQ_WALK_LIMIT)
        if fired >= IRQ_WALK_LIMIT:
            raise ExecutionError(f"timer callbacks fired {fired} times in one softirq: a callback "
                                 "keeps re-arming with an expiry in the past")
        return fired

    def _invoke(self, t: Timer, prog: Any, fn: int, cpu: int) -> None:
        """bpf_timer_cb: hrtimer_running = t; callback_fn(map, key, value); the return value is
        ignored.  Runs without the manager lock."""
        prev = getattr(self._tls, "timer", None)
        self._tls.timer = t
        args = (_map_address(t.map), t.slot.key_addr, t.slot.value_addr)
        try:
            runner = getattr(self.kernel, "run_callback", None)
            if runner is not None:
                runner(prog, fn, args, cpu=cpu)
            else:
                _run_on_engine(self.kernel, prog, fn, args, cpu)
        finally:
            self._tls.timer = prev
            with self.cond:
                if self._running.get(cpu) is t:
                    del self._running[cpu]
                t.running_on = t.running_thread = None
                self.cond.notify_all()

    def _wait_not_running(self, t: Timer) -> None:
        """hrtimer_cancel's wait for a callback executing on another CPU (lock held)."""
        while t.running_on is not None:
            if t.running_thread is threading.current_thread():
                raise ExecutionError(f"bpf_timer: waiting for timer #{t.id}'s own running callback "
                                     "would deadlock")
            self.cond.wait()

    # -- the helpers (spec §15) ----------------------------------------------------------------
    def init(self, slot: Any, mp: Any, flags: int, cpu: int | None = None) -> int:
        """bpf_timer_init (#169)."""
        flags &= U64_MASK
        with self.cond:
            if flags >= 16 or (flags & 15) not in TIMER_CLOCKS:
                ret = -EINVAL
            elif slot.timer is not None:
                ret = -EBUSY
            elif self.max_timers is not None and self._live_timers() >= self.max_timers:
                ret = -ENOMEM                  # bpf_map_kmalloc_nolock failed (fault injection)
            elif self._usercnt(mp) == 0:
                # __bpf_async_init allocates, publishes, then sees usercnt == 0 and backs out.
                ret = -EPERM
            else:
                t = Timer(self._next_id, mp, slot, flags & 15)
                self._next_id += 1
                slot.timer = t
                self._by_map.setdefault(id(mp), {})[id(slot)] = slot
                ret = 0
            self._record("init", slot, cpu, ret, flags=flags)
            return ret

    def set_callback(self, slot: Any, callback: int, prog: Any, cpu: int | None = None) -> int:
        """bpf_timer_set_callback (#170); `prog` is the calling program (the hidden R3)."""
        with self.cond:
            t = slot.timer
            if t is None:
                ret = -EINVAL
            elif self._usercnt(t.map) == 0:
                ret = -EPERM
            else:
                ret = 0
                if t.prog is not prog:
                    if not self._prog_get(prog):
                        ret = -ENOENT          # bpf_prog_inc_not_zero -> ERR_PTR(-ENOENT)
                    else:
                        old, t.prog = t.prog, prog
                        if old is not None:
                            self._prog_put(old)
                if ret == 0:
                    t.callback = callback
            self._record("set_callback", slot, cpu, ret, callback=_callback_name(prog, callback),
                         prog=getattr(prog, "name", None))
            return ret

    def start(self, slot: Any, nsecs: int, flags: int, cpu: int) -> int:
        """bpf_timer_start (#171): (re)queue with a new expiry."""
        nsecs &= U64_MASK
        flags &= U64_MASK
        with self.cond:
            t = slot.timer
            if flags & ~(BPF_F_TIMER_ABS | BPF_F_TIMER_CPU_PIN) or t is None or t.prog is None:
                ret = -EINVAL
            else:
                tim = _s64(nsecs)                                  # ns_to_ktime
                if not flags & BPF_F_TIMER_ABS:
                    tim = ktime_add_safe(self.clock.now(t.base), tim)
                # hrtimer_set_expires_range_ns(timer, tim, 0): the soft expiry keeps `tim`,
                # the hard one is ktime_add_safe(tim, 0) -- a negative absolute value is
                # clamped on the hard side only (spec §5 "not inert").
                soft, hard = tim, ktime_add_safe(tim, 0)
                # switch_hrtimer_base: a timer whose callback is running stays on that CPU.
                qcpu = t.running_on if t.running_on is not None else cpu
                t.pinned = bool(flags & BPF_F_TIMER_CPU_PIN)
                self._enqueue(t, qcpu, soft, hard)
                ret = 0
            self._record("start", slot, cpu, ret, nsecs=nsecs, flags=flags,
                         expires=t.expires if t is not None and ret == 0 else None)
            return ret

    def cancel(self, slot: Any, cpu: int | None) -> int:
        """bpf_timer_cancel (#172): 1 if it was queued, 0 if not; drops the callback; waits
        for a callback running elsewhere; -EDEADLK from its own callback or a mutual cancel."""
        with self.cond:
            t = slot.timer
            if t is None:
                self._record("cancel", slot, cpu, -EINVAL)
                return -EINVAL
            cur = self._running.get(cpu) if cpu is not None else None
            if cur is t:
                self._record("cancel", slot, cpu, -EDEADLK)
                return -EDEADLK
            inc = False
            if cur is not None:
                # Only one of two callbacks cancelling each other may wait (the July 2024
                # "Fail bpf_timer_cancel when callback is being cancelled" rule).
                t.cancelling += 1
                inc = True
                if cur.cancelling:
                    t.cancelling -= 1
                    self._record("cancel", slot, cpu, -EDEADLK)
                    return -EDEADLK
            self._drop_prog_refcnt(t)
            try:
                self._wait_not_running(t)            # hrtimer_cancel: wait, then dequeue
                ret = 1 if self._dequeue(t) else 0
            finally:
                if inc:
                    t.cancelling -= 1
            self._record("cancel", slot, cpu, ret, timer=t.id)
            return ret

    def cancel_and_free(self, slot: Any) -> None:
        """bpf_timer_cancel_and_free: the slot becomes UNINIT, the timer never fires again.

        Called by the maps (element delete/replace, LRU eviction, array update) and by
        `release_map`.  From inside a timer callback the kernel defers the wait to a worker
        (delete_work); dequeuing at once is indistinguishable since the callback pointer is
        already gone."""
        with self.cond:
            t = slot.timer
            if t is None:
                return
            self._drop_prog_refcnt(t)
            slot.timer = None
            owned = self._by_map.get(id(t.map))
            if owned is not None:
                owned.pop(id(slot), None)
                if not owned:
                    del self._by_map[id(t.map)]
            was_queued = self._dequeue(t)
            if not self.in_callback() and t.running_thread is not threading.current_thread():
                self._wait_not_running(t)
            self._record("free", slot, None, None, timer=t.id, was_queued=was_queued)

    def release_map(self, mp: Any) -> None:
        """map_release_uref (usercnt -> 0): cancel and free every timer of `mp`; the rest of
        each value is left alone (arraymap.c: array_map_free_timers_wq, hashtab.c:
        htab_map_free_internal_structs)."""
        with self.cond:
            slots = list(self._by_map.get(id(mp), {}).values())
        for slot in slots:
            self.cancel_and_free(slot)

    def close(self) -> None:
        """Runtime shutdown: stop the clock's threads; forget every queued timer."""
        self.clock.close()
        with self.cond:
            for q in list(self._queues.values()):
                for t in list(q):
                    self._dequeue(t)


def _queue_key(t: Timer) -> tuple[int, int]:
    return (t.expires or 0, t.seq)


def _callback_name(prog: Any, fn: int) -> str:
    """The callback's subprogram name from the program spec, else `insn <index>`."""
    index = func_pointer_target(fn)
    if index is None:
        return hex(fn)
    starts = getattr(getattr(prog, "spec", None), "subprogram_starts", None) or {}
    for name, slot in starts.items():
        if slot == index:
            return str(name)
    return f"insn {index}"


def _run_on_engine(kernel: Any, prog: Any, fn: int, args: tuple[int, ...], cpu: int) -> None:
    """Run callback `fn` of `prog` as a fresh run on its engine, on `cpu`, holding that CPU's
    lock (used when the runtime offers no `run_callback`)."""
    engine = getattr(prog, "engine", None)
    index = func_pointer_target(fn)
    if engine is None or index is None:
        raise ExecutionError(f"bpf_timer: cannot run callback {fn:#x} of {prog!r}")
    locks = getattr(kernel, "cpu_locks", None)
    if locks is None:
        engine.call_function(index, args, program=prog, cpu=cpu)
        return
    with locks[cpu]:
        engine.call_function(index, args, program=prog, cpu=cpu)


def _map_address(mp: Any) -> int:
    """The CONST_PTR_TO_MAP value a callback receives as R1."""
    for attr in ("addr", "address", "map_addr"):
        v = getattr(mp, attr, None)
        if isinstance(v, int):
            return v
    region = getattr(mp, "region", None)
    return int(getattr(region, "base", 0))
