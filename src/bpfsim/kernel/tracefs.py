"""Reading the kernel's trace pipe (where bpf_printk writes), without blocking.

Job: the one place bpfsim reads tracefs.  `TraceReader` drains what is already queued when it
is created, then `read()` returns the lines written since.  The trace buffer is global, so
lines from other BPF programs running at the same time would show up too.
"""

from __future__ import annotations

import errno
import os

from bpfsim.errors import NotSupported

TRACEFS_CANDIDATES = ("/sys/kernel/tracing/trace_pipe", "/sys/kernel/debug/tracing/trace_pipe")


def find_trace_pipe() -> str:
    for path in TRACEFS_CANDIDATES:
        if os.path.exists(path):
            return path
    raise NotSupported("tracefs trace_pipe", detail="mount tracefs at /sys/kernel/tracing")


class TraceReader:
    """Non-blocking reader of trace_pipe lines."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or find_trace_pipe()
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._partial = b""
        self.read()  # drop what was queued before us

    def read(self) -> list[str]:
        """Complete lines available now."""
        chunks = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    break
                raise
            if not data:
                break
            chunks.append(data)
        buf = self._partial + b"".join(chunks)
        *lines, self._partial = buf.split(b"\n")
        return [line.decode(errors="replace") for line in lines if line]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
