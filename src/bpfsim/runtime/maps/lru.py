"""The LRU list behind LRU_HASH / LRU_PERCPU_HASH (kernel/bpf/bpf_lru_list.c), node for node.

Job: decide which element a new LRU insert takes and which element is evicted, with the
kernel's lists: a global (or, with BPF_F_NO_COMMON_LRU, per-CPU) list of ACTIVE / INACTIVE /
FREE nodes, per-CPU local FREE and PENDING lists, the ref bit set by program lookups, the
active/inactive rotation, the inactive shrink and the steal from other CPUs.  Because the
simulation knows the CPU every operation runs on, the result is deterministic and matches the
kernel's for the same sequence of (operation, CPU) — including the famous surprise that a
common-LRU map evicts before it is full when another CPU holds free nodes locally.

Where it differs from the kernel: the rqspinlock failure paths (a lock that cannot be taken
leaves a node `pending_free`) never happen here, because nothing contends; and which *memory*
(element address) a new insert reuses is only modelled as far as the free-list order goes
(LIFO local lists), which no correct program can observe.  Which keys survive, which inserts
fail and every helper return value match 6.18 for the same (operation, CPU) sequence:
tests/runtime/test_maps.py::test_lru_matches_kernel and test_maps_programs.py check it, with
program lookups setting ref bits and inserts from both CPUs.

Nodes are created lazily: the never-used tail of a FREE list is a counter, so a large
max_entries costs nothing until used.  Must not import anything of the map families.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ACTIVE, INACTIVE, FREE, LOCAL_FREE, LOCAL_PENDING = range(5)
LOCAL_FREE_TARGET = 128
LOCAL_NR_SCANS = LOCAL_FREE_TARGET
PERCPU_FREE_TARGET = 4
PERCPU_NR_SCANS = PERCPU_FREE_TARGET


class Node:
    """struct bpf_lru_node; `elem` is the element it belongs to (None for a list head)."""

    __slots__ = ("prev", "next", "type", "ref", "cpu", "elem")

    def __init__(self, elem: Any = None) -> None:
        self.prev: Node = self
        self.next: Node = self
        self.type = FREE
        self.ref = 0
        self.cpu = 0
        self.elem = elem


def _del(n: Node) -> None:
    n.prev.next = n.next
    n.next.prev = n.prev
    n.prev = n.next = n


def _add(n: Node, head: Node) -> None:
    """list_add: insert right after `head` (the front of the list)."""
    n.next = head.next
    n.prev = head
    head.next.prev = n
    head.next = n


def _move(n: Node, head: Node) -> None:
    _del(n)
    _add(n, head)


def _reverse(head: Node) -> list[Node]:
    """Snapshot for list_for_each_entry_safe_reverse (tail first)."""
    out, n = [], head.prev
    while n is not head:
        out.append(n)
        n = n.prev
    return out


class LruList:
    """struct bpf_lru_list, plus the lazily populated tail of its FREE list."""

    def __init__(self, lazy_free: int, make: Callable[[int], Node], cpu: int = 0) -> None:
        self.heads = [Node(), Node(), Node()]
        self.counts = [0, 0]
        self.next_inactive_rotation: Node = self.heads[INACTIVE]
        self.lazy_free = lazy_free      # nodes still to come at the tail of FREE
        self._make = make
        self.cpu = cpu

    def materialize_free(self) -> bool:
        """Append the next never-used node at the tail of the FREE list."""
        if not self.lazy_free:
            return False
        self.lazy_free -= 1
        n = self._make(self.cpu)
        n.type = FREE
        n.cpu = self.cpu
        head = self.heads[FREE]
        n.prev, n.next = head.prev, head
        head.prev.next = n
        head.prev = n
        return True

    def free_empty(self) -> bool:
        return self.heads[FREE].next is self.heads[FREE] and not self.lazy_free


class LocalList:
    """struct bpf_lru_locallist (common LRU, one per CPU)."""

    def __init__(self, cpu: int) -> None:
        self.free = Node()
        self.pending = Node()
        self.next_steal = cpu


class BpfLru:
    """struct bpf_lru.  `del_from_htab(elem) -> bool` removes a victim from the hash table
    (hashtab.c: htab_lru_map_delete_node) and returns whether it was still there."""

    def __init__(self, nr_elems: int, ncpus: int, percpu: bool, del_from_htab: Callable[[Any], bool],
                 make_elem: Callable[[int], Any]) -> None:
        self.percpu = percpu
        self.ncpus = ncpus
        self.del_from_htab = del_from_htab
        self._make_elem = make_elem
        if percpu:
            # bpf_percpu_lru_populate: nr_elems / ncpus nodes per CPU, the rest to the last.
            per = nr_elems // ncpus
            counts = [per] * ncpus
            counts[-1] += nr_elems - per * ncpus
            self.lists = [LruList(counts[c], self._make_node, c) for c in range(ncpus)]
            self.nr_scans = PERCPU_NR_SCANS
            self.target_free = PERCPU_FREE_TARGET
        else:
            self.lists = [LruList(nr_elems, self._make_node, 0)]
            self.local = [LocalList(c) for c in range(ncpus)]
            self.nr_scans = LOCAL_NR_SCANS
            # bpf_common_lru_populate (6.16+): clamp(nr_elems / ncpus / 2, 1, 128)
            self.target_free = min(max((nr_elems // ncpus) // 2, 1), LOCAL_FREE_TARGET)

    def _make_node(self, cpu: int) -> Node:
        elem = self._make_elem(cpu)
        node = Node(elem)
        node.cpu = cpu
        elem.lru = node
        return node

    # -- list moves (bpf_lru_list.c: __bpf_lru_node_move*) ---------------------------------------
    @staticmethod
    def _fix_rotation(lst: LruList, n: Node) -> None:
        if n is lst.next_inactive_rotation:
            lst.next_inactive_rotation = n.prev

    def _move_to_free(self, lst: LruList, n: Node, free_head: Node, tgt: int) -> None:
        self._fix_rotation(lst, n)
        if n.type < 2:
            lst.counts[n.type] -= 1
        n.type = tgt
        _move(n, free_head)

    @staticmethod
    def _move_in(lst: LruList, n: Node, tgt: int) -> None:
        lst.counts[tgt] += 1
        n.type = tgt
        n.ref = 0
        _move(n, lst.heads[tgt])

    def _move(self, lst: LruList, n: Node, tgt: int) -> None:
        if n.type != tgt:
            if n.type < 2:
                lst.counts[n.type] -= 1
            if tgt < 2:
                lst.counts[tgt] += 1
            n.type = tgt
        n.ref = 0
        self._fix_rotation(lst, n)
        _move(n, lst.heads[tgt])

    # -- rotation and shrinking -----------------------------------------------------------------
    def _rotate_active(self, lst: LruList) -> None:
        head = lst.heads[ACTIVE]
        first = head.next
        for i, n in enumerate(_reverse(head), 1):
            self._move(lst, n, ACTIVE if n.ref else INACTIVE)
            if i == self.nr_scans or n is first:
                break

    def _rotate_inactive(self, lst: LruList) -> None:
        inactive = lst.heads[INACTIVE]
        if inactive.next is inactive:
            return
        last = lst.next_inactive_rotation.next
        if last is inactive:
            last = last.next
        cur = lst.next_inactive_rotation
        nxt = inactive
        i = 0
        while i < self.nr_scans:
            if cur is inactive:
                cur = cur.prev
                continue
            nxt = cur.prev
            if cur.ref:
                self._move(lst, cur, ACTIVE)
            if cur is last:
                break
            cur = nxt
            i += 1
        lst.next_inactive_rotation = nxt

    def _rotate(self, lst: LruList) -> None:
        if lst.counts[INACTIVE] < lst.counts[ACTIVE]:
            self._rotate_active(lst)
        self._rotate_inactive(lst)

    def _shrink_inactive(self, lst: LruList, tgt_nshrink: int, free_head: Node, tgt: int) -> int:
        nshrinked = 0
        for i, n in enumerate(_reverse(lst.heads[INACTIVE]), 1):
            if n.ref:
                self._move(lst, n, ACTIVE)
            elif self.del_from_htab(n.elem):
                self._move_to_free(lst, n, free_head, tgt)
                nshrinked += 1
                if nshrinked == tgt_nshrink:
                    break
            if i == self.nr_scans:
                break
        return nshrinked

    def _shrink(self, lst: LruList, tgt_nshrink: int, free_head: Node, tgt: int) -> int:
        n = self._shrink_inactive(lst, tgt_nshrink, free_head, tgt)
        if n:
            return n
        inactive = lst.heads[INACTIVE]
        force = inactive if inactive.next is not inactive else lst.heads[ACTIVE]
        for node in _reverse(force):
            if self.del_from_htab(node.elem):
                self._move_to_free(lst, node, free_head, tgt)
                return 1
        return 0

    # -- common LRU -----------------------------------------------------------------------------
    def _pop_free_to_local(self, loc: LocalList) -> None:
        lst = self.lists[0]
        # __local_list_flush
        for n in _reverse(loc.pending):
            self._move_in(lst, n, ACTIVE if n.ref else INACTIVE)
        self._rotate(lst)
        nfree = 0
        head = lst.heads[FREE]
        while nfree < self.target_free:
            n = head.next
            if n is head and not lst.materialize_free():
                break
            n = head.next
            self._move_to_free(lst, n, loc.free, LOCAL_FREE)
            nfree += 1
        if nfree < self.target_free:
            self._shrink(lst, self.target_free - nfree, loc.free, LOCAL_FREE)

    @staticmethod
    def _local_pop_free(loc: LocalList) -> Node | None:
        n = loc.free.next
        if n is loc.free:
            return None
        _del(n)
        return n

    def _local_pop_pending(self, loc: LocalList) -> Node | None:
        for force in (False, True):
            for n in _reverse(loc.pending):
                if (not n.ref or force) and self.del_from_htab(n.elem):
                    _del(n)
                    return n
        return None

    @staticmethod
    def _add_pending(loc: LocalList, cpu: int, n: Node) -> None:
        n.cpu = cpu
        n.type = LOCAL_PENDING
        n.ref = 0
        _add(n, loc.pending)

    def _common_pop_free(self, cpu: int) -> Node | None:
        loc = self.local[cpu]
        n = self._local_pop_free(loc)
        if n is None:
            self._pop_free_to_local(loc)
            n = self._local_pop_free(loc)
        if n is not None:
            self._add_pending(loc, cpu, n)
            return n
        first = steal = loc.next_steal
        while True:
            victim = self.local[steal]
            n = self._local_pop_free(victim) or self._local_pop_pending(victim)
            steal = (steal + 1) % self.ncpus
            if n is not None or steal == first:
                break
        loc.next_steal = steal
        if n is None:
            return None
        self._add_pending(loc, cpu, n)
        return n

    # -- per-CPU LRU ----------------------------------------------------------------------------
    def _percpu_pop_free(self, cpu: int) -> Node | None:
        lst = self.lists[cpu]
        self._rotate(lst)
        head = lst.heads[FREE]
        if head.next is head and not lst.materialize_free():
            self._shrink(lst, PERCPU_FREE_TARGET, head, FREE)
        n = head.next
        if n is head:
            return None
        n.ref = 0
        self._move(lst, n, INACTIVE)
        return n

    # -- public ---------------------------------------------------------------------------------
    def pop_free(self, cpu: int) -> Any:
        """bpf_lru_pop_free: the element a new insert on `cpu` uses (maybe evicting), or None."""
        cpu %= self.ncpus
        n = self._percpu_pop_free(cpu) if self.percpu else self._common_pop_free(cpu)
        return None if n is None else n.elem

    def push_free(self, elem: Any) -> None:
        """bpf_lru_push_free: an element left the hash table (delete, replace, failed insert)."""
        n: Node = elem.lru
        if self.percpu:
            self._move(self.lists[n.cpu], n, FREE)
            return
        if n.type == LOCAL_PENDING:
            n.type = LOCAL_FREE
            n.ref = 0
            _move(n, self.local[n.cpu].free)
            return
        self._move(self.lists[0], n, FREE)

    @staticmethod
    def set_ref(elem: Any) -> None:
        """bpf_lru_node_set_ref: a program looked the element up."""
        elem.lru.ref = 1
