"""Bob Jenkins' lookup3 hash as include/linux/jhash.h has it (jhash, jhash2).

Job: the bucket a hash-map key lands in when the kernel's seed is known (BPF_F_ZERO_SEED makes
it 0: hashtab.c: htab_map_hash), so the iteration order of such maps can be the kernel's.
Pure functions; imports nothing of bpfsim.
"""

from __future__ import annotations

import struct

JHASH_INITVAL = 0xDEADBEEF
_M = 0xFFFFFFFF


def _rol(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - c) & _M; a ^= _rol(c, 4); c = (c + b) & _M        # noqa: E702
    b = (b - a) & _M; b ^= _rol(a, 6); a = (a + c) & _M        # noqa: E702
    c = (c - b) & _M; c ^= _rol(b, 8); b = (b + a) & _M        # noqa: E702
    a = (a - c) & _M; a ^= _rol(c, 16); c = (c + b) & _M       # noqa: E702
    b = (b - a) & _M; b ^= _rol(a, 19); a = (a + c) & _M       # noqa: E702
    c = (c - b) & _M; c ^= _rol(b, 4); b = (b + a) & _M        # noqa: E702
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    c ^= b; c = (c - _rol(b, 14)) & _M                          # noqa: E702
    a ^= c; a = (a - _rol(c, 11)) & _M                          # noqa: E702
    b ^= a; b = (b - _rol(a, 25)) & _M                          # noqa: E702
    c ^= b; c = (c - _rol(b, 16)) & _M                          # noqa: E702
    a ^= c; a = (a - _rol(c, 4)) & _M                           # noqa: E702
    b ^= a; b = (b - _rol(a, 14)) & _M                          # noqa: E702
    c ^= b; c = (c - _rol(b, 24)) & _M                          # noqa: E702
    return c


def jhash(key: bytes, initval: int = 0) -> int:
    """jhash(key, len(key), initval)."""
    length = len(key)
    a = b = c = (JHASH_INITVAL + length + initval) & _M
    k = 0
    while length > 12:
        x, y, z = struct.unpack_from("<III", key, k)
        a, b, c = _mix((a + x) & _M, (b + y) & _M, (c + z) & _M)
        length -= 12
        k += 12
    if length == 0:
        return c
    tail = key[k:] + bytes(12 - length)
    x, y, z = struct.unpack("<III", tail)
    return _final((a + x) & _M, (b + y) & _M, (c + z) & _M)


def jhash2(words: tuple[int, ...], initval: int = 0) -> int:
    """jhash2(k, len(k), initval) over u32 words."""
    length = len(words)
    a = b = c = (JHASH_INITVAL + (length << 2) + initval) & _M
    i = 0
    while length > 3:
        a, b, c = _mix((a + words[i]) & _M, (b + words[i + 1]) & _M, (c + words[i + 2]) & _M)
        length -= 3
        i += 3
    if length == 0:
        return c
    rest = list(words[i:]) + [0] * (3 - length)
    return _final((a + rest[0]) & _M, (b + rest[1]) & _M, (c + rest[2]) & _M)


def htab_hash(key: bytes, seed: int = 0) -> int:
    """hashtab.c: htab_map_hash: jhash2 for keys that are a multiple of 4 bytes."""
    if len(key) % 4 == 0:
        return jhash2(struct.unpack(f"<{len(key) // 4}I", key), seed)
    return jhash(key, seed)
