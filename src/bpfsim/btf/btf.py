"""`Btf`: a parsed `.BTF` section and the queries loaders, maps and the verifier need.

Job: type lookup by id and name, modifier resolution, sizes (btf.c: btf_resolve_size), the
libbpf DATASEC fixup, and the entry points of the value codec (`values`) and of the special
field scan (`fields`).  Must not import anything of bpfsim above `errors`, and must not touch
the OS: ELF sizes and symbol values arrive as arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bpfsim.btf import values
from bpfsim.btf.fields import FieldRecord, btf_load_error, parse_fields
from bpfsim.btf.parse import StringTable, parse_btf, serialize_btf
from bpfsim.btf.types import KIND_IDS, MAX_RESOLVE_DEPTH, MODIFIER_KINDS, VOID, BtfType, SpecialField
from bpfsim.errors import LinkError, UsageError

POINTER_SIZE = 8
_C_PREFIX = {"STRUCT": "struct ", "UNION": "union ", "ENUM": "enum ", "ENUM64": "enum "}


class Btf:
    """A BTF type graph.  `types[0]` is void; a type id is an index into `types`."""

    def __init__(self, types: list[BtfType] | None = None, strings: StringTable | None = None,
                 byteorder: str = "little") -> None:
        self.types: list[BtfType] = types if types is not None else [VOID]
        self.strings = strings if strings is not None else StringTable()
        self.byteorder = byteorder

    # -- construction -------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes, byteorder: str = "little") -> Btf:
        """Parse a raw `.BTF` section; malformed input raises `ParseError`."""
        types, strings = parse_btf(data, byteorder)
        return cls(types, strings, byteorder)

    def to_bytes(self) -> bytes:
        """Serialise (byte-identical to the input when nothing was changed)."""
        return serialize_btf(self.types, self.strings, self.byteorder)

    def add(self, t: BtfType) -> int:
        """Append a type (its references must already exist or follow); returns its id."""
        self.types.append(t)
        return len(self.types) - 1

    # -- lookups ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.types)

    def type(self, tid: int) -> BtfType:
        if not isinstance(tid, int) or tid < 0 or tid >= len(self.types):
            raise LinkError(f"no BTF type with id {tid} (this BTF has {len(self.types) - 1} types)")
        return self.types[tid]

    def name_of(self, tid: int) -> str:
        return self.type(tid).name

    def kind_of(self, tid: int) -> str:
        return "void" if tid == 0 else self.type(tid).kind

    def find(self, name: str, kind: str | None = None) -> int:
        """The first type id called `name` (of `kind`, e.g. "STRUCT"); LinkError if absent."""
        if kind is not None and kind not in KIND_IDS:
            raise UsageError(f"unknown BTF kind {kind!r}")
        for tid, t in enumerate(self.types):
            if tid and t.name == name and (kind is None or t.kind == kind):
                return tid
        raise LinkError(f"BTF has no {kind + ' ' if kind else 'type '}'{name}'")

    def find_datasec(self, name: str) -> int:
        """The DATASEC of ELF section `name` (".bss", ".rodata", ".maps", ...)."""
        return self.find(name, "DATASEC")

    def decl_tags(self, tid: int, component_idx: int = -1) -> list[str]:
        """Values of btf_decl_tag attributes on `tid` (or its member/param `component_idx`)."""
        return [t.name for t in self.types
                if t.kind == "DECL_TAG" and t.type == tid and t.component_idx == component_idx]

    def resolve(self, tid: int) -> int:
        """Skip typedef/volatile/const/restrict/type_tag (libbpf btf__resolve_type minus VAR)."""
        for _ in range(len(self.types) + 1):
            t = self.type(tid)
            if tid == 0 or t.kind not in MODIFIER_KINDS:
                return tid
            tid = t.type
        raise LinkError(f"BTF modifier loop at type {tid}")  # parse_btf rejects loops already

    def resolved(self, tid: int) -> BtfType:
        return self.type(self.resolve(tid))

    def size_of(self, tid: int) -> int:
        """Byte size by the kernel's rules (btf.c: __btf_resolve_size): modifiers are skipped,
        arrays multiply, pointers are 8 bytes; FUNC, FUNC_PROTO, FWD, VAR and void have none."""
        nelems = 1
        for _ in range(MAX_RESOLVE_DEPTH + len(self.types)):
            t = self.type(tid)
            if tid and t.kind in MODIFIER_KINDS:
                tid = t.type
            elif t.kind == "ARRAY":
                nelems *= t.nelems
                tid = t.type
            else:
                break
        else:  # pragma: no cover - parse_btf rejects loops
            raise LinkError(f"BTF type {tid}: reference loop")
        if tid and t.kind in ("INT", "STRUCT", "UNION", "ENUM", "DATASEC", "FLOAT", "ENUM64"):
            return nelems * t.size
        if tid and t.kind == "PTR":
            return nelems * POINTER_SIZE
        raise UsageError(f"BTF type [{tid}] {self.kind_of(tid)} '{self.name_of(tid)}' has no size")

    def describe(self, tid: int) -> str:
        """A short C-like name for messages: "struct rich", "int", "u32_t", "char *"."""
        suffix = ""
        for _ in range(MAX_RESOLVE_DEPTH):
            t = self.type(tid)
            if tid == 0:
                return "void" + suffix
            prefix = _C_PREFIX.get(t.kind, "")
            if t.name:
                return prefix + t.name + suffix
            if t.kind == "PTR":
                suffix = " *" + suffix
            elif t.kind == "ARRAY":
                suffix = f"[{t.nelems}]" + suffix
            elif t.kind in MODIFIER_KINDS:
                pass
            else:
                return f"{prefix}(anon {t.kind} [{tid}])" + suffix
            tid = t.type
        return "(deep type)" + suffix

    # -- libbpf fixups ------------------------------------------------------------------

    def fixup_datasec(self, section: str | int, section_size: int | None,
                      symbols: Mapping[str, int], hidden: Iterable[str] = ()) -> None:
        """libbpf.c: btf_fixup_datasec.  clang leaves a DATASEC's size and its non-static VAR
        offsets 0; libbpf sets the size from the ELF section (when it is still 0) and each
        global VAR's offset from its ELF symbol value, demotes STV_HIDDEN/INTERNAL globals
        (`hidden`) to static linkage, and sorts the entries by offset.  `.kconfig`/`.ksyms`
        are left alone (libbpf lays those out itself).  The section's role -- `.rodata` becomes
        a frozen BPF_F_RDONLY_PROG map, `.bss` a zero-filled one -- is the loader's business,
        not BTF's: the fixup is the same for every data section."""
        tid = section if isinstance(section, int) else self.find_datasec(section)
        t = self.type(tid)
        if t.kind != "DATASEC":
            raise UsageError(f"type [{tid}] is a {t.kind}, not a DATASEC")
        if t.name in (".kconfig", ".ksyms"):
            return
        hidden = set(hidden)
        fixup_offsets = False
        if t.size == 0:
            if not section_size:
                raise LinkError(f"sec '{t.name}': failed to determine size from ELF: size "
                                f"{section_size or 0}")
            t.size = section_size
            fixup_offsets = True
        for vsi in t.vars:
            var = self.type(vsi.type)
            if var.kind != "VAR":
                raise LinkError(f"sec '{t.name}': unexpected non-VAR type found")
            if var.linkage in (0, 2):        # BTF_VAR_STATIC, BTF_VAR_GLOBAL_EXTERN
                continue
            if var.name not in symbols:
                raise LinkError(f"sec '{t.name}': failed to find ELF symbol for VAR '{var.name}'")
            if fixup_offsets:
                vsi.offset = symbols[var.name]
            if var.name in hidden:
                var.linkage = 0
        t.vars.sort(key=lambda v: v.offset)

    # -- map values ---------------------------------------------------------------------

    def field_record(self, tid: int, value_size: int | None = None) -> FieldRecord:
        """The kernel's `btf_record` for a map value type (btf.c: btf_parse_fields).
        See `FieldRecord` (btf/fields.py) for what `.valid` False means."""
        return parse_fields(self, tid, value_size)

    def load_error(self) -> tuple[int, str] | None:
        """(errno, reason) if BPF_BTF_LOAD would refuse this BTF in its struct scan
        (btf.c: btf_parse_struct_metas), else None.  See `fields.btf_load_error`."""
        return btf_load_error(self)

    def special_fields(self, tid: int, value_size: int | None = None) -> list[SpecialField]:
        """The special fields the kernel manages in a value of type `tid`, sorted by offset;
        empty when there are none *or* when the record is invalid (two timers...), because
        the kernel then treats the map as having none (syscall.c: map_check_btf)."""
        rec = self.field_record(tid, value_size)
        return list(rec.fields) if rec.valid else []

    def decode(self, tid: int, data: bytes) -> Any:
        """Bytes -> the value bpftool prints under "formatted" (see `bpfsim.btf.values`)."""
        return values.decode(self, tid, data)

    def encode(self, tid: int, value: Any) -> bytes:
        """The inverse of `decode`; UsageError when `value` does not fit the type."""
        return values.encode(self, tid, value)
