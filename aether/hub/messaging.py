"""`self.hub.messaging`: publish, request-reply and subscriptions on subjects."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from pydantic import Field

from aether._json import JsonValue, dumps, loads
from aether._wire import pb
from aether.hub._base import Facade, HubResponse

__all__ = ("BusMessage", "Messaging", "PublishResponse", "RequestResponse")

#: Extra time the gRPC call gets beyond a request's own reply timeout.
_REQUEST_MARGIN = 5.0


def _payload(payload: JsonValue | bytes) -> bytes:
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    return dumps(payload, what="payload").encode()


class PublishResponse(HubResponse):
    """The Hub's answer to publish()."""

    success: bool = False
    error_message: str = ""


class RequestResponse(HubResponse):
    """The reply to request(); `.json()` parses the payload."""

    success: bool = False
    payload: bytes = b""
    headers: dict[str, str] = Field(default_factory=dict)
    error_message: str = ""

    def json(self) -> JsonValue:  # type: ignore[override]  # BaseModel.json is deprecated
        """The payload parsed as JSON."""
        return loads(self.payload)


class BusMessage(HubResponse):
    """A message received on a subscription; `.json()` parses the payload."""

    subject: str = ""
    payload: bytes = b""
    headers: dict[str, str] = Field(default_factory=dict)
    reply_to: str = ""

    def json(self) -> JsonValue:  # type: ignore[override]  # BaseModel.json is deprecated
        """The payload parsed as JSON."""
        return loads(self.payload)


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
        try:
            reply = await self._client.messaging_stub().publish(request, timeout=timeout)
        except Exception as exc:
            raise self._client.map_error(exc, f"Publish to {subject!r}") from None
        return PublishResponse.model_construct(
            success=reply.success, error_message=reply.error_message
        )

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
        try:
            reply = await self._client.messaging_stub().request(
                request, timeout=timeout + _REQUEST_MARGIN
            )
        except Exception as exc:
            raise self._client.map_error(exc, f"Request on {subject!r}") from None
        return RequestResponse.model_construct(
            success=reply.success,
            payload=reply.payload,
            headers=dict(reply.headers),
            error_message=reply.error_message,
        )

    async def subscribe(self, subject: str, queue_group: str = "") -> AsyncIterator[BusMessage]:
        """Messages published on `subject` (a pattern), until the iteration stops."""
        request = pb.SubscribeRequest(subject=subject, queue_group=queue_group)
        try:
            async for msg in self._client.messaging_stub().subscribe(request):
                yield BusMessage.model_construct(
                    subject=msg.subject,
                    payload=msg.payload,
                    headers=dict(msg.headers),
                    reply_to=msg.reply_to,
                )
        except Exception as exc:
            raise self._client.map_error(exc, f"Subscribe to {subject!r}") from None
