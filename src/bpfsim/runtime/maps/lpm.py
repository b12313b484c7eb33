"""BPF_MAP_TYPE_LPM_TRIE (kernel/bpf/lpm_trie.c): longest-prefix-match keyed values.

Job: keys are `struct bpf_lpm_trie_key_u8 { u32 prefixlen; u8 data[]; }`.  update/delete match
a prefix exactly (only the first `prefixlen` bits count); lookup returns the longest stored
prefix covering the key's first `prefixlen` bits.  A full trie refuses new prefixes with
-ENOSPC; a prefixlen above data_size*8 is -EINVAL.  get_next_key walks the trie in the
kernel's post-order (more specific prefixes before the prefix containing them, the 0 branch
before the 1 branch).  Every insert (also a replacement) allocates a new node, like the
kernel, whose old node is freed after RCU.
Must not import `kernel` or `vm` internals.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from bpfsim.errors import MapError
from bpfsim.runtime.maps.base import (
    BPF_F_ACCESS_MASK,
    KMALLOC_MAX_SIZE,
    Element,
    MapBase,
    einval,
    flags_access_ok,
)
from bpfsim.uapi.constants import (
    BPF_EXIST,
    BPF_F_NO_PREALLOC,
    BPF_F_NUMA_NODE,
    BPF_NOEXIST,
    EEXIST,
    ENOENT,
    ENOSPC,
    MAX_BPF_STACK,
)

if TYPE_CHECKING:
    from bpfsim.spec.collection import MapSpec

LPM_DATA_SIZE_MAX = 256
LPM_KEY_SIZE_MIN = 4 + 1
LPM_KEY_SIZE_MAX = 4 + LPM_DATA_SIZE_MAX
LPM_TRIE_NODE_SIZE = 32
LPM_VAL_SIZE_MAX = KMALLOC_MAX_SIZE - MAX_BPF_STACK - LPM_TRIE_NODE_SIZE - LPM_DATA_SIZE_MAX
LPM_CREATE_FLAG_MASK = BPF_F_NO_PREALLOC | BPF_F_NUMA_NODE | BPF_F_ACCESS_MASK
_U32 = struct.Struct("<I")


def _bits(data: bytes, n: int) -> str:
    """The first n bits of data, most significant bit of each byte first (network order)."""
    return "".join(f"{b:08b}" for b in data)[:n]


class LpmTrieMap(MapBase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_size = self.key_size - 4
        self.max_prefixlen = self.data_size * 8
        self._nodes: dict[str, Element] = {}     # prefix bit string -> element

    @classmethod
    def alloc_check(cls, spec: MapSpec, ncpus: int) -> None:
        """lpm_trie.c: trie_alloc."""
        if (spec.max_entries == 0 or not spec.flags & BPF_F_NO_PREALLOC
                or spec.flags & ~LPM_CREATE_FLAG_MASK or not flags_access_ok(spec.flags)
                or not LPM_KEY_SIZE_MIN <= spec.key_size <= LPM_KEY_SIZE_MAX
                or not 1 <= spec.value_size <= LPM_VAL_SIZE_MAX):
            raise einval("LPM tries need BPF_F_NO_PREALLOC, key_size 5..260 and value_size > 0")

    def __len__(self) -> int:
        return len(self._nodes)

    def _split(self, key: bytes) -> tuple[int, bytes]:
        return _U32.unpack_from(key)[0], key[4:]

    def _match(self, key: bytes) -> Element | None:
        """trie_lookup_elem: the longest stored prefix covering the key."""
        plen, data = self._split(key)
        bits = _bits(data, min(plen, self.max_prefixlen))
        for n in range(len(bits), -1, -1):
            e = self._nodes.get(bits[:n])
            if e is not None:
                return e
        return None

    def elements(self) -> list[Element]:
        return list(self._nodes.values())

    def _drop_storage(self) -> None:
        self._nodes.clear()

    # -- core -----------------------------------------------------------------------------------
    def _update(self, key: bytes, value: bytes, flags: int) -> None:
        """trie_update_elem."""
        if flags > BPF_EXIST:
            raise einval(f"bad update flags {flags:#x}")
        plen, data = self._split(key)
        if plen > self.max_prefixlen:
            raise einval(f"prefixlen {plen} > {self.max_prefixlen}")
        bits = _bits(data, plen)
        with self.lock:
            old = self._nodes.get(bits)
            if old is None and len(self._nodes) >= self.max_entries:
                raise MapError(f"LPM trie '{self.name}' is full", ENOSPC)
            if old is not None and flags == BPF_NOEXIST:
                raise MapError("prefix already exists (BPF_NOEXIST)", EEXIST)
            if old is None and flags == BPF_EXIST:
                raise MapError("prefix does not exist (BPF_EXIST)", ENOENT)
            e = Element(self)
            e.key = bytes(key)
            e.write(value)
            self._nodes[bits] = e
            if old is not None:
                self.free_fields(old)
                self.retire(old)

    def _delete(self, key: bytes) -> None:
        """trie_delete_elem: exact prefix match."""
        plen, data = self._split(key)
        if plen > self.max_prefixlen:
            raise self._not_found(key)
        with self.lock:
            e = self._nodes.pop(_bits(data, plen), None)
        if e is None:
            raise self._not_found(key)
        self.free_fields(e)
        self.retire(e)

    # -- syscall side ---------------------------------------------------------------------------
    def _sys_lookup(self, key: bytes, flags: int) -> bytes:
        e = self._match(key)
        if e is None:
            raise self._not_found(key)
        return self.record.copy_out(e.read())

    def _sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        self._update(key, value, flags)

    def _sys_delete(self, key: bytes) -> None:
        self._delete(key)

    def _order(self) -> list[str]:
        # post-order of the binary trie: a longer prefix sorts before its ancestor ("2" > bits)
        return sorted(self._nodes, key=lambda b: b + "2")

    def _next_key(self, key: bytes | None) -> bytes | None:
        """trie_get_next_key."""
        with self.lock:
            order = self._order()
            if not order:
                return None
            if key is not None:
                plen, data = self._split(key)
                bits = _bits(data, plen) if plen <= self.max_prefixlen else None
                if bits in self._nodes:
                    i = order.index(bits)
                    return self._nodes[order[i + 1]].key if i + 1 < len(order) else None
            return self._nodes[order[0]].key

    # -- program side ---------------------------------------------------------------------------
    def prog_lookup(self, key_addr: int, cpu: int = 0) -> int:
        e = self._match(self._read_key(key_addr))
        return 0 if e is None else e.value_addr()

    def prog_update(self, key_addr: int, value_addr: int, flags: int, cpu: int = 0) -> int:
        try:
            self._update(self._read_key(key_addr), self._read_value(value_addr), flags)
        except MapError as e:
            return -e.errno
        return 0

    def prog_delete(self, key_addr: int, cpu: int = 0) -> int:
        try:
            self._delete(self._read_key(key_addr))
        except KeyError:
            return -ENOENT
        return 0
