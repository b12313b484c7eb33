"""`KernelProgram`: a loaded program in the real kernel (one fd), run with BPF_PROG_TEST_RUN.

Job: the emulator `Program`'s user interface -- `test_run(data=, ctx=, repeat=)` returning the
same result type, `pin`, `close`, `fd`, `id` -- for a kernel program.
Must not call bpf(2) itself (only `kernel.syscall` does).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from bpfsim.errors import KernelError, PinError, UsageError
from bpfsim.kernel import syscall as sc
from bpfsim.uapi.constants import ProgType

# Types whose test_run moves a packet (data_out is meaningful); others report data as None,
# like the emulator's TestRunResult.
_PACKET_TYPES = frozenset({ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT,
                           ProgType.CGROUP_SKB, ProgType.LWT_IN, ProgType.LWT_OUT, ProgType.LWT_XMIT,
                           ProgType.LWT_SEG6LOCAL, ProgType.XDP, ProgType.FLOW_DISSECTOR})


# Types whose test_run takes no repeat and no ctx_out (test_run.c: syscall, raw_tp).
_NO_REPEAT_TYPES = frozenset({ProgType.SYSCALL, ProgType.RAW_TRACEPOINT,
                              ProgType.RAW_TRACEPOINT_WRITABLE})
_NO_CTX_OUT_TYPES = frozenset({ProgType.RAW_TRACEPOINT, ProgType.RAW_TRACEPOINT_WRITABLE})


def _ctx_bytes(prog_type: int, ctx: bytes | dict | None) -> bytes | None:
    """ctx as bytes, or a dict of `struct xdp_md` / `struct __sk_buff` fields packed with the
    emulator's layouts (runtime/contexts.py) so both backends take the same arguments."""
    if ctx is None or isinstance(ctx, (bytes, bytearray)):
        return bytes(ctx) if ctx is not None else None
    if not isinstance(ctx, dict):
        raise UsageError(f"ctx must be bytes or a dict, not {type(ctx).__name__}")
    from bpfsim.runtime import contexts as c

    if prog_type == ProgType.XDP:
        return c.ctx_from_fields(ctx, c.XDP_FIELDS, c.XDP_MD_SIZE, "xdp_md")
    if prog_type in _PACKET_TYPES:
        return c.ctx_from_fields(ctx, c.SKB_FIELDS, c.SKB_SIZE, "__sk_buff")
    raise UsageError(f"ctx as a dict is not defined for {ProgType(prog_type).name} programs; give bytes")


def _type_name(t: int) -> str:
    return ProgType(t).name.lower() if t in ProgType._value2member_map_ else str(t)


class KernelProgram:
    """A program the kernel accepted.  `spec` is the ProgramSpec it was loaded from (or None
    for a handle from `get_pinned`)."""

    def __init__(self, fd: int, *, name: str, prog_type: int, spec: Any = None,
                 verifier_log: str = "") -> None:
        self.fd = fd
        self.name = name
        self.type = prog_type
        self.spec = spec
        self.verifier_log = verifier_log

    @classmethod
    def from_fd(cls, fd: int, name: str | None = None) -> KernelProgram:
        info = sc.prog_get_info(fd)
        return cls(fd, name=name if name is not None else info.name, prog_type=info.type)

    def _fd(self) -> int:
        if self.fd < 0:
            raise UsageError(f"program '{self.name}' handle is closed")
        return self.fd

    @property
    def closed(self) -> bool:
        return self.fd < 0

    @property
    def id(self) -> int:
        return sc.prog_get_info(self._fd()).id

    @property
    def info(self) -> dict[str, Any]:
        """BPF_OBJ_GET_INFO_BY_FD, with the emulator Program.info's keys (plus the kernel's
        xlated/jited lengths and verified insns)."""
        i = sc.prog_get_info(self._fd())
        return {"id": i.id, "name": i.name, "type": _type_name(i.type), "tag": i.tag.hex(),
                "insns": i.xlated_prog_len // 8, "map_ids": i.map_ids,
                "gpl_compatible": i.gpl_compatible, "run_cnt": i.run_cnt,
                "xlated_prog_len": i.xlated_prog_len, "jited_prog_len": i.jited_prog_len,
                "verified_insns": i.verified_insns}

    @property
    def type_name(self) -> str:
        return _type_name(self.type)

    def __repr__(self) -> str:
        if self.fd < 0:
            return "<KernelProgram (closed)>"
        return f"<KernelProgram '{self.name}' fd={self.fd} {self.type_name}>"

    def test_run(self, data: bytes | None = None, ctx: bytes | dict | None = None, repeat: int = 1,
                 cpu: int = 0, flags: int = 0, *, data_size_out: int | None = None) -> Any:
        """BPF_PROG_TEST_RUN, with the emulator Program.test_run's arguments.  `ctx` may be
        bytes or a dict of context fields (packed with the emulator's layouts).  `cpu` is
        passed to the kernel, which uses it only with BPF_F_TEST_RUN_ON_CPU in `flags`.
        Returns the emulator's TestRunResult; `duration_ns` is the kernel's average per
        repetition, `r0` only the low 32 bits (all the kernel reports), `insns` 0 (unknown)."""
        if repeat < 0:
            raise UsageError("repeat must be >= 0")
        ctx_in = _ctx_bytes(self.type, ctx)
        if self.type in _NO_REPEAT_TYPES and repeat == 1:
            # test_run.c: bpf_prog_test_run_syscall/_raw_tp refuse any repeat; 0 and 1 both
            # mean "once", as in the emulator (the Python default is 1).
            repeat = 0
        start = time.perf_counter_ns()
        # The kernel runs the program on the calling thread's CPU (BPF_F_TEST_RUN_ON_CPU is for
        # raw_tp only): pin the thread to `cpu` so per-CPU maps see the CPU the emulator uses.
        saved = _pin_thread(cpu)
        try:
            r = sc.prog_test_run(self._fd(), bytes(data or b""), ctx=ctx_in, repeat=repeat,
                                 flags=flags, cpu=cpu, data_size_out=data_size_out,
                                 ctx_size_out=0 if self.type in _NO_REPEAT_TYPES else None,
                                 ctx_in_place=self.type == ProgType.SYSCALL)
        except KernelError as e:
            raise KernelError(e.command, e.errno, f"program '{self.name}'") from None
        finally:
            _unpin_thread(saved)
        wall = (time.perf_counter_ns() - start) // max(repeat, 1)
        from bpfsim.runtime.testrun import TestRunResult

        ctx_out = r.ctx if ctx_in and self.type not in _NO_CTX_OUT_TYPES else None
        return TestRunResult(retval=r.retval, data=r.data if self.type in _PACKET_TYPES else None,
                             ctx=ctx_out, duration_ns=r.duration_ns,
                             r0=r.retval, insns=0, wall_ns=wall, repeat=max(repeat, 1))

    def pin(self, path: str) -> None:
        try:
            sc.obj_pin(self._fd(), path)
        except KernelError as e:
            raise PinError(f"pin program '{self.name}' at {path}: {e}") from None

    def close(self) -> None:
        if self.fd >= 0:
            sc.close(self.fd)
            self.fd = -1

    def __enter__(self) -> KernelProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _pin_thread(cpu: int) -> set[int] | None:
    """Move the calling thread to `cpu`; returns the previous affinity (None if unchanged)."""
    try:
        saved = os.sched_getaffinity(0)
        if saved != {cpu}:
            os.sched_setaffinity(0, {cpu})
            return saved
    except (OSError, AttributeError):
        pass
    return None


def _unpin_thread(saved: set[int] | None) -> None:
    if saved is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, saved)
