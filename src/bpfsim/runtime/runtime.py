"""`Runtime`: the emulated kernel's state, the object every internal piece receives as `kernel`.

Job: own the address space, CPUs and their locks, the clock and timers, the trace pipe, the
bpffs pin namespace, the seeded random source and the "current task"; load collections
(`collection.load_collection`), and the user-level pin calls (`get_pinned`, `unpin`).
Must not import `kernel` (the real one).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

from bpfsim.errors import ExecutionError, UsageError
from bpfsim.runtime.clock import Clock, RealClock, VirtualClock
from bpfsim.runtime.helpers import helper_table
from bpfsim.runtime.timers import TimerManager
from bpfsim.runtime.trace import FLAGS_TIMER_SOFTIRQ, TracePipe
from bpfsim.uapi.constants import CLOCK_MONOTONIC
from bpfsim.vm.env import func_pointer_target
from bpfsim.vm.interpreter import DEFAULT_BUDGET
from bpfsim.vm.memory import AddressSpace

DEFAULT_PIN_ROOT = "/sys/fs/bpf"
SPIN_LOCK_TIMEOUT_S = 10.0
# Licenses the kernel accepts as GPL-compatible (include/linux/license.h).
_GPL_LICENSES = {"GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL",
                 "Dual MPL/GPL"}


@dataclass
class Task:
    """The task the "current task" helpers describe (and trace lines name)."""

    comm: str = "bpfsim"
    pid: int = 1000
    tgid: int = 1000
    uid: int = 0
    gid: int = 0
    # bpf_get_current_task: an opaque kernel address (task_struct is not emulated).
    address: int = 0xFFFF_8880_0100_0000


def _make_clock(clock: str | Clock) -> Clock:
    if isinstance(clock, Clock):
        return clock
    if clock == "virtual":
        return VirtualClock()
    if clock == "real":
        return RealClock()
    raise UsageError(f"clock must be 'virtual', 'real' or a Clock, not {clock!r}")


class Runtime:
    """The emulated kernel: `rt.load(path)` gives a Collection; `rt.clock.advance(ms(5))` fires
    due timers; `rt.trace_pipe` holds the bpf_printk lines."""

    def __init__(self, ncpus: int = 2, clock: str | Clock = "virtual", seed: int = 0,
                 pin_root: str = DEFAULT_PIN_ROOT, task: Task | None = None,
                 insn_budget: int = DEFAULT_BUDGET, max_map_bytes: int = 1 << 30) -> None:
        if not isinstance(ncpus, int) or ncpus < 1:
            raise UsageError(f"ncpus must be a positive integer, not {ncpus!r}")
        self.ncpus = ncpus
        self.mem = AddressSpace()
        self.cpu_locks = [threading.RLock() for _ in range(ncpus)]
        self.cpu = 0                      # the CPU user-space calls (test_run) run on
        self.task = task if task is not None else Task()
        self.rng = random.Random(seed)
        self.seed = seed
        self.pin_root = pin_root
        self.insn_budget = insn_budget
        self.max_map_bytes = max_map_bytes    # bigger preallocated maps fail with -ENOMEM
        self.helpers = helper_table()
        self.clock = _make_clock(clock)
        self.trace = TracePipe(lambda: self.clock.now(CLOCK_MONOTONIC), self.task.comm, self.task.pid)
        self.timers = TimerManager(self)
        self._pins: Any = None
        self._rcu = threading.Lock()
        self._readers = 0                 # programs and callbacks running now (RCU readers)
        self._deferred: list[Any] = []
        self._spin_locks: dict[int, threading.Lock] = {}
        self._spin_guard = threading.Lock()
        self._collections: list[Any] = []
        self.closed = False

    @property
    def pins(self) -> Any:
        """The bpffs pin namespace (runtime/pinfs.py), created on first use."""
        if self._pins is None:
            from bpfsim.runtime.pinfs import PinFS

            self._pins = PinFS(self, DEFAULT_PIN_ROOT)
            if not (self.pin_root + "/").startswith(DEFAULT_PIN_ROOT + "/"):
                self._pins.mount(self.pin_root)
        return self._pins

    # -- public views ---------------------------------------------------------------------------
    @property
    def trace_pipe(self) -> list[str]:
        """Every bpf_printk line so far, as /sys/kernel/tracing/trace_pipe shows them."""
        return self.trace.lines

    @property
    def timeline(self) -> Any:
        """The timer timeline (init/start/fire/cancel... events, runtime/timeline.py)."""
        return self.timers.timeline

    def set_task(self, **fields: Any) -> None:
        """Change the current task (pid, tgid, uid, gid, comm)."""
        for k, v in fields.items():
            if not hasattr(self.task, k):
                raise UsageError(f"a task has no field {k!r}")
            setattr(self.task, k, v)
        self.trace.set_task(self.task.comm, self.task.pid)

    # -- loading --------------------------------------------------------------------------------
    def load(self, source: Any, pin_root: str | None = None, *, verify: bool = True) -> Any:
        """Load an object file (path or bytes) or a CollectionSpec; all-or-nothing.

        LIBBPF_PIN_BY_NAME maps are reused from, or pinned at, `pin_root` (default: the
        runtime's).  Raises ParseError/LinkError/VerifierError/PinError/MapError."""
        from bpfsim.runtime.collection import load_collection

        self._check_open()
        coll = load_collection(self, source, pin_root if pin_root is not None else self.pin_root,
                               verify=verify)
        self._collections.append(coll)
        return coll

    # -- pins -----------------------------------------------------------------------------------
    def pin_object(self, path: str, obj: Any) -> None:
        """BPF_OBJ_PIN of a kernel object (the pin takes its own reference)."""
        self.pins.pin(path, obj)

    def get_pinned(self, path: str) -> Any:
        """BPF_OBJ_GET: a new handle (a new user reference) on what is pinned at `path`."""
        from bpfsim.runtime.handles import Map
        from bpfsim.runtime.program import LoadedProgram, Program

        obj = self.pins.open(path)          # takes the new handle's reference
        if isinstance(obj, LoadedProgram):
            return Program(obj, owned=True)
        return Map(obj, owned=True)

    def mkdir(self, path: str) -> None:
        """mkdir in the emulated bpffs (parents included, an existing directory is fine)."""
        self.pins.mkdir(path)

    def unpin(self, path: str) -> None:
        """Remove the pin at `path` (unlink): drops the pin's reference."""
        self.pins.unpin(path)

    # -- what kernel objects call back ----------------------------------------------------------
    def run_callback(self, prog: Any, func_ptr: int, args: tuple[int, ...], cpu: int = 0) -> int:
        """Run a timer callback of `prog` on `cpu` as the hrtimer softirq does: holding the
        CPU's lock, trace lines flagged as softirq (trace.FLAGS_TIMER_SOFTIRQ)."""
        index = func_pointer_target(func_ptr)
        if index is None:
            raise ExecutionError(f"callback {func_ptr:#x} is not a function pointer")
        with self.cpu_locks[cpu], self.trace.context(cpu, FLAGS_TIMER_SOFTIRQ):
            self.rcu_read_lock()
            try:
                return prog.call_function(index, tuple(args), cpu)
            finally:
                self.rcu_read_unlock()

    # -- RCU: memory a running program may still hold ------------------------------------------
    def rcu_read_lock(self) -> None:
        """A program run or callback starts (the kernel runs BPF under rcu_read_lock)."""
        with self._rcu:
            self._readers += 1

    def rcu_read_unlock(self) -> None:
        """A run ends; the last one runs every deferred free (the grace period ends)."""
        with self._rcu:
            self._readers -= 1
            pending = self._deferred if self._readers == 0 else []
            if pending:
                self._deferred = []
        for fn in pending:
            fn()

    def defer_free(self, fn: Any) -> None:
        """call_rcu: run `fn` once no program or callback is running (now, if none is)."""
        with self._rcu:
            if self._readers:
                self._deferred.append(fn)
                return
        fn()

    def spin_lock(self, addr: int) -> None:
        """bpf_spin_lock: one lock per address (the value's 4-byte bpf_spin_lock)."""
        with self._spin_guard:
            lock = self._spin_locks.setdefault(addr, threading.Lock())
        if not lock.acquire(timeout=SPIN_LOCK_TIMEOUT_S):
            raise ExecutionError(f"bpf_spin_lock at {addr:#x}: deadlock (held for "
                                 f"{SPIN_LOCK_TIMEOUT_S:.0f} s)")

    def spin_unlock(self, addr: int) -> None:
        with self._spin_guard:
            lock = self._spin_locks.get(addr)
        if lock is None or not lock.locked():
            raise ExecutionError(f"bpf_spin_unlock at {addr:#x}: lock not held")
        lock.release()

    @staticmethod
    def gpl_compatible(license: str) -> bool:
        """license_is_gpl_compatible (include/linux/license.h)."""
        return license in _GPL_LICENSES

    # -- shutdown -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise UsageError("the runtime is closed")

    def close(self) -> None:
        """Close every collection, stop the clock's threads; idempotent."""
        if self.closed:
            return
        self.closed = True
        for coll in self._collections:
            coll.close()
        self._collections.clear()
        self.timers.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Runtime ncpus={self.ncpus} clock={self.clock.kind}>"


def load(source: Any, pin_root: str | None = None, **kwargs: Any) -> Any:
    """`bpfsim.load(path)`: a fresh Runtime, then `rt.load(path)`; the collection keeps the
    runtime reachable as `coll.runtime`."""
    rt = Runtime(**kwargs)
    try:
        return rt.load(source, pin_root)
    except BaseException:
        rt.close()          # a failed load leaves nothing: no runtime, no real-clock threads
        raise

