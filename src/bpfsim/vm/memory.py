"""The one address space every engine shares: regions with stable buffers and known bounds.

Job: map buffers (stack frames, ctx, packet, map keys/values, global data, ringbuf records,
conformance input memory) at program-visible addresses, and check every access.
Must not import `runtime` (maps register their values here through the generic `owner` hook).

Why synthetic addresses: a pointer is `region_id << 32 | offset`.  Lookup is one dict access;
an out-of-bounds pointer can never silently land inside a neighbouring region (there is a
4 GiB hole after every region); and pointer values are deterministic from run to run.  The
buffers themselves are `bytearray`s locked against resizing by an exported memoryview, and
each region exposes `host_address` (a ctypes address), so native engines translate a
program address with `host_base[rid] + off` after the same bounds check.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterable
from typing import Any

from bpfsim.errors import MemoryFault

REGION_SHIFT = 32
OFFSET_MASK = (1 << REGION_SHIFT) - 1
FIRST_REGION_ID = 0x100  # keeps small integers (and NULL) far away from any region

# Little-endian accessors by size: (struct, signed struct).  BPF on x86-64 is little-endian.
_UNPACK = {1: struct.Struct("<B"), 2: struct.Struct("<H"), 4: struct.Struct("<I"), 8: struct.Struct("<Q")}


class Region:
    """One mapped buffer.  `guards` are [lo, hi) byte ranges no program may touch (bpf_timer)."""

    __slots__ = ("rid", "base", "size", "buf", "view", "name", "kind", "writable", "guards", "owner",
                 "access_hook", "_host")

    def __init__(self, rid: int, buf: bytearray, *, name: str, kind: str, writable: bool,
                 owner: Any, guards: tuple[tuple[int, int], ...]) -> None:
        self.rid = rid
        self.base = rid << REGION_SHIFT
        self.size = len(buf)
        self.buf = buf
        self.view = memoryview(buf)  # the export forbids resizing: the buffer never moves
        self.name = name
        self.kind = kind
        self.writable = writable
        self.owner = owner
        self.guards = guards
        # ctx regions: `access_hook(off, size, write, value) -> int` replaces the plain access,
        # the way the kernel's convert_ctx_access rewrites ctx loads (xdp_md.data is a u32
        # field but loads a 64-bit pointer).  None for ordinary memory.
        self.access_hook: Any = None
        self._host: Any = None

    @property
    def end(self) -> int:
        """One past the last program address of the region."""
        return self.base + self.size

    @property
    def host_address(self) -> int:
        """The buffer's address in this process, for native engines (0 for an empty region)."""
        if self.size == 0:
            return 0
        if self._host is None:
            self._host = (ctypes.c_char * self.size).from_buffer(self.buf)
        return ctypes.addressof(self._host)

    def __repr__(self) -> str:
        return f"<Region {self.name} {self.kind} {self.base:#x}+{self.size}>"


class AddressSpace:
    """All regions reachable by programs of one runtime (or one conformance run)."""

    def __init__(self) -> None:
        self._regions: dict[int, Region] = {}
        self._next_id = FIRST_REGION_ID
        self._free_ids: list[int] = []

    # -- mapping -------------------------------------------------------------------------------
    def map(self, buf: bytearray, *, name: str = "", kind: str = "mem", writable: bool = True,
            owner: Any = None, guards: Iterable[tuple[int, int]] = ()) -> Region:
        """Make `buf` reachable; the caller keeps using `buf` itself for Python-side access."""
        if not isinstance(buf, bytearray):
            raise TypeError("regions are backed by bytearray")
        if len(buf) > OFFSET_MASK:
            raise ValueError("region larger than 4 GiB")
        rid = self._next_id
        self._next_id += 1
        region = Region(rid, buf, name=name, kind=kind, writable=writable, owner=owner,
                        guards=tuple(guards))
        self._regions[rid] = region
        return region

    def unmap(self, region: Region) -> None:
        """Remove a region; later accesses through old pointers fault.  Ids are never reused."""
        self._regions.pop(region.rid, None)

    def regions(self) -> list[Region]:
        return list(self._regions.values())

    @property
    def region_table(self) -> dict[int, Region]:
        """The live `region id -> Region` dict, for engines' inlined fast paths (a fast path
        must still check bounds, `writable`, `guards` and `access_hook` exactly as `resolve`
        does, and fall back to `resolve` otherwise).  Read-only by convention."""
        return self._regions

    # -- lookup --------------------------------------------------------------------------------
    def find(self, addr: int) -> tuple[Region, int] | None:
        """The region containing `addr` and the offset in it, or None."""
        region = self._regions.get(addr >> REGION_SHIFT)
        if region is None:
            return None
        off = addr & OFFSET_MASK
        if off >= region.size:
            return None
        return region, off

    def resolve(self, addr: int, size: int, write: bool = False) -> tuple[Region, int]:
        """Check an access of `size` bytes at `addr`; return (region, offset) or raise MemoryFault."""
        region = self._regions.get(addr >> REGION_SHIFT)
        off = addr & OFFSET_MASK
        if region is None or off + size > region.size or addr < 0:
            kind = "write" if write else "read"
            raise MemoryFault(f"invalid {kind} of {size} bytes at {addr:#x}", address=addr)
        if write and not region.writable:
            raise MemoryFault(f"write to read-only {region.kind} '{region.name}' at {addr:#x}",
                              address=addr)
        if region.guards:
            for lo, hi in region.guards:
                if off < hi and off + size > lo:
                    raise MemoryFault(f"access to protected bytes of '{region.name}' at {addr:#x}",
                                      address=addr)
        return region, off

    # -- typed access (little-endian, like BPF on x86-64) -------------------------------------
    def load(self, addr: int, size: int) -> int:
        region, off = self.resolve(addr, size)
        return _UNPACK[size].unpack_from(region.buf, off)[0]

    def store(self, addr: int, size: int, value: int) -> None:
        region, off = self.resolve(addr, size, True)
        _UNPACK[size].pack_into(region.buf, off, value & ((1 << (size * 8)) - 1))

    def read(self, addr: int, n: int) -> bytes:
        if n == 0:
            return b""
        region, off = self.resolve(addr, n)
        return bytes(region.buf[off:off + n])

    def write(self, addr: int, data: bytes) -> None:
        if not data:
            return
        region, off = self.resolve(addr, len(data), True)
        region.buf[off:off + len(data)] = data

    def read_cstring(self, addr: int, limit: int = 4096) -> bytes:
        """Bytes up to (not including) the first NUL, within one region and `limit`."""
        found = self.find(addr)
        if found is None:
            raise MemoryFault(f"invalid read of string at {addr:#x}", address=addr)
        region, off = found
        end = min(region.size, off + limit)
        chunk = region.buf[off:end]
        nul = chunk.find(0)
        if nul < 0:
            raise MemoryFault(f"unterminated string at {addr:#x}", address=addr)
        return bytes(chunk[:nul])
