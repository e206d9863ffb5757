"""The Hub's message bus: NATS subject semantics, in process by default.

Subjects are tokens separated by ``.`` (``review.completed``). A subscription
pattern may use ``*`` for exactly one token and ``>`` (last token only) for one
or more trailing tokens. Subscribers that share a queue group get each message
once per group (round robin among the members); every other subscriber gets
every message.

:func:`aether_hub.nats_bus.create_bus` picks the :class:`InProcessBus` or a bus
bridged to a real NATS server, the way to run several Hubs and agents across machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

__all__ = (
    "DEFAULT_PENDING_BYTES_LIMIT",
    "DEFAULT_PENDING_LIMIT",
    "BusClosedError",
    "BusError",
    "BusMessageData",
    "InProcessBus",
    "MessageBus",
    "NoRespondersError",
    "RequestTimeoutError",
    "SlowConsumerError",
    "Subscription",
    "headers_error",
    "subject_error",
    "subject_matches",
)

_log = logging.getLogger(__name__)

#: Messages a subscriber may have waiting before newer ones are dropped (NATS calls
#: such a subscriber a slow consumer); a bound keeps one stuck client from eating memory.
DEFAULT_PENDING_LIMIT = 65_536
#: Bytes of messages (payload, subject, headers) a subscriber may have waiting; past it
#: the subscription ends with `SlowConsumerError` (others are not affected).
DEFAULT_PENDING_BYTES_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BusMessageData:
    """One message as the bus carries it."""

    subject: str
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    reply_to: str = ""


class BusError(Exception):
    """Base of the errors a bus raises for a call that could not be served."""


class NoRespondersError(BusError):
    """A request was published on a subject nobody subscribes to."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"no responders on subject {subject}")
        self.subject = subject


class RequestTimeoutError(BusError):
    """No reply to a request arrived in time."""

    def __init__(self, subject: str, timeout: float) -> None:
        super().__init__(
            f"timed out after {round(timeout * 1000)} ms waiting for a reply on {subject}"
        )
        self.subject = subject
        self.timeout = timeout


class SlowConsumerError(BusError):
    """A subscriber fell so far behind that its waiting messages passed the byte limit."""

    def __init__(self, subject: str, pending_bytes: int, limit: int) -> None:
        super().__init__(
            f"subscription to {subject!r} cut off: the subscriber fell behind with"
            f" {pending_bytes} bytes of messages waiting; the limit is {limit} bytes"
            " (the Hub's --subscriber-max-bytes). Read faster, then subscribe again"
        )
        self.subject = subject


class BusClosedError(BusError):
    """The bus was closed."""

    def __init__(self) -> None:
        super().__init__("the message bus is closed")


class MessageBus(Protocol):
    """What the messaging service needs from a bus (in process or NATS)."""

    async def publish(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str],
        reply_to: str = "",
    ) -> None:
        """Send a message to every matching subscriber (one per queue group)."""
        ...

    async def request(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str],
        timeout: float,
    ) -> BusMessageData:
        """Publish with a fresh reply subject and return the first reply.

        Raises :class:`NoRespondersError` or :class:`RequestTimeoutError`.
        """
        ...

    def subscribe(
        self, subject: str, queue_group: str = ""
    ) -> AbstractAsyncContextManager[AsyncIterator[BusMessageData]]:
        """A subscription that lives as long as the context; iterate it for messages."""
        ...

    async def close(self) -> None:
        """End every subscription and refuse further calls."""
        ...


def subject_error(subject: str, *, wildcards: bool) -> str | None:
    """Why `subject` is not a valid subject (or pattern, when `wildcards`), or None."""
    if not subject:
        return "must not be empty"
    if any(ch.isspace() for ch in subject):
        return f"{subject!r} must not contain whitespace"
    tokens = subject.split(".")
    if any(not token for token in tokens):
        return f"{subject!r} has an empty token (leading, trailing or double '.')"
    for index, token in enumerate(tokens):
        if token in ("*", ">"):
            if not wildcards:
                return f"{subject!r} must not contain wildcards ('*' or '>')"
            if token == ">" and index != len(tokens) - 1:
                return f"{subject!r}: '>' is only allowed as the last token"
    return None


def headers_error(headers: Mapping[str, str]) -> str | None:
    """Why `headers` cannot travel on the bus (NATS header rules), or None."""
    for key, value in headers.items():
        if not key:
            return "a header name must not be empty"
        if not all(33 <= ord(ch) <= 126 and ch != ":" for ch in key):
            return f"header name {key!r} must be printable ASCII without ':' or spaces"
        if "\r" in value or "\n" in value:
            return f"the value of header {key!r} must not contain line breaks"
    return None


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a literal `subject` matches a subscription `pattern` (NATS rules)."""
    return _tokens_match(pattern.split("."), subject.split("."))


def _tokens_match(pattern: list[str], subject: list[str]) -> bool:
    for index, token in enumerate(pattern):
        if token == ">":
            return len(subject) > index
        if index >= len(subject):
            return False
        if token != "*" and token != subject[index]:
            return False
    return len(pattern) == len(subject)


def message_size(message: BusMessageData) -> int:
    """What a waiting message is counted as: payload, subject, reply subject and headers."""
    size = len(message.payload) + len(message.subject) + len(message.reply_to)
    for key, value in message.headers.items():
        size += len(key) + len(value)
    return size


class Subscription:
    """One subscription's waiting messages, bounded in number and in bytes.

    Past `pending_limit` messages newer ones are dropped (logged once); past
    `pending_bytes_limit` bytes the subscription ends, and its reader gets
    `SlowConsumerError`. Iterate it for the messages.
    """

    def __init__(
        self,
        pattern: str,
        queue_group: str = "",
        pending_limit: int = DEFAULT_PENDING_LIMIT,
        pending_bytes_limit: int = DEFAULT_PENDING_BYTES_LIMIT,
    ) -> None:
        self.pattern = pattern
        self.tokens = pattern.split(".")
        self.queue_group = queue_group
        self.dropped = 0
        self._pending_limit = pending_limit
        self._bytes_limit = pending_bytes_limit
        self._pending_bytes = 0
        self._queue: asyncio.Queue[BusMessageData | None] = asyncio.Queue()
        self._closed = False
        self.failure: BusError | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes of messages waiting to be read."""
        return self._pending_bytes

    def offer(self, message: BusMessageData) -> None:
        if self._closed:
            return
        size = message_size(message)
        if self._pending_bytes + size > self._bytes_limit:
            error = SlowConsumerError(self.pattern, self._pending_bytes + size, self._bytes_limit)
            _log.warning("%s", error)
            self.end(error)
            return
        if self._queue.qsize() >= self._pending_limit:
            if self.dropped == 0:
                _log.warning("subscriber of %r is not keeping up; dropping messages", self.pattern)
            self.dropped += 1
            return
        self._pending_bytes += size
        self._queue.put_nowait(message)

    def end(self, failure: BusError | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self.failure = failure
        # The end marker must get through at once: what still waits is dropped.
        with contextlib.suppress(asyncio.QueueEmpty):
            while not self._queue.empty():
                self._queue.get_nowait()
        self._pending_bytes = 0
        self._queue.put_nowait(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> BusMessageData:
        message = await self._queue.get()
        if message is None:
            # Keep answering "done" to later readers too.
            self._queue.put_nowait(None)
            if self.failure is not None:
                raise self.failure
            raise StopAsyncIteration
        self._pending_bytes -= message_size(message)
        return message


class InProcessBus:
    """A message bus inside the Hub process, with NATS subject semantics."""

    def __init__(
        self,
        *,
        pending_limit: int = DEFAULT_PENDING_LIMIT,
        pending_bytes_limit: int = DEFAULT_PENDING_BYTES_LIMIT,
    ) -> None:
        self._pending_limit = pending_limit
        self._pending_bytes_limit = pending_bytes_limit
        self._subscriptions: list[Subscription] = []
        self._round_robin: dict[str, itertools.count[int]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"InProcessBus(subscriptions={len(self._subscriptions)})"

    @property
    def subscription_count(self) -> int:
        """How many subscriptions are live (useful to wait for a subscriber in tests)."""
        return len(self._subscriptions)

    async def publish(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str],
        reply_to: str = "",
    ) -> None:
        """Deliver a message to the matching subscribers."""
        self._deliver(BusMessageData(subject, payload, dict(headers), reply_to))

    async def request(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str],
        timeout: float,
    ) -> BusMessageData:
        """Publish with a private reply subject and wait for the first reply."""
        inbox = f"_INBOX.{uuid.uuid4().hex}"
        async with self.subscribe(inbox) as replies:
            delivered = self._deliver(BusMessageData(subject, payload, dict(headers), inbox))
            if delivered == 0:
                raise NoRespondersError(subject)
            try:
                return await asyncio.wait_for(anext(replies), timeout)
            except asyncio.TimeoutError:
                raise RequestTimeoutError(subject, timeout) from None
            except StopAsyncIteration:
                raise BusClosedError() from None

    @contextlib.asynccontextmanager
    async def subscribe(
        self, subject: str, queue_group: str = ""
    ) -> AsyncIterator[AsyncIterator[BusMessageData]]:
        """Subscribe to a pattern for the lifetime of the context."""
        if self._closed:
            raise BusClosedError()
        subscription = Subscription(
            subject, queue_group, self._pending_limit, self._pending_bytes_limit
        )
        self._subscriptions.append(subscription)
        try:
            yield subscription
        finally:
            subscription.end()
            with contextlib.suppress(ValueError):
                self._subscriptions.remove(subscription)

    async def close(self) -> None:
        """End every subscription; later calls raise :class:`BusClosedError`."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.end()
        self._subscriptions.clear()

    def _deliver(self, message: BusMessageData) -> int:
        if self._closed:
            raise BusClosedError()
        tokens = message.subject.split(".")
        groups: dict[str, list[Subscription]] = {}
        delivered = 0
        for subscription in self._subscriptions:
            if not _tokens_match(subscription.tokens, tokens):
                continue
            if subscription.queue_group:
                groups.setdefault(subscription.queue_group, []).append(subscription)
            else:
                subscription.offer(message)
                delivered += 1
        for name, members in groups.items():
            turn = next(self._round_robin.setdefault(name, itertools.count()))
            members[turn % len(members)].offer(message)
            delivered += 1
        return delivered
