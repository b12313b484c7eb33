"""The disassembler: instructions -> text, byte for byte what `llvm-objdump-19 -d` prints.

`format_insn` renders one instruction from the templates of `isa.opcodes` in one of three
flavours: llvm-objdump's default text (`alu32=False`), its `--mcpu=v3`/`v4` text
(`alu32=True`, 32-bit subregister syntax), or the round-trip text (`roundtrip=True`: llvm's
alu32 syntax, except where it loses bits, e.g. `call local +0x3` for a BPF-to-BPF call that
llvm prints as `call 0x3`), which `isa.asm.assemble` reads back to the same bytes.  It also
renders the bpf_conformance dialect (`dialect="conformance"`).

`listing` lays out llvm-objdump's whole `-d` output (file header, "Disassembly of section",
`<func>:` headers, address and raw-byte columns, `<sym+0x..>` branch annotations, `-r`
relocation lines, `-S`-style source lines) from sections the caller has already extracted:
this module must not import ELF code, maps or helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bpfsim.errors import ParseError
from bpfsim.isa.insn import INSN_SIZE, Instruction, decode_slots
from bpfsim.isa.opcodes import OP_LDDW, OpSpec, candidates, lookup

__all__ = ["Reloc", "Row", "SectionCode", "format_insn", "format_program", "listing", "rows", "spec_of"]

UNKNOWN = "<unknown>"


def spec_of(insn: Instruction) -> OpSpec | None:
    """The opcode-table row of an instruction, or None if it is not a defined instruction."""
    return lookup(insn.opcode, insn.src, insn.off, insn.imm, insn.dst)


def _sx(v: int) -> str:
    return hex(v)  # llvm prints signed hex: 0x5, -0x4


def _rel(v: int) -> str:
    return f"+{v:#x}" if v >= 0 else f"-{-v:#x}"


def _imm64_signed(insn: Instruction) -> int:
    v = insn.imm64 if insn.imm64 is not None else insn.imm & 0xFFFFFFFF
    return v - (1 << 64) if v >> 63 else v


def _render(tmpl: str, insn: Instruction, dialect: str, target: Callable[[int], str] | None,
            call_name: Callable[[int, int], str] | None = None) -> str:
    """Fill a template's placeholders with the instruction's fields, in the number formats of
    the dialect (llvm: signed hex; kernel: disasm.c's %d / 0x%x / %+d; conformance: decimal)."""
    out = tmpl
    if "{" not in out:
        return out
    conf = dialect == "conformance"
    vals: dict[str, str] = {}
    if dialect == "kernel":
        v64 = insn.imm64 if insn.imm64 is not None else insn.imm & 0xFFFFFFFF
        vals.update(d=str(insn.dst), s=str(insn.src), imm=str(insn.imm), off=f"{insn.off:+d}",
                    ximm=f"{insn.imm & 0xFFFFFFFF:#x}", ximm64=f"{v64:#x}", koff=str(insn.off),
                    asc=f"{(insn.imm >> 16) & 0xFFFF}, {insn.imm & 0xFFFF}",
                    cname=call_name(insn.src, insn.imm) if call_name else "unknown")
        for key, rel in (("tgt", insn.off), ("tgt32", insn.imm)):
            vals[key] = target(rel) if target else f"pc{rel:+d}"
    elif conf:
        vals["d"] = f"%r{insn.dst}"
        vals["s"] = f"%r{insn.src}"
        o = f"+{insn.off}" if insn.off >= 0 else str(insn.off)
        vals["md"] = f"[%r{insn.dst}{o}]"
        vals["ms"] = f"[%r{insn.src}{o}]"
        vals["imm"] = str(insn.imm)
        vals["imm64"] = f"{insn.imm64 if insn.imm64 is not None else insn.imm & 0xFFFFFFFF:#x}"
        vals["koff"] = str(insn.off)
        vals["asc"] = f"{(insn.imm >> 16) & 0xFFFF}, {insn.imm & 0xFFFF}"
    else:
        vals["d"] = str(insn.dst)
        vals["s"] = str(insn.src)
        vals["imm"] = _sx(insn.imm)
        vals["lo"] = f"{insn.imm & 0xFFFFFFFF:#x}"  # ld_pseudo prints the low word unsigned
        vals["imm64"] = _sx(_imm64_signed(insn))
        vals["off"] = f"+ {insn.off:#x}" if insn.off >= 0 else f"- {-insn.off:#x}"
        vals["idx"] = f"+ {insn.imm:#x}" if insn.imm >= 0 else f"- {-insn.imm:#x}"
        vals["koff"] = _sx(insn.off)
        vals["asc"] = f"{(insn.imm >> 16) & 0xFFFF:#x}, {insn.imm & 0xFFFF:#x}"
    if dialect != "kernel":
        for key, rel in (("tgt", insn.off), ("tgt32", insn.imm)):
            if "{" + key + "}" in out:
                vals[key] = target(rel) if target else (f"{rel:+d}" if conf else _rel(rel))
    for k, v in vals.items():
        out = out.replace("{" + k + "}", v)
    return out


def _template(spec: OpSpec, dialect: str, alu32: bool, roundtrip: bool) -> str | None:
    if dialect == "conformance":
        return spec.conf
    if dialect == "kernel":
        return spec.kern or spec.llvm
    if roundtrip:
        return spec.llvm_rt or spec.llvm32 or spec.llvm
    if alu32:
        return spec.llvm32 or spec.llvm
    return spec.llvm


_LLVM_MAX_REG = 11  # llvm's BPF register file has r0-r11; r12-r15 do not decode


def _llvm_regs_ok(tmpl: str, insn: Instruction) -> bool:
    return ("{d}" not in tmpl or insn.dst <= _LLVM_MAX_REG) and \
        ("{s}" not in tmpl or insn.src <= _LLVM_MAX_REG)


def _lax_match(row: OpSpec, insn: Instruction) -> bool:
    """Would llvm-19 decode insn as this row?  Fields in `llvm_lax` are not compared, a fixed
    imm only under `llvm_imm_mask`, and every other non-operand field must be 0."""
    fixed = dict(row.fixed)
    for f in ("dst", "src", "off", "imm"):
        if f in row.llvm_lax:
            continue
        got = getattr(insn, f)
        if f in fixed:
            mask = row.llvm_imm_mask if f == "imm" else -1
            if got & mask != fixed[f] & mask:
                return False
        elif f not in row.operands and got:
            return False
    return True


def _llvm_text(insn: Instruction, alu32: bool, target: Callable[[int], str] | None) -> str:
    """llvm-objdump-19's text for any slot, valid or not (what its decoder makes of it): the
    exact row's text, else that of a row differing only where llvm does not look."""
    exact = spec_of(insn)
    rows = [exact] if exact is not None else []
    lax = [r for r in candidates(insn.opcode) if r is not exact and _lax_match(r, insn)]
    # the most specific pattern wins, as in llvm's decoder tables (fetch-add over add)
    rows += sorted(lax, key=lambda r: -bin(r.llvm_imm_mask & 0xFFFFFFFF).count("1"))
    for spec in rows:
        tmpl = _template(spec, "llvm", alu32, False)
        if tmpl is not None:
            return _render(tmpl, insn, "llvm", target) if _llvm_regs_ok(tmpl, insn) else UNKNOWN
    if insn.opcode == OP_LDDW and insn.off == 0 and insn.dst <= _LLVM_MAX_REG:
        # a pseudo source llvm does not name still decodes as its generic LD_pseudo
        return f"ld_pseudo\tr{insn.dst}, {insn.src:#x}, {insn.imm & 0xFFFFFFFF:#x}"
    return UNKNOWN


def format_insn(insn: Instruction, *, alu32: bool = False, roundtrip: bool = False,
                dialect: str = "llvm", target: Callable[[int], str] | None = None,
                call_name: Callable[[int, int], str] | None = None) -> str:
    """The text of one instruction (a lddw head carries its full constant in `imm64`).

    `target(rel)`, if given, renders a pc-relative branch target (a label, or llvm-objdump's
    `+0x3 <f+0x20>`).  `dialect="kernel"` gives the verifier log's text (kernel/bpf/disasm.c:
    print_bpf_insn, e.g. `(85) call bpf_ktime_get_ns#5`); `call_name(src, imm)` names a helper
    or kfunc there (isa knows no helper names; default "unknown").  In llvm mode any slot
    prints as llvm-objdump-19 does, junk included (fields llvm ignores are ignored, the rest
    is `<unknown>`); in the conformance dialect and in round-trip mode an undefined
    instruction raises ParseError because it has no text that would assemble back.
    """
    if insn.lddw_tail:
        raise ParseError("the second slot of a lddw has no text of its own")
    if dialect == "llvm" and not roundtrip:
        return _llvm_text(insn, alu32, target)
    spec = spec_of(insn)
    tmpl = _template(spec, dialect, alu32, roundtrip) if spec else None
    if tmpl is None:
        if dialect == "conformance" or roundtrip:
            raise ParseError(f"undefined instruction {insn.encode().hex(' ')} has no assembly text")
        return f"({insn.opcode:02x}) {UNKNOWN}" if dialect == "kernel" else UNKNOWN
    text = _render(tmpl, insn, dialect, target, call_name)
    return f"({insn.opcode:02x}) {text}" if dialect == "kernel" else text


def format_program(insns: Sequence[Instruction], *, dialect: str = "llvm", alu32: bool = True,
                   roundtrip: bool = True, labels: bool = False) -> str:
    """A whole program as assembly text, one instruction per line, that `assemble` reads back
    to the same slots.  With `labels=True`, branch targets become `L<pc>:` labels."""
    names: dict[int, str] = {}
    if labels:
        for pc, ins in enumerate(insns):
            spec = None if ins.lddw_tail else spec_of(ins)
            if spec and spec.jump_field:
                rel = ins.off if spec.jump_field == "off" else ins.imm
                names.setdefault(pc + 1 + rel, f"L{pc + 1 + rel}")
    lines: list[str] = []
    for pc, ins in enumerate(insns):
        if pc in names:
            lines.append(f"{names[pc]}:")
        if ins.lddw_tail:
            continue
        tgt = (lambda rel, pc=pc: names[pc + 1 + rel]) if labels else None
        lines.append(format_insn(ins, alu32=alu32, roundtrip=roundtrip, dialect=dialect, target=tgt))
    if labels and len(insns) in names:
        lines.append(f"{names[len(insns)]}:")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# llvm-objdump -d listing

@dataclass(frozen=True)
class Reloc:
    """One relocation as `llvm-objdump -r` prints it: byte offset, type name, symbol name."""

    offset: int
    type_name: str
    symbol: str
    addend: int | None = None


@dataclass
class SectionCode:
    """An executable section, already extracted from the object by the caller.

    `symbols` maps a byte offset to the names defined there (llvm-objdump prints one `<name>:`
    header per offset, the last name in symbol-table order); `lines` maps a byte offset to
    the source lines to print before that instruction (`-S`); `notes` maps a byte offset to
    extra relocation text printed with `-r` before the ELF relocations (llvm's
    `CO-RE <byte_off> [2] struct task::pid (0:0)` lines from .BTF.ext).
    """

    name: str
    data: bytes
    symbols: Mapping[int, Sequence[str]] = field(default_factory=dict)
    relocs: Sequence[Reloc] = ()
    lines: Mapping[int, Sequence[str]] = field(default_factory=dict)
    notes: Mapping[int, Sequence[str]] = field(default_factory=dict)


def _bytes_col(raw: bytes) -> str:
    return " ".join(f"{b:02x}" for b in raw)


def _annotation(target_addr: int, syms: list[tuple[int, str]]) -> str:
    """llvm-objdump's `<sym+0xoff>`: the last symbol at or below the (unsigned 64-bit) target."""
    target_addr &= (1 << 64) - 1
    best: tuple[int, str] | None = None
    for addr, name in syms:
        if addr <= target_addr and (best is None or addr >= best[0]):
            best = (addr, name)
    if best is None:
        return ""
    d = target_addr - best[0]
    return f" <{best[1]}>" if d == 0 else f" <{best[1]}+{d:#x}>"


@dataclass(frozen=True)
class Row:
    """One listed instruction: slot index, its raw bytes (16 for a lddw), text, the symbol
    whose `<name>:` header precedes it (if any), its relocations and source lines."""

    pc: int
    raw: bytes
    text: str
    symbol: str | None = None
    relocs: tuple[Reloc, ...] = ()
    source: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def rows(sec: SectionCode, *, alu32: bool = False, byteorder: str = "little",
         show_relocs: bool = False) -> list[Row]:
    """The instructions of one section as llvm-objdump walks them: 8 bytes at a time, 16 for
    a lddw llvm can decode (an undecodable 0x18 slot is `<unknown>` and 8 bytes long), and a
    run of 8 or more zero bytes folded into one `...` row (a Row with `text == "..."`)."""
    syms = sorted(((a, names[-1]) for a, names in sec.symbols.items() if names), key=lambda x: x[0])
    if not syms or syms[0][0] != 0:
        syms.insert(0, (0, sec.name))  # llvm-objdump names an unlabelled start by its section
    sym_at = dict(syms)
    relocs: dict[int, list[Reloc]] = {}
    for r in sec.relocs:
        relocs.setdefault(r.offset - r.offset % INSN_SIZE, []).append(r)
    reloc_offsets = sorted(r.offset for r in sec.relocs)
    data = sec.data
    out: list[Row] = []
    idx = 0
    while idx + INSN_SIZE <= len(data):
        pc = idx // INSN_SIZE
        end = _block_end(idx, syms, len(data), reloc_offsets if show_relocs else ())
        zeros = _skippable_zeros(data, idx, end)
        if zeros:
            out.append(Row(pc, b"", "...", sym_at.get(idx)))
            idx += zeros
            continue
        ins = _slot(data, idx, byteorder)
        size = INSN_SIZE
        if ins.opcode == OP_LDDW:
            if idx + 2 * INSN_SIZE <= len(data) and ins.off == 0 and ins.dst <= _LLVM_MAX_REG:
                ins = decode_slots(data[idx:idx + 2 * INSN_SIZE], byteorder)[0]
                size = 2 * INSN_SIZE
            else:
                ins = Instruction(0xFF, ins.dst, ins.src, ins.off, ins.imm)  # <unknown>

        def tgt(rel: int, pc: int = pc, syms: list[tuple[int, str]] = syms) -> str:
            return _rel(rel) + _annotation((pc + 1 + rel) * INSN_SIZE, syms)

        text = format_insn(ins, alu32=alu32, target=tgt)
        rl = tuple(r for k in range(0, size, INSN_SIZE) for r in relocs.get(idx + k, ()))
        out.append(Row(pc, data[idx:idx + size], text, sym_at.get(idx), rl,
                       tuple(sec.lines.get(idx, ())), tuple(sec.notes.get(idx, ()))))
        idx += size
    return out


def _block_end(idx: int, syms: list[tuple[int, str]], size: int, reloc_offsets: Sequence[int]) -> int:
    """Where llvm-objdump stops looking for zeros: the next symbol, the section end, and with
    -r the next relocation (so relocated zero words stay visible)."""
    end = next((a for a, _ in syms if a > idx), size)
    return min(end, next((o for o in reloc_offsets if o >= idx), end))


def _skippable_zeros(data: bytes, idx: int, end: int) -> int:
    """llvm-objdump's countSkippableZeroBytes: at least 8 zero bytes, skipped in multiples of 4."""
    n = 0
    while idx + n < end and not data[idx + n]:
        n += 1
    return 0 if n < 8 else n & ~3


def _slot(data: bytes, idx: int, byteorder: str) -> Instruction:
    """The 8 bytes at byte offset idx on their own (a lddw head without its tail)."""
    chunk = data[idx:idx + INSN_SIZE]
    if chunk[0] != OP_LDDW:
        return decode_slots(chunk, byteorder)[0]
    ins = decode_slots(b"\0" + chunk[1:], byteorder)[0]
    return Instruction(OP_LDDW, ins.dst, ins.src, ins.off, ins.imm)


def listing(filename: str, sections: Sequence[SectionCode], *, alu32: bool = False,
            show_relocs: bool = False, byteorder: str = "little") -> str:
    """The full text of `llvm-objdump-19 -d [-r] [--mcpu=v4] FILE`; with source lines in the
    sections, `; line` comments before their instruction in the manner of `-S`."""
    out = [f"\n{filename}:\tfile format elf64-bpf\n"]  # the same name for both byte orders
    for sec in sections:
        if not sec.data:
            continue  # llvm-objdump skips empty executable sections (an unused .text)
        out.append(f"\nDisassembly of section {sec.name}:\n")
        for row in rows(sec, alu32=alu32, byteorder=byteorder, show_relocs=show_relocs):
            if row.symbol is not None:
                out.append(f"\n{row.pc * INSN_SIZE:016x} <{row.symbol}>:\n")
            if row.text == "...":
                out.append("\t\t...\n")
                continue
            out.extend(f"; {line}\n" for line in row.source)
            out.append(f"{row.pc:8d}:\t{_bytes_col(row.raw)}\t{row.text}\n")
            if show_relocs:
                out.extend(f"\t\t{row.pc * INSN_SIZE:016x}:  {note}\n" for note in row.notes)
                for r in row.relocs:
                    add = "" if not r.addend else f"{r.addend:+#x}"
                    out.append(f"\t\t{r.offset:016x}:  {r.type_name}\t{r.symbol}{add}\n")
    return "".join(out)
