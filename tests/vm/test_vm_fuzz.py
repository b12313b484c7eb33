"""Property: whatever the instructions, a run ends (small budget) and raises only BpfError."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfsim.errors import BpfError
from bpfsim.isa.insn import Instruction, decode_slots, lddw_pair
from bpfsim.uapi.constants import BPF_PSEUDO_FUNC
from bpfsim.vm.env import TailCall
from bpfsim.vm.interpreter import Interpreter
from bpfsim.vm.memory import AddressSpace

# opcodes that exist (so most random programs do something), plus every byte value
VALID = [c | s | o for c in (0x04, 0x07) for s in (0, 8) for o in range(0, 0xD0, 0x10)] + \
        [0xD4, 0xDC, 0xD7] + \
        [c | s | o for c in (0x05, 0x06) for s in (0, 8) for o in (0x10, 0x20, 0x30, 0x40, 0x50, 0x60,
                                                                  0x70, 0xA0, 0xB0, 0xC0, 0xD0)] + \
        [0x05, 0x06, 0x85, 0x8D, 0x95, 0xE5,
         0x61, 0x69, 0x71, 0x79, 0x81, 0x89, 0x91, 0x62, 0x6A, 0x72, 0x7A, 0x63, 0x6B, 0x73, 0x7B,
         0xC3, 0xDB, 0xD3, 0xCB, 0x20, 0x28, 0x30, 0x40]
IMMS = st.one_of(st.integers(-(1 << 31), (1 << 31) - 1),
                 st.sampled_from([0, 1, -1, 8, 16, 32, 64, 0x01, 0x41, 0xE1, 0xF1, 0x100, 0x110, 5, 12]))

insn = st.builds(Instruction,
                 opcode=st.one_of(st.sampled_from(VALID), st.integers(0, 255)),
                 dst=st.one_of(st.integers(0, 10), st.integers(0, 15)),
                 src=st.one_of(st.integers(0, 10), st.integers(0, 15)),
                 off=st.one_of(st.integers(-4, 4), st.integers(-(1 << 15), (1 << 15) - 1)),
                 imm=IMMS).filter(lambda i: i.opcode != 0x18)
lddw = st.builds(lambda d, s, v: lddw_pair(d, s, v), st.integers(0, 10),
                 st.sampled_from([0, BPF_PSEUDO_FUNC, 1]), st.integers(0, (1 << 64) - 1))
program = st.lists(st.one_of(insn.map(lambda i: [i]), lddw), min_size=1, max_size=24).map(
    lambda chunks: [i for c in chunks for i in c])


def _helpers() -> dict:
    class Target:
        name = "t"
        insns = [Instruction(0x95)]

    def tail(env, *a):
        raise TailCall(Target())

    return {5: lambda env, *a: a[0] + 1, 12: tail,
            181: lambda env, fn, n, *a: env.call(fn, 1) if n & 1 else 0,
            6: lambda env, *a: env.mem.load(a[0], 1)}


def _run(insns: list[Instruction]) -> None:
    mem = AddressSpace()
    data = mem.map(bytearray(range(64)))
    ro = mem.map(bytearray(16), writable=False)
    mem.map(bytearray(32), guards=[(8, 16)])
    e = Interpreter(insns, mem=mem, helpers=_helpers(), budget=300)
    with contextlib.suppress(BpfError):   # anything else fails the test
        e.run(data.base, 64, ro.base, 0)
    assert e.last_insn_count <= 300 * 2   # nested callbacks share the budget


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(program)
def test_random_programs_raise_only_bpf_errors(insns: list[Instruction]) -> None:
    _run(insns)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=8, max_size=160))
def test_random_bytes_raise_only_bpf_errors(data: bytes) -> None:
    try:
        insns = decode_slots(data[: len(data) // 8 * 8])
    except BpfError:
        return
    if insns:
        _run(insns)
