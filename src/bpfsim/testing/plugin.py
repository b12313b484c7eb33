"""The bpfsim pytest plugin (entry point `pytest11: bpfsim`): markers and fixtures.

Job: the `kernel` marker (skip with a reason where bpf(2) is unusable) and the fixtures
that let one test body run on the emulator and on the real kernel.
Must not be imported by any library layer (it sits at the top, beside `cli`).
"""

from __future__ import annotations

import os

import pytest


def _kernel_available() -> tuple[bool, str]:
    """Is bpf(2) usable here?  Falls back to a cheap check until kernel.probes exists."""
    try:
        from bpfsim.kernel.probes import kernel_available
    except ImportError:
        if os.geteuid() != 0:
            return False, "bpf(2) needs root (CAP_BPF)"
        if not os.path.isdir("/sys/fs/bpf"):
            return False, "bpffs is not mounted at /sys/fs/bpf"
        return True, ""
    return kernel_available()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kernel: needs bpf(2) on a real Linux kernel (root); skipped with a reason elsewhere")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is not None:
        ok, reason = _kernel_available()
        if not ok:
            pytest.skip(f"kernel backend unavailable: {reason}")
