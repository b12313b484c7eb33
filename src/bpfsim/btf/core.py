"""CO-RE relocation: what a BTF.ext `bpf_core_relo` record becomes against a target BTF.

Job: a port of libbpf's relo_core.c (the same code the kernel runs for BPF_PROG_LOAD with
core_relos): candidate search by "essential" name (`task_struct___v2` matches
`task_struct`), spec parsing and matching through anonymous members and arrays, the
field/type/enum value calculations, candidate agreement, and instruction patching (poisoning
with `call 0xbad2310` when the target lacks the field).  Must not import anything of bpfsim
above `isa`.

Typical use (a loader relocating against the running kernel's BTF):
    res = calc_relo(local_btf, relo, vmlinux_btf)   # relo: a btf.ext.CoreRelo
    patch_insns(insns, relo.insn, res)
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Protocol

from bpfsim.btf.btf import Btf
from bpfsim.btf.ext import CORE_RELO_KINDS
from bpfsim.btf.types import INT_SIGNED, MODIFIER_KINDS, BtfType
from bpfsim.errors import LinkError, NotSupported, UsageError
from bpfsim.isa.insn import Instruction, lddw_pair

(FIELD_BYTE_OFFSET, FIELD_BYTE_SIZE, FIELD_EXISTS, FIELD_SIGNED, FIELD_LSHIFT_U64, FIELD_RSHIFT_U64,
 TYPE_ID_LOCAL, TYPE_ID_TARGET, TYPE_EXISTS, TYPE_SIZE, ENUMVAL_EXISTS, ENUMVAL_VALUE,
 TYPE_MATCHES) = range(13)
FIELD_KINDS = range(FIELD_BYTE_OFFSET, FIELD_RSHIFT_U64 + 1)
TYPE_KINDS = (TYPE_ID_LOCAL, TYPE_ID_TARGET, TYPE_EXISTS, TYPE_SIZE, TYPE_MATCHES)
ENUMVAL_KINDS = (ENUMVAL_EXISTS, ENUMVAL_VALUE)
SPEC_MAX_LEN = 64            # BPF_CORE_SPEC_MAX_LEN
POISON_IMM = 195896080       # 0xbad2310: "invalid func unknown#195896080"


class Relo(Protocol):
    """btf.ext.CoreRelo (insn = byte offset / 8) or spec.CoreRelo (insn = linked slot)."""

    type_id: int
    kind: int

    @property
    def access(self) -> str: ...

    @property
    def insn(self) -> int: ...


class _Poison(Exception):
    """-EUCLEAN in libbpf: the instruction must be poisoned."""


@dataclass
class Accessor:
    type_id: int
    idx: int
    name: str | None = None


@dataclass
class CoreSpec:
    btf: Btf
    root_type_id: int
    kind: int
    spec: list[Accessor] = field(default_factory=list)
    raw_spec: list[int] = field(default_factory=list)
    bit_offset: int = 0


@dataclass
class CoreResult:
    """bpf_core_relo_res: the value the instruction held and the one it must hold now."""

    orig_val: int = 0
    new_val: int = 0
    poison: bool = False
    validate: bool = True
    fail_memsz_adjust: bool = False
    orig_sz: int = 0
    new_sz: int = 0
    orig_type_id: int = 0
    new_type_id: int = 0
    target_type_id: int | None = None     # the matching candidate's root type, if any


def essential_name_len(name: str) -> int:
    """bpf_core_essential_name_len: drop a `___flavor` suffix (X___Y, X and Y not '_')."""
    n = len(name)
    for i in range(n - 5, -1, -1):
        s = name[i:i + 5]
        if s[0] != "_" and s[1:4] == "___" and s[4] != "_":
            return i + 1
    return n


def _essential(name: str) -> str:
    return name[:essential_name_len(name)]


def _kind_compat(a: BtfType, b: BtfType) -> bool:
    """btf_kind_core_compat: same kind, or ENUM vs ENUM64."""
    return a.kind == b.kind or {a.kind, b.kind} == {"ENUM", "ENUM64"}


def _skip(btf: Btf, tid: int) -> tuple[BtfType, int]:
    """skip_mods_and_typedefs -> (type, id)."""
    for _ in range(len(btf.types) + 1):
        t = btf.type(tid)
        if tid == 0 or t.kind not in MODIFIER_KINDS:
            return t, tid
        tid = t.type
    raise LinkError(f"BTF modifier loop at [{tid}]")


def _resolve_size(btf: Btf, tid: int) -> int:
    try:
        return btf.size_of(tid)
    except UsageError:
        raise LinkError(f"CO-RE: type [{tid}] has no size") from None


_INDEX: weakref.WeakKeyDictionary[Btf, tuple[int, dict[str, list[int]]]] = weakref.WeakKeyDictionary()


def _name_index(btf: Btf) -> dict[str, list[int]]:
    """Type ids by essential name, cached per target BTF (vmlinux has ~150k types)."""
    cached = _INDEX.get(btf)
    if cached is None or cached[0] != len(btf.types):
        index: dict[str, list[int]] = {}
        for i, t in enumerate(btf.types):
            if i and t.name:
                index.setdefault(_essential(t.name), []).append(i)
        cached = (len(btf.types), index)
        _INDEX[btf] = cached
    return cached[1]


def find_candidates(local_btf: Btf, local_id: int, targ_btf: Btf) -> list[int]:
    """bpf_core_add_cands: target types of a compatible kind whose essential name matches."""
    local_t = local_btf.type(local_id)
    essent = _essential(local_t.name)
    if not essent:
        raise LinkError(f"CO-RE: relocation against anonymous type [{local_id}]")
    return [i for i in _name_index(targ_btf).get(essent, ()) if _kind_compat(targ_btf.types[i], local_t)]


def types_are_compat(local_btf: Btf, local_id: int, targ_btf: Btf, targ_id: int, level: int = 32) -> bool:
    """__bpf_core_types_are_compat."""
    if not _kind_compat(local_btf.type(local_id), targ_btf.type(targ_id)):
        return False
    for _ in range(32):
        lt, local_id = _skip(local_btf, local_id)
        tt, targ_id = _skip(targ_btf, targ_id)
        lk = "void" if local_id == 0 else lt.kind
        tk = "void" if targ_id == 0 else tt.kind
        if lk != tk and {lk, tk} != {"ENUM", "ENUM64"}:
            return False
        if lk in ("void", "STRUCT", "UNION", "ENUM", "FWD", "ENUM64"):
            return True
        if lk == "INT":
            return lt.bits_offset == 0 and tt.bits_offset == 0
        if lk in ("PTR", "ARRAY"):
            local_id, targ_id = lt.type, tt.type
            continue
        if lk == "FUNC_PROTO":
            if len(lt.params) != len(tt.params):
                return False
            for lp, tp in zip(lt.params, tt.params):
                if level <= 0:
                    raise LinkError("CO-RE: function prototypes nested too deeply")
                if not types_are_compat(local_btf, _skip(local_btf, lp.type)[1], targ_btf,
                                        _skip(targ_btf, tp.type)[1], level - 1):
                    return False
            local_id, targ_id = lt.type, tt.type
            continue
        return False
    raise LinkError("CO-RE: types nested too deeply")


def _names_match(local_name: str, targ_name: str) -> bool:
    """bpf_core_names_match."""
    if not targ_name:
        return not local_name
    return _essential(local_name) == _essential(targ_name)


def types_match(local_btf: Btf, local_id: int, targ_btf: Btf, targ_id: int, behind_ptr: bool = False,
                level: int = 32) -> bool:
    """__bpf_core_types_match (BPF_CORE_TYPE_MATCHES): names, kinds and shapes, recursively."""
    if level <= 0:
        raise LinkError("CO-RE: types nested too deeply")
    for _ in range(32):
        lt, local_id = _skip(local_btf, local_id)
        tt, targ_id = _skip(targ_btf, targ_id)
        if not _names_match(lt.name, tt.name):
            return False
        lk = "UNKNOWN" if local_id == 0 else lt.kind
        tk = "UNKNOWN" if targ_id == 0 else tt.kind
        if lk == "UNKNOWN":
            return tk == "UNKNOWN"
        if lk == "FWD":
            if behind_ptr:
                if lk == tk:
                    return lt.kflag == tt.kflag
                return (tk == "STRUCT" and not lt.kflag) or (tk == "UNION" and lt.kflag)
            return lk == tk and lt.kflag == tt.kflag
        if lk in ("ENUM", "ENUM64"):
            if tk not in ("ENUM", "ENUM64") or lt.size != tt.size or len(lt.values) > len(tt.values):
                return False
            return all(any(_names_match(lv.name, tv.name) for tv in tt.values) for lv in lt.values)
        if lk in ("STRUCT", "UNION"):
            if behind_ptr:
                if lk == tk:
                    return True
                return tk == "FWD" and (lk == "UNION") == tt.kflag
            if lk != tk or len(lt.members) > len(tt.members):
                return False
            for lm in lt.members:      # bpf_core_composites_match
                if not any(_names_match(lm.name, tm.name)
                           and types_match(local_btf, lm.type, targ_btf, tm.type, behind_ptr, level - 1)
                           for tm in tt.members):
                    return False
            return True
        if lk == "INT":
            return (lk == tk and lt.size == tt.size
                    and (lt.encoding & INT_SIGNED) == (tt.encoding & INT_SIGNED))
        if lk == "PTR":
            if lk != tk:
                return False
            behind_ptr = True
            local_id, targ_id = lt.type, tt.type
            continue
        if lk == "ARRAY":
            if lk != tk or lt.nelems != tt.nelems:
                return False
            local_id, targ_id = lt.type, tt.type
            continue
        if lk == "FUNC_PROTO":
            if lk != tk or len(lt.params) != len(tt.params):
                return False
            for lp, tp in zip(lt.params, tt.params):
                if not types_match(local_btf, lp.type, targ_btf, tp.type, behind_ptr, level - 1):
                    return False
            local_id, targ_id = lt.type, tt.type
            continue
        return False
    raise LinkError("CO-RE: types nested too deeply")


def _fields_are_compat(local_btf: Btf, local_id: int, targ_btf: Btf, targ_id: int) -> bool:
    """bpf_core_fields_are_compat."""
    for _ in range(len(local_btf.types) + 1):
        lt, local_id = _skip(local_btf, local_id)
        tt, targ_id = _skip(targ_btf, targ_id)
        if lt.kind in ("STRUCT", "UNION") and tt.kind in ("STRUCT", "UNION") and local_id and targ_id:
            return True
        if local_id == 0 or targ_id == 0:
            return False              # void: kind UNKN, which no case accepts
        if not _kind_compat(lt, tt):
            return False
        if lt.kind in ("PTR", "FLOAT"):
            return True
        if lt.kind in ("FWD", "ENUM", "ENUM64"):
            a, b = _essential(lt.name), _essential(tt.name)
            return not a or not b or a == b
        if lt.kind == "INT":
            return lt.bits_offset == 0 and tt.bits_offset == 0
        if lt.kind == "ARRAY":
            local_id, targ_id = lt.type, tt.type
            continue
        return False
    return False


def _is_flex_arr(btf: Btf, acc: Accessor | None, nelems: int) -> bool:
    if acc is None or not acc.name or nelems > 0:
        return False
    return acc.idx == len(btf.type(acc.type_id).members) - 1


def parse_spec(btf: Btf, relo: Relo) -> CoreSpec:
    """bpf_core_parse_spec: the access string as accessors and a bit offset."""
    spec_str = relo.access
    spec = CoreSpec(btf, relo.type_id, relo.kind)
    bad = LinkError(f"CO-RE: invalid access string {spec_str!r} for [{relo.type_id}]"
                    f" {CORE_RELO_KINDS[relo.kind] if relo.kind < len(CORE_RELO_KINDS) else relo.kind}")
    if not spec_str or spec_str[0] == ":":
        raise bad
    if relo.kind in TYPE_KINDS:
        if spec_str != "0":
            raise bad
        return spec
    try:
        spec.raw_spec = [int(x) for x in spec_str.split(":")]
    except ValueError:
        raise bad from None
    if len(spec.raw_spec) > SPEC_MAX_LEN:
        raise bad
    t, tid = _skip(btf, relo.type_id)
    idx = spec.raw_spec[0]
    acc = Accessor(tid, idx)
    spec.spec.append(acc)
    if relo.kind in ENUMVAL_KINDS:
        if t.kind not in ("ENUM", "ENUM64") or len(spec.raw_spec) > 1 or not 0 <= idx < len(t.values):
            raise bad
        acc.name = t.values[idx].name
        return spec
    if relo.kind not in FIELD_KINDS:
        raise bad
    spec.bit_offset = idx * _resolve_size(btf, tid) * 8
    for idx in spec.raw_spec[1:]:
        t, tid = _skip(btf, tid)
        if t.kind in ("STRUCT", "UNION") and tid:
            if not 0 <= idx < len(t.members):
                raise bad
            m = t.members[idx]
            spec.bit_offset += m.bit_offset
            if m.name:
                spec.spec.append(Accessor(tid, idx, m.name))
            tid = m.type
        elif t.kind == "ARRAY" and tid:
            nelems = t.nelems
            _, tid = _skip(btf, t.type)
            if not _is_flex_arr(btf, spec.spec[-1], nelems) and not 0 <= idx < nelems:
                raise bad
            spec.spec.append(Accessor(tid, idx))
            spec.bit_offset += idx * _resolve_size(btf, tid) * 8
        else:
            raise bad
    return spec


def _match_member(local_btf: Btf, local_acc: Accessor, targ_btf: Btf, targ_id: int,
                  spec: CoreSpec) -> tuple[int, int]:
    """bpf_core_match_member -> (found, next target id)."""
    tt, targ_id = _skip(targ_btf, targ_id)
    if tt.kind not in ("STRUCT", "UNION") or not targ_id:
        return 0, targ_id
    local_member = local_btf.type(local_acc.type_id).members[local_acc.idx]
    for i, m in enumerate(tt.members):
        if len(spec.raw_spec) == SPEC_MAX_LEN:
            raise LinkError("CO-RE: struct/union/array nesting too deep")
        spec.bit_offset += m.bit_offset
        spec.raw_spec.append(i)
        if not m.name:
            found, nxt = _match_member(local_btf, local_acc, targ_btf, m.type, spec)
            if found:
                return found, nxt
        elif m.name == local_member.name:
            spec.spec.append(Accessor(targ_id, i, m.name))
            found = _fields_are_compat(local_btf, local_member.type, targ_btf, m.type)
            if not found:
                spec.spec.pop()
            return int(found), m.type
        spec.bit_offset -= m.bit_offset
        spec.raw_spec.pop()
    return 0, targ_id


def spec_match(local: CoreSpec, targ_btf: Btf, targ_id: int) -> CoreSpec | None:
    """bpf_core_spec_match: the target spec, or None when this candidate does not match."""
    targ = CoreSpec(targ_btf, targ_id, local.kind)
    if local.kind in TYPE_KINDS:
        if local.kind == TYPE_MATCHES:
            return targ if types_match(local.btf, local.root_type_id, targ_btf, targ_id) else None
        return targ if types_are_compat(local.btf, local.root_type_id, targ_btf, targ_id) else None
    if local.kind in ENUMVAL_KINDS:
        tt, targ_id = _skip(targ_btf, targ_id)
        if tt.kind not in ("ENUM", "ENUM64"):
            return None
        want = _essential(local.spec[0].name or "")
        for i, v in enumerate(tt.values):
            if _essential(v.name) == want:
                targ.spec.append(Accessor(targ_id, i, v.name))
                targ.raw_spec.append(i)
                return targ
        return None
    for i, lacc in enumerate(local.spec):
        tt, targ_id = _skip(targ_btf, targ_id)
        if lacc.name:
            found, targ_id = _match_member(local.btf, lacc, targ_btf, targ_id, targ)
            if found <= 0:
                return None
        else:
            if i > 0:
                if tt.kind != "ARRAY" or not targ_id:
                    return None
                prev = targ.spec[-1] if targ.spec else None
                if not _is_flex_arr(targ_btf, prev, tt.nelems) and lacc.idx >= tt.nelems:
                    return None
                _, targ_id = _skip(targ_btf, tt.type)
            if len(targ.raw_spec) == SPEC_MAX_LEN:
                raise LinkError("CO-RE: struct/union/array nesting too deep")
            targ.spec.append(Accessor(targ_id, lacc.idx))
            targ.raw_spec.append(lacc.idx)
            targ.bit_offset += lacc.idx * _resolve_size(targ_btf, targ_id) * 8
    return targ


def _field_relo(relo: Relo, spec: CoreSpec | None, res: CoreResult, orig: bool) -> None:
    """bpf_core_calc_field_relo for one side (orig: the local spec, else the target)."""
    def put(val: int, sz: int = 0, type_id: int = 0) -> None:
        if orig:
            res.orig_val, res.orig_sz, res.orig_type_id = val, sz, type_id
        else:
            res.new_val, res.new_sz, res.new_type_id = val, sz, type_id

    if relo.kind == FIELD_EXISTS:
        put(1 if spec else 0)
        return
    if spec is None:
        raise _Poison
    acc = spec.spec[-1]
    btf = spec.btf
    t = btf.type(acc.type_id)
    if not acc.name:
        if relo.kind == FIELD_BYTE_OFFSET:
            put(spec.bit_offset // 8, _resolve_size(btf, acc.type_id), acc.type_id)
        elif relo.kind == FIELD_BYTE_SIZE:
            put(_resolve_size(btf, acc.type_id))
        else:
            raise LinkError(f"CO-RE: relo {relo.kind} at insn #{relo.insn} can't be applied "
                            "to array access")
        if orig:
            res.validate = True
        return
    m = t.members[acc.idx]
    mt, field_type_id = _skip(btf, m.type)
    bit_off = spec.bit_offset
    bit_sz = m.bitfield_size
    bitfield = bit_sz > 0
    if bitfield:
        byte_sz = mt.size
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise LinkError(f"CO-RE: relo {relo.kind} at insn #{relo.insn} can't be "
                                "satisfied for bitfield")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz = _resolve_size(btf, field_type_id)
        byte_off = spec.bit_offset // 8
        bit_sz = byte_sz * 8
    if orig:
        res.validate = not bitfield
    if relo.kind == FIELD_BYTE_OFFSET:
        if bitfield:
            put(byte_off)
        else:
            put(byte_off, byte_sz, field_type_id)
    elif relo.kind == FIELD_BYTE_SIZE:
        put(byte_sz)
    elif relo.kind == FIELD_SIGNED:
        put(int((mt.kind in ("ENUM", "ENUM64") and mt.kflag)
                or (mt.kind == "INT" and bool(mt.encoding & INT_SIGNED))))
        if orig:
            res.validate = True
    elif relo.kind == FIELD_LSHIFT_U64:
        if btf.byteorder == "little":
            put(64 - (bit_off + bit_sz - byte_off * 8))
        else:
            put((8 - byte_sz) * 8 + (bit_off - byte_off * 8))
    elif relo.kind == FIELD_RSHIFT_U64:
        put(64 - bit_sz)
        if orig:
            res.validate = True


def _calc(relo: Relo, local: CoreSpec, targ: CoreSpec | None) -> CoreResult:
    """bpf_core_calc_relo."""
    res = CoreResult()
    try:
        if relo.kind in FIELD_KINDS:
            _field_relo(relo, local, res, True)
            _field_relo(relo, targ, res, False)
            if res.orig_sz != res.new_sz:
                ot = local.btf.type(res.orig_type_id)
                nt = targ.btf.type(res.new_type_id) if targ else None
                # safe size changes: pointers, and unsigned ints (zero extension keeps the value)
                both_ptr = nt is not None and ot.kind == nt.kind == "PTR"
                both_uint = (nt is not None and ot.kind == nt.kind == "INT"
                             and ot.encoding != INT_SIGNED and nt.encoding != INT_SIGNED)
                res.fail_memsz_adjust = not (both_ptr or both_uint)
        elif relo.kind in TYPE_KINDS:
            for spec, orig in ((local, True), (targ, False)):
                if spec is None:
                    val = 0
                elif relo.kind == TYPE_ID_TARGET:
                    val = spec.root_type_id
                elif relo.kind in (TYPE_EXISTS, TYPE_MATCHES):
                    val = 1
                elif relo.kind == TYPE_SIZE:
                    val = _resolve_size(spec.btf, spec.root_type_id)
                else:
                    raise NotSupported(f"CO-RE relocation kind {relo.kind}")
                if orig:
                    res.orig_val = val
                else:
                    res.new_val = val
            res.validate = relo.kind != TYPE_ID_TARGET
        elif relo.kind in ENUMVAL_KINDS:
            for spec, orig in ((local, True), (targ, False)):
                if relo.kind == ENUMVAL_EXISTS:
                    val = 1 if spec else 0
                else:
                    if spec is None:
                        raise _Poison
                    t = spec.btf.type(spec.spec[0].type_id)
                    val = t.values[spec.spec[0].idx].value
                    if t.kind == "ENUM":      # the __s32 `val`, widened to u64 (sign-extended)
                        val = (val & 0xFFFFFFFF) - ((val & 0x80000000) << 1)
                    val &= 0xFFFFFFFFFFFFFFFF
                if orig:
                    res.orig_val = val
                else:
                    res.new_val = val
        else:
            raise NotSupported(f"CO-RE relocation kind {relo.kind}")
    except _Poison:
        res.poison = True
    return res


def calc_relo(local_btf: Btf, relo: Relo, targ_btf: Btf, candidates: list[int] | None = None) -> CoreResult:
    """bpf_core_calc_relo_insn: the result for one relocation against `targ_btf`.

    LinkError for a malformed record or ambiguous candidates (libbpf refuses to load);
    a field that exists in no candidate gives `poison=True` (libbpf loads, the verifier then
    rejects the instruction if it is reachable)."""
    local_t = local_btf.type(relo.type_id)
    local = parse_spec(local_btf, relo)
    if relo.kind == TYPE_ID_LOCAL:
        return CoreResult(orig_val=relo.type_id, new_val=relo.type_id, validate=False)
    if not local_t.name:
        raise LinkError(f"CO-RE: <{CORE_RELO_KINDS[relo.kind]}> relocation doesn't support anonymous types")
    if candidates is None:
        candidates = find_candidates(local_btf, relo.type_id, targ_btf)
    best: CoreResult | None = None
    best_spec: CoreSpec | None = None
    for cand in candidates:
        cspec = spec_match(local, targ_btf, cand)
        if cspec is None:
            continue
        cres = _calc(relo, local, cspec)
        cres.target_type_id = cand
        if best is None:
            best, best_spec = cres, cspec
        elif cspec.bit_offset != best_spec.bit_offset:   # type: ignore[union-attr]
            raise LinkError(f"CO-RE: relo at insn #{relo.insn}: field offset ambiguity: "
                            f"{cspec.bit_offset} != {best_spec.bit_offset}")   # type: ignore[union-attr]
        elif cres.poison != best.poison or cres.new_val != best.new_val:
            raise LinkError(f"CO-RE: relo at insn #{relo.insn}: relocation decision ambiguity")
    return best if best is not None else _calc(relo, local, None)


def _poison_slot(ins: Instruction) -> Instruction:
    return Instruction(0x85, 0, 0, 0, POISON_IMM)


def patch_insns(insns: list[Instruction], idx: int, res: CoreResult) -> None:
    """bpf_core_patch_insn, in place on a slot list (Instruction is frozen: slots are replaced)."""
    ins = insns[idx]
    cls = ins.cls

    def poison() -> None:
        if ins.opcode == 0x18 and idx + 1 < len(insns):
            insns[idx + 1] = _poison_slot(insns[idx + 1])
        insns[idx] = _poison_slot(ins)

    if res.poison:
        poison()
        return
    if cls in (0x04, 0x07):                                       # ALU, ALU64
        if ins.opcode & 0x08:
            raise LinkError(f"CO-RE: insn #{idx} is not an ALU op with an immediate")
        if res.validate and (ins.imm & 0xFFFFFFFF) != (res.orig_val & 0xFFFFFFFF):
            raise LinkError(f"CO-RE: unexpected insn #{idx} (ALU/ALU64) value: got {ins.imm}, "
                            f"exp {res.orig_val} -> {res.new_val}")
        imm = res.new_val & 0xFFFFFFFF
        insns[idx] = Instruction(ins.opcode, ins.dst, ins.src, ins.off, imm - (1 << 32) if imm >> 31 else imm)
    elif cls in (0x01, 0x02, 0x03):                               # LDX, ST, STX
        if res.validate and ins.off != res.orig_val:
            raise LinkError(f"CO-RE: unexpected insn #{idx} (LDX/ST/STX) value: got {ins.off}, "
                            f"exp {res.orig_val} -> {res.new_val}")
        if res.new_val > 0x7FFF:
            raise LinkError(f"CO-RE: insn #{idx} (LDX/ST/STX) value too big: {res.new_val}")
        if res.fail_memsz_adjust:
            poison()
            return
        opcode = ins.opcode
        if res.new_sz != res.orig_sz:
            sizes = {0x18: 8, 0x00: 4, 0x08: 2, 0x10: 1}
            if sizes.get(opcode & 0x18) != res.orig_sz:
                raise LinkError(f"CO-RE: insn #{idx} (LDX/ST/STX) unexpected mem size")
            new = {8: 0x18, 4: 0x00, 2: 0x08, 1: 0x10}.get(res.new_sz)
            if new is None:
                raise LinkError(f"CO-RE: insn #{idx} (LDX/ST/STX) invalid new mem size: {res.new_sz}")
            opcode = (opcode & ~0x18) | new
        insns[idx] = Instruction(opcode, ins.dst, ins.src, res.new_val, ins.imm)
    elif ins.opcode == 0x18 and idx + 1 < len(insns):              # LD_IMM64
        tail = insns[idx + 1]
        if ins.src or ins.off or tail.opcode or tail.dst or tail.src or tail.off:
            raise LinkError(f"CO-RE: insn #{idx} (LDIMM64) has unexpected form")
        imm = ins.imm64 if ins.imm64 is not None else (ins.imm & 0xFFFFFFFF) | ((tail.imm & 0xFFFFFFFF) << 32)
        if res.validate and imm != res.orig_val:
            raise LinkError(f"CO-RE: unexpected insn #{idx} (LDIMM64) value: got {imm}, exp {res.orig_val}")
        insns[idx:idx + 2] = lddw_pair(ins.dst, 0, res.new_val)
    else:
        raise LinkError(f"CO-RE: trying to relocate unrecognized insn #{idx}, code:{ins.opcode:#x}")
