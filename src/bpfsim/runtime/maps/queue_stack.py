"""BPF_MAP_TYPE_QUEUE and BPF_MAP_TYPE_STACK (kernel/bpf/queue_stack_maps.c).

Job: bounded FIFO / LIFO of values without keys.  push with BPF_EXIST on a full map drops the
*oldest* value (for a stack too); pop/peek of an empty map is -ENOENT; from user space
update = push, lookup = peek, lookup_and_delete = pop, and delete / get_next_key are -EINVAL.
Values are copied in and out, so no program-visible element memory exists.
Must not import `kernel` or `vm` internals.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from bpfsim.errors import KeyNotFound, MapError, MapFull
from bpfsim.runtime.maps.base import BPF_F_ACCESS_MASK, KMALLOC_MAX_SIZE, MapBase, einval, flags_access_ok
from bpfsim.uapi.constants import BPF_EXIST, BPF_F_NUMA_NODE, BPF_NOEXIST, E2BIG, EINVAL, ENOENT

if TYPE_CHECKING:
    from bpfsim.spec.collection import MapSpec

QUEUE_STACK_CREATE_FLAG_MASK = BPF_F_NUMA_NODE | BPF_F_ACCESS_MASK


class QueueMap(MapBase):
    """BPF_MAP_TYPE_QUEUE: pop/peek take the oldest value."""

    lifo = False
    iterable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._items: deque[bytes] = deque()

    @classmethod
    def alloc_check(cls, spec: MapSpec, ncpus: int) -> None:
        """queue_stack_map_alloc_check."""
        if (spec.max_entries == 0 or spec.key_size != 0 or spec.value_size == 0
                or spec.flags & ~QUEUE_STACK_CREATE_FLAG_MASK or not flags_access_ok(spec.flags)):
            raise einval("queue/stack maps need key_size 0, value_size > 0, max_entries > 0")
        if spec.value_size > KMALLOC_MAX_SIZE:
            raise MapFull("value_size too large", E2BIG)

    def __len__(self) -> int:
        return len(self._items)

    def values_in_order(self) -> list[bytes]:
        """The values in the order pop would return them."""
        with self.lock:
            return list(reversed(self._items)) if self.lifo else list(self._items)

    # -- core -----------------------------------------------------------------------------------
    def push(self, value: bytes, flags: int = 0) -> None:
        """queue_stack_map_push_elem."""
        if flags & BPF_NOEXIST or flags > BPF_EXIST:
            raise einval(f"bad push flags {flags:#x}")
        with self.lock:
            if len(self._items) >= self.max_entries:
                if not flags & BPF_EXIST:
                    raise MapFull(f"{self.type_name} '{self.name}' is full", E2BIG)
                self._items.popleft()          # the oldest goes, for a stack too
            self._items.append(bytes(value))

    def _take(self, delete: bool) -> bytes:
        with self.lock:
            if not self._items:
                # __queue_map_get: -ENOENT, which user space sees as a missing key
                raise KeyNotFound(f"{self.type_name} '{self.name}' is empty")
            if self.lifo:
                return self._items.pop() if delete else self._items[-1]
            return self._items.popleft() if delete else self._items[0]

    # -- syscall side ---------------------------------------------------------------------------
    def _sys_lookup(self, key: bytes, flags: int) -> bytes:
        return self._take(False)

    def _sys_update(self, key: bytes, value: bytes, flags: int) -> None:
        self.push(value, flags)

    def _sys_lookup_and_delete(self, key: bytes, flags: int) -> bytes:
        return self._take(True)

    def _sys_delete(self, key: bytes) -> None:
        raise einval("queue/stack maps have no delete")

    def _next_key(self, key: bytes | None) -> bytes | None:
        raise einval("queue/stack maps have no keys")

    # -- program side ---------------------------------------------------------------------------
    def prog_push(self, value_addr: int, flags: int, cpu: int = 0) -> int:
        try:
            self.push(self._read_value(value_addr), flags)
        except MapError as e:
            return -e.errno
        return 0

    def _prog_take(self, value_addr: int, delete: bool) -> int:
        try:
            data = self._take(delete)
        except KeyNotFound:
            return -ENOENT
        self.mem.write(value_addr, data)
        return 0

    def prog_pop(self, value_addr: int, cpu: int = 0) -> int:
        return self._prog_take(value_addr, True)

    def prog_peek(self, value_addr: int, cpu: int = 0) -> int:
        return self._prog_take(value_addr, False)

    def prog_update(self, key_addr: int, value_addr: int, flags: int, cpu: int = 0) -> int:
        return -EINVAL


class StackMap(QueueMap):
    """BPF_MAP_TYPE_STACK: pop/peek take the newest value."""

    lifo = True
