"""`extern ... __kconfig` variables: libbpf's `.kconfig` map layout and values.

Job: lay out the externs of the `.kconfig` DATASEC the way libbpf does
(bpf_object__collect_externs: sorted by alignment descending, then size, then name; each at
its aligned offset) and encode their values: the virtual `LINUX_*` externs libbpf provides
for the emulated kernel (Linux 6.18), `CONFIG_*` values from the caller, zero for a missing
`__weak` one.  Must not touch the OS (libbpf reads /proc/config.gz; we take a mapping) and
must not import anything above `spec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bpfsim.errors import LinkError

if TYPE_CHECKING:
    from bpfsim.btf import Btf

KCONFIG_SEC = ".kconfig"
KERNEL_VERSION = (6, 18, 0)
# libbpf.c: bpf_object__resolve_externs -- the virtual externs libbpf itself provides
VIRTUAL = {
    "LINUX_KERNEL_VERSION": (KERNEL_VERSION[0] << 16) + (KERNEL_VERSION[1] << 8) + KERNEL_VERSION[2],
    "LINUX_HAS_BPF_COOKIE": 1,
    "LINUX_HAS_SYSCALL_WRAPPER": 1,
}
_TRISTATE = {"y": 1, "m": 2, "n": 0}     # enum libbpf_tristate


@dataclass(frozen=True)
class KconfigExtern:
    name: str
    type_id: int          # the VAR's type
    offset: int
    size: int


def _align_of(btf: Btf, tid: int) -> int:
    """libbpf btf__align_of (pointer size 8)."""
    t = btf.resolved(tid)
    if t.kind in ("INT", "ENUM", "ENUM64", "FLOAT"):
        return max(1, min(8, t.size))
    if t.kind == "PTR":
        return 8
    if t.kind == "ARRAY":
        return _align_of(btf, t.type)
    if t.kind in ("STRUCT", "UNION"):
        return max((_align_of(btf, m.type) for m in t.members), default=1)
    raise LinkError(f"extern (kcfg) type [{tid}] {t.kind} is not supported")


def kconfig_layout(btf: Btf, weak: Mapping[str, bool], values: Mapping[str, object] | None,
                   byteorder: str) -> tuple[list[KconfigExtern], bytes]:
    """The externs of `.kconfig` in libbpf's layout and the map value holding them.

    `weak[name]` tells whether the ELF symbol is STB_WEAK.  Fixes the DATASEC in `btf` the way
    libbpf does before loading BTF (offsets, size, linkage GLOBAL_ALLOCATED)."""
    ds = btf.type(btf.find_datasec(KCONFIG_SEC))
    items = []
    for vsi in ds.vars:
        var = btf.type(vsi.type)
        if var.kind != "VAR":
            raise LinkError(f"sec '{KCONFIG_SEC}': unexpected non-VAR type")
        size = btf.size_of(var.type)
        items.append((-_align_of(btf, var.type), size, var.name, var, vsi))
    items.sort(key=lambda it: (it[0], it[1], it[2]))
    off = 0
    out: list[KconfigExtern] = []
    for neg_align, size, name, var, vsi in items:
        off = (off + (-neg_align) - 1) // (-neg_align) * (-neg_align)
        out.append(KconfigExtern(name, var.type, off, size))
        vsi.offset, vsi.size = off, size
        var.linkage = 1                        # BTF_VAR_GLOBAL_ALLOCATED
        off += size
    ds.size = off
    ds.vars.sort(key=lambda v: v.offset)
    data = bytearray(off)
    for ext in out:
        val = _value(ext, weak.get(ext.name, False), values or {})
        if val is not None:
            data[ext.offset:ext.offset + ext.size] = _encode(btf, ext, val, byteorder)
    return out, bytes(data)


def _value(ext: KconfigExtern, is_weak: bool, values: Mapping[str, object]) -> object | None:
    if ext.name in values:
        return values[ext.name]
    if ext.name in VIRTUAL:
        return VIRTUAL[ext.name]
    if not ext.name.startswith("CONFIG_"):
        raise LinkError(f"extern (kcfg) '{ext.name}': unrecognized virtual extern")
    if is_weak:
        return None                            # libbpf leaves a missing __weak extern zero
    raise LinkError(f"extern (kcfg) '{ext.name}': value not found (pass it in "
                    f"load_spec(..., kconfig={{'{ext.name}': ...}}) or declare it __weak)")


def _encode(btf: Btf, ext: KconfigExtern, val: object, byteorder: str) -> bytes:
    """libbpf.c: set_kcfg_value_tri / _num / _str."""
    t = btf.resolved(ext.type_id)
    if t.kind == "ARRAY":                      # char[N]: a string value
        raw = str(val).encode() + b"\0"
        if len(raw) > ext.size:
            raise LinkError(f"extern (kcfg) '{ext.name}': value '{val}' does not fit {ext.size} bytes")
        return raw.ljust(ext.size, b"\0")
    if isinstance(val, str):
        val = _TRISTATE[val] if val in _TRISTATE else int(val, 0)
    num = int(val)  # type: ignore[call-overload]
    try:
        return num.to_bytes(ext.size, byteorder, signed=num < 0)
    except OverflowError:
        raise LinkError(f"extern (kcfg) '{ext.name}': value {num} does not fit {ext.size} bytes") from None
