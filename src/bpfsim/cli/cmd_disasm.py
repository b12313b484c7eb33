"""`bpfsim disasm OBJ`: the text `llvm-objdump-19 -d OBJ` prints, from our own disassembler.

The object is read with `bpfsim.elf.read_elf`; this module only picks the executable
sections, their symbols and relocations, and (with `--source`) the BTF line_info source lines
of `bpfsim.load_spec`, and hands them to `bpfsim.isa.disasm.listing`.
"""

from __future__ import annotations

from typing import Any

import click

from bpfsim.cli.options import emit_json
from bpfsim.elf.reader import (
    STT_FILE,
    STT_SECTION,
    ElfObject,
    Section,
    read_elf,
)
from bpfsim.isa.disasm import Reloc, SectionCode, listing, rows

# BPF relocation type names as llvm-objdump prints them (llvm/BinaryFormat/ELFRelocs/BPF.def)
_RELOC_NAMES = {0: "R_BPF_NONE", 1: "R_BPF_64_64", 2: "R_BPF_64_ABS64", 3: "R_BPF_64_ABS32",
                4: "R_BPF_64_NODYLD32", 10: "R_BPF_64_32"}


def _sections(obj: ElfObject, source: dict[tuple[int, int], list[str]] | None) -> list[SectionCode]:
    out: list[SectionCode] = []
    for sec in obj.sections:
        if not sec.is_exec:
            continue
        syms: dict[int, list[str]] = {}
        for sym in obj.symbols:
            if sym.shndx == sec.index and sym.type not in (STT_SECTION, STT_FILE) and sym.name:
                syms.setdefault(sym.value, []).append(sym.name)
        relocs = [Reloc(r.offset, _RELOC_NAMES.get(r.type, f"Unknown ({r.type})"),
                        _reloc_symbol_name(obj, r.symbol), r.addend or None)
                  for r in sorted(sec.relocations, key=lambda r: r.offset)]
        lines = {off: text for (idx, off), text in (source or {}).items() if idx == sec.index}
        out.append(SectionCode(sec.name, sec.data, syms, relocs, lines))
    return out


def _reloc_symbol_name(obj: ElfObject, index: int) -> str:
    if not 0 <= index < len(obj.symbols):
        return ""
    sym = obj.symbols[index]
    if sym.type == STT_SECTION:  # llvm-objdump names a section symbol by its section
        target: Section | None = obj.symbol_section(sym)
        return target.name if target is not None else ""
    return sym.name


def _source_lines(path: str, obj: ElfObject) -> dict[tuple[int, int], list[str]]:
    """(section index, byte offset) -> source lines, from each program's BTF line_info.

    line_info slots are in the *linked* program; a slot belongs to the function (entry or
    subprogram) that starts last at or before it, and that function's symbol says where its
    code sits in the object.
    """
    import bpfsim

    spec = bpfsim.load_spec(path)
    where: dict[str, tuple[int, int]] = {}
    for sym in obj.symbols:
        if sym.type not in (STT_SECTION, STT_FILE) and sym.name and obj.symbol_section(sym):
            where.setdefault(sym.name, (sym.shndx, sym.value))
    out: dict[tuple[int, int], list[str]] = {}
    for prog in spec.programs.values():
        starts = sorted(((slot, name) for name, slot in prog.subprogram_starts.items()), reverse=True)
        if not starts:
            starts = [(0, prog.name)]
        last: tuple[str, str, int] | None = None
        for li in sorted(prog.line_info, key=lambda li: li.insn):
            start, func = next(((slot, name) for slot, name in starts if slot <= li.insn),
                               (0, prog.name))
            if func not in where or not li.line:
                continue
            # like -S, a source line is not repeated while consecutive code stays on it
            if last == (func, li.file, li.line_num):
                continue
            last = (func, li.file, li.line_num)
            shndx, base = where[func]
            key = (shndx, base + (li.insn - start) * 8)
            if li.line not in out.get(key, []):
                out.setdefault(key, []).append(li.line)
    return out


@click.command("disasm")
@click.argument("obj", type=click.Path(dir_okay=False))
@click.option("-r", "--reloc", "show_relocs", is_flag=True, help="Show relocations (objdump -r).")
@click.option("--mcpu", type=click.Choice(["v1", "v2", "v3", "v4"]), default=None,
              help="Print as `llvm-objdump --mcpu=...` (v3/v4: 32-bit subregister syntax).")
@click.option("--source", is_flag=True, help="Interleave BTF line_info source lines (like -S).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
def command(obj: str, show_relocs: bool, mcpu: str | None, source: bool, as_json: bool) -> None:
    """Disassemble OBJ exactly as llvm-objdump-19 -d does."""
    elf = read_elf(obj)
    alu32 = mcpu in ("v3", "v4")
    secs = _sections(elf, _source_lines(obj, elf) if source else None)
    if as_json:
        doc: dict[str, Any] = {"file": obj, "sections": []}
        for sec in secs:
            if not sec.data:
                continue
            doc["sections"].append({"name": sec.name, "insns": [
                {"insn": r.pc, "offset": r.pc * 8, "bytes": r.raw.hex(), "text": r.text,
                 "symbol": r.symbol,
                 "relocs": [{"offset": x.offset, "type": x.type_name, "symbol": x.symbol}
                            for x in r.relocs],
                 "source": list(r.source)}
                for r in rows(sec, alu32=alu32, byteorder=elf.byteorder)]})
        emit_json(doc)
        return
    click.echo(listing(obj, secs, alu32=alu32, show_relocs=show_relocs, byteorder=elf.byteorder),
               nl=False)
