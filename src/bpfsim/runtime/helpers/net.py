"""Packet helpers (net/core/filter.c): skb load/store bytes, checksums, hash, XDP adjustments.

Job: act on the packet of the context r1 points to (`contexts.SkbContext` / `XdpContext`,
found as the owner of the ctx region).  Must not import `kernel` or the VM engines.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from bpfsim.errors import MemoryFault
from bpfsim.runtime.contexts import (
    ETH_HLEN,
    XDP_FRAME_SIZE,
    XDP_FRAME_STRUCT,
    FlowDissectorContext,
    SkbContext,
    XdpContext,
)
from bpfsim.runtime.helpers.registry import helper, s32, u64
from bpfsim.uapi.constants import (
    EACCES,
    EFAULT,
    EINVAL,
    ENOMEM,
    ENOTSUPP,
    TC_ACT_SHOT,
    XDP_ABORTED,
    XDP_REDIRECT,
    ProgType,
)

INT_MAX = (1 << 31) - 1
BPF_F_RECOMPUTE_CSUM = 1 << 0
BPF_F_INVALIDATE_HASH = 1 << 1
BPF_F_HDR_FIELD_MASK = 0xF
BPF_F_PSEUDO_HDR = 1 << 4
BPF_F_MARK_MANGLED_0 = 1 << 5
BPF_F_MARK_ENFORCE = 1 << 6
BPF_F_IPV6 = 1 << 7
CSUM_MANGLED_0 = 0xFFFF
BPF_F_INGRESS = 1 << 0
LO_MTU = 65536
TC_ACT_REDIRECT = 7


def _ctx(env: Any, addr: int, cls: type) -> Any:
    found = env.mem.find(addr)
    owner = found[0].owner if found is not None else None
    if not isinstance(owner, cls):
        raise MemoryFault(f"helper expects a {cls.__name__} in r1, got {addr:#x}", address=addr)
    return owner


# -- skb bytes ---------------------------------------------------------------------------------
@helper("bpf_skb_load_bytes")
def bpf_skb_load_bytes(env, skb, offset, to, length, _r5):
    offset &= 0xFFFFFFFF
    length &= 0xFFFFFFFF
    found = env.mem.find(skb)
    if found is not None and isinstance(found[0].owner, FlowDissectorContext):
        # filter.c: bpf_flow_dissector_load_bytes: test_run gives the program no skb
        env.mem.write(to, bytes(length))
        return u64(-EFAULT)
    c = _ctx(env, skb, SkbContext)
    pkt = c.packet
    # skb_header_pointer: fails unless [offset, offset+len) lies within skb->len.
    if offset > INT_MAX or offset + length > pkt.length:
        env.mem.write(to, bytes(length))
        return u64(-EFAULT)
    env.mem.write(to, bytes(pkt.buf[pkt.head + offset:pkt.head + offset + length]))
    return 0


@helper("bpf_skb_store_bytes")
def bpf_skb_store_bytes(env, skb, offset, frm, length, flags):
    c = _ctx(env, skb, SkbContext)
    offset &= 0xFFFFFFFF
    length &= 0xFFFFFFFF
    if flags & ~(BPF_F_RECOMPUTE_CSUM | BPF_F_INVALIDATE_HASH):
        return u64(-EINVAL)
    pkt = c.packet
    if offset > INT_MAX or offset + length > pkt.length:   # bpf_try_make_writable
        return u64(-EFAULT)
    data = env.mem.read(frm, length)
    pkt.buf[pkt.head + offset:pkt.head + offset + length] = data
    if flags & BPF_F_INVALIDATE_HASH:
        c.set_field("hash", 0)
        c.hash_valid = False
    return 0


@helper("bpf_skb_pull_data")
def bpf_skb_pull_data(env, skb, length, *_):
    # filter.c: the test_run skb is linear, so pulling succeeds up to skb->len
    # (skb_ensure_writable -> pskb_may_pull), -ENOMEM beyond.
    c = _ctx(env, skb, SkbContext)
    return u64(-ENOMEM) if (length & 0xFFFFFFFF) > c.packet.length else 0


@helper("bpf_skb_change_tail")
def bpf_skb_change_tail(env, skb, new_len, flags, *_):
    # filter.c: __bpf_skb_change_tail: new_len between the network header offset
    # (__bpf_skb_min_len) and lo's mtu + hard_header_len (__bpf_skb_max_len); growth is zeroed.
    c = _ctx(env, skb, SkbContext)
    pkt = c.packet
    new_len &= 0xFFFFFFFF
    min_len = max(0, c.network - pkt.head)
    if flags or new_len > LO_MTU + ETH_HLEN or new_len < min_len:
        return u64(-EINVAL)
    end = pkt.head + new_len
    if end > pkt.tail:
        pkt.reserve_tail(env.mem, end)
        pkt.buf[pkt.tail:end] = bytes(end - pkt.tail)
    pkt.tail = end
    c.sync_len()
    return 0


@helper("bpf_set_hash")
def bpf_set_hash(env, skb, hash_, *_):
    # filter.c: __skb_set_sw_hash(skb, hash, true)
    c = _ctx(env, skb, SkbContext)
    c.set_field("hash", hash_ & 0xFFFFFFFF)
    c.hash_valid = True
    return 0


@helper("bpf_set_hash_invalid")
def bpf_set_hash_invalid(env, skb, *_):
    c = _ctx(env, skb, SkbContext)
    c.set_field("hash", 0)                     # skb_clear_hash
    c.hash_valid = False
    return 0


@helper("bpf_csum_update")
def bpf_csum_update(env, skb, csum, *_):
    # filter.c: only a CHECKSUM_COMPLETE skb has a csum to update; test_run skbs are NONE.
    _ctx(env, skb, SkbContext)
    return u64(-ENOTSUPP)


@helper("bpf_get_cgroup_classid")
def bpf_get_cgroup_classid(env, skb, *_):
    # net_cls classid of the task / socket: none in the emulator (the kernel's default too)
    _ctx(env, skb, SkbContext)
    return 0


@helper("bpf_get_route_realm")
def bpf_get_route_realm(env, skb, *_):
    # dst_tclassid: a test_run skb has no route
    _ctx(env, skb, SkbContext)
    return 0


# -- VLAN (net/core/skbuff.c: skb_vlan_push / skb_vlan_pop on a test_run skb) ---------------
ETH_P_8021Q, ETH_P_8021AD = 0x8100, 0x88A8
VLAN_HLEN = 4


def _be16_field(v: int) -> int:
    """A host-order 16-bit value as the __be16 the skb (and __sk_buff) holds, read as u32."""
    return struct.unpack("<H", struct.pack(">H", v & 0xFFFF))[0]


def _from_be16_field(v: int) -> int:
    return struct.unpack(">H", struct.pack("<H", v & 0xFFFF))[0]


def _vlan_put_hwaccel(c: SkbContext, proto: int, tci: int) -> None:
    c.set_field("vlan_proto", _be16_field(proto))
    c.set_field("vlan_tci", tci & 0xFFFF)
    c.set_field("vlan_present", 1 if (proto or tci) else 0)   # skb_vlan_tag_present: vlan_all


def _vlan_data_pop(c: SkbContext) -> int | tuple[int, int]:
    """__skb_vlan_pop: remove the tag in the packet; (tci, inner proto) or -errno."""
    pkt = c.packet
    if pkt.length < ETH_HLEN + VLAN_HLEN:
        return -ENOMEM                                          # skb_ensure_writable
    h = pkt.head
    tci, inner = struct.unpack_from(">HH", pkt.buf, h + ETH_HLEN)
    pkt.buf[h + VLAN_HLEN:h + VLAN_HLEN + 12] = pkt.buf[h:h + 12]
    pkt.head += VLAN_HLEN
    c.network = max(c.network, pkt.head + ETH_HLEN)
    if inner >= 0x0600:                                         # vlan_set_encap_proto
        c.set_field("protocol", _be16_field(inner))
    c.sync_len()
    return tci, inner


@helper("bpf_skb_vlan_push")
def bpf_skb_vlan_push(env, skb, vlan_proto, vlan_tci, *_):
    c = _ctx(env, skb, SkbContext)
    proto = _from_be16_field(vlan_proto)
    if proto not in (ETH_P_8021Q, ETH_P_8021AD):
        proto = ETH_P_8021Q
    if c.field("vlan_present"):
        # the current hw-accelerated tag moves into the packet (__vlan_insert_tag)
        pkt = c.packet
        if pkt.head < VLAN_HLEN:
            return u64(-ENOMEM)
        old_proto = c.field("vlan_proto")
        h = pkt.head - VLAN_HLEN
        pkt.buf[h:h + 12] = pkt.buf[pkt.head:pkt.head + 12]
        struct.pack_into("<HH", pkt.buf, h + 12, old_proto, _be16_field(c.field("vlan_tci")))
        pkt.head = h
        c.network -= VLAN_HLEN
        c.set_field("protocol", old_proto)
        c.sync_len()
    _vlan_put_hwaccel(c, proto, vlan_tci)
    return 0


@helper("bpf_skb_vlan_pop")
def bpf_skb_vlan_pop(env, skb, *_):
    c = _ctx(env, skb, SkbContext)
    vlan_types = (_be16_field(ETH_P_8021Q), _be16_field(ETH_P_8021AD))
    if c.field("vlan_present"):
        _vlan_put_hwaccel(c, 0, 0)                               # __vlan_hwaccel_clear_tag
    else:
        if c.field("protocol") not in vlan_types:
            return 0
        got = _vlan_data_pop(c)
        if isinstance(got, int):
            return u64(got)
    if c.field("protocol") not in vlan_types:                     # move the next tag to hwaccel
        return 0
    outer = _from_be16_field(c.field("protocol"))
    got = _vlan_data_pop(c)
    if isinstance(got, int):
        return u64(got)
    _vlan_put_hwaccel(c, outer, got[0])
    return 0


@helper("bpf_redirect")
def bpf_redirect(env, ifindex, flags, *_):
    # XDP programs get bpf_xdp_redirect, the others filter.c: bpf_redirect.
    if getattr(env.program, "prog_type", None) == ProgType.XDP:
        return XDP_ABORTED if flags else XDP_REDIRECT
    if flags & ~BPF_F_INGRESS:
        return TC_ACT_SHOT
    return TC_ACT_REDIRECT


# -- checksums (ones' complement arithmetic of include/net/checksum.h, x86-64) ---------------
def _fold32(v: int) -> int:
    while v >> 32:
        v = (v & 0xFFFFFFFF) + (v >> 32)
    return v


def csum_add(a: int, b: int) -> int:
    return _fold32(a + b)


def csum_fold(csum: int) -> int:
    """The 16-bit folded complement (csum_fold)."""
    v = csum & 0xFFFFFFFF
    v = (v & 0xFFFF) + (v >> 16)
    v = (v & 0xFFFF) + (v >> 16)
    return ~v & 0xFFFF


def csum_partial(data: bytes, seed: int) -> int:
    """x86-64 csum_partial: 32-bit little-endian words, then a 16-bit and an 8-bit tail, summed
    with end-around carry into 32 bits (the buffer is assumed even-aligned)."""
    total = seed & 0xFFFFFFFF
    n4 = len(data) // 4 * 4
    for (w,) in struct.iter_unpack("<I", data[:n4]):
        total += w
    rest = data[n4:]
    if len(rest) >= 2:
        total += struct.unpack_from("<H", rest)[0]
        rest = rest[2:]
    if rest:
        total += rest[0]
    return _fold32(total)


def csum_sub(a: int, b: int) -> int:
    return csum_add(a, ~b & 0xFFFFFFFF)


def csum_from32to16(s: int) -> int:
    """include/net/checksum.h: csum_from32to16 (fold without complement)."""
    s = (s + (((s >> 16) | (s << 16)) & 0xFFFFFFFF)) & 0xFFFFFFFF
    return s >> 16


@helper("bpf_csum_diff")
def bpf_csum_diff(env, frm, from_size, to, to_size, seed):
    # filter.c (6.12+): any sizes; the result is folded to 16 bits on every architecture.
    from_size &= 0xFFFFFFFF
    to_size &= 0xFFFFFFFF
    seed &= 0xFFFFFFFF
    a = env.mem.read(frm, from_size) if from_size else b""
    b = env.mem.read(to, to_size) if to_size else b""
    if from_size and to_size:
        return csum_from32to16(csum_sub(csum_partial(b, seed), csum_partial(a, 0)))
    if to_size:
        return csum_from32to16(csum_partial(b, seed))
    if from_size:
        return csum_from32to16(~csum_partial(a, ~seed & 0xFFFFFFFF) & 0xFFFFFFFF)
    return seed


def _csum_field(env, skb, offset) -> tuple[Any, int] | int:
    c = _ctx(env, skb, SkbContext)
    offset &= 0xFFFFFFFF
    if offset > 0xFFFF or offset & 1:
        return -EFAULT
    pkt = c.packet
    if offset + 2 > pkt.length:
        return -EFAULT
    return c, pkt.head + offset


def _replace(buf: bytearray, pos: int, frm: int, to: int, field: int) -> int:
    old = struct.unpack_from("<H", buf, pos)[0]
    if field == 0:
        if frm:
            return -EINVAL
        new = csum_fold(csum_add(to & 0xFFFFFFFF, ~old & 0xFFFF))          # csum_replace_by_diff
    elif field in (2, 4):
        mask = 0xFFFF if field == 2 else 0xFFFFFFFF
        # csum_replace4: ~csum_fold(~sum + ~from + to)
        new = csum_fold(csum_add(csum_add(~old & 0xFFFF, ~frm & mask), to & mask))
    else:
        return -EINVAL
    struct.pack_into("<H", buf, pos, new)
    return 0


@helper("bpf_l3_csum_replace")
def bpf_l3_csum_replace(env, skb, offset, frm, to, flags):
    if flags & ~BPF_F_HDR_FIELD_MASK:
        return u64(-EINVAL)
    got = _csum_field(env, skb, offset)
    if isinstance(got, int):
        return u64(got)
    c, pos = got
    return u64(_replace(c.packet.buf, pos, frm, to, flags & BPF_F_HDR_FIELD_MASK))


@helper("bpf_l4_csum_replace")
def bpf_l4_csum_replace(env, skb, offset, frm, to, flags):
    allowed = BPF_F_MARK_MANGLED_0 | BPF_F_MARK_ENFORCE | BPF_F_PSEUDO_HDR | BPF_F_HDR_FIELD_MASK \
        | BPF_F_IPV6
    if flags & ~allowed:
        return u64(-EINVAL)
    got = _csum_field(env, skb, offset)
    if isinstance(got, int):
        return u64(got)
    c, pos = got
    buf = c.packet.buf
    mmzero = flags & BPF_F_MARK_MANGLED_0
    if mmzero and not flags & BPF_F_MARK_ENFORCE and not struct.unpack_from("<H", buf, pos)[0]:
        return 0
    # test_run skbs are CHECKSUM_NONE: inet_proto_csum_replace* only rewrite the field.
    err = _replace(buf, pos, frm, to, flags & BPF_F_HDR_FIELD_MASK)
    if err:
        return u64(err)
    if mmzero and not struct.unpack_from("<H", buf, pos)[0]:
        struct.pack_into("<H", buf, pos, CSUM_MANGLED_0)
    return 0


@helper("bpf_get_hash_recalc")
def bpf_get_hash_recalc(env, skb, *_):
    # skb_get_hash: the kernel hashes the flow keys with a boot-time random key, so no value
    # can match a given kernel; ours is a stable hash of the packet headers (never 0).
    c = _ctx(env, skb, SkbContext)
    if not c.hash_valid:
        pkt = c.packet
        digest = hashlib.blake2b(bytes(pkt.buf[pkt.head:pkt.head + 64]), digest_size=4).digest()
        c.set_field("hash", int.from_bytes(digest, "little") or 1)
        c.hash_valid = True
    return c.field("hash")


# -- XDP ---------------------------------------------------------------------------------------
@helper("bpf_xdp_adjust_head")
def bpf_xdp_adjust_head(env, xdp, offset, *_):
    c = _ctx(env, xdp, XdpContext)
    pkt = c.packet
    off = s32(offset)
    metalen = pkt.head - pkt.meta
    data = pkt.head + off
    if data < XDP_FRAME_STRUCT + metalen or data > pkt.tail - ETH_HLEN:
        return u64(-EINVAL)
    if metalen:
        pkt.buf[pkt.meta + off:pkt.meta + off + metalen] = pkt.buf[pkt.meta:pkt.meta + metalen]
    pkt.meta += off
    pkt.head = data
    return 0


@helper("bpf_xdp_adjust_meta")
def bpf_xdp_adjust_meta(env, xdp, offset, *_):
    c = _ctx(env, xdp, XdpContext)
    pkt = c.packet
    off = s32(offset)
    meta = pkt.meta + off
    if meta < XDP_FRAME_STRUCT or meta > pkt.head:
        return u64(-EINVAL)
    metalen = pkt.head - meta
    if metalen & 3 or metalen > 32:              # xdp_metalen_invalid
        return u64(-EACCES)
    pkt.meta = meta
    return 0


@helper("bpf_xdp_adjust_tail")
def bpf_xdp_adjust_tail(env, xdp, offset, *_):
    c = _ctx(env, xdp, XdpContext)
    pkt = c.packet
    off = s32(offset)
    if c.frags:
        return u64(_frags_adjust_tail(c, off))
    end = pkt.tail + off
    if end > len(pkt.buf) or end < pkt.head + ETH_HLEN:
        return u64(-EINVAL)
    if off > 0:
        pkt.buf[pkt.tail:end] = bytes(off)
    pkt.tail = end
    return 0


def _frags_adjust_tail(c: XdpContext, off: int) -> int:
    """filter.c: bpf_xdp_frags_increase_tail / bpf_xdp_frags_shrink_tail (test_run's frag_size
    is the 4 KiB frame, so the last page's tailroom is what is left of it)."""
    if off > 0:
        last = c.frags[-1]
        if off > XDP_FRAME_SIZE - len(last):
            return -EINVAL
        last.extend(bytes(off))
        return 0
    shrink = -off
    if shrink > c.packet.length + c.frags_len - ETH_HLEN:
        return -EINVAL
    while c.frags and shrink > 0:
        last = c.frags[-1]
        cut = min(shrink, len(last))
        shrink -= cut
        if cut == len(last):
            c.frags.pop()
        else:
            del last[len(last) - cut:]
            break
    if not c.frags:
        c.packet.tail -= shrink          # the rest comes off the linear part
    return 0


def _xdp_span(c: XdpContext, offset: int, length: int) -> int:
    """bpf_xdp_pointer's checks: -EFAULT past 0xffff, -EINVAL past the whole buffer."""
    if offset > 0xFFFF or length > 0xFFFF:
        return -EFAULT
    if offset + length > c.packet.length + c.frags_len:
        return -EINVAL
    return 0


def _xdp_access(env, xdp, offset, length) -> tuple[XdpContext, int, int, int]:
    """The ctx and the u32 offset/length of bpf_xdp_load/store_bytes, with _xdp_span's error."""
    c = _ctx(env, xdp, XdpContext)
    offset &= 0xFFFFFFFF
    length &= 0xFFFFFFFF
    return c, offset, length, _xdp_span(c, offset, length)


@helper("bpf_xdp_load_bytes")
def bpf_xdp_load_bytes(env, xdp, offset, buf, length, _r5):
    c, offset, length, err = _xdp_access(env, xdp, offset, length)
    if err:
        return u64(err)
    whole = c.packet.bytes() + c.frag_bytes()
    env.mem.write(buf, whole[offset:offset + length])
    return 0


@helper("bpf_xdp_store_bytes")
def bpf_xdp_store_bytes(env, xdp, offset, buf, length, _r5):
    c, offset, length, err = _xdp_access(env, xdp, offset, length)
    if err:
        return u64(err)
    data = env.mem.read(buf, length)
    pkt = c.packet
    lin = pkt.length
    head = data[:max(0, lin - offset)]
    pkt.buf[pkt.head + offset:pkt.head + offset + len(head)] = head
    rest = data[len(head):]
    pos = max(0, offset - lin)
    for frag in c.frags:                 # bpf_xdp_copy_buf: walk the frags
        if not rest:
            break
        if pos >= len(frag):
            pos -= len(frag)
            continue
        n = min(len(frag) - pos, len(rest))
        frag[pos:pos + n] = rest[:n]
        rest, pos = rest[n:], 0
    return 0


@helper("bpf_xdp_get_buff_len")
def bpf_xdp_get_buff_len(env, xdp, *_):
    c = _ctx(env, xdp, XdpContext)
    return c.packet.length + c.frags_len
