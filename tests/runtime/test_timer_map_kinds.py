"""§1.5: which map types and flags accept a bpf_timer value, through the loader.  The kernel
refuses PERCPU_HASH/PERCPU_ARRAY/LRU_PERCPU_HASH (-EOPNOTSUPP) and BPF_F_RDONLY_PROG /
BPF_F_WRONLY_PROG (-EACCES) with a timer; libbpf then creates the map again without BTF
(bpf_object__create_map, "Retrying without BTF."), so the fixture still loads and "kept its
BTF value type" is the observable verdict, on the emulator and on the kernel alike.
Fixture: tests/fixtures/timer/timer_map_kinds.bpf.c (the program uses none of the maps)."""

from __future__ import annotations

from pathlib import Path

import pytest

import bpfsim

OBJ = Path(__file__).resolve().parents[1] / "fixtures" / "timer" / "timer_map_kinds.bpf.o"
KEEPS_BTF = {
    "hash_noprealloc": True,
    "percpu_hash": False,
    "percpu_array": False,
    "lru_percpu_hash": False,
    "hash_rdonly_prog": False,
    "hash_wronly_prog": False,
    "hash_rdonly": True,
}


def _sim_keeps_btf() -> dict[str, bool]:
    with bpfsim.load(OBJ) as coll:
        return {n: bool(coll.maps[n].info.btf_value_type_id) for n in KEEPS_BTF}


def test_timer_map_kinds_on_the_emulator() -> None:
    assert _sim_keeps_btf() == KEEPS_BTF


@pytest.mark.kernel
def test_timer_map_kinds_same_as_kernel() -> None:
    import bpfsim.kernel
    from bpfsim.kernel.probes import kernel_available

    ok, why = kernel_available()
    if not ok:
        pytest.skip(why)
    with bpfsim.kernel.load(OBJ) as coll:
        kernel = {n: coll.maps[n].kernel_btf for n in KEEPS_BTF}   # the kernel's own map info
    assert kernel == KEEPS_BTF == _sim_keeps_btf()
