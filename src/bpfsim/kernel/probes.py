"""Can this machine's kernel do X?  `kernel_available()` and feature probes.

Job: answer "is bpf(2) usable here, and does this kernel support map type / program type /
helper / flag X" by asking the kernel (the way libbpf's `libbpf_probe_bpf_*` do), and turn a
"no" into `errors.NotSupported(feature, min_kernel)` through `require_*`.  Results are cached
per process.  Must not import `runtime` or anything above `kernel`.
"""

from __future__ import annotations

import functools
import os
import re

from bpfsim.btf import Btf, BtfType, Member, Param
from bpfsim.errors import BpfError, KernelError, NotSupported
from bpfsim.isa.insn import Instruction
from bpfsim.kernel import syscall as sc
from bpfsim.spec.collection import CollectionSpec, FuncInfo, MapSpec, ProgramSpec, Reference
from bpfsim.uapi.constants import BPF_F_NO_PREALLOC, BPF_F_SLEEPABLE, AttachType, MapType, ProgType

BPFFS = "/sys/fs/bpf"

# First kernel release with each map type (include/uapi/linux/bpf.h history).
MAP_TYPE_SINCE: dict[int, str] = {
    MapType.HASH: "3.19", MapType.ARRAY: "3.19", MapType.PROG_ARRAY: "4.2",
    MapType.PERF_EVENT_ARRAY: "4.3", MapType.PERCPU_HASH: "4.6", MapType.PERCPU_ARRAY: "4.6",
    MapType.STACK_TRACE: "4.6", MapType.CGROUP_ARRAY: "4.8", MapType.LRU_HASH: "4.10",
    MapType.LRU_PERCPU_HASH: "4.10", MapType.LPM_TRIE: "4.11", MapType.ARRAY_OF_MAPS: "4.12",
    MapType.HASH_OF_MAPS: "4.12", MapType.DEVMAP: "4.14", MapType.SOCKMAP: "4.14",
    MapType.CPUMAP: "4.15", MapType.XSKMAP: "4.18", MapType.SOCKHASH: "4.18",
    MapType.CGROUP_STORAGE: "4.19", MapType.REUSEPORT_SOCKARRAY: "4.19",
    MapType.PERCPU_CGROUP_STORAGE: "4.20", MapType.QUEUE: "4.20", MapType.STACK: "4.20",
    MapType.SK_STORAGE: "5.2", MapType.DEVMAP_HASH: "5.4", MapType.STRUCT_OPS: "5.6",
    MapType.RINGBUF: "5.8", MapType.INODE_STORAGE: "5.10", MapType.TASK_STORAGE: "5.11",
    MapType.BLOOM_FILTER: "5.16", MapType.USER_RINGBUF: "6.1", MapType.CGRP_STORAGE: "6.2",
    MapType.ARENA: "6.9",
}

# Features probed by kernel release rather than by a program (a run-time flag check needs a
# BTF-described timer and a callback; the release is exact for these).
FEATURE_SINCE: dict[str, str] = {
    "bpf_timer": "5.15",
    "BPF_F_TIMER_ABS": "6.5",
    "BPF_F_TIMER_CPU_PIN": "6.7",
    "bpf_loop": "5.17",
}

# Map types that cannot be created without BTF (or a vmlinux type): the kernel knows the
# type if it fails with anything but EINVAL from find_and_alloc_map (syscall.c).
_NEEDS_BTF = {MapType.SK_STORAGE, MapType.INODE_STORAGE, MapType.TASK_STORAGE,
              MapType.CGRP_STORAGE, MapType.STRUCT_OPS, MapType.CGROUP_STORAGE,
              MapType.PERCPU_CGROUP_STORAGE}

_RET0 = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])   # r0 = 0; exit


def _is_bpffs(path: str) -> bool:
    return os.path.isdir(path) and sc._on_bpffs(path)


@functools.cache
def kernel_available() -> tuple[bool, str]:
    """(True, "") when bpf(2) works, we may load programs, and bpffs is mounted at /sys/fs/bpf;
    otherwise (False, a reason a person can act on)."""
    try:
        sc.nr_bpf()
    except NotSupported as e:
        return False, str(e)
    if os.geteuid() != 0:
        return False, "not root: bpf(2) needs CAP_BPF and CAP_SYS_ADMIN/CAP_NET_ADMIN"
    try:
        fd = sc.map_create(MapType.ARRAY, 4, 4, 1)
        sc.close(fd)
        fd = sc.prog_load(ProgType.SOCKET_FILTER, _RET0, "GPL")
        sc.close(fd)
    except KernelError as e:
        return False, f"bpf(2) unusable: {e}"
    if not _is_bpffs(BPFFS):
        return False, f"bpffs is not mounted at {BPFFS} (mount -t bpf bpf {BPFFS})"
    return True, ""


def kernel_release() -> tuple[int, int]:
    """(major, minor) of the running kernel, from uname."""
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _at_least(version: str) -> bool:
    major, minor = (int(x) for x in version.split(".")[:2])
    return kernel_release() >= (major, minor)


@functools.cache
def probe_map_type(map_type: int) -> bool:
    """Does this kernel know `map_type`?  Creates (and closes) a minimal map like libbpf's
    `probe_map_create`."""
    key, value, entries, flags, extra, inner = 4, 4, 1, 0, 0, 0
    t = MapType(map_type) if map_type in MapType._value2member_map_ else None
    if t == MapType.LPM_TRIE:
        key, value, flags = 8, 4, BPF_F_NO_PREALLOC
    elif t == MapType.STACK_TRACE:
        value = 8
    elif t in (MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER):
        key = 0
    elif t in (MapType.RINGBUF, MapType.USER_RINGBUF):
        key, value, entries = 0, 0, os.sysconf("SC_PAGESIZE")
    elif t == MapType.ARENA:
        key, value, entries, flags = 0, 0, 1, 1 << 10  # BPF_F_MMAPABLE
    elif t in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
        inner = sc.map_create(MapType.ARRAY, 4, 4, 1)
    elif t in _NEEDS_BTF:
        # These need a BTF-described value (or a vmlinux type): probe by release instead.
        return _at_least(MAP_TYPE_SINCE[t])
    try:
        fd = sc.map_create(map_type, key, value, entries, flags=flags, map_extra=extra,
                           inner_map_fd=inner)
    except KernelError:
        return False
    finally:
        if inner:
            sc.close(inner)
    sc.close(fd)
    return True


@functools.cache
def probe_prog_type(prog_type: int) -> bool:
    """Does this kernel know `prog_type`?  Loads `r0 = 0; exit`.

    A type the kernel does not know fails in find_prog_type (syscall.c) with EINVAL before
    the verifier writes any log; a known type that merely wants more (an attach target, an
    expected attach type) fails later, with a log or another errno.
    """
    eat = {ProgType.CGROUP_SOCK_ADDR: AttachType.CGROUP_INET4_CONNECT,
           ProgType.CGROUP_SOCKOPT: AttachType.CGROUP_GETSOCKOPT,
           ProgType.SK_LOOKUP: AttachType.SK_LOOKUP,
           ProgType.NETFILTER: AttachType.NETFILTER}.get(prog_type, 0)
    log = sc.Log(4096)
    try:
        fd = sc.prog_load(prog_type, _RET0, "GPL", log=log, expected_attach_type=eat)
    except KernelError as e:
        return not (e.errno == 22 and not log.text)
    sc.close(fd)
    return True


@functools.cache
def probe_helper(prog_type: int, helper_id: int) -> bool:
    """May a program of `prog_type` call helper `helper_id` here?  Like libbpf's
    `libbpf_probe_bpf_helper`: the verifier says "invalid func" / "unknown func" otherwise."""
    call = bytes([0x85, 0, 0, 0]) + int(helper_id).to_bytes(4, "little", signed=True)
    insns = call + bytes([0x95, 0, 0, 0, 0, 0, 0, 0])
    log = sc.Log(1 << 14)
    try:
        fd = sc.prog_load(prog_type, insns, "GPL", log=log)
    except KernelError:
        text = log.text
        return "invalid func " not in text and "unknown func " not in text and bool(text)
    sc.close(fd)
    return True


def _timer_probe_spec(flags: int) -> CollectionSpec:
    """A SEC("syscall") program that arms a 1 s bpf_timer with `flags`, cancels it and
    returns what bpf_timer_start said: 0, or -EINVAL for a flag this kernel does not know
    (helpers.c: bpf_timer_start checks the flags before anything else).  Built by hand --
    BTF (the timer must be BTF-described), func_info for the callback -- so the probe needs
    no compiler and no file."""
    btf = Btf()
    int_id = btf.add(BtfType(kind="INT", name="int", size=4, encoding=1, nr_bits=32))
    timer_id = btf.add(BtfType(kind="STRUCT", name="bpf_timer", size=16))
    val_id = btf.add(BtfType(kind="STRUCT", name="val", size=16, members=[Member("t", timer_id, 0)]))
    ptr_id = btf.add(BtfType(kind="PTR", type=0))
    main_proto = btf.add(BtfType(kind="FUNC_PROTO", type=int_id, params=[Param("ctx", ptr_id)]))
    cb_proto = btf.add(BtfType(kind="FUNC_PROTO", type=int_id,
                               params=[Param("m", ptr_id), Param("k", ptr_id), Param("v", ptr_id)]))
    main_fn = btf.add(BtfType(kind="FUNC", name="probe", type=main_proto, linkage=1))
    cb_fn = btf.add(BtfType(kind="FUNC", name="cb", type=cb_proto, linkage=0))

    insns: list[Instruction] = []
    refs: list[Reference] = []

    def emit(*xs: Instruction) -> int:
        insns.extend(xs)
        return len(insns) - len(xs)

    def lddw(dst: int, src: int = 0, imm: int = 0) -> int:
        return emit(Instruction(0x18, dst=dst, src=src, imm=imm), Instruction(0, lddw_tail=True))

    emit(Instruction(0x62, dst=10, off=-4, imm=0))                            # *(u32 *)(fp-4) = 0
    refs.append(Reference(insn=lddw(1), kind="map", target="tmap"))           # r1 = &tmap
    emit(Instruction(0xBF, dst=2, src=10), Instruction(0x07, dst=2, imm=-4),  # r2 = fp - 4
         Instruction(0x85, imm=1),                                            # map_lookup_elem
         Instruction(0x55, dst=0, off=2, imm=0),                              # if r0 goto +2
         Instruction(0xB7, dst=0, imm=-1), Instruction(0x95),                 # return -1
         Instruction(0xBF, dst=6, src=0), Instruction(0xBF, dst=1, src=6))    # r6 = r1 = value
    refs.append(Reference(insn=lddw(2), kind="map", target="tmap"))           # r2 = &tmap
    emit(Instruction(0xB7, dst=3, imm=1), Instruction(0x85, imm=169),         # timer_init(MONOTONIC)
         Instruction(0xBF, dst=1, src=6))
    cb_ref = lddw(2, src=4)                                                   # r2 = cb
    emit(Instruction(0x85, imm=170), Instruction(0xBF, dst=1, src=6))         # timer_set_callback
    lddw(2, imm=1_000_000_000)                                                # r2 = 1 s
    emit(Instruction(0xB7, dst=3, imm=flags), Instruction(0x85, imm=171),     # timer_start(flags)
         Instruction(0xBF, dst=7, src=0), Instruction(0xBF, dst=1, src=6),
         Instruction(0x85, imm=172),                                          # timer_cancel
         Instruction(0xBF, dst=0, src=7), Instruction(0x95))                  # return start's ret
    cb_at = emit(Instruction(0xB7, dst=0, imm=0), Instruction(0x95))          # cb: return 0
    insns[cb_ref] = Instruction(0x18, dst=2, src=4, imm=cb_at - cb_ref - 1)

    prog = ProgramSpec(name="probe", section="syscall", type=ProgType.SYSCALL, instructions=insns,
                       references=refs, license="GPL", btf_func_id=main_fn, sleepable=True,
                       flags=BPF_F_SLEEPABLE,   # verifier.c: syscall programs must be sleepable
                       func_info=[FuncInfo(0, main_fn, "probe"), FuncInfo(cb_at, cb_fn, "cb")],
                       subprogram_starts={"probe": 0, "cb": cb_at})
    tmap = MapSpec(name="tmap", type=MapType.ARRAY, key_size=4, value_size=16, max_entries=1,
                   key_type_id=int_id, value_type_id=val_id)
    return CollectionSpec(maps={"tmap": tmap}, programs={"probe": prog}, btf=btf, license="GPL")


@functools.cache
def probe_timer_flag(flags: int) -> bool:
    """Does bpf_timer_start accept `flags` here?  Runs the probe program of
    `_timer_probe_spec`; False also when this kernel has no bpf_timer at all."""
    from bpfsim.kernel.loader import load

    try:
        with load(_timer_probe_spec(flags)) as coll:
            return coll.programs["probe"].test_run().retval == 0
    except BpfError:
        return False


_TIMER_FLAGS = {"BPF_F_TIMER_ABS": 1, "BPF_F_TIMER_CPU_PIN": 2}


def probe_feature(feature: str) -> bool:
    """Features in FEATURE_SINCE: timer start flags by running a program that uses them,
    the others by the kernel release."""
    if feature in _TIMER_FLAGS:
        return probe_timer_flag(_TIMER_FLAGS[feature])
    try:
        return _at_least(FEATURE_SINCE[feature])
    except KeyError:
        raise NotSupported(feature, detail="bpfsim has no probe for it") from None


def require_map_type(map_type: int) -> None:
    """NotSupported unless this kernel can create maps of `map_type`."""
    if not probe_map_type(map_type):
        name = MapType(map_type).name if map_type in MapType._value2member_map_ else str(map_type)
        raise NotSupported(f"BPF_MAP_TYPE_{name}", MAP_TYPE_SINCE.get(map_type))


def require_prog_type(prog_type: int) -> None:
    """NotSupported unless this kernel can load programs of `prog_type`."""
    if not probe_prog_type(prog_type):
        name = ProgType(prog_type).name if prog_type in ProgType._value2member_map_ else str(prog_type)
        raise NotSupported(f"BPF_PROG_TYPE_{name}")


def require_helper(prog_type: int, helper_id: int, name: str = "") -> None:
    """NotSupported unless a `prog_type` program may call `helper_id`."""
    if not probe_helper(prog_type, helper_id):
        raise NotSupported(name or f"helper {helper_id}", FEATURE_SINCE.get(name))


def require_feature(feature: str) -> None:
    """NotSupported unless the running kernel is new enough for `feature`."""
    if not probe_feature(feature):
        raise NotSupported(feature, FEATURE_SINCE[feature])

