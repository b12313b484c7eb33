"""bpf_printk lines from a private tracefs instance: two readers both see every line."""

from __future__ import annotations

import os
import struct
import time

import pytest

from bpfsim.kernel import syscall as sc
from bpfsim.kernel.tracefs import TraceReader

pytestmark = pytest.mark.kernel


def _insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


# *(u32 *)(r10 - 4) = "hi\n"; r1 = r10 - 4; r2 = 4; call bpf_trace_printk; r0 = 0; exit
PRINT_HI = (_insn(0x62, 10, 0, -4, 0x000A6968) + _insn(0xBF, 1, 10) + _insn(0x07, 1, imm=-4)
            + _insn(0xB7, 2, imm=4) + _insn(0x85, imm=6) + _insn(0xB7, 0) + _insn(0x95))


def test_two_readers_each_get_every_line():
    fd = sc.prog_load(6, PRINT_HI, "GPL")
    try:
        with TraceReader() as a, TraceReader() as b:
            sc.prog_test_run(fd, bytes(64), repeat=3)
            lines_a: list[str] = []
            lines_b: list[str] = []
            for _ in range(50):
                lines_a += a.read()
                lines_b += b.read()
                if len(lines_a) >= 3 and len(lines_b) >= 3:
                    break
                time.sleep(0.01)
            mine = [ln for ln in lines_a if f"-{os.getpid()} " in ln]
            assert len(mine) == 3 and all(ln.endswith("bpf_trace_printk: hi") for ln in mine)
            assert len([ln for ln in lines_b if f"-{os.getpid()} " in ln]) == 3
            assert a.read() == []
            path = a.path
        assert not os.path.exists(path)
    finally:
        sc.close(fd)


def test_kernel_trace_pipe_collects_from_creation():
    from bpfsim.errors import UsageError
    from bpfsim.kernel import Kernel

    with pytest.raises(UsageError):
        _ = Kernel().trace_pipe
    fd = sc.prog_load(6, PRINT_HI, "GPL")
    k = Kernel(trace=True)
    try:
        sc.prog_test_run(fd, bytes(64))
        for _ in range(50):
            if any(f"-{os.getpid()} " in ln for ln in k.trace_pipe):
                break
            time.sleep(0.01)
        assert [ln for ln in k.trace_pipe if f"-{os.getpid()} " in ln][0].endswith("bpf_trace_printk: hi")
    finally:
        k.close()
        sc.close(fd)


def test_lines_of_other_processes_are_dropped_unless_foreign():
    import subprocess
    import sys
    import threading

    child = ("from bpfsim.kernel import syscall as sc\n"
             f"fd = sc.prog_load(6, {PRINT_HI!r}, 'GPL')\n"
             "sc.prog_test_run(fd, bytes(64))\n")
    fd = sc.prog_load(6, PRINT_HI, "GPL")
    try:
        with TraceReader() as mine, TraceReader(foreign=True) as every:
            subprocess.run([sys.executable, "-c", child], check=True, timeout=60)
            t = threading.Thread(target=sc.prog_test_run, args=(fd, bytes(64)))
            t.start()
            t.join()
            got_mine: list[str] = []
            got_every: list[str] = []
            for _ in range(50):
                got_mine += mine.read()
                got_every += every.read()
                if len([ln for ln in got_every if ln.endswith(": hi")]) >= 2:
                    break
                time.sleep(0.01)
            assert len([ln for ln in got_every if ln.endswith(": hi")]) >= 2
            assert len([ln for ln in got_mine if ln.endswith(": hi")]) == 1   # our thread's
    finally:
        sc.close(fd)


def test_instances_of_dead_processes_are_removed():
    import subprocess
    import sys

    from bpfsim.kernel.tracefs import remove_stale_instances, tracefs_root

    # A child makes a reader and exits without closing it (as if killed).
    child = "import os\nfrom bpfsim.kernel.tracefs import TraceReader\nr = TraceReader()\nos._exit(0)\n"
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60)
    leftovers = [n for n in os.listdir(os.path.join(tracefs_root(), "instances"))
                 if n.startswith("bpfsim-") and not os.path.exists(f"/proc/{n.split('-')[1]}")]
    assert leftovers, "the child's instance should still exist"
    removed = remove_stale_instances()
    assert {os.path.basename(p) for p in removed} >= set(leftovers)
