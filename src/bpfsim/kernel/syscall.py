"""The one place in bpfsim that calls bpf(2): `union bpf_attr` layouts and small typed wrappers.

Job: turn Python values into the kernel's attr structs, make the system call through ctypes,
and turn a failure into `errors.KernelError(command, errno)` with a clear reason for the
usual causes (no privilege, no bpffs).  Nothing here knows about ELF, BTF or collections.
Must not import anything of bpfsim above `errors` and `uapi`.

Every attr struct below mirrors one member of `union bpf_attr` in Linux 6.18's
`include/uapi/linux/bpf.h`, up to the last field we use; the kernel accepts a shorter attr
(syscall.c: `bpf_check_uarg_tail_zero` only insists that bytes *beyond* what it knows are 0).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
from dataclasses import dataclass

from bpfsim.errors import KernelError, NotSupported
from bpfsim.uapi.constants import BPF_OBJ_NAME_LEN, Cmd

# __NR_bpf per architecture (arch/*/entry/syscalls, include/uapi/asm-generic/unistd.h).
_NR_BPF = {
    "x86_64": 321, "amd64": 321,
    "i386": 357, "i686": 357,
    "aarch64": 280, "arm64": 280, "riscv64": 280, "loongarch64": 280,
    "armv7l": 386, "armv6l": 386,
    "ppc64le": 361, "ppc64": 361,
    "s390x": 351,
}

BPF_FS_MAGIC = 0xCAFE4A11
BPF_TAG_SIZE = 8

_u32 = ctypes.c_uint32
_s32 = ctypes.c_int32
_u64 = ctypes.c_uint64


class _Attr(ctypes.Structure):
    """Base of the attr structs; `_aligned_u64` fields are plain u64 at 8-aligned offsets."""


class MapCreateAttr(_Attr):
    _fields_ = [
        ("map_type", _u32), ("key_size", _u32), ("value_size", _u32), ("max_entries", _u32),
        ("map_flags", _u32), ("inner_map_fd", _u32), ("numa_node", _u32),
        ("map_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("map_ifindex", _u32), ("btf_fd", _u32), ("btf_key_type_id", _u32),
        ("btf_value_type_id", _u32), ("btf_vmlinux_value_type_id", _u32),
        ("map_extra", _u64), ("value_type_btf_obj_fd", _s32), ("map_token_fd", _s32),
    ]


class MapElemAttr(_Attr):
    _fields_ = [("map_fd", _u32), ("_pad", _u32), ("key", _u64), ("value", _u64), ("flags", _u64)]


class ProgLoadAttr(_Attr):
    _fields_ = [
        ("prog_type", _u32), ("insn_cnt", _u32), ("insns", _u64), ("license", _u64),
        ("log_level", _u32), ("log_size", _u32), ("log_buf", _u64),
        ("kern_version", _u32), ("prog_flags", _u32),
        ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("prog_ifindex", _u32), ("expected_attach_type", _u32), ("prog_btf_fd", _u32),
        ("func_info_rec_size", _u32), ("func_info", _u64), ("func_info_cnt", _u32),
        ("line_info_rec_size", _u32), ("line_info", _u64), ("line_info_cnt", _u32),
        ("attach_btf_id", _u32), ("attach_prog_fd", _u32),  # union with attach_btf_obj_fd
        ("core_relo_cnt", _u32), ("fd_array", _u64), ("core_relos", _u64),
        ("core_relo_rec_size", _u32), ("log_true_size", _u32), ("prog_token_fd", _s32),
    ]


class ObjAttr(_Attr):
    _fields_ = [("pathname", _u64), ("bpf_fd", _u32), ("file_flags", _u32), ("path_fd", _s32)]


class TestRunAttr(_Attr):
    _fields_ = [
        ("prog_fd", _u32), ("retval", _u32), ("data_size_in", _u32), ("data_size_out", _u32),
        ("data_in", _u64), ("data_out", _u64), ("repeat", _u32), ("duration", _u32),
        ("ctx_size_in", _u32), ("ctx_size_out", _u32), ("ctx_in", _u64), ("ctx_out", _u64),
        ("flags", _u32), ("cpu", _u32), ("batch_size", _u32),
    ]


class GetIdAttr(_Attr):
    """BPF_*_GET_FD_BY_ID and BPF_*_GET_NEXT_ID: `start_id` is also prog_id/map_id/btf_id."""

    _fields_ = [("start_id", _u32), ("next_id", _u32), ("open_flags", _u32)]


class InfoAttr(_Attr):
    _fields_ = [("bpf_fd", _u32), ("info_len", _u32), ("info", _u64)]


class BtfLoadAttr(_Attr):
    _fields_ = [
        ("btf", _u64), ("btf_log_buf", _u64), ("btf_size", _u32), ("btf_log_size", _u32),
        ("btf_log_level", _u32), ("btf_log_true_size", _u32), ("btf_flags", _u32),
        ("btf_token_fd", _s32),
    ]


class MapInfoStruct(ctypes.Structure):
    """`struct bpf_map_info` (aligned(8))."""

    _fields_ = [
        ("type", _u32), ("id", _u32), ("key_size", _u32), ("value_size", _u32),
        ("max_entries", _u32), ("map_flags", _u32), ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", _u32), ("btf_vmlinux_value_type_id", _u32), ("netns_dev", _u64),
        ("netns_ino", _u64), ("btf_id", _u32), ("btf_key_type_id", _u32),
        ("btf_value_type_id", _u32), ("btf_vmlinux_id", _u32), ("map_extra", _u64),
    ]


class ProgInfoStruct(ctypes.Structure):
    """`struct bpf_prog_info` (aligned(8)), up to `attach_btf_id`."""

    _fields_ = [
        ("type", _u32), ("id", _u32), ("tag", ctypes.c_uint8 * BPF_TAG_SIZE),
        ("jited_prog_len", _u32), ("xlated_prog_len", _u32),
        ("jited_prog_insns", _u64), ("xlated_prog_insns", _u64), ("load_time", _u64),
        ("created_by_uid", _u32), ("nr_map_ids", _u32), ("map_ids", _u64),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN), ("ifindex", _u32), ("gpl_compatible", _u32),
        ("netns_dev", _u64), ("netns_ino", _u64), ("nr_jited_ksyms", _u32),
        ("nr_jited_func_lens", _u32), ("jited_ksyms", _u64), ("jited_func_lens", _u64),
        ("btf_id", _u32), ("func_info_rec_size", _u32), ("func_info", _u64),
        ("nr_func_info", _u32), ("nr_line_info", _u32), ("line_info", _u64),
        ("jited_line_info", _u64), ("nr_jited_line_info", _u32), ("line_info_rec_size", _u32),
        ("jited_line_info_rec_size", _u32), ("nr_prog_tags", _u32), ("prog_tags", _u64),
        ("run_time_ns", _u64), ("run_cnt", _u64), ("recursion_misses", _u64),
        ("verified_insns", _u32), ("attach_btf_obj_id", _u32), ("attach_btf_id", _u32),
        ("_pad", _u32),
    ]


# ---------------------------------------------------------------------------------------------
# The system call


_libc: ctypes.CDLL | None = None


def _syscall_fn():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc.syscall


def nr_bpf() -> int:
    """__NR_bpf for this machine; NotSupported on an architecture we do not know."""
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        raise NotSupported("bpf(2)", detail="not a Linux system")
    arch = platform.machine().lower()
    try:
        return _NR_BPF[arch]
    except KeyError:
        raise NotSupported("bpf(2)", detail=f"unknown bpf syscall number on {arch}") from None


def _hint(cmd: Cmd, err: int) -> str:
    """A readable reason for the failures people hit first."""
    if err == 1:  # EPERM
        if os.geteuid() != 0:
            return "bpf(2) needs root (CAP_BPF, plus CAP_SYS_ADMIN/CAP_NET_ADMIN for most program types)"
        if cmd in (Cmd.OBJ_PIN, Cmd.OBJ_GET):
            return "the path is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)"
        return "refused (kernel.unprivileged_bpf_disabled, lockdown, or missing capabilities)"
    if err == 38:  # ENOSYS
        return "this kernel has no bpf(2) (CONFIG_BPF_SYSCALL=n)"
    return ""


def bpf(cmd: Cmd, attr: ctypes.Structure, *, name: str | None = None, hint: bool = True) -> int:
    """Call bpf(cmd, &attr, sizeof attr); return the non-negative result or raise KernelError.

    EINTR is retried (the kernel may restart a long PROG_LOAD).
    """
    fn = _syscall_fn()
    nr = nr_bpf()
    command = name or f"BPF_{Cmd(cmd).name}"
    while True:
        ret = fn(ctypes.c_long(nr), ctypes.c_int(int(cmd)), ctypes.byref(attr),
                 ctypes.c_uint(ctypes.sizeof(attr)))
        if ret >= 0:
            return int(ret)
        err = ctypes.get_errno()
        if err == 4:  # EINTR
            continue
        raise KernelError(command, err, _hint(Cmd(cmd), err) if hint else "")


def _addr(buf: ctypes.Array | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def _cbuf(data: bytes | bytearray) -> ctypes.Array:
    """A C buffer holding `data` (kept alive by the caller for the call's duration)."""
    return (ctypes.c_char * max(len(data), 1)).from_buffer_copy(bytes(data) or b"\0")


def _name(name: str) -> bytes:
    """Object names: at most 15 chars of [A-Za-z0-9_.] (syscall.c: bpf_obj_name_cpy)."""
    out = "".join(c for c in name if c.isalnum() or c in "_.")
    return out.encode("ascii", "ignore")[: BPF_OBJ_NAME_LEN - 1]


def close(fd: int) -> None:
    """Close a bpf fd; closing an fd twice or -1 is ignored (all-or-nothing cleanup relies on it)."""
    if fd is None or fd < 0:
        return
    with contextlib.suppress(OSError):
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Maps


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, *, flags: int = 0,
               name: str = "", inner_map_fd: int = 0, numa_node: int = 0, btf_fd: int = 0,
               btf_key_type_id: int = 0, btf_value_type_id: int = 0,
               btf_vmlinux_value_type_id: int = 0, map_extra: int = 0, map_ifindex: int = 0) -> int:
    """BPF_MAP_CREATE; returns the new map fd."""
    a = MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size,
                      max_entries=max_entries, map_flags=flags, inner_map_fd=inner_map_fd,
                      numa_node=numa_node, map_name=_name(name), map_ifindex=map_ifindex,
                      btf_fd=btf_fd, btf_key_type_id=btf_key_type_id,
                      btf_value_type_id=btf_value_type_id,
                      btf_vmlinux_value_type_id=btf_vmlinux_value_type_id, map_extra=map_extra)
    return bpf(Cmd.MAP_CREATE, a)


def map_lookup(fd: int, key: bytes, value_size: int, flags: int = 0, *,
               value: bytes | None = None) -> bytes | None:
    """BPF_MAP_LOOKUP_ELEM; None when the key is absent (ENOENT).

    For per-CPU maps `value_size` must be round_up(value_size, 8) * possible CPUs.  `value`
    pre-fills the value buffer (a bloom filter's lookup takes the value to test there).
    """
    k = _cbuf(key) if key else None   # no key: NULL (syscall.c: ___bpf_copy_key)
    v = _cbuf(value) if value is not None else (ctypes.c_char * max(value_size, 1))()
    a = MapElemAttr(map_fd=fd, key=_addr(k), value=_addr(v), flags=flags)
    try:
        bpf(Cmd.MAP_LOOKUP_ELEM, a)
    except KernelError as e:
        if e.errno == 2:
            return None
        raise
    return bytes(v)[:value_size]


def map_update(fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    """BPF_MAP_UPDATE_ELEM (flags: BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK)."""
    k, v = (_cbuf(key) if key else None), _cbuf(value)
    bpf(Cmd.MAP_UPDATE_ELEM, MapElemAttr(map_fd=fd, key=_addr(k), value=_addr(v), flags=flags))


def map_delete(fd: int, key: bytes) -> bool:
    """BPF_MAP_DELETE_ELEM; False when the key was absent (ENOENT), other errors raise."""
    k = _cbuf(key) if key else None   # no key: NULL (syscall.c: ___bpf_copy_key)
    try:
        bpf(Cmd.MAP_DELETE_ELEM, MapElemAttr(map_fd=fd, key=_addr(k)))
    except KernelError as e:
        if e.errno == 2:
            return False
        raise
    return True


def map_get_next_key(fd: int, key: bytes | None, key_size: int) -> bytes | None:
    """BPF_MAP_GET_NEXT_KEY; `key=None` asks for the first key; None at the end (ENOENT)."""
    k = _cbuf(key) if key else None
    nk = (ctypes.c_char * max(key_size, 1))()
    try:
        bpf(Cmd.MAP_GET_NEXT_KEY, MapElemAttr(map_fd=fd, key=_addr(k), value=_addr(nk)))
    except KernelError as e:
        if e.errno == 2:
            return None
        raise
    return bytes(nk)[:key_size]


def map_lookup_and_delete(fd: int, key: bytes | None, value_size: int, flags: int = 0) -> bytes | None:
    """BPF_MAP_LOOKUP_AND_DELETE_ELEM (queue/stack take `key=None`); None when empty/absent."""
    k = _cbuf(key) if key else None
    v = (ctypes.c_char * max(value_size, 1))()
    try:
        bpf(Cmd.MAP_LOOKUP_AND_DELETE_ELEM,
            MapElemAttr(map_fd=fd, key=_addr(k), value=_addr(v), flags=flags))
    except KernelError as e:
        if e.errno == 2:
            return None
        raise
    return bytes(v)[:value_size]


def map_freeze(fd: int) -> None:
    """BPF_MAP_FREEZE: no more writes from user space."""
    bpf(Cmd.MAP_FREEZE, InfoAttr(bpf_fd=fd))


# ---------------------------------------------------------------------------------------------
# Logs


class Log:
    """A log buffer for PROG_LOAD / BTF_LOAD: `level` (1 = the verifier's usual log, 2 = every
    state), the buffer, and after the call `true_size`, the size the whole log needed
    (the kernel writes it back since 6.4: `log_true_size`; the log keeps its *tail* when it
    does not fit, and the call then fails with ENOSPC)."""

    def __init__(self, size: int = 1 << 20, level: int = 1) -> None:
        self.buf = bytearray(size)
        self.level = level
        self.true_size = 0

    @property
    def text(self) -> str:
        return self.buf.split(b"\0", 1)[0].decode("utf-8", errors="replace")

    def _c(self) -> ctypes.Array | None:
        return (ctypes.c_char * len(self.buf)).from_buffer(self.buf) if self.buf else None


# ---------------------------------------------------------------------------------------------
# Programs


FUNC_INFO_REC_SIZE = 8    # struct bpf_func_info {insn_off, type_id}
LINE_INFO_REC_SIZE = 16   # struct bpf_line_info {insn_off, file_name_off, line_off, line_col}
CORE_RELO_REC_SIZE = 16   # struct bpf_core_relo {insn_off (bytes), type_id, access_str_off, kind}


def prog_load(prog_type: int, insns: bytes, license: str, *, log: Log | None = None,
              kern_version: int = 0, prog_flags: int = 0, name: str = "",
              expected_attach_type: int = 0, prog_btf_fd: int = 0, func_info: bytes = b"",
              func_info_rec_size: int = FUNC_INFO_REC_SIZE, line_info: bytes = b"",
              line_info_rec_size: int = LINE_INFO_REC_SIZE, attach_btf_id: int = 0,
              attach_prog_fd: int = 0, fd_array: list[int] | None = None,
              prog_ifindex: int = 0, core_relos: bytes = b"") -> int:
    """BPF_PROG_LOAD; returns the program fd.

    `log`, when given, receives the verifier log (also on failure: read `log.text` after
    catching KernelError).  EAGAIN is retried like libbpf's
    `sys_bpf_prog_load` (the verifier may return it under memory pressure).
    """
    ins = _cbuf(insns)
    lic = ctypes.create_string_buffer(license.encode("ascii", "replace"))
    logbuf = log._c() if log is not None else None
    fi = _cbuf(func_info) if func_info else None
    li = _cbuf(line_info) if line_info else None
    fda = (ctypes.c_int32 * len(fd_array))(*fd_array) if fd_array else None
    cr = _cbuf(core_relos) if core_relos else None
    a = ProgLoadAttr(
        prog_type=prog_type, insn_cnt=len(insns) // 8, insns=_addr(ins), license=_addr(lic),
        log_level=log.level if logbuf is not None else 0,
        log_size=len(log.buf) if logbuf is not None else 0, log_buf=_addr(logbuf),
        kern_version=kern_version, prog_flags=prog_flags, prog_name=_name(name),
        prog_ifindex=prog_ifindex, expected_attach_type=expected_attach_type,
        prog_btf_fd=prog_btf_fd,
        func_info_rec_size=func_info_rec_size if fi is not None else 0, func_info=_addr(fi),
        func_info_cnt=len(func_info) // func_info_rec_size if fi is not None else 0,
        line_info_rec_size=line_info_rec_size if li is not None else 0, line_info=_addr(li),
        line_info_cnt=len(line_info) // line_info_rec_size if li is not None else 0,
        attach_btf_id=attach_btf_id, attach_prog_fd=attach_prog_fd, fd_array=_addr(fda),
        core_relos=_addr(cr), core_relo_cnt=len(core_relos) // CORE_RELO_REC_SIZE if cr else 0,
        core_relo_rec_size=CORE_RELO_REC_SIZE if cr else 0)
    try:
        for attempt in range(5):
            try:
                return bpf(Cmd.PROG_LOAD, a)
            except KernelError as e:
                if e.errno != 11 or attempt == 4:  # EAGAIN
                    raise
        raise AssertionError("unreachable")
    finally:
        if log is not None:
            log.true_size = int(a.log_true_size)


@dataclass
class TestRunResult:
    """What BPF_PROG_TEST_RUN hands back."""

    retval: int
    data: bytes
    ctx: bytes
    duration_ns: int

    __test__ = False  # not a pytest class


def prog_test_run(fd: int, data: bytes = b"", *, ctx: bytes | None = None, repeat: int = 1,
                  data_size_out: int | None = None, ctx_size_out: int | None = None,
                  flags: int = 0, cpu: int = 0, ctx_in_place: bool = False) -> TestRunResult:
    """BPF_PROG_TEST_RUN.  Output buffers default to the input sizes plus headroom.

    The kernel reports ENOSPC when data_out is too small, after filling it
    (test_run.c: bpf_test_finish); we size it generously to avoid that: XDP may grow the
    packet by up to a page of tailroom/headroom.  `ctx_in_place`: the program type writes
    the ctx back into ctx_in and refuses a ctx_out (bpf_prog_test_run_syscall); the result's
    `ctx` is then read from the ctx_in buffer.
    """
    if ctx_in_place:
        ctx_size_out = 0
    din = _cbuf(data) if data else None
    n_out = data_size_out if data_size_out is not None else (len(data) + 4096 if data else 0)
    dout = (ctypes.c_char * n_out)() if n_out else None
    cin = _cbuf(ctx) if ctx else None
    c_out = ctx_size_out if ctx_size_out is not None else (len(ctx) if ctx else 0)
    cout = (ctypes.c_char * c_out)() if c_out else None
    a = TestRunAttr(prog_fd=fd, data_size_in=len(data), data_size_out=n_out, data_in=_addr(din),
                    data_out=_addr(dout), repeat=repeat, ctx_size_in=len(ctx) if ctx else 0,
                    ctx_size_out=c_out, ctx_in=_addr(cin), ctx_out=_addr(cout), flags=flags,
                    cpu=cpu)
    bpf(Cmd.PROG_TEST_RUN, a)
    data_out = bytes(dout)[: min(a.data_size_out, n_out)] if dout is not None else b""
    ctx_out = bytes(cout)[: min(a.ctx_size_out, c_out)] if cout is not None else b""
    if ctx_in_place and cin is not None:
        ctx_out = bytes(cin)[: len(ctx or b"")]
    return TestRunResult(a.retval, data_out, ctx_out, a.duration)


# ---------------------------------------------------------------------------------------------
# Pinning


def _on_bpffs(path: str) -> bool:
    """Is `path` (or its nearest existing parent) on a bpf filesystem?  Reads /proc/self/mounts."""
    path = os.path.abspath(path)
    best, fstype = "", ""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, fstype = mnt, parts[2]
    except OSError:
        return True  # cannot tell; let the kernel decide
    return fstype == "bpf"


def obj_pin(fd: int, path: str) -> None:
    """BPF_OBJ_PIN: pin a map or program at a bpffs path."""
    if not _on_bpffs(path):
        raise KernelError("BPF_OBJ_PIN", 1, f"{path} is not on a bpf filesystem "
                          "(mount -t bpf bpf /sys/fs/bpf)")
    p = ctypes.create_string_buffer(os.fsencode(path))
    try:
        bpf(Cmd.OBJ_PIN, ObjAttr(pathname=_addr(p), bpf_fd=fd))
    except KernelError as e:
        raise KernelError(e.command, e.errno, _pin_detail(path, e.errno)) from None


def obj_get(path: str, flags: int = 0) -> int:
    """BPF_OBJ_GET: a new fd for the object pinned at `path` (flags: BPF_F_RDONLY/WRONLY)."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    try:
        return bpf(Cmd.OBJ_GET, ObjAttr(pathname=_addr(p), file_flags=flags))
    except KernelError as e:
        raise KernelError(e.command, e.errno, _pin_detail(path, e.errno)) from None


def _pin_detail(path: str, err: int) -> str:
    if err == 2:
        parent = os.path.dirname(os.path.abspath(path))
        return path if os.path.isdir(parent) else f"{path} (directory {parent} does not exist)"
    if err == 1 and any("." in part for part in os.path.abspath(path).split("/")[4:]):
        return f"{path}: bpffs names may not contain '.' (inode.c: bpf_lookup)"
    if err == 1 and os.geteuid() == 0 and not _on_bpffs(path):
        return f"{path} is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)"
    if err == 1 and os.geteuid() != 0:
        return f"{path}: bpf(2) needs root"
    return path


# ---------------------------------------------------------------------------------------------
# BTF


def btf_load(data: bytes, *, log: Log | None = None) -> int:
    """BPF_BTF_LOAD; returns the BTF object fd.  `log` receives the BTF verifier's log."""
    b = _cbuf(data)
    logbuf = log._c() if log is not None else None
    a = BtfLoadAttr(btf=_addr(b), btf_size=len(data), btf_log_buf=_addr(logbuf),
                    btf_log_size=len(log.buf) if logbuf is not None else 0,
                    btf_log_level=log.level if logbuf is not None else 0)
    try:
        return bpf(Cmd.BTF_LOAD, a)
    finally:
        if log is not None:
            log.true_size = int(a.btf_log_true_size)


# ---------------------------------------------------------------------------------------------
# Ids and info


def _get_fd_by_id(cmd: Cmd, obj_id: int, open_flags: int = 0) -> int:
    return bpf(cmd, GetIdAttr(start_id=obj_id, open_flags=open_flags))


def map_get_fd_by_id(map_id: int, open_flags: int = 0) -> int:
    return _get_fd_by_id(Cmd.MAP_GET_FD_BY_ID, map_id, open_flags)


def prog_get_fd_by_id(prog_id: int) -> int:
    return _get_fd_by_id(Cmd.PROG_GET_FD_BY_ID, prog_id)


def btf_get_fd_by_id(btf_id: int) -> int:
    return _get_fd_by_id(Cmd.BTF_GET_FD_BY_ID, btf_id)


def _next_id(cmd: Cmd, start: int) -> int | None:
    a = GetIdAttr(start_id=start)
    try:
        bpf(cmd, a)
    except KernelError as e:
        if e.errno == 2:
            return None
        raise
    return int(a.next_id)


def map_get_next_id(start: int = 0) -> int | None:
    """BPF_MAP_GET_NEXT_ID; None after the last map."""
    return _next_id(Cmd.MAP_GET_NEXT_ID, start)


def prog_get_next_id(start: int = 0) -> int | None:
    """BPF_PROG_GET_NEXT_ID; None after the last program."""
    return _next_id(Cmd.PROG_GET_NEXT_ID, start)


def _info(fd: int, st: ctypes.Structure) -> ctypes.Structure:
    a = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(st), info=ctypes.addressof(st))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, a)
    return st


@dataclass
class MapInfo:
    """The fields of `struct bpf_map_info` we use."""

    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    name: str
    btf_id: int
    btf_key_type_id: int
    btf_value_type_id: int
    map_extra: int


@dataclass
class ProgInfo:
    """The fields of `struct bpf_prog_info` we use."""

    type: int
    id: int
    tag: bytes
    name: str
    xlated_prog_len: int
    jited_prog_len: int
    btf_id: int
    map_ids: list[int]
    run_time_ns: int
    run_cnt: int
    verified_insns: int
    gpl_compatible: bool


def map_get_info(fd: int) -> MapInfo:
    """BPF_OBJ_GET_INFO_BY_FD on a map fd."""
    s = _info(fd, MapInfoStruct())
    return MapInfo(s.type, s.id, s.key_size, s.value_size, s.max_entries, s.map_flags,
                   s.name.decode(errors="replace"), s.btf_id, s.btf_key_type_id,
                   s.btf_value_type_id, s.map_extra)


def prog_get_info(fd: int) -> ProgInfo:
    """BPF_OBJ_GET_INFO_BY_FD on a program fd (a second call fetches the map ids)."""
    s = _info(fd, ProgInfoStruct())
    ids: list[int] = []
    if s.nr_map_ids:
        arr = (_u32 * s.nr_map_ids)()
        s2 = ProgInfoStruct(nr_map_ids=s.nr_map_ids, map_ids=ctypes.addressof(arr))
        _info(fd, s2)
        ids = list(arr)[: s2.nr_map_ids]
    return ProgInfo(s.type, s.id, bytes(s.tag), s.name.decode(errors="replace"), s.xlated_prog_len,
                    s.jited_prog_len, s.btf_id, ids, s.run_time_ns, s.run_cnt, s.verified_insns,
                    bool(s.gpl_compatible & 1))


def obj_kind(fd: int) -> str:
    """"map", "prog", "btf", "link" or "unknown", from /proc/self/fdinfo and the anon inode name."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "unknown"
    # anon_inode names: syscall.c "bpf-map", "bpf-prog", "bpf_link"; btf.c "btf".
    names = {"anon_inode:bpf-map": "map", "anon_inode:bpf-prog": "prog", "anon_inode:btf": "btf",
             "anon_inode:bpf_link": "link", "anon_inode:bpf-link": "link"}
    return names.get(target, "unknown")


class BtfInfoStruct(ctypes.Structure):
    """`struct bpf_btf_info`."""

    _fields_ = [("btf", _u64), ("btf_size", _u32), ("id", _u32), ("name", _u64),
                ("name_len", _u32), ("kernel_btf", _u32)]


def btf_get_data(fd: int) -> bytes:
    """The raw BTF blob of a BTF object (two OBJ_GET_INFO_BY_FD calls: size, then data)."""
    s = _info(fd, BtfInfoStruct())
    buf = (ctypes.c_char * max(s.btf_size, 1))()
    _info(fd, BtfInfoStruct(btf=ctypes.addressof(buf), btf_size=s.btf_size))
    return bytes(buf)[: s.btf_size]
