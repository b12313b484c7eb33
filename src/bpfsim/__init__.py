"""bpfsim: a pure-Python eBPF runtime with Linux's semantics (see docs/architecture.md).

The public API lives here: `load_spec`, `Runtime`, `load`, the durations `ms`/`us`/`ns`/`s`
and the error classes.  Keep this module small; `bpfsim.kernel` (the real kernel backend) is
imported by whoever needs it.
"""

from bpfsim.errors import (
    BpfError,
    CallbackError,
    ExecutionError,
    InstructionBudgetExceeded,
    KernelError,
    KeyNotFound,
    LinkError,
    MapError,
    MapFull,
    MemoryFault,
    NotSupported,
    ParseError,
    PinError,
    UsageError,
    VerifierError,
)
from bpfsim.runtime.runtime import Runtime, Task, load
from bpfsim.spec.reader import load_spec
from bpfsim.units import ms, ns, parse_duration, s, us

__all__ = [
    "BpfError", "CallbackError", "ExecutionError", "InstructionBudgetExceeded", "KernelError",
    "KeyNotFound", "LinkError", "MapError", "MapFull", "MemoryFault", "NotSupported", "ParseError",
    "PinError", "Runtime", "Task", "UsageError", "VerifierError", "load", "load_spec", "ms", "ns",
    "parse_duration", "s", "us",
]
