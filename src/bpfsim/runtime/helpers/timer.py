"""The four bpf_timer helpers (#169-#172): argument decoding around `kernel.timers`.

Job: turn register values into (TimerSlot, map, callback, calling program, CPU) and call the
TimerManager (runtime/timers.py), which holds every rule.  The verifier has already proved
that R1 points exactly at the map value's `struct bpf_timer` and that R2 of bpf_timer_init is
that map (verifier.c: process_timer_func); a pointer that still does not resolve to a timer
slot at run time is a MemoryFault, never a silent success.
Must not import `kernel` or `vm` internals beyond `vm.env`.
"""

from __future__ import annotations

from typing import Any

from bpfsim.errors import MemoryFault
from bpfsim.runtime.helpers.registry import helper, u64
from bpfsim.uapi.constants import ProgType
from bpfsim.vm.env import func_pointer_target


def timer_slot_at(mem: Any, addr: int) -> Any:
    """The TimerSlot whose 16 bytes start at program address `addr`.

    The maps make every value region's `owner` the element (or the array); the owner answers
    `timer_slot_at(offset)` or carries one `timer_slot`."""
    found = mem.find(addr)
    if found is not None:
        region, off = found
        owner = region.owner
        slot = None
        at = getattr(owner, "timer_slot_at", None)
        if callable(at):
            slot = at(off)
        elif getattr(owner, "timer_slot", None) is not None:
            slot = owner.timer_slot
        if slot is not None:
            return slot
    raise MemoryFault(f"bpf_timer helper: {addr:#x} is not a bpf_timer in a map value", address=addr)


def map_at(mem: Any, addr: int) -> Any:
    """The map a CONST_PTR_TO_MAP register names."""
    found = mem.find(addr)
    if found is None or found[0].kind != "map":
        raise MemoryFault(f"bpf_timer_init: {addr:#x} is not a map pointer", address=addr)
    return found[0].owner


def _timers(env: Any) -> Any:
    return env.program.kernel.timers


@helper("bpf_timer_init")
def bpf_timer_init(env: Any, timer: int, map_ptr: int, flags: int, _r4: int = 0, _r5: int = 0) -> int:
    return u64(_timers(env).init(timer_slot_at(env.mem, timer), map_at(env.mem, map_ptr), flags,
                                 cpu=env.cpu))


@helper("bpf_timer_set_callback")
def bpf_timer_set_callback(env: Any, timer: int, callback_fn: int, _r3: int = 0, _r4: int = 0,
                           _r5: int = 0) -> int:
    # The kernel passes the calling prog's aux in a hidden R3 (verifier.c: do_misc_fixups);
    # here it is env.program, the main program even inside a callback subprog.
    if func_pointer_target(callback_fn) is None:
        raise MemoryFault(f"bpf_timer_set_callback: {callback_fn:#x} is not a function pointer",
                          address=callback_fn)
    return u64(_timers(env).set_callback(timer_slot_at(env.mem, timer), callback_fn, env.program,
                                         cpu=env.cpu))


# Program types whose runs are in process context with bottom halves enabled, so a due
# timer's softirq can run in the middle of them (test_run.c: bpf_prog_test_run_syscall).
_PROCESS_CONTEXT = frozenset({ProgType.SYSCALL})


@helper("bpf_timer_start")
def bpf_timer_start(env: Any, timer: int, nsecs: int, flags: int, _r4: int = 0, _r5: int = 0) -> int:
    timers = _timers(env)
    ret = timers.start(timer_slot_at(env.mem, timer), nsecs, flags, cpu=env.cpu)
    if ret == 0 and getattr(env.program, "prog_type", None) in _PROCESS_CONTEXT:
        timers.irq_exit(env.cpu)
    return u64(ret)


@helper("bpf_timer_cancel")
def bpf_timer_cancel(env: Any, timer: int, _r2: int = 0, _r3: int = 0, _r4: int = 0, _r5: int = 0) -> int:
    return u64(_timers(env).cancel(timer_slot_at(env.mem, timer), cpu=env.cpu))
