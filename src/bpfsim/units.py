"""Durations as integer nanoseconds (`ms(5)`), and parsing of "30s", "5ms", "100us", "7ns".

Bottom layer: imports nothing of bpfsim but `errors`.
"""

from __future__ import annotations

import re

from bpfsim.errors import UsageError

NSEC_PER_USEC = 1_000
NSEC_PER_MSEC = 1_000_000
NSEC_PER_SEC = 1_000_000_000


def ns(n: float) -> int:
    """Nanoseconds, as an integer."""
    return int(n)


def us(n: float) -> int:
    """Microseconds in nanoseconds."""
    return int(round(n * NSEC_PER_USEC))


def ms(n: float) -> int:
    """Milliseconds in nanoseconds."""
    return int(round(n * NSEC_PER_MSEC))


def s(n: float) -> int:
    """Seconds in nanoseconds."""
    return int(round(n * NSEC_PER_SEC))


_UNITS = {"ns": 1, "us": NSEC_PER_USEC, "µs": NSEC_PER_USEC, "ms": NSEC_PER_MSEC, "s": NSEC_PER_SEC,
          "m": 60 * NSEC_PER_SEC, "min": 60 * NSEC_PER_SEC, "h": 3600 * NSEC_PER_SEC}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|min|m|h)?\s*$")


def parse_duration(text: str) -> int:
    """Parse "30s", "5ms", "1.5s", "250us", "7ns" or a bare number of nanoseconds."""
    m = _DURATION.match(str(text))
    if not m:
        raise UsageError(f"bad duration {text!r}: expected e.g. 30s, 5ms, 100us, 7ns")
    value, unit = m.groups()
    return int(round(float(value) * _UNITS[unit or "ns"]))
