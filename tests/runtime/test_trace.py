"""The trace pipe: bpf_printk lines in the kernel's trace_pipe format, the format rules of
bpf_bprintf_prepare, and the same messages as the kernel."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import bpfsim
from bpfsim.runtime.helpers.printk import FormatError, bprintf
from bpfsim.runtime.trace import FLAGS_TIMER_SOFTIRQ, TraceEvent, TracePipe
from bpfsim.vm.memory import AddressSpace

ROOT = Path(__file__).resolve().parents[2]
OBJ = str(ROOT / "tests" / "fixtures" / "runtime" / "printk.bpf.o")
PKT = (ROOT / "bench" / "pkt_64.bin").read_bytes()
MESSAGES = ["ints -5 4294967291 ff", "wide -1 1122334455    42|42   |", "str abc Z %",
            "ip 127.0.0.1 127.000.000.001", "nl", "", "results -22 -22"]


def read_until(reader, n: int, timeout: float = 2.0) -> list[str]:
    """Lines from a kernel TraceReader until `n` non-empty ones arrived (or the timeout)."""
    lines: list[str] = []
    end = time.monotonic() + timeout
    while sum(1 for x in lines if message(x)) < n and time.monotonic() < end:
        time.sleep(0.02)
        lines += reader.read()
    return lines


def message(line: str) -> str:
    return line.split("bpf_trace_printk: ", 1)[1] if "bpf_trace_printk: " in line else line


def run_all(coll) -> None:
    for name in ("printk_formats", "printk_bad"):
        coll.programs[name].test_run(data=PKT)


def test_line_format_matches_trace_pipe() -> None:
    rt = bpfsim.Runtime()
    run_all(rt.load(OBJ))
    lines = rt.trace_pipe
    # trace_output.c: "%16s-%-7d [%03d] %s %5lu.%06lu: " -- measured on the 6.18 machine
    assert lines[0] == ("          bpfsim-1000    [000] b..11 12345.678901: "
                        "bpf_trace_printk: ints -5 4294967291 ff")
    assert [message(x) for x in lines] == MESSAGES
    rt.close()


def test_task_cpu_and_virtual_time_in_lines() -> None:
    rt = bpfsim.Runtime(task=bpfsim.Task(comm="a-very-long-command-name", pid=42))
    coll = rt.load(OBJ)
    rt.clock.advance(bpfsim.s(1) + bpfsim.us(5))
    rt.cpu = 1
    coll.programs["printk_bad"].test_run(data=PKT)
    (line,) = rt.trace_pipe
    assert line.startswith("a-very-long-comm-42      [001] b..11 12346.678906: ")
    rt.close()


def test_context_flags_for_timer_callbacks() -> None:
    pipe = TracePipe(lambda: 1_500_000, "bpfsim", 1000)
    with pipe.context(0, FLAGS_TIMER_SOFTIRQ, comm="<idle>", pid=0):
        pipe.emit("cb", 0)
    pipe.emit("prog", 0)
    assert pipe.lines == ["          <idle>-0       [000] ..s21     0.001500: bpf_trace_printk: cb",
                          "          bpfsim-1000    [000] b..11     0.001500: bpf_trace_printk: prog"]
    assert TraceEvent(0, 1, "x", 1, "b..11", "m").render().endswith("[001] b..11     0.000000: "
                                                                    "bpf_trace_printk: m")


@pytest.fixture
def mem() -> tuple[AddressSpace, int]:
    m = AddressSpace()
    region = m.map(bytearray(b"hello\0\x0a\x00\x00\x01" + bytes(6) + bytes(range(16))), name="s")
    return m, region.base


@pytest.mark.parametrize("fmt, args, out", [
    ("%d|%i|%u|%x|%X", [-1, 7, -1, 255, 255], "-1|7|4294967295|ff|FF"),
    ("%ld %lld %lu %llx", [-2, -3, -1, 1 << 40], "-2 -3 18446744073709551615 10000000000"),
    ("[%5d] [%-4u] [%05x] [%+d] [% d]", [3, 4, 0xab, 5, 6], "[    3] [4   ] [000ab] [+5] [ 6]"),
    ("%s!", ["str"], "hello!"),
    ("%c%c", [ord("o"), ord("k")], "ok"),
    ("100%%", [], "100%"),
    ("%pI4 %pi4", ["ip", "ip"], "10.0.0.1 010.000.000.001"),
    ("%pI6", ["ip6"], "0001:0203:0405:0607:0809:0a0b:0c0d:0e0f"),
    ("%px", [0x1234], "0000000000001234"),
    ("%s|", [0], "|"),                         # an unreadable string prints as ""
    ("%pI4", [8], "0.0.0.0"),                  # an unreadable address prints zeros
])
def test_bprintf_formats(mem, fmt, args, out) -> None:
    m, base = mem
    where = {"str": base, "ip": base + 6, "ip6": base + 16}
    assert bprintf(m, fmt.encode(), [where.get(a, a) if isinstance(a, str) else a for a in args]) == out


@pytest.mark.parametrize("fmt, nargs", [
    ("%d %d", 1),        # more specifiers than arguments
    ("%.2d", 1),         # precision
    ("%q", 1),           # unknown conversion
    ("%lld%s", 1),
    ("%pZ", 1),          # unsupported pointer format
    ("%sx", 1),          # %s must end at punctuation, space or NUL
    ("\x01", 0),         # non-printable
    ("%hd", 1),
])
def test_bprintf_refusals(mem, fmt, nargs) -> None:
    m, _ = mem
    with pytest.raises(FormatError):
        bprintf(m, fmt.encode(), [0] * nargs)


@pytest.mark.kernel
def test_same_messages_as_the_kernel() -> None:
    import bpfsim.kernel as kernel
    from bpfsim.kernel.tracefs import TraceReader

    with TraceReader() as reader:
        coll = kernel.load(OBJ)
        try:
            run_all(coll)
            got = [message(x) for x in read_until(reader, 6)]
        finally:
            coll.close()
    assert [x for x in got if x] == [x for x in MESSAGES if x]


def test_snprintf(backend) -> None:
    coll = backend.load(OBJ)
    coll.programs["snprintf_prog"].test_run(repeat=0)
    raw = coll.maps[".bss"].raw[b"\0\0\0\0"]
    assert raw[:11] == b"7 is seven\0" and int.from_bytes(raw[32:40], "little") == 11


def test_timer_callback_lines_have_softirq_flags() -> None:
    rt = bpfsim.Runtime()
    coll = rt.load(str(ROOT / "tests" / "fixtures" / "runtime" / "timer_printk.bpf.o"))
    coll.programs["arm"].test_run(data=PKT)
    rt.clock.advance(bpfsim.ms(2))
    assert rt.trace_pipe == [
        "          bpfsim-1000    [000] b..11 12345.678901: bpf_trace_printk: armed",
        "          bpfsim-1000    [000] ..s21 12345.679901: bpf_trace_printk: cb fired on key 0"]
    rt.close()


@pytest.mark.kernel
def test_timer_callback_lines_match_the_kernel() -> None:
    import bpfsim.kernel as kernel
    from bpfsim.kernel.tracefs import TraceReader

    with TraceReader() as reader:
        coll = kernel.load(str(ROOT / "tests" / "fixtures" / "runtime" / "timer_printk.bpf.o"))
        try:
            coll.programs["arm"].test_run(data=PKT)
            lines = [x for x in read_until(reader, 2) if message(x)]
        finally:
            coll.close()
    assert [message(x) for x in lines] == ["armed", "cb fired on key 0"]
    assert " b..11 " in lines[0] and " ..s" in lines[1]


def test_vprintk_for_more_than_three_arguments(backend) -> None:
    coll = backend.load(OBJ)
    assert coll.programs["printk_many"].test_run(data=PKT).retval == len("many 1 2 3 4 x")


def test_flags_follow_the_program_type() -> None:
    # measured on 6.18: SYSCALL "...11", RAW_TRACEPOINT "...2.", skb/xdp "b..11"
    rt = bpfsim.Runtime()
    coll = rt.load(OBJ)
    coll.programs["printk_sys"].test_run()
    coll.programs["printk_many"].test_run(data=PKT)
    flags = [line.split("] ", 1)[1][:5] for line in rt.trace_pipe]
    assert flags == ["...11", "b..11"]
    rt.close()
