"""Static safety proof of a program against the maps it uses and its program type.

Today: the structural checks of `isa.validate` plus an abstract interpreter
(`verifier.checker`) enforcing, with the kernel's exact messages, the rules modelled so far —
above all the bpf_timer rules of spec/bpf_timer.md §8-§9.  The full kernel-faithful verifier
grows here.  Must not execute code (no `vm`) nor import `runtime`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bpfsim.errors import ParseError, VerifierError
from bpfsim.spec.collection import REF_MAP, REF_MAP_VALUE, ProgramSpec
from bpfsim.uapi import constants as C
from bpfsim.verifier.checker import Checker, Program, license_is_gpl_compatible
from bpfsim.verifier.types import MapInfo

__all__ = ["MapInfo", "VerifierLog", "license_is_gpl_compatible", "map_info_from_spec", "verify"]


class VerifierLog(str):
    """The log of an accepted program (a str), with the processed instruction count."""

    processed: int = 0
    max_ctx_offset: int = 0   # the furthest ctx byte accessed (test_run of SYSCALL checks it)


BTF_FUNC_STATIC = 0


def _function_linkage(prog: ProgramSpec, btf: Any) -> tuple[frozenset[int] | None, frozenset[int]]:
    """Slots of static and of global functions, from func_info + BTF FUNC linkage."""
    if not prog.func_info or btf is None:
        return None, frozenset()
    static, glob = set(), set()
    for fi in prog.func_info:
        try:
            linkage = getattr(btf.type(fi.type_id), "linkage", BTF_FUNC_STATIC)
        except Exception:  # noqa: BLE001 - a bad id is the BTF loader's error, not ours
            linkage = BTF_FUNC_STATIC
        (static if linkage == BTF_FUNC_STATIC else glob).add(fi.insn)
    return frozenset(static), frozenset(glob)


def map_info_from_spec(spec: Any, btf: Any, *, has_btf: bool | None = None) -> MapInfo:
    """A MapInfo from a MapSpec (or anything with the same attributes) and its BTF."""
    timer_off = spin_off = None
    with_btf = bool(spec.value_type_id) and btf is not None if has_btf is None else has_btf
    if with_btf and btf is not None and spec.value_type_id:
        timer_off, spin_off = _special_offsets(btf, spec.value_type_id)
    inner = map_info_from_spec(spec.inner, btf) if getattr(spec, "inner", None) is not None else None
    return MapInfo(name=spec.name, type=int(spec.type), key_size=spec.key_size,
                   value_size=spec.value_size, max_entries=spec.max_entries, flags=spec.flags,
                   has_btf=with_btf, timer_off=timer_off, spin_lock_off=spin_off, inner=inner)


def _special_offsets(btf: Any, value_type_id: int) -> tuple[int | None, int | None]:
    """Offsets of the bpf_timer and bpf_spin_lock the kernel records for the value type (btf.c:
    btf_parse_fields); an invalid record (two timers in one struct...) has neither."""
    record = btf.field_record(value_type_id)
    if not record.valid:
        return None, None
    return record.timer_off, record.spin_lock_off


def verify(prog: ProgramSpec, maps: Mapping[str, MapInfo], *, btf: Any = None,
           prog_type: int | None = None, license: str | None = None) -> VerifierLog:
    """Verify `prog` (linked, references symbolic) against `maps` (by name).

    Returns the log on success; raises VerifierError (kernel message, errno, log) otherwise.
    """
    insns = prog.instructions
    try:
        from bpfsim.isa import validate as _validate  # the ISA's structural checks
    except ImportError:  # pragma: no cover - during bring-up only
        _validate = None
    if _validate is not None:
        try:
            _validate.validate(insns, kernel=True)
        except ParseError as exc:
            # isa.validate words its messages "<the kernel's line>: <our detail>": the kernel's
            # line is the verdict's message, the detail stays in the log
            kernel_line = exc.message.split(": ", 1)[0]
            raise VerifierError(kernel_line, program=prog.name, pc=exc.insn, errno=C.EINVAL,
                                log=f"{exc.message}\n{kernel_line}\n") from None
    by_insn: dict[int, tuple[MapInfo, int]] = {}
    for ref in prog.references:
        if ref.kind not in (REF_MAP, REF_MAP_VALUE):
            continue
        info = maps.get(ref.target)
        if info is None:
            raise VerifierError(f"unknown map '{ref.target}' referenced at insn {ref.insn}",
                                program=prog.name, pc=ref.insn, errno=C.EINVAL)
        by_insn[ref.insn] = (info, ref.offset if ref.kind == REF_MAP_VALUE else -1)
    static, glob = _function_linkage(prog, btf)
    p = Program(name=prog.name, insns=insns, prog_type=prog.type if prog_type is None else prog_type,
                license=prog.license if license is None else license, maps_by_insn=by_insn,
                static_funcs=static, global_funcs=glob)
    checker = Checker(p)
    checker.run()
    log = VerifierLog("\n".join(p.log) + "\n")
    log.processed = checker.processed
    log.max_ctx_offset = checker.max_ctx_offset
    return log
