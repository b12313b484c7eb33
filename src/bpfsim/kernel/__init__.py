"""The real kernel as bpfsim's second backend: the same `CollectionSpec`, loaded through bpf(2).

Public names: `load(path_or_spec, pin_root=None) -> KernelCollection` (the emulator
Collection's interface), `get_pinned(path)`, `unpin(path)`, `Kernel` (the Runtime-shaped
object), `kernel_available()`.  Only `kernel.syscall` calls bpf(2).  Must not be imported by
any layer below it.
"""

from __future__ import annotations

from typing import Any

from bpfsim.kernel.loader import KernelCollection, load
from bpfsim.kernel.maps import KernelMap
from bpfsim.kernel.probes import kernel_available
from bpfsim.kernel.programs import KernelProgram
from bpfsim.kernel.runtime import Kernel, KernelClock


def get_pinned(path: str) -> Any:
    """A new handle on the map or program pinned at `path` (see `Kernel.get_pinned`)."""
    return Kernel().get_pinned(path)


def unpin(path: str) -> None:
    """Remove the pin at `path` (see `Kernel.unpin`)."""
    Kernel().unpin(path)


__all__ = ["Kernel", "KernelClock", "KernelCollection", "KernelMap", "KernelProgram", "get_pinned",
           "kernel_available", "load", "unpin"]
