"""The timer examples: the bpf_timer_init documentation example (examples/timer/) and the
flow table with idle expiry (examples/flow_expiry/), on the emulator and on the kernel."""

from __future__ import annotations

import struct
import time
import uuid
from pathlib import Path

import pytest

from bpfsim.units import ms, s

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMER = str(EXAMPLES / "timer" / "timer.bpf.o")
TIMER_NOCANCEL = str(EXAMPLES / "timer" / "timer_nocancel.bpf.o")
FLOWS = str(EXAMPLES / "flow_expiry" / "flow_expiry.bpf.o")
PKT = bytes(64)


def _kernel_or_skip():
    from bpfsim.kernel.probes import kernel_available

    ok, why = kernel_available()
    if not ok:
        pytest.skip(why)
    import bpfsim.kernel

    return bpfsim.kernel


def _runtime_or_skip():
    import bpfsim

    if not hasattr(bpfsim, "Runtime"):
        pytest.skip("bpfsim.Runtime is not available yet")
    return bpfsim.Runtime()


def _doc_example(backend, root: str, pin_map: bool) -> int:
    """Load, pin the program (and maybe the map), close the collection, run the pinned
    program: bpf_timer_init needs a user reference on the map."""
    coll = backend.load(TIMER)
    prog_path, map_path = f"{root}-prog", f"{root}-hmap"
    coll.programs["bpf_prog1"].pin(prog_path)
    if pin_map:
        coll.maps["hmap"].pin(map_path)
    coll.close()
    try:
        prog = backend.get_pinned(prog_path)
        return prog.test_run(data=PKT).retval
    finally:
        backend.unpin(prog_path)
        if pin_map:
            backend.unpin(map_path)


@pytest.mark.parametrize("pin_map,expected", [(False, 1), (True, 0)])
def test_doc_example_sim(pin_map, expected):
    rt = _runtime_or_skip()
    with rt:
        assert _doc_example(rt, f"/sys/fs/bpf/bpfsim-doc-{uuid.uuid4().hex[:8]}", pin_map) == expected
        if not pin_map:
            assert [r["ret"] for r in rt.timeline.events("init")] == [-1]        # -EPERM


@pytest.mark.kernel
@pytest.mark.parametrize("pin_map,expected", [(False, 1), (True, 0)])
def test_doc_example_kernel(pin_map, expected):
    kernel = _kernel_or_skip()
    assert _doc_example(kernel, f"/sys/fs/bpf/bpfsim-doc-{uuid.uuid4().hex[:8]}", pin_map) == expected


def test_doc_example_cancel_then_nocancel_sim():
    rt = _runtime_or_skip()
    with rt:
        coll = rt.load(TIMER)
        assert coll.programs["bpf_prog1"].test_run(data=PKT).retval == 0
        rt.clock.advance(ms(1))
        assert not any("timer_cb" in line for line in rt.trace_pipe)      # cancelled
        assert [r["ret"] for r in rt.timeline.events("cancel")] == [1]
        nc = rt.load(TIMER_NOCANCEL)
        assert nc.programs["bpf_prog1"].test_run(data=PKT).retval == 0
        assert not any("timer_cb" in line for line in rt.trace_pipe)      # not before advancing
        rt.clock.advance(0)
        assert struct.unpack_from("<i", nc.maps["hmap"].raw[bytes(4)])[0] == 1
        lines = [line for line in rt.trace_pipe if "timer_cb" in line]
        assert len(lines) == 1 and lines[0].endswith("timer_cb: key 0 fired 1 time(s)")


@pytest.mark.kernel
def test_doc_example_cancel_then_nocancel_kernel():
    """The callback's counter (and, when trace_pipe is free, its bpf_printk line)."""
    kernel = _kernel_or_skip()
    from bpfsim.kernel.tracefs import TraceReader

    try:
        tr = TraceReader()
    except OSError:            # EBUSY: another reader holds trace_pipe; counters still tell
        tr = None
    try:
        coll = kernel.load(TIMER)
        assert coll.programs["bpf_prog1"].test_run(data=PKT).retval == 0
        time.sleep(0.05)
        assert struct.unpack_from("<i", coll.maps["hmap"].raw[bytes(4)])[0] == 0
        nc = kernel.load(TIMER_NOCANCEL)
        assert nc.programs["bpf_prog1"].test_run(data=PKT).retval == 0
        time.sleep(0.05)
        assert struct.unpack_from("<i", nc.maps["hmap"].raw[bytes(4)])[0] == 1
        coll.close()
        nc.close()
        if tr is not None:
            lines = [line for line in tr.read() if "timer_cb" in line]
            assert len(lines) == 1 and lines[0].endswith("timer_cb: key 0 fired 1 time(s)")
    finally:
        if tr is not None:
            tr.close()


def udp_packet(sport: int, dport: int, src: str = "10.0.0.1", dst: str = "10.0.0.2") -> bytes:
    ip = lambda a: bytes(int(x) for x in a.split("."))  # noqa: E731
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + 8, 0, 0, 64, 17, 0, ip(src), ip(dst))
    udp = struct.pack("!HHHH", sport, dport, 16, 0) + b"payload!"
    return eth + iph + udp


def _flow_scenario(backend, wait, timeout_ns: int) -> list[int]:
    """Two flows at t=0; flow 1 sends again at 0.6 T; count entries at 1.2 T and 2.0 T."""
    import bpfsim

    spec = bpfsim.load_spec(FLOWS)
    spec.variables["idle_timeout_ns"].value = timeout_ns
    counts = []
    with backend.load(spec) as coll:
        track, flows = coll.programs["track"], coll.maps["flows"]
        track.test_run(data=udp_packet(1111, 53))
        track.test_run(data=udp_packet(2222, 53))
        counts.append(len(list(flows.raw.keys())))
        wait(timeout_ns * 6 // 10)
        track.test_run(data=udp_packet(1111, 53))        # flow 1 is busy again
        wait(timeout_ns * 6 // 10)                       # flow 2 idle for 1.2 T
        counts.append(len(list(flows.raw.keys())))
        wait(timeout_ns * 8 // 10)                       # flow 1 idle for 1.4 T
        counts.append(len(list(flows.raw.keys())))
    return counts


def test_flow_expiry_sim():
    rt = _runtime_or_skip()
    with rt:
        assert _flow_scenario(rt, rt.clock.advance, s(30)) == [2, 1, 0]
        assert sum("flow expired after" in line for line in rt.trace_pipe) == 2
        frees = rt.timeline.events("free")
        assert len(frees) == 2 and {r["map"] for r in frees} == {"flows"}


@pytest.mark.kernel
def test_flow_expiry_kernel():
    """The same scenario with a 150 ms idle timeout (a .rodata variable) in real time."""
    kernel = _kernel_or_skip()
    assert _flow_scenario(kernel, lambda ns: time.sleep(ns / 1e9), ms(150)) == [2, 1, 0]
