"""Read an ELF relocatable BPF object (EM_BPF, either byte order) into plain Python data.

Job: turn bytes into sections, symbols and relocations, checking every index and bound on the
way, so that later stages never index out of range.  Everything is read eagerly inside one
boundary that converts pyelftools' (and struct's) exceptions into `ParseError`: whatever the
bytes, `read_elf` returns an `ElfObject` or raises `ParseError`.

Must not import anything above `isa` (no BTF, no spec) and must not touch the OS except to
read the file it is given.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from dataclasses import dataclass, field

from bpfsim.errors import ParseError

EM_BPF = 247
ET_REL = 1

# ELF section types and flags we look at (elf.h).
SHT_NULL = 0
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_RELA = 4
SHT_NOBITS = 8
SHT_REL = 9
SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4

# Symbol types, bindings, special section indexes.
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STV_DEFAULT, STV_INTERNAL, STV_HIDDEN, STV_PROTECTED = 0, 1, 2, 3
SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00
SHN_ABS = 0xFFF1
SHN_COMMON = 0xFFF2

# BPF relocation types (llvm: BPFELFObjectWriter, include/elf/bpf.h).
R_BPF_NONE = 0
R_BPF_64_64 = 1          # lddw imm64 (maps, globals, function addresses)
R_BPF_64_ABS64 = 2       # 8-byte data word (.maps `.values`, .BTF.ext)
R_BPF_64_ABS32 = 3       # 4-byte data word (.BTF, .BTF.ext)
R_BPF_64_NODYLD32 = 4    # .BTF.ext line/func info section offsets
R_BPF_64_32 = 10         # call imm (BPF-to-BPF calls, kfuncs)


@dataclass(frozen=True)
class Symbol:
    """One `.symtab` entry.  `shndx` is the raw section index (SHN_* for special ones)."""

    index: int
    name: str
    value: int
    size: int
    type: int
    bind: int
    visibility: int
    shndx: int


@dataclass(frozen=True)
class Relocation:
    """One REL entry applying to its target section at byte `offset`."""

    offset: int
    type: int
    symbol: int           # index into ElfObject.symbols
    addend: int = 0       # only RELA entries have one (clang emits REL for BPF)


@dataclass
class Section:
    """One section header with its bytes (`data` is zeros of `size` for SHT_NOBITS)."""

    index: int
    name: str
    type: int
    flags: int
    size: int
    addralign: int
    entsize: int
    link: int
    info: int
    data: bytes = b""
    relocations: list[Relocation] = field(default_factory=list)

    @property
    def is_exec(self) -> bool:
        return self.type == SHT_PROGBITS and bool(self.flags & SHF_EXECINSTR)


@dataclass
class ElfObject:
    """The whole object: sections by index and name, the symbol table, the byte order."""

    byteorder: str
    sections: list[Section]
    symbols: list[Symbol]

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None

    def symbol_section(self, sym: Symbol) -> Section | None:
        """The section a symbol lives in, or None for undefined/special symbols."""
        if sym.shndx == SHN_UNDEF or sym.shndx >= SHN_LORESERVE:
            return None
        return self.sections[sym.shndx]


# Far above any BPF object (vmlinux-sized BTF included); reading stops there.
MAX_OBJECT_SIZE = 1 << 30


def read_object_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of an object (or raw BTF) file; ParseError for what cannot be one: a device
    such as /dev/zero (it would never end), a directory, a file over MAX_OBJECT_SIZE."""
    try:
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise ParseError(f"{os.fspath(path)}: not a regular file")
        with open(path, "rb") as f:
            data = f.read(MAX_OBJECT_SIZE + 1)
    except OSError as e:
        raise ParseError(f"cannot read {os.fspath(path)}: {e.strerror or e}") from None
    if len(data) > MAX_OBJECT_SIZE:
        raise ParseError(f"{os.fspath(path)}: larger than {MAX_OBJECT_SIZE >> 20} MiB")
    return data


def read_elf(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> ElfObject:
    """Parse an ELF relocatable BPF object from a path or bytes.  Raises ParseError only."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = read_object_file(source)
    try:
        return _read(data)
    except ParseError:
        raise
    except (Exception, RecursionError) as e:  # pyelftools raises many kinds on bad input
        raise ParseError(f"malformed ELF: {type(e).__name__}: {e}") from None


def _read(data: bytes) -> ElfObject:
    from elftools.elf.elffile import ELFFile

    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise ParseError("not an ELF file (bad magic or too short)", offset=0)
    if data[4] != 2:
        raise ParseError("not a 64-bit ELF object (EI_CLASS != ELFCLASS64)", offset=4)
    if data[5] not in (1, 2):
        raise ParseError(f"bad ELF data encoding {data[5]}", offset=5)
    byteorder = "little" if data[5] == 1 else "big"

    elf = ELFFile(io.BytesIO(data))
    hdr = elf.header
    if hdr["e_machine"] != "EM_BPF" and hdr["e_machine"] != EM_BPF:
        raise ParseError(f"not a BPF object (e_machine {hdr['e_machine']})", offset=0x12)
    if hdr["e_type"] not in ("ET_REL", ET_REL):
        raise ParseError(f"not a relocatable object (e_type {hdr['e_type']})", offset=0x10)

    nsec = elf.num_sections()
    if nsec == 0:
        raise ParseError("ELF object has no sections")
    if hdr["e_shoff"] + nsec * hdr["e_shentsize"] > len(data) or hdr["e_shentsize"] != 64:
        raise ParseError("section header table out of bounds", offset=hdr["e_shoff"])
    shstrndx = hdr["e_shstrndx"]
    if shstrndx >= nsec:
        raise ParseError(f"bad section name string table index {shstrndx}")

    raw_headers = [elf.get_section(i).header for i in range(nsec)]
    shstr = _section_bytes(data, raw_headers[shstrndx], shstrndx)

    sections: list[Section] = []
    for i, h in enumerate(raw_headers):
        name = _cstr(shstr, h["sh_name"], f"section {i} name")
        stype = _enum_int(h["sh_type"])
        size = h["sh_size"]
        body = bytes(size) if stype == SHT_NOBITS else (b"" if stype == SHT_NULL
                                                        else _section_bytes(data, h, i))
        sections.append(Section(i, name, stype, _enum_int(h["sh_flags"]), size,
                                h["sh_addralign"], h["sh_entsize"], h["sh_link"], h["sh_info"],
                                body))

    symbols = _read_symbols(sections, byteorder)
    _read_relocations(sections, symbols, byteorder)
    return ElfObject(byteorder, sections, symbols)


def _enum_int(v: object) -> int:
    """pyelftools describes known values by name; map back the few names we need."""
    if isinstance(v, int):
        return v
    names = {"SHT_NULL": SHT_NULL, "SHT_PROGBITS": SHT_PROGBITS, "SHT_SYMTAB": SHT_SYMTAB,
             "SHT_STRTAB": SHT_STRTAB, "SHT_RELA": SHT_RELA, "SHT_NOBITS": SHT_NOBITS,
             "SHT_REL": SHT_REL}
    if v in names:
        return names[v]  # type: ignore[index]
    return -1  # some other known type we never use


def _section_bytes(data: bytes, h: object, index: int) -> bytes:
    off, size = h["sh_offset"], h["sh_size"]  # type: ignore[index]
    if _enum_int(h["sh_type"]) == SHT_NOBITS:  # type: ignore[index]
        return bytes(size)
    if off > len(data) or size > len(data) - off:
        raise ParseError(f"section {index} data out of bounds ({off:#x}+{size:#x})", offset=off)
    return data[off:off + size]


def _cstr(table: bytes, off: int, what: str) -> str:
    if off >= len(table) and not (off == 0 and not table):
        raise ParseError(f"{what}: string offset {off} outside its string table")
    end = table.find(b"\0", off)
    if end < 0:
        raise ParseError(f"{what}: unterminated string at {off}")
    return table[off:end].decode("utf-8", errors="replace")


def _read_symbols(sections: list[Section], byteorder: str) -> list[Symbol]:
    symtabs = [s for s in sections if s.type == SHT_SYMTAB]
    if not symtabs:
        return []
    if len(symtabs) > 1:
        raise ParseError("more than one symbol table")
    st = symtabs[0]
    if st.link >= len(sections) or sections[st.link].type != SHT_STRTAB:
        raise ParseError(f"symbol table links to bad string table {st.link}", section=st.name)
    strtab = sections[st.link].data
    if st.entsize != 24 or st.size % 24:
        raise ParseError("bad symbol table entry size", section=st.name)
    fmt = struct.Struct(("<" if byteorder == "little" else ">") + "IBBHQQ")
    out: list[Symbol] = []
    for i in range(st.size // 24):
        name_off, info, other, shndx, value, size = fmt.unpack_from(st.data, i * 24)
        if shndx != SHN_UNDEF and shndx < SHN_LORESERVE and shndx >= len(sections):
            raise ParseError(f"symbol {i} refers to section {shndx} of {len(sections)}",
                             section=st.name, offset=i * 24)
        name = _cstr(strtab, name_off, f"symbol {i}") if name_off else ""
        if (info & 0xF) == STT_SECTION and not name and shndx < len(sections):
            name = sections[shndx].name
        out.append(Symbol(i, name, value, size, info & 0xF, info >> 4, other & 0x3, shndx))
    return out


def _read_relocations(sections: list[Section], symbols: list[Symbol], byteorder: str) -> None:
    e = "<" if byteorder == "little" else ">"
    rel_fmt, rela_fmt = struct.Struct(e + "QQ"), struct.Struct(e + "QQq")
    for s in sections:
        if s.type not in (SHT_REL, SHT_RELA):
            continue
        if s.info == 0 or s.info >= len(sections):
            raise ParseError(f"relocation section targets bad section {s.info}", section=s.name)
        target = sections[s.info]
        fmt = rel_fmt if s.type == SHT_REL else rela_fmt
        if s.size % fmt.size:
            raise ParseError("relocation section size is not a multiple of its entry size",
                             section=s.name)
        for i in range(s.size // fmt.size):
            fields = fmt.unpack_from(s.data, i * fmt.size)
            offset, info = fields[0], fields[1]
            addend = fields[2] if len(fields) > 2 else 0
            sym, rtype = info >> 32, info & 0xFFFFFFFF
            if sym >= len(symbols):
                raise ParseError(f"relocation {i} refers to symbol {sym} of {len(symbols)}",
                                 section=s.name, offset=i * fmt.size)
            if offset >= max(target.size, 1):
                raise ParseError(f"relocation {i} at {offset:#x} outside {target.name!r}",
                                 section=s.name, offset=i * fmt.size)
            target.relocations.append(Relocation(offset, rtype, sym, addend))
