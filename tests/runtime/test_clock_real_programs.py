"""The real clock with real BPF programs: timers fire by themselves, callbacks never overlap a
program on their CPU, and closing the runtime joins the CPU threads."""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import pytest

from bpfsim.units import ms

OBJ = str(Path(__file__).resolve().parents[1] / "fixtures" / "timer" / "timer_rules.bpf.o")


def _rt():
    import bpfsim

    if not hasattr(bpfsim, "Runtime"):
        pytest.skip("bpfsim.Runtime is not available yet")
    return bpfsim.Runtime(clock="real")


def _run(coll, prog, key, a=0, b=0):
    r = coll.programs[prog].test_run(ctx=struct.pack("<IIQQ", 0, key, a, b)).retval & 0xFFFFFFFF
    return r - (1 << 32) if r >> 31 else r


def _counter(coll, key):
    return struct.unpack_from("<Q", coll.maps["tarr"].raw[struct.pack("<I", key)], 16)[0]


def test_real_clock_fires_bpf_callbacks():
    rt = _rt()
    with rt:
        coll = rt.load(OBJ)
        assert _run(coll, "init", 0, 1) == 0 and _run(coll, "set_callback", 0, 1) == 0
        t0 = time.monotonic_ns()
        assert _run(coll, "start", 0, ms(20)) == 0
        deadline = time.monotonic() + 2
        while _counter(coll, 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert _counter(coll, 0) == 1
        stamp = struct.unpack_from("<Q", coll.maps["tarr"].raw[bytes(4)], 24)[0]
        assert stamp - t0 >= ms(20)                       # bpf_ktime_get_ns in the callback
        assert [e["event"] for e in rt.timeline][-1] == "fire"
        # tc: bottom halves off, so the 0 ns timer cannot run before the cancel.
        assert coll.programs["tc_start_then_cancel"].test_run(data=bytes(64)).retval == 1
    assert not [t for t in threading.enumerate() if t.name.startswith("bpfsim-hrtimer/")]
