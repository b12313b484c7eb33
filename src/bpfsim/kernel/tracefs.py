"""bpf_printk output of the real kernel, read from a private tracefs instance.

Job: `TraceReader().read()` returns the trace_pipe lines (kernel format) that appeared since
the last call.  Reading the global /sys/kernel/tracing/trace_pipe would consume lines other
readers (other test processes) need, so each reader makes its own instance
(`instances/bpfsim-<pid>-<n>`) and enables only the `bpf_trace:bpf_trace_printk` event
there; every instance receives its own copy of each event.
Must not call bpf(2) and must not import `runtime`.  (Replaces a first version that read the
global trace_pipe; same interface.)
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import itertools
import os
import re
import weakref

from bpfsim.errors import NotSupported

TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
EVENT = "events/bpf_trace/bpf_trace_printk/enable"
_counter = itertools.count()


def tracefs_root() -> str:
    """Where tracefs is mounted; NotSupported when it is not."""
    for root in TRACEFS_ROOTS:
        if os.path.isdir(os.path.join(root, "instances")):
            return root
    raise NotSupported("tracefs", detail="mount it: mount -t tracefs nodev /sys/kernel/tracing")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


# "comm-tid (tgid) [cpu] flags ts: ..." -- the "(tgid)" column is there because the instance
# has options/record-tgid set; read() filters on it and removes it again.
_LINE = re.compile(r"^(?P<head>.*?-\d+\s+)\(\s*(?P<tgid>[-\d]+)\)\s"
                   r"(?P<rest>\s*\[\d+\]\s+(?P<flags>\S+)\s.*)$")


# Any event line (with or without the tgid column); a line without this head continues the
# event above it.
_HEADER = re.compile(r"^.*?-\d+\s+(\(\s*[-\d]+\)\s+)?\[\d+\]\s+\S+\s+\d+\.\d+: ")


def _filter(line: str, foreign: bool) -> str | None:
    """The line without its tgid column, or None when it belongs to another process.

    Kept: lines of this process (any thread), and lines from interrupt context -- a timer
    callback runs in softirq on whatever task the CPU happened to be running (flags:
    irqs-off, need-resched, hardirq/softirq 'h' 's' 'H', preempt depth, migrate-disable;
    trace_output.c)."""
    m = _LINE.match(line)
    if m is None:
        return line
    flags = m.group("flags")
    ours = m.group("tgid") == str(os.getpid()) or (len(flags) > 2 and flags[2] in "hsH")
    if not (ours or foreign):
        return None
    return m.group("head") + m.group("rest")


_open_readers: weakref.WeakSet[TraceReader] = weakref.WeakSet()


def _close_all() -> None:
    for r in list(_open_readers):
        r.close()


atexit.register(_close_all)


def remove_stale_instances(root: str | None = None) -> list[str]:
    """Remove instances left by bpfsim processes that died without closing their reader (an
    instance keeps its per-CPU ring buffers until rmdir).  Only `bpfsim-<pid>-<n>` instances
    whose pid no longer exists are touched.  Returns the removed paths."""
    base = os.path.join(root or tracefs_root(), "instances")
    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        m = re.fullmatch(r"bpfsim-(\d+)-\d+", name)
        if m is None or os.path.exists(f"/proc/{m.group(1)}"):
            continue
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(base, name))
            removed.append(os.path.join(base, name))
    return removed


class TraceReader:
    """A private tracefs instance collecting bpf_trace_printk events (bpf_printk's lines).

    `foreign=False` (the default) keeps only this process's lines and interrupt-context ones
    (see `_filter`); `foreign=True` keeps everything the kernel printed.  Lines have the
    format of the global trace_pipe."""

    def __init__(self, foreign: bool = False) -> None:
        self.foreign = foreign
        root = tracefs_root()
        remove_stale_instances(root)
        self.path = os.path.join(root, "instances", f"bpfsim-{os.getpid()}-{next(_counter)}")
        try:
            os.mkdir(self.path)
        except OSError as e:
            raise NotSupported("tracefs instance", detail=f"{self.path}: {e.strerror}") from None
        self._fd = -1
        self._partial = b""
        self._keep = False             # whether the last event line was kept (continuations follow it)
        try:
            _write(os.path.join(self.path, "options", "record-tgid"), "1")
            _write(os.path.join(self.path, EVENT), "1")
            _write(os.path.join(self.path, "tracing_on"), "1")
            self._fd = os.open(os.path.join(self.path, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            self.close()
            raise NotSupported("bpf_trace_printk event", detail=f"{self.path}: {e.strerror}") from None
        _open_readers.add(self)

    def read(self) -> list[str]:
        """Every complete line that arrived since the last call (never blocks)."""
        if self._fd < 0:
            return []
        chunks = [self._partial]
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EINTR):
                    break
                raise
            if not data:
                break
            chunks.append(data)
        buf = b"".join(chunks)
        *lines, self._partial = buf.split(b"\n")
        out: list[str] = []
        for raw in lines:
            text = raw.decode("latin-1")  # byte-faithful, as the emulator keeps trace text
            if _HEADER.match(text) is None:
                # A continuation of the event above: the rest of a message with a "\n" in it,
                # or the empty line after one ending in "\n" (the event's output appends its
                # own "\n", trace_output.c) -- kept with the event it belongs to.
                if self._keep:
                    out.append(text)
                continue
            line = _filter(text, self.foreign)
            self._keep = line is not None
            if line is not None:
                out.append(line)
        return out

    def close(self) -> None:
        """Remove the instance (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if os.path.isdir(self.path):
            with contextlib.suppress(OSError):
                _write(os.path.join(self.path, EVENT), "0")
            with contextlib.suppress(OSError):
                os.rmdir(self.path)

    def __del__(self) -> None:  # an instance left behind keeps its ring buffers allocated
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
