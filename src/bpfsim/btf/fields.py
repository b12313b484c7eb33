"""Special fields of a map value: the kernel's `btf_record` (btf.c: btf_parse_fields).

Job: find the kernel-managed fields (`bpf_timer`, `bpf_spin_lock`, `bpf_wq`, kptrs, ...) in a
map value type exactly as Linux 6.18 does at map creation, including the cases where the scan
*fails*.  Must not import anything of bpfsim above `btf`.

API decision: `parse_fields` never raises for a bad layout; it returns a `FieldRecord` whose
`valid` is False and whose `error`/`errno` say why.  That mirrors the kernel: map_check_btf
(syscall.c) stores the ERR_PTR in `map->record` and map creation still *succeeds*, but
`btf_record_has_field()` is then false for everything, so e.g. a value with two `bpf_timer`s
(or `struct bpf_timer t[2]`) gives a map on which the verifier says "map 'X' has no valid
bpf_timer" (spec/bpf_timer.md §1.3), and any spin lock in the same value is ignored too.

Rules ported (btf.c: btf_find_struct_field / btf_find_field_one / btf_get_field_type):
* a field is a member whose type -- after *arrays* are flattened, but not typedefs or
  qualifiers -- is a struct with exactly the special name and size; misaligned ones
  (offset % align) are silently plain bytes;
* timer, wq, task_work, spin_lock, res_spin_lock are unique per struct level: a second one
  at the same level is -E2BIG; an array of them is -EINVAL (btf_repeat_fields);
* nested structs (and arrays of them) are searched, offsets added; overlapping fields are
  -EEXIST; more than 11 fields (BTF_FIELDS_MAX) is -E2BIG;
* an 8-aligned pointer to a `btf_type_tag` pointee is a kptr when the tag is kptr,
  kptr_untrusted, percpu_kptr or uptr and the target is a struct; any *other* tag (e.g. a
  "user" tag) is -EINVAL for the whole record;
* a DATASEC value (global data) is scanned through its VARs, each VAR's size must match;
* bpf_list_head / bpf_rb_root need a `contains:struct:node` decl tag naming an existing
  struct whose member of that name is a bpf_list_node / bpf_rb_node, and a spin lock.
* `bpf_res_spin_lock` is matched at the kernel's size (4 bytes, `struct { u32 val; }`), so
  bpf_experimental.h's 8-byte struct is plain bytes to the kernel (checked on 6.18).
Not modelled: kptr targets are not looked up in vmlinux BTF (btf_parse_kptr), so a kptr to
a kernel struct without a destructor kfunc is accepted here but refused by the kernel; and
BPF_BTF_LOAD's own scan (btf.c: btf_parse_struct_metas, which parses every struct holding a
spin lock / kptr / graph member directly) can fail the whole BTF load -- e.g. a spin lock and
a res spin lock side by side (EINVAL) or a misaligned kptr member (EFAULT) -- which this module
does not predict.
"""

from __future__ import annotations

import contextlib
import errno as _errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bpfsim.btf.types import MAX_RESOLVE_DEPTH, MODIFIER_KINDS, SpecialField
from bpfsim.errors import LinkError

if TYPE_CHECKING:
    from bpfsim.btf.btf import Btf

BTF_FIELDS_MAX = 11

# kind -> (size, align)   include/linux/bpf.h: btf_field_type_size / btf_field_type_align
FIELD_LAYOUT: dict[str, tuple[int, int]] = {
    "bpf_spin_lock": (4, 4),
    "bpf_res_spin_lock": (4, 4),   # the kernel's struct (u32 val), not bpf_experimental.h's 8 bytes
    "bpf_timer": (16, 8),
    "bpf_wq": (16, 8),
    "bpf_task_work": (8, 8),
    "bpf_list_head": (16, 8),
    "bpf_rb_root": (16, 8),
    "bpf_refcount": (4, 4),
    "kptr": (8, 8),
    "kptr_untrusted": (8, 8),
    "percpu_kptr": (8, 8),
    "uptr": (8, 8),
    "bpf_list_node": (24, 8),
    "bpf_rb_node": (32, 8),
}
# btf_get_field_type's table for the map-value mask of map_check_btf (no list/rb nodes)
_NAMED = (("bpf_spin_lock", True), ("bpf_res_spin_lock", True), ("bpf_timer", True),
          ("bpf_wq", True), ("bpf_task_work", True), ("bpf_list_head", False),
          ("bpf_rb_root", False), ("bpf_refcount", False))
# ... and for the struct scan of BPF_BTF_LOAD (btf.c: btf_parse_struct_metas)
_META_NAMED = (("bpf_spin_lock", True), ("bpf_res_spin_lock", True), ("bpf_list_head", False),
               ("bpf_list_node", False), ("bpf_rb_root", False), ("bpf_rb_node", False),
               ("bpf_refcount", False))
_ALL_KPTRS = frozenset({"kptr", "kptr_untrusted", "percpu_kptr", "uptr"})
_META_KPTRS = frozenset({"kptr", "kptr_untrusted", "percpu_kptr"})        # BPF_KPTR, no uptr
_KPTR_TAGS = {"kptr_untrusted": "kptr_untrusted", "kptr": "kptr", "percpu_kptr": "percpu_kptr",
              "uptr": "uptr"}
_UNIQUE = {kind for kind, unique in _NAMED if unique} | {"bpf_refcount"}
_REPEATABLE = {"kptr", "kptr_untrusted", "percpu_kptr", "uptr", "bpf_list_head", "bpf_rb_root"}
_NODE_OF = {"bpf_list_head": "bpf_list_node", "bpf_rb_root": "bpf_rb_node"}


class _Fail(Exception):
    def __init__(self, err: int, why: str) -> None:
        super().__init__(why)
        self.errno = err
        self.why = why


@dataclass
class _Info:
    kind: str
    off: int
    graph_value: int = 0        # list/rb roots: the struct id named by `contains:`
    graph_node: str = ""        # and its node member


@dataclass(frozen=True)
class FieldRecord:
    """The kernel's `struct btf_record` for one value type (or the reason it has none).

    `valid` False means the kernel's record is an ERR_PTR: the map is created, but has no
    special fields at all.  `fields` is sorted by offset; the `*_off` properties are None
    where the kernel keeps -EINVAL.
    """

    valid: bool = True
    fields: tuple[SpecialField, ...] = ()
    error: str | None = None
    errno: int | None = None
    # btf_parse_fields caches timer_off etc. in *scan* order, so with two timers at different
    # struct levels (each level has its own uniqueness check) the later one wins.
    cached_offsets: tuple[tuple[str, int], ...] = ()

    def offset_of(self, kind: str) -> int | None:
        """The kernel's `rec-><kind>_off` for unique kinds, else the first field of `kind`."""
        for k, off in self.cached_offsets:
            if k == kind:
                return off
        for f in self.fields:
            if f.kind == kind:
                return f.offset
        return None

    def has(self, kind: str) -> bool:
        return self.offset_of(kind) is not None

    @property
    def timer_off(self) -> int | None:
        return self.offset_of("bpf_timer")

    @property
    def spin_lock_off(self) -> int | None:
        return self.offset_of("bpf_spin_lock")

    @property
    def res_spin_lock_off(self) -> int | None:
        return self.offset_of("bpf_res_spin_lock")

    @property
    def wq_off(self) -> int | None:
        return self.offset_of("bpf_wq")

    @property
    def task_work_off(self) -> int | None:
        return self.offset_of("bpf_task_work")

    @property
    def refcount_off(self) -> int | None:
        return self.offset_of("bpf_refcount")

    @property
    def kptrs(self) -> list[SpecialField]:
        return [f for f in self.fields if f.kind in ("kptr", "kptr_untrusted", "percpu_kptr", "uptr")]


@dataclass
class _Scanner:
    btf: Btf
    named: tuple[tuple[str, bool], ...] = _NAMED
    kptr_kinds: frozenset[str] = _ALL_KPTRS

    def is_struct(self, tid: int) -> bool:
        return tid != 0 and self.btf.type(tid).kind in ("STRUCT", "UNION")

    def skip_mods(self, tid: int) -> int:
        for _ in range(len(self.btf.types)):
            if tid == 0 or self.btf.type(tid).kind not in MODIFIER_KINDS:
                break
            tid = self.btf.type(tid).type
        return tid

    # btf.c: btf_find_struct_field
    def struct_fields(self, sid: int, cap: int, level: int) -> list[_Info]:
        t = self.btf.type(sid)
        seen: set[str] = set()
        out: list[_Info] = []
        for idx, m in enumerate(t.members):
            if m.bit_offset % 8:
                raise _Fail(_errno.EINVAL, f"member '{m.name}' of {self.btf.describe(sid)} is not "
                                           "byte-aligned")
            out += self.field_one(sid, m.type, idx, m.bit_offset // 8, 0, seen, cap - len(out), level)
        return out

    # btf.c: btf_find_datasec_var
    def datasec_fields(self, did: int, cap: int) -> list[_Info]:
        seen: set[str] = set()
        out: list[_Info] = []
        for vs in self.btf.type(did).vars:
            var = self.btf.type(vs.type)
            out += self.field_one(vs.type, var.type, -1, vs.offset, vs.size, seen, cap - len(out), 0)
        return out

    # btf.c: btf_get_field_type
    def field_type(self, vtid: int, seen: set[str]) -> str | None:
        name = self.btf.type(vtid).name if vtid else ""
        for kind, unique in self.named:
            if name == kind:
                if unique:
                    if kind in seen:
                        raise _Fail(_errno.E2BIG, f"more than one {kind} in one struct")
                    seen.add(kind)
                return kind
        if self.kptr_kinds and not self.is_struct(vtid):
            return "kptr"
        return None

    # btf.c: btf_find_field_one
    def field_one(self, owner: int, vtid: int, var_idx: int, off: int, expected_size: int,
                  seen: set[str], cap: int, level: int) -> list[_Info]:
        nelems = 1
        for _ in range(MAX_RESOLVE_DEPTH):
            vt = self.btf.type(vtid)
            if vtid == 0 or vt.kind != "ARRAY":
                break
            nelems *= vt.nelems
            vtid = vt.type
        else:
            raise _Fail(_errno.E2BIG, "arrays nested too deeply")
        if nelems == 0:
            return []
        kind = self.field_type(vtid, seen)
        if kind is None and self.is_struct(vtid):
            sz = self.btf.type(vtid).size
            if expected_size and expected_size != sz * nelems:
                return []
            return self.nested(vtid, off, nelems, cap, level)
        if kind is None:
            return []
        sz, align = FIELD_LAYOUT[kind]
        if expected_size and expected_size != sz * nelems:
            return []
        if off % align:
            return []
        if kind == "kptr":
            info = self.kptr(vtid, off)
        elif kind in _NODE_OF:
            info = self.graph_root(owner, vtid, var_idx, off, sz, kind)
        else:
            vt = self.btf.type(vtid)
            info = _Info(kind, off) if self.is_struct(vtid) and vt.size == sz else None
        if info is None:
            return []
        if cap <= 0:
            raise _Fail(_errno.E2BIG, f"more than {BTF_FIELDS_MAX} special fields")
        return self.repeat([info], cap, nelems - 1, sz) if nelems > 1 else [info]

    # btf.c: btf_find_nested_struct
    def nested(self, sid: int, off: int, nelems: int, cap: int, level: int) -> list[_Info]:
        level += 1
        if level >= MAX_RESOLVE_DEPTH:
            raise _Fail(_errno.E2BIG, "structs nested too deeply")
        infos = self.struct_fields(sid, cap, level)
        for i in infos:
            i.off += off
        if infos and nelems > 1:
            infos = self.repeat(infos, cap, nelems - 1, self.btf.type(sid).size)
        return infos

    # btf.c: btf_repeat_fields
    def repeat(self, infos: list[_Info], cap: int, times: int, elem_size: int) -> list[_Info]:
        for i in infos:
            if i.kind not in _REPEATABLE:
                raise _Fail(_errno.EINVAL, f"an array of {i.kind} is not allowed")
        if len(infos) * (times + 1) > cap:
            raise _Fail(_errno.E2BIG, f"more than {BTF_FIELDS_MAX} special fields")
        out = list(infos)
        for r in range(times):
            out += [_Info(i.kind, i.off + (r + 1) * elem_size, i.graph_value, i.graph_node) for i in infos]
        return out

    # btf.c: btf_find_kptr
    def kptr(self, vtid: int, off: int) -> _Info | None:
        btf = self.btf
        t = btf.type(vtid)
        if vtid and t.kind == "VOLATILE":
            vtid = t.type
            t = btf.type(vtid)
        if not vtid or t.kind != "PTR":
            return None
        tag_id = t.type
        tag = btf.type(tag_id)
        if not tag_id or tag.kind != "TYPE_TAG" or tag.kflag:
            return None
        if tag.type and btf.type(tag.type).kind == "TYPE_TAG":
            raise _Fail(_errno.EINVAL, "a kptr pointer carries more than one type tag")
        kind = _KPTR_TAGS.get(tag.name)
        if kind is None:
            raise _Fail(_errno.EINVAL, f"pointer at offset {off} has type tag '{tag.name}', which is "
                                       "not a kptr tag")
        if kind not in self.kptr_kinds:
            return None
        if not self.is_struct(self.skip_mods(tag.type)):
            raise _Fail(_errno.EINVAL, f"{kind} at offset {off} does not point to a struct")
        return _Info(kind, off)

    # btf.c: btf_find_graph_root + btf_find_decl_tag_value
    def graph_root(self, owner: int, vtid: int, var_idx: int, off: int, sz: int, kind: str) -> _Info | None:
        btf = self.btf
        vt = btf.type(vtid)
        if not self.is_struct(vtid) or vt.size != sz:
            return None
        tags = [n for n in btf.decl_tags(owner, var_idx) if n.startswith("contains:")]
        if len(tags) != 1:
            raise _Fail(_errno.EINVAL, f"{kind} at offset {off} needs exactly one 'contains:' tag")
        spec = tags[0][len("contains:"):]
        if ":" not in spec:
            raise _Fail(_errno.EINVAL, f"malformed tag 'contains:{spec}'")
        sname, node = spec.split(":", 1)
        try:
            value_id = btf.find(sname, "STRUCT")
        except LinkError:
            raise _Fail(_errno.ENOENT, f"{kind} contains unknown struct '{sname}'") from None
        if not node:
            raise _Fail(_errno.EINVAL, f"{kind} at offset {off}: empty node name")
        return _Info(kind, off, value_id, node)

    # btf.c: btf_parse_graph_root
    def check_graph_root(self, info: _Info) -> None:
        btf = self.btf
        node_kind = _NODE_OF[info.kind]
        found = False
        for m in btf.type(info.graph_value).members:
            if m.name != info.graph_node:
                continue
            if found:
                raise _Fail(_errno.EINVAL, f"two members named '{m.name}'")
            found = True
            if not self.is_struct(m.type) or btf.type(m.type).name != node_kind:
                raise _Fail(_errno.EINVAL, f"'{m.name}' is not a {node_kind}")
            if m.bit_offset % 64:
                raise _Fail(_errno.EINVAL, f"'{m.name}' is misaligned")
        if not found:
            raise _Fail(_errno.ENOENT, f"no member '{info.graph_node}' for {info.kind}")


def parse_fields(btf: Btf, tid: int, value_size: int | None = None, *,
                 for_btf_load: bool = False) -> FieldRecord:
    """The record map_check_btf would attach to a map whose value type is `tid` (or, with
    `for_btf_load`, the one btf_parse_struct_metas builds for a struct at BPF_BTF_LOAD)."""
    tid = btf.resolve(tid)               # syscall.c: btf_type_id_size skips modifiers
    if value_size is None:
        value_size = btf.size_of(tid)
    sc = _Scanner(btf, _META_NAMED, _META_KPTRS) if for_btf_load else _Scanner(btf)
    t = btf.type(tid)
    try:
        if t.kind in ("STRUCT", "UNION") and tid:
            infos = sc.struct_fields(tid, BTF_FIELDS_MAX, 0)
        elif t.kind == "DATASEC":
            infos = sc.datasec_fields(tid, BTF_FIELDS_MAX)
        else:
            return FieldRecord()        # btf_find_field: -EINVAL, but only structs/datasecs are scanned
        next_off = 0
        for i in infos:                  # btf_parse_fields: overlap and bounds, in scan order
            size = FIELD_LAYOUT[i.kind][0]
            if i.off + size > value_size:
                raise _Fail(_errno.EFAULT, f"{i.kind} at {i.off} overruns the {value_size}-byte value")
            if i.off < next_off:
                raise _Fail(_errno.EEXIST, f"{i.kind} at {i.off} overlaps the previous field")
            next_off = i.off + size
            if i.kind in _NODE_OF:
                sc.check_graph_root(i)
        kinds = {i.kind for i in infos}
        if "bpf_spin_lock" in kinds and "bpf_res_spin_lock" in kinds:
            raise _Fail(_errno.EINVAL, "both bpf_spin_lock and bpf_res_spin_lock")
        if kinds & set(_NODE_OF) and not kinds & {"bpf_spin_lock", "bpf_res_spin_lock"}:
            raise _Fail(_errno.EINVAL, "bpf_list_head/bpf_rb_root need a bpf_spin_lock")
        if "bpf_refcount" not in kinds and {"bpf_list_node", "bpf_rb_node"} <= kinds:
            raise _Fail(_errno.EINVAL, "bpf_list_node and bpf_rb_node together need a bpf_refcount")
    except _Fail as exc:
        return FieldRecord(valid=False, error=exc.why, errno=exc.errno)
    fields = sorted((SpecialField(i.kind, i.off, FIELD_LAYOUT[i.kind][0]) for i in infos),
                    key=lambda f: f.offset)
    cached: dict[str, int] = {}
    for i in infos:
        if i.kind in _UNIQUE:
            cached[i.kind] = i.off
    return FieldRecord(fields=tuple(fields), cached_offsets=tuple(cached.items()))


_ALLOC_OBJ_FIELDS = ("bpf_spin_lock", "bpf_list_head", "bpf_list_node", "bpf_rb_root", "bpf_rb_node",
                     "bpf_refcount")


def btf_load_error(btf: Btf) -> tuple[int, str] | None:
    """Predict BPF_BTF_LOAD's struct scan (btf.c: btf_parse_struct_metas): every struct with a
    *direct* member of type bpf_spin_lock/list/rb/refcount (the first struct of that name) or a
    kptr pointer must give a valid, non-empty record, else the whole BTF load fails with that
    errno (an empty record is EFAULT).  None when the scan passes.  (Graph-ownership cycles,
    btf_check_and_fixup_fields, are not checked.)"""
    aof: set[int] = set()
    for name in _ALLOC_OBJ_FIELDS:
        with contextlib.suppress(LinkError):
            aof.add(btf.find(name, "STRUCT"))
    sc = _Scanner(btf, _META_NAMED, _META_KPTRS)
    for tid in range(1, len(btf.types)):
        with contextlib.suppress(_Fail):
            if sc.kptr(tid, 0) is not None:
                aof.add(tid)
    if not aof:
        return None
    for tid, t in enumerate(btf.types):
        if not tid or t.kind not in ("STRUCT", "UNION") or not any(m.type in aof for m in t.members):
            continue
        rec = parse_fields(btf, tid, t.size, for_btf_load=True)
        if not rec.valid:
            return rec.errno or _errno.EINVAL, f"{btf.describe(tid)}: {rec.error}"
        if not rec.fields:
            return _errno.EFAULT, f"{btf.describe(tid)}: special member found but no field record"
    return None
