"""Base helpers: time, randomness, CPU, current task, bpf_loop, bpf_tail_call, spin locks,
probe reads and the string helpers (kernel/bpf/helpers.c, kernel/trace/bpf_trace.c).

Job: the helpers whose state is the runtime itself (`env.program.kernel`: clock, rng, task,
ncpus).  Must not import `kernel` or the VM engines.
"""

from __future__ import annotations

from typing import Any

from bpfsim.errors import MemoryFault
from bpfsim.runtime.helpers.registry import helper, u64
from bpfsim.uapi.constants import (
    BPF_MAX_LOOPS,
    CLOCK_BOOTTIME,
    CLOCK_MONOTONIC,
    CLOCK_TAI,
    E2BIG,
    EFAULT,
    EINVAL,
    ERANGE,
    MapType,
)
from bpfsim.vm.env import TailCall

HZ = 250                       # CONFIG_HZ of the 6.18 test machine (Debian default)
INITIAL_JIFFIES = (-300 * HZ) & 0xFFFFFFFF   # include/linux/jiffies.h: INITIAL_JIFFIES
TICK_NSEC = 1_000_000_000 // HZ
TASK_COMM_LEN = 16


def _kernel(env: Any) -> Any:
    return env.program.kernel


# -- time --------------------------------------------------------------------------------------
@helper("bpf_ktime_get_ns")
def bpf_ktime_get_ns(env, *_):
    return _kernel(env).clock.now(CLOCK_MONOTONIC)


@helper("bpf_ktime_get_boot_ns")
def bpf_ktime_get_boot_ns(env, *_):
    return _kernel(env).clock.now(CLOCK_BOOTTIME)


@helper("bpf_ktime_get_coarse_ns")
def bpf_ktime_get_coarse_ns(env, *_):
    # ktime_get_coarse_ns: MONOTONIC as of the last tick.
    now = _kernel(env).clock.now(CLOCK_MONOTONIC)
    return now - now % TICK_NSEC


@helper("bpf_ktime_get_tai_ns")
def bpf_ktime_get_tai_ns(env, *_):
    return _kernel(env).clock.now(CLOCK_TAI)


@helper("bpf_jiffies64")
def bpf_jiffies64(env, *_):
    # get_jiffies_64: ticks since boot, starting at INITIAL_JIFFIES (5 min before wrap).
    return (INITIAL_JIFFIES + _kernel(env).clock.now(CLOCK_BOOTTIME) // TICK_NSEC) & 0xFFFFFFFFFFFFFFFF


# -- randomness, cpu ---------------------------------------------------------------------------
@helper("bpf_get_prandom_u32")
def bpf_get_prandom_u32(env, *_):
    return _kernel(env).rng.getrandbits(32)


@helper("bpf_get_smp_processor_id")
def bpf_get_smp_processor_id(env, *_):
    return env.cpu


@helper("bpf_get_numa_node_id")
def bpf_get_numa_node_id(env, *_):
    return 0


# -- current task ------------------------------------------------------------------------------
@helper("bpf_get_current_pid_tgid")
def bpf_get_current_pid_tgid(env, *_):
    task = _kernel(env).task
    return (task.tgid << 32) | task.pid


@helper("bpf_get_current_uid_gid")
def bpf_get_current_uid_gid(env, *_):
    task = _kernel(env).task
    return (task.gid << 32) | task.uid


@helper("bpf_get_current_comm")
def bpf_get_current_comm(env, buf, size, *_):
    # helpers.c: strscpy_pad(buf, task->comm, size): NUL-terminated, zero-padded, truncated.
    if not size:
        return 0
    comm = _kernel(env).task.comm.encode()[:TASK_COMM_LEN - 1][:size - 1]
    env.mem.write(buf, comm + bytes(size - len(comm)))
    return 0


@helper("bpf_get_current_task")
def bpf_get_current_task(env, *_):
    return _kernel(env).task.address


# -- bpf_loop, tail calls ----------------------------------------------------------------------
@helper("bpf_loop")
def bpf_loop(env, nr_loops, callback_fn, callback_ctx, flags, _r5):
    # bpf_iter.c: bpf_loop: flags must be 0, at most BPF_MAX_LOOPS iterations; the callback
    # returning 1 stops the loop; the result is the number of iterations run.
    if flags:
        return u64(-EINVAL)
    nr_loops &= 0xFFFFFFFF
    if nr_loops > BPF_MAX_LOOPS:
        return u64(-E2BIG)
    i = 0
    while i < nr_loops:
        ret = env.call(callback_fn, i, callback_ctx)
        i += 1
        if ret & 0xFFFFFFFFFFFFFFFF:   # the verifier restricts it to [0, 1]
            break
    return i


@helper("bpf_tail_call")
def bpf_tail_call(env, _ctx, map_ptr, index, *_):
    # core.c: ___bpf_prog_run JMP_TAIL_CALL: index >= max_entries or an empty slot just
    # continues with the next instruction (the count limit is the VM's).
    found = env.mem.find(map_ptr)
    if found is None or found[0].kind != "map":
        raise MemoryFault(f"bpf_tail_call: {map_ptr:#x} is not a map", address=map_ptr)
    prog_array = found[0].owner
    if getattr(prog_array, "map_type", None) != MapType.PROG_ARRAY:
        raise MemoryFault("bpf_tail_call: the map is not a PROG_ARRAY", address=map_ptr)
    target = prog_array.prog_at(index & 0xFFFFFFFF)
    if target is None:
        return 0
    raise TailCall(target)


# -- spin locks --------------------------------------------------------------------------------
@helper("bpf_spin_lock")
def bpf_spin_lock(env, lock, *_):
    if env.mem.find(lock) is None:
        raise MemoryFault(f"bpf_spin_lock: {lock:#x} is not mapped", address=lock)
    _kernel(env).spin_lock(lock)
    return 0


@helper("bpf_spin_unlock")
def bpf_spin_unlock(env, lock, *_):
    _kernel(env).spin_unlock(lock)
    return 0


# -- probe reads -------------------------------------------------------------------------------
# x86-64: copy_from_kernel_nofault_allowed refuses user-range addresses with -ERANGE.  bpfsim's
# own regions sit low in the address space (region id << 32), so they are allowed explicitly;
# any other address below this bound is "user memory" to a kernel read.
USER_ADDR_END = 0x0000_7FFF_FFFF_F000 + 4096       # TASK_SIZE_MAX + PAGE_SIZE


def _read_refused(env, src: int, kind: str) -> int:
    """0 if the read may be attempted, else -errno.  A kernel read of a user-range address
    is -ERANGE (copy_from_kernel_nofault_allowed); a user read of anything but a region of
    kind "user" (emulated process memory) faults, since every other region is kernel memory."""
    found = env.mem.find(src)
    if kind == "user":
        return 0 if found is not None and found[0].kind == "user" else -EFAULT
    if found is None and src < USER_ADDR_END:
        return -ERANGE
    return 0


def _probe_read(env, dst, size, src, kind: str) -> int:
    # bpf_trace.c: bpf_probe_read_{kernel,user}_common: on any error the buffer is zeroed.
    if not size:
        return 0
    err = _read_refused(env, src, kind)
    try:
        if err:
            raise MemoryFault("refused")
        data = env.mem.read(src, size)
    except MemoryFault:
        env.mem.write(dst, bytes(size))
        return u64(err or -EFAULT)
    env.mem.write(dst, data)
    return 0


def _probe_read_str(env, dst, size, src, kind: str) -> int:
    # strncpy_from_{kernel,user}_nofault: copies up to size-1 bytes plus NUL and returns the
    # length including the NUL; on a fault the whole buffer is zeroed.
    if not size:
        return 0
    err = _read_refused(env, src, kind)
    found = None if err else env.mem.find(src)
    if found is None:
        env.mem.write(dst, bytes(size))
        return u64(err or -EFAULT)
    region, off = found
    chunk = bytes(region.buf[off:min(region.size, off + size - 1)])
    nul = chunk.find(0)
    if nul >= 0:
        chunk = chunk[:nul]
    elif len(chunk) < size - 1:            # ran off the end of the region: a fault
        env.mem.write(dst, bytes(size))
        return u64(-EFAULT)
    env.mem.write(dst, chunk + b"\0")
    return len(chunk) + 1


def _compat(src: int) -> str:
    # bpf_probe_read_compat (x86 has non-overlapping address spaces): user below TASK_SIZE.
    return "user" if src < USER_ADDR_END else "kernel"


helper("bpf_probe_read_kernel")(
    lambda env, dst, size, src, *_: _probe_read(env, dst, size & 0xFFFFFFFF, src, "kernel"))
helper("bpf_probe_read_user")(
    lambda env, dst, size, src, *_: _probe_read(env, dst, size & 0xFFFFFFFF, src, "user"))
helper("bpf_probe_read")(
    lambda env, dst, size, src, *_: _probe_read(env, dst, size & 0xFFFFFFFF, src, _compat(src)))
helper("bpf_probe_read_kernel_str")(
    lambda env, dst, size, src, *_: _probe_read_str(env, dst, size & 0xFFFFFFFF, src, "kernel"))
helper("bpf_probe_read_user_str")(
    lambda env, dst, size, src, *_: _probe_read_str(env, dst, size & 0xFFFFFFFF, src, "user"))
helper("bpf_probe_read_str")(
    lambda env, dst, size, src, *_: _probe_read_str(env, dst, size & 0xFFFFFFFF, src, _compat(src)))


# -- strings -----------------------------------------------------------------------------------
_LONG_MAX = (1 << 63) - 1
_ULONG_MAX = (1 << 64) - 1


def _strtoull(buf: bytes, flags: int) -> tuple[int, int, bool] | int:
    """helpers.c: __bpf_strtoull: (consumed, value, negative) or -errno."""
    base = flags & 0x1F
    if flags & ~0x1F or base not in (0, 8, 10, 16):
        return -EINVAL
    if not buf:
        return -EINVAL
    i = 0
    while i < len(buf) and chr(buf[i]).isspace():
        i += 1
    neg = i < len(buf) and buf[i:i + 1] == b"-"
    if neg:
        i += 1
    consumed = i
    if consumed == len(buf):
        return -EINVAL
    text = buf[i:i + 63].split(b"\0", 1)[0]     # copied into a 64-byte NUL-terminated str
    i = 0
    hexd = "0123456789abcdefABCDEF"
    if base == 0:          # lib/kstrtox.c: _parse_integer_fixup_radix
        if text[:1] == b"0":
            base = 16 if text[1:2].lower() == b"x" and text[2:3] and chr(text[2]) in hexd else 8
        else:
            base = 10
    if base == 16 and text[:1] == b"0" and text[1:2].lower() == b"x":
        i = 2
    start = i
    value = 0
    while i < len(text):
        c = chr(text[i]).lower()
        d = int(c, 16) if c in "0123456789abcdef" else 99
        if d >= base:
            break
        value = value * base + d
        if value > _ULONG_MAX:
            return -ERANGE
        i += 1
    if i == start:
        return -EINVAL
    return consumed + i, value, neg


def _strto(env, buf, buf_len, flags, res, signed: bool) -> int:
    buf_len &= 0xFFFFFFFF
    raw = env.mem.read(buf, buf_len)
    got = _strtoull(raw, flags & 0xFFFFFFFFFFFFFFFF)
    if isinstance(got, int):
        return u64(got)
    consumed, value, neg = got
    if signed:
        if neg:
            if value > _LONG_MAX + 1:
                return u64(-ERANGE)
            value = -value
        elif value > _LONG_MAX:
            return u64(-ERANGE)
    elif neg:
        return u64(-EINVAL)
    env.mem.write(res, (value & _ULONG_MAX).to_bytes(8, "little"))
    return consumed


@helper("bpf_strtol")
def bpf_strtol(env, buf, buf_len, flags, res, _r5):
    return _strto(env, buf, buf_len, flags, res, signed=True)


@helper("bpf_strtoul")
def bpf_strtoul(env, buf, buf_len, flags, res, _r5):
    return _strto(env, buf, buf_len, flags, res, signed=False)


@helper("bpf_strncmp")
def bpf_strncmp(env, s1, s1_sz, s2, *_):
    # helpers.c: strncmp(s1, s2, s1_sz): the sign of the first difference.
    a = env.mem.read(s1, s1_sz & 0xFFFFFFFF)
    b = env.mem.read_cstring(s2) + b"\0"
    for i in range(len(a)):
        ca, cb = a[i], b[i] if i < len(b) else 0
        if ca != cb:
            return 1 if ca > cb else u64(-1)
        if ca == 0:
            break
    return 0

