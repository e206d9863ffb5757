"""The reconnect backoff: gRPC connection-backoff shape, bounded jitter, cap."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aether._backoff import (
    BACKOFF_JITTER,
    BACKOFF_MAX_DELAY,
    BACKOFF_MULTIPLIER,
    backoff_delay,
)


def test_nominal_sequence_without_jitter() -> None:
    delays = [backoff_delay(n, 1.0, rand=lambda: 0.5) for n in range(4)]
    assert delays == pytest.approx([1.0, 1.6, 2.56, 4.096])


def test_capped() -> None:
    assert backoff_delay(100, 5.0, rand=lambda: 0.5) == pytest.approx(BACKOFF_MAX_DELAY)
    assert backoff_delay(100, 5.0, max_delay=7.0, rand=lambda: 0.5) == pytest.approx(7.0)


@given(
    attempt=st.integers(min_value=0, max_value=200),
    initial=st.floats(min_value=0.0, max_value=60.0),
    r=st.floats(min_value=0.0, max_value=1.0),
)
def test_jitter_stays_within_twenty_percent(attempt: int, initial: float, r: float) -> None:
    nominal = min(initial * BACKOFF_MULTIPLIER ** min(attempt, 64), BACKOFF_MAX_DELAY)
    delay = backoff_delay(attempt, initial, rand=lambda: r)
    assert nominal * (1 - BACKOFF_JITTER) - 1e-9 <= delay <= nominal * (1 + BACKOFF_JITTER) + 1e-9


def test_negative_attempt_rejected() -> None:
    with pytest.raises(ValueError):
        backoff_delay(-1, 1.0)
