"""The conformance programs on the real kernel versus the reference interpreter.

Each program runs in the kernel as a static subprogram of an XDP wrapper (what upstream's
libbpf plugin does with `--xdp_prolog`): r1 = packet data holding `mem`, r2 = len(mem), and
the wrapper stores the full 64-bit r0 into the packet so data_out carries it (XDP's retval is
only 32 bits).  Programs the kernel verifier rejects (callx, unreachable code, ...) are
skipped with the verifier's reason.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from bpfsim.conformance import load, run_program
from bpfsim.errors import KernelError
from bpfsim.isa.insn import Instruction, encode_slots

DATA = Path(__file__).parent / "data"
FILES = sorted(p.name for p in DATA.glob("*.data"))


def _kernel() -> tuple[bool, str]:
    try:
        from bpfsim.kernel.probes import kernel_available
    except ImportError:  # pragma: no cover - the kernel package is optional here
        return False, "bpfsim.kernel.probes is missing"
    return kernel_available()


def _wrap(prog: list[Instruction], mem_len: int, slot: int) -> list[Instruction]:
    """XDP wrapper: check the packet holds slot+8 bytes, call prog(data, mem_len), store r0 at
    data+slot, return XDP_PASS (XDP_ABORTED if the packet is too short)."""
    I = Instruction  # noqa: N806
    head = [
        I(0xBF, 6, 1),                    # 0  r6 = ctx
        I(0x61, 7, 6, 0), I(0x61, 8, 6, 4),  # 1,2 r7 = data, r8 = data_end
        I(0xBF, 2, 7), I(0x07, 2, 0, 0, slot + 8),  # 3,4
        I(0x2D, 2, 8, 11),                # 5  if r2 > r8 goto 17
        I(0xBF, 1, 7), I(0xB7, 2, 0, 0, mem_len),   # 6,7
        I(0x85, 0, 1, 0, 10),             # 8  call 19 (the program)
        I(0x61, 7, 6, 0), I(0x61, 8, 6, 4),  # 9,10 reload packet pointers
        I(0xBF, 2, 7), I(0x07, 2, 0, 0, slot + 8),  # 11,12
        I(0x2D, 2, 8, 3),                 # 13 if r2 > r8 goto 17
        I(0x7B, 7, 0, slot),              # 14 *(u64 *)(data + slot) = r0
        I(0xB7, 0, 0, 0, 2), I(0x95),     # 15,16 return XDP_PASS
        I(0xB7, 0, 0, 0, 0), I(0x95),     # 17,18 return XDP_ABORTED
    ]
    assert len(head) == 19
    return head + prog


@pytest.mark.kernel
@pytest.mark.parametrize("name", FILES)
def test_kernel_agrees_with_interpreter(name: str) -> None:
    ok, why = _kernel()
    if not ok:
        pytest.skip(why)
    from bpfsim.kernel import syscall
    from bpfsim.uapi.constants import ProgType

    case = load(DATA / name)
    prog = case.program()
    slot = (max(len(case.mem), 14) + 7) // 8 * 8
    packet = case.mem + bytes(slot + 8 - len(case.mem))
    log = syscall.Log(1 << 20)
    try:
        fd = syscall.prog_load(ProgType.XDP, encode_slots(_wrap(prog, len(case.mem), slot)), "GPL",
                               log=log, name="conformance")
    except KernelError as exc:
        tail = " | ".join(log.text.strip().splitlines()[-2:])
        pytest.skip(f"kernel rejects it: {exc.errno}: {tail}")
    try:
        res = syscall.prog_test_run(fd, packet)
    finally:
        syscall.close(fd)
    assert res.retval == 2
    kernel_r0 = struct.unpack_from("<Q", res.data, slot)[0]
    assert run_program(prog, case.mem) == kernel_r0
    assert kernel_r0 == case.result
