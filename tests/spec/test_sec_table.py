"""libbpf's SEC() table: matching rules, first-match order, flags, unknown names."""

from __future__ import annotations

import pytest

from bpfsim.errors import ParseError
from bpfsim.uapi.constants import BPF_F_SLEEPABLE, BPF_F_XDP_HAS_FRAGS, AttachType, ProgType
from bpfsim.uapi.sections import SEC_ATTACH_BTF, SECTION_DEFS, lookup_section

P, A = ProgType, AttachType


@pytest.mark.parametrize("name,ptype,attach,target", [
    ("socket", P.SOCKET_FILTER, 0, ""),
    ("xdp", P.XDP, A.XDP, ""),
    ("xdp.frags", P.XDP, A.XDP, ""),
    ("xdp/devmap", P.XDP, A.XDP_DEVMAP, ""),
    ("xdp.frags/cpumap", P.XDP, A.XDP_CPUMAP, ""),
    ("tc", P.SCHED_CLS, 0, ""),
    ("classifier", P.SCHED_CLS, 0, ""),
    ("action", P.SCHED_ACT, 0, ""),
    ("tc/ingress", P.SCHED_CLS, A.TCX_INGRESS, ""),
    ("tcx/egress", P.SCHED_CLS, A.TCX_EGRESS, ""),
    ("netkit/peer", P.SCHED_CLS, A.NETKIT_PEER, ""),
    ("kprobe/do_unlinkat", P.KPROBE, 0, "do_unlinkat"),
    ("kprobe", P.KPROBE, 0, ""),
    ("kretprobe/x", P.KPROBE, 0, "x"),
    ("kprobe.multi/bpf_*", P.KPROBE, A.TRACE_KPROBE_MULTI, "bpf_*"),
    ("kprobe.session/f", P.KPROBE, A.TRACE_KPROBE_SESSION, "f"),
    ("uprobe.session/f", P.KPROBE, A.TRACE_UPROBE_SESSION, "f"),
    ("uprobe.multi.s/p:f", P.KPROBE, A.TRACE_UPROBE_MULTI, "p:f"),
    ("usdt/a:b:c", P.KPROBE, 0, "a:b:c"),
    ("tracepoint/syscalls/sys_enter_open", P.TRACEPOINT, 0, "syscalls/sys_enter_open"),
    ("tp/sched/sched_switch", P.TRACEPOINT, 0, "sched/sched_switch"),
    ("raw_tp/sched_switch", P.RAW_TRACEPOINT, 0, "sched_switch"),
    ("raw_tp.w/x", P.RAW_TRACEPOINT_WRITABLE, 0, "x"),
    ("tp_btf/sched_switch", P.TRACING, A.TRACE_RAW_TP, "sched_switch"),
    ("fentry/do_unlinkat", P.TRACING, A.TRACE_FENTRY, "do_unlinkat"),
    ("fexit.s/f", P.TRACING, A.TRACE_FEXIT, "f"),
    ("fmod_ret/f", P.TRACING, A.MODIFY_RETURN, "f"),
    ("freplace/f", P.EXT, 0, "f"),
    ("lsm/file_open", P.LSM, A.LSM_MAC, "file_open"),
    ("lsm_cgroup/x", P.LSM, A.LSM_CGROUP, "x"),
    ("iter/task", P.TRACING, A.TRACE_ITER, "task"),
    ("syscall", P.SYSCALL, 0, ""),
    ("perf_event", P.PERF_EVENT, 0, ""),
    ("lwt_in", P.LWT_IN, 0, ""), ("lwt_out", P.LWT_OUT, 0, ""), ("lwt_xmit", P.LWT_XMIT, 0, ""),
    ("lwt_seg6local", P.LWT_SEG6LOCAL, 0, ""),
    ("sockops", P.SOCK_OPS, A.CGROUP_SOCK_OPS, ""),
    ("sk_skb/stream_parser", P.SK_SKB, A.SK_SKB_STREAM_PARSER, ""),
    ("sk_skb", P.SK_SKB, 0, ""),
    ("sk_msg", P.SK_MSG, A.SK_MSG_VERDICT, ""),
    ("lirc_mode2", P.LIRC_MODE2, A.LIRC_MODE2, ""),
    ("flow_dissector", P.FLOW_DISSECTOR, A.FLOW_DISSECTOR, ""),
    ("cgroup_skb/ingress", P.CGROUP_SKB, A.CGROUP_INET_INGRESS, ""),
    ("cgroup/skb", P.CGROUP_SKB, 0, ""),
    ("cgroup/sock", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE, ""),
    ("cgroup/connect4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT, ""),
    ("cgroup/sendmsg_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_SENDMSG, ""),
    ("cgroup/sysctl", P.CGROUP_SYSCTL, A.CGROUP_SYSCTL, ""),
    ("cgroup/getsockopt", P.CGROUP_SOCKOPT, A.CGROUP_GETSOCKOPT, ""),
    ("cgroup/dev", P.CGROUP_DEVICE, A.CGROUP_DEVICE, ""),
    ("struct_ops/enqueue", P.STRUCT_OPS, 0, "enqueue"),
    ("struct_ops.s/x", P.STRUCT_OPS, 0, "x"),
    ("sk_lookup", P.SK_LOOKUP, A.SK_LOOKUP, ""),
    ("sk_reuseport/migrate", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT_OR_MIGRATE, ""),
    ("sk_reuseport", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT, ""),
    ("netfilter", P.NETFILTER, A.NETFILTER, ""),
])
def test_lookup(name: str, ptype: ProgType, attach: int, target: str) -> None:
    d = lookup_section(name)
    assert (d.prog_type, d.expected_attach_type, d.attach_to) == (ptype, attach, target)


def test_flags() -> None:
    assert lookup_section("xdp.frags").prog_flags == BPF_F_XDP_HAS_FRAGS
    assert lookup_section("xdp").prog_flags == 0
    for n in ("syscall", "fentry.s/f", "lsm.s/f", "uprobe.s/p:f", "iter.s/task", "struct_ops.s/x"):
        d = lookup_section(n)
        assert d.sleepable and d.prog_flags & BPF_F_SLEEPABLE, n
    assert lookup_section("fentry/f").flags & SEC_ATTACH_BTF
    assert not lookup_section("fentry/f").sleepable


def test_question_mark_disables_autoload() -> None:
    d = lookup_section("?tc")
    assert d.prog_type == P.SCHED_CLS and d.autoload is False
    assert lookup_section("tc").autoload is True


@pytest.mark.parametrize("name", [
    "", "xdpfoo", "socket/x", "kprobeX", "tcx", "tc/other", "ubpf", "classifier/x", ".text", "?",
    "sk_skb/verdict",
])
def test_unknown(name: str) -> None:
    with pytest.raises(ParseError, match="unknown section"):
        lookup_section(name)


def test_all_timer_program_types_have_a_section() -> None:
    """bpf_timer.md §9: the types that reach bpf_base_func_proto (plus the tracing ones that
    are refused) must all be expressible through SEC()."""
    needed = {P.CGROUP_DEVICE, P.CGROUP_SKB, P.CGROUP_SOCK, P.CGROUP_SOCKOPT,
              P.CGROUP_SOCK_ADDR, P.CGROUP_SYSCTL, P.FLOW_DISSECTOR, P.LSM, P.LWT_IN, P.LWT_OUT,
              P.LWT_XMIT, P.LWT_SEG6LOCAL, P.NETFILTER, P.SCHED_CLS, P.SCHED_ACT, P.SK_LOOKUP,
              P.SK_MSG, P.SK_REUSEPORT, P.SK_SKB, P.SOCKET_FILTER, P.SOCK_OPS, P.SYSCALL,
              P.TRACING, P.XDP, P.STRUCT_OPS, P.KPROBE, P.TRACEPOINT, P.PERF_EVENT,
              P.RAW_TRACEPOINT, P.RAW_TRACEPOINT_WRITABLE}
    have = {t for _, t, _, _ in SECTION_DEFS}
    assert needed <= have
    assert len({P.CGROUP_DEVICE, P.CGROUP_SKB, P.CGROUP_SOCK, P.CGROUP_SOCKOPT,
                P.CGROUP_SOCK_ADDR, P.CGROUP_SYSCTL, P.FLOW_DISSECTOR, P.LSM, P.LWT_IN,
                P.LWT_OUT, P.LWT_XMIT, P.LWT_SEG6LOCAL, P.NETFILTER, P.SCHED_CLS, P.SCHED_ACT,
                P.SK_LOOKUP, P.SK_MSG, P.SK_REUSEPORT, P.SK_SKB, P.SOCKET_FILTER, P.SOCK_OPS,
                P.SYSCALL, P.TRACING, P.XDP}) == 24


def test_first_match_wins() -> None:
    """"xdp.frags/devmap" precedes "xdp.frags"; "sk_reuseport/migrate" precedes "sk_reuseport";
    "tc/ingress" precedes the legacy "tc"."""
    patterns = [p for p, *_ in SECTION_DEFS]
    assert patterns.index("xdp.frags/devmap") < patterns.index("xdp.frags")
    assert patterns.index("sk_reuseport/migrate") < patterns.index("sk_reuseport")
    assert len(patterns) == len(set(patterns))
