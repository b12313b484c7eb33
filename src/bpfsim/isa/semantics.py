"""eBPF instruction semantics, written once, for every engine.

Job: say what each operation computes, in two forms built from one source:

* **expression templates** (Python source with `{d}` / `{s}` holes) for ALU results and jump
  conditions.  The reference interpreter specialises them into closures, a Python-source
  compiler pastes them into generated code;
* **pure functions** (`alu`, `jump_taken`, `atomic`, `load_extend`, ...) that evaluate the same
  templates.  Native engines (llvmlite) use them as the oracle their tests compare against.

Every value is an unsigned Python int: a 64-bit register is in [0, 2**64), a 32-bit operand in
[0, 2**32).  Signed operations convert inside the template.  The rules are the kernel's
(kernel/bpf/core.c: `___bpf_prog_run`, plus the rewrites of verifier.c: `do_misc_fixups` for
division by zero and by -1), not C's undefined behaviour.

Imports only `isa.opcodes` (field values); no memory, no runtime: semantics are pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bpfsim.isa import opcodes as _op

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
SIGN64 = 1 << 63
SIGN32 = 1 << 31

# Field values come from the one opcode table (isa.opcodes); short names for the templates.
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = (
    _op.BPF_LD, _op.BPF_LDX, _op.BPF_ST, _op.BPF_STX, _op.BPF_ALU, _op.BPF_JMP, _op.BPF_JMP32,
    _op.BPF_ALU64)
SRC_K, SRC_X = _op.BPF_K, _op.BPF_X
MODE_IMM, MODE_ABS, MODE_IND, MODE_MEM, MODE_MEMSX, MODE_ATOMIC = (
    _op.BPF_IMM, _op.BPF_ABS, _op.BPF_IND, _op.BPF_MEM, _op.BPF_MEMSX, _op.BPF_ATOMIC)
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH, END = (
    _op.BPF_ADD, _op.BPF_SUB, _op.BPF_MUL, _op.BPF_DIV, _op.BPF_OR, _op.BPF_AND, _op.BPF_LSH,
    _op.BPF_RSH, _op.BPF_NEG, _op.BPF_MOD, _op.BPF_XOR, _op.BPF_MOV, _op.BPF_ARSH, _op.BPF_END)
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, CALL, EXIT, JLT, JLE, JSLT, JSLE, JCOND = (
    _op.BPF_JA, _op.BPF_JEQ, _op.BPF_JGT, _op.BPF_JGE, _op.BPF_JSET, _op.BPF_JNE, _op.BPF_JSGT,
    _op.BPF_JSGE, _op.BPF_CALL, _op.BPF_EXIT, _op.BPF_JLT, _op.BPF_JLE, _op.BPF_JSLT,
    _op.BPF_JSLE, _op.BPF_JCOND)
# Atomic operations (imm of a STX|ATOMIC instruction); load-acquire/store-release are 6.15+.
ATOMIC_FETCH, ATOMIC_XCHG, ATOMIC_CMPXCHG = _op.BPF_FETCH, _op.BPF_XCHG, _op.BPF_CMPXCHG
ATOMIC_LOAD_ACQ, ATOMIC_STORE_REL = _op.BPF_LOAD_ACQ, _op.BPF_STORE_REL
# Memory sizes (insn.opcode & 0x18) -> bytes.
SIZE_BYTES = {_op.BPF_W: 4, _op.BPF_H: 2, _op.BPF_B: 1, _op.BPF_DW: 8}


# -- helper functions the templates call (kept in NAMESPACE) ---------------------------------
def _signed(v: int, width: int) -> int:
    sign = 1 << (width - 1)
    return (v ^ sign) - sign


def _make_sdiv(width: int) -> Callable[[int, int], int]:
    mask = (1 << width) - 1

    def sdiv(d: int, s: int) -> int:
        """Signed division truncating toward zero; by 0 -> 0; INT_MIN / -1 -> INT_MIN
        (verifier.c: do_misc_fixups patches both cases; the wrap gives INT_MIN)."""
        if not s:
            return 0
        a, b = _signed(d, width), _signed(s, width)
        q = abs(a) // abs(b)
        return (-q if (a < 0) != (b < 0) else q) & mask

    sdiv.__name__ = f"sdiv{width}"
    return sdiv


def _make_smod(width: int) -> Callable[[int, int], int]:
    mask = (1 << width) - 1

    def smod(d: int, s: int) -> int:
        """Signed remainder with the sign of the dividend (C's `%`); by 0 -> dst unchanged;
        INT_MIN % -1 -> 0 (core.c: ALU_SMOD_X uses abs() and do_div)."""
        if not s:
            return d
        a, b = _signed(d, width), _signed(s, width)
        r = abs(a) % abs(b)
        return (-r if a < 0 else r) & mask

    smod.__name__ = f"smod{width}"
    return smod


def bswap16(v: int) -> int:
    return ((v & 0xFF) << 8) | ((v >> 8) & 0xFF)


def bswap32(v: int) -> int:
    return int.from_bytes((v & M32).to_bytes(4, "little"), "big")


def bswap64(v: int) -> int:
    return int.from_bytes((v & M64).to_bytes(8, "little"), "big")


NAMESPACE: dict[str, object] = {
    "sdiv32": _make_sdiv(32), "sdiv64": _make_sdiv(64),
    "smod32": _make_smod(32), "smod64": _make_smod(64),
    "bswap16": bswap16, "bswap32": bswap32, "bswap64": bswap64,
}
"""Names the templates may call; a code generator must put these in its globals."""


# -- ALU ----------------------------------------------------------------------------------------
# Placeholders: {d} dst operand, {s} src operand (both already truncated to the width),
# {m} width mask, {sb} sign bit, {sh} shift-count mask, {w} width.  Results are within {m}.
_ALU_TEMPLATES: dict[tuple[int, int], str] = {
    (ADD, 0): "(({d}) + ({s})) & {m}",
    (SUB, 0): "(({d}) - ({s})) & {m}",
    (MUL, 0): "(({d}) * ({s})) & {m}",
    # core.c: DIV by 0 is patched by do_misc_fixups to give 0; MOD by 0 leaves dst.
    (DIV, 0): "((({d}) // ({s})) if ({s}) else 0)",
    (DIV, 1): "sdiv{w}({d}, {s})",
    (MOD, 0): "((({d}) % ({s})) if ({s}) else ({d}))",
    (MOD, 1): "smod{w}({d}, {s})",
    (OR, 0): "(({d}) | ({s}))",
    (AND, 0): "(({d}) & ({s}))",
    (XOR, 0): "(({d}) ^ ({s}))",
    # Shift counts are masked to the width (what x86 does and the interpreter mirrors).
    (LSH, 0): "((({d}) << (({s}) & {sh})) & {m})",
    (RSH, 0): "(({d}) >> (({s}) & {sh}))",
    (ARSH, 0): "((((({d}) ^ {sb}) - {sb}) >> (({s}) & {sh})) & {m})",
    (NEG, 0): "((-({d})) & {m})",
    (MOV, 0): "({s})",
    # movsx (cpu v4): off = source width in bits, sign-extended to the operation width.
    (MOV, 8): "((((({s}) & 0xFF) ^ 0x80) - 0x80) & {m})",
    (MOV, 16): "((((({s}) & 0xFFFF) ^ 0x8000) - 0x8000) & {m})",
    (MOV, 32): "((((({s}) & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000) & {m})",
}

# Byte-order operations act on the full 64-bit register whatever the class: key is
# (opcode, imm).  x86-64 is little-endian, so "to LE" only truncates (core.c: ALU_END_TO_LE).
_END_TEMPLATES: dict[tuple[int, int], str] = {
    (0xD4, 16): "(({d}) & 0xFFFF)", (0xD4, 32): "(({d}) & 0xFFFFFFFF)", (0xD4, 64): "({d})",
    (0xDC, 16): "bswap16({d})", (0xDC, 32): "bswap32({d})", (0xDC, 64): "bswap64({d})",
    (0xD7, 16): "bswap16({d})", (0xD7, 32): "bswap32({d})", (0xD7, 64): "bswap64({d})",
}


def _width_fill(template: str, width: int, d: str, s: str) -> str:
    return template.format(d=d, s=s, w=width, m=hex((1 << width) - 1), sb=hex(1 << (width - 1)),
                           sh=width - 1)


def alu_template(opcode: int, off: int, imm: int) -> str | None:
    """The raw template of an ALU/ALU64 instruction, or None if no such operation exists
    (bad op, bad movsx width, sdiv/smod `off` other than 0/1, bad END width)."""
    cls, op = opcode & 7, opcode & 0xF0
    if cls not in (ALU, ALU64):
        return None
    if op == END:
        return _END_TEMPLATES.get((opcode, imm))
    if op in (DIV, MOD):
        return _ALU_TEMPLATES.get((op, off)) if off in (0, 1) else None
    if op == MOV:
        if off == 32 and cls == ALU:   # verifier.c: movsx32 with off 32 is not a valid insn
            return None
        return _ALU_TEMPLATES.get((op, off))
    return _ALU_TEMPLATES.get((op, 0)) if off == 0 else None


def alu_width(opcode: int) -> int:
    return 64 if opcode & 7 == ALU64 else 32


def alu_expr(opcode: int, off: int, imm: int, d: str, s: str) -> str | None:
    """The Python expression of the new dst value (an unsigned 64-bit result, zero-extended
    for 32-bit forms).  `d`/`s` must already be truncated to the operation width (see
    `operand_exprs`), except for END which takes the full 64-bit dst."""
    template = alu_template(opcode, off, imm)
    if template is None:
        return None
    return _width_fill(template, alu_width(opcode), d, s)


def imm_operand(opcode: int, imm: int) -> int:
    """The value an immediate stands for: sign-extended to 64 bits for ALU64/JMP,
    truncated to 32 bits for ALU/JMP32 (core.c: `(u32) IMM` vs `(u64)(s64) IMM`)."""
    cls = opcode & 7
    return imm & (M64 if cls in (ALU64, JMP) else M32)


def operand_exprs(opcode: int, dst_reg: str, src_reg: str, imm: int) -> tuple[str, str]:
    """(d, s) operand expressions for a dst register expression and src register expression
    (e.g. "R[3]"), truncated to the width of the instruction's class."""
    narrow = opcode & 7 in (ALU, JMP32)
    is_end = opcode & 7 in (ALU, ALU64) and opcode & 0xF0 == END   # END takes the full register
    d = f"({dst_reg} & 0xFFFFFFFF)" if narrow and not is_end else dst_reg
    if opcode & SRC_X and not is_end:
        s = f"({src_reg} & 0xFFFFFFFF)" if narrow else src_reg
    else:
        s = str(imm_operand(opcode, imm))
    return d, s


# -- jumps --------------------------------------------------------------------------------------
# Signed comparisons flip the sign bit so unsigned order becomes signed order.
_JMP_TEMPLATES: dict[int, str] = {
    JEQ: "({d}) == ({s})", JNE: "({d}) != ({s})",
    JGT: "({d}) > ({s})", JGE: "({d}) >= ({s})", JLT: "({d}) < ({s})", JLE: "({d}) <= ({s})",
    JSET: "(({d}) & ({s})) != 0",
    JSGT: "(({d}) ^ {sb}) > (({s}) ^ {sb})", JSGE: "(({d}) ^ {sb}) >= (({s}) ^ {sb})",
    JSLT: "(({d}) ^ {sb}) < (({s}) ^ {sb})", JSLE: "(({d}) ^ {sb}) <= (({s}) ^ {sb})",
}


def jump_expr(opcode: int, d: str, s: str) -> str | None:
    """The condition of a conditional jump (JMP or JMP32 class), or None if `opcode` is not one."""
    if opcode & 7 not in (JMP, JMP32):
        return None
    template = _JMP_TEMPLATES.get(opcode & 0xF0)
    if template is None:
        return None
    return _width_fill(template, 64 if opcode & 7 == JMP else 32, d, s)


# -- memory -------------------------------------------------------------------------------------
def load_extend(value: int, size: int, signed: bool) -> int:
    """A loaded value as it lands in a register: zero-extended, or sign-extended for LDX|MEMSX."""
    if not signed:
        return value
    sign = 1 << (size * 8 - 1)
    return ((value ^ sign) - sign) & M64


@dataclass(frozen=True, slots=True)
class AtomicResult:
    """What one atomic instruction does: the value to store (None: no store), and the value
    fetched into `fetch_reg` ("src", "r0", "dst" or None).  Fetched values are zero-extended."""

    store: int | None
    fetched: int | None
    fetch_reg: str | None


_ATOMIC_OPS: dict[int, str] = {0x00: "add", 0x40: "or", 0x50: "and", 0xA0: "xor"}


def atomic_valid(imm: int, size: int) -> bool:
    """Whether (imm, size) names an atomic operation of 6.18 (verifier.c: check_atomic)."""
    if imm in (ATOMIC_LOAD_ACQ, ATOMIC_STORE_REL):
        return size in (1, 2, 4, 8)
    if size not in (4, 8):
        return False
    return imm in (ATOMIC_XCHG, ATOMIC_CMPXCHG) or (imm & ~ATOMIC_FETCH) in _ATOMIC_OPS


def atomic(imm: int, size: int, old: int, src: int, r0: int) -> AtomicResult:
    """kernel/bpf/core.c: STX_ATOMIC_W/DW.  `old` is the memory value (size bytes), `src` and
    `r0` the full registers.  32-bit forms operate on the low 32 bits of the registers."""
    mask = (1 << (size * 8)) - 1
    s = src & mask
    if imm == ATOMIC_CMPXCHG:
        return AtomicResult(s if old == (r0 & mask) else None, old, "r0")
    if imm == ATOMIC_XCHG:
        return AtomicResult(s, old, "src")
    if imm == ATOMIC_LOAD_ACQ:
        return AtomicResult(None, old, "dst")
    if imm == ATOMIC_STORE_REL:
        return AtomicResult(s, None, None)
    name = _ATOMIC_OPS[imm & ~ATOMIC_FETCH]
    new = {"add": (old + s) & mask, "or": old | s, "and": old & s, "xor": old ^ s}[name]
    return AtomicResult(new, old if imm & ATOMIC_FETCH else None, "src" if imm & ATOMIC_FETCH else None)


# -- pure evaluators (the same templates, evaluated) ---------------------------------------------
_EVAL_CACHE: dict[str, Callable[..., object]] = {}


def _compiled(expr: str) -> Callable[..., object]:
    fn = _EVAL_CACHE.get(expr)
    if fn is None:
        fn = eval(f"lambda D, S: {expr}", dict(NAMESPACE))  # noqa: S307 - our own templates
        _EVAL_CACHE[expr] = fn
    return fn


def alu(opcode: int, off: int, imm: int, dst: int, src: int = 0) -> int:
    """The new value of dst after an ALU/ALU64 instruction with 64-bit register values
    dst/src (src ignored for K forms).  Raises ValueError for an operation that does not exist."""
    d, s = operand_exprs(opcode, "D", "S", imm)
    expr = alu_expr(opcode, off, imm, d, s)
    if expr is None:
        raise ValueError(f"no ALU operation for opcode {opcode:#04x} off {off} imm {imm}")
    return _compiled(expr)(dst & M64, src & M64)  # type: ignore[return-value]


def jump_taken(opcode: int, imm: int, dst: int, src: int = 0) -> bool:
    """Whether a conditional jump is taken for 64-bit register values dst/src."""
    d, s = operand_exprs(opcode, "D", "S", imm)
    expr = jump_expr(opcode, d, s)
    if expr is None:
        raise ValueError(f"no conditional jump for opcode {opcode:#04x}")
    return bool(_compiled(expr)(dst & M64, src & M64))
