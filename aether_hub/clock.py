"""The clocks the dev Hub measures leases, heartbeats and deadlines with.

Injectable so tests can move time forward instead of waiting.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ("Clock", "SystemClock")


class Clock(Protocol):
    """A monotonic clock for intervals and a wall clock for timestamps."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (heartbeats, leases)."""
        ...

    def time(self) -> float:
        """Seconds since the epoch (timestamps, task deadlines)."""
        ...


class SystemClock:
    """The real clocks (`time.monotonic`, `time.time`)."""

    def monotonic(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()

    def time(self) -> float:
        """`time.time()`."""
        return time.time()
