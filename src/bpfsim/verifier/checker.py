"""A path-exploring abstract interpreter that enforces the kernel verifier's rules we model.

Job: prove (or refute) a linked program against the maps it uses and its program type, with
the kernel's exact messages for the rules it knows: the bpf_timer rules of
spec/bpf_timer.md §8-§9, NULL checks on map lookups, map value bounds, stack-pointer and
callback typing.  Where it is unsure (pointers it does not model, variable offsets) it stays
silent: a missing rejection is a gap, a false rejection would break a valid program.
Must not execute code (no `vm`), nor import `runtime`.

Shape, after verifier.c: `do_check` walks instructions from a state; conditional jumps push
the other branch (`push_stack`); states already seen at an instruction are pruned
(`is_state_visited`, here by equality after widening); callbacks are verified as their own
entry with the registers `set_*_callback_state` gives them; subprogram calls push a frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from bpfsim.errors import VerifierError
from bpfsim.isa import semantics as sem
from bpfsim.isa.insn import Instruction
from bpfsim.uapi import constants as C
from bpfsim.uapi.helper_ids import HELPER_NAMES
from bpfsim.uapi.helper_protos import HELPER_PROTOS
from bpfsim.verifier.types import (
    CTX,
    FP,
    FUNC,
    MAP_KEY,
    MAP_PTR,
    MAP_PTR_OR_NULL,
    MAP_VALUE,
    MAP_VALUE_OR_NULL,
    MEM,
    MEM_OR_NULL,
    NOT_INIT,
    PTR,
    S64_MAX,
    S64_MIN,
    SCALAR,
    UNINIT,
    UNKNOWN,
    MapInfo,
    Reg,
    const,
    scalar_range,
)

INSN_LIMIT = 1_000_000          # BPF_COMPLEXITY_LIMIT_INSNS
WIDEN_AFTER = 8                 # visits of one pc before scalars/offsets are widened

H_MAP_LOOKUP = 1
H_MAP_UPDATE = 2
H_MAP_DELETE = 3
H_TIMER_INIT, H_TIMER_SET_CALLBACK, H_TIMER_START, H_TIMER_CANCEL = 169, 170, 171, 172
H_LOOP = 181
H_FOR_EACH = 164
H_RINGBUF_RESERVE = 131
TIMER_HELPERS = (H_TIMER_INIT, H_TIMER_SET_CALLBACK, H_TIMER_START, H_TIMER_CANCEL)
# bpf_func_proto.might_sleep: copy_from_user, ima_inode_hash, copy_from_user_task, ima_file_hash
MIGHT_SLEEP = frozenset({148, 161, 191, 193})

GPL_COMPATIBLE = {"GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL",
                  "Dual MPL/GPL"}


def license_is_gpl_compatible(license_: str) -> bool:
    """kernel/module/main.c: license_is_gpl_compatible."""
    return license_ in GPL_COMPATIBLE


class Reject(Exception):  # noqa: N818 (internal control flow, turned into VerifierError)
    def __init__(self, message: str, errno: int, pc: int) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.pc = pc


@dataclass(frozen=True)
class Frame:
    regs: tuple[Reg, ...]                 # r0..r10
    stack: tuple[tuple[tuple[int, int], Reg], ...]   # ((offset from fp, size), value) of stores
    ret_pc: int = -1                      # where the caller continues (-1: outermost)
    callsite_regs: tuple[Reg, ...] = ()   # caller's r6..r9 are restored on return
    func: int = 0                         # entry insn of the function this frame runs


@dataclass(frozen=True)
class State:
    pc: int
    frames: tuple[Frame, ...]
    ret_range: tuple[int, int] | None = None   # callback return range to enforce at exit
    exit_ctx: str = ""                         # "At async callback return", ...
    in_async: bool = False                     # inside a timer callback: never sleepable

    @property
    def frame(self) -> Frame:
        return self.frames[-1]


@dataclass
class Program:
    """The verifier's view of one linked program."""

    name: str
    insns: Sequence[Instruction]
    prog_type: int
    license: str
    maps_by_insn: Mapping[int, tuple[MapInfo, int]]   # lddw slot -> (map, value offset or -1 for the map)
    static_funcs: frozenset[int] | None = None         # slots of static functions (None: no func_info)
    global_funcs: frozenset[int] = frozenset()
    log: list[str] = field(default_factory=list)


class Checker:
    """Verifies one Program; raises VerifierError with the kernel's message on the first error."""

    def __init__(self, prog: Program) -> None:
        self.p = prog
        self.insns = prog.insns
        self.processed = 0
        self.visits: dict[int, int] = {}
        self.seen: dict[int, set[State]] = {}
        self.next_id = 0          # verifier.c: env->id_gen; the first ++id_gen is 1 (map_uid=1)
        self.pending_callbacks: list[State] = []
        self.verified_callbacks: set[tuple] = set()
        self.loop_heads = _loop_heads(prog.insns)
        self.max_ctx_offset = 0     # bpf_prog_aux.max_ctx_offset: test_run needs this much ctx
        # check_max_stack_depth: each function's own depth, who calls whom (calls and
        # synchronous callbacks), and the roots (the program, every async callback)
        self.stack_depth: dict[int, int] = {}
        self.callees: dict[int, list[int]] = {}
        self.async_roots: list[int] = []

    # -- driver ----------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._check_map_compat()
            regs = [UNINIT] * 11
            regs[1] = Reg(CTX)
            regs[10] = Reg(FP, frame=0)
            self._explore(State(0, (Frame(tuple(regs), ()),)))
            while self.pending_callbacks:
                self._explore(self.pending_callbacks.pop(0))
            self._check_max_stack_depth()
        except Reject as r:
            self.p.log.append(r.message)
            self.p.log.append(f"processed {self.processed} insns (limit {INSN_LIMIT})")
            raise VerifierError(r.message, program=self.p.name, pc=r.pc,
                                log="\n".join(self.p.log) + "\n", errno=r.errno) from None
        self.p.log.append(f"processed {self.processed} insns (limit {INSN_LIMIT})")

    def _check_map_compat(self) -> None:
        """verifier.c: check_map_prog_compatibility, run while resolving lddw map references."""
        for pc, (m, _off) in sorted(self.p.maps_by_insn.items()):
            if m.timer_off is not None and self.p.prog_type in C.TRACING_PROG_TYPES:
                raise Reject("tracing progs cannot use bpf_timer yet", C.EINVAL, pc)

    def _explore(self, start: State) -> None:
        stack = [start]
        while stack:
            state = stack.pop()
            while state is not None:
                state = self._maybe_prune(state)
                if state is None:
                    break
                self.processed += 1
                if self.processed > INSN_LIMIT:
                    raise Reject(f"BPF program is too large. Processed {self.processed} insn",
                                 C.E2BIG, state.pc)
                state, branch = self._step(state)
                if branch is not None:
                    stack.append(branch)

    def _maybe_prune(self, state: State) -> State | None:
        pc = state.pc
        n = self.visits.get(pc, 0) + 1
        self.visits[pc] = n
        if n > WIDEN_AFTER and pc in self.loop_heads:
            state = _widen(state)
        seen = self.seen.setdefault(pc, set())
        if state in seen:
            return None
        seen.add(state)
        return state

    # -- one instruction -------------------------------------------------------------------
    def _step(self, st: State) -> tuple[State | None, State | None]:
        pc = st.pc
        if pc < 0 or pc >= len(self.insns):
            raise Reject(f"jump out of range from insn {pc}", C.EINVAL, pc)
        insn = self.insns[pc]
        cls = insn.opcode & 7
        regs = list(st.frame.regs)
        if cls in (0x07, 0x04):                           # ALU64 / ALU
            regs[insn.dst] = self._alu(insn, regs, pc)
            return self._next(st, regs, pc + 1), None
        if cls == 0x00:                                    # LD: lddw (LD_ABS/IND: scalar r0)
            if insn.opcode == 0x18:
                regs[insn.dst] = self._lddw(insn, pc)
                return self._next(st, regs, pc + 2), None
            regs[0] = UNKNOWN
            return self._next(st, regs, pc + 1), None
        if cls == 0x01:                                    # LDX
            size = _SIZE[insn.opcode & 0x18]
            base = self._read_reg(regs, insn.src, pc)
            regs[insn.dst] = self._load(st, base, insn.off, size, insn.src, pc,
                                        signed=(insn.opcode & 0xE0) == 0x80)
            return self._next(st, regs, pc + 1), None
        if cls in (0x02, 0x03):                            # ST / STX
            size = _SIZE[insn.opcode & 0x18]
            base = self._read_reg(regs, insn.dst, pc)
            if cls == 0x03:
                val = self._read_reg(regs, insn.src, pc)
            else:
                val = const(insn.imm)
            mode = insn.opcode & 0xE0
            self._check_mem(base, insn.off, size, insn.dst, pc, write=True)
            new_stack = st.frame.stack
            if base.kind == FP and not base.var:
                new_stack = _spill(new_stack, base.off + insn.off, size,
                                   val if mode != 0xC0 else UNKNOWN)
            if mode == 0xC0 and cls == 0x03:               # atomics
                if insn.imm in (0x01 | 0x00, 0x01 | 0x40, 0x01 | 0x50, 0x01 | 0xA0, 0xE1):
                    regs[insn.src] = UNKNOWN
                elif insn.imm == 0xF1:
                    regs[0] = UNKNOWN
            frame = replace(st.frame, regs=tuple(regs), stack=new_stack)
            return replace(st, pc=pc + 1, frames=st.frames[:-1] + (frame,)), None
        # JMP / JMP32
        op = insn.opcode & 0xF0
        if op == 0x90:                                     # exit
            return self._exit(st, regs, pc), None
        if op == 0x80:                                     # call
            if insn.opcode & 0x08:                         # callx: valid ISA, refused by Linux
                raise Reject(f"unknown opcode {insn.opcode:02x}", C.EINVAL, pc)
            return self._call(st, regs, insn, pc), None
        if op == 0x00:                                     # ja / gotol
            target = pc + 1 + (insn.imm if cls == 0x06 else insn.off)
            return self._next(st, regs, target), None
        return self._cond_jump(st, regs, insn, pc)

    def _next(self, st: State, regs: list[Reg], pc: int) -> State:
        frame = replace(st.frame, regs=tuple(regs))
        return replace(st, pc=pc, frames=st.frames[:-1] + (frame,))

    def _read_reg(self, regs: list[Reg], r: int, pc: int) -> Reg:
        if regs[r].kind == NOT_INIT:
            raise Reject(f"R{r} !read_ok", C.EACCES, pc)
        return regs[r]

    # -- ALU -------------------------------------------------------------------------------
    def _alu(self, insn: Instruction, regs: list[Reg], pc: int) -> Reg:
        is64 = (insn.opcode & 7) == 0x07
        op = insn.opcode & 0xF0
        use_reg = bool(insn.opcode & 0x08)
        if op == 0xD0:                                     # END: byte swaps
            self._read_reg(regs, insn.dst, pc)
            return UNKNOWN
        if op == 0xB0:                                     # mov / movsx
            src = self._read_reg(regs, insn.src, pc) if use_reg else const(insn.imm)
            if src.is_const:                               # mov, mov32, movsx: the ISA's own result
                return const(sem.alu(insn.opcode, insn.off, insn.imm, 0, src.smin))
            if not is64:
                return scalar_range(0, 0xFFFFFFFF) if src.kind == SCALAR else UNKNOWN
            if insn.off and use_reg:                       # movsx of an unknown value
                return UNKNOWN
            return src
        dst = self._read_reg(regs, insn.dst, pc)
        if not use_reg:
            # verifier.c: check_alu_op refuses constant shifts past the width and constant
            # division by zero before looking at any value
            bits = 64 if is64 else 32
            if op in (0x60, 0x70, 0xC0) and not 0 <= insn.imm < bits:
                raise Reject(f"invalid shift {insn.imm}", C.EINVAL, pc)
            if op in (0x30, 0x90) and insn.imm == 0:
                raise Reject("div by zero", C.EINVAL, pc)
        if op == 0x80:                                     # neg
            if dst.is_const:
                return const(sem.alu(insn.opcode, insn.off, insn.imm, dst.smin))
            return UNKNOWN
        src = self._read_reg(regs, insn.src, pc) if use_reg else const(insn.imm)
        if dst.kind != SCALAR or src.kind != SCALAR:
            return self._ptr_alu(op, dst, src, is64, insn.dst, pc)
        if dst.is_const and src.is_const:
            return const(sem.alu(insn.opcode, insn.off, insn.imm, dst.smin, src.smin))
        if op == 0x50 and src.is_const and src.smin >= 0:            # and with a mask
            return scalar_range(0, src.smin if is64 else min(src.smin, 0xFFFFFFFF))
        if op == 0x70 and src.is_const and 0 < src.smin < 64:         # rsh by a constant
            return scalar_range(0, ((1 << (64 if is64 else 32)) - 1) >> src.smin)
        if op == 0x90 and src.is_const and src.smin > 0:              # mod by a constant
            return scalar_range(0, src.smin - 1) if dst.smin >= 0 else UNKNOWN
        if not is64:
            return scalar_range(0, 0xFFFFFFFF)
        return UNKNOWN

    def _ptr_alu(self, op: int, dst: Reg, src: Reg, is64: bool, regno: int, pc: int) -> Reg:
        """Pointer arithmetic (verifier.c: adjust_ptr_min_max_vals), as far as we model it."""
        if not is64:
            return UNKNOWN
        ptr_regno = regno
        if dst.kind == SCALAR and src.kind != SCALAR and op == 0x00:     # scalar + ptr
            dst, src = src, dst
            ptr_regno = -1
        if dst.kind == SCALAR:
            return UNKNOWN
        if op in (0x00, 0x10) and src.kind == SCALAR:
            if dst.kind in (MAP_VALUE_OR_NULL, MAP_PTR_OR_NULL, MEM_OR_NULL):
                if ptr_regno < 0:
                    return replace(dst, var=True)
                raise Reject(f"R{ptr_regno} pointer arithmetic on {dst.type_name()} prohibited, "
                             f"null-check it first", C.EACCES, pc)
            if src.is_const:
                if dst.var:
                    return dst
                delta = src.smin if op == 0x00 else -src.smin
                return replace(dst, off=dst.off + delta)
            return replace(dst, var=True)
        if op == 0x10 and src.kind == dst.kind:                          # ptr - ptr
            return UNKNOWN
        if op == 0xB0:
            return src
        return UNKNOWN

    # -- memory ----------------------------------------------------------------------------
    def _lddw(self, insn: Instruction, pc: int) -> Reg:
        if insn.src == C.BPF_PSEUDO_FUNC:
            target = pc + 1 + insn.imm
            if self.p.static_funcs is None:
                raise Reject("missing btf func_info", C.EINVAL, pc)
            if target in self.p.global_funcs:
                raise Reject("callback function not static", C.EINVAL, pc)
            return Reg(FUNC, off=target)
        ref = self.p.maps_by_insn.get(pc)
        if ref is not None:
            m, off = ref
            if off < 0:
                return Reg(MAP_PTR, map=m)
            return Reg(MAP_VALUE, map=m, off=off)
        if insn.src in (C.BPF_PSEUDO_BTF_ID,):
            return Reg(PTR)
        return const(insn.imm64 or 0)

    def _check_mem(self, base: Reg, off: int, size: int, regno: int, pc: int, *, write: bool) -> None:
        kind = base.kind
        if kind == CTX and not base.var:
            # verifier.c: check_ctx_access records the furthest ctx byte a program touches
            self.max_ctx_offset = max(self.max_ctx_offset, base.off + off + size)
        if kind in (MAP_VALUE_OR_NULL, MAP_PTR_OR_NULL, MEM_OR_NULL):
            raise Reject(f"R{regno} invalid mem access '{base.type_name()}'", C.EACCES, pc)
        if kind == MAP_VALUE:
            self._check_map_access(base, off, size, regno, pc, write=write)
        elif kind == MAP_KEY and write:
            raise Reject(f"write to change key R{regno} not allowed", C.EACCES, pc)
        elif kind == FP and not base.var:
            total = base.off + off
            if -total > self.stack_depth.get(base.frame, 0):
                self.stack_depth[base.frame] = -total
            if total < -C.MAX_BPF_STACK or total + size > 0:
                raise Reject(f"invalid {'write' if write else 'read'} stack R{regno} off={total} "
                             f"size={size}", C.EACCES, pc)
        elif kind == MAP_PTR and write:
            raise Reject(f"R{regno} cannot write into map_ptr", C.EACCES, pc)

    def _check_map_access(self, base: Reg, off: int, size: int, regno: int, pc: int, *,
                          write: bool) -> None:
        """verifier.c: check_map_access (value bounds, then special fields)."""
        m = base.map
        if m is None or base.var:
            return
        start = base.off + off
        if start < 0 or start + size > m.value_size:
            raise Reject(f"invalid access to map value, value_size={m.value_size} off={start} "
                         f"size={size}", C.EACCES, pc)
        if m.timer_off is not None and start < m.timer_off + 16 and start + size > m.timer_off:
            raise Reject("bpf_timer cannot be accessed directly by load/store", C.EACCES, pc)
        if write and m.flags & C.BPF_F_RDONLY_PROG:
            raise Reject(f"write into map forbidden, value_size={m.value_size} off={start} "
                         f"size={size}", C.EACCES, pc)

    def _load(self, st: State, base: Reg, off: int, size: int, regno: int, pc: int, *,
              signed: bool) -> Reg:
        self._check_mem(base, off, size, regno, pc, write=False)
        if base.kind == FP and not base.var:
            slot = dict(st.frame.stack).get((base.off + off, size))
            if slot is not None:
                return slot
        if size < 8 and not signed:
            return scalar_range(0, (1 << (size * 8)) - 1)
        return UNKNOWN

    # -- jumps -----------------------------------------------------------------------------
    def _cond_jump(self, st: State, regs: list[Reg], insn: Instruction, pc: int):
        op = insn.opcode & 0xF0
        is64 = (insn.opcode & 7) == 0x05
        dst = self._read_reg(regs, insn.dst, pc)
        src = self._read_reg(regs, insn.src, pc) if insn.opcode & 0x08 else const(insn.imm)
        taken_pc = pc + 1 + insn.off
        # NULL checks of *_or_null pointers (verifier.c: mark_ptr_or_null_regs)
        if dst.kind in (MAP_VALUE_OR_NULL, MAP_PTR_OR_NULL, MEM_OR_NULL) and src.is_const \
                and src.smin == 0 and op in (0x10, 0x50) and is64:
            null_regs, ok_regs = _mark_null(st, dst.id, null=True), _mark_null(st, dst.id, null=False)
            if op == 0x10:    # jeq: taken when NULL
                return replace(null_regs, pc=taken_pc), replace(ok_regs, pc=pc + 1)
            return replace(ok_regs, pc=taken_pc), replace(null_regs, pc=pc + 1)
        if dst.is_const and src.is_const:
            taken = sem.jump_taken(insn.opcode, insn.imm, dst.smin, src.smin)
            return self._next(st, regs, taken_pc if taken else pc + 1), None
        # refine on equality with a constant, so `if r0 == 0` style returns stay precise
        fall = self._next(st, regs, pc + 1)
        jump = self._next(st, regs, taken_pc)
        if dst.kind == SCALAR and src.is_const and is64 and op in (0x10, 0x50):
            eq_regs = list(regs)
            eq_regs[insn.dst] = src
            eq_state = self._next(st, eq_regs, taken_pc if op == 0x10 else pc + 1)
            if op == 0x10:
                jump = eq_state
            else:
                fall = eq_state
        return fall, jump

    # -- calls -----------------------------------------------------------------------------
    def _call(self, st: State, regs: list[Reg], insn: Instruction, pc: int) -> State:
        if insn.src == C.BPF_PSEUDO_CALL:
            if len(st.frames) >= C.MAX_CALL_FRAMES:
                raise Reject(f"the call stack of {len(st.frames) + 1} frames is too deep !",
                             C.E2BIG, pc)
            target = pc + 1 + insn.imm
            callee = [UNINIT] * 11
            callee[1:6] = regs[1:6]
            callee[10] = Reg(FP, frame=target)
            self._add_callee(st.frame.func, target)
            caller = replace(st.frame, regs=tuple(regs))
            frame = Frame(tuple(callee), (), ret_pc=pc + 1, func=target)
            return replace(st, pc=target, frames=st.frames[:-1] + (caller, frame))
        if insn.src == C.BPF_PSEUDO_KFUNC_CALL:
            regs[0] = UNKNOWN
            for r in range(1, 6):
                regs[r] = UNINIT
            return self._next(st, regs, pc + 1)
        return self._helper(st, regs, insn.imm, pc)

    def _exit(self, st: State, regs: list[Reg], pc: int) -> State | None:
        r0 = regs[0]
        if len(st.frames) > 1:                              # return from a subprogram
            # verifier.c: prepare_func_exit copies r0 as it is; an unset r0 only matters if
            # the caller reads it (a void static function is fine)
            caller = st.frames[-2]
            cregs = list(caller.regs)
            cregs[0] = r0
            for r in range(1, 6):
                cregs[r] = UNINIT
            frame = replace(caller, regs=tuple(cregs))
            return replace(st, pc=st.frame.ret_pc, frames=st.frames[:-2] + (frame,))
        if r0.kind == NOT_INIT:
            raise Reject("R0 !read_ok", C.EACCES, pc)
        if st.ret_range is not None:
            lo, hi = st.ret_range
            if r0.kind != SCALAR:
                raise Reject(f"{st.exit_ctx} the register R0 is not a known value ({r0.type_name()})",
                             C.EINVAL, pc)
            if r0.smin < lo or r0.smax > hi:
                parts = []
                if r0.smin > S64_MIN:
                    parts.append(f" smin={r0.smin}")
                if r0.smax < S64_MAX:
                    parts.append(f" smax={r0.smax}")
                desc = "".join(parts) or " unknown scalar value"
                raise Reject(f"{st.exit_ctx} the register R0 has{desc} should have been in "
                             f"[{lo}, {hi}]", C.EINVAL, pc)
        return None

    def _helper(self, st: State, regs: list[Reg], hid: int, pc: int) -> State:
        name = HELPER_NAMES.get(hid)
        if name is None:
            raise Reject(f"invalid func unknown#{hid}", C.EINVAL, pc)
        proto = HELPER_PROTOS.get(hid)
        # verifier.c: check_helper_call — the GPL check comes before the argument checks
        if proto is not None and proto.gpl_only and not license_is_gpl_compatible(self.p.license):
            raise Reject("cannot call GPL-restricted function from non-GPL compatible program",
                         C.EINVAL, pc)
        # verifier.c: check_helper_call — a timer callback is verified as non-sleepable
        # (push_async_cb(..., is_sleepable=false)) even inside a sleepable program
        if hid in MIGHT_SLEEP and st.in_async:
            raise Reject("helper call might sleep in a non-sleepable prog", C.EINVAL, pc)
        if hid in TIMER_HELPERS:
            self._timer_args(st, regs, hid, pc)
        if proto is not None:
            self._map_value_mem_args(regs, proto.args, pc)
        ret = UNKNOWN
        self._stack = st.frame.stack
        if hid == H_MAP_LOOKUP:
            ret = self._map_lookup(regs, pc)
        elif hid in (H_MAP_UPDATE, H_MAP_DELETE):
            self._map_elem_args(regs, hid, pc)
        elif hid == H_RINGBUF_RESERVE:
            ret = Reg(MEM_OR_NULL, id=self._new_id())
        elif hid in (H_LOOP, H_FOR_EACH):
            self._queue_loop_callback(st, regs, hid, pc)
        regs[0] = ret
        for r in range(1, 6):
            regs[r] = UNINIT
        return self._next(st, regs, pc + 1)

    def _map_value_mem_args(self, regs: list[Reg], args: tuple[str, ...], pc: int) -> None:
        """verifier.c: check_helper_mem_access -> check_map_access for a map-value memory
        argument with a constant size: bounds and special fields (a helper writing into, or
        reading from, the bpf_timer bytes is refused like a load/store)."""
        for i, arg in enumerate(args[:-1]):
            if "MEM" not in arg or "ARG_CONST_SIZE" not in args[i + 1]:
                continue
            ptr, size = regs[i + 1], regs[i + 2]
            if ptr.kind != MAP_VALUE or not size.is_const or size.smin <= 0:
                continue
            self._check_map_access(ptr, 0, size.smin, i + 1, pc,
                                   write="UNINIT" in arg or "RDONLY" not in arg)

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _map_lookup(self, regs: list[Reg], pc: int) -> Reg:
        m = self._read_reg(regs, 1, pc)
        self._read_reg(regs, 2, pc)
        if m.kind != MAP_PTR or m.map is None:
            return Reg(PTR)
        self._check_key_arg(regs[2], m.map, pc)
        nid = self._new_id()
        if m.map.type in (C.MapType.ARRAY_OF_MAPS, C.MapType.HASH_OF_MAPS):
            inner = m.map.inner
            # verifier.c: mark_ptr_not_null_reg gives map_uid = reg id when the inner template
            # has a timer (or wq / task_work) field.
            uid = nid if inner is not None and inner.timer_off is not None else 0
            return Reg(MAP_PTR_OR_NULL, map=inner, id=nid, uid=uid)
        key = regs[2]
        if m.map.type in (C.MapType.ARRAY, C.MapType.PERCPU_ARRAY) and key.kind == FP and not key.var:
            # verifier.c: get_constant_map_key + can_elide_value_nullness (6.13+): a constant
            # in-range key makes an array lookup non-NULL.
            k = dict(self._stack).get((key.off, m.map.key_size))
            if k is not None and k.is_const and 0 <= k.smin < m.map.max_entries:
                return Reg(MAP_VALUE, map=m.map, uid=m.uid)
        if m.map.type in (C.MapType.ARRAY, C.MapType.PERCPU_ARRAY, C.MapType.HASH, C.MapType.LRU_HASH,
                          C.MapType.PERCPU_HASH, C.MapType.LRU_PERCPU_HASH, C.MapType.LPM_TRIE):
            return Reg(MAP_VALUE_OR_NULL, map=m.map, id=nid, uid=m.uid)
        return Reg(PTR)

    def _check_key_arg(self, key: Reg, m: MapInfo, pc: int) -> None:
        if key.kind == MAP_VALUE:
            self._check_map_access(key, 0, m.key_size, 2, pc, write=False)

    def _map_elem_args(self, regs: list[Reg], hid: int, pc: int) -> None:
        m = self._read_reg(regs, 1, pc)
        key = self._read_reg(regs, 2, pc)
        if m.kind != MAP_PTR or m.map is None:
            return
        self._check_key_arg(key, m.map, pc)
        if hid == H_MAP_UPDATE:
            value = self._read_reg(regs, 3, pc)
            if value.kind == MAP_VALUE:
                # verifier.c: check_helper_mem_access -> check_map_access over value_size bytes
                self._check_map_access(value, 0, m.map.value_size, 3, pc, write=False)
            elif value.kind in (MAP_VALUE_OR_NULL, MEM_OR_NULL):
                raise Reject(f"R3 type={value.type_name()} expected=fp, pkt, pkt_meta, map_key, "
                             f"map_value, mem, ringbuf_mem, buf, trusted_ptr_", C.EACCES, pc)

    def _timer_args(self, st: State, regs: list[Reg], hid: int, pc: int) -> None:
        """verifier.c: check_func_arg (ARG_PTR_TO_TIMER) -> process_timer_func."""
        r1 = self._read_reg(regs, 1, pc)
        if r1.kind not in (MAP_VALUE, PTR):
            raise Reject(f"R1 type={r1.type_name()} expected=map_value", C.EACCES, pc)
        if r1.kind == PTR or r1.map is None:
            return
        m = r1.map
        if r1.var:
            raise Reject("R1 doesn't have constant offset. bpf_timer has to be at the constant offset",
                         C.EINVAL, pc)
        if not m.has_btf:
            raise Reject(f"map '{m.name}' has to have BTF in order to use bpf_timer", C.EINVAL, pc)
        if m.timer_off is None:
            raise Reject(f"map '{m.name}' has no valid bpf_timer", C.EINVAL, pc)
        if m.timer_off != r1.off:
            raise Reject(f"off {r1.off} doesn't point to 'struct bpf_timer' that is at {m.timer_off}",
                         C.EINVAL, pc)
        if hid == H_TIMER_INIT:
            r2 = self._read_reg(regs, 2, pc)
            if r2.kind != MAP_PTR:
                raise Reject(f"R2 type={r2.type_name()} expected=map_ptr", C.EACCES, pc)
            if r2.map is not m or r2.uid != r1.uid:
                raise Reject(f"timer pointer in R1 map_uid={r1.uid} doesn't match map pointer in R2 "
                             f"map_uid={r2.uid}", C.EINVAL, pc)
        elif hid == H_TIMER_SET_CALLBACK:
            r2 = self._read_reg(regs, 2, pc)
            if r2.kind != FUNC:
                raise Reject(f"R2 type={r2.type_name()} expected=func", C.EACCES, pc)
            # verifier.c: set_timer_callback_state; verified later as an async callback
            cregs = [UNINIT] * 11
            cregs[1] = Reg(MAP_PTR, map=m, uid=r1.uid)
            cregs[2] = Reg(MAP_KEY, map=m)
            cregs[3] = Reg(MAP_VALUE, map=m, uid=r1.uid)
            cregs[10] = Reg(FP, frame=r2.off)
            if r2.off not in self.async_roots:     # its own stack-depth root (is_async_cb)
                self.async_roots.append(r2.off)
            self._push_callback(r2.off, cregs, (0, 0), "At async callback return", in_async=True)

    def _queue_loop_callback(self, st: State, regs: list[Reg], hid: int, pc: int) -> None:
        fn = regs[2]
        if fn.kind != FUNC:
            return
        cregs = [UNINIT] * 11
        if hid == H_LOOP:           # set_loop_callback_state: (index, ctx)
            cregs[1] = UNKNOWN
            cregs[2] = regs[3] if regs[3].kind != NOT_INIT else UNKNOWN
        else:                       # set_map_elem_callback_state: (map, key, value, ctx)
            m = regs[1]
            cregs[1] = m
            cregs[2] = Reg(MAP_KEY, map=m.map) if m.kind == MAP_PTR else Reg(PTR)
            cregs[3] = Reg(MAP_VALUE, map=m.map, uid=m.uid) if m.kind == MAP_PTR else Reg(PTR)
            cregs[4] = regs[4] if regs[4].kind != NOT_INIT else UNKNOWN
        cregs[10] = Reg(FP, frame=fn.off)
        self._add_callee(st.frame.func, fn.off)      # a synchronous callback runs on top of us
        self._push_callback(fn.off, cregs, (0, 1), "At callback return", in_async=st.in_async)

    def _push_callback(self, target: int, cregs: list[Reg], ret: tuple[int, int], ctx: str, *,
                       in_async: bool = False) -> None:
        key = (target, tuple(cregs), ret, in_async)
        if key in self.verified_callbacks:
            return
        self.verified_callbacks.add(key)
        self.pending_callbacks.append(State(target, (Frame(tuple(cregs), (), func=target),), ret, ctx,
                                            in_async))

    def _add_callee(self, caller: int, callee: int) -> None:
        edges = self.callees.setdefault(caller, [])
        if callee not in edges:
            edges.append(callee)

    def _check_max_stack_depth(self) -> None:
        """verifier.c: check_max_stack_depth — along every call chain from the program and
        from each async callback (its own root), the frames' depths, each rounded up
        (round_up_stack_depth: 16 bytes with the JIT), must not exceed MAX_BPF_STACK."""
        for root in [0] + [r for r in self.async_roots if r != 0]:
            self._walk_depth(root, 0, 0, ())

    def _walk_depth(self, func: int, depth: int, frames: int, path: tuple[int, ...]) -> None:
        depth += -(-self.stack_depth.get(func, 0) // 16) * 16
        frames += 1
        if depth > C.MAX_BPF_STACK:
            raise Reject(f"combined stack size of {frames} calls is {depth}. Too large", C.EACCES,
                         func)
        for callee in self.callees.get(func, ()):
            if callee not in path and callee != func:
                self._walk_depth(callee, depth, frames, path + (func,))


# -- pure helpers ----------------------------------------------------------------------------
_SIZE = {0x00: 4, 0x08: 2, 0x10: 1, 0x18: 8}
M64 = (1 << 64) - 1


def _spill(stack: tuple, off: int, size: int, val: Reg) -> tuple:
    """Record a store to the stack: pointers survive only as aligned 8-byte spills
    (verifier.c: save_register_state), scalars keep their value at their exact (off, size)."""
    slots = {k: v for k, v in stack if k[0] + k[1] <= off or k[0] >= off + size}
    if val.kind == SCALAR or (size == 8 and off % 8 == 0):
        slots[(off, size)] = val
    return tuple(sorted(slots.items()))


def _mark_null(st: State, rid: int, *, null: bool) -> State:
    def fix(r: Reg) -> Reg:
        if r.id != rid or r.kind not in (MAP_VALUE_OR_NULL, MAP_PTR_OR_NULL, MEM_OR_NULL):
            return r
        if null:
            return const(0)
        kind = {MAP_VALUE_OR_NULL: MAP_VALUE, MAP_PTR_OR_NULL: MAP_PTR, MEM_OR_NULL: MEM}[r.kind]
        return replace(r, kind=kind, id=0)

    frames = tuple(replace(f, regs=tuple(fix(r) for r in f.regs),
                           stack=tuple((o, fix(v)) for o, v in f.stack)) for f in st.frames)
    return replace(st, frames=frames)


def _loop_heads(insns: Sequence[Instruction]) -> frozenset[int]:
    """Targets of backward jumps: the only places where states are widened."""
    heads = set()
    for pc, insn in enumerate(insns):
        cls = insn.opcode & 7
        if cls not in (0x05, 0x06) or insn.lddw_tail or insn.opcode & 0xF0 in (0x80, 0x90):
            continue
        off = insn.imm if (cls == 0x06 and insn.opcode & 0xF0 == 0x00) else insn.off
        if off < 0:
            heads.add(pc + 1 + off)
    return frozenset(heads)


def _widen(st: State) -> State:
    """Forget scalar constants that loops keep changing, so states at a loop head converge.
    Pointers keep their offsets (a false "variable offset" rejection would be worse than
    exploring more iterations, which the kernel does too)."""
    def w(r: Reg) -> Reg:
        if r.kind == SCALAR and not (r.smin == 0 and r.smax == 0):
            return UNKNOWN
        return r

    frames = tuple(replace(f, regs=tuple(w(r) for r in f.regs),
                           stack=tuple((o, w(v)) for o, v in f.stack)) for f in st.frames)
    return replace(st, frames=frames)


__all__ = ["Checker", "Program", "Reject", "license_is_gpl_compatible", "CTX", "PTR"]
