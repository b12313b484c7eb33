"""`Collection` (the live maps and programs of one object) and how a CollectionSpec becomes one.

Job: `load_collection` does what libbpf's bpf_object__load does, in the emulated kernel:
create the maps (LIBBPF_PIN_BY_NAME: reuse a compatible pinned map or pin the new one),
write global data and freeze `.rodata`, fill map-in-map `.values`, resolve each program's map
references into its lddw imm64s, verify, bind the engine, fill PROG_ARRAY `.values`.
All-or-nothing: on any error every object created so far is released and every pin made so
far removed.  Must not import `kernel` (the real one).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from typing import Any

from bpfsim.errors import KeyNotFound, LinkError, PinError, UsageError
from bpfsim.isa.insn import Instruction
from bpfsim.runtime.program import LoadedProgram, Program
from bpfsim.spec.collection import REF_KFUNC, REF_MAP, REF_MAP_VALUE, CollectionSpec, MapSpec, ProgramSpec
from bpfsim.uapi.constants import BPF_OBJ_NAME_LEN, LIBBPF_PIN_BY_NAME, LIBBPF_PIN_NONE, MapType

_MAP_IN_MAP = (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS)


class Collection:
    """The maps (`Map` handles, by name) and programs (`Program` handles, by name) of one load.

    `close()` drops the collection's handles (pins and program references keep objects alive,
    exactly like closing libbpf's fds); also a context manager."""

    def __init__(self, runtime: Any, spec: CollectionSpec, maps: dict[str, Any],
                 programs: dict[str, Program], pinned: list[str]) -> None:
        self.runtime = runtime
        self.spec = spec
        self.maps = NamedObjects("map", maps)
        self.programs = NamedObjects("program", programs)
        self.pinned = pinned          # paths this load pinned (LIBBPF_PIN_BY_NAME)
        self.closed = False

    @property
    def trace_pipe(self) -> list[str]:
        return self.runtime.trace_pipe

    def close(self) -> None:
        """Drop every handle of the collection (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for p in self.programs.values():
            p.close()
        for m in self.maps.values():
            m.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Collection maps={sorted(self.maps)} programs={sorted(self.programs)}"
                f"{' closed' if self.closed else ''}>")


class NamedObjects(dict):  # type: ignore[type-arg]
    """The maps or programs of a collection by name; a missing name is KeyNotFound listing
    the names there are (a KeyError too, so `in` and `.get` work as for any dict)."""

    def __init__(self, what: str, items: dict[str, Any]) -> None:
        super().__init__(items)
        self.what = what

    def __missing__(self, name: str) -> Any:
        raise KeyNotFound(f"no {self.what} named {name!r} (there are: {', '.join(self) or 'none'})")


def load_collection(kernel: Any, source: Any, pin_root: str, *, verify: bool = True) -> Collection:
    """`Runtime.load`: see the module docstring."""
    if isinstance(source, CollectionSpec):
        spec = source
    elif isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        from bpfsim.spec.reader import load_spec

        spec = load_spec(source)
    else:
        raise UsageError(f"load() takes a path, the object's bytes or a CollectionSpec, not "
                         f"{type(source).__name__}")
    return _Loader(kernel, spec, pin_root, verify).run()


def _resolve_kfuncs(ps: ProgramSpec, insns: list[Instruction]) -> tuple[list[Instruction], dict[int, Any]]:
    """Number the kfuncs the program calls (1, 2, ... in order of first use: the emulator's
    stand-in for libbpf's bpf_object__resolve_ksym_func_btf_id) and patch each call's imm."""
    from bpfsim.runtime.kfuncs import kfunc

    ids: dict[str, int] = {}
    table: dict[int, Any] = {}
    for ref in ps.references:
        if ref.kind != REF_KFUNC:
            continue
        if not (0 <= ref.insn < len(insns)) or insns[ref.insn].opcode != 0x85:
            raise LinkError(f"prog '{ps.name}': insn #{ref.insn}: kfunc reference on a non-call")
        if ref.target not in ids:
            ids[ref.target] = len(ids) + 1
            table[ids[ref.target]] = kfunc(ref.target)
        insns[ref.insn] = replace(insns[ref.insn], imm=ids[ref.target], off=0)
    return insns, table


def _relocate_core(spec: CollectionSpec, ps: ProgramSpec) -> ProgramSpec:
    """libbpf.c: bpf_object__relocate_core -- CO-RE records resolved against the kernel's BTF
    (the machine's /sys/kernel/btf/vmlinux, as libbpf does); a field the kernel lacks poisons
    its instruction (`call 0xbad2310`), which the verifier rejects if reachable.  Without a
    kernel BTF clang's values (the object's own BTF) stand."""
    if not ps.core_relos or spec.btf is None:
        return ps
    from bpfsim.btf.core import calc_relo, patch_insns
    from bpfsim.runtime.vmlinux import kernel_btf

    targ = kernel_btf()
    if targ is None:
        return ps
    insns = list(ps.instructions)
    for relo in ps.core_relos:
        patch_insns(insns, relo.insn, calc_relo(spec.btf, relo, targ))
    return replace(ps, instructions=insns)


# -- adapters onto the maps package --------------------------------------------------------------
def _create_map(kernel: Any, ms: MapSpec, btf: Any) -> Any:
    """BPF_MAP_CREATE (runtime/maps/): a BpfMap holding one refcnt + one usercnt (ours).

    Like libbpf (libbpf.c: bpf_object__create_map, "Retrying without BTF."), a map the kernel
    refuses with BTF is created again without it (a timer in a PERCPU_ARRAY: -EOPNOTSUPP, then
    a BTF-less map whose timer helpers the verifier rejects)."""
    from bpfsim.errors import MapError
    from bpfsim.runtime.maps import create_map

    named = _kernel_named(ms)
    try:
        return create_map(kernel, named, btf=btf)
    except MapError:
        if btf is None or not (ms.key_type_id or ms.value_type_id):
            raise
    mp = create_map(kernel, named, btf=None)
    # The bytes are the same: keep decoding them through the object's BTF in Python, as the
    # kernel backend does, while the map itself has none (bpftool prints no "formatted").
    mp.btf, mp.key_type_id, mp.value_type_id = btf, int(ms.key_type_id), int(ms.value_type_id)
    return mp


def _kernel_named(ms: MapSpec) -> MapSpec:
    """The spec with the name BPF_MAP_CREATE gets: libbpf copies at most BPF_OBJ_NAME_LEN - 1
    bytes (libbpf_strlcpy), global data gets its internal_map_name (`kernel_name`)."""
    name = getattr(ms, "kernel_name", "") or ms.name[:BPF_OBJ_NAME_LEN - 1]
    inner = _kernel_named(ms.inner) if ms.inner is not None else None
    if name == ms.name and inner is ms.inner:
        return ms
    return replace(ms, name=name, inner=inner)


def _handle(mp: Any, *, owned: bool) -> Any:
    """A user Map handle; `owned` = it takes over a reference we already hold."""
    from bpfsim.runtime.handles import Map

    return Map(mp, owned=owned)


def _value_address(mp: Any, offset: int, where: str) -> int:
    """BPF_PSEUDO_MAP_VALUE: the address of byte `offset` of the single value of an array
    (arraymap.c: array_map_direct_value_addr; only arrays support it)."""
    if mp.map_type != MapType.ARRAY or mp.max_entries != 1:
        raise LinkError(f"{where}: direct value access needs a single-element ARRAY, "
                        f"'{mp.name}' is not one")
    if not 0 <= offset < mp.value_size:
        raise LinkError(f"{where}: offset {offset} outside the {mp.value_size}-byte value of "
                        f"'{mp.name}'")
    return mp.elem(0).value_addr(0) + offset


class _Loader:
    def __init__(self, kernel: Any, spec: CollectionSpec, pin_root: str, verify: bool) -> None:
        self.kernel = kernel
        self.spec = spec
        self.pin_root = pin_root
        self.verify = verify
        self.maps: dict[str, Any] = {}         # name -> BpfMap, each holding one user reference
        self.reused: set[str] = set()
        self.progs: dict[str, LoadedProgram] = {}
        self.to_pin: list[tuple[str, Any]] = []
        self.pinned: list[str] = []

    def run(self) -> Collection:
        try:
            for name, ms in self.spec.maps.items():
                self._create_map(name, ms)
            for name, ms in self.spec.maps.items():
                if name not in self.reused and ms.type in _MAP_IN_MAP:
                    self._fill_slots(name, ms, self._inner_by_name)
            for name, ps in self.spec.programs.items():
                if getattr(ps, "autoload", True):
                    self._load_program(name, ps)
            for name, ms in self.spec.maps.items():
                if name not in self.reused and ms.type == MapType.PROG_ARRAY:
                    self._fill_slots(name, ms, self._prog_by_name)
            for path, mp in self.to_pin:
                self.kernel.pins.mkdir(os.path.dirname(path))   # libbpf: make_parent_dir
                self.kernel.pins.pin(path, mp)
                self.pinned.append(path)
            maps = {name: _handle(mp, owned=True) for name, mp in self.maps.items()}
        except BaseException:
            self._undo()
            raise
        programs = {name: Program(p, owned=True) for name, p in self.progs.items()}
        return Collection(self.kernel, self.spec, maps, programs, self.pinned)

    def _undo(self) -> None:
        for path in self.pinned:
            with contextlib.suppress(PinError):
                self.kernel.pins.unpin(path)
        for p in self.progs.values():
            p.put()
        for mp in self.maps.values():
            mp.put_with_uref()

    # -- maps -----------------------------------------------------------------------------------
    def _create_map(self, name: str, ms: MapSpec) -> None:
        if ms.pinning == LIBBPF_PIN_BY_NAME:
            path = os.path.join(self.pin_root, ms.name)
            mp = self._reuse_pinned(ms, path)
            if mp is not None:
                self.reused.add(name)
                self.maps[name] = mp
                return
        elif ms.pinning != LIBBPF_PIN_NONE:
            raise UsageError(f"map '{name}': unknown pinning type {ms.pinning}")
        if ms.type in _MAP_IN_MAP and ms.inner is None:
            raise LinkError(f"map '{name}': map-in-map without an inner map template")
        mp = _create_map(self.kernel, ms, self.spec.btf)
        self.maps[name] = mp
        for key, value in ms.contents:
            if isinstance(value, str):
                continue            # a program or map name: filled once those exist
            mp.update(key, value)
        if ms.freeze:
            mp.freeze()
        if ms.pinning == LIBBPF_PIN_BY_NAME:
            self.to_pin.append((os.path.join(self.pin_root, ms.name), mp))

    def _reuse_pinned(self, ms: MapSpec, path: str) -> Any:
        """libbpf.c: bpf_object__reuse_map + map_is_reuse_compat."""
        try:
            obj = self.kernel.pins.get(path)
        except PinError:
            return None
        if isinstance(obj, LoadedProgram) or not hasattr(obj, "map_type"):
            raise PinError(f"map '{ms.name}': couldn't reuse pinned object at {path}: not a map")
        want = (int(ms.type), ms.key_size, ms.value_size, ms.max_entries, ms.flags, ms.map_extra)
        have = (obj.map_type, obj.key_size, obj.value_size, obj.max_entries, obj.map_flags,
                obj.map_extra)
        if want != have:
            raise PinError(f"map '{ms.name}': couldn't reuse pinned map at {path}: parameter "
                           f"mismatch (want type/key/value/entries/flags/extra {want}, pinned {have})")
        obj.inc_with_uref()
        return obj

    def _fill_slots(self, name: str, ms: MapSpec, resolve: Any) -> None:
        mp = self.maps[name]
        for key, value in ms.contents:
            if isinstance(value, str):
                # libbpf writes the fd; here the object id is the user-space value.
                mp.update(key, resolve(value).id.to_bytes(4, "little"))

    def _inner_by_name(self, target: str) -> Any:
        mp = self.maps.get(target)
        if mp is None:
            raise LinkError(f"no map named '{target}'")
        return mp

    def _prog_by_name(self, target: str) -> Any:
        p = self.progs.get(target)
        if p is None:
            if target in self.spec.programs:
                raise LinkError(f"program '{target}' is not loaded (autoload off)")
            raise LinkError(f"no program named '{target}'")
        return p

    # -- programs -------------------------------------------------------------------------------
    def _load_program(self, name: str, ps: ProgramSpec) -> None:
        ps = _relocate_core(self.spec, ps)
        insns, used = self._resolve(ps)
        insns, kfuncs = _resolve_kfuncs(ps, insns)
        log = self._verify(ps) if self.verify else ""
        self.progs[name] = LoadedProgram(self.kernel, ps, insns, used, kfuncs)
        self.progs[name].verifier_log = log
        self.progs[name].max_ctx_offset = getattr(log, "max_ctx_offset", 0)

    def _resolve(self, ps: ProgramSpec) -> tuple[list[Instruction], list[Any]]:
        """Write each referenced map's address into its lddw (docs: Instructions at run time)."""
        insns = list(ps.instructions)
        used: list[Any] = []
        for ref in ps.references:
            if ref.kind not in (REF_MAP, REF_MAP_VALUE):
                continue
            where = f"prog '{ps.name}': insn #{ref.insn}"
            mp = self.maps.get(ref.target)
            if mp is None:
                raise LinkError(f"{where}: unknown map '{ref.target}'")
            if not (0 <= ref.insn < len(insns) - 1) or insns[ref.insn].opcode != 0x18:
                raise LinkError(f"{where}: map reference on a non-lddw instruction")
            addr = mp.address if ref.kind == REF_MAP else _value_address(mp, ref.offset, where)
            head = insns[ref.insn]
            lo = addr & 0xFFFFFFFF
            hi = addr >> 32
            insns[ref.insn] = replace(head, imm=lo - (1 << 32) if lo >> 31 else lo, imm64=addr)
            tail = insns[ref.insn + 1]
            insns[ref.insn + 1] = replace(tail, imm=hi - (1 << 32) if hi >> 31 else hi)
            if all(u is not mp for u in used):
                used.append(mp)
        return insns, used

    def _verify(self, ps: ProgramSpec) -> str:
        """The verifier's log of an accepted program; VerifierError otherwise."""
        try:
            from bpfsim.verifier import map_info_from_spec, verify
        except ImportError:  # pragma: no cover - a tree without the verifier
            return ""
        infos = {}
        for name, mp in self.maps.items():
            ms = self.spec.maps[name]
            has_btf = getattr(mp, "kernel_btf", False) and bool(ms.value_type_id or ms.key_type_id)
            infos[name] = map_info_from_spec(ms, self.spec.btf, has_btf=has_btf)
        return verify(ps, infos, btf=self.spec.btf)
