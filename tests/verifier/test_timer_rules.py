"""The verifier's bpf_timer rules (spec/bpf_timer.md §1.3, §1.5, §8, §9): each fixture breaks one
rule; the emulator must reject it with the kernel's exact message and errno.  The `kernel`
twin loads the same object into Linux and checks that both verdicts and messages agree."""

from __future__ import annotations

from pathlib import Path

import pytest

import bpfsim
from bpfsim.errors import VerifierError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "verifier"
# accepted objects other than timer_ok live with the timer fixtures (every object under
# fixtures/verifier except timer_ok must fail to load: tests/test_bad_input.py)
ACCEPTED_DIR = Path(__file__).parent.parent / "fixtures" / "timer"

# fixture -> (the kernel's message, errno); the messages are verbatim from Linux 6.18
REJECTED = {
    "timer_on_stack": ("R1 type=fp expected=map_value", 13),
    "timer_unchecked_lookup": (
        "R0 pointer arithmetic on map_value_or_null prohibited, null-check it first", 13),
    "timer_var_offset": (
        "R1 doesn't have constant offset. bpf_timer has to be at the constant offset", 22),
    "timer_no_timer_in_map": ("map 'pmap' has no valid bpf_timer", 22),
    "timer_two_timers": ("map 'twomap' has no valid bpf_timer", 22),
    "timer_percpu_no_btf": ("map 'pcpu' has to have BTF in order to use bpf_timer", 22),
    "timer_wrong_offset": ("off 24 doesn't point to 'struct bpf_timer' that is at 8", 22),
    "timer_map_mismatch": (
        "timer pointer in R1 map_uid=0 doesn't match map pointer in R2 map_uid=0", 22),
    "timer_map_uid_mismatch": (
        "timer pointer in R1 map_uid=1 doesn't match map pointer in R2 map_uid=2", 22),
    "timer_global_callback": ("callback function not static", 22),
    "timer_callback_returns_1": (
        "At async callback return the register R0 has smin=1 smax=1 should have been in [0, 0]", 22),
    "timer_callback_writes_key": ("write to change key R2 not allowed", 13),
    "timer_direct_access": ("bpf_timer cannot be accessed directly by load/store", 13),
    "timer_update_from_value": ("bpf_timer cannot be accessed directly by load/store", 13),
    "timer_not_gpl": ("cannot call GPL-restricted function from non-GPL compatible program", 22),
    "timer_in_kprobe": ("tracing progs cannot use bpf_timer yet", 22),
    "timer_in_tracepoint": ("tracing progs cannot use bpf_timer yet", 22),
    "timer_in_raw_tp": ("tracing progs cannot use bpf_timer yet", 22),
    "timer_in_perf_event": ("tracing progs cannot use bpf_timer yet", 22),
    "timer_callback_sleeps": ("helper call might sleep in a non-sleepable prog", 22),
    "timer_probe_read_into": ("bpf_timer cannot be accessed directly by load/store", 13),
    "timer_array_of_two": ("map 'arrmap' has no valid bpf_timer", 22),
    # created with BTF (a real timer would give -EOPNOTSUPP, then libbpf's retry without BTF
    # "has to have BTF"): the offset-4 timer is plain bytes
    "timer_in_bss": (            # recognised in the DATASEC, but only another map can be passed
        "timer pointer in R1 map_uid=0 doesn't match map pointer in R2 map_uid=0", 22),
    "timer_misaligned": ("map 'mismap' has no valid bpf_timer", 22),
}

# accepted: the documented pattern, a timer in a nested struct, a tp_btf (TRACING) program
ACCEPTED = ["timer_ok", "timer_nested", "timer_in_tp_btf"]


def _path(name: str) -> Path:
    path = FIXTURES / f"{name}.bpf.o"
    return path if path.exists() else ACCEPTED_DIR / f"{name}.bpf.o"


def _sim_verdict(name: str) -> tuple[str, int] | None:
    try:
        with bpfsim.load(_path(name)):
            return None
    except VerifierError as exc:
        return exc.message, exc.errno


def _kernel_verdict(name: str) -> tuple[str, int] | None:
    import bpfsim.kernel

    try:
        with bpfsim.kernel.load(_path(name)):
            return None
    except VerifierError as exc:
        return exc.message, exc.errno


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_rejected_with_kernel_message(name: str) -> None:
    assert _sim_verdict(name) == REJECTED[name]


@pytest.mark.parametrize("name", ACCEPTED)
def test_documented_pattern_is_accepted(name: str) -> None:
    assert _sim_verdict(name) is None


@pytest.mark.kernel
@pytest.mark.parametrize("name", sorted([*REJECTED, *ACCEPTED]))
def test_same_verdict_as_kernel(name: str) -> None:
    assert _sim_verdict(name) == _kernel_verdict(name)
