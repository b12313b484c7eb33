"""BPF_MAP_TYPE_RINGBUF (kernel/bpf/ringbuf.c): reserve/submit/discard/output/query and draining.

Job: the producer/consumer position arithmetic of the kernel's ring (8-byte record headers,
records rounded up to 8 bytes, at most size-1 bytes between the consumer and the newest
record, and between the oldest uncommitted record and the newest), so reserve fails exactly
when the kernel's would.  Each reserved record is its own region (the program writes the
sample there; the kernel's double-mapped data pages make a record contiguous too); `drain()`
is what a user-space consumer (libbpf ring_buffer__consume) sees: committed samples in order,
discarded ones skipped, stopping at the first record still being written.
Must not import `kernel` or `vm` internals.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bpfsim.errors import MapError
from bpfsim.runtime.maps.base import ENOTSUPP, MapBase, einval, round_up
from bpfsim.uapi.constants import (
    BPF_F_NUMA_NODE,
    BPF_RB_AVAIL_DATA,
    BPF_RB_CONS_POS,
    BPF_RB_FORCE_WAKEUP,
    BPF_RB_NO_WAKEUP,
    BPF_RB_PROD_POS,
    BPF_RB_RING_SIZE,
    BPF_RINGBUF_BUSY_BIT,
    BPF_RINGBUF_DISCARD_BIT,
    BPF_RINGBUF_HDR_SZ,
    EAGAIN,
    EINVAL,
)

if TYPE_CHECKING:
    from bpfsim.spec.collection import MapSpec
    from bpfsim.vm.memory import Region

PAGE_SIZE = 4096
RINGBUF_DATA_PGOFF = 3      # struct bpf_ringbuf: header page, consumer page, producer page, data
RINGBUF_CREATE_FLAG_MASK = BPF_F_NUMA_NODE


@dataclass(eq=False)
class Record:
    map: RingBufMap
    pos: int                 # producer position of the header
    size: int                # sample bytes
    region: Region
    state: str = "busy"      # busy | committed | discarded

    @property
    def span(self) -> int:
        return round_up(self.size + BPF_RINGBUF_HDR_SZ)


class RingBufMap(MapBase):
    """BPF_MAP_TYPE_RINGBUF; max_entries is the data size (a power of 2, page multiple)."""

    iterable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mask = self.max_entries - 1
        self.producer_pos = 0
        self.consumer_pos = 0
        self.pending_pos = 0
        self._records: deque[Record] = deque()
        self._by_rid: dict[int, Record] = {}
        # the data pages (zeroed at creation, ringbuf.c: bpf_ringbuf_area_alloc): a new sample
        # starts with whatever earlier records left there, as in the kernel, which never
        # clears a reservation
        self._data = bytearray(self.max_entries)

    @classmethod
    def alloc_check(cls, spec: MapSpec, ncpus: int) -> None:
        """ringbuf.c: ringbuf_map_alloc."""
        if spec.flags & ~RINGBUF_CREATE_FLAG_MASK:
            raise einval(f"bad ringbuf flags {spec.flags:#x}")
        n = spec.max_entries
        if spec.key_size or spec.value_size or n == 0 or n & (n - 1) or n % PAGE_SIZE:
            raise einval("ringbuf needs key_size 0, value_size 0 and a power-of-2 page-multiple size")

    # -- the syscall side has no element operations --------------------------------------------
    def _sys_lookup(self, key: bytes, flags: int) -> bytes:
        raise einval("ringbuf has no lookup")

    def _sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        raise einval("ringbuf has no update")

    def _next_key(self, key: bytes | None) -> bytes | None:
        raise MapError("ringbuf has no keys", ENOTSUPP)

    # -- producer -------------------------------------------------------------------------------
    def reserve(self, size: int) -> int:
        """__bpf_ringbuf_reserve: the sample's address, or 0 when there is no room."""
        if size > self.max_entries - BPF_RINGBUF_HDR_SZ:
            return 0
        span = round_up(size + BPF_RINGBUF_HDR_SZ)
        with self.lock:
            pend = self.pending_pos
            for r in self._records:            # advance over records no longer busy
                if r.pos < pend:
                    continue
                if r.pos != pend or r.state == "busy":
                    break
                pend += r.span
            self.pending_pos = max(pend, self.pending_pos)
            new_prod = self.producer_pos + span
            if new_prod - self.consumer_pos > self.mask or new_prod - self.pending_pos > self.mask:
                return 0
            off = self.producer_pos & self.mask
            # struct bpf_ringbuf_hdr { u32 len (| BUSY); u32 pg_off }: data starts at page 3
            pg_off = RINGBUF_DATA_PGOFF + off // PAGE_SIZE
            self._put(off, struct.pack("<II", size | BPF_RINGBUF_BUSY_BIT, pg_off))
            # a 0-byte sample still needs an address that resolves: its region has 1 byte
            buf = bytearray(self._get(off + BPF_RINGBUF_HDR_SZ, size)) or bytearray(1)
            region = self.mem.map(buf, name=f"{self.name}.record", kind="ringbuf", owner=None)
            rec = Record(self, self.producer_pos, size, region)
            region.owner = rec
            self._records.append(rec)
            self._by_rid[region.rid] = rec
            self.producer_pos = new_prod
            return region.base

    def _record_at(self, addr: int) -> Record | None:
        found = self.mem.find(addr)
        if found is None or found[1] != 0:
            return None
        return self._by_rid.get(found[0].rid)

    def commit(self, addr: int, discard: bool) -> int:
        """bpf_ringbuf_submit / bpf_ringbuf_discard (0, or -EINVAL for a foreign pointer)."""
        with self.lock:
            rec = self._record_at(addr)
            if rec is None or rec.state != "busy":
                return -EINVAL
            rec.state = "discarded" if discard else "committed"
            off = rec.pos & self.mask
            self._put(off, struct.pack("<I", rec.size | (BPF_RINGBUF_DISCARD_BIT if discard else 0)))
            self._put(off + BPF_RINGBUF_HDR_SZ, bytes(rec.region.buf[:rec.size]))
            return 0

    def _get(self, off: int, n: int) -> bytes:
        """n bytes of the data area from `off`, wrapping (the pages are mapped twice)."""
        off &= self.mask
        out = self._data[off:off + n]
        return bytes(out + self._data[:n - len(out)])

    def _put(self, off: int, data: bytes) -> None:
        off &= self.mask
        first = data[:self.max_entries - off]
        self._data[off:off + len(first)] = first
        rest = data[len(first):]
        self._data[:len(rest)] = rest

    def submit(self, addr: int, flags: int = 0) -> int:
        return self.commit(addr, False)

    def discard(self, addr: int, flags: int = 0) -> int:
        return self.commit(addr, True)

    def output(self, data: bytes, flags: int = 0) -> int:
        """bpf_ringbuf_output: 0, -EINVAL (bad flags) or -EAGAIN (no room)."""
        if flags & ~(BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP):
            return -EINVAL
        addr = self.reserve(len(data))
        if not addr:
            return -EAGAIN
        if data:
            self.mem.write(addr, data)
        return self.commit(addr, False)

    def prog_output(self, data_addr: int, size: int, flags: int, cpu: int = 0) -> int:
        return self.output(self.mem.read(data_addr, size) if size else b"", flags)

    def query(self, flags: int) -> int:
        """bpf_ringbuf_query."""
        if flags == BPF_RB_AVAIL_DATA:
            return self.producer_pos - self.consumer_pos
        if flags == BPF_RB_RING_SIZE:
            return self.max_entries
        if flags == BPF_RB_CONS_POS:
            return self.consumer_pos
        if flags == BPF_RB_PROD_POS:
            return self.producer_pos
        return 0

    # -- consumer -------------------------------------------------------------------------------
    def drain(self) -> list[bytes]:
        """Consume every record up to the first busy one; return the committed samples."""
        out: list[bytes] = []
        with self.lock:
            while self._records and self._records[0].state != "busy":
                rec = self._records.popleft()
                if rec.state == "committed":
                    out.append(bytes(rec.region.buf[:rec.size]))
                self._by_rid.pop(rec.region.rid, None)
                self.mem.unmap(rec.region)
                self.consumer_pos = rec.pos + rec.span
            # consumed records were committed, so the kernel's pending walk passes them too
            self.pending_pos = max(self.pending_pos, self.consumer_pos)
        return out

    def _free_contents(self) -> None:
        for rec in self._records:
            self.mem.unmap(rec.region)
        self._records.clear()
        self._by_rid.clear()
