"""Whatever bytes go into test_run, the result is a TestRunResult or one BpfError, never
another exception and never a corrupted runtime (the next clean run still works)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpfsim
from bpfsim.errors import BpfError

FIX = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "runtime"
RT = bpfsim.Runtime()
PROGS = {}
for obj in ("skb", "xdp_adjust", "lookup", "pinned", "raw_tp"):
    coll = RT.load(str(FIX / f"{obj}.bpf.o"), pin_root="/sys/fs/bpf/fuzz")
    PROGS.update(coll.programs)
NAMES = sorted(PROGS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES),
       data=st.one_of(st.none(), st.binary(max_size=300)),
       ctx=st.one_of(st.none(), st.binary(max_size=260)),
       repeat=st.integers(0, 3), flags=st.sampled_from([0, 0, 1, 2, 4]), cpu=st.sampled_from([0, 0, 1, 7]))
def test_only_bpf_errors(name, data, ctx, repeat, flags, cpu) -> None:
    try:
        r = PROGS[name].test_run(data=data, ctx=ctx, repeat=repeat, flags=flags, cpu=cpu)
    except BpfError:
        pass
    else:
        assert 0 <= r.retval <= 0xFFFFFFFF
    # nothing leaked: no packet or ctx region survives a run
    assert not [rg for rg in RT.mem.regions() if rg.kind in ("packet", "ctx", "sock", "flow_keys")]
