"""The helper registry: `@helper("bpf_name")` records an implementation under its kernel id.

Job: one place where helper modules register, and `helper_table()` (in `helpers/__init__.py`)
reads.  A helper is `fn(env, r1, r2, r3, r4, r5) -> int` (vm/env.py); it reaches the emulated
kernel through `env.program.kernel` (`env.program` is the running `BpfProg`, for a callback the
main program that owns it).  Must not import the helper modules (they import this).
"""

from __future__ import annotations

from collections.abc import Callable

from bpfsim.errors import BpfError
from bpfsim.uapi.helper_ids import HELPER_IDS
from bpfsim.vm.env import Helper

HELPERS: dict[int, Helper] = {}


def helper(name: str) -> Callable[[Helper], Helper]:
    """Register `fn` as the implementation of helper `name` (a key of HELPER_IDS)."""
    if name not in HELPER_IDS:
        raise BpfError(f"unknown helper name {name!r}")

    def register(fn: Helper) -> Helper:
        HELPERS[HELPER_IDS[name]] = fn
        return fn

    return register


def u64(v: int) -> int:
    """A helper's return value as the 64-bit register the VM stores (negative errno wraps)."""
    return v & 0xFFFFFFFFFFFFFFFF


def s64(v: int) -> int:
    """A register value read as a signed 64-bit integer."""
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >> 63 else v


def s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v
