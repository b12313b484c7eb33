"""BPF_MAP_TYPE_BLOOM_FILTER (kernel/bpf/bloom_filter.c).

Job: push a value (BPF_ANY only), peek it (0 = maybe present, -ENOENT = absent).  The kernel's
answer depends on jhash with a random seed, so its false positives are unpredictable; for such
maps this emulation keeps the exact set and never gives one (a program correct under the
contract "absent is certain, present is maybe" behaves the same).  With BPF_F_ZERO_SEED the
seed is 0 and the emulation is the kernel's bitset bit for bit, false positives included.
Must not import `kernel` or `vm` internals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bpfsim.errors import MapError
from bpfsim.runtime.maps.base import BPF_F_ACCESS_MASK, EOPNOTSUPP, MapBase, einval, flags_access_ok
from bpfsim.runtime.maps.jhash import htab_hash
from bpfsim.uapi.constants import BPF_ANY, BPF_F_NUMA_NODE, BPF_F_ZERO_SEED, ENOENT

if TYPE_CHECKING:
    from bpfsim.spec.collection import MapSpec

BLOOM_CREATE_FLAG_MASK = BPF_F_NUMA_NODE | BPF_F_ZERO_SEED | BPF_F_ACCESS_MASK


class BloomFilterMap(MapBase):
    iterable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set: set[bytes] = set()
        self.nr_hash_funcs = (self.map_extra & 0xF) or 5
        self._bits: set[int] | None = None
        if self.map_flags & BPF_F_ZERO_SEED:
            # bloom_map_alloc: n * k * 7 / 5 bits, rounded up to a power of 2 (>= 64)
            nr_bits = self.max_entries * self.nr_hash_funcs
            nr_bits = nr_bits // 5 * 7
            if nr_bits > 1 << 31:
                self._mask = 0xFFFFFFFF
            else:
                nr_bits = 64 if nr_bits <= 64 else 1 << (nr_bits - 1).bit_length()
                self._mask = nr_bits - 1
            self._bits = set()

    def _hashes(self, value: bytes) -> list[int]:
        """bloom_filter.c: hash(): jhash2/jhash with seed + index, masked."""
        return [htab_hash(value, i) & self._mask for i in range(self.nr_hash_funcs)]

    def _add(self, value: bytes) -> None:
        if self._bits is not None:
            self._bits.update(self._hashes(value))
        else:
            self._set.add(value)

    def _has(self, value: bytes) -> bool:
        if self._bits is not None:
            return all(h in self._bits for h in self._hashes(value))
        return value in self._set

    @classmethod
    def alloc_check(cls, spec: MapSpec, ncpus: int) -> None:
        """bloom_map_alloc_check / bloom_map_alloc."""
        if (spec.key_size != 0 or spec.value_size == 0 or spec.max_entries == 0
                or spec.flags & ~BLOOM_CREATE_FLAG_MASK or not flags_access_ok(spec.flags)
                or spec.map_extra & ~0xF):
            raise einval("bloom filters need key_size 0, value_size > 0, max_entries > 0, map_extra <= 15")

    def push(self, value: bytes, flags: int = 0) -> None:
        if flags != BPF_ANY:
            raise einval("bloom filter push takes BPF_ANY only")
        self._add(bytes(value))

    def contains(self, value: bytes) -> bool:
        """BPF_MAP_LOOKUP_ELEM with the value as input: True = maybe present."""
        self._can(False)
        return self._has(bytes(value))

    def _sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        self.push(value, flags)

    def _sys_lookup(self, key: bytes, flags: int) -> bytes:
        raise einval("a bloom filter lookup takes the value: use contains(value)")

    def _sys_delete(self, key: bytes) -> None:
        raise MapError("bloom filters have no delete", EOPNOTSUPP)

    def _next_key(self, key: bytes | None) -> bytes | None:
        raise MapError("bloom filters have no keys", EOPNOTSUPP)

    def prog_push(self, value_addr: int, flags: int, cpu: int = 0) -> int:
        try:
            self.push(self._read_value(value_addr), flags)
        except MapError as e:
            return -e.errno
        return 0

    def prog_peek(self, value_addr: int, cpu: int = 0) -> int:
        return 0 if self._has(self._read_value(value_addr)) else -ENOENT
