"""A :class:`~aether_hub.bus.MessageBus` bridged to a real NATS server (nats-py).

Used when the Hub runs with ``--nats-url``. nats-py is imported lazily, so the
Hub without that flag does not need the ``[hub]`` extra's NATS client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from aether_hub.bus import (
    DEFAULT_PENDING_BYTES_LIMIT,
    DEFAULT_PENDING_LIMIT,
    BusClosedError,
    BusError,
    BusMessageData,
    InProcessBus,
    MessageBus,
    NoRespondersError,
    RequestTimeoutError,
    Subscription,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ("NatsBus", "create_bus")

_log = logging.getLogger(__name__)


def _redact_url(url: str) -> str:
    """The URL without user:password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


class NatsBus:
    """Publish, request and subscribe through a NATS connection."""

    def __init__(
        self,
        client: Client,
        url: str,
        *,
        pending_limit: int,
        pending_bytes_limit: int = DEFAULT_PENDING_BYTES_LIMIT,
    ) -> None:
        self._nc = client
        self._url = _redact_url(url)
        self._pending_limit = pending_limit
        self._pending_bytes_limit = pending_bytes_limit
        self._queues: set[Subscription] = set()

    def __repr__(self) -> str:
        return f"NatsBus(url={self._url!r})"

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        connect_timeout: float = 5.0,
        pending_limit: int = DEFAULT_PENDING_LIMIT,
        pending_bytes_limit: int = DEFAULT_PENDING_BYTES_LIMIT,
    ) -> NatsBus:
        """Connect to the NATS server at `url`; raises BusError naming the URL on failure."""
        try:
            from nats.aio.client import Client as NatsClient
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise BusError(
                "--nats-url needs the NATS client: pip install 'aether-agent-sdk[hub]'"
            ) from exc

        safe_url = _redact_url(url)
        connected = False
        last_error: list[str] = []

        async def _on_error(exc: Exception) -> None:
            # Errors repeat once per reconnect attempt: keep them out of the warning log.
            if not connected:
                last_error[:] = [str(exc) or type(exc).__name__]
            _log.debug("NATS connection error: %s", exc)

        async def _on_disconnected() -> None:
            _log.warning("lost the connection to NATS at %s; reconnecting", safe_url)

        async def _on_reconnected() -> None:
            _log.info("reconnected to NATS at %s", safe_url)

        client = NatsClient()
        try:
            # nats-py retries the first connection forever when reconnects are
            # unlimited, so bound the whole attempt ourselves.
            await asyncio.wait_for(
                client.connect(
                    url,
                    connect_timeout=max(1, math.ceil(connect_timeout)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    # A Hub that stops should not wait long for a lost server to drain.
                    drain_timeout=2,
                    error_cb=_on_error,
                    disconnected_cb=_on_disconnected,
                    reconnected_cb=_on_reconnected,
                ),
                timeout=connect_timeout,
            )
        except Exception as exc:
            with contextlib.suppress(Exception):
                await client.close()
            reason = last_error[0] if last_error else (str(exc) or type(exc).__name__)
            raise BusError(f"cannot connect to NATS at {safe_url}: {reason}") from None
        connected = True
        _log.info("connected to NATS at %s", safe_url)
        return cls(
            client, url, pending_limit=pending_limit, pending_bytes_limit=pending_bytes_limit
        )

    async def publish(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str],
        reply_to: str = "",
    ) -> None:
        """Publish on NATS (headers only when there are some)."""
        from nats.errors import Error as NatsError

        if self._nc.is_closed:
            raise BusClosedError()
        try:
            await self._nc.publish(subject, payload, reply=reply_to, headers=dict(headers) or None)
        except (NatsError, OSError) as exc:
            raise BusError(f"NATS publish on {subject} failed: {exc}") from None

    async def request(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str],
        timeout: float,
    ) -> BusMessageData:
        """NATS request-reply; no responders and timeouts become the bus errors."""
        from nats.errors import Error as NatsError
        from nats.errors import NoRespondersError as NatsNoResponders
        from nats.errors import TimeoutError as NatsTimeout

        if self._nc.is_closed:
            raise BusClosedError()
        try:
            reply = await self._nc.request(
                subject, payload, timeout=timeout, headers=dict(headers) or None
            )
        except NatsNoResponders:
            raise NoRespondersError(subject) from None
        except (NatsTimeout, asyncio.TimeoutError):
            raise RequestTimeoutError(subject, timeout) from None
        except (NatsError, OSError) as exc:
            raise BusError(f"NATS request on {subject} failed: {exc}") from None
        return _to_data(reply)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, subject: str, queue_group: str = ""
    ) -> AsyncIterator[AsyncIterator[BusMessageData]]:
        """A NATS subscription for the lifetime of the context."""
        if self._nc.is_closed:
            raise BusClosedError()
        queue = Subscription(subject, queue_group, self._pending_limit, self._pending_bytes_limit)

        async def _on_message(msg: Msg) -> None:
            queue.offer(_to_data(msg))

        from nats.errors import Error as NatsError

        try:
            sub = await self._nc.subscribe(subject, queue=queue_group, cb=_on_message)
        except (NatsError, OSError) as exc:
            raise BusError(f"NATS subscribe to {subject} failed: {exc}") from None
        # Make sure the server knows the subscription before the caller publishes; while
        # reconnecting nats-py re-sends it after the reconnect instead.
        with contextlib.suppress(NatsError, OSError, asyncio.TimeoutError):
            await self._nc.flush(timeout=5)

        self._queues.add(queue)
        try:
            yield queue
        finally:
            if queue in self._queues:
                self._queues.discard(queue)
                queue.end()
            if not self._nc.is_closed:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def close(self) -> None:
        """End the subscriptions, then drain and close the NATS connection."""
        for queue in self._queues:
            queue.end()
        self._queues.clear()
        if self._nc.is_closed:
            return
        if not self._nc.is_connected:
            # Nothing to drain while reconnecting (and drain would wait for its timeout).
            with contextlib.suppress(Exception):
                await self._nc.close()
            return
        try:
            await self._nc.drain()
        except Exception as exc:
            # Draining needs a live connection; while reconnecting just close.
            _log.debug("NATS drain failed (%s); closing", exc)
            try:
                await self._nc.close()
            except Exception as close_exc:
                _log.debug("closing the NATS connection failed: %s", close_exc)


def _to_data(msg: Msg) -> BusMessageData:
    return BusMessageData(
        subject=msg.subject,
        payload=msg.data,
        headers=dict(msg.headers or {}),
        reply_to=msg.reply or "",
    )


async def create_bus(
    nats_url: str | None, *, pending_bytes_limit: int = DEFAULT_PENDING_BYTES_LIMIT
) -> MessageBus:
    """The in-process bus, or a bus bridged to the NATS server at `nats_url`; a
    subscriber with more than `pending_bytes_limit` bytes waiting is cut off."""
    if not nats_url:
        return InProcessBus(pending_bytes_limit=pending_bytes_limit)
    return await NatsBus.connect(nats_url, pending_bytes_limit=pending_bytes_limit)
