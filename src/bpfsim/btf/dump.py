"""bpftool-shaped dumps of a `Btf`: `bpftool btf dump file X` (raw text) and its `-j` JSON.

Job: formatting only, character for character what bpftool v7.1 (tools/bpf/bpftool/btf.c:
dump_btf_type) prints, so our output can be diffed with the kernel tool's.  Must not import
anything of bpfsim above `btf`.
"""

from __future__ import annotations

import json
from typing import Any

from bpfsim.btf.btf import Btf
from bpfsim.btf.types import KIND_NAMES, BtfType

_INT_ENC = {0: "(none)", 1: "SIGNED", 2: "CHAR", 4: "BOOL"}
_FUNC_LINKAGE = {0: "static", 1: "global", 2: "extern"}
_VAR_LINKAGE = {0: "static", 1: "global", 2: "extern"}


def _name(name: str, name_off: int) -> str:
    """bpftool btf_str(): offset 0 prints "(anon)"."""
    return name if (name or name_off) else "(anon)"


def _enum_encoding(t: BtfType) -> str:
    return "SIGNED" if t.kflag else "UNSIGNED"


def _json_enum_val(t: BtfType, value: int) -> int:
    """bpftool passes an unsigned ENUM's `__s32 val` to jsonw_uint_field(u64): values with
    the top bit set come out sign-extended to 64 bits (4026531839 prints 18446744073441116159)."""
    if t.kind == "ENUM" and not t.kflag and value & 0x80000000:
        return value | 0xFFFFFFFF00000000
    return value


def type_fields(btf: Btf, tid: int) -> dict[str, Any]:
    """One type as bpftool's JSON object (field order is bpftool's)."""
    t = btf.types[tid]
    out: dict[str, Any] = {"id": tid, "kind": t.kind, "name": _name(t.name, t.name_off)}
    k = t.kind
    if k == "INT":
        out.update(size=t.size, bits_offset=t.bits_offset, nr_bits=t.nr_bits,
                   encoding=_INT_ENC.get(t.encoding, "UNKN"))
    elif k in ("PTR", "CONST", "VOLATILE", "RESTRICT", "TYPEDEF", "TYPE_TAG"):
        out["type_id"] = t.type
    elif k == "ARRAY":
        out.update(type_id=t.type, index_type_id=t.index_type, nr_elems=t.nelems)
    elif k in ("STRUCT", "UNION"):
        members = []
        for m in t.members:
            d = {"name": _name(m.name, m.name_off), "type_id": m.type, "bits_offset": m.bit_offset}
            if m.bitfield_size:
                d["bitfield_size"] = m.bitfield_size
            members.append(d)
        out.update(size=t.size, vlen=len(t.members), members=members)
    elif k in ("ENUM", "ENUM64"):
        out.update(encoding=_enum_encoding(t), size=t.size, vlen=len(t.values),
                   values=[{"name": _name(v.name, v.name_off), "val": _json_enum_val(t, v.value)}
                           for v in t.values])
    elif k == "FWD":
        out["fwd_kind"] = "union" if t.kflag else "struct"
    elif k == "FUNC":
        out.update(type_id=t.type, linkage=_FUNC_LINKAGE.get(t.linkage, "(unknown)"))
    elif k == "FUNC_PROTO":
        out.update(ret_type_id=t.type, vlen=len(t.params),
                   params=[{"name": _name(p.name, p.name_off), "type_id": p.type} for p in t.params])
    elif k == "VAR":
        out.update(type_id=t.type, linkage=_VAR_LINKAGE.get(t.linkage, "(unknown)"))
    elif k == "DATASEC":
        out.update(size=t.size, vlen=len(t.vars),
                   vars=[{"type_id": v.type, "offset": v.offset, "size": v.size} for v in t.vars])
    elif k == "FLOAT":
        out["size"] = t.size
    elif k == "DECL_TAG":
        out.update(type_id=t.type, component_idx=t.component_idx)
    return out


def format_type(btf: Btf, tid: int) -> str:
    """One type in bpftool's raw text format (without the final newline)."""
    t = btf.types[tid]
    k = t.kind
    s = f"[{tid}] {k} '{_name(t.name, t.name_off)}'"
    if k == "INT":
        s += (f" size={t.size} bits_offset={t.bits_offset} nr_bits={t.nr_bits} "
              f"encoding={_INT_ENC.get(t.encoding, 'UNKN')}")
    elif k in ("PTR", "CONST", "VOLATILE", "RESTRICT", "TYPEDEF", "TYPE_TAG"):
        s += f" type_id={t.type}"
    elif k == "ARRAY":
        s += f" type_id={t.type} index_type_id={t.index_type} nr_elems={t.nelems}"
    elif k in ("STRUCT", "UNION"):
        s += f" size={t.size} vlen={len(t.members)}"
        for m in t.members:
            s += f"\n\t'{_name(m.name, m.name_off)}' type_id={m.type} bits_offset={m.bit_offset}"
            if m.bitfield_size:
                s += f" bitfield_size={m.bitfield_size}"
    elif k in ("ENUM", "ENUM64"):
        s += f" encoding={_enum_encoding(t)} size={t.size} vlen={len(t.values)}"
        suffix = ("LL" if t.kflag else "ULL") if k == "ENUM64" else ""
        for v in t.values:
            s += f"\n\t'{_name(v.name, v.name_off)}' val={v.value}{suffix}"
    elif k == "FWD":
        s += f" fwd_kind={'union' if t.kflag else 'struct'}"
    elif k == "FUNC":
        s += f" type_id={t.type} linkage={_FUNC_LINKAGE.get(t.linkage, '(unknown)')}"
    elif k == "FUNC_PROTO":
        s += f" ret_type_id={t.type} vlen={len(t.params)}"
        for p in t.params:
            s += f"\n\t'{_name(p.name, p.name_off)}' type_id={p.type}"
    elif k == "VAR":
        s += f" type_id={t.type}, linkage={_VAR_LINKAGE.get(t.linkage, '(unknown)')}"
    elif k == "DATASEC":
        s += f" size={t.size} vlen={len(t.vars)}"
        for v in t.vars:
            vt = btf.types[v.type]
            s += (f"\n\ttype_id={v.type} offset={v.offset} size={v.size} "
                  f"({vt.kind if vt.kind in KIND_NAMES else 'UNKN'} '{_name(vt.name, vt.name_off)}')")
    elif k == "FLOAT":
        s += f" size={t.size}"
    elif k == "DECL_TAG":
        s += f" type_id={t.type} component_idx={t.component_idx}"
    return s


def dump_raw(btf: Btf) -> str:
    """`bpftool btf dump file X` (format raw): one record per type, ids from 1."""
    return "".join(format_type(btf, tid) + "\n" for tid in range(1, len(btf.types)))


def dump_json(btf: Btf) -> str:
    """`bpftool -j btf dump file X`: one compact JSON document and a newline."""
    doc = {"types": [type_fields(btf, tid) for tid in range(1, len(btf.types))]}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n"
