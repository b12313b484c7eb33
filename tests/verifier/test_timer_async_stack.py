"""§8.7: an async (timer) callback is its own stack-depth root.  verifier.c:
check_max_stack_depth starts a separate walk at every subprog marked is_async_cb, so the
program's frame and its callback's frame are not summed against MAX_BPF_STACK (512).

timer_async_stack_root: program ~400 bytes + callback ~400 bytes -> accepted by both.
timer_sync_stack_sum: the same callback also called directly -> the kernel sums the frames and
rejects ("combined stack size of 2 calls is 832. Too large"), and so does the emulator's
verifier (checker.py: _check_max_stack_depth).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import bpfsim
from bpfsim.errors import VerifierError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "timer"
ASYNC_ROOT = FIXTURES / "timer_async_stack_root.bpf.o"
SYNC_SUM = FIXTURES / "timer_sync_stack_sum.bpf.o"
SUM_MESSAGE = ("combined stack size of 2 calls is 832. Too large", 13)


def _verdict(load, obj: Path) -> tuple[str, int] | None:
    try:
        with load(obj):
            return None
    except VerifierError as exc:
        return exc.message, exc.errno


def _kernel_load():
    import bpfsim.kernel
    from bpfsim.kernel.probes import kernel_available

    ok, why = kernel_available()
    if not ok:
        pytest.skip(why)
    return bpfsim.kernel.load


def test_async_callback_stack_is_not_summed_with_the_program() -> None:
    assert _verdict(bpfsim.load, ASYNC_ROOT) is None


@pytest.mark.kernel
def test_async_callback_stack_root_same_verdict_as_kernel() -> None:
    assert _verdict(_kernel_load(), ASYNC_ROOT) is None


@pytest.mark.kernel
def test_kernel_sums_a_direct_call_of_the_callback() -> None:
    """The control: the fixture pair really crosses 512 when the frames are summed."""
    assert _verdict(_kernel_load(), SYNC_SUM) == SUM_MESSAGE


def test_emulator_sums_a_direct_call_of_the_callback() -> None:
    assert _verdict(bpfsim.load, SYNC_SUM) == SUM_MESSAGE
