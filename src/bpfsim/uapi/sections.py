"""libbpf's `SEC()` table: section name -> program type, expected attach type, flags.

Transcribed from libbpf.c `section_defs[]` (libbpf 1.6: 1.4's table plus `kprobe.session+`
(1.5) and `uprobe.session+`/`uprobe.session.s+` (1.6)), in libbpf's order, because the first
match wins (`find_sec_def`).  Matching follows `sec_def_matches`:

* `"type/"` -- the name must start with "type/";
* `"type+"` -- exactly "type", or "type/<extras>";
* otherwise the name must equal the entry.

A leading `?` (libbpf: "don't autoload this program") is stripped before matching.
Holds data and the one lookup over it; must import nothing above `uapi`.
"""

from __future__ import annotations

from dataclasses import dataclass

from bpfsim.errors import ParseError
from bpfsim.uapi.constants import BPF_F_SLEEPABLE, BPF_F_XDP_HAS_FRAGS, AttachType, ProgType

# libbpf.c: enum sec_def_flags
SEC_NONE = 0
SEC_EXP_ATTACH_OPT = 1
SEC_ATTACHABLE = 2
SEC_ATTACHABLE_OPT = SEC_ATTACHABLE | SEC_EXP_ATTACH_OPT
SEC_ATTACH_BTF = 4
SEC_SLEEPABLE = 8
SEC_XDP_FRAGS = 16
SEC_USDT = 32

_P = ProgType
_A = AttachType

# (section pattern, prog type, expected attach type (0 = none), flags) -- libbpf.c section_defs
SECTION_DEFS: tuple[tuple[str, ProgType, int, int], ...] = (
    ("socket", _P.SOCKET_FILTER, 0, SEC_NONE),
    ("sk_reuseport/migrate", _P.SK_REUSEPORT, _A.SK_REUSEPORT_SELECT_OR_MIGRATE, SEC_ATTACHABLE),
    ("sk_reuseport", _P.SK_REUSEPORT, _A.SK_REUSEPORT_SELECT, SEC_ATTACHABLE),
    ("kprobe+", _P.KPROBE, 0, SEC_NONE),
    ("uprobe+", _P.KPROBE, 0, SEC_NONE),
    ("uprobe.s+", _P.KPROBE, 0, SEC_SLEEPABLE),
    ("kretprobe+", _P.KPROBE, 0, SEC_NONE),
    ("uretprobe+", _P.KPROBE, 0, SEC_NONE),
    ("uretprobe.s+", _P.KPROBE, 0, SEC_SLEEPABLE),
    ("kprobe.multi+", _P.KPROBE, _A.TRACE_KPROBE_MULTI, SEC_NONE),
    ("kretprobe.multi+", _P.KPROBE, _A.TRACE_KPROBE_MULTI, SEC_NONE),
    ("kprobe.session+", _P.KPROBE, _A.TRACE_KPROBE_SESSION, SEC_NONE),
    ("uprobe.multi+", _P.KPROBE, _A.TRACE_UPROBE_MULTI, SEC_NONE),
    ("uretprobe.multi+", _P.KPROBE, _A.TRACE_UPROBE_MULTI, SEC_NONE),
    ("uprobe.session+", _P.KPROBE, _A.TRACE_UPROBE_SESSION, SEC_NONE),
    ("uprobe.multi.s+", _P.KPROBE, _A.TRACE_UPROBE_MULTI, SEC_SLEEPABLE),
    ("uretprobe.multi.s+", _P.KPROBE, _A.TRACE_UPROBE_MULTI, SEC_SLEEPABLE),
    ("uprobe.session.s+", _P.KPROBE, _A.TRACE_UPROBE_SESSION, SEC_SLEEPABLE),
    ("ksyscall+", _P.KPROBE, 0, SEC_NONE),
    ("kretsyscall+", _P.KPROBE, 0, SEC_NONE),
    ("usdt+", _P.KPROBE, 0, SEC_USDT),
    ("usdt.s+", _P.KPROBE, 0, SEC_USDT | SEC_SLEEPABLE),
    ("tc/ingress", _P.SCHED_CLS, _A.TCX_INGRESS, SEC_NONE),      # alias for tcx
    ("tc/egress", _P.SCHED_CLS, _A.TCX_EGRESS, SEC_NONE),        # alias for tcx
    ("tcx/ingress", _P.SCHED_CLS, _A.TCX_INGRESS, SEC_NONE),
    ("tcx/egress", _P.SCHED_CLS, _A.TCX_EGRESS, SEC_NONE),
    ("tc", _P.SCHED_CLS, 0, SEC_NONE),                           # legacy
    ("classifier", _P.SCHED_CLS, 0, SEC_NONE),                   # legacy
    ("action", _P.SCHED_ACT, 0, SEC_NONE),                       # legacy
    ("netkit/primary", _P.SCHED_CLS, _A.NETKIT_PRIMARY, SEC_NONE),
    ("netkit/peer", _P.SCHED_CLS, _A.NETKIT_PEER, SEC_NONE),
    ("tracepoint+", _P.TRACEPOINT, 0, SEC_NONE),
    ("tp+", _P.TRACEPOINT, 0, SEC_NONE),
    ("raw_tracepoint+", _P.RAW_TRACEPOINT, 0, SEC_NONE),
    ("raw_tp+", _P.RAW_TRACEPOINT, 0, SEC_NONE),
    ("raw_tracepoint.w+", _P.RAW_TRACEPOINT_WRITABLE, 0, SEC_NONE),
    ("raw_tp.w+", _P.RAW_TRACEPOINT_WRITABLE, 0, SEC_NONE),
    ("tp_btf+", _P.TRACING, _A.TRACE_RAW_TP, SEC_ATTACH_BTF),
    ("fentry+", _P.TRACING, _A.TRACE_FENTRY, SEC_ATTACH_BTF),
    ("fmod_ret+", _P.TRACING, _A.MODIFY_RETURN, SEC_ATTACH_BTF),
    ("fexit+", _P.TRACING, _A.TRACE_FEXIT, SEC_ATTACH_BTF),
    ("fentry.s+", _P.TRACING, _A.TRACE_FENTRY, SEC_ATTACH_BTF | SEC_SLEEPABLE),
    ("fmod_ret.s+", _P.TRACING, _A.MODIFY_RETURN, SEC_ATTACH_BTF | SEC_SLEEPABLE),
    ("fexit.s+", _P.TRACING, _A.TRACE_FEXIT, SEC_ATTACH_BTF | SEC_SLEEPABLE),
    ("freplace+", _P.EXT, 0, SEC_ATTACH_BTF),
    ("lsm+", _P.LSM, _A.LSM_MAC, SEC_ATTACH_BTF),
    ("lsm.s+", _P.LSM, _A.LSM_MAC, SEC_ATTACH_BTF | SEC_SLEEPABLE),
    ("lsm_cgroup+", _P.LSM, _A.LSM_CGROUP, SEC_ATTACH_BTF),
    ("iter+", _P.TRACING, _A.TRACE_ITER, SEC_ATTACH_BTF),
    ("iter.s+", _P.TRACING, _A.TRACE_ITER, SEC_ATTACH_BTF | SEC_SLEEPABLE),
    ("syscall", _P.SYSCALL, 0, SEC_SLEEPABLE),
    ("xdp.frags/devmap", _P.XDP, _A.XDP_DEVMAP, SEC_XDP_FRAGS),
    ("xdp/devmap", _P.XDP, _A.XDP_DEVMAP, SEC_ATTACHABLE),
    ("xdp.frags/cpumap", _P.XDP, _A.XDP_CPUMAP, SEC_XDP_FRAGS),
    ("xdp/cpumap", _P.XDP, _A.XDP_CPUMAP, SEC_ATTACHABLE),
    ("xdp.frags", _P.XDP, _A.XDP, SEC_XDP_FRAGS),
    ("xdp", _P.XDP, _A.XDP, SEC_ATTACHABLE_OPT),
    ("perf_event", _P.PERF_EVENT, 0, SEC_NONE),
    ("lwt_in", _P.LWT_IN, 0, SEC_NONE),
    ("lwt_out", _P.LWT_OUT, 0, SEC_NONE),
    ("lwt_xmit", _P.LWT_XMIT, 0, SEC_NONE),
    ("lwt_seg6local", _P.LWT_SEG6LOCAL, 0, SEC_NONE),
    ("sockops", _P.SOCK_OPS, _A.CGROUP_SOCK_OPS, SEC_ATTACHABLE_OPT),
    ("sk_skb/stream_parser", _P.SK_SKB, _A.SK_SKB_STREAM_PARSER, SEC_ATTACHABLE_OPT),
    ("sk_skb/stream_verdict", _P.SK_SKB, _A.SK_SKB_STREAM_VERDICT, SEC_ATTACHABLE_OPT),
    ("sk_skb", _P.SK_SKB, 0, SEC_NONE),
    ("sk_msg", _P.SK_MSG, _A.SK_MSG_VERDICT, SEC_ATTACHABLE_OPT),
    ("lirc_mode2", _P.LIRC_MODE2, _A.LIRC_MODE2, SEC_ATTACHABLE_OPT),
    ("flow_dissector", _P.FLOW_DISSECTOR, _A.FLOW_DISSECTOR, SEC_ATTACHABLE_OPT),
    ("cgroup_skb/ingress", _P.CGROUP_SKB, _A.CGROUP_INET_INGRESS, SEC_ATTACHABLE_OPT),
    ("cgroup_skb/egress", _P.CGROUP_SKB, _A.CGROUP_INET_EGRESS, SEC_ATTACHABLE_OPT),
    ("cgroup/skb", _P.CGROUP_SKB, 0, SEC_NONE),
    ("cgroup/sock_create", _P.CGROUP_SOCK, _A.CGROUP_INET_SOCK_CREATE, SEC_ATTACHABLE),
    ("cgroup/sock_release", _P.CGROUP_SOCK, _A.CGROUP_INET_SOCK_RELEASE, SEC_ATTACHABLE),
    ("cgroup/sock", _P.CGROUP_SOCK, _A.CGROUP_INET_SOCK_CREATE, SEC_ATTACHABLE_OPT),
    ("cgroup/post_bind4", _P.CGROUP_SOCK, _A.CGROUP_INET4_POST_BIND, SEC_ATTACHABLE),
    ("cgroup/post_bind6", _P.CGROUP_SOCK, _A.CGROUP_INET6_POST_BIND, SEC_ATTACHABLE),
    ("cgroup/bind4", _P.CGROUP_SOCK_ADDR, _A.CGROUP_INET4_BIND, SEC_ATTACHABLE),
    ("cgroup/bind6", _P.CGROUP_SOCK_ADDR, _A.CGROUP_INET6_BIND, SEC_ATTACHABLE),
    ("cgroup/connect4", _P.CGROUP_SOCK_ADDR, _A.CGROUP_INET4_CONNECT, SEC_ATTACHABLE),
    ("cgroup/connect6", _P.CGROUP_SOCK_ADDR, _A.CGROUP_INET6_CONNECT, SEC_ATTACHABLE),
    ("cgroup/connect_unix", _P.CGROUP_SOCK_ADDR, _A.CGROUP_UNIX_CONNECT, SEC_ATTACHABLE),
    ("cgroup/sendmsg4", _P.CGROUP_SOCK_ADDR, _A.CGROUP_UDP4_SENDMSG, SEC_ATTACHABLE),
    ("cgroup/sendmsg6", _P.CGROUP_SOCK_ADDR, _A.CGROUP_UDP6_SENDMSG, SEC_ATTACHABLE),
    ("cgroup/sendmsg_unix", _P.CGROUP_SOCK_ADDR, _A.CGROUP_UNIX_SENDMSG, SEC_ATTACHABLE),
    ("cgroup/recvmsg4", _P.CGROUP_SOCK_ADDR, _A.CGROUP_UDP4_RECVMSG, SEC_ATTACHABLE),
    ("cgroup/recvmsg6", _P.CGROUP_SOCK_ADDR, _A.CGROUP_UDP6_RECVMSG, SEC_ATTACHABLE),
    ("cgroup/recvmsg_unix", _P.CGROUP_SOCK_ADDR, _A.CGROUP_UNIX_RECVMSG, SEC_ATTACHABLE),
    ("cgroup/getpeername4", _P.CGROUP_SOCK_ADDR, _A.CGROUP_INET4_GETPEERNAME, SEC_ATTACHABLE),
    ("cgroup/getpeername6", _P.CGROUP_SOCK_ADDR, _A.CGROUP_INET6_GETPEERNAME, SEC_ATTACHABLE),
    ("cgroup/getpeername_unix", _P.CGROUP_SOCK_ADDR, _A.CGROUP_UNIX_GETPEERNAME, SEC_ATTACHABLE),
    ("cgroup/getsockname4", _P.CGROUP_SOCK_ADDR, _A.CGROUP_INET4_GETSOCKNAME, SEC_ATTACHABLE),
    ("cgroup/getsockname6", _P.CGROUP_SOCK_ADDR, _A.CGROUP_INET6_GETSOCKNAME, SEC_ATTACHABLE),
    ("cgroup/getsockname_unix", _P.CGROUP_SOCK_ADDR, _A.CGROUP_UNIX_GETSOCKNAME, SEC_ATTACHABLE),
    ("cgroup/sysctl", _P.CGROUP_SYSCTL, _A.CGROUP_SYSCTL, SEC_ATTACHABLE),
    ("cgroup/getsockopt", _P.CGROUP_SOCKOPT, _A.CGROUP_GETSOCKOPT, SEC_ATTACHABLE),
    ("cgroup/setsockopt", _P.CGROUP_SOCKOPT, _A.CGROUP_SETSOCKOPT, SEC_ATTACHABLE),
    ("cgroup/dev", _P.CGROUP_DEVICE, _A.CGROUP_DEVICE, SEC_ATTACHABLE_OPT),
    ("struct_ops+", _P.STRUCT_OPS, 0, SEC_NONE),
    ("struct_ops.s+", _P.STRUCT_OPS, 0, SEC_SLEEPABLE),
    ("sk_lookup", _P.SK_LOOKUP, _A.SK_LOOKUP, SEC_ATTACHABLE),
    ("netfilter", _P.NETFILTER, _A.NETFILTER, SEC_NONE),
)


@dataclass(frozen=True)
class SectionDef:
    """What one SEC() name means to libbpf."""

    prog_type: ProgType
    expected_attach_type: int
    attach_to: str          # the part after "prefix/" ("do_sys_open" of "kprobe/do_sys_open")
    sleepable: bool
    flags: int              # SEC_* cookie
    prog_flags: int         # BPF_F_SLEEPABLE / BPF_F_XDP_HAS_FRAGS, as libbpf_prepare_prog_load sets
    pattern: str            # the matching section_defs entry
    autoload: bool = True   # False for "?name" sections


def _matches(pattern: str, name: str) -> bool:
    """libbpf.c: sec_def_matches."""
    if pattern.endswith("/"):
        return name.startswith(pattern)
    if pattern.endswith("+"):
        base = pattern[:-1]
        return name == base or name.startswith(base + "/")
    return name == pattern


def lookup_section(name: str) -> SectionDef:
    """Map a program's ELF section name to libbpf's meaning of it.

    Raises ParseError("unknown section ...") for names libbpf has no definition for
    (libbpf then fails the load with "missing BPF prog type, check ELF section name").
    """
    autoload = True
    sec = name
    if sec.startswith("?"):
        autoload = False
        sec = sec[1:]
    for pattern, ptype, attach, flags in SECTION_DEFS:
        if _matches(pattern, sec):
            base = pattern.rstrip("+/")
            attach_to = sec[len(base) + 1:] if len(sec) > len(base) else ""
            prog_flags = 0
            if flags & SEC_SLEEPABLE:
                prog_flags |= BPF_F_SLEEPABLE
            if flags & SEC_XDP_FRAGS:
                prog_flags |= BPF_F_XDP_HAS_FRAGS
            return SectionDef(ptype, int(attach), attach_to, bool(flags & SEC_SLEEPABLE), flags,
                              prog_flags, pattern, autoload)
    raise ParseError(f"unknown section {name!r}: missing BPF prog type, check ELF section name",
                     section=name)
