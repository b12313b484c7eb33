"""Kernel objects of the emulated kernel: `BpfMap` and `BpfProg` with the kernel's lifetime rules.

Job: reference counting exactly like kernel/bpf/syscall.c, and ids like the kernel's idr.
* `refcnt` keeps the object alive (programs hold it on their maps, outer maps on inner maps,
  prog arrays on their programs, a timer on the program that last set its callback).
* maps also have `usercnt`: user references, i.e. open handles (fds) and pins
  (`bpf_map_inc_with_uref` / `bpf_map_put_with_uref`).  When it reaches 0 the map runs its
  `release_uref` (syscall.c: `bpf_map_put_uref` -> `ops->map_release_uref`): every timer is
  cancelled and freed (`kernel.timers.release_map(map)`), a prog array is cleared.
* when `refcnt` reaches 0 the object is freed (`bpf_map_free_deferred` / `__bpf_prog_put`).

A freshly created object starts with refcnt 1 (and usercnt 1 for a map): that reference
belongs to the creator, exactly like the fd `BPF_MAP_CREATE` returns.
Must not import `kernel` (the real one) nor the runtime's Runtime (it receives it as `kernel`).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any

from bpfsim.errors import UsageError

# Ids are per emulated kernel and per object kind, start at 1 and are never reused while the
# kernel lives (the kernel's idr_alloc_cyclic behaves the same way until it wraps).
_ID_STATE: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_ID_LOCK = threading.Lock()


def _registry(kernel: Any) -> dict[str, Any]:
    with _ID_LOCK:
        state = _ID_STATE.get(kernel)
        if state is None:
            state = {"map": itertools.count(1), "prog": itertools.count(1),
                     "live_map": {}, "live_prog": {}}
            _ID_STATE[kernel] = state
        return state


def object_by_id(kernel: Any, kind: str, obj_id: int) -> Any:
    """The live map or program with `obj_id` (BPF_MAP_GET_FD_BY_ID's lookup), or None."""
    return _registry(kernel)[f"live_{kind}"].get(obj_id)


def live_objects(kernel: Any, kind: str) -> list[Any]:
    """Live maps or programs in id order (BPF_MAP_GET_NEXT_ID walks them this way)."""
    live = _registry(kernel)[f"live_{kind}"]
    return [live[i] for i in sorted(live)]


class KObject:
    """A reference-counted kernel object."""

    kind = "object"

    def __init__(self, kernel: Any, name: str = "") -> None:
        self.kernel = kernel
        self.name = name
        self.refcnt = 1
        self.freed = False
        self._lock = threading.RLock()
        reg = _registry(kernel)
        self.id = next(reg[self.kind])
        reg[f"live_{self.kind}"][self.id] = self

    # -- refcnt ---------------------------------------------------------------------------------
    def inc(self) -> None:
        """bpf_map_inc / bpf_prog_inc: take a reference on a live object."""
        with self._lock:
            if self.refcnt <= 0:
                raise UsageError(f"{self.kind} '{self.name}' is already freed")
            self.refcnt += 1

    def inc_not_zero(self) -> bool:
        """bpf_prog_inc_not_zero: take a reference unless the object is being freed."""
        with self._lock:
            if self.refcnt <= 0:
                return False
            self.refcnt += 1
            return True

    def put(self) -> None:
        """bpf_map_put / bpf_prog_put: drop a reference; the last one frees the object."""
        with self._lock:
            if self.refcnt <= 0:
                raise UsageError(f"{self.kind} '{self.name}': reference dropped twice")
            self.refcnt -= 1
            last = self.refcnt == 0
        if last:
            _registry(self.kernel)[f"live_{self.kind}"].pop(self.id, None)
            self.freed = True
            self.free()

    def free(self) -> None:
        """Release everything the object holds (overridden)."""


class BpfProg(KObject):
    """A loaded program as the kernel keeps it: `refcnt` and the maps it uses (`used_maps`).

    The runtime's Program builds on this; the maps in `used_maps` are held by refcnt only
    (verifier.c: `used_maps` take `bpf_map_inc`), so a loaded program never keeps timers alive.
    """

    kind = "prog"

    def __init__(self, kernel: Any, name: str = "", prog_type: int = 0) -> None:
        super().__init__(kernel, name)
        self.prog_type = prog_type
        self.used_maps: list[BpfMap] = []

    def use_map(self, m: BpfMap) -> None:
        """Record (once) that this program uses `m`, taking a refcnt on it."""
        if any(u is m for u in self.used_maps):
            return
        m.inc()
        self.used_maps.append(m)

    def free(self) -> None:
        self.release()
        used, self.used_maps = self.used_maps, []
        for m in used:
            m.put()

    def release(self) -> None:
        """Hook for the runtime's Program: drop engine state before the maps go."""


class BpfMap(KObject):
    """A map's lifetime: refcnt + usercnt.  Map families in runtime/maps/ subclass it."""

    kind = "map"

    def __init__(self, kernel: Any, name: str = "") -> None:
        super().__init__(kernel, name)
        self.usercnt = 1

    # -- user references (fds, pins) ------------------------------------------------------------
    def inc_with_uref(self) -> None:
        """bpf_map_inc_with_uref: a new handle or pin (refcnt + usercnt)."""
        with self._lock:
            if self.refcnt <= 0:
                raise UsageError(f"map '{self.name}' is already freed")
            self.refcnt += 1
            self.usercnt += 1

    def inc_uref_not_zero(self) -> bool:
        """__bpf_map_inc_not_zero(map, true): BPF_MAP_GET_FD_BY_ID on a map programs still hold.

        Succeeds while refcnt > 0, even if usercnt was 0 (the kernel allows raising it again,
        and timers can then be initialized again: bpf_timer.md section 3)."""
        with self._lock:
            if self.refcnt <= 0:
                return False
            self.refcnt += 1
            self.usercnt += 1
            return True

    def put_with_uref(self) -> None:
        """bpf_map_put_with_uref: a handle closed or a pin removed."""
        self.put_uref()
        self.put()

    def put_uref(self) -> None:
        """bpf_map_put_uref: the last user reference runs `release_uref`."""
        with self._lock:
            if self.usercnt <= 0:
                raise UsageError(f"map '{self.name}': user reference dropped twice")
            self.usercnt -= 1
            last = self.usercnt == 0
        if last:
            self.release_uref()

    def release_uref(self) -> None:
        """map_release_uref: cancel and free every timer of the map (the timer manager does the
        work when there is one; without one, the slots are simply reset)."""
        timers = getattr(self.kernel, "timers", None)
        if timers is not None and hasattr(timers, "release_map"):
            timers.release_map(self)
            return
        for slot in self.timer_slots():
            if timers is not None and hasattr(timers, "cancel_and_free"):
                timers.cancel_and_free(slot)
            else:
                slot.timer = None

    def timer_slots(self) -> list[Any]:
        """Every TimerSlot the map currently has (overridden by maps with timers)."""
        return []
