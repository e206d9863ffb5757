"""The heartbeat loop's cadence, on a fake clock."""

from __future__ import annotations

import pytest

from aether import AetherConnectionError, HeartbeatResponse
from aether._heartbeat import heartbeat_loop


class ClockStop(Exception):
    """Raised by the fake clock to end the otherwise endless loop."""


class Clock:
    """A fake sleep: records requested delays, advances virtual time, stops after `limit`."""

    def __init__(self, limit: int) -> None:
        self.now = 0.0
        self.delays: list[float] = []
        self.limit = limit

    async def sleep(self, delay: float) -> None:
        if len(self.delays) == self.limit:
            raise ClockStop
        self.delays.append(delay)
        self.now += delay


async def test_cadence_follows_config_then_hub_override() -> None:
    clock = Clock(limit=5)
    sent_at: list[float] = []
    replies = iter([0, 0, 12, 0, 0])

    async def send() -> HeartbeatResponse:
        sent_at.append(clock.now)
        return HeartbeatResponse(success=True, heartbeat_interval_seconds=next(replies))

    with pytest.raises(ClockStop):
        await heartbeat_loop(send, 2.5, sleep=clock.sleep)
    # 2.5 s apart until the Hub asks for 12 s; it keeps that until told otherwise.
    assert clock.delays == [2.5, 2.5, 2.5, 12.0, 12.0]
    assert sent_at == [2.5, 5.0, 7.5, 19.5, 31.5]


async def test_unknown_session_raises_to_reconnect() -> None:
    clock = Clock(limit=10)

    async def send() -> HeartbeatResponse:
        return HeartbeatResponse(success=False)

    with pytest.raises(AetherConnectionError, match="registering again"):
        await heartbeat_loop(send, 1.0, sleep=clock.sleep)
    assert clock.delays == [1.0]
