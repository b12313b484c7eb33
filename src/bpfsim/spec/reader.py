"""`load_spec`: an ELF BPF object -> `CollectionSpec`, the way libbpf's bpf_object__open does it.

Job: run fixed, ordered stages -- read ELF, load BTF, read license, load maps (BTF-defined
`.maps`), load global data (`.data*`, `.rodata*`, `.bss*`), load programs, link programs
(BPF-to-BPF calls, callbacks, map and data references, func/line info, CO-RE records),
fill initial `.values` -- and prefix every error with its stage ("load maps: ...").  The
same bytes always give an equal spec.

Must not create anything live (no maps, no fds, no OS access beyond reading the file) and
must not import `verifier`, `vm`, `runtime` or `kernel`.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bpfsim.elf.reader import (
    R_BPF_64_32,
    R_BPF_64_64,
    R_BPF_64_ABS64,
    SHN_LORESERVE,
    SHN_UNDEF,
    SHT_NOBITS,
    SHT_PROGBITS,
    STB_GLOBAL,
    STB_LOCAL,
    STB_WEAK,
    STT_FUNC,
    STT_OBJECT,
    STT_SECTION,
    STV_HIDDEN,
    STV_INTERNAL,
    ElfObject,
    Relocation,
    Section,
    Symbol,
    read_elf,
)
from bpfsim.errors import LinkError, NotSupported, ParseError, UsageError
from bpfsim.isa.insn import INSN_SIZE, Instruction, decode_slots
from bpfsim.spec.collection import (
    REF_KFUNC,
    REF_MAP,
    REF_MAP_VALUE,
    CollectionSpec,
    CoreRelo,
    FuncInfo,
    LineInfo,
    MapSpec,
    ProgramSpec,
    Reference,
    VariableSpec,
)
from bpfsim.spec.kconfig import KCONFIG_SEC, kconfig_layout
from bpfsim.uapi.constants import (
    BPF_F_MMAPABLE,
    BPF_F_RDONLY_PROG,
    BPF_OBJ_NAME_LEN,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_PSEUDO_KFUNC_CALL,
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_VALUE,
    LIBBPF_PIN_BY_NAME,
    LIBBPF_PIN_NONE,
    MapType,
    ProgType,
)
from bpfsim.uapi.sections import SectionDef, lookup_section

if TYPE_CHECKING:
    from bpfsim.btf import Btf

MAPS_SEC = ".maps"
TEXT_SEC = ".text"
LICENSE_SEC = "license"
VERSION_SEC = "version"
LICENSE_MAX = 64                 # libbpf: char license[64]
_OPC_CALL = 0x85
_OPC_LDDW = 0x18
_MAP_IN_MAP = (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS)
# Errors a stage may hit on malformed input that are not already BpfErrors.
_INPUT_ERRORS = (IndexError, KeyError, ValueError, struct.error, OverflowError, UsageError,
                 UnicodeDecodeError, RecursionError)


def load_spec(source: str | os.PathLike[str] | bytes | bytearray | memoryview, *,
              name: str | None = None, allow_unknown_sections: bool = False,
              kconfig: Mapping[str, object] | None = None) -> CollectionSpec:
    """Read a BPF ELF object (path or bytes) into an editable `CollectionSpec`.

    `name` is the object name libbpf would use (default: the file name up to its first "."),
    which prefixes the kernel names of global-data maps ("prog.rodata").
    A program in a section libbpf does not know is an error, unless `allow_unknown_sections`
    is set: it then gets type BPF_PROG_TYPE_UNSPEC (like cilium/ebpf's UnspecifiedProgram),
    useful for raw objects such as the uBPF-style benchmark builds.
    `kconfig` gives values for `extern ... CONFIG_* __kconfig` variables (libbpf reads them
    from the running kernel's config; the `LINUX_*` virtual externs describe Linux 6.18).
    Raises ParseError for malformed input and LinkError for references that do not resolve;
    every message starts with the stage that failed.
    """
    path = "" if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
    if name is None:
        name = os.path.basename(path).split(".", 1)[0] if path else ""
    return _Loader(source, path, name, allow_unknown_sections, kconfig).run()


@contextmanager
def _stage(label: str) -> Iterator[None]:
    """Prefix any error raised inside with the stage name (cilium/ebpf style)."""
    try:
        yield
    except ParseError as e:
        raise ParseError(f"{label}: {e.message}", offset=e.offset, section=e.section,
                         insn=e.insn) from e
    except LinkError as e:
        raise LinkError(f"{label}: {e}") from e
    except _INPUT_ERRORS as e:
        raise ParseError(f"{label}: malformed input: {type(e).__name__}: {e}") from e


def internal_map_name(obj_name: str, real_name: str) -> str:
    """libbpf.c: internal_map_name -- the kernel name of a global-data map.

    ".rodata" of object "counter" -> "counter.rodata" (object name cut so the whole fits in 15
    characters); a section name with a second dot (".rodata.str1.1", ".data.custom") is used
    alone, cut to 15 characters; characters other than [A-Za-z0-9_.] become "_".
    """
    sfx_len = min(max(7, len(real_name)), BPF_OBJ_NAME_LEN - 1)
    if "." in real_name[1:]:
        pfx_len = 0
    else:
        pfx_len = min(BPF_OBJ_NAME_LEN - sfx_len - 1, len(obj_name))
    raw = (obj_name[:pfx_len] + real_name[:sfx_len])[:BPF_OBJ_NAME_LEN - 1]
    return "".join(c if (c.isascii() and c.isalnum()) or c in "_." else "_" for c in raw)


@dataclass
class _Func:
    """One function symbol in an executable section: a program or a subprogram."""

    name: str
    section: Section
    start: int                   # first slot within the section
    count: int                   # slots
    symbol: Symbol
    insns: list[Instruction] = field(default_factory=list)
    relos: dict[int, Relocation] = field(default_factory=dict)   # local slot -> relocation

    @property
    def key(self) -> tuple[int, int]:
        return (self.section.index, self.start)


@dataclass
class _DataMap:
    """A global-data map under construction, tied to its ELF section."""

    section: Section
    spec: MapSpec


class _Loader:
    """One run of the stages over one object (keeps the intermediate tables)."""

    def __init__(self, source: Any, path: str, obj_name: str, allow_unknown: bool,
                 kconfig: Mapping[str, object] | None) -> None:
        self.source = source
        self.allow_unknown = allow_unknown
        self.kconfig_values = kconfig
        self.kconfig: dict[str, int] = {}                    # extern name -> .kconfig offset
        self.path = path
        self.obj_name = obj_name
        self.elf: ElfObject
        self.btf: Btf | None = None
        self.ext: Any = None
        self.spec = CollectionSpec(path=path, name=obj_name)
        self.btf_maps: dict[tuple[int, int], str] = {}       # (shndx, offset) -> map name
        self.btf_map_ranges: list[tuple[int, int, str, int]] = []  # (offset, size, name, def id)
        self.data_maps: dict[int, _DataMap] = {}            # shndx -> global-data map
        self.funcs: dict[tuple[int, int], _Func] = {}
        self._by_section: dict[int, list[_Func]] = {}
        self.text_index = -1

    def run(self) -> CollectionSpec:
        stages: list[tuple[str, Callable[[], None]]] = [
            ("read ELF", self.read_elf),
            ("load BTF", self.load_btf),
            ("load license", self.load_license),
            ("load maps", self.load_maps),
            ("load global data", self.load_global_data),
            ("load programs", self.load_programs),
            ("link programs", self.link_programs),
            ("load map values", self.load_map_values),
        ]
        for label, fn in stages:
            with _stage(label):
                fn()
        self.spec.__post_init__()
        return self.spec

    # -- stage: ELF -----------------------------------------------------------------------

    def read_elf(self) -> None:
        self.elf = read_elf(self.source)
        self.spec.byteorder = self.elf.byteorder
        text = self.elf.section(TEXT_SEC)
        self.text_index = text.index if text is not None and text.is_exec else -1

    def _symbols_in(self, shndx: int) -> list[Symbol]:
        return [s for s in self.elf.symbols if s.shndx == shndx and s.name
                and s.type != STT_SECTION]

    # -- stage: BTF -----------------------------------------------------------------------

    def load_btf(self) -> None:
        """Parse `.BTF` (and `.BTF.ext`), then libbpf's btf_fixup_datasec for each DATASEC."""
        sec = self.elf.section(".BTF")
        if sec is None:
            return
        from bpfsim.btf import Btf

        btf = Btf.parse(sec.data, self.elf.byteorder)
        for t in btf.types[1:]:
            if t.kind != "DATASEC":
                continue
            elf_sec = self.elf.section(t.name)
            if elf_sec is None and t.name not in (".kconfig", ".ksyms"):
                raise ParseError(f"DATASEC '{t.name}' has no ELF section", section=".BTF")
            symbols: dict[str, int] = {}
            hidden: list[str] = []
            if elf_sec is not None:
                for s in self._symbols_in(elf_sec.index):
                    if s.bind in (STB_GLOBAL, STB_WEAK):
                        symbols[s.name] = s.value
                        if s.visibility in (STV_HIDDEN, STV_INTERNAL):
                            hidden.append(s.name)
                    else:
                        symbols.setdefault(s.name, s.value)
            btf.fixup_datasec(btf.types.index(t), elf_sec.size if elf_sec else 0, symbols, hidden)
        self.btf = btf
        self.spec.btf = btf
        ext_sec = self.elf.section(".BTF.ext")
        if ext_sec is not None:
            from bpfsim.btf.ext import BtfExt

            self.ext = BtfExt.parse(ext_sec.data, btf, self.elf.byteorder)

    # -- stage: license -------------------------------------------------------------------

    def load_license(self) -> None:
        """libbpf: bpf_object__init_license / init_kversion.  A missing license section is
        legal (the kernel then treats every program as non-GPL, and the verifier refuses
        GPL-only helpers); a license that is not a NUL-terminated string is refused."""
        sec = self.elf.section(LICENSE_SEC)
        if sec is not None:
            nul = sec.data.find(b"\0")
            if nul < 0:
                raise ParseError("license is not a NUL-terminated string", section=LICENSE_SEC)
            self.spec.license = sec.data[:min(nul, LICENSE_MAX - 1)].decode("ascii", "replace")
        ver = self.elf.section(VERSION_SEC)
        if ver is not None:
            if ver.size != 4:
                raise ParseError(f"invalid kver section size {ver.size}", section=VERSION_SEC)
            self.spec.kernel_version = int.from_bytes(ver.data, self.elf.byteorder)

    # -- stage: BTF-defined maps -----------------------------------------------------------

    def load_maps(self) -> None:
        """libbpf.c: bpf_object__init_user_btf_maps / parse_btf_map_def."""
        if self.elf.section("maps") is not None:
            # libbpf.c: bpf_object__elf_collect refuses `struct bpf_map_def SEC("maps")`
            raise ParseError("legacy map definitions in 'maps' section are not supported by "
                             "libbpf v1.0+", section="maps")
        for name in (".struct_ops", ".struct_ops.link"):
            if self.elf.section(name) is not None:
                raise NotSupported("struct_ops maps", detail=f"section '{name}'")
        sec = self.elf.section(MAPS_SEC)
        if sec is None:
            return
        if self.btf is None:
            raise ParseError("'.maps' section needs BTF (compile with -g)", section=MAPS_SEC)
        try:
            ds_id = self.btf.find_datasec(MAPS_SEC)
        except LinkError:
            raise ParseError("DATASEC '.maps' not found", section=MAPS_SEC) from None
        datasec = self.btf.type(ds_id)
        btf = self.btf
        for i, vsi in enumerate(datasec.vars):
            var = btf.type(vsi.type)
            map_name = var.name
            if not map_name:
                raise ParseError(f"map #{i}: empty name", section=MAPS_SEC)
            if vsi.offset + vsi.size > sec.size:
                raise ParseError(f"map '{map_name}' BTF data is corrupted", section=MAPS_SEC)
            if var.kind != "VAR":
                raise ParseError(f"map '{map_name}': unexpected var kind {var.kind}", section=MAPS_SEC)
            if var.linkage != 1:      # BTF_VAR_GLOBAL_ALLOCATED
                raise ParseError(f"map '{map_name}': unsupported map linkage "
                                 f"{_LINKAGE.get(var.linkage, var.linkage)}", section=MAPS_SEC)
            def_t = btf.resolved(var.type)
            if def_t.kind != "STRUCT":
                raise ParseError(f"map '{map_name}': unexpected def kind {def_t.kind}",
                                 section=MAPS_SEC)
            if def_t.size > vsi.size:
                raise ParseError(f"map '{map_name}': invalid def size", section=MAPS_SEC)
            if map_name in self.spec.maps:
                raise ParseError(f"map '{map_name}' defined twice", section=MAPS_SEC)
            spec = self._parse_map_def(map_name, btf.resolve(var.type), is_inner=False)
            spec.section = MAPS_SEC
            spec.kernel_name = map_name[:BPF_OBJ_NAME_LEN - 1]
            self.spec.maps[map_name] = spec
            self.btf_maps[(sec.index, vsi.offset)] = map_name
            self.btf_map_ranges.append((vsi.offset, vsi.size, map_name, btf.resolve(var.type)))

    def _map_int(self, map_name: str, m: Any) -> int:
        """libbpf.c: get_map_field_int -- `__uint(name, N)` is `int (*name)[N]`."""
        btf = self.btf
        assert btf is not None
        t = btf.resolved(m.type)
        if t.kind != "PTR":
            raise ParseError(f"map '{map_name}': attr '{m.name}': expected PTR, got {t.kind}",
                             section=MAPS_SEC)
        arr = btf.type(t.type)
        if arr.kind != "ARRAY":
            raise ParseError(f"map '{map_name}': attr '{m.name}': expected ARRAY, got {arr.kind}",
                             section=MAPS_SEC)
        return arr.nelems

    def _map_type_size(self, map_name: str, m: Any, what: str) -> tuple[int, int]:
        """`__type(key, T)` is `T *key`: returns (sizeof(T), T's id)."""
        btf = self.btf
        assert btf is not None
        t = btf.type(m.type)
        if t.kind != "PTR":
            raise ParseError(f"map '{map_name}': {what} spec is not PTR: {t.kind}", section=MAPS_SEC)
        try:
            size = btf.size_of(t.type)
        except (UsageError, LinkError):
            raise ParseError(f"map '{map_name}': can't determine {what} size for type [{t.type}]",
                             section=MAPS_SEC) from None
        return size, t.type

    def _parse_map_def(self, map_name: str, def_id: int, *, is_inner: bool) -> MapSpec:
        """libbpf.c: parse_btf_map_def (strict mode: unknown fields are refused)."""
        btf = self.btf
        assert btf is not None
        d = btf.type(def_id)
        spec = MapSpec(name=map_name, type=0, key_size=0, value_size=0, max_entries=0)
        err = lambda msg: ParseError(f"map '{map_name}': {msg}", section=MAPS_SEC)  # noqa: E731
        n = len(d.members)
        for i, m in enumerate(d.members):
            if not m.name:
                raise err(f"invalid field #{i}")
            if m.name == "type":
                spec.type = self._map_int(map_name, m)
            elif m.name == "max_entries":
                spec.max_entries = self._map_int(map_name, m)
            elif m.name == "map_flags":
                spec.flags = self._map_int(map_name, m)
            elif m.name == "numa_node":
                spec.numa_node = self._map_int(map_name, m)
            elif m.name == "map_extra":
                spec.map_extra = self._map_int(map_name, m)
            elif m.name in ("key_size", "value_size"):
                sz = self._map_int(map_name, m)
                what = m.name[:-5]
                old = getattr(spec, m.name)
                if old and old != sz:
                    raise err(f"conflicting {what} size {old} != {sz}")
                setattr(spec, m.name, sz)
            elif m.name in ("key", "value"):
                sz, tid = self._map_type_size(map_name, m, m.name)
                old = getattr(spec, m.name + "_size")
                if old and old != sz:
                    raise err(f"conflicting {m.name} size {old} != {sz}")
                setattr(spec, m.name + "_size", sz)
                setattr(spec, m.name + "_type_id", tid)
            elif m.name == "values":
                self._parse_map_values_def(spec, m, i, n, is_inner, err)
            elif m.name == "pinning":
                if is_inner:
                    raise err("inner def can't be pinned")
                val = self._map_int(map_name, m)
                if val not in (LIBBPF_PIN_NONE, LIBBPF_PIN_BY_NAME):
                    raise err(f"invalid pinning value {val}")
                spec.pinning = val
            else:
                raise err(f"unknown field '{m.name}'")
        if spec.type == 0:
            raise err("map type isn't specified")
        if spec.type not in MapType._value2member_map_:
            raise err(f"unknown map type {spec.type}")
        return spec

    def _parse_map_values_def(self, spec: MapSpec, m: Any, i: int, n: int, is_inner: bool,
                              err: Callable[[str], ParseError]) -> None:
        btf = self.btf
        assert btf is not None
        is_mim = spec.type in _MAP_IN_MAP
        is_prog_array = spec.type == MapType.PROG_ARRAY
        desc = "map-in-map inner" if is_mim else "prog-array value"
        if is_inner:
            raise err("multi-level inner maps not supported")
        if i != n - 1:
            raise err(f"'{m.name}' member should be last")
        if not is_mim and not is_prog_array:
            raise err("should be map-in-map or prog-array")
        if spec.value_size and spec.value_size != 4:
            raise err(f"conflicting value size {spec.value_size} != 4")
        spec.value_size = 4
        t = btf.type(m.type)
        if t.kind != "ARRAY" or t.nelems:
            raise err(f"{desc} spec is not a zero-sized array")
        t = btf.resolved(t.type)
        if t.kind != "PTR":
            raise err(f"{desc} def is of unexpected kind {t.kind}")
        t_id = btf.resolve(t.type)
        t = btf.type(t_id)
        if is_prog_array:
            if t.kind != "FUNC_PROTO":
                raise err(f"prog-array value def is of unexpected kind {t.kind}")
            return
        if t.kind != "STRUCT":
            raise err(f"map-in-map inner def is of unexpected kind {t.kind}")
        inner = self._parse_map_def(f"{spec.name}.inner", t_id, is_inner=True)
        inner.kernel_name = inner.name[:BPF_OBJ_NAME_LEN - 1]
        inner.section = MAPS_SEC
        spec.inner = inner

    # -- stage: global data ---------------------------------------------------------------

    def load_global_data(self) -> None:
        """libbpf.c: bpf_object__init_global_data_maps -- one single-element ARRAY per
        non-empty `.data*`, `.rodata*` and `.bss*` section, plus a VariableSpec per variable."""
        for sec in self.elf.sections:
            kind = _data_kind(sec)
            if kind is None or sec.size == 0:
                continue
            btf_value_id = 0
            mmapable = False
            datasec = None
            if self.btf is not None:
                try:
                    btf_value_id = self.btf.find_datasec(sec.name)
                    datasec = self.btf.type(btf_value_id)
                except LinkError:
                    btf_value_id = 0
            if datasec is not None:
                # libbpf.c: map_is_mmapable -- any non-static variable makes it mmapable
                mmapable = any(self.btf.type(v.type).kind == "VAR"  # type: ignore[union-attr]
                               and self.btf.type(v.type).linkage != 0  # type: ignore[union-attr]
                               for v in datasec.vars)
            flags = BPF_F_RDONLY_PROG if kind == "rodata" else 0
            if mmapable:
                flags |= BPF_F_MMAPABLE
            spec = MapSpec(name=sec.name, type=int(MapType.ARRAY), key_size=4, value_size=sec.size,
                           max_entries=1, flags=flags, value_type_id=btf_value_id,
                           contents=[(b"\0\0\0\0", bytes(sec.data))], freeze=kind == "rodata",
                           section=sec.name, is_global_data=True,
                           kernel_name=internal_map_name(self.obj_name, sec.name))
            if sec.name in self.spec.maps:
                raise ParseError(f"map '{sec.name}' defined twice", section=sec.name)
            self.spec.maps[sec.name] = spec
            self.data_maps[sec.index] = _DataMap(sec, spec)
            self._add_variables(sec, spec, datasec)
        self._load_kconfig()

    def _load_kconfig(self) -> None:
        """libbpf.c: bpf_object__collect_externs + bpf_object__init_kconfig_map."""
        if self.btf is None:
            return
        try:
            ds_id = self.btf.find_datasec(KCONFIG_SEC)
        except LinkError:
            return
        weak = {s.name: s.bind == STB_WEAK for s in self.elf.symbols if s.shndx == SHN_UNDEF}
        externs, data = kconfig_layout(self.btf, weak, self.kconfig_values, self.elf.byteorder)
        if not externs:
            return
        spec = MapSpec(name=KCONFIG_SEC, type=int(MapType.ARRAY), key_size=4,
                       value_size=len(data), max_entries=1,
                       flags=BPF_F_RDONLY_PROG | BPF_F_MMAPABLE, value_type_id=ds_id,
                       contents=[(b"\0\0\0\0", data)], freeze=True, section=KCONFIG_SEC,
                       is_global_data=True,
                       kernel_name=internal_map_name(self.obj_name, KCONFIG_SEC))
        self.spec.maps[KCONFIG_SEC] = spec
        for e in externs:
            self.kconfig[e.name] = e.offset
            self.spec.variables.setdefault(e.name, VariableSpec(e.name, KCONFIG_SEC, e.offset,
                                                                e.size, e.type_id))

    def _add_variables(self, sec: Section, spec: MapSpec, datasec: Any) -> None:
        if datasec is not None:
            assert self.btf is not None
            for v in datasec.vars:
                var = self.btf.type(v.type)
                if var.kind != "VAR" or not var.name:
                    continue
                if v.offset + v.size > sec.size:
                    raise ParseError(f"variable '{var.name}' at {v.offset}+{v.size} is outside "
                                     f"its section", section=sec.name)
                self.spec.variables.setdefault(var.name, VariableSpec(
                    var.name, spec.name, v.offset, v.size, var.type))
            return
        for s in sorted(self._symbols_in(sec.index), key=lambda s: (s.value, s.name)):
            if s.type == STT_OBJECT and s.size and s.value + s.size <= sec.size:
                self.spec.variables.setdefault(s.name, VariableSpec(s.name, spec.name, s.value,
                                                                    s.size))

    # -- stage: programs ------------------------------------------------------------------

    def load_programs(self) -> None:
        """libbpf.c: bpf_object__add_programs -- every STT_FUNC symbol in an executable
        section is a program, except in `.text`, whose functions are subprograms."""
        for sec in self.elf.sections:
            if not (sec.is_exec and sec.size > 0):
                continue
            if sec.size % INSN_SIZE:
                raise ParseError(f"section size {sec.size} is not a multiple of {INSN_SIZE}",
                                 section=sec.name)
            slots = decode_slots(sec.data, self.elf.byteorder)
            syms = sorted((s for s in self.elf.symbols if s.shndx == sec.index
                           and s.type == STT_FUNC), key=lambda s: (s.value, s.name))
            for s in syms:
                if not s.name:
                    raise ParseError(f"sec '{sec.name}': program with empty name", section=sec.name)
                if s.value % INSN_SIZE or s.size % INSN_SIZE or s.value + s.size > sec.size:
                    raise ParseError(f"sec '{sec.name}': program '{s.name}' at offset {s.value} "
                                     f"crosses section boundary", section=sec.name)
                if sec.index != self.text_index and s.bind == STB_LOCAL:
                    raise ParseError(f"sec '{sec.name}': program '{s.name}' is static and not "
                                     f"supported", section=sec.name)
                start, count = s.value // INSN_SIZE, s.size // INSN_SIZE
                if count == 0:
                    raise ParseError(f"sec '{sec.name}': program '{s.name}' is empty",
                                     section=sec.name)
                if (sec.index, start) in self.funcs:
                    raise ParseError(f"sec '{sec.name}': two functions at offset {s.value}",
                                     section=sec.name)
                insns = slots[start:start + count]
                if insns[0].lddw_tail or (start + count < len(slots)
                                          and slots[start + count].lddw_tail):
                    raise ParseError(f"sec '{sec.name}': program '{s.name}' splits a lddw",
                                     section=sec.name)
                self.funcs[(sec.index, start)] = _Func(s.name, sec, start, count, s, insns)
            for r in sec.relocations:
                if r.offset % INSN_SIZE:
                    raise LinkError(f"sec '{sec.name}': bad relo offset {r.offset}")
                f = self._func_at(sec.index, r.offset // INSN_SIZE)
                if f is None:
                    raise LinkError(f"sec '{sec.name}': relo at insn #{r.offset // INSN_SIZE} "
                                    f"is outside every program")
                f.relos[r.offset // INSN_SIZE - f.start] = r
        names: set[str] = set()
        for f in self.funcs.values():
            if f.section.index == self.text_index:
                continue
            if f.name in names:
                raise ParseError(f"program '{f.name}' defined twice", section=f.section.name)
            names.add(f.name)
            try:
                sd = lookup_section(f.section.name)
            except ParseError:
                if not self.allow_unknown:
                    raise
                sd = SectionDef(ProgType.UNSPEC, 0, "", False, 0, 0, "")
            self.spec.programs[f.name] = ProgramSpec(
                name=f.name, section=f.section.name.lstrip("?"), type=int(sd.prog_type),
                expected_attach_type=sd.expected_attach_type, attach_to=sd.attach_to,
                license=self.spec.license, kernel_version=self.spec.kernel_version,
                sleepable=sd.sleepable, flags=sd.prog_flags, autoload=sd.autoload)

    def _func_at(self, shndx: int, slot: int) -> _Func | None:
        """libbpf.c: find_prog_by_sec_insn (bisect over the section's functions by start)."""
        funcs = self._by_section.get(shndx)
        if funcs is None:
            funcs = sorted((f for f in self.funcs.values() if f.section.index == shndx),
                           key=lambda f: f.start)
            self._by_section[shndx] = funcs
        i = bisect.bisect_right([f.start for f in funcs], slot) - 1
        if i >= 0 and slot < funcs[i].start + funcs[i].count:
            return funcs[i]
        return None

    # -- stage: linking -------------------------------------------------------------------

    def link_programs(self) -> None:
        for f in self.funcs.values():
            if f.section.index == self.text_index:
                continue
            _Linker(self, f, self.spec.programs[f.name]).link()

    # -- stage: initial map values --------------------------------------------------------

    def load_map_values(self) -> None:
        """libbpf.c: bpf_object__collect_map_relos -- `.values = { [i] = &x }` in `.maps`."""
        sec = self.elf.section(MAPS_SEC)
        if sec is None:
            return
        btf = self.btf
        assert btf is not None
        slots: dict[str, dict[int, str]] = {}
        for i, r in enumerate(sec.relocations):
            sym = self.elf.symbols[r.symbol]
            name = sym.name or "<?>"
            owner, off, def_id = None, 0, 0
            for o, size, mname, did in self.btf_map_ranges:
                if o <= r.offset and r.offset + 8 <= o + size:
                    owner, off, def_id = mname, o, did
                    break
            if owner is None:
                raise LinkError(f".maps relo #{i}: cannot find map '{name}' at offset {r.offset}")
            if r.type != R_BPF_64_ABS64:
                raise LinkError(f".maps relo #{i}: unexpected relocation type {r.type}")
            m = self.spec.maps[owner]
            if m.type in _MAP_IN_MAP:
                if sym.shndx != sec.index or name not in self.spec.maps:
                    raise LinkError(f".maps relo #{i}: '{name}' isn't a BTF-defined map")
            elif m.type == MapType.PROG_ARRAY:
                prog = self.spec.programs.get(name)
                f = self.funcs.get((sym.shndx, sym.value // INSN_SIZE))
                if prog is None or f is None or f.name != name:
                    raise LinkError(f".maps relo #{i}: '{name}' isn't an entry-point program")
            else:
                raise LinkError(f".maps relo #{i}: map '{owner}' can't have initial values")
            def_t = btf.type(def_id)
            last = def_t.members[-1] if def_t.members else None
            if last is None or last.name != "values":
                raise LinkError(f".maps relo #{i}: map '{owner}' has no 'values' member")
            moff = r.offset - off - last.bit_offset // 8
            if moff < 0 or moff % 8:
                raise LinkError(f".maps relo #{i}: bad offset {r.offset} into '{owner}'.values")
            slots.setdefault(owner, {})[moff // 8] = name
        for owner, by_index in slots.items():
            m = self.spec.maps[owner]
            m.contents = [(k.to_bytes(4, self.elf.byteorder), v) for k, v in sorted(by_index.items())]


class _Linker:
    """Links one entry program: libbpf.c bpf_object__reloc_code + bpf_object__relocate_data.

    Subprograms (in `.text`) are appended depth-first in the order their first call or
    address-taking appears, exactly as libbpf does, so instruction indexes match what the
    kernel receives."""

    def __init__(self, loader: _Loader, main: _Func, prog: ProgramSpec) -> None:
        self.ld = loader
        self.main = main
        self.prog = prog
        self.out: list[Instruction] = []
        self.placed: dict[tuple[int, int], int] = {}
        self.order: list[tuple[_Func, int]] = []

    def link(self) -> None:
        self._place(self.main)
        self.prog.instructions = self.out
        self.prog.subprogram_starts = {f.name: base for f, base in self.order}
        self.prog.references.sort(key=lambda r: r.insn)
        self._ext_info()

    def _place(self, f: _Func) -> int:
        base = len(self.out)
        self.placed[f.key] = base
        self.order.append((f, base))
        self.out.extend(f.insns)
        self._relocate(f, base)
        return base

    def _relocate(self, f: _Func, base: int) -> None:
        elf = self.ld.elf
        for li, insn in enumerate(f.insns):
            if insn.lddw_tail:
                continue
            gi = base + li
            rel = f.relos.get(li)
            sym = elf.symbols[rel.symbol] if rel is not None else None
            where = f"prog '{self.prog.name}': insn #{f.start + li} of '{f.section.name}'"
            if sym is not None and sym.shndx == SHN_UNDEF and sym.name:
                self._extern(insn, gi, sym, where)
                continue
            is_call = insn.opcode == _OPC_CALL and insn.src == BPF_PSEUDO_CALL
            if is_call:
                if rel is not None:
                    if sym is None or sym.shndx != self.ld.text_index:
                        raise LinkError(f"{where}: bad call relo against '{sym.name if sym else '?'}'")
                    if sym.value % INSN_SIZE:
                        raise LinkError(f"{where}: bad call relo offset {sym.value}")
                    if rel.type != R_BPF_64_32:
                        raise LinkError(f"{where}: unexpected relocation type {rel.type} on call")
                    target = sym.value // INSN_SIZE + insn.imm + 1
                else:
                    if f.section.index != self.ld.text_index:
                        raise LinkError(f"{where}: call without relocation outside .text")
                    target = f.start + li + insn.imm + 1
                self.out[gi] = replace(self.out[gi], imm=self._subprog(target, where) - gi - 1)
                continue
            if rel is None:
                continue
            if insn.opcode != _OPC_LDDW:
                raise LinkError(f"{where}: invalid relo against '{sym.name if sym else '?'}' for "
                                f"insn code {insn.opcode:#04x}")
            if rel.type != R_BPF_64_64:
                raise LinkError(f"{where}: unexpected relocation type {rel.type} on lddw")
            assert sym is not None
            self._lddw(insn, gi, sym, where)

    def _subprog(self, target: int, where: str) -> int:
        """Slot of .text subprogram starting at section slot `target`, appending it if new."""
        sub = self.ld.funcs.get((self.ld.text_index, target))
        if sub is None:
            raise LinkError(f"{where}: no subprogram starts at .text insn #{target}")
        if sub.key in self.placed:
            return self.placed[sub.key]
        return self._place(sub)

    def _lddw(self, insn: Instruction, gi: int, sym: Symbol, where: str) -> None:
        """libbpf.c: bpf_program__record_reloc for ld_imm64."""
        ld = self.ld
        if sym.shndx == SHN_UNDEF or sym.shndx >= SHN_LORESERVE:
            raise LinkError(f"{where}: invalid relo against '{sym.name}' in special section "
                            f"{sym.shndx:#x}; forgot to initialize global var?")
        if sym.shndx == ld.text_index and (
                (sym.bind == STB_LOCAL and sym.type == STT_SECTION)
                or (sym.bind == STB_GLOBAL and sym.type == STT_FUNC)):
            # libbpf: RELO_SUBPROG_ADDR (callback of bpf_loop, for_each_map_elem, timers)
            if sym.value % INSN_SIZE or insn.imm % INSN_SIZE:
                raise LinkError(f"{where}: bad subprog addr relo against '{sym.name}'")
            target = (sym.value + insn.imm) // INSN_SIZE
            rel = self._subprog(target, where) - gi - 1
            self.out[gi] = replace(self.out[gi], src=BPF_PSEUDO_FUNC, imm=rel,
                                   imm64=rel & 0xFFFFFFFF)
            self.out[gi + 1] = replace(self.out[gi + 1], imm=0)
            return
        sec = ld.elf.sections[sym.shndx]
        if sec.name == MAPS_SEC:
            name = ld.btf_maps.get((sym.shndx, sym.value))
            if name is None:
                raise LinkError(f"{where}: map relo failed to find map for section '{sec.name}', "
                                f"off {sym.value}")
            self.prog.references.append(Reference(gi, REF_MAP, name))
            self.out[gi] = replace(self.out[gi], src=BPF_PSEUDO_MAP_FD, imm=0, imm64=0)
            self.out[gi + 1] = replace(self.out[gi + 1], imm=0)
            return
        dm = ld.data_maps.get(sym.shndx)
        if dm is None:
            if _data_kind(sec) is not None:
                raise LinkError(f"{where}: data relo failed to find map for section '{sec.name}'")
            raise LinkError(f"{where}: bad map relo against '{sym.name}' in section '{sec.name}'")
        off = insn.imm + sym.value
        if not 0 <= off < dm.section.size:
            raise LinkError(f"{where}: offset {off} outside '{sec.name}' ({dm.section.size} bytes)")
        self.prog.references.append(Reference(gi, REF_MAP_VALUE, dm.spec.name, off))
        self.out[gi] = replace(self.out[gi], src=BPF_PSEUDO_MAP_VALUE, imm=0,
                               imm64=(off & 0xFFFFFFFF) << 32)
        self.out[gi + 1] = replace(self.out[gi + 1], imm=off)

    def _extern(self, insn: Instruction, gi: int, sym: Symbol, where: str) -> None:
        """Extern functions are kfuncs (resolved against the kernel's BTF at load time);
        `__kconfig` variables live in the `.kconfig` map (libbpf: RELO_EXTERN_LD64 of a kcfg
        extern: insn[1].imm = data_off); `__ksym` variables are not supported yet."""
        if insn.opcode == _OPC_CALL:
            self.prog.references.append(Reference(gi, REF_KFUNC, sym.name))
            self.out[gi] = replace(self.out[gi], src=BPF_PSEUDO_KFUNC_CALL, imm=0)
            return
        if insn.opcode == _OPC_LDDW and sym.name in self.ld.kconfig:
            off = self.ld.kconfig[sym.name]
            self.prog.references.append(Reference(gi, REF_MAP_VALUE, KCONFIG_SEC, off))
            self.out[gi] = replace(self.out[gi], src=BPF_PSEUDO_MAP_VALUE, imm=0,
                                   imm64=(off & 0xFFFFFFFF) << 32)
            self.out[gi + 1] = replace(self.out[gi + 1], imm=off)
            return
        raise LinkError(f"{where}: extern variable '{sym.name}' (.ksyms) is not supported")

    def _ext_info(self) -> None:
        """Rebase BTF.ext func_info, line_info and CO-RE records onto the linked slots
        (libbpf.c: adjust_prog_btf_ext_info)."""
        ext = self.ld.ext
        btf = self.ld.btf
        if ext is None or btf is None:
            return
        for f, base in self.order:
            lo, hi = f.start * INSN_SIZE, (f.start + f.count) * INSN_SIZE
            sec = f.section.name
            for rec in ext.func_info.get(sec, ()):
                if lo <= rec.insn_off < hi:
                    slot = base + (rec.insn_off - lo) // INSN_SIZE
                    self.prog.func_info.append(FuncInfo(slot, rec.type_id, btf.name_of(rec.type_id)))
                    if slot == 0:
                        self.prog.btf_func_id = rec.type_id
            for rec in ext.line_info.get(sec, ()):
                if lo <= rec.insn_off < hi:
                    self.prog.line_info.append(LineInfo(
                        base + (rec.insn_off - lo) // INSN_SIZE, rec.file_name, rec.line,
                        rec.line_num, rec.line_col))
            for rec in ext.core_relos.get(sec, ()):
                if lo <= rec.insn_off < hi:
                    self.prog.core_relos.append(CoreRelo(
                        base + (rec.insn_off - lo) // INSN_SIZE, rec.type_id, rec.access_str,
                        int(rec.kind)))


_LINKAGE = {0: "static", 1: "global", 2: "extern"}


def _data_kind(sec: Section) -> str | None:
    """libbpf.c: bpf_object__elf_collect's classification of data sections."""
    n = sec.name
    if sec.type == SHT_PROGBITS and not sec.is_exec:
        if n == ".rodata" or n.startswith(".rodata."):
            return "rodata"
        if n == ".data" or n.startswith(".data."):
            return "data"
    if sec.type == SHT_NOBITS and (n == ".bss" or n.startswith(".bss.")):
        return "bss"
    return None


__all__ = ["internal_map_name", "load_spec"]
