"""bpf_trace_printk, bpf_trace_vprintk and bpf_snprintf with the kernel's format rules.

Job: `bprintf(mem, fmt, args)` checks a format string the way kernel/bpf/helpers.c:
bpf_bprintf_prepare does (bytes printable in the kernel's Latin-1 ctype; specifiers
%d %i %u %x %X with optional l/ll,
%c, %s, %p, %pK %px %ps %pS %pB, %pks %pus, %pi4 %pI4 %pi6 %pI6; flags "0+- " and a width,
no precision; at most `num_args` specifiers; anything else -EINVAL) and renders it like
lib/vsprintf.c: bstr_printf.  Must not import `kernel`.
"""

from __future__ import annotations

import hashlib

from bpfsim.errors import MemoryFault
from bpfsim.runtime.helpers.registry import helper, u64
from bpfsim.uapi.constants import EINVAL
from bpfsim.vm.memory import AddressSpace

MAX_TRACE_PRINTK_VARARGS = 3
MAX_BPRINTF_VARARGS = 12
MAX_BPRINTF_BUF = 1024   # bstr_printf's output buffer for trace_printk (helpers.c)
_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


class FormatError(Exception):
    """The format is refused: the helper returns -errno (always -EINVAL here)."""

    def __init__(self, errno: int = EINVAL) -> None:
        super().__init__(errno)
        self.errno = errno


def _read_nofault(mem: AddressSpace, addr: int, n: int) -> bytes | None:
    """copy_from_kernel_nofault: the bytes, or None when the address is not readable."""
    try:
        return mem.read(addr, n)
    except MemoryFault:
        return None


def _read_str_nofault(mem: AddressSpace, addr: int, limit: int) -> bytes:
    """strncpy_from_kernel_nofault into a `limit`-byte buffer; "" on a fault."""
    found = mem.find(addr)
    if found is None:
        return b""
    region, off = found
    chunk = bytes(region.buf[off:min(region.size, off + limit - 1)])
    nul = chunk.find(0)
    return chunk if nul < 0 else chunk[:nul]


def _is_end(c: str) -> bool:
    return c == "\0" or c.isspace() or c in _PUNCT


def _ptr_hash(value: int) -> int:
    """%p prints a hashed pointer (lib/vsprintf.c: ptr_to_id); ours is keyed by nothing, so it
    is stable from run to run."""
    return int.from_bytes(hashlib.blake2b(value.to_bytes(8, "little"), digest_size=4).digest(),
                          "little")


def _ip6(raw: bytes, colons: bool) -> str:
    groups = [raw[i:i + 2].hex() for i in range(0, 16, 2)]
    return ":".join(groups) if colons else "".join(groups)


def _int_conv(flags: str, width: str, conv: str, size: int, raw: int) -> str:
    bits = 8 * size
    value = raw & ((1 << bits) - 1)
    if conv in "di" and value >> (bits - 1):
        value -= 1 << bits
    pyconv = {"i": "d", "u": "d"}.get(conv, conv)
    return ("%" + flags + width + pyconv) % value


_KERNEL_PRINTABLE = [0x09 <= b <= 0x0D or 0x20 <= b <= 0x7E or b >= 0xA0 for b in range(256)]


def bprintf(mem: AddressSpace, fmt: bytes, args: list[int]) -> str:
    """Check `fmt` against `args` (bpf_bprintf_prepare) and render it (bstr_printf).

    `fmt` holds the bytes up to (not including) the terminating NUL.  Raises FormatError.
    """
    # bpf_bprintf_prepare: every byte must be isprint() or isspace() in the kernel's own ctype
    # table (lib/ctype.c), which is Latin-1: 0x80-0x9f are controls, 0xa0-0xff printable.
    if any(not _KERNEL_PRINTABLE[b] for b in fmt):
        raise FormatError()
    text = fmt.decode("latin-1")
    s = text + "\0\0\0"          # the kernel may peek past the end into the NUL
    out: list[str] = []
    num_spec = 0
    i = 0
    n = len(text)
    while i < n:
        c = s[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        if s[i + 1] == "%":
            out.append("%")
            i += 2
            continue
        if num_spec >= len(args):
            raise FormatError()
        arg = args[num_spec] & 0xFFFFFFFFFFFFFFFF
        i += 1
        start = i
        while s[i] in "0+- ":
            i += 1
        flags = s[start:i]
        wstart = i
        if "1" <= s[i] <= "9":
            i += 1
            while "0" <= s[i] <= "9":
                i += 1
        width = s[wstart:i]
        c = s[i]
        if c == "p":
            nxt = s[i + 1]
            if _is_end(nxt):                       # plain %p: hashed
                out.append(("%" + flags + width + "s") % f"{_ptr_hash(arg):016x}")
                i += 1
            elif nxt in "ku" and s[i + 2] == "s":  # %pks / %pus: a string
                i += 3
                if not _is_end(s[i]):
                    raise FormatError()
                out.append(("%" + flags + width + "s")
                           % _read_str_nofault(mem, arg, MAX_BPRINTF_BUF).decode("latin-1"))
            elif nxt in "KxsSB":                   # kernel pointers / symbols: raw value
                if nxt == "K":
                    shown = f"{0:016x}"            # kptr_restrict: BPF has no CAP_SYSLOG view
                elif nxt == "x":
                    shown = f"{arg:016x}"
                else:
                    shown = f"{arg:#x}"            # no symbols in the emulator
                out.append(("%" + flags + width + "s") % shown)
                i += 2
            elif nxt in "iI" and s[i + 2] in "46":
                size = 4 if s[i + 2] == "4" else 16
                raw = _read_nofault(mem, arg, size) or bytes(size)
                if size == 4:
                    shown = ".".join((f"{b:03d}" if nxt == "i" else str(b)) for b in raw)
                else:
                    shown = _ip6(raw, colons=nxt == "I")
                out.append(("%" + flags + width + "s") % shown)
                i += 3
            else:
                raise FormatError()
            num_spec += 1
            continue
        if c == "s":
            if not _is_end(s[i + 1]):
                raise FormatError()
            out.append(("%" + flags + width + "s")
                       % _read_str_nofault(mem, arg, MAX_BPRINTF_BUF).decode("latin-1"))
            i += 1
            num_spec += 1
            continue
        if c == "c":
            out.append(("%" + flags.replace("0", "") + width + "s") % chr(arg & 0xFF))
            i += 1
            num_spec += 1
            continue
        size = 4
        if s[i] == "l":
            size = 8
            i += 1
        if s[i] == "l":
            i += 1
        c = s[i]
        if c not in "iduxX":
            raise FormatError()
        out.append(_int_conv(flags, width, c, size, arg))
        i += 1
        num_spec += 1
    return "".join(out)


def _fmt_bytes(mem: AddressSpace, addr: int, size: int) -> bytes:
    """The format string: `size` bytes that must hold a NUL (helpers.c: strnchr check)."""
    raw = mem.read(addr, size) if size else b""
    nul = raw.find(0)
    if nul < 0:
        raise FormatError()
    return raw[:nul]


def _varargs(mem: AddressSpace, data: int, data_len: int) -> list[int]:
    """The u64 array of bpf_snprintf / bpf_trace_vprintk (data_len % 8 == 0, <= 12 args)."""
    if data_len % 8 or data_len > MAX_BPRINTF_VARARGS * 8 or (data_len and not data):
        raise FormatError()
    raw = mem.read(data, data_len) if data_len else b""
    return [int.from_bytes(raw[j:j + 8], "little") for j in range(0, data_len, 8)]


def _printk(env, fmt: bytes, args: list[int]) -> int:
    msg = bprintf(env.mem, fmt, args)
    encoded = msg.encode("latin-1")
    env.program.kernel.trace.emit(encoded[:MAX_BPRINTF_BUF - 1].decode("latin-1"), env.cpu)
    return len(encoded)   # bstr_printf's return: the length it would have written


@helper("bpf_trace_printk")
def bpf_trace_printk(env, fmt, fmt_size, a1, a2, a3) -> int:
    try:
        return _printk(env, _fmt_bytes(env.mem, fmt, fmt_size), [a1, a2, a3])
    except FormatError as exc:
        return u64(-exc.errno)


@helper("bpf_trace_vprintk")
def bpf_trace_vprintk(env, fmt, fmt_size, data, data_len, _r5) -> int:
    try:
        args = _varargs(env.mem, data, data_len)
        return _printk(env, _fmt_bytes(env.mem, fmt, fmt_size), args)
    except FormatError as exc:
        return u64(-exc.errno)


@helper("bpf_snprintf")
def bpf_snprintf(env, out, out_size, fmt, data, data_len) -> int:
    try:
        args = _varargs(env.mem, data, data_len)
        text = bprintf(env.mem, env.mem.read_cstring(fmt, 1 << 16), args).encode("latin-1")
    except FormatError as exc:
        return u64(-exc.errno)
    if out_size:
        chunk = text[:out_size - 1] + b"\0"
        env.mem.write(out, chunk)
    return len(text) + 1
