"""`bpfsim disasm OBJ`: the text `llvm-objdump-19 -d OBJ` prints, from our own disassembler.

The object is read with `bpfsim.elf.read_elf`, its `.BTF`/`.BTF.ext` with `bpfsim.btf`; this
module picks the executable sections, their symbols and relocations, the BTF line_info
source lines (`--source`) and the CO-RE relocation texts llvm-objdump prints with `-r`, and
hands them to `bpfsim.isa.disasm.listing`.
"""

from __future__ import annotations

from typing import Any

import click

from bpfsim.btf.btf import Btf
from bpfsim.btf.ext import BtfExt, CoreRelo
from bpfsim.cli.options import emit_json
from bpfsim.elf.reader import STT_FILE, STT_SECTION, ElfObject, Section, read_elf
from bpfsim.errors import BpfError
from bpfsim.isa.disasm import Reloc, SectionCode, listing, rows

# BPF relocation type names as llvm-objdump prints them (llvm/BinaryFormat/ELFRelocs/BPF.def)
_RELOC_NAMES = {0: "R_BPF_NONE", 1: "R_BPF_64_64", 2: "R_BPF_64_ABS64", 3: "R_BPF_64_ABS32",
                4: "R_BPF_64_NODYLD32", 10: "R_BPF_64_32"}


def _sections(obj: ElfObject, ext: tuple[Btf, BtfExt] | None = None, *,
              source: bool = False) -> list[SectionCode]:
    """The executable sections as `isa.disasm` wants them (with BTF: source lines if
    `source`, and CO-RE notes)."""
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
        lines: dict[int, list[str]] = {}
        notes: dict[int, list[str]] = {}
        if ext is not None:
            btf, bext = ext
            if source:
                lines = _source_lines(bext, sec.name)
            for relo in bext.core_relos.get(sec.name, ()):
                notes.setdefault(relo.insn_off, []).append("CO-RE " + core_relo_text(btf, relo))
        out.append(SectionCode(sec.name, sec.data, syms, relocs, lines, notes))
    return out


def _reloc_symbol_name(obj: ElfObject, index: int) -> str:
    if not 0 <= index < len(obj.symbols):
        return ""
    sym = obj.symbols[index]
    if sym.type == STT_SECTION:  # llvm-objdump names a section symbol by its section
        target: Section | None = obj.symbol_section(sym)
        return target.name if target is not None else ""
    return sym.name


def _source_lines(ext: BtfExt, section: str) -> dict[int, list[str]]:
    """Byte offset -> source line, from .BTF.ext line_info; like `-S`, a line is not repeated
    while consecutive records stay on the same file and line number."""
    out: dict[int, list[str]] = {}
    last: tuple[str, int] | None = None
    for li in sorted(ext.line_info.get(section, ()), key=lambda li: li.insn_off):
        if not li.line or last == (li.file_name, li.line_num):
            continue
        last = (li.file_name, li.line_num)
        out.setdefault(li.insn_off, []).append(li.line)
    return out


def _load_btf(obj: ElfObject) -> tuple[Btf, BtfExt] | None:
    """The object's BTF and BTF.ext, or None when it has none or they do not parse (llvm-objdump
    then prints no CO-RE lines either)."""
    btf_sec, ext_sec = obj.section(".BTF"), obj.section(".BTF.ext")
    if btf_sec is None or ext_sec is None:
        return None
    try:
        btf = Btf.parse(btf_sec.data, obj.byteorder)
        return btf, BtfExt.parse(ext_sec.data, btf, obj.byteorder)
    except BpfError:
        return None


# ---- llvm's BTFParser::symbolize (llvm/lib/DebugInfo/BTF/BTFParser.cpp) ---------------------
_KIND_NAMES = ("byte_off", "byte_sz", "field_exists", "signed", "lshift_u64", "rshift_u64",
               "local_type_id", "target_type_id", "type_exists", "type_size", "enumval_exists",
               "enumval_value", "type_matches")
_FIELD_KINDS, _TYPE_KINDS, _ENUM_KINDS = range(0, 6), (6, 7, 8, 9, 12), (10, 11)
_MODS = {"CONST": " const", "VOLATILE": " volatile", "RESTRICT": " restrict"}
_TAGS = {"TYPEDEF": " typedef", "STRUCT": " struct", "UNION": " union", "ENUM": " enum",
         "ENUM64": " enum"}


class _Fail(Exception):
    pass


def core_relo_text(btf: Btf, relo: CoreRelo) -> str:
    """llvm-objdump's description of a CO-RE relocation, e.g.
    `<byte_off> [2] struct task::inner.a (0:1:0)` or `<enumval_value> [9] enum state::BUSY = 7`."""
    kind = f"<{_KIND_NAMES[relo.kind]}>" if relo.kind < len(_KIND_NAMES) else f"<reloc kind #{relo.kind}>"
    spec = relo.access_str
    try:
        return kind + _symbolize(btf, relo, spec)
    except _Fail as exc:
        return f"{kind} [{relo.type_id}] '{spec}' <{exc}>"


def _find(btf: Btf, tid: int) -> Any:
    return btf.types[tid] if 0 <= tid < len(btf.types) else None


def _anon(name: str, idx: int) -> str:
    return name if name else f"<anon {idx}>"


def _skip(btf: Btf, t: Any) -> Any:
    while t.kind in ("CONST", "VOLATILE", "RESTRICT", "TYPE_TAG", "TYPEDEF"):
        base = _find(btf, t.type)
        if base is None:
            break
        t = base
    return t


def _symbolize(btf: Btf, relo: CoreRelo, spec: str) -> str:
    raw: list[int] = []
    rest = spec
    while rest:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if not digits:
            raise _Fail("spec string is not a number")
        raw.append(int(rest[:digits]))
        rest = rest[digits:]
        if not rest:
            break
        if rest[0] != ":":
            raise _Fail(f"unexpected spec string delimiter: '{rest[0]}'")
        rest = rest[1:]
    cur = relo.type_id
    t = _find(btf, cur)
    if t is None:
        raise _Fail(f"unknown type id: {cur}")
    out = [f" [{cur}]"]
    for _ in range(33):
        if t.kind not in _MODS and t.kind != "TYPE_TAG":
            break
        out.append(_MODS.get(t.kind) or f' type_tag("{t.name}")')
        cur = t.type
        t = _find(btf, cur)
        if t is None:
            raise _Fail(f"unknown type id: {cur} in modifiers chain")
    else:
        raise _Fail("modifiers chain is too long")
    if cur == 0:
        out.append(" void")
    else:
        if t.kind == "FWD":
            out.append(" fwd union" if t.kflag else " fwd struct")
        else:
            out.append(_TAGS.get(t.kind, ""))
        out.append(" " + _anon(t.name, cur))
    if relo.kind in _TYPE_KINDS:
        if raw != [0]:
            raise _Fail("unexpected type-based relocation spec: should be '0'")
        return "".join(out)
    out.append("::")
    if relo.kind in _ENUM_KINDS:
        t = _skip(btf, t)
        if len(raw) != 1:
            raise _Fail("unexpected enumval relocation spec size")
        if t.kind not in ("ENUM", "ENUM64"):
            raise _Fail(f"unexpected type kind for enum relocation: {t.kind_id}")
        if len(t.values) <= raw[0]:
            raise _Fail(f"bad value index: {raw[0]}")
        v = t.values[raw[0]]
        if t.kind == "ENUM":  # llvm reads the 32-bit value as int32, then widens it
            val = v.value & 0xFFFFFFFF
            val = val - (1 << 32) if val >> 31 else val
        else:
            val = v.value & ((1 << 64) - 1)
            val = val - (1 << 64) if (t.kflag and val >> 63) else val
        val = val if t.kflag else val & ((1 << 64) - 1)
        out.append(f"{_anon(v.name, raw[0])} = {val}")
        return "".join(out)
    if relo.kind in _FIELD_KINDS:
        if not raw:
            raise _Fail("field spec too short")
        if raw[0] != 0:
            out.append(f"[{raw[0]}]")
        for i in range(1, len(raw)):
            t = _skip(btf, t)
            idx = raw[i]
            if t.kind in ("STRUCT", "UNION"):
                if len(t.members) <= idx:
                    raise _Fail(f"member index {idx} for spec sub-string {i} is out of range")
                m = t.members[idx]
                if i != 1 or raw[0] != 0:
                    out.append(".")
                out.append(_anon(m.name, idx))
                t = _find(btf, m.type)
                if t is None:
                    raise _Fail(f"unknown member type id {m.type} for spec sub-string {i}")
            elif t.kind == "ARRAY":
                out.append(f"[{idx}]")
                elem = t.type
                t = _find(btf, elem)
                if t is None:
                    raise _Fail(f"unknown element type id {elem} for spec sub-string {i}")
            else:
                raise _Fail(f"unexpected type kind {t.kind_id} for spec sub-string {i}")
        out.append(f" ({spec})")
        return "".join(out)
    raise _Fail(f"unknown relocation kind: {relo.kind}")


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
    secs = _sections(elf, _load_btf(elf), source=source)
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
                 "core": [n.removeprefix("CO-RE ") for n in r.notes],
                 "source": list(r.source)}
                for r in rows(sec, alu32=alu32, byteorder=elf.byteorder)]})
        emit_json(doc)
        return
    click.echo(listing(obj, secs, alu32=alu32, show_relocs=show_relocs, byteorder=elf.byteorder),
               nl=False)
