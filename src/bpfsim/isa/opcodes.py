"""The one opcode table of the eBPF ISA (RFC 9669 plus the Linux 6.18 additions).

Every instruction form is one `OpSpec` row: its opcode byte, which fields are fixed (and to
what) and which are operands, its minimum cpu version, and its text in the two dialects we
speak: the bpf_conformance `-- asm` dialect and llvm-objdump-19's syntax.  Decoding validity
(`validate`), encoding and the assembler (`asm`) and the disassembler (`disasm`) are all driven
from `OPCODES`; no other module holds a list of mnemonics or opcodes.

Must not import ELF, BTF, maps or helpers: this is pure instruction-set knowledge.

Template placeholders (both dialects):
  `{d}` / `{s}`   dst / src register (llvm: `rN` or `wN` by the row's register view;
                  conformance: `%rN`)
  `{imm}`        the 32-bit immediate operand          `{imm64}` the lddw constant
  `{off}`        a memory offset (llvm: `+ 0x8` / `- 0x8`; conformance: inside `[%rN+off]`)
  `{tgt}`        a jump target held in `off`          `{tgt32}` a jump target held in `imm`
  `{koff}`       the kfunc module (BTF fd index) held in `off`
  `{idx}`        imm written like an offset (`+ 0x4`), for LD_IND's round-trip text
  `{lo}`         the low 32 bits of a lddw constant, unsigned (llvm's `ld_pseudo` text)
  `{asc}`        addr_space_cast's imm as `dst_as, src_as`
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --- field values of linux/bpf.h and linux/bpf_common.h -------------------------------------
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_JMP32, BPF_ALU64 = range(8)
BPF_K, BPF_X = 0x00, 0x08
BPF_W, BPF_H, BPF_B, BPF_DW = 0x00, 0x08, 0x10, 0x18
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_MEMSX, BPF_ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xC0
BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50
BPF_LSH, BPF_RSH, BPF_NEG, BPF_MOD, BPF_XOR, BPF_MOV = 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0
BPF_ARSH, BPF_END = 0xC0, 0xD0
BPF_TO_LE, BPF_TO_BE = 0x00, 0x08
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50
BPF_JSGT, BPF_JSGE, BPF_CALL, BPF_EXIT = 0x60, 0x70, 0x80, 0x90
BPF_JLT, BPF_JLE, BPF_JSLT, BPF_JSLE, BPF_JCOND = 0xA0, 0xB0, 0xC0, 0xD0, 0xE0
BPF_FETCH, BPF_XCHG, BPF_CMPXCHG = 0x01, 0xE0 | 0x01, 0xF0 | 0x01
BPF_LOAD_ACQ, BPF_STORE_REL = 0x100, 0x110
BPF_PSEUDO_CALL, BPF_PSEUDO_KFUNC_CALL = 1, 2
BPF_MAY_GOTO = 0
OP_LDDW = BPF_LD | BPF_IMM | BPF_DW  # 0x18

MAX_REG = 10  # r10 is the read-only frame pointer
FP = 10


@dataclass(frozen=True, slots=True)
class OpSpec:
    """One instruction form.

    `fixed` maps a field name ("dst", "src", "off", "imm") to the only value it may hold; any
    field of the slot that is neither fixed nor an operand named by the templates must be 0
    (checked by `validate`).  `llvm` is llvm-objdump-19 `-d` text (None: it prints
    `<unknown>`), `llvm32` the text under `--mcpu=v3`/`v4` (alu32 subregister syntax) when it
    differs, `llvm_rt` the round-trip text (`disasm(..., roundtrip=True)`) when llvm's text
    loses bits or does not exist (a local call prints as `call 0x5` like a helper call).
    `llvm_alt` lists further llvm-mc texts the assembler accepts (`call LABEL`).  `kern` is
    the text of the kernel's own disassembler (kernel/bpf/disasm.c: print_bpf_insn, as the
    verifier log shows it) when it is not `llvm` rendered with the kernel's number formats.
    `conf` is the bpf_conformance dialect, with `aliases` accepted by the assembler.
    `operands` (the fields the templates fill) and `jump_field` (which field holds a
    pc-relative target, "off" or "imm") are derived from `conf`; `llvm_lax` are the fields
    llvm-19's decoder does not look at for this form (so objdump prints the form's text even
    when they hold junk), see `_llvm_lax`; `llvm_imm_mask` the bits of a fixed imm it compares.
    """

    name: str
    opcode: int
    conf: str
    llvm: str | None
    llvm32: str | None = None
    llvm_rt: str | None = None
    llvm_alt: tuple[str, ...] = ()
    kern: str | None = None
    fixed: tuple[tuple[str, int], ...] = ()
    cpu: int = 1
    group: str = "base64"
    aliases: tuple[str, ...] = ()
    note: str = ""
    llvm_imm_mask: int = -1
    # Fixed fields Linux's verifier does not actually check (it loads the instruction with any
    # value there): `validate(kernel=True)` ignores them, the strict ISA check does not.
    kernel_unchecked: tuple[str, ...] = ()
    operands: frozenset[str] = field(init=False, default=frozenset())
    jump_field: str | None = field(init=False, default=None)
    llvm_lax: frozenset[str] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        # derived once from the conformance template (validate asks per instruction)
        object.__setattr__(self, "operands", self._operands())
        object.__setattr__(self, "jump_field", "off" if "{tgt}" in self.conf
                           else "imm" if "{tgt32}" in self.conf else None)
        object.__setattr__(self, "llvm_lax", _llvm_lax(self))

    @property
    def cls(self) -> int:
        return self.opcode & 0x07

    def fixed_value(self, field: str) -> int | None:
        for k, v in self.fixed:
            if k == field:
                return v
        return None

    def _operands(self) -> frozenset[str]:
        """The instruction fields this form takes from its operands (not fixed, not zero)."""
        tmpl = self.conf
        ops: set[str] = set()
        if "{d}" in tmpl or "[{d}" in tmpl or "{md}" in tmpl:
            ops.add("dst")
        if "{s}" in tmpl or "{ms}" in tmpl:
            ops.add("src")
        if "{imm}" in tmpl or "{tgt32}" in tmpl or "{asc}" in tmpl or "{idx}" in tmpl:
            ops.add("imm")
        if "{off}" in tmpl or "{tgt}" in tmpl or "{koff}" in tmpl or "{md}" in tmpl or "{ms}" in tmpl:
            ops.add("off")
        if "{imm64}" in tmpl:
            ops.add("imm")
        return frozenset(ops)

    @property
    def is_lddw(self) -> bool:
        return self.opcode == OP_LDDW

    def matches(self, opcode: int, src: int, off: int, imm: int, dst: int = 0, *,
                kernel: bool = False) -> bool:
        if opcode != self.opcode:
            return False
        vals = {"dst": dst, "src": src, "off": off, "imm": imm}
        return all(vals[k] == v or (kernel and k in self.kernel_unchecked) for k, v in self.fixed)


def _llvm_lax(s: OpSpec) -> frozenset[str]:
    """Fields llvm-19's BPF decoder ignores for this form, measured by feeding llvm-objdump-19
    every row with each non-operand field set (tests/isa/test_disasm.py re-checks it live).
    llvm matches on the opcode, its operands and the fields that select a different text
    (sdiv's off, movsx's off, END's width, the atomic op); atomics are left strict."""
    cls, op, mode = s.opcode & 0x07, s.opcode & 0xF0, s.opcode & 0xE0
    if s.llvm is None and s.llvm32 is None:
        return frozenset()
    k_form = not (s.opcode & BPF_X)
    if cls in (BPF_ALU, BPF_ALU64):
        if op == BPF_NEG:
            return frozenset({"src", "off", "imm"})
        if op == BPF_END:
            return frozenset({"src", "off"})
        if s.name == "addr_space_cast":
            return frozenset()
        return frozenset({"src"} if k_form else {"imm"})
    if cls == BPF_LDX or (cls == BPF_STX and mode == BPF_MEM):
        return frozenset({"imm"})
    if cls == BPF_ST:
        return frozenset({"src"})
    if cls == BPF_LD:
        return {BPF_ABS: frozenset({"dst", "src", "off"}),
                BPF_IND: frozenset({"dst", "off", "imm"})}.get(mode, frozenset())
    if cls in (BPF_JMP, BPF_JMP32):
        if op in (BPF_JA, BPF_JCOND):
            return frozenset({"dst", "src", "imm"} if s.jump_field == "off" else {"dst", "src", "off"})
        if op in (BPF_CALL, BPF_EXIT):
            return frozenset({"src", "off", "imm"} if s.opcode & BPF_X else {"dst", "src", "off"})
        return frozenset({"src"} if k_form else {"imm"})
    return frozenset()


def _build() -> tuple[OpSpec, ...]:
    rows: list[OpSpec] = []
    add = rows.append

    # ---- ALU / ALU64 -----------------------------------------------------------------------
    # (name, op, llvm operator); neg/mov/end handled below.
    binops = [("add", BPF_ADD, "+="), ("sub", BPF_SUB, "-="), ("mul", BPF_MUL, "*="),
              ("div", BPF_DIV, "/="), ("or", BPF_OR, "|="), ("and", BPF_AND, "&="),
              ("lsh", BPF_LSH, "<<="), ("rsh", BPF_RSH, ">>="), ("mod", BPF_MOD, "%="),
              ("xor", BPF_XOR, "^="), ("arsh", BPF_ARSH, "s>>=")]
    for cls, sfx, r in ((BPF_ALU64, "", "r"), (BPF_ALU, "32", "w")):
        grp = "base64" if cls == BPF_ALU64 else "base32"
        for name, op, sym in binops:
            dm = "divmul64" if cls == BPF_ALU64 else "divmul32"
            g = dm if op in (BPF_DIV, BPF_MOD, BPF_MUL) else grp
            add(OpSpec(f"{name}{sfx}", cls | op | BPF_K, f"{name}{sfx} {{d}}, {{imm}}",
                       f"{r}{{d}} {sym} {{imm}}", fixed=(("src", 0), ("off", 0)), group=g))
            add(OpSpec(f"{name}{sfx}_reg", cls | op | BPF_X, f"{name}{sfx} {{d}}, {{s}}",
                       f"{r}{{d}} {sym} {r}{{s}}", fixed=(("off", 0), ("imm", 0)), group=g))
        # v4 signed division: off = 1 (verifier.c: check_alu_op "BPF_ALU uses reserved fields")
        g = "divmul64" if cls == BPF_ALU64 else "divmul32"
        for name, op, sym in (("sdiv", BPF_DIV, "s/="), ("smod", BPF_MOD, "s%=")):
            add(OpSpec(f"{name}{sfx}", cls | op | BPF_K, f"{name}{sfx} {{d}}, {{imm}}",
                       f"{r}{{d}} {sym} {{imm}}", fixed=(("src", 0), ("off", 1)), cpu=4, group=g))
            add(OpSpec(f"{name}{sfx}_reg", cls | op | BPF_X, f"{name}{sfx} {{d}}, {{s}}",
                       f"{r}{{d}} {sym} {r}{{s}}", fixed=(("off", 1), ("imm", 0)), cpu=4, group=g))
        add(OpSpec(f"neg{sfx}", cls | BPF_NEG | BPF_K, f"neg{sfx} {{d}}", f"{r}{{d}} = -{r}{{d}}",
                   fixed=(("src", 0), ("off", 0), ("imm", 0)), group=grp))
        add(OpSpec(f"mov{sfx}", cls | BPF_MOV | BPF_K, f"mov{sfx} {{d}}, {{imm}}",
                   f"{r}{{d}} = {{imm}}", fixed=(("src", 0), ("off", 0)), group=grp))
        add(OpSpec(f"mov{sfx}_reg", cls | BPF_MOV | BPF_X, f"mov{sfx} {{d}}, {{s}}",
                   f"{r}{{d}} = {r}{{s}}", fixed=(("off", 0), ("imm", 0)), group=grp))
        # v4 sign-extending moves: mov with off = 8/16/32 (ALU32: 8/16 only).
        for bits in ((8, 16, 32) if cls == BPF_ALU64 else (8, 16)):
            add(OpSpec(f"movsx{bits}{sfx or '64'}", cls | BPF_MOV | BPF_X,
                       f"movsx{bits}{sfx or '64'} {{d}}, {{s}}", f"{r}{{d}} = (s{bits}){r}{{s}}",
                       fixed=(("off", bits), ("imm", 0)), cpu=4, group=grp))
    # Arena pointer cast (Linux 6.9): ALU64 mov with off = 1; imm = dst_as << 16 | src_as.
    add(OpSpec("addr_space_cast", BPF_ALU64 | BPF_MOV | BPF_X, "addr_space_cast {d}, {s}, {asc}",
               "r{d} = addr_space_cast(r{s}, {asc})", fixed=(("off", 1),), cpu=4,
               note="imm is 1 or 1<<16 (verifier.c: check_alu_op)"))
    # Byte swaps: le/be are class ALU (0xd4/0xdc), bswap is ALU64|END|TO_LE (0xd7); imm = width.
    for name, opc, cpu in (("le", BPF_ALU | BPF_END | BPF_TO_LE, 1), ("be", BPF_ALU | BPF_END | BPF_TO_BE, 1),
                           ("bswap", BPF_ALU64 | BPF_END | BPF_TO_LE, 4)):
        for bits in (16, 32, 64):
            add(OpSpec(f"{name}{bits}", opc, f"{name}{bits} {{d}}", f"r{{d}} = {name}{bits} r{{d}}",
                       fixed=(("src", 0), ("off", 0), ("imm", bits)), cpu=cpu,
                       aliases=(f"swap{bits}",) if name == "bswap" else ()))

    # ---- loads and stores -------------------------------------------------------------------
    sizes = (("b", BPF_B, "u8", "s8"), ("h", BPF_H, "u16", "s16"), ("w", BPF_W, "u32", "s32"),
             ("dw", BPF_DW, "u64", None))
    for sz, szb, ut, st in sizes:
        w = "w" if sz != "dw" else "r"  # alu32 register view under --mcpu=v3+
        add(OpSpec(f"ldx{sz}", BPF_LDX | BPF_MEM | szb, f"ldx{sz} {{d}}, {{ms}}",
                   f"r{{d}} = *({ut} *)(r{{s}} {{off}})", f"{w}{{d}} = *({ut} *)(r{{s}} {{off}})",
                   fixed=(("imm", 0),)))
        if st:
            add(OpSpec(f"ldxs{sz}", BPF_LDX | BPF_MEMSX | szb, f"ldxs{sz} {{d}}, {{ms}}",
                       f"r{{d}} = *({st} *)(r{{s}} {{off}})", fixed=(("imm", 0),), cpu=4))
        add(OpSpec(f"st{sz}", BPF_ST | BPF_MEM | szb, f"st{sz} {{md}}, {{imm}}",
                   f"*({ut} *)(r{{d}} {{off}}) = {{imm}}", fixed=(("src", 0),)))
        add(OpSpec(f"stx{sz}", BPF_STX | BPF_MEM | szb, f"stx{sz} {{md}}, {{s}}",
                   f"*({ut} *)(r{{d}} {{off}}) = r{{s}}", f"*({ut} *)(r{{d}} {{off}}) = {w}{{s}}",
                   fixed=(("imm", 0),)))
    # Legacy packet loads (cBPF heritage): r0 = skb[...]; LD_ABS has no src register.
    for sz, szb, ut, _ in sizes[:3]:
        add(OpSpec(f"ldabs{sz}", BPF_LD | BPF_ABS | szb, f"ldabs{sz} {{imm}}",
                   f"r0 = *({ut} *)skb[{{imm}}]", fixed=(("dst", 0), ("src", 0), ("off", 0)),
                   group="packet"))
        add(OpSpec(f"ldind{sz}", BPF_LD | BPF_IND | szb, f"ldind{sz} {{s}}, {{imm}}",
                   f"r0 = *({ut} *)skb[r{{s}}]",
                   llvm_rt=f"r0 = *({ut} *)skb[r{{s}} {{idx}}]", fixed=(("dst", 0), ("off", 0)),
                   kern=f"r0 = *({ut} *)skb[r{{s}} + {{imm}}]",
                   group="packet", note="llvm-objdump omits imm (the offset added to src)"))
    # 64-bit immediate load, one row per pseudo source (bpf.h BPF_PSEUDO_*).
    add(OpSpec("lddw", OP_LDDW, "lddw {d}, {imm64}", "r{d} = {imm64} ll", fixed=(("src", 0), ("off", 0)),
               kern="r{d} = {ximm64}"))
    for src, kw in ((1, "map_fd"), (2, "map_value"), (3, "btf_id"), (4, "func"), (5, "map_idx"),
                    (6, "map_idx_value")):
        add(OpSpec(f"lddw_{kw}", OP_LDDW, f"lddw {{d}}, {kw} {{imm64}}",
                   f"ld_pseudo\tr{{d}}, {src:#x}, {{lo}}",
                   llvm_rt=f"ld_pseudo\tr{{d}}, {src:#x}, {{imm64}}", fixed=(("src", src), ("off", 0)),
                   kern="r{d} = {ximm64}"))

    # ---- atomics (BPF_STX | BPF_ATOMIC; imm selects the operation) ------------------------------
    for sz, szb, ut, r, grp in (("dw", BPF_DW, "u64", "r", "atomic64"), ("w", BPF_W, "u32", "w", "atomic32")):
        sfx = "" if sz == "dw" else "32"
        ksz = "64" if sz == "dw" else ""  # the kernel says atomic64_xchg / atomic_xchg
        opc = BPF_STX | BPF_ATOMIC | szb
        for name, op, sym in (("add", BPF_ADD, "+="), ("or", BPF_OR, "|="), ("and", BPF_AND, "&="),
                              ("xor", BPF_XOR, "^=")):
            plain64 = f"lock *({ut} *)(r{{d}} {{off}}) {sym} r{{s}}"
            plain32 = f"lock *({ut} *)(r{{d}} {{off}}) {sym} {r}{{s}}"
            # llvm-objdump-19 without --mcpu decodes only the 32-bit add (XADDW); the others
            # live in its alu32 decoder table and print <unknown>.
            dflt = plain64 if (sz == "dw" or op == BPF_ADD) else None
            # llvm decodes a plain atomic from imm bits 7-4 alone (0x07 is `lock ... +=`),
            # the fetch forms, xchg and cmpxchg from bits 7-0
            add(OpSpec(f"lock {name}{sfx}", opc, f"lock {name}{sfx} {{md}}, {{s}}", dflt,
                       plain32 if sz == "w" else None, fixed=(("imm", op),), cpu=3, group=grp,
                       llvm_imm_mask=0xF0, kern=plain64))
            fetch = f"{r}{{s}} = atomic_fetch_{name}(({ut} *)(r{{d}} {{off}}), {r}{{s}})"
            # ... and its XADDW ignores the fetch bit: fetch-add32 prints as a plain add.
            dflt = fetch if sz == "dw" else (plain64 if op == BPF_ADD else None)
            add(OpSpec(f"lock fetch {name}{sfx}", opc, f"lock fetch {name}{sfx} {{md}}, {{s}}",
                       dflt, fetch if sz == "w" else None,
                       fixed=(("imm", op | BPF_FETCH),), cpu=3, group=grp, llvm_imm_mask=0xFF,
                       kern=f"r{{s}} = atomic{ksz}_fetch_{name}(({ut} *)(r{{d}} {{off}}), r{{s}})"))
        xchg = f"{r}{{s}} = xchg{'32' if sfx else ''}_{'32' if sfx else '64'}(r{{d}} {{off}}, {r}{{s}})"
        add(OpSpec(f"lock xchg{sfx}", opc, f"lock xchg{sfx} {{md}}, {{s}}",
                   xchg if sz == "dw" else None, xchg if sz == "w" else None,
                   fixed=(("imm", BPF_XCHG),), cpu=3, group=grp, llvm_imm_mask=0xFF,
                   kern=f"r{{s}} = atomic{ksz}_xchg(({ut} *)(r{{d}} {{off}}), r{{s}})"))
        cx = (f"{r}0 = cmpxchg{'32' if sfx else ''}_{'32' if sfx else '64'}"
              f"(r{{d}} {{off}}, {r}0, {r}{{s}})")
        add(OpSpec(f"lock cmpxchg{sfx}", opc, f"lock cmpxchg{sfx} {{md}}, {{s}}",
                   cx if sz == "dw" else None, cx if sz == "w" else None,
                   fixed=(("imm", BPF_CMPXCHG),), cpu=3, group=grp, llvm_imm_mask=0xFF,
                   kern=f"r0 = atomic{ksz}_cmpxchg(({ut} *)(r{{d}} {{off}}), r0, r{{s}})"))
    # Load-acquire / store-release (Linux 6.15): llvm-19 has no syntax for them (it misprints
    # the 32/64-bit ones as atomic add); we print LLVM 21's syntax instead.
    for sz, szb, ut, _ in sizes:
        r = "r" if sz == "dw" else "w"
        opc = BPF_STX | BPF_ATOMIC | szb
        add(OpSpec(f"load_acquire{ut[1:]}", opc, f"load_acquire{ut[1:]} {{d}}, {{ms}}",
                   f"{r}{{d}} = load_acquire(({ut} *)(r{{s}} {{off}}))", fixed=(("imm", BPF_LOAD_ACQ),),
                   kern=f"r{{d}} = load_acquire(({ut} *)(r{{s}} {{off}}))",
                   cpu=4, group="atomic64", note="not in llvm-19"))
        add(OpSpec(f"store_release{ut[1:]}", opc, f"store_release{ut[1:]} {{md}}, {{s}}",
                   f"store_release(({ut} *)(r{{d}} {{off}}), {r}{{s}})", fixed=(("imm", BPF_STORE_REL),),
                   kern=f"store_release(({ut} *)(r{{d}} {{off}}), r{{s}})",
                   cpu=4, group="atomic64", note="not in llvm-19"))

    # ---- jumps ------------------------------------------------------------------------------
    conds = [("jeq", BPF_JEQ, "=="), ("jgt", BPF_JGT, ">"), ("jge", BPF_JGE, ">="),
             ("jset", BPF_JSET, "&"), ("jne", BPF_JNE, "!="), ("jsgt", BPF_JSGT, "s>"),
             ("jsge", BPF_JSGE, "s>="), ("jlt", BPF_JLT, "<"), ("jle", BPF_JLE, "<="),
             ("jslt", BPF_JSLT, "s<"), ("jsle", BPF_JSLE, "s<=")]
    for cls, sfx, r in ((BPF_JMP, "", "r"), (BPF_JMP32, "32", "w")):
        for name, op, sym in conds:
            cpu = 2 if op >= BPF_JLT else 1
            cpu = 3 if cls == BPF_JMP32 else cpu
            grp = "base64" if cls == BPF_JMP else "base32"
            add(OpSpec(f"{name}{sfx}", cls | op | BPF_K, f"{name}{sfx} {{d}}, {{imm}}, {{tgt}}",
                       f"if {r}{{d}} {sym} {{imm}} goto {{tgt}}", fixed=(("src", 0),), cpu=cpu, group=grp,
                       kern=f"if {r}{{d}} {sym} {{ximm}} goto {{tgt}}"))
            add(OpSpec(f"{name}{sfx}_reg", cls | op | BPF_X, f"{name}{sfx} {{d}}, {{s}}, {{tgt}}",
                       f"if {r}{{d}} {sym} {r}{{s}} goto {{tgt}}", fixed=(("imm", 0),), cpu=cpu, group=grp))
    add(OpSpec("ja", BPF_JMP | BPF_JA, "ja {tgt}", "goto {tgt}", fixed=(("dst", 0), ("src", 0), ("imm", 0))))
    add(OpSpec("ja32", BPF_JMP32 | BPF_JA, "ja32 {tgt32}", "gotol {tgt32}",
               fixed=(("dst", 0), ("src", 0), ("off", 0)), cpu=4))
    add(OpSpec("may_goto", BPF_JMP | BPF_JCOND, "may_goto {tgt}", "may_goto {tgt}",
               fixed=(("dst", 0), ("src", BPF_MAY_GOTO), ("imm", 0)), cpu=4,
               note="bounded-loop escape (Linux 6.9)"))
    add(OpSpec("call", BPF_JMP | BPF_CALL, "call {imm}", "call {imm}",
               llvm_rt="call {imm}", fixed=(("dst", 0), ("src", 0), ("off", 0)), aliases=("call helper",),
               kern="call {cname}#{imm}"))
    add(OpSpec("call local", BPF_JMP | BPF_CALL, "call local {tgt32}", "call {imm}",
               llvm_rt="call local {tgt32}", llvm_alt=("call {tgt32}",), kern="call {tgt32}",
               fixed=(("dst", 0), ("src", BPF_PSEUDO_CALL), ("off", 0)), cpu=3))
    add(OpSpec("call runtime", BPF_JMP | BPF_CALL, "call runtime {imm}, {koff}", "call {imm}",
               llvm_rt="call kfunc {imm}, {koff}", kern="call {cname}#{imm}",
               fixed=(("dst", 0), ("src", BPF_PSEUDO_KFUNC_CALL)), cpu=3,
               aliases=("call kfunc",), note="kfunc: imm = BTF id, off = module BTF fd index"))
    # callx: the register is in dst (llvm's CALLX and bpf_conformance agree; the kernel's
    # verifier rejects BPF_CALL|BPF_X, see verifier.c: do_check "BPF_CALL uses reserved fields").
    add(OpSpec("callx", BPF_JMP | BPF_CALL | BPF_X, "call {d}", "callx r{d}", kern="call {cname}#{imm}",
               fixed=(("src", 0), ("off", 0), ("imm", 0)), group="callx", aliases=("callx",)))
    # verifier.c: do_check's BPF_EXIT check tests src, imm, dst and the class, not off
    add(OpSpec("exit", BPF_JMP | BPF_EXIT, "exit", "exit",
               fixed=(("dst", 0), ("src", 0), ("off", 0), ("imm", 0)), kernel_unchecked=("off",)))
    return tuple(rows)


OPCODES: tuple[OpSpec, ...] = _build()
BY_NAME: dict[str, OpSpec] = {s.name: s for s in OPCODES}
_BY_OPCODE: dict[int, list[OpSpec]] = {}
for _s in OPCODES:
    _BY_OPCODE.setdefault(_s.opcode, []).append(_s)


def candidates(opcode: int) -> list[OpSpec]:
    """Every form sharing this opcode byte (they differ by a fixed src/off/imm)."""
    return _BY_OPCODE.get(opcode, [])


def lookup(opcode: int, src: int, off: int, imm: int, dst: int = 0, *,
           kernel: bool = False) -> OpSpec | None:
    """The form an instruction with these fields is, or None if it is no defined instruction.

    Forms sharing an opcode are told apart by their fixed fields; when none matches exactly,
    None is returned and `validate` explains which field is wrong.
    """
    for spec in _BY_OPCODE.get(opcode, ()):
        if spec.matches(opcode, src, off, imm, dst, kernel=kernel):
            return spec
    return None
