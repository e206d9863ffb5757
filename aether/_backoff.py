"""Reconnect backoff as in gRPC's connection-backoff spec: a pure function."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ("BACKOFF_JITTER", "BACKOFF_MAX_DELAY", "BACKOFF_MULTIPLIER", "backoff_delay")

#: Each retry waits this many times longer than the one before.
BACKOFF_MULTIPLIER = 1.6
#: Relative spread of the random jitter around the nominal delay (±20 %).
BACKOFF_JITTER = 0.2
#: Upper bound of the nominal delay, in seconds.
BACKOFF_MAX_DELAY = 120.0


def backoff_delay(
    attempt: int,
    initial_delay: float,
    *,
    max_delay: float = BACKOFF_MAX_DELAY,
    multiplier: float = BACKOFF_MULTIPLIER,
    jitter: float = BACKOFF_JITTER,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before reconnect attempt number `attempt` (0 for the first retry).

    The nominal delay is `initial_delay * multiplier**attempt`, capped at `max_delay`, then
    spread uniformly by ±`jitter` so that many agents do not reconnect in lockstep.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    nominal = min(initial_delay * multiplier ** min(attempt, 64), max_delay)
    spread = nominal * jitter
    return max(0.0, nominal - spread + 2 * spread * rand())
