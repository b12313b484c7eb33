"""The emulated bpffs (runtime/pinfs.py): paths, errors and references.

Each errno was checked on 6.18 (bpf(2) OBJ_PIN / OBJ_GET on /sys/fs/bpf, and mkdir/unlink);
`test_pin_errors_match_kernel` repeats the table on the kernel.
"""

from __future__ import annotations

import errno
import os
import uuid

import pytest

from bpfsim.errors import PinError
from bpfsim.runtime.kobject import BpfProg
from bpfsim.runtime.maps import create_map
from bpfsim.runtime.pinfs import PinFS
from bpfsim.spec.collection import MapSpec
from bpfsim.vm.memory import AddressSpace


class FakeKernel:
    def __init__(self) -> None:
        self.mem = AddressSpace()
        self.ncpus = 2
        self.timers = None


@pytest.fixture
def k():
    return FakeKernel()


@pytest.fixture
def fs(k):
    return PinFS(k)


def new_map(k):
    return create_map(k, MapSpec("m", 1, 4, 4, 4))


def pin_errno(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except PinError as e:
        return e.errno
    return 0


def test_pin_get_unpin(k, fs):
    m = new_map(k)
    fs.pin("/sys/fs/bpf/m", m)
    assert fs.get("/sys/fs/bpf/m") is m
    assert fs.get("/sys/fs/bpf//m/") is m                  # normalized
    assert fs.listdir("/sys/fs/bpf") == ["m"]
    assert (m.refcnt, m.usercnt) == (2, 2)
    fs.unpin("/sys/fs/bpf/m")
    assert (m.refcnt, m.usercnt) == (1, 1)
    assert fs.listdir("/sys/fs/bpf") == []


def test_pin_errors(k, fs):
    m = new_map(k)
    fs.pin("/sys/fs/bpf/m", m)
    assert pin_errno(fs.pin, "/sys/fs/bpf/m", m) == errno.EEXIST        # bpf_obj_do_pin
    assert pin_errno(fs.pin, "/sys/fs/bpf", m) == errno.EEXIST          # the mount point
    assert pin_errno(fs.pin, "/sys/fs/bpf/nodir/x", m) == errno.ENOENT  # parent missing
    assert pin_errno(fs.pin, "/tmp/x", m) == errno.EPERM                # not on bpffs
    assert pin_errno(fs.pin, "/sys/fs/bpf/m/y", m) == errno.ENOTDIR     # through a pin
    assert pin_errno(fs.get, "/sys/fs/bpf/none") == errno.ENOENT
    assert pin_errno(fs.get, "/sys/fs/bpf") == errno.EACCES             # a directory
    assert pin_errno(fs.unpin, "/sys/fs/bpf/none") == errno.ENOENT
    assert pin_errno(fs.pin, "relative", m) == errno.EINVAL
    assert (m.refcnt, m.usercnt) == (2, 2)                              # failures take nothing


def test_directories(fs, k):
    fs.mkdir("/sys/fs/bpf/a/b")                                         # mkdir -p by default
    assert fs.listdir("/sys/fs/bpf") == ["a"]
    assert pin_errno(fs.mkdir, "/sys/fs/bpf/a", parents=False, exist_ok=False) == errno.EEXIST
    assert pin_errno(fs.mkdir, "/sys/fs/bpf/x/y", parents=False) == errno.ENOENT
    assert pin_errno(fs.mkdir, "/tmp/d") == errno.EPERM
    m = new_map(k)
    fs.pin("/sys/fs/bpf/a/b/m", m)
    assert pin_errno(fs.rmdir, "/sys/fs/bpf/a/b") == errno.ENOTEMPTY
    assert pin_errno(fs.unpin, "/sys/fs/bpf/a/b") == errno.EISDIR
    fs.unpin("/sys/fs/bpf/a/b/m")
    fs.rmdir("/sys/fs/bpf/a/b")
    assert fs.listdir("/sys/fs/bpf/a") == []
    assert pin_errno(fs.rmdir, "/sys/fs/bpf") == errno.EBUSY


def test_programs_are_pinned_by_refcnt(k, fs):
    p = BpfProg(k, "p", 6)
    fs.pin("/sys/fs/bpf/p", p)
    assert p.refcnt == 2
    assert fs.open("/sys/fs/bpf/p") is p and p.refcnt == 3
    p.put()
    fs.unpin("/sys/fs/bpf/p")
    p.put()
    assert p.freed


def test_open_takes_a_user_reference(k, fs):
    m = new_map(k)
    fs.pin(m, "/sys/fs/bpf/m")                                          # either order
    got = fs.open("/sys/fs/bpf/m")
    assert got is m and m.usercnt == 3
    fs.clear()
    assert m.usercnt == 2 and fs.pins() == {}


def test_other_mounts(k):
    fs = PinFS("/mnt/bpf")
    m = new_map(k)
    fs.pin("/mnt/bpf/m", m)
    assert pin_errno(fs.pin, "/sys/fs/bpf/m", m) == errno.EPERM
    fs.mount("/sys/fs/bpf")
    fs.pin("/sys/fs/bpf/m", m)
    assert sorted(fs.pins()) == ["/mnt/bpf/m", "/sys/fs/bpf/m"]


@pytest.mark.kernel
def test_pin_errors_match_kernel(k, fs):
    try:
        from bpfsim.kernel.probes import kernel_available
        ok, why = kernel_available()
    except ImportError:
        ok, why = os.geteuid() == 0 and os.path.isdir("/sys/fs/bpf"), "needs root and bpffs"
    if not ok:
        pytest.skip(f"kernel not available: {why}")
    from bpfsim.errors import KernelError
    from bpfsim.kernel import syscall as sc

    base = f"/sys/fs/bpf/bpfsim_pins_{uuid.uuid4().hex[:8]}"
    os.mkdir(base)
    fs.mkdir(base)
    fd = sc.map_create(1, 4, 4, 4, name="m")
    m = new_map(k)

    def kerr(fn, *a):
        try:
            fn(*a)
        except KernelError as e:
            return e.errno
        except OSError as e:
            return e.errno
        return 0

    try:
        cases = [
            ("pin", f"{base}/m"), ("pin", f"{base}/m"), ("pin", f"{base}/nodir/x"),
            ("pin", f"{base}/m/y"), ("get", f"{base}/none"), ("get", base),
            ("unpin", f"{base}/none"), ("pin", "/tmp/bpfsim_not_bpffs"),
        ]
        for op, path in cases:
            if op == "pin":
                want = kerr(sc.obj_pin, fd, path)
                got = pin_errno(fs.pin, path, m)
            elif op == "get":
                want = kerr(sc.obj_get, path)
                got = pin_errno(fs.get, path)
            else:
                want = kerr(os.unlink, path)
                got = pin_errno(fs.unpin, path)
            assert got == want, (op, path)
    finally:
        sc.close(fd)
        for name in os.listdir(base):
            os.unlink(os.path.join(base, name))
        os.rmdir(base)
