"""§9: the timer helpers reach every program type whose get_func_proto falls back to
bpf_base_func_proto (helpers.c, CAP_BPF block).  One fixture per program type
(tests/fixtures/timer/timer_in_<type>.bpf.o, one body from prog_type_timer.h: lookup, init,
set_callback, start); the emulator must accept each, and its verdict must equal the kernel's.

Not here: tracing types (kprobe, tracepoint, raw_tp, perf_event: rejected, test_timer_rules.py)
and LSM (this machine's kernel refuses any LSM program with EPERM, so no twin is possible)."""

from __future__ import annotations

from pathlib import Path

import pytest

import bpfsim
from bpfsim.errors import BpfError, VerifierError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "timer"
TYPES = [
    "cgroup_device", "cgroup_skb", "cgroup_sock", "cgroup_sock_addr", "cgroup_sockopt",
    "cgroup_sysctl", "flow_dissector", "lwt_in", "lwt_xmit", "netfilter", "sched_act",
    "sk_lookup", "sk_msg", "sk_reuseport", "sk_skb", "sock_ops", "socket_filter",
]


def _obj(name: str) -> Path:
    return FIXTURES / f"timer_in_{name}.bpf.o"


def _verdict(load, obj: Path) -> str:
    try:
        with load(obj):
            return "accepted"
    except VerifierError as exc:
        return f"rejected: {exc.message}"
    except BpfError as exc:
        return f"error: {type(exc).__name__}"


@pytest.mark.parametrize("name", TYPES)
def test_timer_helpers_accepted_in_program_type(name: str) -> None:
    assert _verdict(bpfsim.load, _obj(name)) == "accepted"


@pytest.mark.kernel
@pytest.mark.parametrize("name", TYPES)
def test_same_verdict_as_kernel(name: str) -> None:
    import bpfsim.kernel
    from bpfsim.kernel.probes import kernel_available

    ok, why = kernel_available()
    if not ok:
        pytest.skip(why)
    assert _verdict(bpfsim.load, _obj(name)) == _verdict(bpfsim.kernel.load, _obj(name))
