"""Program contexts: `struct __sk_buff` and `struct xdp_md` over a packet, and raw byte contexts.

Job: build the ctx region a program receives in r1, with the kernel's context rewriting
(filter.c: bpf_convert_ctx_access / xdp_convert_ctx_access) done by the region's
`access_hook`: a 32-bit load of `data`, `data_end` or `data_meta` yields a 64-bit packet
pointer, other fields read the emulated skb/xdp_buff.  Also the packet buffer with its
headroom, so bpf_xdp_adjust_head/tail/meta and the skb helpers can move `data`/`data_end`.
The BPF_PROG_TEST_RUN rules that fill these objects live in `testrun.py`.
Must not import `kernel` or `vm` engines (only `vm.memory`).
"""

from __future__ import annotations

import struct
from typing import Any

from bpfsim.errors import MemoryFault, UsageError
from bpfsim.vm.memory import AddressSpace, Region

ETH_HLEN = 14
XDP_PACKET_HEADROOM = 256
NET_SKB_PAD = 64                     # max(32, L1_CACHE_BYTES) on x86-64
NET_IP_ALIGN = 0                     # x86-64
SKB_SHARED_INFO_SIZE = 320           # SKB_DATA_ALIGN(sizeof(struct skb_shared_info)), 6.18 x86-64
XDP_FRAME_SIZE = 4096                # PAGE_SIZE: test_run's frame_sz
XDP_FRAME_STRUCT = 40                # sizeof(struct xdp_frame): adjust_head/meta keep it free
LOOPBACK_IFINDEX = 1

# struct __sk_buff (include/uapi/linux/bpf.h): name -> (offset, size)
SKB_FIELDS: dict[str, tuple[int, int]] = {
    "len": (0, 4), "pkt_type": (4, 4), "mark": (8, 4), "queue_mapping": (12, 4),
    "protocol": (16, 4), "vlan_present": (20, 4), "vlan_tci": (24, 4), "vlan_proto": (28, 4),
    "priority": (32, 4), "ingress_ifindex": (36, 4), "ifindex": (40, 4), "tc_index": (44, 4),
    "cb": (48, 20), "hash": (68, 4), "tc_classid": (72, 4), "data": (76, 4), "data_end": (80, 4),
    "napi_id": (84, 4), "family": (88, 4), "remote_ip4": (92, 4), "local_ip4": (96, 4),
    "remote_ip6": (100, 16), "local_ip6": (116, 16), "remote_port": (132, 4),
    "local_port": (136, 4), "data_meta": (140, 4), "flow_keys": (144, 8), "tstamp": (152, 8),
    "wire_len": (160, 4), "gso_segs": (164, 4), "sk": (168, 8), "gso_size": (176, 4),
    "tstamp_type": (180, 1), "hwtstamp": (184, 8),
}
SKB_SIZE = 192
# Fields a program may write (filter.c: tc_cls_act_is_valid_access and friends, the union).
SKB_WRITABLE = ("mark", "priority", "tc_index", "queue_mapping", "cb", "tc_classid", "tstamp")

# struct xdp_md
XDP_FIELDS: dict[str, tuple[int, int]] = {
    "data": (0, 4), "data_end": (4, 4), "data_meta": (8, 4), "ingress_ifindex": (12, 4),
    "rx_queue_index": (16, 4), "egress_ifindex": (20, 4),
}
XDP_MD_SIZE = 24

_U = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


def ctx_from_fields(fields: dict[str, Any], layout: dict[str, tuple[int, int]], size: int,
                    what: str) -> bytes:
    """A ctx given as {field: int | bytes | list[int]} packed into the struct's bytes."""
    buf = bytearray(size)
    for name, value in fields.items():
        if name not in layout:
            raise UsageError(f"{what} has no field {name!r} (fields: {', '.join(layout)})")
        off, n = layout[name]
        if isinstance(value, (bytes, bytearray)):
            if len(value) != n:
                raise UsageError(f"{what}.{name} is {n} bytes, got {len(value)}")
            buf[off:off + n] = value
        elif isinstance(value, (list, tuple)):
            if n % 4 or len(value) != n // 4:
                raise UsageError(f"{what}.{name} holds {n // 4} u32 values")
            for j, v in enumerate(value):
                struct.pack_into("<I", buf, off + 4 * j, int(v) & 0xFFFFFFFF)
        else:
            struct.pack_into(_U.get(n, "<I"), buf, off, int(value) & ((1 << (8 * n)) - 1))
    return bytes(buf)


def ctx_to_fields(raw: bytes, layout: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """The inverse of ctx_from_fields (arrays of u32 as lists, ip6 as lists too)."""
    out: dict[str, Any] = {}
    for name, (off, n) in layout.items():
        if off + n > len(raw):
            continue
        if n in _U:
            out[name] = struct.unpack_from(_U[n], raw, off)[0]
        else:
            out[name] = [struct.unpack_from("<I", raw, off + 4 * j)[0] for j in range(n // 4)]
    return out


class Packet:
    """A linear packet buffer: `buf` with `head` (data), `tail` (data_end) and `meta`
    (data_meta) offsets; the region covers the whole buffer, headroom included."""

    def __init__(self, mem: AddressSpace, size: int, headroom: int, data: bytes, *,
                 name: str, owner: Any) -> None:
        self.buf = bytearray(size)
        self.buf[headroom:headroom + len(data)] = data
        self.head = headroom
        self.tail = headroom + len(data)
        self.meta = headroom
        self.region: Region = mem.map(self.buf, name=name, kind="packet", owner=owner)

    @property
    def base(self) -> int:
        return self.region.base

    @property
    def length(self) -> int:
        return self.tail - self.head

    def bytes(self, start: int | None = None) -> bytes:
        return bytes(self.buf[self.head if start is None else start:self.tail])

    def reserve_tail(self, mem: AddressSpace, end: int) -> None:
        """Make the buffer reach offset `end` (pskb_expand_head): a new, larger region; the
        old one is unmapped, so packet pointers from before fault (the verifier makes
        programs reload them after such helpers)."""
        if end <= len(self.buf):
            return
        buf = bytearray((end + 63) & ~63)
        buf[:len(self.buf)] = self.buf
        owner, name = self.region.owner, self.region.name
        mem.unmap(self.region)
        self.buf = buf
        self.region = mem.map(buf, name=name, kind="packet", owner=owner)


class ContextBase:
    """What every program context offers: the ctx address (r1), and cleanup."""

    region: Region | None = None
    packet: Packet | None = None

    def __init__(self, mem: AddressSpace) -> None:
        self.mem = mem

    @property
    def address(self) -> int:
        return self.region.base if self.region is not None else 0

    def release(self) -> None:
        """Unmap the ctx and packet regions: pointers a program leaked now fault."""
        if self.region is not None:
            self.mem.unmap(self.region)
        if self.packet is not None:
            self.mem.unmap(self.packet.region)


class RawContext(ContextBase):
    """SYSCALL / RAW_TRACEPOINT / TRACING: the ctx is the caller's bytes (or NULL)."""

    def __init__(self, mem: AddressSpace, data: bytes, *, name: str) -> None:
        super().__init__(mem)
        self.buf = bytearray(data)
        self.region = mem.map(self.buf, name=name, kind="ctx", owner=self) if data else None

    def ctx_out(self) -> bytes:
        return bytes(self.buf)


class _HookedContext(ContextBase):
    """A ctx struct whose loads and stores go through `access` (convert_ctx_access)."""

    layout: dict[str, tuple[int, int]] = {}
    pointer_fields: dict[int, str] = {}
    writable: tuple[str, ...] = ()

    def __init__(self, mem: AddressSpace, size: int, name: str) -> None:
        super().__init__(mem)
        self.view = bytearray(size)
        self.region = mem.map(self.view, name=name, kind="ctx", owner=self)
        self.region.access_hook = self.access
        self._writable_ranges = [(self.layout[f][0], self.layout[f][0] + self.layout[f][1])
                                 for f in self.writable]

    def field(self, name: str) -> int:
        off, n = self.layout[name]
        return int.from_bytes(self.view[off:off + n], "little")

    def set_field(self, name: str, value: int) -> None:
        off, n = self.layout[name]
        self.view[off:off + n] = (value & ((1 << (8 * n)) - 1)).to_bytes(n, "little")

    def pointer(self, name: str) -> int:
        raise NotImplementedError

    def access(self, off: int, size: int, write: bool, value: int | None = None) -> int:
        """The region's access hook: one load (returns the value) or store (returns 0)."""
        if off in self.pointer_fields:
            if write or size != 4:
                raise MemoryFault(f"invalid {'store' if write else 'load'} of ctx field "
                                  f"{self.pointer_fields[off]}", address=self.address + off)
            return self.pointer(self.pointer_fields[off])
        if off < 0 or off + size > len(self.view):
            raise MemoryFault(f"ctx access out of bounds at offset {off}", address=self.address + off)
        if write:
            if not any(lo <= off and off + size <= hi for lo, hi in self._writable_ranges):
                raise MemoryFault(f"write to read-only ctx offset {off}", address=self.address + off)
            self.view[off:off + size] = ((value or 0) & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
            return 0
        return int.from_bytes(self.view[off:off + size], "little")


# struct bpf_sock (what a program reads through skb->sk)
SOCK_FIELDS: dict[str, tuple[int, int]] = {
    "bound_dev_if": (0, 4), "family": (4, 4), "type": (8, 4), "protocol": (12, 4), "mark": (16, 4),
    "priority": (20, 4), "src_ip4": (24, 4), "src_ip6": (28, 16), "src_port": (44, 4),
    "dst_port": (48, 4), "dst_ip4": (52, 4), "dst_ip6": (56, 16), "state": (72, 4),
    "rx_queue_mapping": (76, 4),
}
SOCK_SIZE = 80
TCP_CLOSE = 7


class SkbContext(_HookedContext):
    """`struct __sk_buff` over an emulated linear sk_buff.

    `direct_access` is bpf_compute_data_pointers having run (TC, LWT): otherwise `data_end`
    is whatever the zeroed skb->cb holds, NULL, as in test_run for SOCKET_FILTER/CGROUP_SKB.
    """

    layout = SKB_FIELDS
    pointer_fields = {76: "data", 80: "data_end", 140: "data_meta"}
    writable = SKB_WRITABLE

    def __init__(self, mem: AddressSpace, data: bytes, *, name: str, direct_access: bool) -> None:
        super().__init__(mem, SKB_SIZE, name + ".ctx")
        room = NET_SKB_PAD + NET_IP_ALIGN
        aligned = (len(data) + 63) & ~63              # SKB_DATA_ALIGN
        self.packet = Packet(mem, room + aligned, room, data, name=name + ".pkt", owner=self)
        self.direct_access = direct_access
        self.hash_valid = False
        self.network = room       # buffer offset of the network header (skb_network_offset)
        # test_run.c gives the skb a dummy socket (sk_alloc + sock_init_data): read-only view.
        self.sock = bytearray(SOCK_SIZE)
        struct.pack_into("<I", self.sock, SOCK_FIELDS["state"][0], TCP_CLOSE)
        struct.pack_into("<i", self.sock, SOCK_FIELDS["rx_queue_mapping"][0], -1)
        self.sock_region = mem.map(self.sock, name=name + ".sk", kind="sock", writable=False,
                                   owner=self)

    def access(self, off: int, size: int, write: bool, value: int | None = None) -> int:
        if off == SKB_FIELDS["sk"][0] and size == 8 and not write:
            return self.sock_region.base
        return super().access(off, size, write, value)

    def release(self) -> None:
        super().release()
        self.mem.unmap(self.sock_region)

    def pointer(self, name: str) -> int:
        pkt = self.packet
        assert pkt is not None
        if name == "data":
            return pkt.base + pkt.head
        if name == "data_meta":          # skb metadata sits right before data (none in test_run)
            return pkt.base + pkt.head
        return pkt.base + pkt.tail if self.direct_access else 0

    def sync_len(self) -> None:
        assert self.packet is not None
        self.set_field("len", self.packet.length)


class XdpContext(_HookedContext):
    """`struct xdp_md` over an xdp_buff in a 4 KiB test_run frame."""

    layout = XDP_FIELDS
    pointer_fields = {0: "data", 4: "data_end", 8: "data_meta"}
    writable = ()

    def __init__(self, mem: AddressSpace, data: bytes, headroom: int, *, name: str) -> None:
        super().__init__(mem, XDP_MD_SIZE, name + ".ctx")
        # The frame minus the skb_shared_info tailroom: data_end may grow up to its end
        # (filter.c: bpf_xdp_adjust_tail, xdp_data_hard_end).
        self.packet = Packet(mem, XDP_FRAME_SIZE - SKB_SHARED_INFO_SIZE, headroom, data,
                             name=name + ".pkt", owner=self)
        # multi-buffer: the pages past the linear part (skb_shared_info frags), never mapped
        self.frags: list[bytearray] = []

    def set_frags(self, data: bytes) -> None:
        """Spread `data` over page-sized frags, as test_run.c copies data_in past the linear part."""
        self.frags = [bytearray(data[i:i + XDP_FRAME_SIZE]) for i in range(0, len(data), XDP_FRAME_SIZE)]

    @property
    def frags_len(self) -> int:
        return sum(len(f) for f in self.frags)

    def frag_bytes(self) -> bytes:
        return b"".join(bytes(f) for f in self.frags)

    def pointer(self, name: str) -> int:
        pkt = self.packet
        assert pkt is not None
        return pkt.base + {"data": pkt.head, "data_end": pkt.tail, "data_meta": pkt.meta}[name]


# struct bpf_sk_lookup
SK_LOOKUP_FIELDS: dict[str, tuple[int, int]] = {
    "cookie": (0, 8), "family": (8, 4), "protocol": (12, 4), "remote_ip4": (16, 4),
    "remote_ip6": (20, 16), "remote_port": (36, 4), "local_ip4": (40, 4), "local_ip6": (44, 16),
    "local_port": (60, 4), "ingress_ifindex": (64, 4),
}
SK_LOOKUP_SIZE = 72

# struct bpf_flow_keys (the output of a flow dissector run)
FLOW_KEYS_FIELDS: dict[str, tuple[int, int]] = {
    "nhoff": (0, 2), "thoff": (2, 2), "addr_proto": (4, 2), "is_frag": (6, 1),
    "is_first_frag": (7, 1), "is_encap": (8, 1), "ip_proto": (9, 1), "n_proto": (10, 2),
    "sport": (12, 2), "dport": (14, 2), "ipv4_src": (16, 4), "ipv4_dst": (20, 4),
    "flags": (48, 4), "flow_label": (52, 4),
}
FLOW_KEYS_SIZE = 56


class SkLookupContext(_HookedContext):
    """`struct bpf_sk_lookup` (read-only for the program; `sk` is the selected socket, NULL
    here: bpfsim has no sockets to assign)."""

    layout = SK_LOOKUP_FIELDS
    pointer_fields = {}
    writable = ()

    def __init__(self, mem: AddressSpace, view: bytes, *, name: str) -> None:
        super().__init__(mem, SK_LOOKUP_SIZE, name + ".ctx")
        self.view[:] = view
        self.view[0:8] = bytes(8)          # sk / cookie: no socket selected


class FlowDissectorContext(_HookedContext):
    """The `__sk_buff` a BPF_PROG_TYPE_FLOW_DISSECTOR program sees (flow_dissector_convert_ctx_
    access): only `data`, `data_end` and the `flow_keys` pointer; the packet has no headroom
    and no skb behind it (test_run.c passes none)."""

    layout = SKB_FIELDS
    pointer_fields = {76: "data", 80: "data_end"}
    writable = ()

    def __init__(self, mem: AddressSpace, data: bytes, *, name: str) -> None:
        super().__init__(mem, SKB_SIZE, name + ".ctx")
        self.packet = Packet(mem, len(data), 0, data, name=name + ".pkt", owner=self)
        self.keys = bytearray(FLOW_KEYS_SIZE)
        self.keys_region = mem.map(self.keys, name=name + ".flow_keys", kind="flow_keys", owner=self)

    def pointer(self, name: str) -> int:
        pkt = self.packet
        assert pkt is not None
        return pkt.base + (pkt.head if name == "data" else pkt.tail)

    def access(self, off: int, size: int, write: bool, value: int | None = None) -> int:
        if off == SKB_FIELDS["flow_keys"][0] and size == 8 and not write:
            return self.keys_region.base
        if off not in self.pointer_fields:
            raise MemoryFault(f"invalid flow dissector ctx access at offset {off}",
                              address=self.address + off)
        return super().access(off, size, write, value)

    def release(self) -> None:
        super().release()
        self.mem.unmap(self.keys_region)
