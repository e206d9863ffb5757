"""`MessagingService`: publish, request-reply and subscribe over the Hub's message bus.

The bus is the in-process one by default, or NATS with ``--nats-url`` (see
:mod:`aether_hub.bus`). Rules:

- Every call needs a live agent session (UNAUTHENTICATED otherwise).
- An agent uses only its own namespace ``agents.<agent_id>.>`` and the Hub's shared
  subjects; reply inboxes are private to their requester (`aether_hub.permissions`).
  Anything else is PERMISSION_DENIED naming the field.
- A malformed request is INVALID_ARGUMENT, the message starting with the field's name:
  ``subject`` (empty, empty tokens, whitespace, or wildcards where none are allowed),
  ``reply_to``, ``queue_group``, ``headers`` (empty names, names with spaces or ':',
  values with line breaks), ``timeout_ms`` (negative).
- Publish and Request answer ``success=false`` with ``error_message`` when the bus cannot
  serve them: ``no responders on subject X``, ``timed out after N ms waiting for a reply
  on X``, a closed bus, a lost NATS connection.
- Subscribe streams :class:`BusMessage` until the client cancels the call; the
  subscription is removed when the call ends, however it ends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Final

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether_hub._wire import pb, runtime, server
from aether_hub.bus import (
    BusError,
    MessageBus,
    SlowConsumerError,
    headers_error,
    subject_error,
)
from aether_hub.permissions import SubjectPolicy
from aether_hub.sessions import SessionRegistry

__all__ = ("DEFAULT_REQUEST_TIMEOUT_MS", "MAX_REQUEST_TIMEOUT_MS", "MessagingService")

_log = logging.getLogger(__name__)

#: Reply timeout of a Request that sets none (the proto's "0 means 5000").
DEFAULT_REQUEST_TIMEOUT_MS: Final = 5000
#: Longest reply wait a Request may ask for (ten minutes).
MAX_REQUEST_TIMEOUT_MS: Final = 600_000


def _check_subject(field: str, subject: str, *, wildcards: bool) -> None:
    problem = subject_error(subject, wildcards=wildcards)
    if problem is not None:
        raise GRPCError(Status.INVALID_ARGUMENT, f"{field}: {problem}")


def _check_headers(headers: Mapping[str, str]) -> None:
    problem = headers_error(headers)
    if problem is not None:
        raise GRPCError(Status.INVALID_ARGUMENT, f"headers: {problem}")


class MessagingService(server.MessagingServiceBase):
    """`aether.v1.MessagingService` over a :class:`~aether_hub.bus.MessageBus`."""

    def __init__(
        self, bus: MessageBus, sessions: SessionRegistry, policy: SubjectPolicy | None = None
    ) -> None:
        self.bus = bus
        self._sessions = sessions
        self.policy = policy or SubjectPolicy()

    async def publish(
        self, request: pb.PublishRequest, context: runtime.ServerContext
    ) -> pb.PublishResponse:
        """Send a message to every subscriber of the subject."""
        session = self._sessions.require(context)
        _check_subject("subject", request.subject, wildcards=False)
        if request.reply_to:
            _check_subject("reply_to", request.reply_to, wildcards=False)
        _check_headers(request.headers)
        self.policy.check_publish(session.agent_id, "subject", request.subject)
        if request.reply_to:
            self.policy.check_publish(session.agent_id, "reply_to", request.reply_to)
        try:
            await self.bus.publish(
                request.subject, request.payload, request.headers, request.reply_to
            )
        except BusError as exc:
            return pb.PublishResponse(success=False, error_message=str(exc))
        return pb.PublishResponse(success=True)

    async def request(
        self, request: pb.RequestRequest, context: runtime.ServerContext
    ) -> pb.RequestResponse:
        """Send a request and wait for the first reply."""
        session = self._sessions.require(context)
        _check_subject("subject", request.subject, wildcards=False)
        _check_headers(request.headers)
        self.policy.check_publish(session.agent_id, "subject", request.subject)
        if request.timeout_ms < 0:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"timeout_ms: must be 0 (the default, {DEFAULT_REQUEST_TIMEOUT_MS}) or more,"
                f" not {request.timeout_ms}",
            )
        timeout_ms = min(request.timeout_ms or DEFAULT_REQUEST_TIMEOUT_MS, MAX_REQUEST_TIMEOUT_MS)
        try:
            reply = await self.bus.request(
                request.subject, request.payload, request.headers, timeout_ms / 1000
            )
        except BusError as exc:
            return pb.RequestResponse(success=False, error_message=str(exc))
        return pb.RequestResponse(success=True, payload=reply.payload, headers=dict(reply.headers))

    async def subscribe(
        self, request: pb.SubscribeRequest, context: runtime.ServerContext
    ) -> AsyncIterator[pb.BusMessage]:
        """Stream the messages published on a subject pattern until the call ends."""
        session = self._sessions.require(context)
        _check_subject("subject", request.subject, wildcards=True)
        if request.queue_group and any(ch.isspace() for ch in request.queue_group):
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"queue_group: {request.queue_group!r} must not contain whitespace",
            )
        self.policy.check_subscribe(session.agent_id, request.subject)
        _log.debug("%s subscribes to %r", session.agent_id, request.subject)
        try:
            async with self.bus.subscribe(request.subject, request.queue_group) as messages:
                # Headers now tell a raw-stream client that the subscription is in place.
                await context.send_initial_metadata()
                async for message in messages:
                    yield pb.BusMessage(
                        subject=message.subject,
                        payload=message.payload,
                        headers=dict(message.headers),
                        reply_to=message.reply_to,
                    )
        except SlowConsumerError as exc:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, str(exc)) from None
        except BusError as exc:
            raise GRPCError(Status.UNAVAILABLE, str(exc)) from None
        finally:
            _log.debug("%s unsubscribed from %r", session.agent_id, request.subject)
