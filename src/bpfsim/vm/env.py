"""What a helper sees of the running program, and the signals helpers send back to the VM.

Job: the boundary between the VM and whoever supplies helpers (the runtime, the conformance
runner).  Must not import `runtime`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bpfsim.isa.insn import Instruction
    from bpfsim.vm.memory import AddressSpace

# Function pointers (lddw BPF_PSEUDO_FUNC) live in a region id that is never mapped.
FUNC_PTR_REGION = 0xFF
FUNC_PTR_BASE = FUNC_PTR_REGION << 32


def func_pointer(insn_index: int) -> int:
    """The program-visible value of a pointer to the subprogram starting at `insn_index`."""
    return FUNC_PTR_BASE | insn_index


def func_pointer_target(value: int) -> int | None:
    """The instruction index a function pointer names, or None if `value` is not one."""
    if value >> 32 == FUNC_PTR_REGION:
        return value & 0xFFFFFFFF
    return None


class ExecEnv(Protocol):
    """The running program as a helper sees it."""

    mem: AddressSpace
    program: Any          # the runtime's Program (for callbacks: the main program owning them)
    cpu: int

    def call(self, func_ptr: int, *args: int) -> int:
        """Run the BPF subprogram `func_ptr` (a callback) with r1..r5 = args; return its r0."""
        ...


Helper = Callable[..., int]          # fn(env, r1, r2, r3, r4, r5) -> int
HelperTable = Mapping[int, Helper]   # helper id -> implementation


class TailCallTarget(Protocol):
    """What `TailCall.target` must offer (the runtime's Program object, typically).

    The VM runs `insns` (one Instruction per slot, map addresses already in the lddw imm64s);
    if the target also has an `engine` attribute bound to the same AddressSpace, that engine's
    pre-decoded code is reused.  After the switch `ExecEnv.program` is the target."""

    name: str
    insns: Sequence[Instruction]


class TailCall(Exception):  # noqa: N818  (a control-flow signal, not an error)
    """Raised by bpf_tail_call to replace the running program with `target` (a
    `TailCallTarget`); the VM keeps r1 (ctx) and gives the target a fresh stack frame, as the
    kernel does.  After MAX_TAIL_CALL_CNT (33) tail calls in one run the call falls through
    (execution continues after the helper call, r0 unchanged)."""

    def __init__(self, target: Any) -> None:
        super().__init__()
        self.target = target
