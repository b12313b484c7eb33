"""The reference interpreter: runs a list of `isa.insn.Instruction` slots against an AddressSpace.

Job: execute, nothing else (no verification; an invalid instruction faults only when it runs).
Speed comes from pre-decoding: every slot becomes one closure `op(R) -> next_pc` specialised
from the templates of `isa.semantics` (one factory per operation shape, compiled on first use and
cached for the process), so the hot loop is `pc = ops[pc](R)`.  Instructions that need the
machine (exit, calls, tail calls, may_goto) return `~pc` and are handled by the loop.

Must not import `runtime` (helpers, kfuncs and tail-call targets are injected).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bpfsim.errors import (
    BpfError,
    CallbackError,
    ExecutionError,
    InstructionBudgetExceeded,
    MemoryFault,
)
from bpfsim.isa import semantics as sem
from bpfsim.isa.insn import Instruction
from bpfsim.uapi.constants import (
    BPF_MAX_LOOPS,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_PSEUDO_KFUNC_CALL,
    MAX_BPF_STACK,
    MAX_CALL_FRAMES,
    MAX_TAIL_CALL_CNT,
)
from bpfsim.uapi.helper_ids import HELPER_IDS
from bpfsim.vm.env import Helper, TailCall, func_pointer, func_pointer_target
from bpfsim.vm.memory import AddressSpace, Region

DEFAULT_BUDGET = 1_000_000
M64 = sem.M64
_HELPER_NAMES = {v: k for k, v in HELPER_IDS.items()}

# Kinds of slots the loop handles itself.
_EXIT, _CALL, _CALLX, _MAY_GOTO = range(4)

_UNPACK = {(1, False): struct.Struct("<B").unpack_from, (2, False): struct.Struct("<H").unpack_from,
           (4, False): struct.Struct("<I").unpack_from, (8, False): struct.Struct("<Q").unpack_from,
           (1, True): struct.Struct("<b").unpack_from, (2, True): struct.Struct("<h").unpack_from,
           (4, True): struct.Struct("<i").unpack_from, (8, True): struct.Struct("<q").unpack_from}
_PACK = {n: struct.Struct(f"<{c}").pack_into for n, c in ((1, "B"), (2, "H"), (4, "I"), (8, "Q"))}


# -- closure factories, generated from semantics templates ------------------------------------
_FACTORIES: dict[tuple, Callable[..., Callable[[list[int]], int]]] = {}


def _factory(key: tuple, source: str) -> Callable[..., Callable[[list[int]], int]]:
    """Compile `source` (which defines `make`) once per key; later calls reuse it."""
    fn = _FACTORIES.get(key)
    if fn is None:
        ns: dict[str, Any] = dict(sem.NAMESPACE)
        ns.update({f"_u{n}{'s' if s else ''}": f for (n, s), f in _UNPACK.items()})
        ns.update({f"_p{n}": f for n, f in _PACK.items()})
        exec(compile(source, f"<bpfsim op {key}>", "exec"), ns)  # noqa: S102 - our templates
        fn = ns["make"]
        _FACTORIES[key] = fn
    return fn


def _alu_factory(opcode: int, off: int, imm: int) -> Callable[..., Callable[[list[int]], int]] | None:
    is_end = opcode & 0xF0 == sem.END   # only ALU classes come here
    key = ("alu", opcode, off, imm if is_end else None)
    if key in _FACTORIES:
        return _FACTORIES[key]
    d, s = sem.operand_exprs(opcode, "R[dst]", "R[src]", 0)
    if not opcode & sem.SRC_X and not is_end:
        s = "s"
    expr = sem.alu_expr(opcode, off, imm, d, s)
    if expr is None:
        return None
    src = ("def make(dst, src, s, nxt):\n"
           "    def op(R):\n"
           f"        R[dst] = {expr}\n"
           "        return nxt\n"
           "    return op\n")
    return _factory(key, src)


def _jmp_factory(opcode: int) -> Callable[..., Callable[[list[int]], int]] | None:
    key = ("jmp", opcode)
    if key in _FACTORIES:
        return _FACTORIES[key]
    d, s = sem.operand_exprs(opcode, "R[dst]", "R[src]", 0)
    if not opcode & sem.SRC_X:
        s = "s"
    cond = sem.jump_expr(opcode, d, s)
    if cond is None:
        return None
    src = ("def make(dst, src, s, nxt, tgt):\n"
           "    def op(R):\n"
           f"        return tgt if {cond} else nxt\n"
           "    return op\n")
    return _factory(key, src)


def _load_factory(size: int, signed: bool) -> Callable[..., Callable[[list[int]], int]]:
    unpack = f"_u{size}{'s' if signed else ''}"
    fix = " & 0xFFFFFFFFFFFFFFFF" if signed else ""
    src = ("def make(dst, src, off, nxt, regions, slow):\n"
           "    def op(R):\n"
           "        a = (R[src] + off) & 0xFFFFFFFFFFFFFFFF\n"
           "        r = regions.get(a >> 32)\n"
           "        if r is not None:\n"
           "            o = a & 0xFFFFFFFF\n"
           f"            if o + {size} <= r.size and not r.guards and r.access_hook is None:\n"
           f"                R[dst] = {unpack}(r.buf, o)[0]{fix}\n"
           "                return nxt\n"
           f"        R[dst] = slow(a, {size}, {signed})\n"
           "        return nxt\n"
           "    return op\n")
    return _factory(("ldx", size, signed), src)


def _store_factory(size: int, from_reg: bool) -> Callable[..., Callable[[list[int]], int]]:
    value = f"R[src] & {hex((1 << (size * 8)) - 1)}" if from_reg else "v"
    src = ("def make(dst, src, v, off, nxt, regions, slow):\n"
           "    def op(R):\n"
           "        a = (R[dst] + off) & 0xFFFFFFFFFFFFFFFF\n"
           f"        x = {value}\n"
           "        r = regions.get(a >> 32)\n"
           "        if r is not None:\n"
           "            o = a & 0xFFFFFFFF\n"
           f"            if o + {size} <= r.size and r.writable and not r.guards and r.access_hook is None:\n"
           f"                _p{size}(r.buf, o, x)\n"
           "                return nxt\n"
           f"        slow(a, {size}, x)\n"
           "        return nxt\n"
           "    return op\n")
    return _factory(("st", size, from_reg), src)


def _trap(message: str) -> Callable[[list[int]], int]:
    def op(R: list[int]) -> int:
        raise ExecutionError(message)
    return op


def _const(dst: int, value: int, nxt: int) -> Callable[[list[int]], int]:
    def op(R: list[int]) -> int:
        R[dst] = value
        return nxt
    return op


def _special(pc: int) -> Callable[[list[int]], int]:
    neg = ~pc

    def op(R: list[int]) -> int:
        return neg
    return op


# -- decoded program ----------------------------------------------------------------------------
class _Code:
    """One instruction list decoded against one AddressSpace: `ops[pc](R) -> next pc`, plus the
    kinds of the slots the loop handles.  `ops[len(insns)]` traps a run off the end."""

    def __init__(self, insns: Sequence[Instruction], mem: AddressSpace, name: str) -> None:
        self.insns = list(insns)
        self.mem = mem
        self.name = name
        self.kinds: dict[int, int] = {}
        regions = mem.region_table
        n = len(self.insns)
        self.ops = [self._decode(pc, insn, n, regions) for pc, insn in enumerate(self.insns)]
        self.ops.append(_trap(f"execution ran past the last instruction ({n})"))

    # slow paths: full checks through AddressSpace.resolve, ctx access hooks
    def load(self, addr: int, size: int, signed: bool) -> int:
        region, off = self.mem.resolve(addr, size)
        if region.access_hook is not None:
            # The hook is convert_ctx_access: a 4-byte load of xdp_md.data yields a 64-bit
            # pointer, so its value is not truncated to the access size (vm/memory.py).
            return int(region.access_hook(off, size, False, 0)) & M64
        else:
            value = _UNPACK[size, False](region.buf, off)[0]
        return sem.load_extend(value, size, signed)

    def store(self, addr: int, size: int, value: int) -> None:
        region, off = self.mem.resolve(addr, size, True)
        if region.access_hook is not None:
            region.access_hook(off, size, True, value)
        else:
            _PACK[size](region.buf, off, value)

    def _atomic_op(self, dst: int, src: int, off: int, imm: int, size: int,
                   nxt: int) -> Callable[[list[int]], int]:
        mem = self.mem
        unpack, pack = _UNPACK[size, False], _PACK[size]
        load_acq = imm == sem.ATOMIC_LOAD_ACQ
        mask = (1 << (size * 8)) - 1

        def op(R: list[int]) -> int:
            addr = (R[src if load_acq else dst] + off) & M64
            region, o = mem.resolve(addr, size, not load_acq)
            if region.access_hook is not None:
                raise MemoryFault(f"atomic access to {region.kind} '{region.name}' at {addr:#x}",
                                  address=addr)
            res = sem.atomic(imm, size, unpack(region.buf, o)[0], R[src], R[0])
            if res.store is not None:
                pack(region.buf, o, res.store & mask)
            if res.fetch_reg == "src":
                R[src] = res.fetched  # type: ignore[assignment]
            elif res.fetch_reg == "r0":
                R[0] = res.fetched  # type: ignore[assignment]
            elif res.fetch_reg == "dst":
                R[dst] = res.fetched  # type: ignore[assignment]
            return nxt
        return op

    def _decode(self, pc: int, insn: Instruction, n: int,
                regions: dict[int, Region]) -> Callable[[list[int]], int]:
        op, dst, src, off, imm = insn.opcode, insn.dst, insn.src, insn.off, insn.imm
        cls = op & 7
        nxt = pc + 1
        bad = f"invalid instruction (opcode {op:#04x})"
        if insn.lddw_tail:
            return _trap("jump into the second slot of lddw")
        if not (0 <= op <= 0xFF and 0 <= dst <= 10 and 0 <= src <= 10):
            return _trap(f"invalid register in instruction (opcode {op:#04x}, dst r{dst}, src r{src})")

        def target(t: int) -> int:
            return t if 0 <= t < n else n   # ops[n] traps: "ran past the last instruction"

        if cls in (sem.ALU, sem.ALU64):
            make = _alu_factory(op, off, imm)
            if make is None:
                return _trap(bad)
            return make(dst, src, sem.imm_operand(op, imm), nxt)
        if cls in (sem.JMP, sem.JMP32):
            jop = op & 0xF0
            if jop == sem.JA and not op & sem.SRC_X:
                t = target(pc + 1 + (off if cls == sem.JMP else imm))

                def ja(R: list[int]) -> int:
                    return t
                return ja
            if cls == sem.JMP and jop == sem.EXIT and not op & sem.SRC_X:
                self.kinds[pc] = _EXIT
                return _special(pc)
            if cls == sem.JMP and jop == sem.CALL:
                self.kinds[pc] = _CALLX if op & sem.SRC_X else _CALL
                return _special(pc)
            if cls == sem.JMP and jop == sem.JCOND and not op & sem.SRC_X and src == 0:
                self.kinds[pc] = _MAY_GOTO
                return _special(pc)
            make = _jmp_factory(op)
            if make is None:
                return _trap(bad)
            return make(dst, src, sem.imm_operand(op, imm), nxt, target(pc + 1 + off))
        mode, size = op & 0xE0, sem.SIZE_BYTES[op & 0x18]
        if cls == sem.LD:
            if op == 0x18:
                if insn.imm64 is None:
                    return _trap("lddw without its second slot")
                if src == BPF_PSEUDO_FUNC:
                    return _const(dst, func_pointer(target(pc + 1 + imm)), pc + 2)
                return _const(dst, insn.imm64, pc + 2)
            if mode in (sem.MODE_ABS, sem.MODE_IND):
                return _trap("legacy packet access (LD_ABS/LD_IND) is not supported")
            return _trap(bad)
        if cls == sem.LDX and mode in (sem.MODE_MEM, sem.MODE_MEMSX):
            if mode == sem.MODE_MEMSX and size == 8:
                return _trap(bad)
            return _load_factory(size, mode == sem.MODE_MEMSX)(dst, src, off, nxt, regions, self.load)
        if cls == sem.ST and mode == sem.MODE_MEM:
            return _store_factory(size, False)(dst, src, imm & ((1 << (size * 8)) - 1), off, nxt,
                                               regions, self.store)
        if cls == sem.STX and mode == sem.MODE_MEM:
            return _store_factory(size, True)(dst, src, 0, off, nxt, regions, self.store)
        if cls == sem.STX and mode == sem.MODE_ATOMIC:
            if not sem.atomic_valid(imm, size):
                return _trap(f"invalid atomic operation {imm:#x} of size {size}")
            return self._atomic_op(dst, src, off, imm, size, nxt)
        return _trap(bad)


# -- the machine --------------------------------------------------------------------------------
class _RunState:
    """Counters shared by one run and every callback it makes (budget, depth, tail calls)."""

    __slots__ = ("budget", "count", "depth", "tail_calls", "may_goto", "env", "code")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.count = 0
        self.depth = 0
        self.tail_calls = 0
        self.may_goto = BPF_MAX_LOOPS
        self.env: VmEnv | None = None
        self.code: _Code | None = None


class VmEnv:
    """The `ExecEnv` a helper receives: `mem`, `program`, `cpu`, `call()`, `insn_count`.
    Extra attributes given as `env_fields` to `run`/`call_function` are set on it as is (the
    runtime passes its own context this way)."""

    def __init__(self, engine: Interpreter, state: _RunState, program: Any, cpu: int) -> None:
        self.mem = engine.mem
        self.program = program
        self.cpu = cpu
        self._engine = engine
        self._state = state

    def call(self, func_ptr: int, *args: int) -> int:
        """Run the callback subprogram `func_ptr` (from lddw BPF_PSEUDO_FUNC) in a new frame."""
        return self._engine._callback(self._state, func_ptr, args)

    @property
    def insn_count(self) -> int:
        """Instructions executed so far in this run (exact at helper-call time)."""
        return self._state.count


class Interpreter:
    """The reference engine.  One instance per loaded program; runs may nest (callbacks) and
    may run concurrently on different threads (each run has its own registers and stack)."""

    def __init__(self, insns: Sequence[Instruction], *, mem: AddressSpace,
                 helpers: Mapping[int, Helper] | None = None,
                 kfuncs: Mapping[int, Helper] | None = None,
                 name: str = "program", program: Any = None,
                 budget: int = DEFAULT_BUDGET) -> None:
        self.mem = mem
        self.helpers: Mapping[int, Helper] = helpers if helpers is not None else {}
        self.kfuncs: Mapping[int, Helper] = kfuncs if kfuncs is not None else {}
        self.name = name
        self.program = program
        self.budget = budget
        self.code = _Code(insns, mem, name)
        self.last_insn_count = 0
        self._foreign: dict[int, tuple[Any, _Code]] = {}

    @property
    def insns(self) -> list[Instruction]:
        return self.code.insns

    # -- entry points -------------------------------------------------------------------------
    def run(self, *args: int, entry: int = 0, program: Any = None, cpu: int = 0,
            budget: int | None = None, env_fields: Mapping[str, Any] | None = None) -> int:
        """Run from `entry` with r1..r5 = args; return r0 (unsigned 64-bit).  The number of
        executed instructions is `last_insn_count` afterwards (also after an error)."""
        if len(args) > 5:
            raise ExecutionError(f"at most 5 arguments, got {len(args)}", program=self.name)
        st = _RunState(self.budget if budget is None else budget)
        env = VmEnv(self, st, self.program if program is None else program, cpu)
        for key, value in (env_fields or {}).items():
            setattr(env, key, value)
        st.env = env
        R = [0] * 11
        for i, a in enumerate(args, 1):
            R[i] = a & M64
        try:
            return self._exec(st, self.code, entry, R)
        finally:
            self.last_insn_count = st.count

    def call_function(self, insn_index: int, args: Sequence[int] = (),
                      env_fields: Mapping[str, Any] | None = None, *, program: Any = None,
                      cpu: int = 0, budget: int | None = None) -> int:
        """Run the subprogram at `insn_index` as a fresh run (a timer callback fired by the
        clock, outside any program run); return its r0."""
        return self.run(*args, entry=insn_index, program=program, cpu=cpu, budget=budget,
                        env_fields=env_fields)

    # -- internals ----------------------------------------------------------------------------
    def _callback(self, st: _RunState, func_ptr: int, args: Sequence[int]) -> int:
        code = st.code or self.code
        index = func_pointer_target(func_ptr)
        if index is None:
            raise ExecutionError(f"callback {func_ptr:#x} is not a function pointer", program=code.name)
        if len(args) > 5:
            raise ExecutionError(f"a callback takes at most 5 arguments, got {len(args)}",
                                 program=code.name)
        R = [0] * 11
        for i, a in enumerate(args, 1):
            R[i] = a & M64
        try:
            return self._exec(st, code, index, R)
        finally:
            st.code = code

    def _code_for(self, target: Any) -> _Code:
        """Decoded code of a tail-call target (see env.TailCallTarget)."""
        engine = getattr(target, "engine", None)
        if isinstance(engine, Interpreter) and engine.mem is self.mem:
            return engine.code
        cached = self._foreign.get(id(target))
        if cached is not None and cached[0] is target:
            return cached[1]
        insns = getattr(target, "insns", None)
        if insns is None:
            raise ExecutionError(f"tail-call target {target!r} has no instructions")
        code = _Code(insns, self.mem, str(getattr(target, "name", "tail-call target")))
        self._foreign[id(target)] = (target, code)
        return code

    def _new_stack(self, code: _Code, depth: int) -> Region:
        return self.mem.map(bytearray(MAX_BPF_STACK), name=f"{code.name} stack frame {depth}",
                            kind="stack")

    def _exec(self, st: _RunState, code: _Code, pc: int, R: list[int]) -> int:
        """Run until the frame entered here exits; returns its r0."""
        if not 0 <= pc < len(code.insns):
            raise ExecutionError(f"entry point {pc} outside the program ({len(code.insns)} slots)",
                                 program=code.name)
        if st.depth >= MAX_CALL_FRAMES:
            raise ExecutionError(f"call depth exceeds {MAX_CALL_FRAMES} frames", program=code.name, pc=pc)
        mem = self.mem
        st.depth += 1
        stack = self._new_stack(code, st.depth)
        R[10] = stack.end
        st.code = code
        frames: list[tuple] = []
        try:
            while True:
                ops = code.ops
                left = st.budget - st.count
                k = -1
                try:
                    for k in range(left):  # noqa: B007 - k is the count of this stretch
                        pc = ops[pc](R)
                        if pc < 0:
                            break
                    else:
                        st.count += left
                        raise InstructionBudgetExceeded(
                            f"instruction budget of {st.budget} exhausted", program=code.name, pc=pc)
                except InstructionBudgetExceeded:
                    raise
                except BpfError as exc:
                    st.count += k + 1
                    raise _located(exc, code.name, pc) from None
                except Exception as exc:  # an engine bug must still surface as a BpfError
                    st.count += k + 1
                    raise ExecutionError(f"internal error: {type(exc).__name__}: {exc}",
                                         program=code.name, pc=pc) from exc
                st.count += k + 1
                pc = ~pc
                kind = code.kinds[pc]
                insn = code.insns[pc]
                if kind == _EXIT:
                    if not frames:
                        return R[0]
                    mem.unmap(stack)
                    st.depth -= 1
                    code, pc, R[6], R[7], R[8], R[9], R[10], stack = frames.pop()
                    st.code = code
                    continue
                if kind == _MAY_GOTO:
                    # verifier.c: do_misc_fixups turns may_goto into a countdown of BPF_MAX_LOOPS.
                    if st.may_goto:
                        st.may_goto -= 1
                        pc += 1
                    else:
                        pc = pc + 1 + insn.off
                        if not 0 <= pc < len(code.insns):
                            pc = len(code.insns)   # ops[n] traps
                    continue
                # calls
                local: int | None = None
                helper_id: int | None = None
                table, what = self.helpers, "helper"
                if kind == _CALLX:
                    reg = insn.dst or insn.imm   # bpf_conformance puts the register in dst
                    if not 0 <= reg <= 10:
                        raise ExecutionError(f"callx through invalid register r{reg}",
                                             program=code.name, pc=pc)
                    value = R[reg]
                    local = func_pointer_target(value)
                    if local is None:
                        if value >> 32:
                            raise ExecutionError(f"callx to {value:#x}: neither a function pointer nor "
                                                 "a helper id", program=code.name, pc=pc)
                        helper_id = value
                elif insn.src == BPF_PSEUDO_CALL:
                    local = pc + 1 + insn.imm
                elif insn.src == BPF_PSEUDO_KFUNC_CALL:
                    helper_id, table, what = insn.imm, self.kfuncs, "kfunc"
                elif insn.src == 0:
                    helper_id = insn.imm & 0xFFFFFFFF
                else:
                    raise ExecutionError(f"invalid call (src {insn.src})", program=code.name, pc=pc)
                if local is not None:
                    if not 0 <= local < len(code.insns):
                        raise ExecutionError(f"call to {local} outside the program", program=code.name, pc=pc)
                    if st.depth >= MAX_CALL_FRAMES:
                        raise ExecutionError(f"call depth exceeds {MAX_CALL_FRAMES} frames",
                                             program=code.name, pc=pc)
                    frames.append((code, pc + 1, R[6], R[7], R[8], R[9], R[10], stack))
                    st.depth += 1
                    stack = self._new_stack(code, st.depth)
                    R[10] = stack.end
                    pc = local
                    continue
                fn = table.get(helper_id)  # type: ignore[arg-type]
                if fn is None:
                    name = _HELPER_NAMES.get(helper_id, "") if what == "helper" else ""  # type: ignore[arg-type]
                    label = f"{what} {helper_id}" + (f" ({name})" if name else "")
                    raise ExecutionError(f"unknown {label}", program=code.name, pc=pc)
                try:
                    ret = fn(st.env, R[1], R[2], R[3], R[4], R[5])
                    R[0] = ret & M64
                except TailCall as tail:
                    if st.tail_calls >= MAX_TAIL_CALL_CNT:
                        pc += 1   # core.c: bpf_tail_call falls through past MAX_TAIL_CALL_CNT
                        continue
                    st.tail_calls += 1
                    code = self._code_for(tail.target)
                    st.code = code
                    st.env.program = tail.target  # type: ignore[union-attr]
                    mem.unmap(stack)
                    stack = self._new_stack(code, st.depth)
                    R[10] = stack.end
                    pc = 0
                    continue
                except BpfError:
                    raise
                except Exception as exc:
                    name = getattr(fn, "__name__", repr(fn))
                    raise CallbackError(f"{what} {helper_id} ({name}) raised {type(exc).__name__}: {exc}"
                                        f" in {code.name} at pc {pc}") from exc
                pc += 1
        finally:
            mem.unmap(stack)
            for frame in frames:
                mem.unmap(frame[7])
            st.depth -= 1 + len(frames)


def _located(exc: BpfError, program: str, pc: int) -> BpfError:
    """The same error with the program name and pc filled in (closures do not know them)."""
    if isinstance(exc, MemoryFault) and exc.pc is None:
        return MemoryFault(exc.message, program=program, pc=pc, address=exc.address)
    if isinstance(exc, ExecutionError) and exc.pc is None:
        return type(exc)(exc.message, program=program, pc=pc)
    return exc
