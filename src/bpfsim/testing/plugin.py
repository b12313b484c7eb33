"""The bpfsim pytest plugin (entry point `pytest11: bpfsim`): markers and fixtures.

Job: let one test body run on the emulator and on the real kernel.
* marker `kernel`: the test needs bpf(2); it is skipped, with the reason from
  `bpfsim.kernel.probes.kernel_available()`, where the kernel cannot be used.
* fixture `backend`: parametrised over "sim" and "kernel" (the kernel case carries the
  `kernel` marker); a `Backend` that loads objects (`backend(path_or_spec)`), lets time pass
  (`backend.sleep(ns)`: a virtual advance on the emulator, a real sleep on the kernel), and
  reaches pins (`get_pinned`, `unpin`, `pin_dir`).  Everything it loaded is closed and every
  pin under its `pin_dir` removed when the test ends.
* fixture `bpf_pin_root`: a per-run directory under /sys/fs/bpf, removed at the end;
  `bpf_pin_dir` a fresh subdirectory of it per test.
* fixture `bpf_timer_sleep`: `sleep(ns)` for the current backend.
Must not be imported by any library layer (it sits at the top, beside `cli`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bpfsim.kernel.bpffs import remove_tree

BPFFS = "/sys/fs/bpf"
# After a real sleep, let the kernel's softirq run timers that fell due at its very end.
REAL_TIME_SLACK_NS = 5_000_000
BACKENDS = ("sim", "kernel")


def _kernel_available() -> tuple[bool, str]:
    from bpfsim.kernel.probes import kernel_available

    return kernel_available()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kernel: needs bpf(2) on a real Linux kernel (root); skipped with a reason elsewhere")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is not None:
        ok, reason = _kernel_available()
        if not ok:
            pytest.skip(f"kernel backend unavailable: {reason}")


# -- pin directories ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def bpf_pin_root() -> Iterator[str]:
    """/sys/fs/bpf/bpfsim-test-<pid>: created for the run (when bpffs is there), removed after.
    The emulator's pin namespace accepts the same paths."""
    path = f"{BPFFS}/bpfsim-test-{os.getpid()}"
    made = False
    if os.path.isdir(BPFFS) and os.access(BPFFS, os.W_OK):
        with contextlib.suppress(OSError):
            os.mkdir(path)
            made = True
    yield path
    if made:
        remove_tree(path)


@pytest.fixture
def bpf_pin_dir(bpf_pin_root: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh directory per test under `bpf_pin_root` (on the real bpffs when it exists)."""
    # bpffs refuses names with a dot (inode.c: bpf_lookup, "." is kept for its own files).
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in request.node.name)[:100]
    path = f"{bpf_pin_root}/{safe}"
    if os.path.isdir(bpf_pin_root):
        with contextlib.suppress(OSError):
            os.mkdir(path)
    yield path
    remove_tree(path)


# -- backends ----------------------------------------------------------------------------------


class Backend:
    """One backend for one test: `backend(obj, pin_root=None)` loads, `sleep(ns)` lets time pass.

    `rt` is the emulator's `Runtime` (name "sim") or a `bpfsim.kernel.Kernel` (name "kernel");
    both have `load`, `get_pinned`, `unpin`, `clock.now()`, `ncpus`, `trace_pipe`.
    """

    def __init__(self, name: str, pin_dir: str, clock: str = "virtual") -> None:
        self.name = name
        self.pin_dir = pin_dir
        self._loaded: list[Any] = []
        self._handles: list[Any] = []
        if name == "sim":
            import bpfsim

            self.rt = bpfsim.Runtime(clock=clock)
            self.virtual = clock == "virtual"
            mkdir = getattr(self.rt, "mkdir", None)
            if mkdir is not None:
                with contextlib.suppress(Exception):
                    mkdir(pin_dir)
        elif name == "kernel":
            from bpfsim.kernel import Kernel

            self.rt = Kernel(trace=True)
            self.virtual = False
        else:
            raise ValueError(f"unknown backend {name!r} (expected one of {BACKENDS})")

    @property
    def is_kernel(self) -> bool:
        return self.name == "kernel"

    @property
    def clock(self) -> Any:
        return self.rt.clock

    @property
    def ncpus(self) -> int:
        return self.rt.ncpus

    def load(self, obj: Any, pin_root: str | None = None, **kw: Any) -> Any:
        """Load a path or CollectionSpec; `pin_root` defaults to this test's pin directory, so
        LIBBPF_PIN_BY_NAME maps never land in the real /sys/fs/bpf."""
        coll = self.rt.load(obj, pin_root=pin_root if pin_root is not None else self.pin_dir, **kw)
        self._loaded.append(coll)
        return coll

    __call__ = load

    def sleep(self, ns: int) -> None:
        """Let `ns` of time pass: a virtual advance (firing due timers) on the emulator's
        virtual clock, a real sleep plus a little slack for the kernel's softirq otherwise."""
        if self.virtual:
            self.rt.clock.advance(ns)
        else:
            time.sleep((ns + REAL_TIME_SLACK_NS) / 1e9)

    def get_pinned(self, path: str) -> Any:
        h = self.rt.get_pinned(path)
        self._handles.append(h)
        return h

    def unpin(self, path: str) -> None:
        self.rt.unpin(path)

    @property
    def trace_pipe(self) -> list[str]:
        """bpf_printk lines so far (the kernel's: only those since this backend was made)."""
        return self.rt.trace_pipe

    def path(self, name: str) -> str:
        """A path for a pin inside this test's pin directory."""
        return f"{self.pin_dir}/{name}"

    def close(self) -> None:
        for h in self._handles:
            with contextlib.suppress(Exception):
                h.close()
        for coll in self._loaded:
            with contextlib.suppress(Exception):
                coll.close()
        self._handles.clear()
        self._loaded.clear()
        with contextlib.suppress(Exception):
            self.rt.close()

    def __repr__(self) -> str:
        return f"<Backend {self.name}>"


@pytest.fixture(params=[pytest.param("sim", id="sim"),
                        pytest.param("kernel", id="kernel", marks=pytest.mark.kernel)])
def backend(request: pytest.FixtureRequest, bpf_pin_dir: str) -> Iterator[Backend]:
    """The same test body on the emulator and on the real kernel (see `Backend`)."""
    b = Backend(request.param, bpf_pin_dir)
    try:
        yield b
    finally:
        b.close()
        if b.name == "kernel":
            remove_tree(bpf_pin_dir)
            with contextlib.suppress(OSError):
                os.mkdir(bpf_pin_dir)  # bpf_pin_dir's own teardown removes it again


@pytest.fixture
def bpf_timer_sleep(backend: Backend):
    """`sleep(ns)` on the current backend: virtual time on the emulator, real time on the kernel."""
    return backend.sleep


@pytest.fixture
def kernel_backend(bpf_pin_dir: str) -> Iterator[Backend]:
    """Only the kernel (mark the test `kernel`)."""
    b = Backend("kernel", bpf_pin_dir)
    try:
        yield b
    finally:
        b.close()
