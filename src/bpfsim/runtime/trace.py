"""The trace pipe: what `bpf_trace_printk` (bpf_printk) writes, in the kernel's text format.

Job: record each printk event with its CPU, task, context flags and timestamp, and render the
lines exactly as `/sys/kernel/tracing/trace_pipe` shows them.  Formatting the message itself
(the `%` rules) is `helpers/printk.py`'s job.  Must not import `kernel`.

The line format (kernel/trace/trace_output.c: trace_print_context, measured on 6.18):

    `%16s-%-7d [%03d] %5s %5lu.%06lu: bpf_trace_printk: <msg>`

e.g. `         bpftool-6786    [001] b..11   571.171811: bpf_trace_printk: hello`.
The kernel appends "\\n" to every event, so a message ending in "\\n" gives an extra empty
line; `lines` reproduces that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# Context flags (irqs-off/BH, need-resched, hard/softirq, preempt-depth, migrate-disable) as the
# 6.18 machine prints them: a BPF_PROG_TEST_RUN runs with BH disabled, preempt depth 1 and
# migration disabled (test_run.c: bpf_test_run); a bpf_timer callback runs from the hrtimer
# softirq (helpers.c: bpf_timer_cb).
FLAGS_PROG_RUN = "b..11"
FLAGS_TIMER_SOFTIRQ = "..s21"
# SYSCALL test_run: bpf_prog_run_pin_on_cpu (migrate_disable only, bottom halves on);
# RAW_TRACEPOINT test_run: get_cpu() + rcu_read_lock (preempt depth 2, no migrate-disable).
FLAGS_SYSCALL = "...11"
FLAGS_RAW_TP = "...2."


@dataclass(frozen=True)
class TraceEvent:
    """One bpf_trace_printk call."""

    timestamp_ns: int
    cpu: int
    comm: str
    pid: int
    flags: str
    message: str

    def render(self) -> str:
        """The event's text as trace_pipe prints it (may contain newlines, ends without one)."""
        secs, rem = divmod(self.timestamp_ns, 1_000_000_000)
        return (f"{self.comm[:16]:>16}-{self.pid:<7d} [{self.cpu:03d}] {self.flags} "
                f"{secs:5d}.{rem // 1000:06d}: bpf_trace_printk: {self.message}")


class TracePipe:
    """The per-runtime trace buffer.  `clock()` gives the timestamp (the trace clock)."""

    def __init__(self, clock: Callable[[], int], comm: str, pid: int) -> None:
        self._clock = clock
        self.events: list[TraceEvent] = []
        self._lock = threading.Lock()
        self._default = (FLAGS_PROG_RUN, comm, pid)
        self._context: dict[int, list[tuple[str, str, int]]] = {}

    @contextmanager
    def context(self, cpu: int, flags: str, comm: str | None = None,
                pid: int | None = None) -> Iterator[None]:
        """Events on `cpu` inside this block carry `flags` (and task comm/pid): the timer
        manager wraps callbacks with FLAGS_TIMER_SOFTIRQ."""
        _, dcomm, dpid = self._current(cpu)
        stack = self._context.setdefault(cpu, [])
        stack.append((flags, dcomm if comm is None else comm, dpid if pid is None else pid))
        try:
            yield
        finally:
            stack.pop()

    def push(self, cpu: int, flags: str) -> None:
        """The cheap form of `context` for the hot path (a program run): pair with `pop`."""
        stack = self._context.get(cpu)
        if stack is None:
            stack = self._context[cpu] = []
        top = stack[-1] if stack else self._default
        stack.append((flags, top[1], top[2]))

    def pop(self, cpu: int) -> None:
        self._context[cpu].pop()

    def _current(self, cpu: int) -> tuple[str, str, int]:
        stack = self._context.get(cpu)
        return stack[-1] if stack else self._default

    def set_task(self, comm: str, pid: int) -> None:
        """The task printk lines name outside any `context` block (the runtime's current task)."""
        self._default = (self._default[0], comm, pid)

    def emit(self, message: str, cpu: int) -> None:
        flags, comm, pid = self._current(cpu)
        ev = TraceEvent(self._clock(), cpu, comm, pid, flags, message)
        with self._lock:
            self.events.append(ev)

    @property
    def lines(self) -> list[str]:
        """All lines so far, as reading trace_pipe would give them (without newlines)."""
        text = "".join(ev.render() + "\n" for ev in self.events)
        return text.splitlines()

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
