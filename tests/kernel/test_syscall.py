"""bpf(2) wrappers: attr layouts (no root needed) and the calls themselves (kernel-marked)."""

from __future__ import annotations

import ctypes
import os
import struct

import pytest

from bpfsim.errors import KernelError
from bpfsim.kernel import syscall as sc

# Offsets from Linux's include/uapi/linux/bpf.h (checked with offsetof() against the header).
LAYOUT = [
    (sc.MapCreateAttr, "map_name", 28), (sc.MapCreateAttr, "btf_fd", 48),
    (sc.MapCreateAttr, "map_extra", 64),
    (sc.MapElemAttr, "key", 8), (sc.MapElemAttr, "flags", 24),
    (sc.ProgLoadAttr, "prog_name", 48), (sc.ProgLoadAttr, "func_info", 80),
    (sc.ProgLoadAttr, "line_info_cnt", 104), (sc.ProgLoadAttr, "attach_btf_id", 108),
    (sc.ProgLoadAttr, "fd_array", 120), (sc.ProgLoadAttr, "core_relo_rec_size", 136),
    (sc.ProgLoadAttr, "log_true_size", 140),
    (sc.TestRunAttr, "duration", 36), (sc.TestRunAttr, "ctx_out", 56),
    (sc.TestRunAttr, "flags", 64), (sc.TestRunAttr, "batch_size", 72),
    (sc.BtfLoadAttr, "btf_size", 16), (sc.BtfLoadAttr, "btf_log_true_size", 28),
    (sc.ObjAttr, "file_flags", 12), (sc.ObjAttr, "path_fd", 16),
    (sc.MapInfoStruct, "btf_id", 64), (sc.MapInfoStruct, "map_extra", 80),
    (sc.ProgInfoStruct, "name", 64), (sc.ProgInfoStruct, "btf_id", 128),
    (sc.ProgInfoStruct, "run_cnt", 200), (sc.ProgInfoStruct, "verified_insns", 216),
    (sc.ProgInfoStruct, "attach_btf_id", 224),
]


@pytest.mark.parametrize("struct_, field, offset", LAYOUT, ids=lambda v: getattr(v, "__name__", str(v)))
def test_attr_layout(struct_, field, offset):
    assert getattr(struct_, field).offset == offset


def test_info_struct_sizes():
    assert ctypes.sizeof(sc.MapInfoStruct) == 88
    assert ctypes.sizeof(sc.ProgInfoStruct) == 232


def test_object_names_are_sanitised():
    assert sc._name("a-very/long name.with_stuff") == b"averylongname.w"


RET2 = bytes([0xB7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])   # r0 = 2; exit
BAD = bytes([0x95, 0, 0, 0, 0, 0, 0, 0])                                 # exit (r0 unset)


@pytest.fixture
def fds():
    opened: list[int] = []
    yield opened
    for fd in opened:
        sc.close(fd)


@pytest.mark.kernel
def test_array_map_roundtrip(fds):
    fd = sc.map_create(2, 4, 8, 4, name="t_arr")
    fds.append(fd)
    sc.map_update(fd, struct.pack("<I", 1), struct.pack("<Q", 42))
    assert sc.map_lookup(fd, struct.pack("<I", 1), 8) == struct.pack("<Q", 42)
    assert sc.map_get_next_key(fd, None, 4) == struct.pack("<I", 0)
    assert sc.map_get_next_key(fd, struct.pack("<I", 3), 4) is None
    info = sc.map_get_info(fd)
    assert (info.type, info.key_size, info.value_size, info.max_entries, info.name) == (2, 4, 8, 4, "t_arr")
    with pytest.raises(KernelError) as e:
        sc.map_update(fd, struct.pack("<I", 9), bytes(8))
    assert e.value.errno == 7  # E2BIG: index out of range (arraymap.c: array_map_update_elem)


@pytest.mark.kernel
def test_hash_map_ops(fds):
    fd = sc.map_create(1, 4, 4, 2)
    fds.append(fd)
    assert sc.map_lookup(fd, b"abcd", 4) is None
    assert sc.map_delete(fd, b"abcd") is False
    sc.map_update(fd, b"abcd", b"1234")
    with pytest.raises(KernelError) as e:
        sc.map_update(fd, b"abcd", b"5678", 1)   # BPF_NOEXIST
    assert e.value.errno == 17
    assert sc.map_lookup_and_delete(fd, b"abcd", 4) == b"1234"
    assert sc.map_lookup(fd, b"abcd", 4) is None
    sc.map_update(fd, b"k001", b"v001")
    sc.map_freeze(fd)
    with pytest.raises(KernelError) as e:
        sc.map_update(fd, b"k001", b"v002")
    assert e.value.errno == 1


@pytest.mark.kernel
def test_prog_load_test_run_and_info(fds):
    log = sc.Log(1 << 16, level=2)
    fd = sc.prog_load(6, RET2, "GPL", name="ret2", log=log)
    fds.append(fd)
    assert "processed 2 insns" in log.text and log.true_size == len(log.text) + 1
    r = sc.prog_test_run(fd, bytes(64), repeat=3)
    assert r.retval == 2 and r.data == bytes(64)
    info = sc.prog_get_info(fd)
    assert info.type == 6 and info.name == "ret2" and info.gpl_compatible
    fd2 = sc.prog_get_fd_by_id(info.id)
    fds.append(fd2)
    assert sc.prog_get_info(fd2).id == info.id
    assert sc.obj_kind(fd) == "prog"


@pytest.mark.kernel
def test_prog_load_failure_keeps_log():
    log = sc.Log(1 << 16)
    with pytest.raises(KernelError) as e:
        sc.prog_load(6, BAD, "GPL", log=log)
    assert e.value.errno == 13 and e.value.command == "BPF_PROG_LOAD"
    assert "R0 !read_ok" in log.text
    small = sc.Log(16)
    with pytest.raises(KernelError) as e:
        sc.prog_load(6, BAD, "GPL", log=small)
    assert e.value.errno == 28 and small.true_size == log.true_size   # ENOSPC: the tail only


@pytest.mark.kernel
def test_pin_get_and_errors(fds, tmp_path):
    fd = sc.map_create(2, 4, 4, 1)
    fds.append(fd)
    path = f"/sys/fs/bpf/bpfsim_t_{os.getpid()}"
    sc.obj_pin(fd, path)
    try:
        fd2 = sc.obj_get(path)
        fds.append(fd2)
        assert sc.map_get_info(fd2).id == sc.map_get_info(fd).id
        with pytest.raises(KernelError) as e:
            sc.obj_pin(fd, path)
        assert e.value.errno == 17
    finally:
        os.unlink(path)
    with pytest.raises(KernelError, match="not on a bpf filesystem"):
        sc.obj_pin(fd, str(tmp_path / "x"))
    with pytest.raises(KernelError, match="does not exist"):
        sc.obj_get("/sys/fs/bpf/bpfsim_no_such_dir/x")
    fd3 = sc.map_get_fd_by_id(sc.map_get_info(fd).id)
    fds.append(fd3)
    assert sc.obj_kind(fd3) == "map"
