"""BPF_PROG_TEST_RUN on the emulator and on the kernel: the same inputs give the same retval,
data_out and ctx_out (net/bpf/test_run.c rules), and the same refusals (errno)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from bpfsim.errors import KernelError
from bpfsim.runtime.contexts import SKB_FIELDS, SKB_SIZE, ctx_from_fields, ctx_to_fields

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "runtime"
BENCH = ROOT / "bench"
PKT64 = (BENCH / "pkt_64.bin").read_bytes() if (BENCH / "pkt_64.bin").exists() else None


def packet(n: int = 64) -> bytes:
    """Ethernet/IPv4/TCP-like frame: dst 02:00:00:00:00:02 (not lo's address)."""
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    ip = bytes.fromhex("4500002e123440004006" "0000" "0a000001" "0a000002")
    return (eth + ip + bytes(range(256)) * 8)[:n]


@pytest.fixture
def skb(backend):
    return backend.load(str(FIX / "skb.bpf.o"))


@pytest.fixture
def xdp(backend):
    return backend.load(str(FIX / "xdp_adjust.bpf.o"))


def test_tc_fields_and_ctx_out(skb) -> None:
    ctx = ctx_from_fields({"cb": [1, 2, 3, 4, 5], "priority": 9}, SKB_FIELDS, SKB_SIZE, "__sk_buff")
    r = skb.programs["tc_fields"].test_run(data=packet(), ctx=ctx)
    assert r.retval == (64 << 16) | 1           # tc sees the Ethernet header: len 64, IPv4
    assert r.data == packet()
    out = ctx_to_fields(r.ctx, SKB_FIELDS)
    assert out["mark"] == 64 * 3
    assert out["priority"] == 0x0008            # skb->protocol, network byte order
    assert out["cb"] == [3, 2, 3, 4, 1]         # PACKET_OTHERHOST, ifindex of lo
    assert out["ifindex"] == 1
    assert out["wire_len"] == 64


def test_socket_filter_sees_l3_and_gets_zeroed_mac(skb) -> None:
    r = skb.programs["sf_len"].test_run(data=packet())
    assert r.retval == (50 << 16) | 0x4500      # eth_type_trans pulled 14 bytes
    assert r.data == bytes(14) + packet()[14:]   # test_run pushes back a zeroed header


def test_skb_store_and_load_bounds(skb) -> None:
    r = skb.programs["tc_store"].test_run(data=packet())
    assert r.retval == 0b111
    assert r.data[:6] == bytes([1, 2, 3, 4, 5, 6])
    assert r.data[6:] == packet()[6:]


def test_cgroup_skb_has_data_end(skb) -> None:
    # 6.18 computes the data pointers for CGROUP_SKB too; data starts at the IP header.
    r = skb.programs["cg_len"].test_run(data=packet())
    assert r.retval == 1 and r.data == bytes(14) + packet()[14:]


def test_xdp_ctx_data_end_below_size_makes_frags(xdp) -> None:
    # 6.18: ctx.data_end < data size: the program sees data_end bytes, the rest are frags;
    # data_out is the whole packet, ctx_out keeps the linear data_end.
    r = xdp.programs["xdp_ctx"].test_run(data=packet(), ctx=struct.pack("<6I", 8, 40, 0, 0, 0, 0))
    assert r.retval & 0xFF == 32
    assert r.data == packet()
    assert struct.unpack("<6I", r.ctx)[:2] == (8, 40)


@pytest.mark.parametrize("ctx, errno", [
    ({"len": 5}, 22),                # a field test_run does not accept
    ({"wire_len": 10}, 22),          # wire_len < len
    ({"gso_segs": 70000}, 22),
    ({"ifindex": 999}, 19),          # no such device
])
def test_skb_ctx_refusals(skb, ctx, errno) -> None:
    with pytest.raises(KernelError) as e:
        skb.programs["tc_fields"].test_run(data=packet(), ctx=ctx)
    assert e.value.errno == errno


def test_skb_data_size_limits(skb) -> None:
    for data in (packet(13), bytes(4000)):
        with pytest.raises(KernelError) as e:
            skb.programs["tc_fields"].test_run(data=data)
        assert e.value.errno == 22


def test_xdp_grow_head_and_tail(xdp) -> None:
    r = xdp.programs["xdp_grow"].test_run(data=packet())
    assert r.retval == 2
    assert r.data == b"\xab" * 4 + packet() + bytes(6)


def test_xdp_shrink_and_limits(xdp) -> None:
    r = xdp.programs["xdp_shrink"].test_run(data=packet())
    assert r.retval == 0b1111
    assert r.data == packet()[10:-8]


def test_xdp_metadata_is_part_of_data_out(xdp) -> None:
    r = xdp.programs["xdp_meta"].test_run(data=packet())
    assert r.retval == 2
    assert r.data == struct.pack("<Q", 0x0102030405060708) + packet()


def test_xdp_ctx_in_out(xdp) -> None:
    md = struct.pack("<6I", 8, 64, 0, 1, 0, 0)    # 8 bytes of metadata, lo, queue 0
    r = xdp.programs["xdp_ctx"].test_run(data=packet(), ctx=md)
    assert r.retval == (1 << 16) | 56
    assert r.data == packet()
    assert struct.unpack("<6I", r.ctx)[:2] == (8, 64)


@pytest.mark.parametrize("md, errno", [
    (struct.pack("<6I", 0, 65, 0, 0, 0, 0), 22),   # data_end past the data
    (struct.pack("<6I", 12, 8, 0, 0, 0, 0), 22),   # data past data_end
    (struct.pack("<6I", 6, 64, 0, 0, 0, 0), 22),   # metadata not a multiple of 4
    (struct.pack("<6I", 0, 64, 0, 0, 0, 1), 22),   # egress_ifindex
    (struct.pack("<6I", 0, 64, 0, 0, 1, 0), 22),   # rx queue without device
    (struct.pack("<6I", 0, 64, 0, 77, 0, 0), 19),  # no such device
])
def test_xdp_ctx_refusals(xdp, md, errno) -> None:
    with pytest.raises(KernelError) as e:
        xdp.programs["xdp_ctx"].test_run(data=packet(), ctx=md)
    assert e.value.errno == errno


def test_repeat_runs_on_the_same_packet(xdp) -> None:
    # test_run.c: bpf_test_run repeats on one xdp_buff, so adjustments accumulate.
    r = xdp.programs["xdp_shrink"].test_run(data=packet(), repeat=2)
    assert len(r.data) == 64 - 2 * 18


@pytest.mark.skipif(PKT64 is None, reason="bench packets missing")
@pytest.mark.parametrize("name, retval", [("parse_packet", 2176149347), ("fnv_packet", 481572483),
                                          ("empty", 0)])
def test_bench_objects(backend, name, retval) -> None:
    coll = backend.load(str(BENCH / "objects" / f"{name}.bpf.o"))
    (prog,) = coll.programs.values()
    r = prog.test_run(data=PKT64)
    assert r.retval == retval
    assert r.data == PKT64


def test_sim_counts_instructions() -> None:
    import bpfsim

    rt = bpfsim.Runtime()
    coll = rt.load(str(BENCH / "objects" / "fnv_packet.bpf.o"))
    r = coll.programs["fnv_packet_xdp"].test_run(data=PKT64)
    assert r.insns == 654 and r.duration_ns == 0     # the kernel README's count; virtual clock
    rt.close()


@pytest.mark.skipif(PKT64 is None, reason="bench packets missing")
def test_checksum_helpers_match_the_kernel(skb) -> None:
    r = skb.programs["tc_csum"].test_run(data=PKT64)
    assert r.retval == 0
    assert r.data[14 + 8] == 7 and r.data[14 + 22:14 + 24] == (8080).to_bytes(2, "big")
    # the incrementally updated checksums equal a full recomputation (+ the 0x1234 diff)
    ip = bytearray(r.data[14:34])
    stored = int.from_bytes(ip[10:12], "big")
    ip[10:12] = b"\0\0"
    total = sum(int.from_bytes(ip[i:i + 2], "big") for i in range(0, 20, 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert stored != ~total & 0xFFFF            # the by-diff update changed it on purpose
    assert len(r.data) == 64


@pytest.mark.kernel
@pytest.mark.skipif(PKT64 is None, reason="bench packets missing")
@pytest.mark.parametrize("obj, prog", [("skb", "tc_csum"), ("skb", "tc_store"), ("skb", "tc_fields"),
                                       ("skb", "sf_len"), ("xdp_adjust", "xdp_grow"),
                                       ("xdp_adjust", "xdp_meta"), ("xdp_adjust", "xdp_shrink"),
                                       ("xdp_adjust", "xdp_bytes"), ("skb", "tc_pull"),
                                       ("skb", "tc_tail"), ("skb", "tc_vlan")])
def test_byte_for_byte_as_the_kernel(obj, prog) -> None:
    import bpfsim
    import bpfsim.kernel

    path = str(FIX / f"{obj}.bpf.o")
    rt = bpfsim.Runtime()
    kcoll = bpfsim.kernel.load(path)
    try:
        sim = rt.load(path).programs[prog].test_run(data=PKT64, repeat=3)
        kern = kcoll.programs[prog].test_run(data=PKT64, repeat=3)
    finally:
        kcoll.close()
        rt.close()
    assert (sim.retval, sim.data) == (kern.retval, kern.data)


def test_xdp_bytes_across_frags_and_redirect(xdp) -> None:
    md = struct.pack("<6I", 0, 40, 0, 0, 0, 0)     # 40 linear bytes, 24 in frags
    r = xdp.programs["xdp_bytes"].test_run(data=packet(), ctx=md)
    assert r.retval == 4                            # XDP_REDIRECT
    want = bytearray(packet())
    want[36:44] = bytes(b ^ 0xFF for b in want[36:44])
    assert r.data == bytes(want)


def test_skb_pull_data_and_redirect(skb) -> None:
    assert skb.programs["tc_pull"].test_run(data=packet()).retval == 71   # TC_ACT_REDIRECT, SHOT


def sk_lookup_ctx(family: int = 2, lport: int = 7, extra: bytes = b"") -> bytes:
    b = bytearray(72)
    struct.pack_into("<QIII", b, 0, 0, family, 6, 0x0100000A)     # TCP from 10.0.0.1
    struct.pack_into("<I", b, 36, 0x3930)
    struct.pack_into("<I", b, 60, lport)
    return bytes(b) + extra


@pytest.mark.parametrize("ctx, result", [
    (sk_lookup_ctx(), 0),                    # SK_DROP
    (sk_lookup_ctx(lport=8), 1),             # SK_PASS
    (sk_lookup_ctx(family=10), 1),
    (sk_lookup_ctx(family=3), 97),           # -EAFNOSUPPORT
    (sk_lookup_ctx(lport=70000), 34),        # -ERANGE
    (sk_lookup_ctx(extra=b"\1"), 7),         # -E2BIG: non-zero bytes past the struct
    (sk_lookup_ctx()[:64] + b"\1" + bytes(7), 22),   # ingress_ifindex may not be set
])
def test_sk_lookup(backend, ctx, result) -> None:
    prog = backend.load(str(FIX / "lookup.bpf.o")).programs["lookup"]
    if result > 1:
        with pytest.raises(KernelError) as e:
            prog.test_run(ctx=ctx)
        assert e.value.errno == result
        return
    r = prog.test_run(ctx=ctx)
    assert r.retval == result and r.ctx == ctx


@pytest.mark.skipif(PKT64 is None, reason="bench packets missing")
def test_flow_dissector(backend) -> None:
    prog = backend.load(str(FIX / "lookup.bpf.o")).programs["dissect"]
    r = prog.test_run(data=PKT64, ctx=bytes(48) + struct.pack("<I", 1) + bytes(4))
    assert r.retval == 0                                     # BPF_OK
    nhoff, thoff, addr_proto = struct.unpack_from("<HHH", r.data)
    assert (nhoff, thoff, addr_proto) == (14, 34, 0x0800)   # nhoff clamped back to ETH_HLEN
    assert r.data[9] == 6 and r.data[16:24] == PKT64[26:34]
    assert struct.unpack_from("<I", r.data, 48)[0] == 1     # flags from ctx_in
    with pytest.raises(KernelError) as e:
        prog.test_run(data=PKT64, ctx=struct.pack("<H", 1) + bytes(54))
    assert e.value.errno == 22


@pytest.mark.kernel
@pytest.mark.parametrize("prog", ["xdp_ctx", "xdp_grow", "xdp_shrink", "xdp_bytes", "xdp_meta"])
@pytest.mark.parametrize("data, ctx", [
    (bytes(range(256)) * 16 + b"abc", None),                       # past the frame: frags
    (bytes(64), struct.pack("<6I", 0, 20, 0, 0, 0, 0)),            # ctx data_end: frags
    (bytes(range(64)), struct.pack("<6I", 0, 40, 0, 0, 0, 0)),
])
def test_multi_buffer_xdp_as_the_kernel(prog, data, ctx) -> None:
    import bpfsim
    import bpfsim.kernel

    path = str(FIX / "xdp_adjust.bpf.o")
    rt = bpfsim.Runtime()
    kcoll = bpfsim.kernel.load(path)
    try:
        sim = rt.load(path).programs[prog].test_run(data=data, ctx=ctx)
        kern = kcoll.programs[prog].test_run(data=data, ctx=ctx)
    finally:
        kcoll.close()
        rt.close()
    assert (sim.retval, sim.data, sim.ctx) == (kern.retval, kern.data, kern.ctx)


def test_cgroup_skb_dummy_socket(skb) -> None:
    r = skb.programs["cg_sock"].test_run(data=packet())
    assert r.retval == 1
    out = struct.unpack("<8Q", skb.maps[".bss"].raw[b"\0\0\0\0"][:64])
    src, dst = 0x0100000A, 0x0200000A                     # 10.0.0.1 -> 10.0.0.2, as loaded
    assert out == (2, src, dst, 2, src, dst, 7, (1 << 64) - 1)


def test_skb_change_tail(skb) -> None:
    r = skb.programs["tc_tail"].test_run(data=packet())
    assert r.retval == 0x1F | (164 << 8) | (40 << 20)
    assert r.data == packet()[:40]


def test_skb_vlan_push_pop(skb) -> None:
    r = skb.programs["tc_vlan"].test_run(data=packet())
    assert r.retval == 0
    off = 64                                                   # vlan_out after sock_out[8]
    out = struct.unpack("<8Q", skb.maps[".bss"].raw[b"\0\0\0\0"][off:off + 64])
    assert out == (0, 0x10064, 0, 0xA888000100C8, 0x8100000044, 0, 0x8100010064, 0x800000040)
    # the last push moved tag 100 from hw-accel into the packet
    assert r.data == packet()[:12] + bytes.fromhex("81000064") + packet()[12:]


def test_skb_misc_helpers(skb) -> None:
    skb.programs["tc_misc"].test_run(data=packet())
    off = 128                                                  # misc_out after vlan_out[8]
    out = struct.unpack("<6Q", skb.maps[".bss"].raw[b"\0\0\0\0"][off:off + 48])
    assert out == (0, 0, (1 << 64) - 524, 0xABCD, 0xABCD, 0)   # csum_update: -ENOTSUPP
