"""Map helpers driven by real programs: the emulator against Linux 6.18, operation for operation.

tests/runtime/maps_fixtures/map_ops.bpf.o has one SEC("syscall") program per map that applies
ctx->op (update ANY/NOEXIST/EXIST, lookup, delete) to ctx->key and reports the helper's
result.  The same random (CPU, op, key) sequence runs through `bpfsim.Runtime` and through the
kernel (process pinned to the CPU); every return value and the surviving keys must agree —
for LRU maps this exercises ref bits set by program lookups, the rotation and the steal.
"""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pytest

import bpfsim

OBJ = Path(__file__).parent / "maps_fixtures" / "map_ops.bpf.o"
MAPS = ("lru", "lru_pcl", "hash", "hash_np", "arr", "phash", "lru_ph", "parr")


def _args(op: int, key: int) -> bytes:
    return struct.pack("<IIq", op, key, 0)


def _ret(ctx: bytes) -> int:
    return struct.unpack("<IIq", ctx)[2]


def _ops(seed: int, n: int = 400) -> list[tuple[int, int, int]]:
    rnd = random.Random(seed)
    return [(rnd.randrange(2), rnd.choice((0, 0, 1, 1, 1, 2, 3, 4, 5)), rnd.randrange(40))
            for _ in range(n)]


def test_emulator_program_ops():
    """Without a kernel: the helpers' return values follow the map rules."""
    with bpfsim.Runtime() as rt:
        c = rt.load(str(OBJ))
        run = c.programs["op_hash"].test_run
        assert _ret(run(ctx=_args(1, 3)).ctx) == -1                    # lookup miss
        assert _ret(run(ctx=_args(4, 3)).ctx) == -2                    # EXIST on a missing key
        assert _ret(run(ctx=_args(0, 3)).ctx) == 0
        assert _ret(run(ctx=_args(3, 3)).ctx) == -17                   # NOEXIST on a present key
        assert _ret(run(ctx=_args(1, 3)).ctx) == 3
        for key in range(4, 19):
            run(ctx=_args(0, key))
        assert _ret(run(ctx=_args(0, 99)).ctx) == -7                   # full: -E2BIG
        assert _ret(run(ctx=_args(2, 99)).ctx) == -2
        arr = c.programs["op_arr"].test_run
        assert _ret(arr(ctx=_args(2, 0)).ctx) == -22                   # arrays: no delete
        assert _ret(arr(ctx=_args(3, 0)).ctx) == -17
        assert _ret(arr(ctx=_args(0, 16)).ctx) == -7
        assert c.maps["hash"][3] == 3
        for name in ("hash", "hash_np", "lru"):
            run = c.programs[f"op_{name}"].test_run
            run(ctx=_args(2, 4))                                        # make room
            assert _ret(run(ctx=_args(0, 30)).ctx) == 0
            assert _ret(run(ctx=_args(5, 30)).ctx) == 30                  # stale read still works
            assert 30 not in c.maps[name]


def _kernel_syscall_run(prog, ctx: bytes) -> bytes:
    """BPF_PROG_TEST_RUN of a SYSCALL program: ctx_in only, repeat 0 (test_run.c:
    bpf_prog_test_run_syscall refuses ctx_out, repeat and flags); the kernel writes the ctx
    back into ctx_in."""
    import ctypes

    from bpfsim.kernel import syscall as ksc
    from bpfsim.uapi.constants import Cmd

    buf = (ctypes.c_char * len(ctx)).from_buffer_copy(ctx)
    attr = ksc.TestRunAttr(prog_fd=prog.fd, ctx_size_in=len(ctx), ctx_in=ctypes.addressof(buf))
    ksc.bpf(Cmd.PROG_TEST_RUN, attr)
    return bytes(buf)


def _kernel_ok() -> tuple[bool, str]:
    try:
        from bpfsim.kernel.probes import kernel_available
    except ImportError:
        return False, "no kernel backend"
    return kernel_available()


@pytest.mark.kernel
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_program_ops_match_kernel(seed):
    ok, why = _kernel_ok()
    if not ok:
        pytest.skip(f"kernel not available: {why}")
    if os.cpu_count() != 2:
        pytest.skip("calibrated for a 2-CPU machine")
    import bpfsim.kernel

    ops = _ops(seed)
    old = os.sched_getaffinity(0)
    kc = bpfsim.kernel.load(str(OBJ))
    try:
        with bpfsim.Runtime() as rt:
            sc = rt.load(str(OBJ))
            for name in MAPS:
                kp, sp = kc.programs[f"op_{name}"], sc.programs[f"op_{name}"]
                for i, (cpu, op, key) in enumerate(ops):
                    os.sched_setaffinity(0, {cpu})
                    want = _ret(_kernel_syscall_run(kp, _args(op, key)))
                    rt.cpu = cpu               # syscall programs run on the current CPU
                    got = _ret(sp.test_run(ctx=_args(op, key)).ctx)
                    assert got == want, (name, i, cpu, op, key)
                # the whole user-space view: keys and every CPU's value
                assert dict(sc.maps[name].raw.items()) == dict(kc.maps[name].raw.items()), name
    finally:
        os.sched_setaffinity(0, old)
        kc.close()


RB_OBJ = Path(__file__).parent / "maps_fixtures" / "ringbuf_ops.bpf.o"
RB_SIZES = (1, 8, 100, 1000, 2000, 4000, 4088)


def _rb_args(op: int, size: int, tag: int) -> bytes:
    return struct.pack("<IIIIq", op, size, tag, 0, 0)


def _rb_ret(ctx: bytes) -> int:
    return struct.unpack("<IIIIq", ctx)[4]


@pytest.mark.kernel
@pytest.mark.parametrize("seed", [1, 2])
def test_ringbuf_ops_match_kernel(seed):
    """Reserve/submit/discard/output/query and user-space draining: which reservations fit,
    what the positions are, and which records come out, like ringbuf.c on 6.18."""
    ok, why = _kernel_ok()
    if not ok:
        pytest.skip(f"kernel not available: {why}")
    import bpfsim.kernel

    rnd = random.Random(seed)
    kc = bpfsim.kernel.load(str(RB_OBJ))
    try:
        with bpfsim.Runtime() as rt:
            sc = rt.load(str(RB_OBJ))
            kp, sp = kc.programs["rb_op"], sc.programs["rb_op"]
            for i in range(300):
                r = rnd.random()
                if r < 0.1:
                    assert sc.maps["rb"].drain() == kc.maps["rb"].drain(), i
                    continue
                if r < 0.2:
                    op, size = 3, rnd.randrange(4)
                elif r < 0.35:
                    op, size = 2, rnd.randrange(70)
                else:
                    op, size = rnd.choice((0, 0, 0, 1)), rnd.choice(RB_SIZES)
                ctx = _rb_args(op, size, i & 0xFF)
                want = _rb_ret(_kernel_syscall_run(kp, ctx))
                got = _rb_ret(sp.test_run(ctx=ctx).ctx)
                assert got == want, (i, op, size)
            assert sc.maps["rb"].drain() == kc.maps["rb"].drain()
    finally:
        kc.close()
