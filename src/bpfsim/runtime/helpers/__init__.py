"""The helpers the emulated kernel offers, as one table `{id: fn(env, r1..r5)}` for the VM.

Job: import every helper module (each registers itself in `registry.HELPERS`) and give the VM
a complete table: a helper bpfsim does not implement raises NotSupported naming it, never a
silent wrong value.  Must not import `kernel`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from bpfsim.errors import NotSupported
from bpfsim.runtime.helpers import core, maps, net, printk, timer  # noqa: F401  (registration)
from bpfsim.runtime.helpers.registry import HELPERS, helper
from bpfsim.uapi.helper_ids import HELPER_IDS
from bpfsim.vm.env import Helper

with contextlib.suppress(ImportError):  # the ring buffer helpers need the maps' ring buffer
    from bpfsim.runtime.helpers import ringbuf  # noqa: F401

__all__ = ["HELPERS", "helper", "helper_table", "implemented"]


def _missing(name: str, hid: int) -> Helper:
    def not_implemented(env, *_args) -> int:
        raise NotSupported(f"helper {name} (#{hid})", detail="not implemented by the bpfsim runtime")

    not_implemented.__name__ = name
    return not_implemented


def helper_table() -> dict[int, Helper]:
    """Every helper id of Linux 6.18: the implementation, or a stub raising NotSupported."""
    table: dict[int, Callable[..., int]] = {hid: _missing(name, hid) for name, hid in HELPER_IDS.items()}
    table.update(HELPERS)
    return table


def implemented() -> list[str]:
    """Names of the helpers bpfsim implements."""
    names = {v: k for k, v in HELPER_IDS.items()}
    return sorted(names[h] for h in HELPERS)
