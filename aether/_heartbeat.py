"""The heartbeat loop of one session."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aether._wire import models
from aether.errors import AetherConnectionError

__all__ = ("Sleep", "heartbeat_loop")

Sleep = Callable[[float], Awaitable[object]]


async def heartbeat_loop(
    send: Callable[[], Awaitable[models.HeartbeatResponse]],
    interval: float,
    *,
    sleep: Sleep = asyncio.sleep,
    on_beat: Callable[[models.HeartbeatResponse], object] | None = None,
) -> None:
    """Send a heartbeat every `interval` seconds until cancelled.

    The Hub may change the interval in each answer. Returns never; raises the `AetherError`
    of a failed heartbeat, or `AetherConnectionError` when the Hub no longer knows the
    session (success=false), so that the caller reconnects and registers again.
    """
    while True:
        await sleep(interval)
        reply = await send()
        if not reply.success:
            raise AetherConnectionError("the Hub no longer knows this session; registering again")
        if reply.heartbeat_interval_seconds > 0:
            interval = float(reply.heartbeat_interval_seconds)
        if on_beat is not None:
            on_beat(reply)
