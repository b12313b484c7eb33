"""The inert blueprint of a BPF object: `CollectionSpec`, `MapSpec`, `ProgramSpec`, `VariableSpec`.

Job: describe everything `Runtime.load` (or the kernel backend) needs, and nothing live.
Must not create maps, touch the OS, the clock or randomness: the same file always gives an
equal spec, and a spec can be edited (a `.rodata` variable, `max_entries`) before loading.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bpfsim.isa.insn import Instruction

if TYPE_CHECKING:
    from bpfsim.btf import Btf


# Kinds of symbolic references a program instruction carries until load time.
REF_MAP = "map"                # lddw src=BPF_PSEUDO_MAP_FD: the map itself
REF_MAP_VALUE = "map_value"    # lddw src=BPF_PSEUDO_MAP_VALUE: address of map value + offset
REF_KFUNC = "kfunc"            # call src=BPF_PSEUDO_KFUNC_CALL by name (resolved against vmlinux BTF)


@dataclass
class Reference:
    """A symbolic operand of instruction `insn` (a slot index into ProgramSpec.instructions)."""

    insn: int
    kind: str
    target: str        # map name or kfunc name
    offset: int = 0    # byte offset into the map value for REF_MAP_VALUE


@dataclass
class FuncInfo:
    """BTF.ext func_info after linking: the function starting at slot `insn`."""

    insn: int
    type_id: int
    name: str = ""


@dataclass
class LineInfo:
    """BTF.ext line_info after linking: source position of slot `insn`."""

    insn: int
    file: str
    line: str
    line_num: int
    col: int


@dataclass
class CoreRelo:
    """A BTF.ext CO-RE relocation after linking: instruction slot `insn` accesses `access`
    (e.g. "0:1:2") of local BTF type `type_id`; `kind` is enum bpf_core_relo_kind."""

    insn: int
    type_id: int
    access: str
    kind: int


@dataclass
class MapSpec:
    """A map as the object file describes it (BTF-defined `.maps`, global data, or inner template)."""

    name: str
    type: int                      # BPF_MAP_TYPE_*
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    numa_node: int = 0
    map_extra: int = 0
    pinning: int = 0               # 0 = none, 1 = LIBBPF_PIN_BY_NAME
    key_type_id: int = 0           # BTF ids in CollectionSpec.btf; 0 = no BTF
    value_type_id: int = 0
    inner: MapSpec | None = None   # map-in-map template
    # Initial contents: (key, value) raw bytes.  For PROG_ARRAY / *_OF_MAPS the value is the
    # *name* of the program or map (str), resolved at load time (libbpf's `.values = {...}`).
    contents: list[tuple[bytes, bytes | str]] = field(default_factory=list)
    freeze: bool = False           # `.rodata`: frozen after its contents are written
    section: str = ""              # ".maps", ".rodata", ".data", ".bss", ".rodata.str1.1", ...
    is_global_data: bool = False   # an internal map built from a data section
    # The name BPF_MAP_CREATE gets (<= 15 chars): libbpf's internal_map_name() for global data
    # ("<obj>.rodata", ".rodata.str1.1"), the truncated symbol name otherwise.
    kernel_name: str = ""

    def copy(self) -> MapSpec:
        return copy.deepcopy(self)

    @property
    def initial_value(self) -> bytes:
        """For global-data maps: the single value (key 0)."""
        for k, v in self.contents:
            if k == b"\0\0\0\0" and isinstance(v, bytes):
                return v
        return bytes(self.value_size)


@dataclass
class ProgramSpec:
    """A program with its subprograms already linked in, as libbpf does before BPF_PROG_LOAD."""

    name: str
    section: str
    type: int                      # BPF_PROG_TYPE_*
    expected_attach_type: int = 0
    attach_to: str = ""            # what the section names after the prefix ("kprobe/do_sys_open")
    instructions: list[Instruction] = field(default_factory=list)   # one entry per 8-byte slot
    references: list[Reference] = field(default_factory=list)
    license: str = ""
    kernel_version: int = 0
    sleepable: bool = False
    flags: int = 0                 # prog_flags (BPF_F_SLEEPABLE, BPF_F_XDP_HAS_FRAGS, ...)
    func_info: list[FuncInfo] = field(default_factory=list)
    line_info: list[LineInfo] = field(default_factory=list)
    subprogram_starts: dict[str, int] = field(default_factory=dict)  # name -> slot, incl. entry 0
    btf_func_id: int = 0           # BTF FUNC id of the entry point (0 without BTF)
    autoload: bool = True          # False for SEC("?...") (libbpf: bpf_program__set_autoload)
    core_relos: list[CoreRelo] = field(default_factory=list)

    def copy(self) -> ProgramSpec:
        return copy.deepcopy(self)


@dataclass
class VariableSpec:
    """A global variable in a data section; editing `.value` rewrites the section's MapSpec."""

    name: str
    map_name: str                  # the global-data map holding it (".rodata", ".data", ...)
    offset: int
    size: int
    type_id: int = 0
    collection: Any = field(default=None, repr=False, compare=False)

    def _map(self) -> MapSpec:
        return self.collection.maps[self.map_name]

    @property
    def raw(self) -> bytes:
        data = self._map().initial_value
        return data[self.offset:self.offset + self.size]

    @raw.setter
    def raw(self, data: bytes) -> None:
        from bpfsim.errors import UsageError

        if len(data) != self.size:
            raise UsageError(f"variable {self.name} is {self.size} bytes, got {len(data)}")
        m = self._map()
        buf = bytearray(m.initial_value)
        buf[self.offset:self.offset + self.size] = data
        m.contents = [(b"\0\0\0\0", bytes(buf))]

    @property
    def value(self) -> Any:
        """The value decoded through BTF (an int for integers, a dict for structs...)."""
        btf = self.collection.btf
        if btf is None or not self.type_id:
            return self.raw
        return btf.decode(self.type_id, self.raw)

    @value.setter
    def value(self, new: Any) -> None:
        btf = self.collection.btf
        if isinstance(new, (bytes, bytearray)):
            self.raw = bytes(new)
        elif btf is None or not self.type_id:
            self.raw = int(new).to_bytes(self.size, self.collection.byteorder, signed=int(new) < 0)
        else:
            self.raw = btf.encode(self.type_id, new)


@dataclass
class CollectionSpec:
    """Everything in one object file: maps, programs, variables, BTF, license."""

    maps: dict[str, MapSpec] = field(default_factory=dict)
    programs: dict[str, ProgramSpec] = field(default_factory=dict)
    variables: dict[str, VariableSpec] = field(default_factory=dict)
    btf: Btf | None = field(default=None, compare=False, repr=False)
    license: str = ""
    kernel_version: int = 0
    byteorder: str = "little"
    path: str = ""
    name: str = ""                 # libbpf's object name: file name up to the first "."

    def __post_init__(self) -> None:
        for v in self.variables.values():
            v.collection = self

    def copy(self) -> CollectionSpec:
        new = copy.deepcopy(self)
        for v in new.variables.values():
            v.collection = new
        return new
