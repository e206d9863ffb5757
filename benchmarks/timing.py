"""Timing helpers: warm-up, best-of-N rounds, percentiles (no SDK imports)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


def best_ops_per_second(
    op: Callable[[], object], iterations: int, *, rounds: int = 3, warmup: int = 0
) -> float:
    """Run `op` `warmup` times, then `rounds` rounds of `iterations`; the best round's rate."""
    for _ in range(warmup):
        op()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(iterations):
            op()
        best = min(best, time.perf_counter() - start)
    # A round too fast for the clock still yields a finite rate.
    return iterations / max(best, 1e-9)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (fraction in [0, 1])."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]
