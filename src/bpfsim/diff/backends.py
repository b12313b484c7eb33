"""The two backends behind one small driver interface, so a diff drives both the same way.

Job: load a CollectionSpec, run programs, let time pass, pin/unpin/get_pinned, read the trace —
on the emulator (`bpfsim.Runtime`) or on the running kernel (`bpfsim.kernel`).  Public API
only; must not reach into runtime or kernel internals.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bpfsim.kernel.bpffs import make_dir, remove_tree
from bpfsim.kernel.tracefs import TraceReader
from bpfsim.units import NSEC_PER_SEC

# After a real sleep, let the kernel's soft-irq run timers that fell due at its very end.
REAL_TIME_SLACK_NS = 5_000_000


class Backend:
    """What a scenario step needs from a backend."""

    name = "?"
    pin_root = "/sys/fs/bpf"

    def load(self, spec: Any) -> Any:
        raise NotImplementedError

    def advance(self, ns: int) -> None:
        raise NotImplementedError

    def get_pinned(self, path: str) -> Any:
        raise NotImplementedError

    def unpin(self, path: str) -> None:
        raise NotImplementedError

    def trace(self) -> list[str]:
        """bpf_printk messages since the last call (the text after `bpf_trace_printk: `)."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Create the per-run pin directory."""

    def cleanup(self) -> None:
        """Remove the per-run pin directory (pins inside are removed by the driver)."""

    def close(self) -> None:
        pass


def trace_message(line: str) -> str:
    """The message part of a trace_pipe line (pid, CPU and timestamp differ between backends)."""
    marker = "bpf_trace_printk: "
    i = line.find(marker)
    return line[i + len(marker):] if i >= 0 else line


def this_task() -> Any:
    """The emulator's "current task" as the kernel sees this thread during BPF_PROG_TEST_RUN:
    bpf_get_current_pid_tgid / uid_gid / comm then agree between the backends (the default
    Task, pid 1000 "bpfsim", is a fixed stand-in)."""
    import threading

    import bpfsim

    try:
        with open("/proc/thread-self/comm") as f:
            comm = f.read().rstrip("\n")
    except OSError:
        comm = "bpfsim"
    return bpfsim.Task(comm=comm, pid=threading.get_native_id(), tgid=os.getpid(),
                       uid=os.getuid(), gid=os.getgid())


class SimBackend(Backend):
    """The emulator: a fresh Runtime with the virtual clock (or the real one)."""

    name = "sim"

    def __init__(self, clock: str = "virtual", runtime: Any = None) -> None:
        import bpfsim

        self.rt = runtime if runtime is not None else bpfsim.Runtime(clock=clock, task=this_task())
        self.clock = clock
        self._seen = 0
        self.pin_root = f"/sys/fs/bpf/bpfsim-diff-{os.getpid()}"

    def load(self, spec: Any) -> Any:
        return self.rt.load(spec, pin_root=self.pin_root)

    def advance(self, ns: int) -> None:
        # The same slack the kernel side sleeps, so a timer re-armed at +1 us by its callback
        # has had the same time to fire on both sides.
        if self.clock == "virtual":
            self.rt.clock.advance(ns + REAL_TIME_SLACK_NS)
        else:
            time.sleep((ns + REAL_TIME_SLACK_NS) / NSEC_PER_SEC)

    def prepare(self) -> None:
        self.rt.mkdir(self.pin_root)

    def get_pinned(self, path: str) -> Any:
        return self.rt.get_pinned(path)

    def unpin(self, path: str) -> None:
        self.rt.unpin(path)

    def trace(self) -> list[str]:
        lines = list(self.rt.trace_pipe)
        new, self._seen = lines[self._seen:], len(lines)
        return [trace_message(x) for x in new]

    def close(self) -> None:
        self.rt.close()


class KernelBackend(Backend):
    """The running kernel through `bpfsim.kernel`; time passes by sleeping."""

    name = "kernel"

    def __init__(self) -> None:
        import bpfsim.kernel as kernel

        self.k = kernel
        self.pin_root = f"/sys/fs/bpf/bpfsim-diff-{os.getpid()}"
        self._trace = TraceReader()

    def load(self, spec: Any) -> Any:
        return self.k.load(spec, pin_root=self.pin_root)

    def advance(self, ns: int) -> None:
        time.sleep((ns + REAL_TIME_SLACK_NS) / NSEC_PER_SEC)

    def prepare(self) -> None:
        make_dir(self.pin_root)

    def cleanup(self) -> None:
        """Remove the per-run directory with whatever is still pinned in it (LIBBPF_PIN_BY_NAME
        maps are pinned there by load)."""
        remove_tree(self.pin_root)

    def get_pinned(self, path: str) -> Any:
        return self.k.get_pinned(path)

    def unpin(self, path: str) -> None:
        self.k.unpin(path)

    def trace(self) -> list[str]:
        return [trace_message(x) for x in self._trace.read()]

    def close(self) -> None:
        self._trace.close()
