"""The latest message of every key of a JetStream key-value bucket that matches a subject
(what the memory and enrolment buckets list: aether_hub/memory_jetstream.py,
aether_hub/agents_jetstream.py).

An ordered consumer delivering the last message per subject reads them in one pass; the
stream says with each message how many more match, so the pass ends at the last one
without waiting for a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

__all__ = ("latest_per_key",)


async def latest_per_key(
    js: JetStreamContext,
    stream: str,
    subject: str,
    *,
    headers_only: bool = False,
    timeout: float = 5.0,
) -> list[Msg]:
    """The latest message of every subject of `stream` matching `subject`, deletions
    included; each waited for at most `timeout` seconds (nats-py's errors propagate)."""
    import nats.errors
    from nats.js.api import DeliverPolicy

    got: asyncio.Queue[Msg] = asyncio.Queue()

    async def take(msg: Msg) -> None:
        got.put_nowait(msg)

    sub = await js.subscribe(
        subject,
        stream=stream,
        cb=take,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        headers_only=headers_only,
        inactive_threshold=60.0,
    )
    try:
        info = await sub.consumer_info()
        delivered = info.delivered.consumer_seq if info.delivered else 0
        if not info.num_pending and not delivered:
            return []
        msgs: list[Msg] = []
        while True:
            msg = await asyncio.wait_for(got.get(), timeout)
            msgs.append(msg)
            if msg.metadata.num_pending == 0:
                return msgs
    finally:
        with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError, OSError):
            await sub.unsubscribe()
