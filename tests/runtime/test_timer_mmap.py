"""§1.7: mmap() of a map with special fields fails with ENOTSUPP (524), even with
BPF_F_MMAPABLE (syscall.c: bpf_map_mmap checks the record before anything else); an ARRAY
without BPF_F_MMAPABLE is -EINVAL.  Same body on the emulator and on the kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

import bpfsim
from bpfsim.errors import MapError
from bpfsim.spec import CollectionSpec, MapSpec
from bpfsim.uapi import MapType
from bpfsim.uapi.constants import BPF_F_MMAPABLE

TIMER = Path(__file__).resolve().parents[2] / "examples" / "timer" / "timer.bpf.o"


def _timer_map_spec(flags: int) -> CollectionSpec:
    spec = bpfsim.load_spec(TIMER)
    spec.programs = {}
    spec.maps["hmap"].flags |= flags
    return spec


@pytest.mark.parametrize("flags", [0, BPF_F_MMAPABLE], ids=["plain", "mmapable"])
def test_mmap_of_a_timer_map_is_enotsupp(backend, flags: int) -> None:
    with backend(_timer_map_spec(flags)) as coll:
        with pytest.raises(MapError) as exc:
            coll.maps["hmap"].mmap()
        assert exc.value.errno == 524


def test_mmap_of_an_array_without_mmapable_is_einval(backend) -> None:
    spec = CollectionSpec(maps={"a": MapSpec("a", MapType.ARRAY, 4, 8, 4)})
    with backend(spec) as coll:
        with pytest.raises(MapError) as exc:
            coll.maps["a"].mmap()
        assert exc.value.errno == 22
