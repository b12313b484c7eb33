"""`Kernel`: the real kernel behind the same small surface as the emulator's `Runtime`.

Job: `load`, `get_pinned`, `unpin`, `ncpus` and a `clock` whose `advance(ns)` lets real time
pass, so a test body can drive either backend (see `bpfsim.testing.plugin`).
Must not call bpf(2) itself (only `kernel.syscall` does).
"""

from __future__ import annotations

import os
import time
from typing import Any

from bpfsim.errors import BpfError, KernelError, PinError, UsageError
from bpfsim.kernel import syscall as sc
from bpfsim.kernel.maps import KernelMap, possible_cpus
from bpfsim.kernel.programs import KernelProgram
from bpfsim.uapi.constants import CLOCK_BOOTTIME, CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_TAI

_HOST = {CLOCK_MONOTONIC: time.CLOCK_MONOTONIC, CLOCK_REALTIME: time.CLOCK_REALTIME,
         CLOCK_BOOTTIME: getattr(time, "CLOCK_BOOTTIME", 7), CLOCK_TAI: getattr(time, "CLOCK_TAI", 11)}


class KernelClock:
    """The host's clocks.  `advance(ns)` sleeps: the kernel's timers fire on their own."""

    kind = "real"

    def now(self, clockid: int = CLOCK_MONOTONIC) -> int:
        try:
            return time.clock_gettime_ns(_HOST[clockid])
        except KeyError:
            raise UsageError(f"unknown clock id {clockid}") from None

    def advance(self, ns: int) -> None:
        """Let `ns` nanoseconds of real time pass (the emulator's virtual clock jumps instead)."""
        if ns < 0:
            raise UsageError("time cannot go backwards: advance() needs ns >= 0")
        time.sleep(ns / 1e9)

    def __repr__(self) -> str:
        return f"<KernelClock monotonic={self.now()}>"


class Kernel:
    """The running kernel as a backend.  Stateless apart from the clock (and, with
    `trace=True`, a private tracefs instance collecting bpf_printk lines from now on): every
    object lives in the kernel and is reached through fds and pins."""

    backend = "kernel"

    def __init__(self, *, trace: bool = False) -> None:
        self.clock = KernelClock()
        self.ncpus = possible_cpus()
        self._trace: Any = None
        self._lines: list[str] = []
        if trace:
            from bpfsim.kernel.tracefs import TraceReader

            self._trace = TraceReader()

    @property
    def trace_pipe(self) -> list[str]:
        """Every bpf_printk line since this Kernel was made with `trace=True` (trace_pipe
        format, like the emulator's `Runtime.trace_pipe`); UsageError without `trace=True`."""
        if self._trace is None:
            raise UsageError("this Kernel does not collect trace lines: make it with trace=True")
        self._lines += self._trace.read()
        return list(self._lines)

    def load(self, source: Any, pin_root: str | None = None, **kw: Any):
        """Like `Runtime.load`: a path or a CollectionSpec -> KernelCollection."""
        from bpfsim.kernel.loader import load

        return load(source, pin_root, **kw)

    def get_pinned(self, path: str) -> KernelMap | KernelProgram:
        """A new handle (a new fd, a new user reference) on the object pinned at `path`.
        A map gets its BTF from the kernel, so it decodes like the handle that pinned it."""
        try:
            fd = sc.obj_get(path)
        except KernelError as e:
            raise PinError(f"get pinned {path}: {e}") from None
        kind = sc.obj_kind(fd)
        if kind == "prog":
            return KernelProgram.from_fd(fd, name=os.path.basename(path))
        if kind != "map":
            sc.close(fd)
            raise PinError(f"{path} holds a BPF {kind}, not a map or program")
        return KernelMap.from_fd(fd, name=os.path.basename(path), btf=_map_btf(fd))

    def unpin(self, path: str) -> None:
        """Remove a pin (the object goes away with its last reference)."""
        if not sc._on_bpffs(path):
            raise PinError(f"{path} is not on a bpf filesystem")
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise PinError(f"nothing pinned at {path}") from None
        except OSError as e:
            raise PinError(f"unpin {path}: {e.strerror}") from None

    def close(self) -> None:
        """Remove the trace instance, if any (objects live on in the kernel as fds and pins)."""
        if self._trace is not None:
            self._trace.close()
            self._trace = None

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _map_btf(fd: int):
    """The BTF a map was created with, fetched back from the kernel, or None."""
    from bpfsim.btf import Btf

    info = sc.map_get_info(fd)
    if not info.btf_id:
        return None
    try:
        bfd = sc.btf_get_fd_by_id(info.btf_id)
    except KernelError:
        return None
    try:
        return Btf.parse(sc.btf_get_data(bfd))
    except (BpfError, KernelError):
        return None
    finally:
        sc.close(bfd)
