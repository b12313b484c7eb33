"""Load a `CollectionSpec` into the real kernel, the way libbpf's `bpf_object__load` does.

Job: from the spec (never from the ELF again) -- load the BTF, create the maps (BTF type ids,
libbpf's retry without BTF, inner-map templates, global data written and `.rodata` frozen,
LIBBPF_PIN_BY_NAME reuse or pin), fill map-in-map `.values`, patch every map reference into
the program's `lddw`, load the programs with func_info/line_info, fill PROG_ARRAY `.values`,
and hand back a `KernelCollection`.  All or nothing: on any failure every fd opened and every
pin made so far is released before the error propagates.
Must not call bpf(2) itself (only `kernel.syscall` does) and must not parse ELF.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import struct
from typing import Any

from bpfsim.errors import KernelError, LinkError, NotSupported, PinError, UsageError, VerifierError
from bpfsim.kernel import syscall as sc
from bpfsim.kernel.maps import KernelMap, possible_cpus
from bpfsim.kernel.programs import KernelProgram
from bpfsim.runtime.collection import NamedObjects
from bpfsim.spec.collection import REF_KFUNC, REF_MAP, REF_MAP_VALUE, CollectionSpec, MapSpec, ProgramSpec
from bpfsim.uapi.constants import (
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_VALUE,
    LIBBPF_PIN_BY_NAME,
    AttachType,
    MapType,
    ProgType,
)

DEFAULT_PIN_ROOT = "/sys/fs/bpf"          # libbpf: bpf_object__open's default pin_root_path
VERIFIER_LOG_SIZE = 16 << 20              # the retry's log buffer (16 MiB)
MAX_VERIFIER_LOG_SIZE = 1 << 30           # the kernel's limit: UINT_MAX >> 2

# libbpf.c: bpf_object__create_map drops BTF ids for these types (their values are fds or
# ids, or the kernel does not accept BTF for them).
_NO_BTF_TYPES = frozenset({
    MapType.PERF_EVENT_ARRAY, MapType.CGROUP_ARRAY, MapType.STACK_TRACE, MapType.ARRAY_OF_MAPS,
    MapType.HASH_OF_MAPS, MapType.DEVMAP, MapType.DEVMAP_HASH, MapType.CPUMAP, MapType.XSKMAP,
    MapType.SOCKMAP, MapType.SOCKHASH, MapType.QUEUE, MapType.STACK, MapType.ARENA,
})
# Program types whose attach target is another BPF program or a struct_ops map: not done.
_UNSUPPORTED_TYPES = frozenset({ProgType.EXT, ProgType.STRUCT_OPS})
# Program types that name their attach target by a vmlinux BTF id (libbpf.c:
# libbpf_find_attach_btf_id); the prefix and kind of the BTF name per attach type.
_BTF_TARGET_TYPES = frozenset({ProgType.TRACING, ProgType.LSM})
_ATTACH_PREFIX = {AttachType.TRACE_RAW_TP: ("btf_trace_", "TYPEDEF"),
                  AttachType.LSM_MAC: ("bpf_lsm_", "FUNC"), AttachType.LSM_CGROUP: ("bpf_lsm_", "FUNC"),
                  AttachType.TRACE_ITER: ("bpf_iter_", "FUNC")}
def vmlinux_btf() -> Any:
    """The running kernel's BTF (runtime.vmlinux: parsed once per process, about a second)."""
    from bpfsim.runtime.vmlinux import VMLINUX_BTF, kernel_btf, kernel_btf_error

    btf = kernel_btf()
    if btf is None:
        raise NotSupported("kernel BTF", "5.4", f"{VMLINUX_BTF}: {kernel_btf_error()}")
    return btf


class KernelCollection:
    """The live result of loading a spec into the kernel: `maps` and `programs` by name.

    Owns one fd per map and program (and the BTF object's).  `close()` drops them all; pins
    stay (they are user references of their own), like the emulator's Collection.
    """

    def __init__(self, spec: CollectionSpec, maps: dict[str, KernelMap],
                 programs: dict[str, KernelProgram], btf_fd: int, pinned: list[str]) -> None:
        self.spec = spec
        self.maps = NamedObjects("map", maps)
        self.programs = NamedObjects("program", programs)
        self.btf_fd = btf_fd
        self.pinned = pinned      # paths this load pinned (LIBBPF_PIN_BY_NAME), for reference
        self.backend = "kernel"
        self.closed = False
        self.btf_error = ""       # why the kernel refused the object's BTF ("" = it did not)

    def close(self) -> None:
        """Drop every handle of the collection (idempotent)."""
        self.closed = True
        for p in self.programs.values():
            p.close()
        for m in self.maps.values():
            m.close()
        sc.close(self.btf_fd)
        self.btf_fd = -1

    def __enter__(self) -> KernelCollection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<KernelCollection maps={sorted(self.maps)} programs={sorted(self.programs)}"
                f"{' closed' if self.closed else ''}>")


def load(source: str | os.PathLike | bytes | CollectionSpec, pin_root: str | None = None, *,
         log_level: int = 0) -> KernelCollection:
    """Load an object file (a path or its bytes) or a spec into the kernel.  `log_level` > 0 asks for the
    verifier log of every program even on success (kept as `program.verifier_log`)."""
    spec = _spec_of(source)
    return _Loader(spec, pin_root, log_level).run()


def _spec_of(source: Any) -> CollectionSpec:
    if isinstance(source, CollectionSpec):
        return source.copy()
    if isinstance(source, (str, os.PathLike, bytes, bytearray)):
        from bpfsim.spec.reader import load_spec

        return load_spec(bytes(source) if isinstance(source, bytearray)
                         else source if isinstance(source, bytes) else os.fspath(source))
    raise UsageError(f"load() takes a path, the bytes of an object or a CollectionSpec, "
                     f"not {type(source).__name__}")


class _Loader:
    """One load: everything it opens is recorded so a failure can undo it."""

    def __init__(self, spec: CollectionSpec, pin_root: str | None, log_level: int) -> None:
        self.spec = spec
        self.pin_root = pin_root if pin_root is not None else DEFAULT_PIN_ROOT
        self.log_level = log_level
        self.btf = spec.btf
        self.btf_fd = -1
        self.btf_error = ""
        self.pinned: list[str] = []
        self.maps: dict[str, KernelMap] = {}
        self.reused: set[str] = set()
        self.programs: dict[str, KernelProgram] = {}
        self.ncpus = possible_cpus()

    def run(self) -> KernelCollection:
        try:
            line_strings = self._prepare_btf_strings()
            self._load_btf()
            for name, ms in self.spec.maps.items():
                self._create_map(name, ms)
            for name, ms in self.spec.maps.items():
                if name not in self.reused and ms.type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
                    self._fill_slots(name, ms, self._map_fd_by_name, "map")
            for name, ps in self.spec.programs.items():
                if ps.autoload:
                    self._load_program(name, ps, line_strings)
            for name, ms in self.spec.maps.items():
                if name not in self.reused and ms.type == MapType.PROG_ARRAY:
                    self._fill_slots(name, ms, self._prog_fd_by_name, "program")
        except BaseException:
            self._undo()
            raise
        coll = KernelCollection(self.spec, self.maps, self.programs, self.btf_fd, self.pinned)
        coll.btf_error = self.btf_error
        return coll

    def _undo(self) -> None:
        for p in self.programs.values():
            p.close()
        for m in self.maps.values():
            m.close()
        sc.close(self.btf_fd)
        for path in self.pinned:
            with contextlib.suppress(OSError):
                os.unlink(path)

    # -- BTF --------------------------------------------------------------------------------
    def _prepare_btf_strings(self) -> dict[str, int]:
        """line_info names its file and source line by offsets into the BTF string section;
        the spec keeps the strings, so make sure each is in the table we load (they normally
        are: clang puts them there)."""
        offs: dict[str, int] = {}
        if self.btf is None:
            return offs
        for ps in self.spec.programs.values():
            strings = [s for li in ps.line_info for s in (li.file, li.line)]
            strings += [r.access for r in ps.core_relos]
            for s in strings:
                if s not in offs:
                    offs[s] = self.btf.strings.add(s)
        return offs

    def _load_btf(self) -> None:
        """libbpf.c: bpf_object__sanitize_and_load_btf.  BTF the kernel refuses is left out
        ("BTF is optional, ignoring." -- it is mandatory only for struct_ops, which we do not
        load): maps are then created without type ids and programs without func/line info.
        The kernel's reason is kept in `btf_error` and shown if a program is refused."""
        if self.btf is None:
            return
        _sanitize_ksyms(self.btf)
        data = self.btf.to_bytes()
        try:
            self.btf_fd = sc.btf_load(data)
            return
        except KernelError as e:
            if e.errno in (1, 38):   # EPERM / ENOSYS: not BTF's fault
                raise
            first = e
        log = sc.Log(1 << 20)
        try:
            self.btf_fd = sc.btf_load(data, log=log)   # accepted the second time: keep it
        except KernelError:
            lines = log.text.strip().splitlines()
            self.btf_error = f"{first}: {lines[-1] if lines else 'rejected'}"

    # -- maps -------------------------------------------------------------------------------
    def _kernel_name(self, ms: MapSpec) -> str:
        return ms.kernel_name or ms.name

    def _max_entries(self, ms: MapSpec) -> int:
        # libbpf.c: map_set_def_max_entries -- a PERF_EVENT_ARRAY of 0 entries gets one per CPU.
        if ms.type == MapType.PERF_EVENT_ARRAY and ms.max_entries == 0:
            return self.ncpus
        return ms.max_entries

    def _create_raw(self, ms: MapSpec, inner_fd: int = 0) -> int:
        """BPF_MAP_CREATE with BTF ids when we have them, then libbpf's retry without BTF."""
        use_btf = self.btf_fd >= 0 and (ms.key_type_id or ms.value_type_id) and ms.type not in _NO_BTF_TYPES
        args = dict(flags=ms.flags, name=self._kernel_name(ms), inner_map_fd=inner_fd,
                    numa_node=ms.numa_node, map_extra=ms.map_extra)
        size = (ms.type, ms.key_size, ms.value_size, self._max_entries(ms))
        if use_btf:
            try:
                return sc.map_create(*size, btf_fd=self.btf_fd, btf_key_type_id=ms.key_type_id,
                                     btf_value_type_id=ms.value_type_id, **args)
            except KernelError:
                # libbpf.c: bpf_object__create_map: "Error in bpf_create_map_xattr(...).
                # Retrying without BTF." -- any failure, whatever the errno.
                pass
        try:
            return sc.map_create(*size, **args)
        except KernelError as e:
            from bpfsim.kernel.probes import probe_map_type, require_map_type

            if e.errno == 22 and not probe_map_type(ms.type):
                require_map_type(ms.type)
            raise KernelError(e.command, e.errno, f"create map '{ms.name}'") from None

    def _create_map(self, name: str, ms: MapSpec) -> None:
        btf_ok = self.btf_fd >= 0
        if ms.pinning == LIBBPF_PIN_BY_NAME:
            path = os.path.join(self.pin_root, ms.name)
            fd = self._reuse_pinned(ms, path)
            if fd is not None:
                self.reused.add(name)
                self._adopt_map(name, ms, fd, btf_ok)
                return
        elif ms.pinning not in (0,):
            raise UsageError(f"map '{name}': unknown pinning type {ms.pinning}")
        inner_fd = 0
        if ms.type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
            if ms.inner is None:
                raise LinkError(f"map '{name}': map-in-map without an inner map template")
            inner_fd = self._create_raw(ms.inner)
        try:
            fd = self._create_raw(ms, inner_fd)
        finally:
            if inner_fd:
                sc.close(inner_fd)  # libbpf destroys the template once the outer map exists
        self._adopt_map(name, ms, fd, btf_ok)
        self._populate(name, ms)
        if ms.pinning == LIBBPF_PIN_BY_NAME:
            path = os.path.join(self.pin_root, ms.name)
            # libbpf.c: make_parent_dir -- one level, EEXIST is fine.
            with contextlib.suppress(FileExistsError, OSError):
                os.mkdir(os.path.dirname(path), 0o700)
            try:
                sc.obj_pin(fd, path)
            except KernelError as e:
                raise PinError(f"map '{name}': pin at {path}: {e}") from None
            self.pinned.append(path)

    def _adopt_map(self, name: str, ms: MapSpec, fd: int, btf_ok: bool) -> None:
        info = sc.map_get_info(fd)
        has_btf = btf_ok and (info.btf_key_type_id or info.btf_value_type_id)
        # Decode through BTF whenever the spec has the types, even when the kernel map was
        # created without (libbpf's retry): the bytes are the same.
        self.maps[name] = KernelMap.create(
            fd, name=name, map_type=info.type, key_size=info.key_size, value_size=info.value_size,
            max_entries=info.max_entries, flags=info.map_flags, map_extra=info.map_extra,
            btf=self.btf, key_type_id=ms.key_type_id, value_type_id=ms.value_type_id,
            ncpus=self.ncpus, kernel_btf=bool(has_btf))

    def _reuse_pinned(self, ms: MapSpec, path: str) -> int | None:
        """libbpf.c: bpf_object__reuse_map -- an fd on a compatible pinned map, None if none."""
        try:
            fd = sc.obj_get(path)
        except KernelError as e:
            if e.errno == 2:
                return None
            raise PinError(f"map '{ms.name}': couldn't retrieve pinned map at {path}: {e}") from None
        try:
            info = sc.map_get_info(fd)
        except KernelError:
            sc.close(fd)
            raise PinError(f"map '{ms.name}': {path} is not a map") from None
        # libbpf.c: map_is_reuse_compat
        want = (ms.type, ms.key_size, ms.value_size, self._max_entries(ms), ms.flags, ms.map_extra)
        have = (info.type, info.key_size, info.value_size, info.max_entries, info.map_flags,
                info.map_extra)
        if want != have:
            sc.close(fd)
            raise PinError(f"map '{ms.name}': couldn't reuse pinned map at {path}: parameter "
                           f"mismatch (want type/key/value/entries/flags/extra {want}, pinned {have})")
        return fd

    def _populate(self, name: str, ms: MapSpec) -> None:
        """Initial contents: global data (then freeze `.rodata`), and plain `.values`."""
        fd = self.maps[name].fd
        for key, value in ms.contents:
            if isinstance(value, str):
                continue  # a program or map name: filled once those exist
            try:
                sc.map_update(fd, key, value)
            except KernelError as e:
                raise KernelError(e.command, e.errno, f"map '{name}': initial value") from None
        if ms.freeze:
            try:
                sc.map_freeze(fd)
            except KernelError as e:
                raise KernelError(e.command, e.errno, f"map '{name}': freeze") from None

    def _map_fd_by_name(self, target: str) -> int:
        m = self.maps.get(target)
        if m is None:
            raise LinkError(f"no map named '{target}'")
        return m.fd

    def _prog_fd_by_name(self, target: str) -> int:
        p = self.programs.get(target)
        if p is None:
            if target in self.spec.programs:
                raise LinkError(f"program '{target}' is not loaded (autoload off)")
            raise LinkError(f"no program named '{target}'")
        return p.fd

    def _fill_slots(self, name: str, ms: MapSpec, fd_of, what: str) -> None:
        """libbpf.c: init_map_in_map_slots / init_prog_array_slots (`.values = {...}`)."""
        fd = self.maps[name].fd
        for key, target in ms.contents:
            if not isinstance(target, str):
                continue
            try:
                sc.map_update(fd, key, struct.pack("<I", fd_of(target)))
            except LinkError as e:
                raise LinkError(f"map '{name}': {what} slot: {e}") from None
            except KernelError as e:
                raise KernelError(e.command, e.errno, f"map '{name}': set {what} '{target}'") from None

    # -- programs ---------------------------------------------------------------------------
    def _insns(self, ps: ProgramSpec) -> bytes:
        """The instruction bytes with every map reference patched to a live fd."""
        insns = list(ps.instructions)
        for ref in ps.references:
            if ref.kind == REF_KFUNC:
                # libbpf.c: bpf_object__resolve_ksym_func_btf_id (vmlinux only, no modules).
                tid = self._vmlinux_id(ref.target, "FUNC", f"kfunc '{ref.target}'")
                insns[ref.insn] = dataclasses.replace(insns[ref.insn], imm=tid, off=0)
                continue
            if ref.kind not in (REF_MAP, REF_MAP_VALUE):
                raise LinkError(f"program '{ps.name}': unknown reference kind {ref.kind!r}")
            m = self.maps.get(ref.target)
            if m is None:
                raise LinkError(f"program '{ps.name}': insn {ref.insn} references unknown map "
                                f"'{ref.target}'")
            i = ref.insn
            if i + 1 >= len(insns) or insns[i].opcode != 0x18:
                raise LinkError(f"program '{ps.name}': insn {i} is not a lddw")
            src = BPF_PSEUDO_MAP_FD if ref.kind == REF_MAP else BPF_PSEUDO_MAP_VALUE
            off = ref.offset if ref.kind == REF_MAP_VALUE else 0
            insns[i] = dataclasses.replace(insns[i], src=src, imm=m.fd, imm64=None)
            insns[i + 1] = dataclasses.replace(insns[i + 1], imm=off)
        order = self.spec.byteorder
        return b"".join(ins.encode(order) for ins in insns)

    def _vmlinux_id(self, name: str, kind: str, what: str) -> int:
        if not name:
            raise LinkError(f"{what}: no target name")
        try:
            return vmlinux_btf().find(name, kind)
        except LinkError:
            raise LinkError(f"{what}: not found in kernel BTF ({kind} '{name}')") from None

    def _btf_ext(self, ps: ProgramSpec, strings: dict[str, int]) -> dict[str, bytes]:
        """func_info, line_info and CO-RE records in the kernel's layouts.  CO-RE relocations
        are handed to the kernel, which resolves them against its own BTF at load time
        (verifier.c: check_core_relo, as for libbpf's light skeletons) -- no vmlinux walk here."""
        if self.btf_fd < 0:
            return {}
        fi = b"".join(struct.pack("<II", f.insn, f.type_id) for f in ps.func_info)
        li = b"".join(struct.pack("<IIII", x.insn, strings[x.file], strings[x.line],
                                  (x.line_num << 10) | (x.col & 0x3FF)) for x in ps.line_info)
        cr = b"".join(struct.pack("<IIII", r.insn * 8, r.type_id, strings[r.access], r.kind)
                      for r in ps.core_relos)
        return {"func_info": fi, "line_info": li, "core_relos": cr}

    def _load_program(self, name: str, ps: ProgramSpec, line_strings: dict[str, int]) -> None:
        if ps.type in _UNSUPPORTED_TYPES:
            raise NotSupported(f"loading {ProgType(ps.type).name} program '{name}' on the kernel "
                               "backend", detail="attach targets other than vmlinux are not resolved")
        attach_btf_id = 0
        if ps.type in _BTF_TARGET_TYPES:
            prefix, kind = _ATTACH_PREFIX.get(ps.expected_attach_type, ("", "FUNC"))
            attach_btf_id = self._vmlinux_id(prefix + ps.attach_to, kind,
                                             f"program '{name}': attach target '{ps.attach_to}'")
        insns = self._insns(ps)
        args = dict(kern_version=ps.kernel_version or self.spec.kernel_version,
                    prog_flags=ps.flags, name=name, expected_attach_type=ps.expected_attach_type,
                    prog_btf_fd=self.btf_fd if self.btf_fd >= 0 else 0,
                    attach_btf_id=attach_btf_id, **self._btf_ext(ps, line_strings))
        license = ps.license or self.spec.license
        log = sc.Log(VERIFIER_LOG_SIZE, self.log_level) if self.log_level else None
        try:
            fd = sc.prog_load(ps.type, insns, license, log=log, **args)
        except KernelError as first:
            if first.errno in (1, 38) and not (log and log.text):
                raise KernelError(first.command, first.errno, f"program '{name}': {first}") from None
            log = self._failure_log(ps, insns, license, args, log)
            if self.btf_error:
                log += (f"\n(the object's BTF was refused by the kernel and left out, as libbpf "
                        f"does: {self.btf_error})\n")
            raise _verifier_error(name, first.errno, log) from None
        self.programs[name] = KernelProgram(fd, name=name, prog_type=ps.type, spec=ps,
                                            verifier_log=log.text if log else "")

    def _failure_log(self, ps: ProgramSpec, insns: bytes, license: str, args: dict,
                     log: sc.Log | None) -> str:
        """libbpf retries a failed load with log_level 1 and a big buffer to show why; if the
        kernel says the log did not fit (ENOSPC, log_true_size), once more at full size."""
        if log is None or not log.text:
            log = sc.Log(VERIFIER_LOG_SIZE, max(self.log_level, 1))
        for _ in range(2):
            try:
                fd = sc.prog_load(ps.type, insns, license, log=log, **args)
            except KernelError as e:
                if e.errno == 28 and len(log.buf) < log.true_size <= MAX_VERIFIER_LOG_SIZE:
                    log = sc.Log(log.true_size + 1, log.level)
                    continue
                return log.text
            # Accepted on the retry (a flaky failure such as EAGAIN/ENOMEM): say so.
            sc.close(fd)
            return log.text + "\n(program was accepted when loaded again with a log)"
        return log.text


def _sanitize_ksyms(btf: Any) -> None:
    """libbpf.c: bpf_object__collect_externs + add_dummy_ksym_var.  The kernel's BTF checker
    rejects extern FUNCs ("Invalid func linkage") and extern VARs, so libbpf turns every
    `.ksyms` entry into a 4-byte allocated global: a VAR becomes an `int` global, a FUNC keeps
    its (now global) record but its DATASEC slot points at one dummy int VAR, and unnamed
    parameters of its prototype borrow that VAR's name."""
    from bpfsim.btf import BtfType

    try:
        sec_id = btf.find_datasec(".ksyms")
    except LinkError:
        return
    sec = btf.type(sec_id)
    int_id = next((i for i, t in enumerate(btf.types) if i and t.kind == "INT" and t.nr_bits == 32), 0)
    dummy = 0
    if any(btf.type(v.type).kind == "FUNC" for v in sec.vars):
        dummy = btf.add(BtfType(kind="VAR", name="dummy_ksym", type=int_id, linkage=1))
    off = 0
    for v in sec.vars:
        t = btf.type(v.type)
        if t.kind == "FUNC":
            for prm in btf.type(t.type).params:
                if prm.type and not prm.name:
                    prm.name = "dummy_ksym"
            v.type = dummy
            t.linkage = 1          # BTF_FUNC_GLOBAL
        else:
            t.linkage = 1          # BTF_VAR_GLOBAL_ALLOCATED
            t.type = int_id
        v.offset, v.size = off, 4
        off += 4
    sec.size = off


_PC = re.compile(r"^(\d+): ", re.M)


def _verifier_error(name: str, errno: int, log: str) -> VerifierError:
    lines = [ln for ln in log.rstrip("\n").splitlines() if ln.strip()]
    message = lines[-1] if lines else f"the kernel refused program '{name}' ({os.strerror(errno)})"
    # The last "processed N insns" line is statistics, not the reason.
    for ln in reversed(lines):
        if not ln.startswith(("processed ", "verification time", "stack depth")):
            message = ln
            break
    pcs = _PC.findall(log)
    return VerifierError(message, program=name, pc=int(pcs[-1]) if pcs else None,
                         log=log or message, errno=errno)

