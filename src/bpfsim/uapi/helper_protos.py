"""The one helper prototype table: gpl_only, return type and argument types of each helper.

Types use the kernel's `bpf_func_proto` vocabulary (`RET_*`, `ARG_*`, with type flags joined by
`|`, e.g. "ARG_PTR_TO_MEM|MEM_RDONLY"), transcribed from the `*_proto` structs of Linux 6.18
(kernel/bpf/helpers.c, kernel/trace/bpf_trace.c, net/core/filter.c, kernel/bpf/ringbuf.c,
kernel/bpf/bpf_iter.c).  It lists every helper bpfsim implements plus the four timer helpers;
the verifier checks calls against it.  Holds no logic; imports only `helper_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass

from bpfsim.uapi.helper_ids import HELPER_IDS


@dataclass(frozen=True)
class HelperProto:
    """`struct bpf_func_proto`, the parts a verifier needs."""

    id: int
    name: str
    gpl_only: bool
    ret: str
    args: tuple[str, ...]
    # ARG_PTR_TO_FIXED_SIZE_MEM: the fixed size of that argument (bpf_strtol's `res`).
    arg_size: dict[int, int] | None = None


_ANY = "ARG_ANYTHING"
_CTX = "ARG_PTR_TO_CTX"
_MAP = "ARG_CONST_MAP_PTR"
_MEM_RO = "ARG_PTR_TO_MEM|MEM_RDONLY"
_MEM_RO_NULL = "ARG_PTR_TO_MEM|PTR_MAYBE_NULL|MEM_RDONLY"
_UNINIT = "ARG_PTR_TO_UNINIT_MEM"
_SIZE = "ARG_CONST_SIZE"
_SIZE0 = "ARG_CONST_SIZE_OR_ZERO"
_INT = "RET_INTEGER"
_VOID = "RET_VOID"

# name: (gpl_only, ret, args)
_TABLE: dict[str, tuple[bool, str, tuple[str, ...]]] = {
    # maps (kernel/bpf/helpers.c)
    "bpf_map_lookup_elem": (False, "RET_PTR_TO_MAP_VALUE_OR_NULL", (_MAP, "ARG_PTR_TO_MAP_KEY")),
    "bpf_map_update_elem": (False, _INT, (_MAP, "ARG_PTR_TO_MAP_KEY", "ARG_PTR_TO_MAP_VALUE", _ANY)),
    "bpf_map_delete_elem": (False, _INT, (_MAP, "ARG_PTR_TO_MAP_KEY")),
    "bpf_map_push_elem": (False, _INT, (_MAP, "ARG_PTR_TO_MAP_VALUE", _ANY)),
    "bpf_map_pop_elem": (False, _INT, (_MAP, "ARG_PTR_TO_MAP_VALUE|MEM_UNINIT|MEM_WRITE")),
    "bpf_map_peek_elem": (False, _INT, (_MAP, "ARG_PTR_TO_MAP_VALUE|MEM_UNINIT|MEM_WRITE")),
    "bpf_map_lookup_percpu_elem": (False, "RET_PTR_TO_MAP_VALUE_OR_NULL",
                                   (_MAP, "ARG_PTR_TO_MAP_KEY", _ANY)),
    "bpf_for_each_map_elem": (False, _INT, (_MAP, "ARG_PTR_TO_FUNC", "ARG_PTR_TO_STACK_OR_NULL", _ANY)),
    "bpf_loop": (False, _INT, (_ANY, "ARG_PTR_TO_FUNC", "ARG_PTR_TO_STACK_OR_NULL", _ANY)),
    "bpf_tail_call": (False, _INT, (_CTX, _MAP, _ANY)),
    # time, randomness, cpu
    "bpf_ktime_get_ns": (False, _INT, ()),
    "bpf_ktime_get_boot_ns": (False, _INT, ()),
    "bpf_ktime_get_coarse_ns": (False, _INT, ()),
    "bpf_ktime_get_tai_ns": (False, _INT, ()),
    "bpf_jiffies64": (False, _INT, ()),
    "bpf_get_prandom_u32": (False, _INT, ()),
    "bpf_get_smp_processor_id": (False, _INT, ()),
    "bpf_get_numa_node_id": (False, _INT, ()),
    # printing (kernel/trace/bpf_trace.c, kernel/bpf/helpers.c)
    "bpf_trace_printk": (True, _INT, (_MEM_RO, _SIZE)),
    "bpf_trace_vprintk": (True, _INT, (_MEM_RO, _SIZE, _MEM_RO_NULL, _SIZE0)),
    "bpf_snprintf": (True, _INT, ("ARG_PTR_TO_MEM_OR_NULL", _SIZE0, "ARG_PTR_TO_CONST_STR",
                                  _MEM_RO_NULL, _SIZE0)),
    # ring buffer (kernel/bpf/ringbuf.c)
    "bpf_ringbuf_output": (False, _INT, (_MAP, _MEM_RO, _SIZE0, _ANY)),
    "bpf_ringbuf_reserve": (False, "RET_PTR_TO_MEM|PTR_MAYBE_NULL|MEM_RINGBUF",
                            (_MAP, "ARG_CONST_ALLOC_SIZE_OR_ZERO", _ANY)),
    "bpf_ringbuf_submit": (False, _VOID, ("ARG_PTR_TO_MEM|MEM_RINGBUF|OBJ_RELEASE", _ANY)),
    "bpf_ringbuf_discard": (False, _VOID, ("ARG_PTR_TO_MEM|MEM_RINGBUF|OBJ_RELEASE", _ANY)),
    "bpf_ringbuf_query": (False, _INT, (_MAP, _ANY)),
    # locks
    "bpf_spin_lock": (False, _VOID, ("ARG_PTR_TO_SPIN_LOCK",)),
    "bpf_spin_unlock": (False, _VOID, ("ARG_PTR_TO_SPIN_LOCK",)),
    # current task
    "bpf_get_current_pid_tgid": (False, _INT, ()),
    "bpf_get_current_uid_gid": (False, _INT, ()),
    "bpf_get_current_comm": (False, _INT, (_UNINIT, _SIZE)),
    "bpf_get_current_task": (False, _INT, ()),
    # probe reads (kernel/trace/bpf_trace.c)
    "bpf_probe_read": (True, _INT, (_UNINIT, _SIZE0, _ANY)),
    "bpf_probe_read_str": (True, _INT, (_UNINIT, _SIZE0, _ANY)),
    "bpf_probe_read_user": (True, _INT, (_UNINIT, _SIZE0, _ANY)),
    "bpf_probe_read_kernel": (True, _INT, (_UNINIT, _SIZE0, _ANY)),
    "bpf_probe_read_user_str": (True, _INT, (_UNINIT, _SIZE0, _ANY)),
    "bpf_probe_read_kernel_str": (True, _INT, (_UNINIT, _SIZE0, _ANY)),
    # strings (kernel/bpf/helpers.c)
    "bpf_strtol": (False, _INT, (_MEM_RO, _SIZE, _ANY,
                                 "ARG_PTR_TO_FIXED_SIZE_MEM|MEM_UNINIT|MEM_WRITE|MEM_ALIGNED")),
    "bpf_strtoul": (False, _INT, (_MEM_RO, _SIZE, _ANY,
                                  "ARG_PTR_TO_FIXED_SIZE_MEM|MEM_UNINIT|MEM_WRITE|MEM_ALIGNED")),
    "bpf_strncmp": (False, _INT, (_MEM_RO, _SIZE, "ARG_PTR_TO_CONST_STR")),
    # packets (net/core/filter.c)
    "bpf_skb_load_bytes": (False, _INT, (_CTX, _ANY, _UNINIT, _SIZE)),
    "bpf_skb_store_bytes": (False, _INT, (_CTX, _ANY, _MEM_RO, _SIZE, _ANY)),
    "bpf_l3_csum_replace": (False, _INT, (_CTX, _ANY, _ANY, _ANY, _ANY)),
    "bpf_l4_csum_replace": (False, _INT, (_CTX, _ANY, _ANY, _ANY, _ANY)),
    "bpf_csum_diff": (False, _INT, (_MEM_RO_NULL, _SIZE0, _MEM_RO_NULL, _SIZE0, _ANY)),
    "bpf_get_hash_recalc": (False, _INT, (_CTX,)),
    "bpf_xdp_adjust_head": (False, _INT, (_CTX, _ANY)),
    "bpf_xdp_adjust_tail": (False, _INT, (_CTX, _ANY)),
    "bpf_xdp_adjust_meta": (False, _INT, (_CTX, _ANY)),
    "bpf_xdp_get_buff_len": (False, _INT, (_CTX,)),
    "bpf_xdp_load_bytes": (False, _INT, (_CTX, _ANY, _UNINIT, _SIZE)),
    "bpf_xdp_store_bytes": (False, _INT, (_CTX, _ANY, _MEM_RO, _SIZE)),
    "bpf_skb_pull_data": (False, _INT, (_CTX, _ANY)),
    "bpf_skb_change_tail": (False, _INT, (_CTX, _ANY, _ANY)),
    "bpf_skb_vlan_push": (False, _INT, (_CTX, _ANY, _ANY)),
    "bpf_skb_vlan_pop": (False, _INT, (_CTX,)),
    "bpf_set_hash": (False, _INT, (_CTX, _ANY)),
    "bpf_set_hash_invalid": (False, _VOID, (_CTX,)),
    "bpf_csum_update": (False, _INT, (_CTX, _ANY)),
    "bpf_get_cgroup_classid": (False, _INT, (_CTX,)),
    "bpf_get_route_realm": (False, _INT, (_CTX,)),
    "bpf_redirect": (False, _INT, (_ANY, _ANY)),
    # timers (kernel/bpf/helpers.c; implemented in runtime/helpers/timer.py)
    "bpf_timer_init": (True, _INT, ("ARG_PTR_TO_TIMER", _MAP, _ANY)),
    "bpf_timer_set_callback": (True, _INT, ("ARG_PTR_TO_TIMER", "ARG_PTR_TO_FUNC")),
    "bpf_timer_start": (True, _INT, ("ARG_PTR_TO_TIMER", _ANY, _ANY)),
    "bpf_timer_cancel": (True, _INT, ("ARG_PTR_TO_TIMER",)),
}

_FIXED_SIZES = {"bpf_strtol": {3: 8}, "bpf_strtoul": {3: 8}}

HELPER_PROTOS: dict[int, HelperProto] = {
    HELPER_IDS[name]: HelperProto(HELPER_IDS[name], name, gpl, ret, args, _FIXED_SIZES.get(name))
    for name, (gpl, ret, args) in _TABLE.items()
}
PROTOS_BY_NAME: dict[str, HelperProto] = {p.name: p for p in HELPER_PROTOS.values()}
