"""BPF_PROG_TEST_RUN: the per-program-type rules of net/bpf/test_run.c, on the emulated kernel.

Job: validate the arguments exactly where the kernel does (each refusal is a `KernelError`
with the kernel's errno), build the context (`contexts.py`), run the program `repeat` times on
it, and read back retval, data_out, ctx_out.  Supported: SOCKET_FILTER, SCHED_CLS, SCHED_ACT,
CGROUP_SKB, LWT_* (bpf_prog_test_run_skb), XDP (bpf_prog_test_run_xdp, frags included),
SYSCALL (bpf_prog_test_run_syscall), RAW_TRACEPOINT (bpf_prog_test_run_raw_tp), SK_LOOKUP
(bpf_prog_test_run_sk_lookup) and FLOW_DISSECTOR (bpf_prog_test_run_flow_dissector).
Must not import `kernel` (the real one) or the VM engines.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Any

from bpfsim.errors import KernelError, NotSupported
from bpfsim.runtime.contexts import (
    ETH_HLEN,
    FLOW_KEYS_FIELDS,
    FLOW_KEYS_SIZE,
    LOOPBACK_IFINDEX,
    NET_IP_ALIGN,
    NET_SKB_PAD,
    SK_LOOKUP_FIELDS,
    SK_LOOKUP_SIZE,
    SKB_FIELDS,
    SKB_SHARED_INFO_SIZE,
    SKB_SIZE,
    SOCK_FIELDS,
    XDP_FIELDS,
    XDP_FRAME_SIZE,
    XDP_MD_SIZE,
    XDP_PACKET_HEADROOM,
    ContextBase,
    FlowDissectorContext,
    RawContext,
    SkbContext,
    SkLookupContext,
    XdpContext,
    ctx_from_fields,
)
from bpfsim.runtime.trace import FLAGS_PROG_RUN, FLAGS_RAW_TP, FLAGS_SYSCALL
from bpfsim.uapi.constants import (
    BPF_F_TEST_RUN_ON_CPU,
    BPF_F_TEST_XDP_LIVE_FRAMES,
    E2BIG,
    EAFNOSUPPORT,
    EINVAL,
    ENODEV,
    ENOMEM,
    ENOTSUPP,
    ERANGE,
    AttachType,
    ProgType,
)

PAGE_SIZE = 4096
ENXIO = 6
MAX_SKB_FRAGS = 17
U16_MAX = 0xFFFF
MAX_BPF_FUNC_ARGS = 12
GSO_LEGACY_MAX_SIZE = 65536
GSO_MAX_SEGS = 65535
ETH_P_IP, ETH_P_IPV6, ETH_P_802_3, ETH_P_802_2 = 0x0800, 0x86DD, 0x0001, 0x0004
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST = 0, 1, 2, 3
AF_UNSPEC, AF_INET, AF_INET6 = 0, 2, 10

SKB_TYPES = frozenset({ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT,
                       ProgType.CGROUP_SKB, ProgType.LWT_IN, ProgType.LWT_OUT, ProgType.LWT_XMIT,
                       ProgType.LWT_SEG6LOCAL})
# Types whose prog_ops have a test_run in the kernel but not (yet) in bpfsim.
KERNEL_ONLY_TYPES = frozenset({ProgType.TRACING, ProgType.STRUCT_OPS, ProgType.NETFILTER})


@dataclass
class TestRunResult:
    """What BPF_PROG_TEST_RUN reports: `retval` (u32), `data` (data_out; None when the type
    has none), `ctx` (ctx_out, when a ctx went in), `duration_ns` (average per run: 0 on the
    virtual clock, measured wall time on the real one), and ours: `r0` (the full 64-bit
    register), `insns` (instructions executed, the last run), `wall_ns` (average wall time)."""

    __test__ = False   # not a pytest class

    retval: int
    data: bytes | None
    ctx: bytes | None
    duration_ns: int
    r0: int = 0
    insns: int = 0
    wall_ns: int = 0
    repeat: int = 1


def _fail(errno: int, detail: str) -> KernelError:
    return KernelError("BPF_PROG_TEST_RUN", errno, detail)


def _ctx_bytes(ctx: Any, layout: dict[str, tuple[int, int]], size: int, what: str) -> bytes | None:
    if ctx is None:
        return None
    if isinstance(ctx, dict):
        return ctx_from_fields(ctx, layout, size, what)
    return bytes(ctx)


def _ctx_init(ctx: bytes | None, max_size: int) -> bytearray | None:
    """bpf_ctx_init: copy min(size, max) bytes into a zeroed struct; bytes past the struct must
    be zero (bpf_check_uarg_tail_zero: -E2BIG)."""
    if ctx is None:
        return None
    if len(ctx) > PAGE_SIZE:
        raise _fail(E2BIG, "ctx larger than a page")
    if len(ctx) > max_size and any(ctx[max_size:]):
        raise _fail(E2BIG, f"ctx bytes past the {max_size}-byte struct are not zero")
    buf = bytearray(max_size)
    n = min(len(ctx), max_size)
    buf[:n] = ctx[:n]
    return buf


def _u32(buf: bytearray, layout: dict[str, tuple[int, int]], name: str) -> int:
    off, n = layout[name]
    return int.from_bytes(buf[off:off + n], "little")


class TestRunner:
    """One test_run call for `prog` (a LoadedProgram: `.prog_type`, `.expected_attach_type`,
    `.execute(ctx_addr, cpu) -> (r0, insns)`, `.kernel`, `.name`)."""

    __test__ = False

    def __init__(self, prog: Any) -> None:
        self.prog = prog
        self.kernel = prog.kernel

    def run(self, data: bytes | None, ctx: Any, repeat: int, cpu: int | None, flags: int) -> TestRunResult:
        ptype = self.prog.prog_type
        if ptype in SKB_TYPES:
            return self._skb(data, ctx, repeat, cpu, flags)
        if ptype == ProgType.XDP:
            return self._xdp(data, ctx, repeat, cpu, flags)
        if ptype == ProgType.SYSCALL:
            return self._syscall(data, ctx, repeat, cpu, flags)
        if ptype in (ProgType.RAW_TRACEPOINT, ProgType.RAW_TRACEPOINT_WRITABLE):
            return self._raw_tp(data, ctx, repeat, cpu, flags)
        if ptype == ProgType.SK_LOOKUP:
            return self._sk_lookup(data, ctx, repeat, cpu, flags)
        if ptype == ProgType.FLOW_DISSECTOR:
            return self._flow_dissector(data, ctx, repeat, cpu, flags)
        name = ProgType(ptype).name if ptype in ProgType._value2member_map_ else str(ptype)
        if ptype in KERNEL_ONLY_TYPES:
            raise NotSupported(f"BPF_PROG_TEST_RUN of {name} programs in the emulator")
        raise _fail(ENOTSUPP, f"program type {name} has no test_run")

    # -- the loop (test_run.c: bpf_test_run) ---------------------------------------------------
    def _loop(self, c: ContextBase, repeat: int, cpu: int,
              flags: str = FLAGS_PROG_RUN) -> tuple[int, int, int, int]:
        repeat = max(1, repeat)
        r0 = insns = 0
        start = time.perf_counter_ns()
        for _ in range(repeat):
            r0, insns = self.prog.execute(c.address, cpu, flags)
        wall = (time.perf_counter_ns() - start) // repeat
        duration = wall if getattr(self.kernel.clock, "kind", "virtual") == "real" else 0
        return r0, insns, min(duration, 0xFFFFFFFF), wall

    def _current_cpu(self) -> int:
        return int(getattr(self.kernel, "cpu", 0))

    # -- skb -----------------------------------------------------------------------------------
    def _skb(self, data, ctx, repeat, cpu, flags) -> TestRunResult:
        if flags or cpu:
            raise _fail(EINVAL, "flags and cpu must be 0 for skb programs")
        data = bytes(data or b"")
        size = len(data)
        headroom = NET_SKB_PAD + NET_IP_ALIGN
        if size < ETH_HLEN or size > PAGE_SIZE - headroom - SKB_SHARED_INFO_SIZE:
            raise _fail(EINVAL, f"data size {size} outside [{ETH_HLEN}, "
                                f"{PAGE_SIZE - headroom - SKB_SHARED_INFO_SIZE}]")
        uctx = _ctx_init(_ctx_bytes(ctx, SKB_FIELDS, SKB_SIZE, "__sk_buff"), SKB_SIZE)
        ptype = self.prog.prog_type
        is_l2 = ptype in (ProgType.SCHED_CLS, ProgType.SCHED_ACT)
        # 6.18 (measured): data_end is valid for every skb type, CGROUP_SKB included.
        direct = True
        c = SkbContext(self.kernel.mem, data, name=self.prog.name, direct_access=direct)
        try:
            if uctx is not None and _u32(uctx, SKB_FIELDS, "ifindex") > LOOPBACK_IFINDEX:
                raise _fail(ENODEV, "no such ifindex (the emulator has only lo, ifindex 1)")
            self._eth_type_trans(c, data)
            if is_l2:
                c.packet.head -= ETH_HLEN          # __skb_push(skb, hh_len)
            c.sync_len()
            c.set_field("ifindex", LOOPBACK_IFINDEX)
            if uctx is not None:
                self._skb_ctx_in(c, uctx)
            r0, insns, duration, wall = self._loop(c, repeat, self._current_cpu())
            pkt = c.packet
            if not is_l2:
                if pkt.head < ETH_HLEN:
                    raise NotSupported("skb headroom expansion after the run")
                pkt.head -= ETH_HLEN                  # memset(__skb_push(skb, hh_len), 0, hh_len)
                pkt.buf[pkt.head:pkt.head + ETH_HLEN] = bytes(ETH_HLEN)
            ctx_out = self._skb_ctx_out(c, uctx) if uctx is not None else None
            return TestRunResult(r0 & 0xFFFFFFFF, pkt.bytes(), ctx_out, duration, r0, insns, wall,
                                 max(1, repeat))
        finally:
            c.release()

    @staticmethod
    def _eth_type_trans(c: SkbContext, data: bytes) -> None:
        """net/ethernet/eth.c: eth_type_trans on the loopback device (address 00:..:00)."""
        dest, proto = data[0:6], struct.unpack_from(">H", data, 12)[0]
        if dest != bytes(6):
            if dest[0] & 1:
                pkt_type = PACKET_BROADCAST if dest == b"\xff" * 6 else PACKET_MULTICAST
            else:
                pkt_type = PACKET_OTHERHOST
        else:
            pkt_type = PACKET_HOST
        if proto < 0x0600:          # !eth_proto_is_802_3: 802.2 or raw 802.3
            proto = ETH_P_802_3 if data[14:16] == b"\xff\xff" else ETH_P_802_2
        c.packet.head += ETH_HLEN
        c.network = c.packet.head                 # skb_reset_network_header
        c.set_field("pkt_type", pkt_type)
        c.set_field("protocol", struct.unpack("<H", struct.pack(">H", proto))[0])
        # test_run.c: the dummy socket takes its family and addresses from the IP header.
        l3 = data[ETH_HLEN:]
        sk = c.sock
        if proto == ETH_P_IP:
            c.set_field("family", AF_INET)
            struct.pack_into("<I", sk, SOCK_FIELDS["family"][0], AF_INET)
            if len(l3) >= 20:
                c.set_field("local_ip4", int.from_bytes(l3[12:16], "little"))
                c.set_field("remote_ip4", int.from_bytes(l3[16:20], "little"))
                sk[24:28] = l3[12:16]             # sk_rcv_saddr
                sk[52:56] = l3[16:20]             # sk_daddr
        elif proto == ETH_P_IPV6:
            c.set_field("family", AF_INET6)
            struct.pack_into("<I", sk, SOCK_FIELDS["family"][0], AF_INET6)
            if len(l3) >= 40:
                off, _ = SKB_FIELDS["local_ip6"]
                c.view[off:off + 16] = l3[8:24]
                off, _ = SKB_FIELDS["remote_ip6"]
                c.view[off:off + 16] = l3[24:40]
                sk[28:44] = l3[8:24]
                sk[56:72] = l3[24:40]

    @staticmethod
    def _skb_ctx_in(c: SkbContext, u: bytearray) -> None:
        """test_run.c: convert___skb_to_skb: only these fields may be non-zero."""
        allowed = ("mark", "priority", "ingress_ifindex", "ifindex", "cb", "tstamp", "wire_len",
                   "gso_segs", "gso_size", "hwtstamp")
        mask = bytearray(SKB_SIZE)
        for f in allowed:
            off, n = SKB_FIELDS[f]
            mask[off:off + n] = b"\xff" * n
        for i, b in enumerate(u):
            if b and not mask[i]:
                name = next((k for k, (o, n) in SKB_FIELDS.items() if o <= i < o + n), f"offset {i}")
                raise _fail(EINVAL, f"__sk_buff.{name} may not be set in ctx_in")
        for f in ("mark", "priority", "ingress_ifindex", "cb", "tstamp", "gso_size", "hwtstamp"):
            off, n = SKB_FIELDS[f]
            c.view[off:off + n] = u[off:off + n]
        length = c.field("len")
        wire_len = _u32(u, SKB_FIELDS, "wire_len")
        if wire_len == 0:
            wire_len = length
        elif wire_len < length or wire_len > GSO_LEGACY_MAX_SIZE:
            raise _fail(EINVAL, f"wire_len {wire_len} outside [{length}, {GSO_LEGACY_MAX_SIZE}]")
        c.set_field("wire_len", wire_len)
        gso_segs = _u32(u, SKB_FIELDS, "gso_segs")
        if gso_segs > GSO_MAX_SEGS:
            raise _fail(EINVAL, f"gso_segs {gso_segs} > {GSO_MAX_SEGS}")
        c.set_field("gso_segs", gso_segs)

    @staticmethod
    def _skb_ctx_out(c: SkbContext, u: bytearray) -> bytes:
        """test_run.c: convert_skb_to___skb."""
        out = bytearray(u)
        for f in ("mark", "priority", "ingress_ifindex", "ifindex", "tstamp", "cb", "wire_len",
                  "gso_segs", "hwtstamp"):
            off, n = SKB_FIELDS[f]
            out[off:off + n] = c.view[off:off + n]
        return bytes(out)

    # -- xdp -----------------------------------------------------------------------------------
    def _xdp(self, data, ctx, repeat, cpu, flags) -> TestRunResult:
        if self.prog.expected_attach_type in (AttachType.XDP_DEVMAP, AttachType.XDP_CPUMAP):
            raise _fail(EINVAL, "devmap/cpumap XDP programs cannot be test-run")
        if flags & ~BPF_F_TEST_XDP_LIVE_FRAMES:
            raise _fail(EINVAL, f"bad flags {flags:#x}")
        if flags & BPF_F_TEST_XDP_LIVE_FRAMES:
            raise NotSupported("BPF_F_TEST_XDP_LIVE_FRAMES in the emulator")
        data = bytes(data or b"")
        size = len(data)
        headroom = XDP_PACKET_HEADROOM
        uctx = _ctx_init(_ctx_bytes(ctx, XDP_FIELDS, XDP_MD_SIZE, "xdp_md"), XDP_MD_SIZE)
        metalen = 0
        linear = size
        if uctx is not None:
            # 6.18 (measured): data_end may be below the data size; the rest becomes frags.
            metalen = _u32(uctx, XDP_FIELDS, "data")
            linear = _u32(uctx, XDP_FIELDS, "data_end")
            if (_u32(uctx, XDP_FIELDS, "data_meta") or linear > size or metalen > linear
                    or metalen & 3 or metalen > 32):
                raise _fail(EINVAL, "xdp_md: data_meta must be 0, data_end at most the data size, "
                                    "data a metadata length (multiple of 4, at most 32)")
            headroom -= metalen
        max_data_sz = XDP_FRAME_SIZE - headroom - SKB_SHARED_INFO_SIZE
        linear = min(linear, max_data_sz)
        if size < ETH_HLEN:
            raise _fail(EINVAL, f"data size {size} < ETH_HLEN")
        if size - linear > MAX_SKB_FRAGS * PAGE_SIZE:
            raise _fail(ENOMEM, "more data than MAX_SKB_FRAGS pages of frags")
        c = XdpContext(self.kernel.mem, data[:linear], headroom, name=self.prog.name)
        c.set_frags(data[linear:])
        try:
            c.set_field("ingress_ifindex", LOOPBACK_IFINDEX)
            if uctx is not None:
                if _u32(uctx, XDP_FIELDS, "egress_ifindex"):
                    raise _fail(EINVAL, "xdp_md.egress_ifindex must be 0")
                ingress = _u32(uctx, XDP_FIELDS, "ingress_ifindex")
                rxq = _u32(uctx, XDP_FIELDS, "rx_queue_index")
                if not ingress and rxq:
                    raise _fail(EINVAL, "rx_queue_index without ingress_ifindex")
                if ingress:
                    if ingress != LOOPBACK_IFINDEX:
                        raise _fail(ENODEV, "no such ifindex (the emulator has only lo, ifindex 1)")
                    if rxq >= 1:
                        raise _fail(EINVAL, "lo has one rx queue")
                c.set_field("rx_queue_index", rxq)
                c.packet.head = c.packet.meta + metalen   # xdp_convert_md_to_buff
            r0, insns, duration, wall = self._loop(c, repeat, self._current_cpu())
            pkt = c.packet
            ctx_out = None
            if uctx is not None:                          # xdp_convert_buff_to_md
                out = bytearray(uctx)
                struct.pack_into("<II", out, 0, pkt.head - pkt.meta, pkt.tail - pkt.meta)
                ctx_out = bytes(out)
            return TestRunResult(r0 & 0xFFFFFFFF, pkt.bytes(pkt.meta) + c.frag_bytes(), ctx_out, duration, r0,
                                 insns, wall, max(1, repeat))
        finally:
            c.release()

    # -- syscall, raw_tp -----------------------------------------------------------------------
    def _syscall(self, data, ctx, repeat, cpu, flags) -> TestRunResult:
        # test_run.c: bpf_prog_test_run_syscall: no data, repeat, flags; ctx in is ctx out.
        # repeat 0 or 1 both mean "not given" here (the Python default is 1).
        if data or repeat > 1 or flags:
            raise _fail(EINVAL, "SYSCALL programs take only a ctx")
        raw = bytes(ctx or b"")
        if len(raw) > U16_MAX:
            raise _fail(EINVAL, f"ctx of {len(raw)} bytes > {U16_MAX}")
        if len(raw) < self.prog.max_ctx_offset:
            raise _fail(EINVAL, f"ctx of {len(raw)} bytes, the program reads "
                        f"{self.prog.max_ctx_offset} (prog->aux->max_ctx_offset)")
        c = RawContext(self.kernel.mem, raw, name=self.prog.name + ".ctx")
        try:
            r0, insns, _, wall = self._loop(c, 1, self._current_cpu(), FLAGS_SYSCALL)
            return TestRunResult(r0 & 0xFFFFFFFF, None, c.ctx_out() if raw else None, 0, r0, insns, wall)
        finally:
            c.release()

    def _raw_tp(self, data, ctx, repeat, cpu, flags) -> TestRunResult:
        if data or repeat > 1:
            raise _fail(EINVAL, "RAW_TRACEPOINT programs take only a ctx")
        raw = bytes(ctx or b"")
        if len(raw) > MAX_BPF_FUNC_ARGS * 8 or len(raw) < self.prog.max_ctx_offset:
            raise _fail(EINVAL, f"ctx of {len(raw)} bytes outside [{self.prog.max_ctx_offset}, "
                        f"{MAX_BPF_FUNC_ARGS * 8}] (bpf_prog_test_run_raw_tp)")
        cpu = cpu or 0
        if not flags & BPF_F_TEST_RUN_ON_CPU and cpu:
            raise _fail(EINVAL, "cpu without BPF_F_TEST_RUN_ON_CPU")
        if flags & BPF_F_TEST_RUN_ON_CPU:
            if cpu >= self.kernel.ncpus:
                raise _fail(ENXIO, f"cpu {cpu} is not online")
        else:
            cpu = self._current_cpu()
        c = RawContext(self.kernel.mem, raw, name=self.prog.name + ".ctx")
        try:
            r0, insns, _, wall = self._loop(c, 1, cpu, FLAGS_RAW_TP)
            return TestRunResult(r0 & 0xFFFFFFFF, None, None, 0, r0, insns, wall)
        finally:
            c.release()

    # -- sk_lookup, flow dissector ---------------------------------------------------------
    def _sk_lookup(self, data, ctx, repeat, cpu, flags) -> TestRunResult:
        """test_run.c: bpf_prog_test_run_sk_lookup."""
        if flags or cpu:
            raise _fail(EINVAL, "flags and cpu must be 0 for SK_LOOKUP programs")
        if data:
            raise _fail(EINVAL, "SK_LOOKUP programs take no data")
        u = _ctx_init(_ctx_bytes(ctx, SK_LOOKUP_FIELDS, SK_LOOKUP_SIZE, "bpf_sk_lookup"), SK_LOOKUP_SIZE)
        if u is None:
            raise _fail(EINVAL, "SK_LOOKUP programs need a ctx (struct bpf_sk_lookup)")
        if _u32(u, SK_LOOKUP_FIELDS, "cookie"):
            raise _fail(EINVAL, "bpf_sk_lookup.sk must be 0")
        end = sum(SK_LOOKUP_FIELDS["local_port"])
        if any(u[end:]):
            raise _fail(EINVAL, "bpf_sk_lookup fields after local_port must be 0")
        if _u32(u, SK_LOOKUP_FIELDS, "local_port") > U16_MAX:
            raise _fail(ERANGE, "local_port > 65535")
        family = _u32(u, SK_LOOKUP_FIELDS, "family") & 0xFFFF
        if family not in (AF_INET, AF_INET6):
            raise _fail(EAFNOSUPPORT, f"family {family}")
        view = bytearray(u)
        struct.pack_into("<II", view, 8, family, _u32(u, SK_LOOKUP_FIELDS, "protocol") & 0xFFFF)
        struct.pack_into("<I", view, 36, _u32(u, SK_LOOKUP_FIELDS, "remote_port") & 0xFFFF)
        if family == AF_INET:     # only the family's addresses reach the kernel ctx
            view[20:36] = view[44:60] = bytes(16)
        else:
            view[16:20] = view[40:44] = bytes(4)
        c = SkLookupContext(self.kernel.mem, bytes(view), name=self.prog.name)
        try:
            r0, insns, duration, wall = self._loop(c, repeat, self._current_cpu())
            out = bytearray(u)
            out[0:8] = bytes(8)                       # cookie: no socket selected
            # BPF_PROG_SK_LOOKUP_RUN_ARRAY: SK_DROP only when the program dropped
            retval = 0 if r0 & 0xFFFFFFFF == 0 else 1
            return TestRunResult(retval, None, bytes(out) if ctx is not None else None, duration,
                                 r0, insns, wall, max(1, repeat))
        finally:
            c.release()

    def _flow_dissector(self, data, ctx, repeat, cpu, flags) -> TestRunResult:
        """test_run.c: bpf_prog_test_run_flow_dissector + flow_dissector.c: bpf_flow_dissect."""
        if flags or cpu:
            raise _fail(EINVAL, "flags and cpu must be 0 for FLOW_DISSECTOR programs")
        data = bytes(data or b"")
        size = len(data)
        if size < ETH_HLEN or size > PAGE_SIZE:
            raise _fail(EINVAL, f"data size {size} outside [{ETH_HLEN}, {PAGE_SIZE}]")
        u = _ctx_init(_ctx_bytes(ctx, FLOW_KEYS_FIELDS, FLOW_KEYS_SIZE, "bpf_flow_keys"),
                      FLOW_KEYS_SIZE)
        keys_flags = 0
        if u is not None:
            off, n = FLOW_KEYS_FIELDS["flags"]
            if any(u[:off]) or any(u[off + n:]):
                raise _fail(EINVAL, "only bpf_flow_keys.flags may be set in ctx_in")
            keys_flags = _u32(u, FLOW_KEYS_FIELDS, "flags")
        c = FlowDissectorContext(self.kernel.mem, data, name=self.prog.name)
        try:
            r0 = insns = 0
            start = time.perf_counter_ns()
            for _ in range(max(1, repeat)):
                k = c.keys
                k[:] = bytes(FLOW_KEYS_SIZE)
                k[10:12] = data[12:14]                      # n_proto = eth->h_proto
                struct.pack_into("<HH", k, 0, ETH_HLEN, ETH_HLEN)
                struct.pack_into("<I", k, 48, keys_flags)
                r0, insns = self.prog.execute(c.address, self._current_cpu(), FLAGS_SYSCALL)
                nhoff, thoff = struct.unpack_from("<HH", k, 0)
                nhoff = min(max(nhoff, ETH_HLEN), size)     # clamp_t(u16, ...)
                thoff = min(max(thoff, nhoff), size)
                struct.pack_into("<HH", k, 0, nhoff, thoff)
            wall = (time.perf_counter_ns() - start) // max(1, repeat)
            duration = wall if getattr(self.kernel.clock, "kind", "virtual") == "real" else 0
            ctx_out = bytes(u) if u is not None else None
            return TestRunResult(r0 & 0xFFFFFFFF, bytes(c.keys), ctx_out, duration, r0, insns, wall,
                                 max(1, repeat))
        finally:
            c.release()
