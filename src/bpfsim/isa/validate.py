"""Structural checks of a program: is every slot a defined instruction with legal fields, and
is the control flow closed?  Every problem is a ParseError naming the instruction index.

These are the checks the kernel makes before any data-flow analysis (verifier.c:
`resolve_pseudo_ldimm64`, `check_subprogs`, `do_check`'s "reserved fields" and "unknown
opcode" messages) and what any engine needs to run a program safely.  Which forms exist and
which fields are fixed comes from `isa.opcodes`; this module adds only the rules that are not
a property of one row (registers, lddw pairing, jump targets, falling off the end).

Must not import ELF, maps or helpers.
"""

from __future__ import annotations

from collections.abc import Sequence

from bpfsim.errors import ParseError
from bpfsim.isa.insn import Instruction, decode_slots
from bpfsim.isa.opcodes import (
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_CMPXCHG,
    BPF_END,
    BPF_EXIT,
    BPF_IMM,
    BPF_JA,
    BPF_JCOND,
    BPF_JMP,
    BPF_JMP32,
    BPF_LDX,
    BPF_LOAD_ACQ,
    BPF_MOV,
    BPF_NEG,
    BPF_ST,
    BPF_STX,
    FP,
    MAX_REG,
    OpSpec,
    candidates,
    lookup,
)

__all__ = ["decode_program", "describe_invalid", "kernel_words", "validate"]

_FIELDS = ("dst", "src", "off", "imm")
_RMW_IMMS = frozenset(s.fixed_value("imm") for s in candidates(0xDB)) - {BPF_LOAD_ACQ, 0x110}


def _field(insn: Instruction, name: str) -> int:
    return int(getattr(insn, name))


def kernel_words(opcode: int, imm: int = 0) -> str:
    """The verifier's message for a known opcode with bad fields (verifier.c: do_check,
    check_alu_op, check_atomic, check_ld_abs, check_ld_imm); checked against Linux 6.18."""
    cls, op, mode = opcode & 0x07, opcode & 0xF0, opcode & 0xE0
    if cls in (BPF_ALU, BPF_ALU64):
        name = {BPF_END: "BPF_END", BPF_NEG: "BPF_NEG", BPF_MOV: "BPF_MOV"}.get(op, "BPF_ALU")
        return f"{name} uses reserved fields"
    if cls == BPF_LDX:
        return "BPF_LDX uses reserved fields"
    if cls == BPF_ST:
        return "BPF_ST uses reserved fields"
    if cls == BPF_STX:
        if mode == BPF_ATOMIC:
            # verifier.c: check_atomic_rmw -- 8/16-bit atomics exist only as acquire/release
            if opcode & 0x18 in (0x08, 0x10) and imm in _RMW_IMMS:
                return "invalid atomic operand size"
            return f"BPF_ATOMIC uses invalid atomic opcode {imm & 0xFFFFFFFF:02x}"
        return "BPF_STX uses reserved fields"
    if cls in (BPF_JMP, BPF_JMP32):
        return {BPF_JA: "BPF_JA uses reserved fields", BPF_CALL: "BPF_CALL uses reserved fields",
                BPF_EXIT: "BPF_EXIT uses reserved fields", BPF_JCOND: f"invalid may_goto imm {imm}"}.get(
                    op, "BPF_JMP/JMP32 uses reserved fields")
    if mode == BPF_IMM:
        return "invalid BPF_LD_IMM insn"
    return "BPF_LD_[ABS|IND] uses reserved fields"


def describe_invalid(insn: Instruction) -> str:
    """Why an instruction matches no row of the table: the kernel's words, then the closest
    row's first bad field."""
    rows = candidates(insn.opcode)
    if not rows:
        return f"unknown opcode {insn.opcode:02x}"  # verifier.c: do_check

    def score(s: OpSpec) -> int:  # the row that agrees on most fixed fields explains best
        return sum(_field(insn, k) == v for k, v in s.fixed)

    best = max(rows, key=score)
    words = kernel_words(insn.opcode, insn.imm)
    for k, v in best.fixed:
        got = _field(insn, k)
        if got != v:
            if len({dict(r.fixed).get(k) for r in rows}) > 1 and score(best) == len(best.fixed) - 1:
                vals = sorted({dict(r.fixed)[k] for r in rows if k in dict(r.fixed)})
                return (f"{words}: opcode {insn.opcode:#04x} has invalid {k} {got:#x} "
                        f"(expected one of {', '.join(hex(x) for x in vals)})")
            return f"{words}: {best.name}: reserved field {k} is {got:#x}, must be {v:#x}"
    return f"{words}: opcode {insn.opcode:#04x}"  # pragma: no cover - lookup would match


def _unused_fields_zero(spec: OpSpec, insn: Instruction, pc: int) -> None:
    """Fields that are neither operands nor fixed must be 0 ("uses reserved fields")."""
    fixed = {k for k, _ in spec.fixed}
    for name in _FIELDS:
        if name in fixed or name in spec.operands:
            continue
        if _field(insn, name) != 0:
            raise ParseError(f"{kernel_words(spec.opcode, insn.imm)}: {spec.name}: reserved field {name} is "
                             f"{_field(insn, name):#x}, must be 0", insn=pc)


def _check_regs(spec: OpSpec, insn: Instruction, pc: int) -> None:
    for name in ("dst", "src"):
        r = _field(insn, name)
        if r > MAX_REG:  # verifier.c: check_reg_arg
            raise ParseError(f"R{r} is invalid: {spec.name} has register r{r} in {name}", insn=pc)
    # verifier.c: check_reg_arg "frame pointer is read only".  A store's dst is a base
    # address, not a written register; load-acquire writes dst, fetch atomics write src.
    cls, imm = spec.cls, spec.fixed_value("imm")
    writes_dst = cls in (BPF_ALU, BPF_ALU64, BPF_LDX) or spec.is_lddw or (
        cls == BPF_STX and imm == BPF_LOAD_ACQ)
    writes_src = cls == BPF_STX and imm is not None and imm < BPF_LOAD_ACQ and bool(imm & 0x01) \
        and imm != BPF_CMPXCHG
    if (writes_dst and insn.dst == FP) or (writes_src and insn.src == FP):
        raise ParseError(f"frame pointer is read only: {spec.name} writes r10", insn=pc)


def _check_special(spec: OpSpec, insn: Instruction, pc: int) -> None:
    if spec.name == "addr_space_cast" and insn.imm not in (1, 1 << 16):
        # verifier.c: check_alu_op
        raise ParseError("addr_space_cast insn can only convert between address space 1 and 0: "
                         f"imm {insn.imm:#x}", insn=pc)


def validate(insns: Sequence[Instruction], *, kernel: bool = False) -> None:
    """Raise ParseError (with `insn=` index) for the first structural problem, else return.

    `kernel=True` accepts what Linux's verifier accepts although the ISA reserves it
    (OpSpec.kernel_unchecked: an `exit` with a non-zero offset).

    Checks: defined opcode and legal fixed fields, reserved fields zero, registers r0-r10,
    no write to r10, lddw followed by a zero second slot, jump targets inside the program and
    not into the second slot of a lddw, and that the last instruction cannot fall off the end
    (it must be `exit` or an unconditional jump).
    """
    n = len(insns)
    if n == 0:
        raise ParseError("empty program", insn=0)
    tails: set[int] = set()
    specs: list[OpSpec | None] = []
    pc = 0
    while pc < n:
        insn = insns[pc]
        if insn.lddw_tail:  # a tail right after its head is skipped below
            raise ParseError("lddw second slot without a first", insn=pc)
        spec = lookup(insn.opcode, insn.src, insn.off, insn.imm, insn.dst, kernel=kernel)
        if spec is None:
            raise ParseError(describe_invalid(insn), insn=pc)
        _unused_fields_zero(spec, insn, pc)
        _check_regs(spec, insn, pc)
        _check_special(spec, insn, pc)
        specs.append(spec)
        if spec.is_lddw:
            if pc + 1 >= n:
                raise ParseError("truncated lddw: missing second slot", insn=pc)
            tail = insns[pc + 1]
            # verifier.c: resolve_pseudo_ldimm64 "invalid bpf_ld_imm64 insn"
            if tail.opcode or tail.dst or tail.src or tail.off:
                raise ParseError("invalid lddw: second slot must have opcode, registers and "
                                 "offset 0", insn=pc + 1)
            # ... "unrecognized bpf_ld_imm64 insn": map fd/idx take no value offset
            if spec.name in ("lddw_map_fd", "lddw_map_idx") and tail.imm:
                raise ParseError(f"unrecognized bpf_ld_imm64 insn: {spec.name} takes no value "
                                 "offset (second slot imm must be 0)", insn=pc + 1)
            tails.add(pc + 1)
            specs.append(None)
            pc += 2
            continue
        pc += 1

    starts = _subprog_starts(insns, specs, tails)
    bounds = [*starts[1:], n]
    sub_of = {}
    for k, st in enumerate(starts):
        for i in range(st, bounds[k]):
            sub_of[i] = k
    for pc, spec in enumerate(specs):
        if spec is None or spec.jump_field is None or spec.name == "call local":
            continue
        insn = insns[pc]
        tgt = pc + 1 + (insn.off if spec.jump_field == "off" else insn.imm)
        k = sub_of[pc]
        # verifier.c: check_subprogs -- a jump stays inside its own subprogram
        if not starts[k] <= tgt < bounds[k]:
            raise ParseError(f"jump out of range from insn {pc} to {tgt}", insn=pc)
        if tgt in tails:  # verifier.c: check_cfg
            raise ParseError(f"jump into the middle of ldimm64 insn {tgt - 1} (from insn {pc})", insn=pc)
    for end in bounds:
        last = end - 1
        while last in tails:
            last -= 1
        spec = specs[last]
        # verifier.c: check_subprogs "last insn is not an exit or jmp" (no fall-through from
        # one subprogram into the next, nor off the end)
        if spec is None or spec.name not in ("exit", "ja", "ja32"):
            raise ParseError("last insn is not an exit or jmp", insn=last)


def _subprog_starts(insns: Sequence[Instruction], specs: list[OpSpec | None],
                    tails: set[int]) -> list[int]:
    """Slot 0 and every target of a BPF-to-BPF call or a `lddw rX, func` (verifier.c:
    add_subprog_and_kfunc), sorted; a target outside the program or inside a lddw is refused."""
    n = len(insns)
    starts = {0}
    for pc, spec in enumerate(specs):
        if spec is None or spec.name not in ("call local", "lddw_func"):
            continue
        tgt = pc + 1 + insns[pc].imm
        if not 0 <= tgt < n:
            raise ParseError(f"call to invalid destination: insn {tgt}", insn=pc)  # add_subprog
        if tgt in tails:
            raise ParseError(f"call into the middle of ldimm64 insn {tgt - 1} (from insn {pc})",
                             insn=pc)
        starts.add(tgt)
    return sorted(starts)


def decode_program(data: bytes, byteorder: str = "little") -> list[Instruction]:
    """Decode raw bytecode into one Instruction per slot and validate it."""
    insns = decode_slots(data, byteorder)
    validate(insns)
    return insns
