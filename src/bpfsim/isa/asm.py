"""The assembler: text in either of our two dialects -> one `Instruction` per 8-byte slot.

Dialects (chosen per line with `dialect="auto"`):

* **conformance** — the bpf_conformance `-- asm` dialect (`mov %r0, 1`, `ldxw %r0, [%r1+4]`,
  `jne32 %r1, %r0, exit`, `lock fetch add [%r10-8], %r1`, `call local func1`, `call %r2`),
  exactly as /work/shared/conformance/FORMAT.md describes it, including the implicit `exit`
  label (the first `exit` instruction).
* **llvm** — llvm-objdump-19's syntax (`r0 = 0x1`, `if w1 s< w2 goto -0x1 <f+0x8>`,
  `lock *(u64 *)(r1 + 0x0) += r2`, `r1 = 0x1122334455667788 ll`), plus the round-trip forms
  `disasm` prints where llvm's own text loses bits (`call local +0x3`, `call kfunc 0x5, 0x0`,
  `ld_pseudo r1, 0x2, 0x100000007`).  A trailing `<...>` annotation and an objdump listing
  prefix (`  12:\t85 00 ... \t`) are ignored, so objdump output assembles back.

Both dialects are parsed from the templates of `isa.opcodes.OPCODES`; this module holds no
mnemonic of its own.  Jump targets may be labels (`name:` on its own line) or `+N`/`-N` slots
relative to the next instruction.  Every error is a ParseError naming the line.

Must not import ELF, maps or helpers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bpfsim.errors import ParseError
from bpfsim.isa.insn import Instruction, lddw_pair
from bpfsim.isa.opcodes import OPCODES, OpSpec

__all__ = ["assemble"]

_NUM = r"[+-]?\s*(?:0[xX][0-9a-fA-F]+|\d+)"
_IDENT = r"[A-Za-z_.$][\w.$]*"


# ---------------------------------------------------------------------------------------------
# numbers

def _int(text: str, line: int, what: str) -> int:
    t = text.replace(" ", "").replace("\t", "")
    neg = t.startswith("-")
    if t[:1] in "+-":
        t = t[1:]
    try:
        v = int(t, 16) if t.lower().startswith("0x") else int(t, 10)
    except ValueError:
        raise ParseError(f"line {line}: bad {what} {text!r}", offset=line) from None
    return -v if neg else v


def _fit(v: int, bits: int, line: int, what: str, *, unsigned_ok: bool = True) -> int:
    """Wrap v into a signed `bits` field; accept the signed range and (for hex/bit patterns)
    the unsigned range, reject anything else."""
    lo, hi = -(1 << (bits - 1)), (1 << bits) - 1 if unsigned_ok else (1 << (bits - 1)) - 1
    if not lo <= v <= hi:
        raise ParseError(f"line {line}: {what} {v} does not fit in {bits} bits", offset=line)
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


# ---------------------------------------------------------------------------------------------
# the result of parsing one line, before labels are resolved

@dataclass
class _Parsed:
    spec: OpSpec
    line: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    imm64: int = 0
    target: str | int | None = None  # label name or relative slot offset


def _apply_fixed(p: _Parsed) -> None:
    for k, v in p.spec.fixed:
        setattr(p, k, v)


# ---------------------------------------------------------------------------------------------
# conformance dialect

_REG_CONF = re.compile(r"^%r(\d+)$")
_CONF_REG_ANY = re.compile(r"%r\d")
_MEM_CONF = re.compile(r"^\[%r(\d+)(?:([+-])(0[xX][0-9a-fA-F]+|\d+))?\]$")


def _conf_operands(tmpl: str) -> tuple[tuple[str, ...], list[str]]:
    """Split a conformance template into mnemonic words and operand placeholders."""
    head, _, rest = tmpl.partition("{")
    words = tuple(head.split())
    ops = re.findall(r"\{(\w+)\}", tmpl)
    return words, ops


_CONF_FORMS: dict[tuple[str, ...], list[tuple[OpSpec, list[str]]]] = {}
for _spec in OPCODES:
    _words, _ops = _conf_operands(_spec.conf)
    # "lddw {d}, map_fd {imm64}": the pseudo keyword is part of the operand, not the mnemonic
    _CONF_FORMS.setdefault(_words, []).append((_spec, _ops))
    for _alias in _spec.aliases:
        _CONF_FORMS.setdefault(tuple(_alias.split()), []).append((_spec, _ops))
_CONF_MAXWORDS = max(len(k) for k in _CONF_FORMS)
_CONF_FIRST = {k[0] for k in _CONF_FORMS}


def _conf_reg(tok: str) -> int | None:
    m = _REG_CONF.match(tok)
    return int(m.group(1)) if m and int(m.group(1)) <= 15 else None


def _conf_target(tok: str, line: int) -> str | int:
    if tok[:1] in "+-":
        return _int(tok, line, "jump offset")
    if re.fullmatch(_IDENT, tok):
        return tok
    raise ParseError(f"line {line}: bad jump target {tok!r}", offset=line)


def _try_conf_form(spec: OpSpec, ops: list[str], args: list[str], line: int) -> _Parsed | None:
    """Fill a _Parsed from args if their kinds fit this form's operands, else None."""
    if spec.name.startswith("lddw_"):  # `lddw %r1, map_fd 3`: keyword token before imm64
        kw = spec.name[5:]
        if len(args) != 3 or args[1] != kw:
            return None
        args = [args[0], args[2]]
    elif spec.name == "lddw" and len(args) != 2:
        return None
    if "koff" in ops and len(args) == len(ops) - 1:
        args = [*args, "0"]
    if len(args) != len(ops):
        return None
    p = _Parsed(spec, line)
    for ph, tok in zip(ops, args):
        if ph in ("d", "s"):
            r = _conf_reg(tok)
            if r is None:
                return None
            setattr(p, "dst" if ph == "d" else "src", r)
        elif ph in ("md", "ms"):
            m = _MEM_CONF.match(tok)
            if not m:
                return None
            setattr(p, "dst" if ph == "md" else "src", int(m.group(1)))
            if m.group(2):
                p.off = _fit(_int(m.group(2) + m.group(3), line, "offset"), 16, line, "offset",
                             unsigned_ok=False)
        elif tok.startswith("%") or tok.startswith("["):
            return None
        elif ph == "imm":
            p.imm = _fit(_int(tok, line, "immediate"), 32, line, "immediate")
        elif ph == "imm64":
            v = _int(tok, line, "immediate")
            if not -(1 << 63) <= v < (1 << 64):
                raise ParseError(f"line {line}: immediate {tok} does not fit in 64 bits", offset=line)
            p.imm64 = v & ((1 << 64) - 1)
        elif ph in ("tgt", "tgt32"):
            p.target = _conf_target(tok, line)
        elif ph == "koff":
            p.off = _fit(_int(tok, line, "offset"), 16, line, "offset")
        elif ph == "asc":
            return None  # handled below (two tokens)
    _apply_fixed(p)
    return p


def _parse_conf(text: str, line: int) -> _Parsed:
    toks = [t[:-1] if t.endswith(",") else t for t in text.split()]
    for n in range(min(_CONF_MAXWORDS, len(toks)), 0, -1):
        forms = _CONF_FORMS.get(tuple(t.lower() for t in toks[:n]))
        if not forms:
            continue
        args = toks[n:]
        for spec, ops in forms:
            if "asc" in ops:  # addr_space_cast %rD, %rS, DST_AS, SRC_AS
                if len(args) == 4 and _conf_reg(args[0]) is not None and _conf_reg(args[1]) is not None:
                    p = _Parsed(spec, line, dst=_conf_reg(args[0]) or 0, src=_conf_reg(args[1]) or 0)
                    _apply_fixed(p)
                    p.imm = _asc(args[2], args[3], line)
                    return p
                continue
            p = _try_conf_form(spec, ops, args, line)
            if p is not None:
                return p
        raise ParseError(f"line {line}: bad operands for {' '.join(toks[:n])!r}: {text.strip()!r}",
                         offset=line)
    raise ParseError(f"line {line}: unknown mnemonic {toks[0]!r}", offset=line)


def _asc(dst_as: str, src_as: str, line: int) -> int:
    d = _int(dst_as, line, "address space")
    s = _int(src_as, line, "address space")
    if not (0 <= d <= 0xFFFF and 0 <= s <= 0xFFFF):
        raise ParseError(f"line {line}: address space out of range", offset=line)
    return _fit(d << 16 | s, 32, line, "immediate")


# ---------------------------------------------------------------------------------------------
# llvm dialect: each template compiled to a regex, bucketed by its operator characters

def _signature(text: str) -> str:
    """The punctuation skeleton of a line: numbers (with their sign) and words removed."""
    t = re.sub(r"(?<![\w.$])" + _NUM + r"(?![\w.$])", "", text)
    t = re.sub(r"[\w.$]+", "", t)
    return re.sub(r"\s+", "", t)


_PH_RE = {
    "d": r"(?P<d>\d+)", "s": r"(?P<s>\d+)",
    "imm": rf"(?P<imm>{_NUM})", "lo": rf"(?P<imm>{_NUM})", "imm64": rf"(?P<imm64>{_NUM})",
    "off": r"(?P<off>[+-]\s*(?:0[xX][0-9a-fA-F]+|\d+))",
    "idx": r"(?P<imm>[+-]\s*(?:0[xX][0-9a-fA-F]+|\d+))",
    "tgt": rf"(?P<tgt>{_NUM}|{_IDENT})", "tgt32": rf"(?P<tgt32>{_NUM}|{_IDENT})",
    "koff": rf"(?P<koff>{_NUM})", "asc": rf"(?P<asc1>{_NUM})\s*,\s*(?P<asc2>{_NUM})",
}


def _compile_llvm(tmpl: str) -> re.Pattern[str]:
    out = []
    seen: set[str] = set()
    for part in re.split(r"(\{\w+\}|\s+)", tmpl):
        if not part:
            continue
        if part.startswith("{"):
            name = part[1:-1]
            out.append(f"(?P={name})" if name in seen else _PH_RE[name])  # `r1 = -r1`
            seen.add(name)
        elif part.isspace():
            out.append(r"\s+")
        else:
            out.append(re.escape(part))
    # a space in a template is required only between two word characters
    rx = "".join(out)
    return re.compile(r"^\s*" + rx + r"\s*$")


_SAMPLE = {"{asc}": "1, 1", "{off}": "+ 1", "{idx}": "+ 1", "{tgt}": "+1", "{tgt32}": "+1"}


def _sig_of_template(tmpl: str) -> str:
    for k, v in _SAMPLE.items():
        tmpl = tmpl.replace(k, v)
    return _signature(re.sub(r"\{\w+\}", "1", tmpl))


_LLVM_FORMS: dict[str, list[tuple[re.Pattern[str], OpSpec, str]]] = {}


def _llvm_templates(spec: OpSpec) -> list[str]:
    """The texts one form may take: round-trip form first (it wins ambiguities), then
    llvm-objdump's with and without --mcpu=v3."""
    out: list[str] = []
    for t in (spec.llvm_rt, spec.llvm32, spec.llvm, *spec.llvm_alt):
        if t and t not in out:
            out.append(t)
    return out


_seen: set[str] = set()
for _spec in sorted(OPCODES, key=lambda s: s.llvm_rt is None):
    for _t in _llvm_templates(_spec):
        if _t in _seen and _spec.llvm_rt != _t:
            continue  # an ambiguous llvm text (`call 0x5`) belongs to the form that owns it
        _seen.add(_t)
        _LLVM_FORMS.setdefault(_sig_of_template(_t), []).append((_compile_llvm(_t), _spec, _t))
# exact-match priority: owners of a template (llvm_rt == template) first
for _forms in _LLVM_FORMS.values():
    _forms.sort(key=lambda f: f[1].llvm_rt != f[2])

_LISTING = re.compile(r"^\s*\d+:\s+(?:[0-9a-f]{2} ){7}[0-9a-f]{2}(?: (?:[0-9a-f]{2} ){7}[0-9a-f]{2})?\s+")
_ANNOT = re.compile(r"\s*<[^<>]*>\s*$")


def _parse_llvm(text: str, line: int) -> _Parsed:
    text = _ANNOT.sub("", _LISTING.sub("", text)).strip()
    for rx, spec, _t in _LLVM_FORMS.get(_signature(text), ()):
        m = rx.match(text)
        if not m:
            continue
        g = m.groupdict()
        p = _Parsed(spec, line)
        if g.get("d") is not None:
            p.dst = int(g["d"])
        if g.get("s") is not None:
            p.src = int(g["s"])
        if g.get("imm") is not None:
            p.imm = _fit(_int(g["imm"], line, "immediate"), 32, line, "immediate")
        if g.get("imm64") is not None:
            v = _int(g["imm64"], line, "immediate")
            if not -(1 << 63) <= v < (1 << 64):
                raise ParseError(f"line {line}: immediate does not fit in 64 bits", offset=line)
            p.imm64 = v & ((1 << 64) - 1)
        if g.get("off") is not None:
            p.off = _fit(_int(g["off"], line, "offset"), 16, line, "offset", unsigned_ok=False)
        if g.get("koff") is not None:
            p.off = _fit(_int(g["koff"], line, "offset"), 16, line, "offset")
        for key in ("tgt", "tgt32"):
            if g.get(key) is not None:
                tok = g[key].replace(" ", "")
                p.target = tok if re.fullmatch(_IDENT, tok) else _int(tok, line, "jump offset")
        if g.get("asc1") is not None:
            p.imm = _asc(g["asc1"], g["asc2"], line)
        _apply_fixed(p)
        if any(v > 15 for v in (p.dst, p.src)):
            raise ParseError(f"line {line}: register number out of range", offset=line)
        return p
    raise ParseError(f"line {line}: cannot parse instruction {text!r}", offset=line)


# ---------------------------------------------------------------------------------------------
# driver

def _strip_comment(raw: str, dialect: str) -> str:
    # conformance: '#' starts a comment; llvm: '#' and ';' and '//' do (llvm-mc's BPF syntax)
    s = raw.split("#", 1)[0]
    if dialect != "conformance":
        s = s.split("//", 1)[0].split(";", 1)[0]
    return s.rstrip("\r").strip()


def _parse_line(text: str, line: int, dialect: str) -> _Parsed:
    if dialect == "conformance":
        return _parse_conf(text, line)
    if dialect == "llvm":
        return _parse_llvm(text, line)
    first = text.split(None, 1)[0].lower() if text.split() else ""
    conf_reg = _CONF_REG_ANY.search(text) is not None
    if conf_reg or (first in _CONF_FIRST and "=" not in text and "*(" not in text):
        try:
            return _parse_conf(text, line)
        except ParseError:
            if conf_reg:
                raise
            return _parse_llvm(text, line)
    return _parse_llvm(text, line)


_LABEL = re.compile(rf"^\s*({_IDENT})\s*:(.*)$")


def assemble(text: str, dialect: str = "auto") -> list[Instruction]:
    """Assemble a program; returns one Instruction per slot (a lddw gives two), the same
    shape `isa.insn.decode_slots` returns.  `dialect` is "auto", "conformance" or "llvm".

    Raises ParseError (with `offset` = the 1-based line number) for anything it cannot read:
    unknown mnemonic, bad operand, out-of-range number, undefined or duplicate label, jump
    offset that does not fit its field.
    """
    if dialect not in ("auto", "conformance", "llvm"):
        raise ParseError(f"unknown assembly dialect {dialect!r}")
    parsed: list[_Parsed] = []
    labels: dict[str, int] = {}
    slot = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        s = _strip_comment(raw, dialect)
        if not s:
            continue
        if s.startswith(".") and not s.endswith(":"):
            continue  # an assembler directive (.text, .globl f, .type f,@function)
        m = _LABEL.match(s)
        if m and not _LISTING.match(s):
            name = m.group(1)
            if name in labels:
                raise ParseError(f"line {lineno}: duplicate label {name!r}", offset=lineno)
            labels[name] = slot
            if dialect == "conformance" or "=" not in m.group(2):
                continue  # FORMAT.md: anything after a label on its line is ignored
            s = m.group(2).strip()
            if not s:
                continue
        p = _parse_line(s, lineno, dialect)
        if p.spec.name == "exit" and "exit" not in labels:
            labels["exit"] = slot  # the implicit `exit` label of the conformance dialect
        parsed.append(p)
        slot += 2 if p.spec.is_lddw else 1

    out: list[Instruction] = []
    for p in parsed:
        pc = len(out)
        if p.target is not None:
            if isinstance(p.target, str):
                if p.target not in labels:
                    raise ParseError(f"line {p.line}: undefined label {p.target!r}", offset=p.line)
                rel = labels[p.target] - (pc + 1)
            else:
                rel = p.target
            if p.spec.jump_field == "off":
                p.off = _fit(rel, 16, p.line, "jump offset", unsigned_ok=False)
            else:
                p.imm = _fit(rel, 32, p.line, "jump offset", unsigned_ok=False)
        if p.spec.is_lddw:
            out.extend(lddw_pair(p.dst, p.src, p.imm64))
        else:
            out.append(Instruction(p.spec.opcode, p.dst, p.src, p.off, p.imm))
    return out
