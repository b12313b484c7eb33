"""Map helpers: lookup/update/delete, push/pop/peek, per-CPU lookup, bpf_for_each_map_elem.

Job: resolve the CONST_PTR_TO_MAP register to the live map (the owner of the map's descriptor
region) and call its program-side operation (runtime/maps/: `prog_lookup(key_addr, cpu)`, ...),
which already returns an address or 0/-errno the way the kernel's map_ops do.
Must not import `kernel` or the VM engines.
"""

from __future__ import annotations

from typing import Any

from bpfsim.errors import MemoryFault
from bpfsim.runtime.helpers.registry import helper, u64
from bpfsim.uapi.constants import EINVAL


def map_of(env: Any, addr: int) -> Any:
    """The live map a CONST_PTR_TO_MAP value names (MemoryFault otherwise)."""
    found = env.mem.find(addr)
    if found is None or found[0].kind != "map" or found[1] != 0:
        raise MemoryFault(f"{addr:#x} is not a map pointer", address=addr)
    return found[0].owner


@helper("bpf_map_lookup_elem")
def bpf_map_lookup_elem(env, m, key, *_):
    return map_of(env, m).prog_lookup(key, env.cpu)


@helper("bpf_map_update_elem")
def bpf_map_update_elem(env, m, key, value, flags, _r5):
    return u64(map_of(env, m).prog_update(key, value, flags, env.cpu))


@helper("bpf_map_delete_elem")
def bpf_map_delete_elem(env, m, key, *_):
    return u64(map_of(env, m).prog_delete(key, env.cpu))


@helper("bpf_map_push_elem")
def bpf_map_push_elem(env, m, value, flags, *_):
    return u64(map_of(env, m).prog_push(value, flags, env.cpu))


@helper("bpf_map_pop_elem")
def bpf_map_pop_elem(env, m, value, *_):
    return u64(map_of(env, m).prog_pop(value, env.cpu))


@helper("bpf_map_peek_elem")
def bpf_map_peek_elem(env, m, value, *_):
    return u64(map_of(env, m).prog_peek(value, env.cpu))


@helper("bpf_map_lookup_percpu_elem")
def bpf_map_lookup_percpu_elem(env, m, key, cpu, *_):
    return map_of(env, m).prog_lookup_percpu(key, cpu & 0xFFFFFFFF)


@helper("bpf_for_each_map_elem")
def bpf_for_each_map_elem(env, m, callback_fn, callback_ctx, flags, _r5):
    # bpf_iter.c / the maps' map_for_each_callback: flags must be 0; the callback gets
    # (map, key, value, ctx) and a non-zero return stops the walk.
    if flags:
        return u64(-EINVAL)
    mp = map_of(env, m)
    return u64(mp.for_each(lambda k, v: env.call(callback_fn, m, k, v, callback_ctx), env.cpu))
