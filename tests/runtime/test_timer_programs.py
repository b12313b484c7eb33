"""bpf_timer rules with real BPF programs, on the emulator (virtual clock) and on the kernel.

Every scenario is written once against a small backend interface and runs twice: `sim`
(bpfsim.Runtime, time moved by clock.advance) and `kernel` (the same object loaded with
bpfsim.kernel, real time, short timers; marked `kernel`).  Both must give the same results.
The fixture is tests/fixtures/timer/timer_rules.bpf.c: one SEC("syscall") program per
timer operation; callbacks report into the element (counter, stamp, lastkey, who, cpu, ret).
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from bpfsim.uapi.constants import (
    BPF_F_TIMER_ABS,
    BPF_F_TIMER_CPU_PIN,
    CLOCK_BOOTTIME,
    CLOCK_MONOTONIC,
    CLOCK_REALTIME,
    EBUSY,
    EDEADLK,
    EINVAL,
)
from bpfsim.units import ms

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "timer"
OBJ = str(FIXTURES / "timer_rules.bpf.o")
ARR, HASH, LRU = 0, 1, 2
MAP_NAMES = {ARR: "tarr", HASH: "thash", LRU: "tlru"}
U64_MAX = (1 << 64) - 1
MODE_COUNT, MODE_REARM, MODE_CANCEL_SELF, MODE_CANCEL_OTHER, MODE_DELETE_SELF, MODE_START_ZERO = range(6)
_ELEM = struct.Struct("<16xQQQIIQQqII")
ELEM_FIELDS = ("counter", "stamp", "boot_stamp", "lastkey", "mode", "arg", "arg2", "ret", "who", "cpu")
ELEM_SIZE = 80


def kernel_skip_reason() -> str | None:
    try:
        from bpfsim.kernel.probes import kernel_available
    except ImportError:
        ok = os.geteuid() == 0 and os.path.exists("/sys/fs/bpf")
        return None if ok else "needs root and bpffs"
    ok, why = kernel_available()
    return None if ok else why


class Backend:
    """One loaded copy of timer_rules.bpf.o plus a clock."""

    name = "?"

    def run(self, prog: str, map_: int = ARR, key: int = 0, a: int = 0, b: int = 0) -> int:
        return self._run(prog, struct.pack("<IIQQ", map_, key, a & U64_MAX, b & U64_MAX))

    # helpers named after the programs
    def init(self, m, k, flags=CLOCK_MONOTONIC):
        return self.run("init", m, k, flags)

    def set_cb(self, m, k, which=1):
        return self.run("set_callback", m, k, which)

    def start(self, m, k, nsecs, flags=0):
        return self.run("start", m, k, nsecs, flags)

    def cancel(self, m, k):
        return self.run("cancel", m, k)

    def update(self, m, k, flags=0):
        return self.run("update", m, k, flags)

    def delete(self, m, k):
        return self.run("delete", m, k)

    def mode(self, m, k, mode, arg=0):
        return self.run("set_mode", m, k, mode, arg)

    # -- the map's user references (§3 usercnt) --
    def handle(self, m):
        """The current user handle (fd) of map `m`: the loader's, or the last reopened one."""
        name = MAP_NAMES[m]
        return self.reopened.get(name) or self.coll.maps[name]

    def map_id(self, m) -> int:
        return self.handle(m).id

    def close_map(self, m) -> None:
        self.handle(m).close()

    def reopen_map(self, m, map_id: int) -> None:
        """BPF_MAP_GET_FD_BY_ID: a new user reference, also on a map whose usercnt was 0."""
        self.reopened[MAP_NAMES[m]] = self._get_by_id(map_id, MAP_NAMES[m])

    def pin_map(self, m, path):
        self.handle(m).pin(path)

    def _lookup(self, name, key):
        h = self.reopened.get(name) or self.coll.maps[name]
        try:
            return h.raw[key]
        except KeyError:
            return None

    def sys_update(self, m, k, value=bytes(ELEM_SIZE)):
        self.handle(m).raw[struct.pack("<I", k)] = value

    def sys_delete(self, m, k):
        del self.handle(m).raw[struct.pack("<I", k)]

    def _close_reopened(self) -> None:
        for h in self.reopened.values():
            if not h.closed:
                h.close()

    def elem(self, m, k) -> dict | None:
        raw = self._lookup(MAP_NAMES[m], struct.pack("<I", k))
        if raw is None:
            return None
        assert raw[:16] == bytes(16)          # user space always sees the timer zeroed
        return dict(zip(ELEM_FIELDS, _ELEM.unpack(raw)))

    def fired(self, m, k) -> int:
        e = self.elem(m, k)
        return 0 if e is None else e["counter"]


class SimBackend(Backend):
    name = "sim"

    def __init__(self) -> None:
        import bpfsim

        self.rt = bpfsim.Runtime()
        self.coll = self.rt.load(OBJ)
        self.clock = self.rt.clock
        self.reopened = {}

    def _get_by_id(self, map_id, name):
        from bpfsim.runtime.handles import Map
        from bpfsim.runtime.kobject import object_by_id

        return Map(object_by_id(self.rt, "map", map_id), owned=False)

    def run_pkt(self, prog, data=bytes(64)):
        return _s32(self.coll.programs[prog].test_run(data=data).retval)

    def _run(self, prog, ctx):
        return _s32(self.coll.programs[prog].test_run(ctx=ctx).retval)

    def wait(self, ns: int) -> None:
        self.clock.advance(ns)

    def prog_alive(self, prog_id: int) -> bool:
        from bpfsim.runtime.kobject import object_by_id

        return object_by_id(self.rt, "prog", prog_id) is not None

    def unpin(self, path):
        self.rt.unpin(path)

    def now(self, clockid=CLOCK_MONOTONIC) -> int:
        return self.clock.now(clockid)

    def close(self) -> None:
        self._close_reopened()
        self.coll.close()
        self.rt.close()


class KernelBackend(Backend):
    name = "kernel"

    def __init__(self) -> None:
        import bpfsim.kernel

        self.coll = bpfsim.kernel.load(OBJ)
        self.reopened = {}
        # Arm on CPU 0 like the emulator (test_run of a syscall program runs on this thread).
        self._affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {0})

    def run_pkt(self, prog, data=bytes(64)):
        return _s32(self.coll.programs[prog].test_run(data=data).retval)

    def _run(self, prog, ctx):
        return syscall_test_run(self.coll.programs[prog], ctx)

    def _get_by_id(self, map_id, name):
        from bpfsim.kernel import syscall as sc
        from bpfsim.kernel.maps import KernelMap

        return KernelMap.from_fd(sc.map_get_fd_by_id(map_id), name=name)

    def prog_alive(self, prog_id: int) -> bool:
        from bpfsim.errors import KernelError
        from bpfsim.kernel import syscall as sc

        for _ in range(50):          # the last put frees the program after an RCU grace period
            try:
                sc.close(sc.prog_get_fd_by_id(prog_id))
            except KernelError:
                return False
            time.sleep(0.01)
        return True

    def unpin(self, path):
        os.unlink(path)

    def wait(self, ns: int) -> None:
        # Real time, plus slack for the softirq (timers fire ~40 us late, more under load).
        time.sleep(ns / 1e9 + 0.03)

    def now(self, clockid=CLOCK_MONOTONIC) -> int:
        host = {CLOCK_MONOTONIC: time.CLOCK_MONOTONIC, CLOCK_REALTIME: time.CLOCK_REALTIME,
                CLOCK_BOOTTIME: time.CLOCK_BOOTTIME}
        return time.clock_gettime_ns(host[clockid])

    def close(self) -> None:
        self._close_reopened()
        self.coll.close()
        os.sched_setaffinity(0, self._affinity)


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def syscall_test_run(prog, ctx: bytes) -> int:
    """BPF_PROG_TEST_RUN of a SEC("syscall") program on the kernel.  test_run.c:
    bpf_prog_test_run_syscall refuses repeat, ctx_out, data and flags, which
    KernelProgram.test_run (repeat=1, ctx_out sized like ctx) always sends, so go to the
    syscall layer with the program's fd."""
    from bpfsim.kernel import syscall as sc

    return _s32(sc.prog_test_run(prog.fd, ctx=ctx, repeat=0, ctx_size_out=0).retval)


@pytest.fixture(params=["sim", pytest.param("kernel", marks=pytest.mark.kernel)])
def be(request):
    if request.param == "kernel":
        why = kernel_skip_reason()
        if why:
            pytest.skip(why)
        b = KernelBackend()
    else:
        import bpfsim

        if not hasattr(bpfsim, "Runtime"):
            pytest.skip("bpfsim.Runtime is not available yet")
        b = SimBackend()
    yield b
    b.close()


def hash_elem(be, k):
    assert be.update(HASH, k) == 0


# -- §3 init ----------------------------------------------------------------------------------
def test_init_flags_and_ebusy(be):
    for bad in (2, 3, 4, 5, 6, 8, 9, 11, 15, 0x10, 0x11, 1 << 32):
        assert be.init(ARR, 0, bad) == -EINVAL, bad
    assert be.init(ARR, 0, CLOCK_MONOTONIC) == 0
    assert be.init(ARR, 0, CLOCK_MONOTONIC) == -EBUSY
    assert be.init(ARR, 0, CLOCK_BOOTTIME) == -EBUSY
    assert be.init(ARR, 0, 0x10) == -EINVAL            # flags are checked before "busy"
    assert be.init(ARR, 1, CLOCK_REALTIME) == 0
    assert be.init(ARR, 2, CLOCK_BOOTTIME) == 0


# -- §4/§5 set_callback, start ------------------------------------------------------------------
def test_start_needs_init_and_callback(be):
    assert be.start(ARR, 0, 0, 4) == -EINVAL           # reserved flag, uninitialized timer
    assert be.start(ARR, 0, 0) == -EINVAL              # uninitialized
    assert be.set_cb(ARR, 0) == -EINVAL
    assert be.cancel(ARR, 0) == -EINVAL
    assert be.init(ARR, 0) == 0
    assert be.start(ARR, 0, 0) == -EINVAL              # no callback yet
    assert be.cancel(ARR, 0) == 0                      # never started
    assert be.set_cb(ARR, 0) == 0
    for bad in (4, 8, 1 << 40):
        assert be.start(ARR, 0, 0, bad) == -EINVAL
    assert be.start(ARR, 0, ms(5)) == 0
    be.wait(ms(20))
    e = be.elem(ARR, 0)
    assert e["counter"] == 1 and e["lastkey"] == 0 and e["who"] == 1
    assert be.cancel(ARR, 0) == 0                      # already fired
    assert be.start(ARR, 0, ms(5)) == -EINVAL          # cancel dropped the callback
    assert be.init(ARR, 0) == -EBUSY                   # ... but the timer stays initialized


def test_fired_timer_keeps_callback_and_is_one_shot(be):
    assert be.init(ARR, 3) == 0 and be.set_cb(ARR, 3) == 0
    assert be.start(ARR, 3, ms(5)) == 0
    be.wait(ms(50))
    assert be.fired(ARR, 3) == 1                       # one-shot
    assert be.start(ARR, 3, ms(5)) == 0                # no set_callback needed again
    be.wait(ms(20))
    assert be.fired(ARR, 3) == 2
    assert be.elem(ARR, 3)["lastkey"] == 3             # arrays pass the index


def test_restart_replaces_expiry(be):
    assert be.init(ARR, 0) == 0 and be.set_cb(ARR, 0) == 0
    assert be.start(ARR, 0, ms(400)) == 0
    assert be.start(ARR, 0, ms(10)) == 0
    be.wait(ms(50))
    assert be.fired(ARR, 0) == 1
    be.wait(ms(500))
    assert be.fired(ARR, 0) == 1


def test_callback_set_at_expiry_runs(be):
    assert be.init(ARR, 0) == 0 and be.set_cb(ARR, 0, 1) == 0
    assert be.start(ARR, 0, ms(20)) == 0
    assert be.set_cb(ARR, 0, 2) == 0
    be.wait(ms(40))
    assert be.elem(ARR, 0)["who"] == 2


def test_callback_rearms_itself(be):
    assert be.init(ARR, 0) == 0 and be.set_cb(ARR, 0) == 0
    assert be.mode(ARR, 0, MODE_REARM, 5 | (ms(2) << 8)) == 0
    assert be.start(ARR, 0, ms(2)) == 0
    be.wait(ms(100))
    e = be.elem(ARR, 0)
    assert e["counter"] == 6 and e["ret"] == 0


def test_hash_callback_sees_element_key(be):
    hash_elem(be, 7)
    assert be.init(HASH, 7) == 0 and be.set_cb(HASH, 7) == 0
    assert be.start(HASH, 7, ms(1)) == 0
    be.wait(ms(20))
    e = be.elem(HASH, 7)
    assert e["lastkey"] == 7 and e["counter"] == 1


def test_cpu_pin_runs_on_arming_cpu(be):
    assert be.init(ARR, 4) == 0 and be.set_cb(ARR, 4) == 0
    assert be.start(ARR, 4, ms(1), BPF_F_TIMER_CPU_PIN) == 0
    be.wait(ms(20))
    assert be.elem(ARR, 4)["cpu"] == 0 and be.fired(ARR, 4) == 1
    assert be.start(ARR, 4, ms(1), BPF_F_TIMER_CPU_PIN | BPF_F_TIMER_ABS) == 0   # both: valid


# -- §5 expiry arithmetic ---------------------------------------------------------------------
def test_relative_huge_never_fires(be):
    for k, ns in ((0, U64_MAX), (1, 1 << 63), (2, (1 << 63) - 1)):
        assert be.init(ARR, k) == 0 and be.set_cb(ARR, k) == 0
        assert be.start(ARR, k, ns) == 0
    be.wait(ms(50))
    for k in range(3):
        assert be.fired(ARR, k) == 0
        assert be.cancel(ARR, k) == 1


def test_absolute_past_fires_at_once(be):
    assert be.init(ARR, 0) == 0 and be.set_cb(ARR, 0) == 0
    assert be.start(ARR, 0, 0, BPF_F_TIMER_ABS) == 0
    be.wait(0)
    assert be.fired(ARR, 0) == 1


def test_absolute_monotonic_and_boottime_deadlines(be):
    assert be.init(ARR, 0, CLOCK_MONOTONIC) == 0 and be.set_cb(ARR, 0) == 0
    assert be.init(ARR, 1, CLOCK_BOOTTIME) == 0 and be.set_cb(ARR, 1) == 0
    assert be.start(ARR, 0, be.now(CLOCK_MONOTONIC) + ms(300), BPF_F_TIMER_ABS) == 0
    assert be.start(ARR, 1, be.now(CLOCK_BOOTTIME) + ms(300), BPF_F_TIMER_ABS) == 0
    be.wait(ms(150))
    assert be.fired(ARR, 0) == 0 and be.fired(ARR, 1) == 0
    be.wait(ms(150))
    assert be.fired(ARR, 0) == 1 and be.fired(ARR, 1) == 1


def test_realtime_timer_is_a_monotonic_timer(be):
    assert be.init(ARR, 0, CLOCK_REALTIME) == 0 and be.set_cb(ARR, 0) == 0
    assert be.start(ARR, 0, be.now(CLOCK_REALTIME) + ms(20), BPF_F_TIMER_ABS) == 0
    be.wait(ms(60))
    assert be.fired(ARR, 0) == 0
    assert be.cancel(ARR, 0) == 1                      # still queued, decades away
    assert be.set_cb(ARR, 0) == 0
    assert be.start(ARR, 0, be.now(CLOCK_MONOTONIC) + ms(20), BPF_F_TIMER_ABS) == 0
    be.wait(ms(40))
    assert be.fired(ARR, 0) == 1


def test_absolute_u64_max_quirk(be):
    """An absolute expiry >= 2^63 never fires by itself, but its soft expiry is negative:
    when an earlier timer on the same CPU and base expires, the softirq walk runs it too."""
    pin = BPF_F_TIMER_CPU_PIN
    for k in (0, 1):
        assert be.init(ARR, k) == 0 and be.set_cb(ARR, k) == 0
    assert be.start(ARR, 0, U64_MAX, BPF_F_TIMER_ABS | pin) == 0
    be.wait(ms(50))
    if be.name == "sim":
        # On a real machine any other soft hrtimer expiring on CPU 0 (another process's, the
        # network stack's) runs the walk too, so "not yet" only holds on an idle CPU.
        assert be.fired(ARR, 0) == 0
    assert be.start(ARR, 1, ms(5), pin) == 0
    be.wait(ms(30))
    assert be.fired(ARR, 1) == 1 and be.fired(ARR, 0) == 1


@pytest.mark.parametrize("quirk_clock,trigger_clock", [(CLOCK_MONOTONIC, CLOCK_BOOTTIME),
                                                       (CLOCK_BOOTTIME, CLOCK_MONOTONIC)])
def test_absolute_u64_max_quirk_across_bases(be, quirk_clock, trigger_clock):
    """The trigger need not share the clock base: HRTIMER_SOFTIRQ walks every soft base of the
    CPU (hrtimer.c: __hrtimer_run_queues), so a negative soft expiry at the head of its base
    runs whenever the CPU's timer softirq runs.  Measured on 6.18 both ways round."""
    pin = BPF_F_TIMER_CPU_PIN
    assert be.init(ARR, 0, quirk_clock) == 0 and be.set_cb(ARR, 0) == 0
    assert be.init(ARR, 1, trigger_clock) == 0 and be.set_cb(ARR, 1) == 0
    assert be.start(ARR, 0, U64_MAX, BPF_F_TIMER_ABS | pin) == 0
    be.wait(ms(50))
    if be.name == "sim":
        # On a real machine any other soft hrtimer expiring on CPU 0 (another process's, the
        # network stack's) runs the walk too, so "not yet" only holds on an idle CPU.
        assert be.fired(ARR, 0) == 0
    assert be.start(ARR, 1, ms(5), pin) == 0
    be.wait(ms(30))
    assert be.fired(ARR, 1) == 1 and be.fired(ARR, 0) == 1


def test_tied_timers_cancelling_each_other_first_wins(be):
    """Equal deadlines on one CPU fire FIFO in (re)start order; a restart at the same
    deadline moves a timer behind the other."""
    pin = BPF_F_TIMER_CPU_PIN | BPF_F_TIMER_ABS
    for k, other in ((0, 1), (1, 0)):
        assert be.init(ARR, k) == 0 and be.set_cb(ARR, k) == 0
        assert be.mode(ARR, k, MODE_CANCEL_OTHER, other) == 0
    deadline = be.now() + ms(30)
    assert be.start(ARR, 0, deadline, pin) == 0
    assert be.start(ARR, 1, deadline, pin) == 0
    assert be.start(ARR, 0, deadline, pin) == 0     # now behind timer 1
    be.wait(ms(60))
    assert be.fired(ARR, 1) == 1 and be.elem(ARR, 1)["ret"] == 1
    assert be.fired(ARR, 0) == 0


# -- §6 cancel ----------------------------------------------------------------------------------
def test_cancel_pending_returns_1_and_drops_callback(be):
    assert be.init(ARR, 0) == 0 and be.set_cb(ARR, 0) == 0
    assert be.start(ARR, 0, ms(30)) == 0
    assert be.cancel(ARR, 0) == 1
    assert be.start(ARR, 0, ms(5)) == -EINVAL
    be.wait(ms(60))
    assert be.fired(ARR, 0) == 0
    assert be.set_cb(ARR, 0) == 0 and be.start(ARR, 0, ms(5)) == 0
    be.wait(ms(20))
    assert be.fired(ARR, 0) == 1


def test_cancel_from_own_callback_is_edeadlk(be):
    assert be.init(ARR, 0) == 0 and be.set_cb(ARR, 0) == 0
    assert be.mode(ARR, 0, MODE_CANCEL_SELF) == 0
    assert be.start(ARR, 0, ms(1)) == 0
    be.wait(ms(20))
    assert be.elem(ARR, 0)["ret"] == -EDEADLK
    assert be.mode(ARR, 0, MODE_COUNT) == 0
    assert be.start(ARR, 0, ms(1)) == 0                # the callback was not dropped
    be.wait(ms(20))
    assert be.fired(ARR, 0) == 2


def test_callback_cancels_another_pending_timer(be):
    for k in (0, 1):
        assert be.init(ARR, k) == 0 and be.set_cb(ARR, k) == 0
    assert be.mode(ARR, 0, MODE_CANCEL_OTHER, 1) == 0
    assert be.start(ARR, 1, ms(300)) == 0
    assert be.start(ARR, 0, ms(5)) == 0
    be.wait(ms(30))
    assert be.elem(ARR, 0)["ret"] == 1
    be.wait(ms(350))
    assert be.fired(ARR, 1) == 0
    assert be.start(ARR, 1, ms(1)) == -EINVAL          # its callback was dropped


def test_start_then_cancel_in_one_run(be):
    """A 0 ns timer is due at once.  tc and xdp programs run with bottom halves off, so the timer
    cannot fire before its cancel (1); a SEC("syscall") program runs in process context and
    the hrtimer softirq runs on irq exit right after bpf_timer_start, in the middle of the
    program, so cancel finds it already fired (0).  [EMP, 200 of 200 runs each on 6.18]"""
    assert be.run_pkt("tc_start_then_cancel") == 1
    assert be.run_pkt("xdp_start_then_cancel") == 1
    be.wait(ms(20))
    assert be.fired(ARR, 6) == 0 and be.fired(ARR, 4) == 0
    assert be.run("start_then_cancel", ARR, 5) == 0
    assert be.fired(ARR, 5) == 1


# -- §10 map operations -------------------------------------------------------------------------
def test_array_update_frees_timer(be):
    for k in (0, 1):
        assert be.init(ARR, k) == 0 and be.set_cb(ARR, k) == 0
        assert be.start(ARR, k, ms(20)) == 0
    assert be.update(ARR, 0) == 0                      # from a program
    be.sys_update(ARR, 1)                              # from user space
    be.wait(ms(60))
    assert be.fired(ARR, 0) == 0 and be.fired(ARR, 1) == 0
    assert be.init(ARR, 0) == 0 and be.init(ARR, 1) == 0     # UNINIT again
    assert be.delete(ARR, 0) == -EINVAL


def test_hash_delete_and_replace_free_timer(be):
    for k in (1, 2, 3):
        hash_elem(be, k)
        assert be.init(HASH, k) == 0 and be.set_cb(HASH, k) == 0
        assert be.start(HASH, k, ms(20)) == 0
    assert be.delete(HASH, 1) == 0
    assert be.update(HASH, 2) == 0                     # replace: a new element
    be.sys_delete(HASH, 3)
    be.wait(ms(60))
    assert be.elem(HASH, 1) is None and be.fired(HASH, 2) == 0
    hash_elem(be, 1)
    assert be.init(HASH, 1) == 0 and be.init(HASH, 2) == 0


def test_hash_update_with_f_lock_keeps_timer(be):
    """BPF_F_LOCK updates in place (copy_map_value_locked): the timer stays armed and
    initialized; a plain update of the same key makes a new element with a fresh timer."""
    key, fresh = struct.pack("<I", 1), bytes(32)
    m = be.coll.maps["tlock"]
    m.raw[key] = fresh
    assert be.run("lock_arm", ARR, 1, ms(30)) == 0
    m.update(key, fresh, 4)                            # BPF_F_LOCK
    assert be.run("lock_arm", ARR, 1, ms(30)) == -EBUSY  # still initialized (and re-armed)
    be.wait(ms(60))
    assert struct.unpack_from("<Q", m.raw[key], 24)[0] == 1
    assert be.run("lock_arm", ARR, 1, ms(30)) == -EBUSY
    m.raw[key] = fresh                                 # no F_LOCK: a new element
    be.wait(ms(60))
    assert struct.unpack_from("<Q", m.raw[key], 24)[0] == 0
    assert be.run("lock_arm", ARR, 1, ms(30)) == 0


def test_array_update_with_f_lock_frees_timer(be):
    """An ARRAY update with BPF_F_LOCK copies the value in place (copy_map_value_locked) but,
    unlike a hash, still frees the timer (arraymap.c: array_map_update_elem ->
    bpf_obj_free_fields): the armed timer never fires and init gives 0 again."""
    key, m = struct.pack("<I", 1), be.coll.maps["tlockarr"]
    assert be.run("lockarr_arm", ARR, 1, ms(30)) == 0
    assert be.run("lockarr_arm", ARR, 1, ms(30)) == -EBUSY
    m.update(key, bytes(32), 4)                        # BPF_F_LOCK
    be.wait(ms(60))
    assert struct.unpack_from("<Q", m.raw[key], 24)[0] == 0
    assert be.run("lockarr_arm", ARR, 1, ms(10)) == 0  # UNINIT again
    be.wait(ms(40))
    assert struct.unpack_from("<Q", m.raw[key], 24)[0] == 1


def test_lru_eviction_frees_timer(be):
    """htab_lru_map_delete_node -> check_and_free_fields: an evicted element's timer never
    fires; the key inserted again gets a fresh (UNINIT) timer."""
    assert be.update(LRU, 0) == 0
    assert be.init(LRU, 0) == 0 and be.set_cb(LRU, 0) == 0
    assert be.start(LRU, 0, ms(30)) == 0
    for k in range(1, 64):
        assert be.update(LRU, k) == 0
    assert be.elem(LRU, 0) is None                     # evicted
    be.wait(ms(60))
    assert be.update(LRU, 0) == 0
    assert be.init(LRU, 0) == 0
    assert be.fired(LRU, 0) == 0


def test_callback_deletes_its_own_element(be):
    hash_elem(be, 4)
    assert be.init(HASH, 4) == 0 and be.set_cb(HASH, 4) == 0
    assert be.mode(HASH, 4, MODE_DELETE_SELF) == 0
    assert be.start(HASH, 4, ms(1)) == 0
    be.wait(ms(20))
    assert be.elem(HASH, 4) is None


# -- §2 the program reference -------------------------------------------------------------------
def test_timer_pins_the_program_that_set_its_callback(be):
    """A timer holds a reference on the program that last set its callback, even after it
    fired, until the map's last user reference goes (every timer freed)."""
    import uuid

    assert be.init(ARR, 0) == 0 and be.set_cb(ARR, 0) == 0
    assert be.start(ARR, 0, ms(1)) == 0
    be.wait(ms(20))
    assert be.fired(ARR, 0) == 1
    setter = be.coll.programs["set_callback"].id
    other = be.coll.programs["cancel"].id
    path = f"/sys/fs/bpf/bpfsim-timer-{uuid.uuid4().hex[:8]}"
    be.pin_map(ARR, path)
    be.coll.close()                 # program fds (and one map fd) closed; the pin holds the map
    assert be.prog_alive(setter) and not be.prog_alive(other)
    be.unpin(path)                  # usercnt -> 0: timers freed, the program reference dropped
    assert not be.prog_alive(setter)


def test_the_program_reference_moves_to_the_last_setter(be):
    """A timer holds one program reference: set_callback from another program (tc_arm) puts
    the previous setter's reference and takes its own (helpers.c: __bpf_async_set_callback)."""
    import uuid

    assert be.init(ARR, 7) == 0 and be.set_cb(ARR, 7) == 0
    assert be.run_pkt("tc_arm") == 0                # set_callback + start 1 ms from tc
    be.wait(ms(20))
    assert be.fired(ARR, 7) == 1
    setter, tc = be.coll.programs["set_callback"].id, be.coll.programs["tc_arm"].id
    path = f"/sys/fs/bpf/bpfsim-timer-{uuid.uuid4().hex[:8]}"
    be.pin_map(ARR, path)
    be.coll.close()
    assert be.prog_alive(tc) and not be.prog_alive(setter)
    be.unpin(path)
    assert not be.prog_alive(tc)


def test_lru_replace_and_lookup_and_delete_free_the_timer(be):
    """LRU update of an existing key (htab_lru_map_update_elem -> htab_lru_push_free) and
    syscall lookup_and_delete on a HASH free the timer: it never fires."""
    assert be.update(LRU, 1) == 0
    hash_elem(be, 3)
    for m, k in ((LRU, 1), (HASH, 3)):
        assert be.init(m, k) == 0 and be.set_cb(m, k) == 0
        assert be.start(m, k, ms(30)) == 0
    assert be.update(LRU, 1) == 0
    be.handle(HASH).lookup_and_delete(struct.pack("<I", 3))     # the decoded value, unused
    be.wait(ms(80))
    assert be.fired(LRU, 1) == 0 and be.elem(HASH, 3) is None
    assert be.init(LRU, 1) == 0


# -- emulator only: exact virtual time -----------------------------------------------------------
@pytest.fixture
def sim():
    import bpfsim

    if not hasattr(bpfsim, "Runtime"):
        pytest.skip("bpfsim.Runtime is not available yet")
    b = SimBackend()
    yield b
    b.close()


def test_sim_callbacks_read_their_own_deadline(sim):
    assert sim.init(ARR, 0) == 0 and sim.set_cb(ARR, 0) == 0
    assert sim.mode(ARR, 0, MODE_REARM, 5 | (ms(2) << 8)) == 0
    t0 = sim.now()
    assert sim.start(ARR, 0, ms(2)) == 0
    assert sim.clock.next_deadline() == t0 + ms(2)
    assert sim.clock.advance(ms(100)) == 6
    e = sim.elem(ARR, 0)
    assert e["counter"] == 6 and e["stamp"] == t0 + ms(12)
    fires = sim.rt.timeline.events("fire")
    assert [r["time"] for r in fires] == [t0 + ms(2 * i) for i in range(1, 7)]
    assert {r["map"] for r in fires} == {"tarr"} and fires[0]["key"] == "00000000"
    assert fires[0]["callback"] == "cb_a" and fires[0]["prog"] == "set_callback"


def test_sim_boottime_timer_fires_at_resume(sim):
    assert sim.init(ARR, 0, CLOCK_BOOTTIME) == 0 and sim.set_cb(ARR, 0) == 0
    assert sim.init(ARR, 1, CLOCK_MONOTONIC) == 0 and sim.set_cb(ARR, 1) == 0
    t0, b0 = sim.now(), sim.now(CLOCK_BOOTTIME)
    assert sim.start(ARR, 0, 10 * 10**9) == 0
    assert sim.start(ARR, 1, 10 * 10**9) == 0
    assert sim.clock.suspend(30 * 10**9) == 1
    e = sim.elem(ARR, 0)
    assert e["stamp"] == t0 and e["boot_stamp"] == b0 + 30 * 10**9
    assert sim.fired(ARR, 1) == 0
    sim.clock.advance(10 * 10**9)
    assert sim.elem(ARR, 1)["stamp"] == t0 + 10 * 10**9


def test_sim_run_until_idle_guards_endless_chains(sim):
    from bpfsim.errors import ExecutionError

    assert sim.init(ARR, 0) == 0 and sim.set_cb(ARR, 0) == 0
    assert sim.mode(ARR, 0, MODE_REARM, 255) == 0           # 255 re-arms at 0 ns
    assert sim.start(ARR, 0, 0) == 0
    with pytest.raises(ExecutionError, match="re-arming"):
        sim.clock.run_until_idle(limit=100)
    # 1 fired inside the syscall program (irq exit), 101 before the guard tripped.
    assert sim.clock.run_until_idle() == 256 - 102
    assert sim.fired(ARR, 0) == 256


# -- §3 inner maps: the outer map's reference is not a user reference ---------------------------
INNER_OBJ = str(FIXTURES / "inner_map.bpf.o")


@pytest.mark.parametrize("backend", ["sim", pytest.param("kernel", marks=pytest.mark.kernel)])
def test_inner_map_without_user_fd_gets_eperm(backend):
    if backend == "kernel":
        why = kernel_skip_reason()
        if why:
            pytest.skip(why)
        import bpfsim.kernel

        coll, run = bpfsim.kernel.load(INNER_OBJ), syscall_test_run
        rt = None
    else:
        import bpfsim

        rt = bpfsim.Runtime()
        coll = rt.load(INNER_OBJ)

        def run(prog, ctx):
            return _s32(prog.test_run(ctx=ctx).retval)
    try:
        prog = coll.programs["inner_init"]
        assert run(prog, bytes(8)) == 0
        assert run(prog, bytes(8)) == -EBUSY
        coll.maps["inner"].close()          # the last user reference: timers freed
        assert run(prog, bytes(8)) == -1    # -EPERM although the outer map still holds it
    finally:
        coll.close()
        if rt is not None:
            rt.close()


# -- §6 mutual cancel across CPUs, with real time on both backends -------------------------------
MODE_SPIN_CANCEL_OTHER = 6


def real_time_backend(backend: str):
    """A backend on real time with two CPUs (the emulator with clock="real", or the kernel) and
    a function that moves the calling thread to a CPU."""
    if backend == "kernel":
        why = kernel_skip_reason()
        if why:
            pytest.skip(why)
        be = KernelBackend()

        def on_cpu(cpu):
            os.sched_setaffinity(0, {cpu})
    else:
        import bpfsim

        be = SimBackend.__new__(SimBackend)
        be.rt = bpfsim.Runtime(clock="real")
        be.coll = be.rt.load(OBJ)
        be.clock = be.rt.clock
        be.reopened = {}
        be.wait = lambda ns: time.sleep(ns / 1e9)

        def on_cpu(cpu):
            be.rt.cpu = cpu
    return be, on_cpu


@pytest.mark.parametrize("backend", ["sim-real", pytest.param("kernel", marks=pytest.mark.kernel)])
def test_concurrent_mutual_cancel_one_waits_other_edeadlk(backend):
    """Timers pinned to CPU 0 and CPU 1 fire together; each callback spins (20 ms / 150 ms:
    a wide gap, so a loaded machine cannot swap the order) and then cancels the other.  The
    first to cancel waits for the other callback and gets 0;
    the second finds itself being cancelled and gets -EDEADLK (helpers.c: `cancelling`)."""
    be, on_cpu = real_time_backend(backend)
    try:
        for k, other, spin in ((0, 1, ms(20)), (1, 0, ms(150))):
            assert be.init(ARR, k) == 0 and be.set_cb(ARR, k) == 0
            assert be.mode(ARR, k, MODE_SPIN_CANCEL_OTHER, other | (spin << 8)) == 0
        deadline = be.now() + ms(50)
        for k in (0, 1):
            on_cpu(k)
            assert be.start(ARR, k, deadline, BPF_F_TIMER_ABS | BPF_F_TIMER_CPU_PIN) == 0
        on_cpu(0)
        be.wait(ms(400))
        a, b = be.elem(ARR, 0), be.elem(ARR, 1)
        assert (a["cpu"], b["cpu"]) == (0, 1)
        assert (a["ret"], b["ret"]) == (0, -EDEADLK)
    finally:
        be.close()


@pytest.mark.parametrize("backend", ["sim-real", pytest.param("kernel", marks=pytest.mark.kernel)])
def test_start_and_cancel_while_the_callback_runs_on_another_cpu(backend):
    """§5: starting a timer whose callback is running elsewhere queues it again (it fires once
    more after the callback); §6: cancel from process context waits for the running callback
    and returns 0 (hrtimer_cancel: not queued, only running).  The callback runs on CPU 1 and
    spins 250 ms (MODE_DELETE_SELF on an array: the final delete just fails)."""
    be, on_cpu = real_time_backend(backend)
    try:
        for k in (0, 1):
            assert be.init(ARR, k) == 0 and be.set_cb(ARR, k) == 0
            assert be.mode(ARR, k, MODE_DELETE_SELF, ms(250)) == 0
        # timer 0: started again while its callback runs
        on_cpu(1)
        assert be.start(ARR, 0, ms(10), BPF_F_TIMER_CPU_PIN) == 0
        on_cpu(0)
        be.wait(ms(80))                                   # the callback is spinning now
        assert be.fired(ARR, 0) == 1
        assert be.mode(ARR, 0, MODE_COUNT) == 0           # its next run only counts
        assert be.start(ARR, 0, ms(5)) == 0
        be.wait(ms(300))
        assert be.fired(ARR, 0) == 2
        # timer 1: cancelled while its callback runs
        on_cpu(1)
        assert be.start(ARR, 1, ms(10), BPF_F_TIMER_CPU_PIN) == 0
        on_cpu(0)
        be.wait(ms(80))
        assert be.fired(ARR, 1) == 1
        t0 = time.monotonic()
        assert be.cancel(ARR, 1) == 0                     # waits for the running callback
        assert time.monotonic() - t0 > 0.05               # ... which had > 100 ms left
        assert be.elem(ARR, 1)["ret"] == -EINVAL          # it finished (array delete: -EINVAL)
        be.wait(ms(50))
        assert be.fired(ARR, 1) == 1
    finally:
        be.close()


@pytest.mark.parametrize("backend", ["sim-real", pytest.param("kernel", marks=pytest.mark.kernel)])
def test_callbacks_on_one_cpu_run_one_after_the_other(backend):
    """§7/§11: the timer softirq does not nest: two timers pinned to CPU 1 and due together
    run one after the other (each spins 150 ms), never at the same time."""
    be, on_cpu = real_time_backend(backend)
    try:
        for k in (0, 1):
            assert be.init(ARR, k) == 0 and be.set_cb(ARR, k) == 0
            assert be.mode(ARR, k, MODE_DELETE_SELF, ms(150)) == 0
        on_cpu(1)
        deadline = be.now() + ms(10)
        for k in (0, 1):
            assert be.start(ARR, k, deadline, BPF_F_TIMER_ABS | BPF_F_TIMER_CPU_PIN) == 0
        on_cpu(0)
        be.wait(ms(80))                                   # the first callback is spinning
        assert (be.fired(ARR, 0), be.fired(ARR, 1)) == (1, 0)
        be.wait(ms(400))
        a, b = be.elem(ARR, 0), be.elem(ARR, 1)
        assert (a["counter"], b["counter"], a["cpu"], b["cpu"]) == (1, 1, 1, 1)
        assert b["stamp"] - a["stamp"] >= ms(150)
    finally:
        be.close()


# -- §3 user references: uref drop, GET_FD_BY_ID and re-pin -------------------------------------
def test_uref_drop_while_armed_never_fires_and_value_bytes_survive(be):
    """map_release_uref cancels and frees every timer (an armed one never fires) but leaves the
    other value bytes; BPF_MAP_GET_FD_BY_ID raises usercnt again and init works again."""
    assert be.init(ARR, 0) == 0 and be.set_cb(ARR, 0) == 0
    assert be.mode(ARR, 0, MODE_REARM, 3 | (ms(1) << 8)) == 0      # value bytes to keep
    assert be.start(ARR, 0, ms(100)) == 0
    map_id = be.map_id(ARR)
    be.close_map(ARR)                          # the last user reference: programs hold refcnt only
    assert be.init(ARR, 1) == -1               # -EPERM: usercnt 0
    assert be.set_cb(ARR, 0) == -EINVAL        # the slot is UNINIT
    assert be.start(ARR, 0, ms(1)) == -EINVAL
    be.wait(ms(200))
    be.reopen_map(ARR, map_id)
    e = be.elem(ARR, 0)
    assert e["counter"] == 0                   # never fired
    assert (e["mode"], e["arg"], e["arg2"]) == (MODE_REARM, 3, ms(1))
    assert be.init(ARR, 0) == 0 and be.set_cb(ARR, 0) == 0
    assert be.mode(ARR, 0, MODE_COUNT) == 0 and be.start(ARR, 0, ms(5)) == 0
    be.wait(ms(40))
    assert be.fired(ARR, 0) == 1


def test_pin_is_a_user_reference_and_repin_enables_init(be):
    import uuid

    path = f"/sys/fs/bpf/bpfsim-timer-{uuid.uuid4().hex[:8]}"
    map_id = be.map_id(ARR)
    be.pin_map(ARR, path)
    be.close_map(ARR)                          # the pin holds the only user reference
    assert be.init(ARR, 0) == 0
    be.unpin(path)                             # usercnt -> 0: timers freed
    assert be.init(ARR, 1) == -1               # -EPERM
    assert be.cancel(ARR, 0) == -EINVAL        # freed: UNINIT
    be.reopen_map(ARR, map_id)
    be.pin_map(ARR, path)                      # re-pin through the new fd, then close the fd
    be.close_map(ARR)
    try:
        assert be.init(ARR, 1) == 0 and be.init(ARR, 0) == 0
    finally:
        be.unpin(path)


# -- §10 user-space bytes never reach the timer ---------------------------------------------------
def test_user_update_never_writes_timer_bytes(be):
    """copy_map_value skips the timer: 0xff bytes at its offset are ignored on ARRAY (update
    frees the timer: init gives 0, not -EBUSY), on a new HASH element, and on a BPF_F_LOCK
    in-place update that keeps an armed timer running; lookups show zeros there."""
    junk = b"\xff" * 16 + bytes(ELEM_SIZE - 16)
    assert be.init(ARR, 0) == 0 and be.set_cb(ARR, 0) == 0 and be.start(ARR, 0, ms(300)) == 0
    be.sys_update(ARR, 0, junk)
    be.sys_update(HASH, 5, junk)
    for m, k in ((ARR, 0), (HASH, 5)):
        assert be.elem(m, k)["counter"] == 0      # elem() also checks the timer bytes read 0
        assert be.init(m, k) == 0 and be.set_cb(m, k) == 0
        assert be.start(m, k, ms(5)) == 0
    be.wait(ms(40))
    assert be.fired(ARR, 0) == 1 and be.fired(HASH, 5) == 1
    key, m = struct.pack("<I", 2), be.coll.maps["tlock"]
    m.raw[key] = bytes(32)
    assert be.run("lock_arm", ARR, 2, ms(40)) == 0
    m.update(key, b"\xff" * 16 + bytes(16), 4)           # BPF_F_LOCK: in place
    assert m.raw[key][:16] == bytes(16)
    be.wait(ms(80))
    assert struct.unpack_from("<Q", m.raw[key], 24)[0] == 1


# -- §1.6 / §8.6 inner maps -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sim", pytest.param("kernel", marks=pytest.mark.kernel)])
def test_inner_map_timer_fires_with_the_inner_map(backend):
    """A timer in a map reached through ARRAY_OF_MAPS is initialized with the inner map pointer
    of the same lookup and fires into the inner map's element (key 0)."""
    if backend == "kernel":
        why = kernel_skip_reason()
        if why:
            pytest.skip(why)
        import bpfsim.kernel

        coll, rt = bpfsim.kernel.load(INNER_OBJ), None

        def run(prog, ctx):
            return syscall_test_run(prog, ctx)

        def wait(ns):
            time.sleep(ns / 1e9 + 0.03)
    else:
        import bpfsim

        rt = bpfsim.Runtime()
        coll = rt.load(INNER_OBJ)

        def run(prog, ctx):
            return _s32(prog.test_run(ctx=ctx).retval)

        wait = rt.clock.advance
    try:
        arm = coll.programs["inner_arm"]
        assert run(arm, struct.pack("<Q", ms(5))) == 0
        assert run(arm, struct.pack("<Q", ms(5))) == -EBUSY      # restarted
        wait(ms(40))
        raw = coll.maps["inner"].raw[bytes(4)]
        assert raw[:16] == bytes(16)
        assert struct.unpack_from("<QI", raw, 16) == (1, 0)
    finally:
        coll.close()
        if rt is not None:
            rt.close()
