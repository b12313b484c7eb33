"""The timer timeline: one JSON-able record per timer event, kept on the runtime.

Job: record init, set_callback, start, fire, cancel and free events (time, CPU, map, key,
return code) so `bpfsim run --timeline` and tests can show what happened and when.
Must not import anything of bpfsim: it is a plain list with a lock.
"""

from __future__ import annotations

import json
import threading
from typing import Any

EVENTS = ("init", "set_callback", "start", "fire", "cancel", "free")


class Timeline(list):
    """A list of dict records, in the order events happened.

    Each record has at least: `seq` (0, 1, ...), `time` (CLOCK_MONOTONIC ns), `event` (one of
    EVENTS), `cpu` (int or None for user-space context), `map` (map name), `key` (hex of the
    element key; the u32 index for arrays), `timer` (a small id that stays the same for one
    initialized timer), `ret` (the helper's return value, None for fire/free).
    Event-specific fields: `flags`, `clock`, `nsecs`, `expires`, `callback` (subprogram name),
    `prog`, `was_queued`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.enabled = True

    def record(self, event: str, **fields: Any) -> dict[str, Any] | None:
        """Append one record (thread-safe) and return it."""
        if not self.enabled:
            return None
        with self._lock:
            rec = {"seq": len(self), "event": event}
            rec.update(fields)
            self.append(rec)
            return rec

    def events(self, event: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """Records of `event` (all when None) whose fields equal `match`."""
        return [r for r in list(self)
                if (event is None or r["event"] == event)
                and all(r.get(k) == v for k, v in match.items())]

    def to_json(self, **kw: Any) -> str:
        return json.dumps(list(self), **kw)

    def __repr__(self) -> str:
        return f"<Timeline {len(self)} events>"
