"""The running machine's kernel BTF (/sys/kernel/btf/vmlinux), parsed once per process.

Job: the target BTF libbpf relocates CO-RE records against (libbpf.c:
bpf_object__load_vmlinux_btf) and resolves kfuncs and attach targets in -- for the emulator's
loader and the kernel backend alike.  Must not import `kernel` (the real backend).
"""

from __future__ import annotations

from typing import Any

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
_cache: dict[str, Any] = {}


def kernel_btf(path: str = VMLINUX_BTF) -> Any:
    """The parsed BTF (about a second the first time), or None when the machine has none."""
    if path not in _cache:
        from bpfsim.btf import Btf

        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            _cache[path] = e
        else:
            _cache[path] = Btf.parse(data)
    got = _cache[path]
    return None if isinstance(got, OSError) else got


def kernel_btf_error(path: str = VMLINUX_BTF) -> str:
    """Why `kernel_btf` gave None ("" when it did not)."""
    kernel_btf(path)
    got = _cache[path]
    return got.strerror or str(got) if isinstance(got, OSError) else ""
