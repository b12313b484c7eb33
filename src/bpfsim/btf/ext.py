"""`.BTF.ext`: func_info, line_info and CO-RE relocation records, per ELF code section.

Job: parse the section (libbpf btf.c: btf_ext__new / btf_ext_setup_info) into plain records
whose names and source lines are resolved through the `.BTF` string table.  Must not import
anything of bpfsim above `btf`.  Offsets stay as in the object file: `insn_off` is a byte
offset into the section (libbpf divides by 8; `.insn` does that for you).  Anything malformed
raises `ParseError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from bpfsim.btf.btf import Btf
from bpfsim.btf.parse import StringTable
from bpfsim.btf.types import BTF_MAGIC
from bpfsim.errors import ParseError

SECTION = ".BTF.ext"

# enum bpf_core_relo_kind (include/uapi/linux/bpf.h), the names libbpf prints
CORE_RELO_KINDS = (
    "byte_off", "byte_sz", "field_exists", "signed", "lshift_u64", "rshift_u64",
    "local_type_id", "target_type_id", "type_exists", "type_size", "enumval_exists",
    "enumval_value", "type_matches",
)


@dataclass
class FuncInfoRec:
    insn_off: int      # bytes into the section
    type_id: int       # a BTF FUNC

    @property
    def insn(self) -> int:
        return self.insn_off // 8


@dataclass
class LineInfoRec:
    insn_off: int
    file_name: str
    line: str          # the source line's text, as clang stored it
    line_num: int      # line_col >> 10
    line_col: int      # the column (line_col & 0x3ff), not the packed word

    @property
    def insn(self) -> int:
        return self.insn_off // 8

    @property
    def file(self) -> str:
        return self.file_name

    @property
    def col(self) -> int:
        return self.line_col


@dataclass
class CoreRelo:
    insn_off: int
    type_id: int       # the local root type
    access_str: str    # access string, e.g. "0:1:2"
    kind: int          # enum bpf_core_relo_kind

    @property
    def insn(self) -> int:
        return self.insn_off // 8

    @property
    def access(self) -> str:
        return self.access_str

    @property
    def kind_name(self) -> str:
        return CORE_RELO_KINDS[self.kind] if self.kind < len(CORE_RELO_KINDS) else f"unknown({self.kind})"


@dataclass
class BtfExt:
    """Per-section records; keys are ELF section names ("xdp", ".text", ...)."""

    func_info: dict[str, list[FuncInfoRec]] = field(default_factory=dict)
    line_info: dict[str, list[LineInfoRec]] = field(default_factory=dict)
    core_relos: dict[str, list[CoreRelo]] = field(default_factory=dict)
    func_info_rec_size: int = 8
    line_info_rec_size: int = 16
    core_relo_rec_size: int = 16

    @classmethod
    def parse(cls, data: bytes, btf: Btf | StringTable, byteorder: str = "little") -> BtfExt:
        strings = btf.strings if isinstance(btf, Btf) else btf
        e = {"little": "<", "big": ">"}.get(byteorder)
        if e is None:
            raise ParseError(f"unknown byte order {byteorder!r}", section=SECTION)
        data = bytes(data)
        if len(data) < 8:
            raise ParseError(f"BTF.ext too short for its header ({len(data)} bytes)", offset=0,
                             section=SECTION)
        magic, version, _flags, hdr_len = struct.unpack_from(e + "HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise ParseError(f"invalid BTF.ext magic {magic:#06x}", offset=0, section=SECTION)
        if version != 1:
            raise ParseError(f"unsupported BTF.ext version {version}", offset=2, section=SECTION)
        # libbpf: the header must hold at least func_info and line_info
        if hdr_len < 24 or hdr_len > len(data):
            raise ParseError(f"invalid BTF.ext header length {hdr_len}", offset=4, section=SECTION)
        fi_off, fi_len, li_off, li_len = struct.unpack_from(e + "IIII", data, 8)
        core_off = core_len = 0
        if hdr_len >= 32:
            core_off, core_len = struct.unpack_from(e + "II", data, 24)
        ext = cls()
        body = data[hdr_len:]

        def records(off: int, length: int, min_rec: int, what: str):
            if not length:
                return 0, []
            if off + length > len(body) or length < 4:
                raise ParseError(f"{what} extends past the end of .BTF.ext", offset=hdr_len + off,
                                 section=SECTION)
            (rec_size,) = struct.unpack_from(e + "I", body, off)
            if rec_size < min_rec or rec_size % 4:
                raise ParseError(f"{what} record size {rec_size} is invalid", offset=hdr_len + off,
                                 section=SECTION)
            pos, end, out = off + 4, off + length, []
            while pos < end:
                if pos + 8 > end:
                    raise ParseError(f"{what}: truncated section header", offset=hdr_len + pos,
                                     section=SECTION)
                name_off, num = struct.unpack_from(e + "II", body, pos)
                sec = strings.get(name_off, hdr_len + pos)
                pos += 8
                if num == 0:
                    raise ParseError(f"{what}: section '{sec}' has no records", offset=hdr_len + pos,
                                     section=SECTION)
                if pos + num * rec_size > end:
                    raise ParseError(f"{what}: section '{sec}' records extend past the end",
                                     offset=hdr_len + pos, section=SECTION)
                recs = [struct.unpack_from(e + "I" * (min_rec // 4), body, pos + i * rec_size)
                        for i in range(num)]
                out.append((sec, recs, hdr_len + pos))
                pos += num * rec_size
            return rec_size, out

        size, secs = records(fi_off, fi_len, 8, "func_info")
        ext.func_info_rec_size = size or 8
        for sec, recs, _ in secs:
            ext.func_info.setdefault(sec, []).extend(FuncInfoRec(*r) for r in recs)
        size, secs = records(li_off, li_len, 16, "line_info")
        ext.line_info_rec_size = size or 16
        for sec, recs, where in secs:
            ext.line_info.setdefault(sec, []).extend(
                LineInfoRec(off, strings.get(f, where), strings.get(ln, where), col >> 10, col & 0x3FF)
                for off, f, ln, col in recs)
        size, secs = records(core_off, core_len, 16, "core_relo")
        ext.core_relo_rec_size = size or 16
        for sec, recs, where in secs:
            ext.core_relos.setdefault(sec, []).extend(
                CoreRelo(off, tid, strings.get(acc, where), kind) for off, tid, acc, kind in recs)
        return ext
