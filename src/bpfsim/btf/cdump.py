"""BTF as compilable C: `bpftool btf dump file X format c` (a `vmlinux.h`-style header).

Job: a port of libbpf's type printer (btf_dump.c: btf_dump__dump_type and helpers, the
version bpftool v7.1 links) wrapped in bpftool's header/footer (btf.c: dump_btf_c).  Only the
declaration printer, not libbpf's typed-data dumper.  Must not import anything of bpfsim above
`btf`.  Function names below are libbpf's, so the two can be read side by side.
"""

from __future__ import annotations

from bpfsim.btf.btf import Btf
from bpfsim.btf.types import BtfType
from bpfsim.errors import UsageError

PTR_SIZE = 8
HEADER = ("#ifndef __VMLINUX_H__\n#define __VMLINUX_H__\n\n"
          "#ifndef BPF_NO_PRESERVE_ACCESS_INDEX\n"
          "#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)\n"
          "#endif\n\n")
FOOTER = ("#ifndef BPF_NO_PRESERVE_ACCESS_INDEX\n#pragma clang attribute pop\n#endif\n\n"
          "#endif /* __VMLINUX_H__ */\n")

NOT_ORDERED, ORDERING, ORDERED = 0, 1, 2
NOT_EMITTED, EMITTING, EMITTED = 0, 1, 2
_MODS = ("VOLATILE", "CONST", "RESTRICT", "TYPE_TAG")       # libbpf btf_is_mod
_MISSING_BASE_TYPES = {"__Poly8_t": "unsigned char", "__Poly16_t": "unsigned short",
                       "__Poly64_t": "unsigned long long", "__Poly128_t": "unsigned __int128"}


def _pfx(lvl: int) -> str:
    return "\t" * min(lvl, 13)


def _roundup(x: int, y: int) -> int:
    return (x + y - 1) // y * y if y > 0 else x    # y = 0 only for malformed BTF (align 0)


class _State:
    __slots__ = ("order", "emit", "fwd_emitted", "name_resolved", "referenced", "cached_name")

    def __init__(self) -> None:
        self.order = NOT_ORDERED
        self.emit = NOT_EMITTED
        self.fwd_emitted = False
        self.name_resolved = False
        self.referenced = False
        self.cached_name: str | None = None


class CDumper:
    """libbpf's `struct btf_dump` for one BTF."""

    def __init__(self, btf: Btf) -> None:
        self.btf = btf
        self.t = btf.types
        self.out: list[str] = []
        self.st = [_State() for _ in self.t]
        self.st[0].order = ORDERED
        self.st[0].emit = EMITTED
        self.type_names: dict[str, int] = {}
        self.ident_names: dict[str, int] = {}
        self.queue: list[int] = []
        for t in self.t[1:]:                    # btf_dump_mark_referenced
            for ref in self._refs(t):
                self.st[ref].referenced = True

    @staticmethod
    def _refs(t: BtfType) -> list[int]:
        k = t.kind
        if k in ("VOLATILE", "CONST", "RESTRICT", "PTR", "TYPEDEF", "FUNC", "VAR", "DECL_TAG", "TYPE_TAG"):
            return [t.type]
        if k == "ARRAY":
            return [t.index_type, t.type]
        return [m.type for m in t.members] + [p.type for p in t.params] + [v.type for v in t.vars]

    def p(self, s: str) -> None:
        self.out.append(s)

    # -- alignment (btf.c: btf__align_of, btf__resolve_size) -------------------------------

    def align_of(self, tid: int) -> int:
        t = self.t[tid]
        k = t.kind if tid else "void"
        if k in ("INT", "ENUM", "ENUM64", "FLOAT"):
            return min(PTR_SIZE, t.size)
        if k == "PTR":
            return PTR_SIZE
        if k in ("TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "TYPE_TAG", "ARRAY"):
            return self.align_of(t.type)
        if k in ("STRUCT", "UNION"):
            max_align = 1
            for m in t.members:
                align = self.align_of(m.type)
                if align <= 0:
                    return align
                max_align = max(max_align, align)
                if m.bitfield_size == 0 and m.bit_offset % (8 * align):
                    return 1
            return 1 if t.size % max_align else max_align
        return 0

    def resolve_size(self, tid: int) -> int:
        try:
            return self.btf.size_of(tid)
        except UsageError:
            return 0

    # -- ordering -----------------------------------------------------------------------------

    def order_type(self, tid: int, through_ptr: bool) -> int:
        s = self.st[tid]
        if s.order == ORDERED:
            return 1
        t = self.t[tid]
        if s.order == ORDERING:
            if t.kind in ("STRUCT", "UNION") and through_ptr and self._named(t):
                return 0
            raise UsageError(f"unsatisfiable type cycle, id:[{tid}]")
        k = t.kind
        if k in ("INT", "FLOAT"):
            s.order = ORDERED
            return 0
        if k == "PTR":
            err = self.order_type(t.type, True)
            s.order = ORDERED
            return err
        if k == "ARRAY":
            return self.order_type(t.type, False)
        if k in ("STRUCT", "UNION"):
            if through_ptr and self._named(t):
                return 0
            s.order = ORDERING
            for m in t.members:
                self.order_type(m.type, False)
            if self._named(t):
                self.queue.append(tid)
            s.order = ORDERED
            return 1
        if k in ("ENUM", "ENUM64", "FWD"):
            if self._named(t) or not s.referenced:
                self.queue.append(tid)
            s.order = ORDERED
            return 1
        if k == "TYPEDEF":
            is_strong = self.order_type(t.type, through_ptr)
            if through_ptr and not is_strong:
                return 0
            self.queue.append(tid)
            s.order = ORDERED
            return 1
        if k in _MODS:
            return self.order_type(t.type, through_ptr)
        if k == "FUNC_PROTO":
            is_strong = self.order_type(t.type, through_ptr) > 0
            for prm in t.params:
                if self.order_type(prm.type, through_ptr) > 0:
                    is_strong = True
            return int(is_strong)
        s.order = ORDERED                        # FUNC, VAR, DATASEC, DECL_TAG
        return 0

    # -- names --------------------------------------------------------------------------------

    @staticmethod
    def name_dups(names: dict[str, int], name: str) -> int:
        names[name] = names.get(name, 0) + 1
        return names[name]

    def resolve_name(self, tid: int, names: dict[str, int]) -> str:
        t = self.t[tid]
        s = self.st[tid]
        if not self._named(t):
            return ""
        if s.name_resolved:
            return s.cached_name or t.name
        if t.kind == "FWD" or (t.kind == "ENUM" and not t.values):
            s.name_resolved = True
            return t.name
        dup = self.name_dups(names, t.name)
        if dup > 1:
            s.cached_name = f"{t.name}___{dup}"
        s.name_resolved = True
        return s.cached_name or t.name

    def type_name(self, tid: int) -> str:
        return self.resolve_name(tid, self.type_names)

    def ident_name(self, tid: int) -> str:
        return self.resolve_name(tid, self.ident_names)

    @staticmethod
    def _named(t: BtfType) -> bool:
        """libbpf tests `t->name_off != 0`; types built in Python have a name but no offset."""
        return bool(t.name_off or t.name)

    # -- emission -----------------------------------------------------------------------------

    def dump_type(self, tid: int) -> None:
        """btf_dump__dump_type."""
        self.queue = []
        self.order_type(tid, False)
        for q in self.queue:
            self.emit_type(q, 0)

    def emit_type(self, tid: int, cont_id: int) -> None:
        s = self.st[tid]
        top_level = cont_id == 0
        if s.emit == EMITTED:
            return
        t = self.t[tid]
        k = t.kind
        if s.emit == EMITTING:
            if s.fwd_emitted:
                return
            if k in ("STRUCT", "UNION"):
                if tid == cont_id or not self._named(t):
                    return
                self.emit_struct_fwd(tid, t)
                self.p(";\n\n")
                s.fwd_emitted = True
            elif k == "TYPEDEF":
                if not self.blacklisted(t):
                    self.emit_typedef_def(tid, t, 0)
                    self.p(";\n\n")
                s.fwd_emitted = True
            return
        if k == "INT":
            name = self.type_name(tid)
            if name in _MISSING_BASE_TYPES:
                self.p(f"typedef {_MISSING_BASE_TYPES[name]} {name};\n\n")
            s.emit = EMITTED
        elif k in ("ENUM", "ENUM64"):
            if top_level:
                self.emit_enum_def(tid, t, 0)
                self.p(";\n\n")
            s.emit = EMITTED
        elif k in ("PTR", "VOLATILE", "CONST", "RESTRICT", "TYPE_TAG", "ARRAY"):
            self.emit_type(t.type, cont_id)
        elif k == "FWD":
            self.emit_fwd_def(tid, t)
            self.p(";\n\n")
            s.emit = EMITTED
        elif k == "TYPEDEF":
            s.emit = EMITTING
            self.emit_type(t.type, tid)
            if not s.fwd_emitted and not self.blacklisted(t):
                self.emit_typedef_def(tid, t, 0)
                self.p(";\n\n")
            s.emit = EMITTED
        elif k in ("STRUCT", "UNION"):
            s.emit = EMITTING
            if top_level or not self._named(t):
                new_cont = cont_id if not self._named(t) else tid
                for m in t.members:
                    self.emit_type(m.type, new_cont)
            elif not s.fwd_emitted and tid != cont_id:
                self.emit_struct_fwd(tid, t)
                self.p(";\n\n")
                s.fwd_emitted = True
            if top_level:
                self.emit_struct_def(tid, t, 0)
                self.p(";\n\n")
                s.emit = EMITTED
            else:
                s.emit = NOT_EMITTED
        elif k == "FUNC_PROTO":
            self.emit_type(t.type, cont_id)
            for prm in t.params:
                self.emit_type(prm.type, cont_id)

    @staticmethod
    def blacklisted(t: BtfType) -> bool:
        return t.name == "__builtin_va_list"

    def is_struct_packed(self, t: BtfType) -> bool:
        max_align = 1
        for m in t.members:
            align = self.align_of(m.type)
            if align and m.bitfield_size == 0 and m.bit_offset % (8 * align):
                return True
            max_align = max(align, max_align)
        return t.size % max_align != 0

    def emit_bit_padding(self, cur_off: int, next_off: int, next_align: int, in_bitfield: bool,
                         lvl: int) -> None:
        pads = (("long", PTR_SIZE * 8), ("int", 32), ("short", 16), ("char", 8))
        if cur_off >= next_off:
            return
        new_off, pad_type, pad_bits = 0, "", 0
        for pad_type, pad_bits in pads:  # noqa: B007 - the chosen pad is used below
            new_off = _roundup(cur_off, pad_bits)
            if new_off <= next_off:
                break
        if cur_off < new_off <= next_off:
            if (in_bitfield
                    or (new_off == next_off and _roundup(cur_off, next_align * 8) != new_off)
                    or (new_off != next_off and next_off - new_off <= new_off - cur_off)):
                self.p(f"\n{_pfx(lvl)}{pad_type}: {new_off - cur_off if in_bitfield else 0};")
            cur_off = new_off
        while cur_off != next_off:
            bits = min(next_off - cur_off, pad_bits)
            if bits == pad_bits:
                self.p(f"\n{_pfx(lvl)}{pad_type}: {pad_bits};")
                cur_off += bits
                continue
            for pad_type, pad_bits in reversed(pads):
                if pad_bits < bits:
                    continue
                self.p(f"\n{_pfx(lvl)}{pad_type}: {bits};")
                cur_off += bits
                break

    def emit_struct_fwd(self, tid: int, t: BtfType) -> None:
        name = self.type_name(tid)
        self.p(f"{'struct' if t.kind == 'STRUCT' else 'union'}{' ' if self._named(t) else ''}{name}")

    def emit_struct_def(self, tid: int, t: BtfType, lvl: int) -> None:
        is_struct = t.kind == "STRUCT"
        align = self.align_of(tid)
        packed = self.is_struct_packed(t) if is_struct else False
        self.p(f"{'struct' if is_struct else 'union'}{' ' if self._named(t) else ''}{self.type_name(tid)} {{")
        off = 0
        prev_bitfield = False
        for m in t.members:
            m_sz = m.bitfield_size
            m_off = m.bit_offset
            m_align = 1 if packed else self.align_of(m.type)
            in_bitfield = prev_bitfield and m_sz != 0
            self.emit_bit_padding(off, m_off, m_align, in_bitfield, lvl + 1)
            self.p(f"\n{_pfx(lvl + 1)}")
            self.emit_type_decl(m.type, m.name, lvl + 1)
            if m_sz:
                self.p(f": {m_sz}")
                off = m_off + m_sz
                prev_bitfield = True
            else:
                off = m_off + max(0, self.resolve_size(m.type)) * 8
                prev_bitfield = False
            self.p(";")
        if is_struct:
            self.emit_bit_padding(off, t.size * 8, align, False, lvl + 1)
        if t.members or t.size:
            self.p(f"\n{_pfx(lvl)}}}")
        else:
            self.p("}")
        if packed:
            self.p(" __attribute__((packed))")

    def emit_enum_def(self, tid: int, t: BtfType, lvl: int) -> None:
        self.p(f"enum{' ' if self._named(t) else ''}{self.type_name(tid)}")
        if not t.values:
            return
        self.p(" {")
        signed = t.kflag
        for v in t.values:
            dup = self.name_dups(self.ident_names, v.name)
            name = f"{v.name}___{dup}" if dup > 1 else v.name
            if t.kind == "ENUM":
                val = v.value if signed else v.value & 0xFFFFFFFF
                self.p(f"\n{_pfx(lvl + 1)}{name} = {val},")
            else:
                val = v.value if signed else v.value & 0xFFFFFFFFFFFFFFFF
                self.p(f"\n{_pfx(lvl + 1)}{name} = {val}{'LL' if signed else 'ULL'},")
        self.p(f"\n{_pfx(lvl)}}}")
        # libbpf >= 1.2 appends __attribute__((mode(byte|word))) for 1- and 8-byte enums;
        # the libbpf 1.1 inside bpftool v7.1 does not, and we print what bpftool prints.

    def emit_enum_fwd(self, tid: int) -> None:
        self.p(f"enum {self.type_name(tid)}")

    def emit_fwd_def(self, tid: int, t: BtfType) -> None:
        self.p(f"{'union' if t.kflag else 'struct'} {self.type_name(tid)}")

    def emit_typedef_def(self, tid: int, t: BtfType, lvl: int) -> None:
        name = self.ident_name(tid)
        if t.type == 0 and name == "__gnuc_va_list":
            self.p("typedef __builtin_va_list __gnuc_va_list")
            return
        self.p("typedef ")
        self.emit_type_decl(t.type, name, lvl)

    # -- declarations (btf_dump_emit_type_decl / _emit_type_chain) -----------------------------

    def emit_type_decl(self, tid: int, fname: str, lvl: int) -> None:
        stack: list[int] = []
        for _ in range(len(self.t) + 1):
            stack.append(tid)
            if tid == 0:
                break
            t = self.t[tid]
            if t.kind in ("PTR", "VOLATILE", "CONST", "RESTRICT", "FUNC_PROTO", "TYPE_TAG", "ARRAY"):
                tid = t.type
                continue
            break
        self.emit_type_chain(stack, fname, lvl)

    def emit_mods(self, decls: list[int]) -> None:
        while decls:
            k = self.t[decls[-1]].kind if decls[-1] else "void"
            if k == "VOLATILE":
                self.p("volatile ")
            elif k == "CONST":
                self.p("const ")
            elif k == "RESTRICT":
                self.p("restrict ")
            else:
                return
            decls.pop()

    def drop_mods(self, decls: list[int]) -> None:
        while decls and decls[-1] and self.t[decls[-1]].kind in _MODS:
            decls.pop()

    def emit_name(self, name: str, last_was_ptr: bool) -> None:
        self.p((" " if name and not last_was_ptr else "") + name)

    def emit_type_chain(self, decls: list[int], fname: str, lvl: int) -> None:
        last_was_ptr = True
        while decls:
            tid = decls.pop()
            if tid == 0:
                self.emit_mods(decls)
                self.p("void")
                last_was_ptr = False
                continue
            t = self.t[tid]
            k = t.kind
            if k in ("INT", "FLOAT"):
                self.emit_mods(decls)
                self.p(t.name)
            elif k in ("STRUCT", "UNION"):
                self.emit_mods(decls)
                if not self._named(t):
                    self.emit_struct_def(tid, t, lvl)
                else:
                    self.emit_struct_fwd(tid, t)
            elif k in ("ENUM", "ENUM64"):
                self.emit_mods(decls)
                if not self._named(t):
                    self.emit_enum_def(tid, t, lvl)
                else:
                    self.emit_enum_fwd(tid)
            elif k == "FWD":
                self.emit_mods(decls)
                self.emit_fwd_def(tid, t)
            elif k == "TYPEDEF":
                self.emit_mods(decls)
                self.p(self.ident_name(tid))
            elif k == "PTR":
                self.p("*" if last_was_ptr else " *")
            elif k == "VOLATILE":
                self.p(" volatile")
            elif k == "CONST":
                self.p(" const")
            elif k == "RESTRICT":
                self.p(" restrict")
            elif k == "TYPE_TAG":
                self.emit_mods(decls)
                if t.kflag:
                    self.p(f" __attribute__(({t.name}))")
                else:
                    self.p(f' __attribute__((btf_type_tag("{t.name}")))')
            elif k == "ARRAY":
                self.drop_mods(decls)
                if not decls:
                    self.emit_name(fname, last_was_ptr)
                    self.p(f"[{t.nelems}]")
                    return
                nxt = decls[-1]
                multidim = bool(nxt) and self.t[nxt].kind == "ARRAY"
                if fname and not last_was_ptr:
                    self.p(" ")
                if not multidim:
                    self.p("(")
                self.emit_type_chain(decls, fname, lvl)
                if not multidim:
                    self.p(")")
                self.p(f"[{t.nelems}]")
                return
            elif k == "FUNC_PROTO":
                self.drop_mods(decls)
                if decls:
                    self.p(" (")
                    self.emit_type_chain(decls, fname, lvl)
                    self.p(")")
                else:
                    self.emit_name(fname, last_was_ptr)
                self.p("(")
                params = t.params
                if not params or (len(params) == 1 and params[0].type == 0):
                    self.p("void)")
                    return
                for i, prm in enumerate(params):
                    if i:
                        self.p(", ")
                    if i == len(params) - 1 and prm.type == 0:
                        self.p("...")
                        break
                    self.emit_type_decl(prm.type, prm.name, lvl)
                self.p(")")
                return
            else:
                return
            last_was_ptr = k == "PTR"
        self.emit_name(fname, last_was_ptr)


def dump_c(btf: Btf) -> str:
    """`bpftool btf dump file X format c`."""
    d = CDumper(btf)
    try:
        for tid in range(1, len(btf.types)):
            d.dump_type(tid)
    except RecursionError:
        raise UsageError("BTF type graph is too deep to print as C") from None
    return HEADER + "".join(d.out) + FOOTER
