"""kfunc calls and CO-RE relocation in the emulator's loader (runtime/kfuncs.py,
runtime/collection.py), as libbpf and the kernel do them."""

from __future__ import annotations

from pathlib import Path

import pytest

import bpfsim
from bpfsim.errors import NotSupported, VerifierError
from bpfsim.runtime.kfuncs import kfunc
from bpfsim.runtime.vmlinux import kernel_btf
from bpfsim.uapi.constants import CLOCK_MONOTONIC

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"


def test_rcu_kfuncs_run() -> None:
    """calls.bpf.o calls bpf_rcu_read_lock/unlock: the run completes (was "unknown kfunc 0")."""
    rt = bpfsim.Runtime()
    with rt.load(FIX / "isa" / "calls.bpf.o") as coll:
        r = coll.programs["calls"].test_run(data=bytes(64))
        # total = 2 (for_each over {1: 2}) + square(0+1+4+9+16+25) + bpf_ktime_get_ns()
        total = 2 + 55 * 55 + rt.clock.now(CLOCK_MONOTONIC)
        assert coll.maps[".bss"][0] == {".bss": [{"total": total}]}
        assert r.retval == total & 0xFFFFFFFF


def test_unknown_kfunc_is_not_supported_when_called() -> None:
    with pytest.raises(NotSupported, match="kfunc bpf_nope"):
        kfunc("bpf_nope")(None, 0, 0, 0, 0, 0)


@pytest.mark.skipif(kernel_btf() is None, reason="needs /sys/kernel/btf/vmlinux")
def test_core_relocation_against_the_kernel_btf_poisons_missing_fields() -> None:
    """`struct task_like` is not in vmlinux: libbpf poisons the accesses and the verifier
    rejects the first reachable one (bpftool prog load core.bpf.o fails the same way)."""
    with pytest.raises(VerifierError, match="invalid func unknown#195896080"):
        bpfsim.Runtime().load(FIX / "progs" / "core.bpf.o")
