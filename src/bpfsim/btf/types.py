"""The BTF data model: kind numbers and names, and one dataclass per record kind.

Job: plain data, shared by the parser, the serialiser, the queries, the value codec and the
dumps.  Must not import anything of bpfsim above `errors` (and does not need that either).
A type is one `BtfType` whatever its kind (like the kernel's `struct btf_type`); the fields
a kind does not use keep their defaults.  Kind names are the strings bpftool prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# include/uapi/linux/btf.h: enum { BTF_KIND_* }
KIND_NAMES: tuple[str, ...] = (
    "UNKNOWN", "INT", "PTR", "ARRAY", "STRUCT", "UNION", "ENUM", "FWD", "TYPEDEF", "VOLATILE",
    "CONST", "RESTRICT", "FUNC", "FUNC_PROTO", "VAR", "DATASEC", "FLOAT", "DECL_TAG",
    "TYPE_TAG", "ENUM64",
)
KIND_IDS: dict[str, int] = {name: i for i, name in enumerate(KIND_NAMES)}

BTF_MAGIC = 0xEB9F
BTF_VERSION = 1
BTF_HEADER_SIZE = 24
MAX_VLEN = 0xFFFF
MAX_RESOLVE_DEPTH = 32          # kernel: btf.c MAX_RESOLVE_DEPTH

# BTF_INT_ENCODING bits
INT_SIGNED = 1
INT_CHAR = 2
INT_BOOL = 4

# BTF_FUNC_* / BTF_VAR_* linkage values (uapi btf.h)
LINKAGE_STATIC = 0
LINKAGE_GLOBAL = 1
LINKAGE_EXTERN = 2
LINKAGE_NAMES = {LINKAGE_STATIC: "static", LINKAGE_GLOBAL: "global", LINKAGE_EXTERN: "extern"}

# Kinds whose raw `size_type` word is a size, not a type id.
SIZED_KINDS = frozenset({"INT", "STRUCT", "UNION", "ENUM", "DATASEC", "FLOAT", "ENUM64"})
# Kinds whose `size_type` word refers to another type.
REF_KINDS = frozenset({"PTR", "TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "FUNC", "FUNC_PROTO",
                       "VAR", "DECL_TAG", "TYPE_TAG"})
# Kinds `Btf.resolve` looks through (libbpf btf__resolve_type minus VAR).
MODIFIER_KINDS = frozenset({"TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "TYPE_TAG"})


@dataclass
class Member:
    """A struct/union member; `bit_offset` from the start of the aggregate."""

    name: str
    type: int
    bit_offset: int
    bitfield_size: int = 0
    name_off: int = 0


@dataclass
class EnumValue:
    """One enumerator; `value` is signed or unsigned according to the enum's kflag."""

    name: str
    value: int
    name_off: int = 0


@dataclass
class Param:
    """A FUNC_PROTO parameter (`type` 0 with an empty name is the `...` of a varargs proto)."""

    name: str
    type: int
    name_off: int = 0


@dataclass
class VarSecinfo:
    """A DATASEC entry: the VAR type id, its byte offset and size in the section."""

    type: int
    offset: int
    size: int


@dataclass
class BtfType:
    """One BTF type record.  `kind` is the bpftool name ("STRUCT"), `kflag` the raw bit.

    Per kind: INT uses size/encoding/bits_offset/nr_bits; ARRAY type/index_type/nelems;
    STRUCT/UNION size/members; ENUM/ENUM64 size/values (kflag = signed); FWD kflag (= union);
    FUNC type/linkage; FUNC_PROTO type (return)/params; VAR type/linkage; DATASEC size/vars;
    FLOAT size; DECL_TAG type/component_idx; PTR/TYPEDEF/CONST/VOLATILE/RESTRICT/TYPE_TAG type.
    """

    kind: str
    name: str = ""
    size: int = 0
    type: int = 0
    kflag: bool = False
    encoding: int = 0
    bits_offset: int = 0
    nr_bits: int = 0
    index_type: int = 0
    nelems: int = 0
    members: list[Member] = field(default_factory=list)
    values: list[EnumValue] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)
    vars: list[VarSecinfo] = field(default_factory=list)
    linkage: int = 0
    component_idx: int = -1
    name_off: int = 0

    @property
    def kind_id(self) -> int:
        return KIND_IDS[self.kind]

    @property
    def vlen(self) -> int:
        """The `vlen` bpftool prints: the number of members/values/params/vars."""
        if self.kind in ("STRUCT", "UNION"):
            return len(self.members)
        if self.kind in ("ENUM", "ENUM64"):
            return len(self.values)
        if self.kind == "FUNC_PROTO":
            return len(self.params)
        if self.kind == "DATASEC":
            return len(self.vars)
        if self.kind == "FUNC":
            return self.linkage
        return 0

    @property
    def is_signed_enum(self) -> bool:
        return self.kind in ("ENUM", "ENUM64") and self.kflag

    @property
    def is_composite(self) -> bool:
        return self.kind in ("STRUCT", "UNION")


VOID = BtfType(kind="UNKNOWN", name="void")


@dataclass(frozen=True)
class SpecialField:
    """A kernel-managed field inside a map value (btf.c: btf_parse_fields)."""

    kind: str      # "bpf_timer", "bpf_spin_lock", "bpf_wq", "kptr", ...
    offset: int
    size: int
