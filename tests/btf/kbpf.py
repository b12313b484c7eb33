"""A few raw bpf(2) calls (ctypes) for the btf tests' kernel checks: BTF_LOAD, MAP_CREATE and
a BPF_F_LOCK lookup, which succeeds only when the kernel's btf_record of the map holds a
bpf_spin_lock (syscall.c: map_lookup_elem -> -EINVAL otherwise).  Test-only; the real
syscall layer is bpfsim.kernel."""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_BPF = 321  # x86_64
BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_BTF_LOAD = 0, 1, 18
BPF_F_LOCK = 4


def available() -> bool:
    return os.geteuid() == 0 and os.path.exists("/sys/fs/bpf")


def _bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, 128)
    ret = _libc.syscall(_SYS_BPF, cmd, buf, 128)
    if ret < 0:
        return -ctypes.get_errno()
    return ret


def btf_load(data: bytes) -> tuple[int, str]:
    """(fd or -errno, verifier log)."""
    blob = ctypes.create_string_buffer(data, len(data))
    log = ctypes.create_string_buffer(65536)
    attr = (ctypes.addressof(blob).to_bytes(8, "little") + ctypes.addressof(log).to_bytes(8, "little")
            + len(data).to_bytes(4, "little") + len(log).to_bytes(4, "little") + (1).to_bytes(4, "little"))
    fd = _bpf(BPF_BTF_LOAD, attr)
    return fd, log.value.decode(errors="replace")


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, btf_fd: int,
               key_type_id: int, value_type_id: int, flags: int = 0) -> int:
    u32 = lambda v: v.to_bytes(4, "little")  # noqa: E731
    attr = (u32(map_type) + u32(key_size) + u32(value_size) + u32(max_entries) + u32(flags) + u32(0)
            + u32(0) + b"btf_test".ljust(16, b"\0") + u32(0) + u32(btf_fd) + u32(key_type_id)
            + u32(value_type_id))
    return _bpf(BPF_MAP_CREATE, attr)


def lookup_locked(map_fd: int, key: bytes, value_size: int) -> int:
    """0, or -errno of a BPF_F_LOCK lookup."""
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    attr = (map_fd.to_bytes(4, "little") + bytes(4) + ctypes.addressof(k).to_bytes(8, "little")
            + ctypes.addressof(v).to_bytes(8, "little") + BPF_F_LOCK.to_bytes(8, "little"))
    return _bpf(BPF_MAP_LOOKUP_ELEM, attr)


BPF_MAP_UPDATE_ELEM, BPF_OBJ_PIN = 2, 6


def map_update(map_fd: int, key: bytes, value: bytes) -> int:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    attr = (map_fd.to_bytes(4, "little") + bytes(4) + ctypes.addressof(k).to_bytes(8, "little")
            + ctypes.addressof(v).to_bytes(8, "little") + bytes(8))
    return _bpf(BPF_MAP_UPDATE_ELEM, attr)


def obj_pin(fd: int, path: str) -> int:
    p = ctypes.create_string_buffer(path.encode())
    attr = ctypes.addressof(p).to_bytes(8, "little") + fd.to_bytes(4, "little") + bytes(4)
    return _bpf(BPF_OBJ_PIN, attr)
