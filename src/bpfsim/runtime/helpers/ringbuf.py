"""Ring buffer helpers (kernel/bpf/ringbuf.c): output, reserve, submit, discard, query.

Job: argument checks of the helpers around the ring buffer map (runtime/maps/ringbuf.py),
which owns the records and positions.  Must not import `kernel` or the VM engines.
"""

from __future__ import annotations

from typing import Any

from bpfsim.errors import MemoryFault
from bpfsim.runtime.helpers.maps import map_of
from bpfsim.runtime.helpers.registry import helper, u64
from bpfsim.runtime.kobject import live_objects
from bpfsim.uapi.constants import MapType


def _ringbuf(env: Any, addr: int) -> Any:
    mp = map_of(env, addr)
    if mp.map_type != MapType.RINGBUF:
        raise MemoryFault(f"{addr:#x} is not a ring buffer map", address=addr)
    return mp


def _owner_of_record(env: Any, sample: int) -> Any:
    """The ring buffer a reserved sample belongs to (the kernel finds it from the record
    header in front of the sample: bpf_ringbuf_restore_from_rec)."""
    found = env.mem.find(sample)
    if found is not None and found[0].kind == "ringbuf":
        rid = found[0].rid
        for mp in live_objects(env.program.kernel, "map"):
            if getattr(mp, "map_type", None) == MapType.RINGBUF and rid in getattr(mp, "_by_rid", {}):
                return mp
    raise MemoryFault(f"{sample:#x} is not a reserved ring buffer sample", address=sample)


@helper("bpf_ringbuf_output")
def bpf_ringbuf_output(env, rb, data, size, flags, _r5):
    return u64(_ringbuf(env, rb).prog_output(data, size & 0xFFFFFFFF, flags, env.cpu))


@helper("bpf_ringbuf_reserve")
def bpf_ringbuf_reserve(env, rb, size, flags, *_):
    mp = _ringbuf(env, rb)
    if flags:                       # bpf_ringbuf_reserve: any flag -> NULL
        return 0
    return mp.reserve(size & 0xFFFFFFFFFFFFFFFF)


def _commit(env, sample, flags, discard: bool) -> int:
    # bpf_ringbuf_commit ignores unknown flag bits; RET_VOID.
    mp = _owner_of_record(env, sample)
    if mp.commit(sample, discard):
        raise MemoryFault(f"{sample:#x}: ring buffer sample submitted twice", address=sample)
    return 0


@helper("bpf_ringbuf_submit")
def bpf_ringbuf_submit(env, sample, flags, *_):
    return _commit(env, sample, flags, False)


@helper("bpf_ringbuf_discard")
def bpf_ringbuf_discard(env, sample, flags, *_):
    return _commit(env, sample, flags, True)


@helper("bpf_ringbuf_query")
def bpf_ringbuf_query(env, rb, flags, *_):
    return u64(_ringbuf(env, rb).query(flags))

