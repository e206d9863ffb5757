"""`self.hub.messaging`: publish, request-reply and subscriptions on subjects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping

from aether._backoff import backoff_delay
from aether._json import JsonValue, dumps
from aether._tracing import client_span
from aether._wire import models, pb
from aether.client import AgentClient
from aether.errors import AetherConnectionError
from aether.hub._base import Facade

__all__ = ("BusMessage", "Messaging", "PublishResponse", "RequestResponse")

log = logging.getLogger("aether.hub.messaging")

#: Extra time the gRPC call gets beyond a request's own reply timeout.
_REQUEST_MARGIN = 5.0


def _payload(payload: JsonValue | bytes) -> bytes:
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    return dumps(payload, what="payload").encode()


#: The Hub's answer to publish() (the generated model).
PublishResponse = models.PublishResponse
#: The reply to request() (the generated model); `aether.json_payload(reply)` parses its
#: payload.
RequestResponse = models.RequestResponse
#: A message received on a subscription (the generated model);
#: `aether.json_payload(message)` parses its payload.
BusMessage = models.BusMessage


class Messaging(Facade):
    """Messages on subjects with NATS semantics (`*` and `>` wildcards in subscriptions)."""

    async def publish(
        self,
        subject: str,
        payload: JsonValue | bytes = b"",
        headers: Mapping[str, str] | None = None,
        *,
        reply_to: str = "",
        timeout: float | None = None,
    ) -> PublishResponse:
        """Publish `payload` (bytes as is, anything else as JSON) to `subject`."""
        request = pb.PublishRequest(
            subject=subject,
            payload=_payload(payload),
            headers=dict(headers or {}),
            reply_to=reply_to,
        )
        timeout = await self._client.wait_for_session(timeout)
        with client_span("/aether.v1.MessagingService/Publish") as call:
            call.set("messaging.destination.name", subject)
            try:
                reply = await self._client._messaging_stub().publish(
                    request, timeout=timeout, metadata=call.metadata
                )
            except Exception as exc:
                raise self._client.map_error(exc, f"Publish to {subject!r}") from None
        return models.PublishResponse.from_wire(reply)

    async def request(
        self,
        subject: str,
        payload: JsonValue | bytes = b"",
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
    ) -> RequestResponse:
        """Send a request and wait up to `timeout` seconds for the first reply."""
        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout}")
        request = pb.RequestRequest(
            subject=subject,
            payload=_payload(payload),
            timeout_ms=max(1, round(timeout * 1000)),
            headers=dict(headers or {}),
        )
        await self._client.wait_for_session(timeout)
        with client_span("/aether.v1.MessagingService/Request") as call:
            call.set("messaging.destination.name", subject)
            try:
                reply = await self._client._messaging_stub().request(
                    request, timeout=timeout + _REQUEST_MARGIN, metadata=call.metadata
                )
            except Exception as exc:
                raise self._client.map_error(exc, f"Request on {subject!r}") from None
        return models.RequestResponse.from_wire(reply)

    async def subscribe(self, subject: str, queue_group: str = "") -> AsyncIterator[BusMessage]:
        """Messages published on `subject` (a pattern), until the iteration stops.

        The subscription survives reconnects: when the connection to the Hub breaks, the
        iteration waits for the agent's new session and subscribes again on it, then goes
        on yielding. Messages published while no subscription was active (between the
        break and the new subscription) are not replayed: delivery is at-most-once, as in
        NATS core. The iteration ends (without an error) when the agent stops or gives up
        reconnecting. Errors other than a broken connection (e.g. permission denied) are
        raised.
        """
        request = pb.SubscribeRequest(subject=subject, queue_group=queue_group)
        client = self._client
        await client.wait_for_session()
        failures = 0  # consecutive broken subscriptions that delivered nothing
        while True:
            generation = client.session_generation
            try:
                async for msg in client._messaging_stub().subscribe(request):
                    failures = 0
                    yield models.BusMessage.from_wire(msg)
            except Exception as exc:
                error = client.map_error(exc, f"Subscribe to {subject!r}")
                if client.is_closed:  # stopped while subscribed: end quietly
                    return
                if not (isinstance(error, AetherConnectionError) and error.retryable):
                    raise error from None
                log.info("subscription to %r broke (%s); resubscribing", subject, error)
            else:
                if client.is_closed:
                    return
                if client.registration is not None and generation == client.session_generation:
                    return  # the Hub ended the subscription on a live session
            delay = backoff_delay(
                failures,
                client.config.reconnect_delay,
                max_delay=client.config.max_reconnect_delay,
            )
            failures += 1
            if not await _await_resubscribe(client, generation, delay):
                return


async def _await_resubscribe(client: AgentClient, generation: int, delay: float) -> bool:
    """After a broken subscription: True once it can be made again, False when the agent
    stopped.

    A new session is used as soon as it is registered. The stream may also break before
    the agent noticed anything (or for a reason of the Hub's own); when the same session is
    still live after `delay`, subscribe again on it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + delay
    while not client.is_closed:
        if client.registration is not None:
            if client.session_generation != generation:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return True
            await client.wait_for_change(remaining)
        else:
            await client.wait_for_change()
    return False
