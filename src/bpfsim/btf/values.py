"""Map keys and values <-> Python, in exactly the shape `bpftool map dump -j` prints under
"formatted" (tools/bpf/bpftool/btf_dumper.c), so emulator and kernel output compare directly.

Job: `decode(btf, tid, data)` and its inverse `encode(btf, tid, value)`.  Must not import
anything of bpfsim above `btf`.  The shapes, from btf_dumper.c (checked against bpftool v7.1
on Linux 6.18, see tests/fixtures/btf/types.maps.json):

* whole-byte INTs: Python ints (signed by encoding); `_Bool` -> true/false from its one byte
  (newer btf_dumper.c reads an `int` there; bpftool 7.1 on this machine does not: checked);
* bitfields, odd-width and 128-bit ints: hex *strings* "0x1f" (btf_dumper_bitfield), never
  sign-extended;
* char arrays: a string when a NUL comes before any byte outside 0x20..0x7e (is_str_array),
  else a list of ints; `unsigned char` arrays are always lists;
* enums: the enumerator's name when the value matches one, else the signed int;
* pointers: unsigned ints; structs and unions: dicts in member order (`bpf_timer` -> {},
  `bpf_spin_lock` -> {"val": 0}); VAR -> {name: value}; DATASEC -> {sec: [{var: value}...]}.
* a BTF_INT_CHAR (not clang's `char`, which is SIGNED) gives a one-character string; bpftool
  prints '\\' and '"' there unescaped (invalid JSON), we give the character;
* FLOAT: bpftool 7.1 cannot print it ("(unsupported-kind", invalid JSON); we give a Python
  float instead -- the one deliberate difference.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from bpfsim.btf.types import INT_BOOL, INT_CHAR, INT_SIGNED, BtfType
from bpfsim.errors import UsageError

if TYPE_CHECKING:
    from bpfsim.btf.btf import Btf

_MODS = ("TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "TYPE_TAG")
_STR_MODS = ("VOLATILE", "CONST", "RESTRICT", "TYPE_TAG")   # libbpf btf_is_mod (no typedef)
_FLOAT_FMT = {2: "e", 4: "f", 8: "d"}


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) & 1 else v


def _is_char_elem(btf: Btf, elem: int) -> bool:
    """btf_dumper.c: is_str_array's element test (modifiers skipped, typedefs not)."""
    t = btf.type(elem)
    while elem and t.kind in _STR_MODS:
        elem = t.type
        t = btf.type(elem)
    return bool(elem) and t.kind == "INT" and t.size == 1 and (t.encoding == INT_CHAR or t.name == "char")


class _Decoder:
    def __init__(self, btf: Btf, data: bytes) -> None:
        self.btf = btf
        self.data = bytes(data)
        self.order = btf.byteorder

    def read(self, off: int, n: int) -> bytes:
        if off < 0 or off + n > len(self.data):
            raise UsageError(f"BTF type lies outside the {len(self.data)}-byte value "
                             f"(bytes {off}..{off + n})")
        return self.data[off:off + n]

    def uint(self, off: int, n: int) -> int:
        return int.from_bytes(self.read(off, n), self.order)

    def bitfield(self, nr_bits: int, bit_off: int, off: int) -> str:
        """btf_dumper_bitfield: the bits as an unsigned hex string."""
        nbytes = (bit_off + nr_bits + 7) // 8
        raw = self.uint(off, nbytes)
        shift = bit_off if self.order == "little" else nbytes * 8 - bit_off - nr_bits
        return f"0x{(raw >> shift) & ((1 << nr_bits) - 1):x}"

    def value(self, tid: int, off: int, bit_off: int = 0) -> Any:
        btf = self.btf
        t = btf.type(tid)
        for _ in range(len(btf.types)):
            if not (tid and t.kind in _MODS):
                break
            tid = t.type
            t = btf.type(tid)
        k = "void" if tid == 0 else t.kind
        if k == "INT":
            return self.int(t, off, bit_off)
        if k in ("STRUCT", "UNION"):
            out: dict[str, Any] = {}
            for m in t.members:
                moff = off + m.bit_offset // 8
                if m.bitfield_size:
                    out[m.name] = self.bitfield(m.bitfield_size, m.bit_offset % 8, moff)
                else:
                    out[m.name] = self.value(m.type, moff, m.bit_offset % 8)
            return out
        if k == "ARRAY":
            if t.nelems and _is_char_elem(btf, t.type):
                raw = self.read(off, t.nelems)
                nul = raw.find(b"\0")
                if nul >= 0 and all(0x20 <= c < 0x7F for c in raw[:nul]):
                    return raw[:nul].decode("ascii")
            esize = btf.size_of(t.type)
            if esize == 0 and t.nelems > 1 << 16:
                raise UsageError(f"{btf.describe(tid)}: {t.nelems} zero-size elements")
            return [self.value(t.type, off + i * esize) for i in range(t.nelems)]
        if k == "ENUM":
            if t.size not in (1, 2, 4, 8):
                return self.uint(off, t.size)
            v = _signed(self.uint(off, t.size), t.size * 8)
            for ev in t.values:   # btf_dumper_enum compares with the s32 `val`
                if v == _signed(ev.value & 0xFFFFFFFF, 32):
                    return ev.name
            return v
        if k == "ENUM64":
            v = self.uint(off, 8)
            for ev in t.values:
                if v == ev.value & 0xFFFFFFFFFFFFFFFF:
                    return ev.name
            return _signed(v, 64)   # jsonw_int() takes an int64_t
        if k == "PTR":
            return self.uint(off, 8)
        if k == "VAR":
            return {t.name: self.value(t.type, off, bit_off)}
        if k == "DATASEC":
            return {t.name: [self.value(v.type, off + v.offset) for v in t.vars]}
        if k == "FLOAT":
            raw = self.read(off, t.size)
            fmt = _FLOAT_FMT.get(t.size)
            if fmt is None:
                return "0x" + raw[::-1 if self.order == "little" else 1].hex()
            return struct.unpack(("<" if self.order == "little" else ">") + fmt, raw)[0]
        raise UsageError(f"a {k} ({btf.describe(tid)}) cannot hold a value")

    def int(self, t: BtfType, off: int, bit_off: int) -> Any:
        nr_bits = t.nr_bits
        if bit_off or t.bits_offset or nr_bits % 8:
            total = bit_off + t.bits_offset
            return self.bitfield(nr_bits, total % 8, off + total // 8)
        if nr_bits == 128:
            return f"0x{self.uint(off, 16):x}"
        enc = t.encoding
        if enc in (0, INT_SIGNED):
            if nr_bits not in (8, 16, 32, 64):
                return self.bitfield(nr_bits, 0, off)
            v = self.uint(off, nr_bits // 8)
            return _signed(v, nr_bits) if enc == INT_SIGNED else v
        if enc == INT_CHAR:
            return chr(self.uint(off, 1))
        if enc == INT_BOOL:
            return self.uint(off, 1) != 0
        return self.uint(off, t.size)


def decode(btf: Btf, tid: int, data: bytes) -> Any:
    """`data` (exactly `size_of(tid)` bytes) as bpftool's "formatted" JSON value."""
    size = btf.size_of(tid)
    if len(data) != size:
        raise UsageError(f"{btf.describe(tid)} is {size} bytes, got {len(data)}")
    return _Decoder(btf, data).value(tid, 0)


class _Encoder:
    def __init__(self, btf: Btf, size: int) -> None:
        self.btf = btf
        self.buf = bytearray(size)
        self.order = btf.byteorder

    def put(self, off: int, n: int, v: int) -> None:
        if off < 0 or off + n > len(self.buf):
            raise UsageError(f"BTF type lies outside the {len(self.buf)}-byte value")
        self.buf[off:off + n] = v.to_bytes(n, self.order)

    def put_bits(self, nr_bits: int, bit_off: int, off: int, v: int) -> None:
        nbytes = (bit_off + nr_bits + 7) // 8
        if off + nbytes > len(self.buf):
            raise UsageError(f"BTF bitfield lies outside the {len(self.buf)}-byte value")
        cur = int.from_bytes(self.buf[off:off + nbytes], self.order)
        shift = bit_off if self.order == "little" else nbytes * 8 - bit_off - nr_bits
        mask = ((1 << nr_bits) - 1) << shift
        cur = (cur & ~mask) | ((v << shift) & mask)
        self.buf[off:off + nbytes] = cur.to_bytes(nbytes, self.order)

    @staticmethod
    def number(v: Any, path: str) -> int:
        """An int, or a hex/decimal string as bpftool prints bitfields and __int128."""
        if isinstance(v, int):
            return int(v)
        if isinstance(v, str):
            try:
                return int(v, 0)
            except ValueError:
                pass
        raise UsageError(f"{path}: expected an integer, got {v!r}")

    @staticmethod
    def fit(v: int, bits: int, signed: bool | None, path: str) -> int:
        """Range-check `v` for a `bits`-wide field; signed=None accepts either reading."""
        lo = -(1 << (bits - 1)) if signed in (True, None) else 0
        hi = (1 << bits) - 1 if signed in (False, None) else (1 << (bits - 1)) - 1
        if not lo <= v <= hi:
            raise UsageError(f"{path}: {v} does not fit in {bits} bits ({lo}..{hi})")
        return v & ((1 << bits) - 1)

    def value(self, tid: int, off: int, v: Any, path: str, bit_off: int = 0) -> None:
        btf = self.btf
        t = btf.type(tid)
        for _ in range(len(btf.types)):
            if not (tid and t.kind in _MODS):
                break
            tid = t.type
            t = btf.type(tid)
        k = "void" if tid == 0 else t.kind
        if k == "INT":
            self.int(t, off, bit_off, v, path)
        elif k in ("STRUCT", "UNION"):
            if not isinstance(v, dict):
                raise UsageError(f"{path}: {btf.describe(tid)} needs a dict, got {type(v).__name__}")
            by_name = {m.name: m for m in t.members}
            for key, mv in v.items():
                m = by_name.get(key)
                if m is None:
                    raise UsageError(f"{path}: {btf.describe(tid)} has no member {key!r} "
                                     f"(members: {', '.join(repr(n) for n in by_name)})")
                mpath = f"{path}.{key}" if key else path
                moff = off + m.bit_offset // 8
                if m.bitfield_size:
                    n = self.fit(self.number(mv, mpath), m.bitfield_size, None, mpath)
                    self.put_bits(m.bitfield_size, m.bit_offset % 8, moff, n)
                else:
                    self.value(m.type, moff, mv, mpath, m.bit_offset % 8)
        elif k == "ARRAY":
            self.array(t, off, v, path)
        elif k in ("ENUM", "ENUM64"):
            if isinstance(v, str):
                for ev in t.values:
                    if ev.name == v:
                        v = ev.value
                        break
                else:
                    raise UsageError(f"{path}: {btf.describe(tid)} has no enumerator {v!r}")
            n = self.number(v, path)
            self.put(off, t.size, self.fit(n, t.size * 8, None, path))
        elif k == "PTR":
            self.put(off, 8, self.fit(self.number(v, path), 64, False, path))
        elif k == "VAR":
            if isinstance(v, dict) and list(v) == [t.name]:
                v = v[t.name]
            self.value(t.type, off, v, f"{path}.{t.name}" if path else t.name, bit_off)
        elif k == "DATASEC":
            self.datasec(t, off, v, path)
        elif k == "FLOAT":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise UsageError(f"{path}: expected a number, got {v!r}")
            fmt = _FLOAT_FMT.get(t.size)
            if fmt is None:
                raise UsageError(f"{path}: {t.size}-byte floats are not supported")
            try:
                raw = struct.pack(("<" if self.order == "little" else ">") + fmt, v)
            except (OverflowError, struct.error) as exc:
                raise UsageError(f"{path}: {v!r} does not fit a {t.size}-byte float: {exc}") from None
            self.buf[off:off + t.size] = raw
        else:
            raise UsageError(f"{path}: a {k} ({btf.describe(tid)}) cannot hold a value")

    def int(self, t: BtfType, off: int, bit_off: int, v: Any, path: str) -> None:
        signed = bool(t.encoding & INT_SIGNED)
        if t.encoding == INT_BOOL and not (bit_off or t.bits_offset or t.nr_bits % 8):
            if not isinstance(v, (bool, int)) or int(v) not in (0, 1):
                raise UsageError(f"{path}: expected a bool, got {v!r}")
            self.put(off, t.size, int(v))
            return
        if t.encoding == INT_CHAR and isinstance(v, str) and len(v) == 1:
            v = ord(v)
        n = self.number(v, path)
        if bit_off or t.bits_offset or t.nr_bits % 8 or t.nr_bits not in (8, 16, 32, 64, 128):
            total = bit_off + t.bits_offset
            self.put_bits(t.nr_bits, total % 8, off + total // 8, self.fit(n, t.nr_bits, None, path))
            return
        # 128-bit ints print as unsigned hex, so accept the unsigned reading too
        self.put(off, t.nr_bits // 8, self.fit(n, t.nr_bits, None if t.nr_bits == 128 else signed, path))

    def array(self, t: BtfType, off: int, v: Any, path: str) -> None:
        btf = self.btf
        esize = btf.size_of(t.type)
        if isinstance(v, str):
            if not _is_char_elem(btf, t.type):
                raise UsageError(f"{path}: a string only fits a char array")
            v = v.encode()
        if isinstance(v, (bytes, bytearray)):
            if esize != 1:
                raise UsageError(f"{path}: bytes only fit an array of 1-byte elements")
            if len(v) > t.nelems:
                raise UsageError(f"{path}: {len(v)} bytes do not fit in {t.nelems}")
            self.buf[off:off + len(v)] = v
            return
        if not isinstance(v, (list, tuple)):
            raise UsageError(f"{path}: an array needs a list, got {type(v).__name__}")
        if len(v) > t.nelems:
            raise UsageError(f"{path}: {len(v)} elements do not fit in {t.nelems}")
        for i, ev in enumerate(v):
            self.value(t.type, off + i * esize, ev, f"{path}[{i}]")

    def datasec(self, t: BtfType, off: int, v: Any, path: str) -> None:
        """Accepts bpftool's {sec: [{var: value}, ...]} or a flat {var: value}."""
        if not isinstance(v, dict):
            raise UsageError(f"{path}: DATASEC '{t.name}' needs a dict, got {type(v).__name__}")
        if list(v) == [t.name] and isinstance(v[t.name], list):
            flat: dict[str, Any] = {}
            for item in v[t.name]:
                if not isinstance(item, dict) or len(item) != 1:
                    raise UsageError(f"{path}: DATASEC entries are one-key dicts, got {item!r}")
                flat.update(item)
            v = flat
        by_name = {self.btf.type(vs.type).name: vs for vs in t.vars}
        for name, vv in v.items():
            vs = by_name.get(name)
            if vs is None:
                raise UsageError(f"{path}: section '{t.name}' has no variable {name!r}")
            var = self.btf.type(vs.type)
            self.value(var.type, off + vs.offset, vv, f"{path}.{name}" if path else name)


def encode(btf: Btf, tid: int, value: Any) -> bytes:
    """The bytes of `value` as type `tid`; members/elements not given are zero."""
    enc = _Encoder(btf, btf.size_of(tid))
    enc.value(tid, 0, value, "value")
    return bytes(enc.buf)
