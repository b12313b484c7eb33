"""The reference interpreter: memory checks, frames and calls, helpers, kfuncs, callx, tail
calls, callbacks, budget and error reporting."""

from __future__ import annotations

import pytest

from bpfsim.errors import (
    BpfError,
    CallbackError,
    ExecutionError,
    InstructionBudgetExceeded,
    MapError,
    MemoryFault,
)
from bpfsim.isa.asm import assemble
from bpfsim.isa.insn import Instruction, lddw_pair
from bpfsim.uapi.constants import BPF_PSEUDO_FUNC, MAX_TAIL_CALL_CNT
from bpfsim.vm.env import TailCall, func_pointer
from bpfsim.vm.interpreter import Interpreter
from bpfsim.vm.memory import AddressSpace


def asm(text: str) -> list[Instruction]:
    return assemble(text, dialect="conformance")


def engine(text: str | list[Instruction], mem: AddressSpace | None = None, **kw) -> Interpreter:
    insns = asm(text) if isinstance(text, str) else text
    return Interpreter(insns, mem=mem or AddressSpace(), name=kw.pop("name", "prog"), **kw)


# -- memory -----------------------------------------------------------------------------------
def test_out_of_bounds_read_reports_program_and_pc() -> None:
    mem = AddressSpace()
    region = mem.map(bytearray(8))
    e = engine("mov %r0, 0\nldxdw %r0, [%r1+4]\nexit", mem)
    with pytest.raises(MemoryFault) as info:
        e.run(region.base)
    assert info.value.pc == 1 and info.value.program == "prog"
    assert info.value.address == region.base + 4
    assert "at pc 1" in str(info.value)


def test_out_of_bounds_write_and_negative_offset() -> None:
    mem = AddressSpace()
    region = mem.map(bytearray(8))
    with pytest.raises(MemoryFault) as info:
        engine("stw [%r1+6], 1\nexit", mem).run(region.base)
    assert info.value.pc == 0
    with pytest.raises(MemoryFault):
        engine("ldxb %r0, [%r1-1]\nexit", mem).run(region.base)
    assert region.buf == bytearray(8)


def test_stack_bounds() -> None:
    assert engine("stdw [%r10-512], 7\nldxdw %r0, [%r10-512]\nexit").run() == 7
    with pytest.raises(MemoryFault):
        engine("stdw [%r10-520], 7\nexit").run()
    with pytest.raises(MemoryFault):
        engine("ldxb %r0, [%r10]\nexit").run()


def test_null_pointer() -> None:
    with pytest.raises(MemoryFault) as info:
        engine("ldxw %r0, [%r1]\nexit").run(0)
    assert info.value.address == 0


def test_read_only_region() -> None:
    mem = AddressSpace()
    region = mem.map(bytearray(b"\x2a" + bytes(7)), writable=False)
    e = engine("ldxb %r0, [%r1]\nexit", mem)
    assert e.run(region.base) == 42
    with pytest.raises(MemoryFault, match="read-only"):
        engine("stb [%r1], 1\nexit", mem).run(region.base)
    with pytest.raises(MemoryFault):
        engine("mov %r2, 1\nlock add [%r1], %r2\nexit", mem).run(region.base)
    assert region.buf[0] == 42


def test_guarded_bytes() -> None:
    mem = AddressSpace()
    region = mem.map(bytearray(32), guards=[(8, 24)])
    assert engine("stdw [%r1], 5\nldxdw %r0, [%r1]\nexit", mem).run(region.base) == 5
    assert engine("ldxdw %r0, [%r1+24]\nexit", mem).run(region.base) == 0
    for text in ("ldxb %r0, [%r1+8]\nexit", "stxdw [%r1+4], %r1\nexit", "ldxb %r0, [%r1+23]\nexit"):
        with pytest.raises(MemoryFault, match="protected"):
            engine(text, mem).run(region.base)


def test_access_hook_replaces_ctx_access() -> None:
    mem = AddressSpace()
    ctx = mem.map(bytearray(16), kind="ctx", name="xdp_md")
    calls = []

    def hook(off: int, size: int, write: bool, value: int) -> int:
        calls.append((off, size, write, value))
        return 0x1_0000_0000 + off if not write else 0

    ctx.access_hook = hook
    e = engine("ldxw %r0, [%r1+4]\nstw [%r1+8], 3\nexit", mem)
    # convert_ctx_access: the hook's value is the result, not truncated (xdp_md.data -> pointer)
    assert e.run(ctx.base) == 0x1_0000_0004
    assert calls == [(4, 4, False, 0), (8, 4, True, 3)]
    with pytest.raises(MemoryFault):
        engine("ldxw %r0, [%r1+16]\nexit", mem).run(ctx.base)


def test_use_after_return_of_a_stack_pointer_faults() -> None:
    """Each run has its own stack regions; they are unmapped when the run ends."""
    mem = AddressSpace()
    before = len(mem.regions())
    e = engine("mov %r0, %r10\nexit", mem)
    old_fp = e.run()
    assert len(mem.regions()) == before
    with pytest.raises(MemoryFault):
        engine("ldxdw %r0, [%r1-8]\nexit", mem).run(old_fp)


# -- calls and frames -------------------------------------------------------------------------
CALLS = """
    mov %r6, 6
    mov %r7, 7
    mov %r8, 8
    mov %r9, 9
    stdw [%r10-8], 100
    mov %r1, %r10
    add %r1, -8
    mov %r2, 5
    call local f
    add %r0, %r6
    add %r0, %r7
    add %r0, %r8
    add %r0, %r9
    exit
f:
    mov %r6, 1000
    mov %r7, 1000
    mov %r8, 1000
    mov %r9, 1000
    ldxdw %r0, [%r1]
    add %r0, %r2
    stdw [%r10-8], 55
    exit
"""


def test_local_call_passes_args_returns_r0_preserves_r6_r9() -> None:
    # callee reads the caller's stack through r1, gets its own frame (its store to r10-8 does
    # not clobber the caller's slot), and r6..r9 come back unchanged.
    assert engine(CALLS).run() == 105 + 6 + 7 + 8 + 9


def test_callee_frame_is_separate() -> None:
    text = """
        stdw [%r10-8], 1
        call local f
        ldxdw %r0, [%r10-8]
        exit
    f:
        stdw [%r10-8], 2
        exit
    """
    assert engine(text).run() == 1


def test_call_depth_limit() -> None:
    with pytest.raises(ExecutionError, match="call depth") as info:
        engine("call local f\nexit\nf:\ncall local f\nexit").run()
    assert info.value.program == "prog"
    # 8 frames are allowed: main + 7 nested calls
    text = "call local f1\nexit\n" + "".join(
        f"f{i}:\ncall local f{i + 1}\nexit\n" for i in range(1, 7)) + "f7:\nmov %r0, 7\nexit"
    assert engine(text).run() == 7


def test_budget() -> None:
    e = engine("ja -1", budget=1000)
    with pytest.raises(InstructionBudgetExceeded) as info:
        e.run()
    assert e.last_insn_count == 1000 and info.value.pc == 0
    e2 = engine("mov %r0, 1\nexit")
    with pytest.raises(InstructionBudgetExceeded):
        e2.run(budget=1)
    assert e2.run() == 1 and e2.last_insn_count == 2


def test_falling_off_the_end_and_jumping_into_lddw() -> None:
    with pytest.raises(ExecutionError, match="past the last"):
        engine("mov %r0, 1").run()
    with pytest.raises(ExecutionError, match="lddw"):
        engine([Instruction(0x05, off=1), *lddw_pair(0, 0, 5), Instruction(0x95)]).run()
    with pytest.raises(ExecutionError, match="invalid instruction"):
        engine([Instruction(0xFF), Instruction(0x95)]).run()


# -- helpers, kfuncs, callx --------------------------------------------------------------------
def test_helper_receives_args_and_env() -> None:
    seen = {}

    def helper(env, r1, r2, r3, r4, r5):
        seen.update(args=(r1, r2, r3, r4, r5), program=env.program, cpu=env.cpu, extra=env.extra)
        return -1

    e = engine("mov %r1, 1\nmov %r2, 2\nmov %r3, 3\nmov %r4, 4\nmov %r5, 5\ncall 7\nexit",
               helpers={7: helper}, program="P")
    assert e.run(cpu=3, env_fields={"extra": "x"}) == (1 << 64) - 1
    assert seen == {"args": (1, 2, 3, 4, 5), "program": "P", "cpu": 3, "extra": "x"}


def test_unknown_helper_is_named() -> None:
    with pytest.raises(ExecutionError, match=r"unknown helper 1 \(bpf_map_lookup_elem\)") as info:
        engine("call 1\nexit").run()
    assert info.value.pc == 0


def test_helper_exceptions() -> None:
    boom = ValueError("boom")

    def bad(env, *a):
        raise boom

    with pytest.raises(CallbackError) as info:
        engine("call 9\nexit", helpers={9: bad}).run()
    assert info.value.__cause__ is boom
    err = MapError("nope", 22)

    def bpf_err(env, *a):
        raise err

    with pytest.raises(MapError) as info2:
        engine("call 9\nexit", helpers={9: bpf_err}).run()
    assert info2.value is err
    with pytest.raises(CallbackError):
        engine("call 9\nexit", helpers={9: lambda env, *a: None}).run()


def test_kfunc_table() -> None:
    e = engine([Instruction(0x85, 0, 2, 0, 77), Instruction(0x95)], kfuncs={77: lambda env, *a: 42})
    assert e.run() == 42
    with pytest.raises(ExecutionError, match="unknown kfunc 78"):
        engine([Instruction(0x85, 0, 2, 0, 78), Instruction(0x95)]).run()


def test_callx_helper_id_and_function_pointer() -> None:
    assert engine("mov %r2, 5\ncall %r2\nexit", helpers={5: lambda env, *a: 77}).run() == 77
    prog = [*lddw_pair(3, BPF_PSEUDO_FUNC, 3), Instruction(0x8D, 3), Instruction(0x95),
            Instruction(0xB7, 0, 0, 0, 31), Instruction(0x95)]
    # the lddw at pc 0 names pc 0 + 1 + 3 = 4
    assert engine(prog).run() == 31
    with pytest.raises(ExecutionError, match="callx"):
        engine("lddw %r2, 0x100000000\ncall %r2\nexit").run()


# -- callbacks and call_function ---------------------------------------------------------------
def callback_program() -> list[Instruction]:
    # main: r1 = &cb; r2 = 10; call helper 181 (bpf_loop-like); exit
    # cb (pc 6): r0 = r1 * 2 + r2 ; exit
    return [*lddw_pair(1, BPF_PSEUDO_FUNC, 5), Instruction(0xB7, 2, 0, 0, 10),
            Instruction(0x85, 0, 0, 0, 181),
            Instruction(0x07, 0, 0, 0, 1000), Instruction(0x95),
            Instruction(0xBF, 0, 1, 0, 0), Instruction(0x27, 0, 0, 0, 2), Instruction(0x0F, 0, 2, 0, 0),
            Instruction(0x95)]


def test_env_call_runs_a_callback_in_a_new_frame() -> None:
    def loop(env, fn, n, *_):
        return sum(env.call(fn, i, 1) for i in range(n))

    e = engine(callback_program(), helpers={181: loop})
    assert e.run() == sum(i * 2 + 1 for i in range(10)) + 1000
    assert e.last_insn_count == 5 + 10 * 4   # lddw counts once


def test_callback_fault_and_budget_are_shared() -> None:
    def loop(env, fn, n, *_):
        return sum(env.call(fn, i, 1) for i in range(n))

    e = engine(callback_program(), helpers={181: loop}, budget=20)
    with pytest.raises(InstructionBudgetExceeded):
        e.run()
    with pytest.raises(ExecutionError, match="not a function pointer"):
        engine("mov %r1, 3\ncall 181\nexit", helpers={181: lambda env, fn, *a: env.call(fn)}).run()


def test_call_function_from_outside() -> None:
    e = engine(callback_program())
    assert e.call_function(6, [4, 5]) == 13
    assert e.last_insn_count == 4


def test_func_pointer_dereference_faults() -> None:
    with pytest.raises(MemoryFault):
        engine([*lddw_pair(1, BPF_PSEUDO_FUNC, 0), Instruction(0x79, 0, 1), Instruction(0x95)]).run()
    assert func_pointer(3) == (0xFF << 32) | 3


# -- tail calls -------------------------------------------------------------------------------
class Prog:
    def __init__(self, name: str, insns: list[Instruction]) -> None:
        self.name = name
        self.insns = insns


def test_tail_call_switches_program_and_keeps_r1() -> None:
    mem = AddressSpace()
    target = Prog("target", asm("mov %r0, %r1\nadd %r0, 1\nexit"))

    def tail_call(env, ctx, *_):
        raise TailCall(target)

    e = engine("mov %r6, 1\ncall 12\nmov %r0, 99\nexit", mem, helpers={12: tail_call})
    assert e.run(40) == 41


def test_tail_call_limit_falls_through() -> None:
    mem = AddressSpace()
    counter = mem.map(bytearray(8))
    # each run of the program bumps the counter and tail-calls itself
    prog = Prog("self", asm(f"""
        lddw %r2, {counter.base:#x}
        mov %r3, 1
        lock add [%r2], %r3
        call 12
        mov %r0, 7
        exit"""))

    def tail_call(env, *_):
        raise TailCall(prog)

    e = engine(prog.insns, mem, helpers={12: tail_call})
    assert e.run() == 7
    assert int.from_bytes(counter.buf, "little") == MAX_TAIL_CALL_CNT + 1


def test_tail_call_from_subprogram_returns_to_caller() -> None:
    target = Prog("t", asm("mov %r0, 5\nexit"))

    def tail_call(env, *_):
        raise TailCall(target)

    text = "call local f\nadd %r0, 100\nexit\nf:\ncall 12\nmov %r0, 1\nexit"
    assert engine(text, helpers={12: tail_call}).run() == 105


# -- nothing but BpfError escapes ---------------------------------------------------------------
def test_bad_registers_and_entry_points() -> None:
    with pytest.raises(ExecutionError):
        engine([Instruction(0xB7, 12, 0, 0, 1), Instruction(0x95)]).run()
    with pytest.raises(ExecutionError):
        engine("exit").run(entry=5)
    with pytest.raises(BpfError):
        engine("call local +5\nexit").run()


def test_may_goto_counts_down_then_jumps(monkeypatch: pytest.MonkeyPatch) -> None:
    import bpfsim.vm.interpreter as interp

    monkeypatch.setattr(interp, "BPF_MAX_LOOPS", 5)
    # loop: r0 += 1; may_goto +1 (out); ja loop; out: exit
    prog = [Instruction(0xB7, 0, 0, 0, 0), Instruction(0x07, 0, 0, 0, 1), Instruction(0xE5, 0, 0, 1),
            Instruction(0x05, 0, 0, -3), Instruction(0x95)]
    assert engine(prog).run() == 6
    with pytest.raises(ExecutionError, match="past the last"):
        engine([Instruction(0xE5, 0, 0, -9), Instruction(0x05, 0, 0, -2)]).run()
