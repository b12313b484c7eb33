"""Raw `.BTF` bytes <-> a list of `BtfType` plus the string table.

Job: the wire format only (header, type records, strings) and the structural checks that
make every later query safe: in-bounds offsets, known kinds, valid type ids, no reference
cycles through values.  Anything malformed raises `ParseError` with the byte offset -- never
`struct.error`, `IndexError` or `UnicodeError`.  Must not import anything of bpfsim above
`errors`; the kernel's stricter semantic checks (btf.c: btf_check_all_types) are not ours.
"""

from __future__ import annotations

import struct

from bpfsim.btf.types import (
    BTF_HEADER_SIZE,
    BTF_MAGIC,
    BTF_VERSION,
    KIND_IDS,
    KIND_NAMES,
    MODIFIER_KINDS,
    VOID,
    BtfType,
    EnumValue,
    Member,
    Param,
    VarSecinfo,
)
from bpfsim.errors import ParseError, UsageError

SECTION = ".BTF"
# Longest chain of by-value references (struct in struct, array of typedef of ...) we accept.
# The kernel's own limit (btf.c: MAX_RESOLVE_DEPTH = 32) depends on type order; this one only
# keeps every recursive walk (decode, encode, dumps) far from Python's recursion limit.
MAX_NESTING = 128


def _fmt(byteorder: str) -> str:
    if byteorder == "little":
        return "<"
    if byteorder == "big":
        return ">"
    raise ParseError(f"unknown byte order {byteorder!r} (expected 'little' or 'big')", section=SECTION)


class StringTable:
    """The BTF string section: lookups by offset, appends that deduplicate."""

    def __init__(self, data: bytes = b"\0") -> None:
        self.data = bytearray(data)
        self._index: dict[str, int] | None = None

    def get(self, off: int, where: int | None = None) -> str:
        """The NUL-terminated string at `off` (libbpf btf__str_by_offset)."""
        if off < 0 or off >= len(self.data):
            raise ParseError(f"string offset {off} outside the string section ({len(self.data)} bytes)",
                             offset=where, section=SECTION)
        end = self.data.find(b"\0", off)
        if end < 0:
            raise ParseError(f"string at offset {off} is not NUL-terminated", offset=where, section=SECTION)
        return self.data[off:end].decode("utf-8", errors="replace")

    def add(self, s: str) -> int:
        """Offset of `s`, appending it if absent (the empty string is always offset 0)."""
        if not s:
            return 0
        if self._index is None:
            self._index = {}
            pos = 0
            for raw in bytes(self.data).split(b"\0"):
                self._index.setdefault(raw.decode("utf-8", errors="replace"), pos)
                pos += len(raw) + 1
        off = self._index.get(s)
        if off is None:
            off = len(self.data)
            self.data += s.encode() + b"\0"
            self._index[s] = off
        return off

    def name_off(self, name: str, old_off: int) -> int:
        """Keep a type's original offset when it still names `name` (byte-exact round trips)."""
        if old_off and 0 <= old_off < len(self.data):
            end = self.data.find(b"\0", old_off)
            if end >= 0 and self.data[old_off:end] == name.encode():
                return old_off
        return self.add(name)


def parse_btf(data: bytes, byteorder: str = "little") -> tuple[list[BtfType], StringTable]:
    """Parse a raw `.BTF` blob into `[void, type 1, ...]` and its string table."""
    e = _fmt(byteorder)
    data = bytes(data)
    if len(data) < BTF_HEADER_SIZE:
        raise ParseError(f"BTF too short for its header ({len(data)} bytes)", offset=0, section=SECTION)
    magic, version, _flags, hdr_len = struct.unpack_from(e + "HBBI", data, 0)
    if magic != BTF_MAGIC:
        if magic == 0x9FEB:
            other = "big" if byteorder == "little" else "little"
            raise ParseError(f"BTF is {other}-endian, expected {byteorder}-endian", offset=0, section=SECTION)
        raise ParseError(f"invalid BTF magic {magic:#06x}", offset=0, section=SECTION)
    if version != BTF_VERSION:
        raise ParseError(f"unsupported BTF version {version}", offset=2, section=SECTION)
    if hdr_len < BTF_HEADER_SIZE or hdr_len > len(data):
        raise ParseError(f"invalid BTF header length {hdr_len}", offset=4, section=SECTION)
    type_off, type_len, str_off, str_len = struct.unpack_from(e + "IIII", data, 8)
    body = len(data) - hdr_len
    if type_off % 4:
        raise ParseError("BTF type section is not 4-byte aligned", offset=8, section=SECTION)
    if type_off + type_len > body or str_off + str_len > body:
        raise ParseError("BTF section extends past the end of the data", offset=8, section=SECTION)
    if type_len and str_len and type_off < str_off + str_len and str_off < type_off + type_len:
        raise ParseError("BTF type and string sections overlap", offset=8, section=SECTION)
    sbase = hdr_len + str_off
    strtab = data[sbase:sbase + str_len]
    # libbpf btf_parse_str_sec: non-empty, starts with "" and ends with a NUL
    if not strtab or strtab[0] != 0 or strtab[-1] != 0:
        raise ParseError("invalid BTF string section", offset=sbase, section=SECTION)
    strings = StringTable(strtab)
    types = _parse_types(data, hdr_len + type_off, type_len, strings, e)
    _check_refs(types)
    return types, strings


def _parse_types(data: bytes, base: int, length: int, strings: StringTable, e: str) -> list[BtfType]:
    types: list[BtfType] = [VOID]
    pos, end = base, base + length

    def words(n: int, fmt: str) -> tuple:
        nonlocal pos
        size = struct.calcsize(e + fmt) * n
        if pos + size > end:
            raise ParseError("BTF type record truncated", offset=pos, section=SECTION)
        vals = struct.unpack_from(e + fmt * n, data, pos)
        pos += size
        return vals

    while pos < end:
        start = pos
        name_off, info, size_type = words(1, "III")
        kind_id = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kflag = bool(info >> 31)
        if kind_id == 0 or kind_id >= len(KIND_NAMES):
            raise ParseError(f"unsupported BTF kind {kind_id} (type [{len(types)}])", offset=start,
                             section=SECTION)
        kind = KIND_NAMES[kind_id]
        t = BtfType(kind=kind, name=strings.get(name_off, start), kflag=kflag, name_off=name_off)
        if kind in ("INT", "STRUCT", "UNION", "ENUM", "DATASEC", "FLOAT", "ENUM64"):
            t.size = size_type
        else:
            t.type = size_type
        if kind == "INT":
            (w,) = words(1, "I")
            t.encoding, t.bits_offset, t.nr_bits = (w >> 24) & 0x0F, (w >> 16) & 0xFF, w & 0xFF
        elif kind == "ARRAY":
            t.type, t.index_type, t.nelems = words(1, "III")
        elif kind in ("STRUCT", "UNION"):
            flat = words(vlen, "III")
            for i in range(vlen):
                m_name, m_type, m_off = flat[3 * i:3 * i + 3]
                bits = (m_off >> 24, m_off & 0xFFFFFF) if kflag else (0, m_off)
                t.members.append(Member(strings.get(m_name, start), m_type, bits[1], bits[0], m_name))
        elif kind == "ENUM":
            flat = words(vlen, "Ii")
            for i in range(vlen):
                val = flat[2 * i + 1]
                t.values.append(EnumValue(strings.get(flat[2 * i], start),
                                          val if kflag else val & 0xFFFFFFFF, flat[2 * i]))
        elif kind == "ENUM64":
            flat = words(vlen, "III")
            for i in range(vlen):
                v_name, lo, hi = flat[3 * i:3 * i + 3]
                val = hi << 32 | lo
                if kflag and val >= 1 << 63:
                    val -= 1 << 64
                t.values.append(EnumValue(strings.get(v_name, start), val, v_name))
        elif kind == "FUNC_PROTO":
            flat = words(vlen, "II")
            for i in range(vlen):
                t.params.append(Param(strings.get(flat[2 * i], start), flat[2 * i + 1], flat[2 * i]))
        elif kind == "FUNC":
            t.linkage = vlen
        elif kind == "VAR":
            (t.linkage,) = words(1, "I")
        elif kind == "DATASEC":
            flat = words(vlen, "III")
            t.vars = [VarSecinfo(*flat[3 * i:3 * i + 3]) for i in range(vlen)]
        elif kind == "DECL_TAG":
            (t.component_idx,) = words(1, "i")
            if t.component_idx < -1:
                raise ParseError(f"DECL_TAG [{len(types)}] has invalid component_idx {t.component_idx}",
                                 offset=start, section=SECTION)
        types.append(t)
    return types


def referenced_ids(t: BtfType) -> list[int]:
    """Every type id a record refers to (for validation and graph walks)."""
    ids: list[int] = []
    if t.kind in ("PTR", "TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "FUNC", "FUNC_PROTO", "VAR",
                  "DECL_TAG", "TYPE_TAG"):
        ids.append(t.type)
    if t.kind == "ARRAY":
        ids += [t.type, t.index_type]
    ids += [m.type for m in t.members]
    ids += [p.type for p in t.params]
    ids += [v.type for v in t.vars]
    return ids


def _by_value_ids(t: BtfType) -> list[int]:
    """References that embed the target's storage (a cycle through these has no finite size)."""
    if t.kind in MODIFIER_KINDS or t.kind in ("VAR", "DECL_TAG"):
        return [t.type]
    if t.kind == "ARRAY":
        return [t.type]
    if t.kind in ("STRUCT", "UNION"):
        return [m.type for m in t.members]
    if t.kind == "DATASEC":
        return [v.type for v in t.vars]
    return []


def _check_refs(types: list[BtfType]) -> None:
    n = len(types)
    for tid, t in enumerate(types):
        for ref in referenced_ids(t):
            if ref >= n:
                raise ParseError(f"type [{tid}] {t.kind} refers to type id {ref}, but there are only "
                                 f"{n - 1} types", section=SECTION)
        if t.kind == "DATASEC":
            for v in t.vars:
                if types[v.type].kind != "VAR" and types[v.type].kind != "FUNC":
                    raise ParseError(f"DATASEC [{tid}] entry refers to {types[v.type].kind} [{v.type}]",
                                     section=SECTION)
    # Iterative DFS colouring: 0 new, 1 on stack, 2 done (btf.c: env_stack_push loop detection).
    state = [0] * n
    depth = [0] * n
    for root in range(1, n):
        if state[root]:
            continue
        stack = [(root, iter(_by_value_ids(types[root])))]
        state[root] = 1
        while stack:
            tid, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[tid] = 2
                stack.pop()
                depth[tid] = 1 + max((depth[c] for c in _by_value_ids(types[tid]) if c), default=0)
                if depth[tid] > MAX_NESTING:
                    raise ParseError(f"BTF type [{tid}] {types[tid].kind} nests more than {MAX_NESTING} "
                                     "levels deep", section=SECTION)
            elif nxt and state[nxt] == 1:
                raise ParseError(f"BTF type [{nxt}] {types[nxt].kind} is part of a reference loop",
                                 section=SECTION)
            elif nxt and state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(_by_value_ids(types[nxt]))))


def serialize_btf(types: list[BtfType], strings: StringTable, byteorder: str = "little") -> bytes:
    """The inverse of `parse_btf`: header, type records, string section."""
    e = _fmt(byteorder)
    try:
        return _serialize(types, strings, e)
    except (struct.error, KeyError, OverflowError) as exc:
        raise UsageError(f"BTF cannot be serialised: {exc}") from None


def _serialize(types: list[BtfType], strings: StringTable, e: str) -> bytes:
    out = bytearray()
    for tid, t in enumerate(types[1:], 1):
        if t.vlen > 0xFFFF:
            raise UsageError(f"type [{tid}] {t.kind} has {t.vlen} entries, BTF allows at most 65535")
        name_off = strings.name_off(t.name, t.name_off)
        kind_id = KIND_IDS[t.kind]
        vlen = t.vlen
        info = (int(t.kflag) << 31) | (kind_id << 24) | (vlen & 0xFFFF)
        size_type = t.size if t.kind in ("INT", "STRUCT", "UNION", "ENUM", "DATASEC", "FLOAT", "ENUM64") \
            else 0 if t.kind == "ARRAY" else t.type
        out += struct.pack(e + "III", name_off, info, size_type & 0xFFFFFFFF)
        if t.kind == "INT":
            out += struct.pack(e + "I", (t.encoding & 0x0F) << 24 | (t.bits_offset & 0xFF) << 16
                               | (t.nr_bits & 0xFF))
        elif t.kind == "ARRAY":
            out += struct.pack(e + "III", t.type, t.index_type, t.nelems)
        elif t.kind in ("STRUCT", "UNION"):
            for m in t.members:
                off = (m.bitfield_size << 24 | m.bit_offset) if t.kflag else m.bit_offset
                out += struct.pack(e + "III", strings.name_off(m.name, m.name_off), m.type, off)
        elif t.kind == "ENUM":
            for v in t.values:
                out += struct.pack(e + "II", strings.name_off(v.name, v.name_off), v.value & 0xFFFFFFFF)
        elif t.kind == "ENUM64":
            for v in t.values:
                u = v.value & 0xFFFFFFFFFFFFFFFF
                out += struct.pack(e + "III", strings.name_off(v.name, v.name_off), u & 0xFFFFFFFF, u >> 32)
        elif t.kind == "FUNC_PROTO":
            for p in t.params:
                out += struct.pack(e + "II", strings.name_off(p.name, p.name_off), p.type)
        elif t.kind == "VAR":
            out += struct.pack(e + "I", t.linkage)
        elif t.kind == "DATASEC":
            for v in t.vars:
                out += struct.pack(e + "III", v.type, v.offset, v.size)
        elif t.kind == "DECL_TAG":
            out += struct.pack(e + "i", t.component_idx)
    str_data = bytes(strings.data)
    hdr = struct.pack(e + "HBBIIIII", BTF_MAGIC, BTF_VERSION, 0, BTF_HEADER_SIZE, 0, len(out), len(out),
                      len(str_data))
    return hdr + bytes(out) + str_data
