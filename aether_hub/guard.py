"""One guard around every handler of the Hub: failures of the Hub's own storage become a
retryable gRPC status with a clear message, instead of grpclib's `UNKNOWN: Internal Server
Error` (which clients treat as permanent).

- `StoreUnavailableError` (a task change that could not be committed) → UNAVAILABLE.
- Any other `sqlite3.Error` escaping a handler (a full disk, a read-only file while storing
  memory, enrolments...) → UNAVAILABLE naming the cause.
- Every call (but per-session plumbing) gets an OpenTelemetry SERVER span, a child of
  the caller's ``traceparent`` header (`aether_hub.tracing`).
- A request message (of any method, unary or streamed) holding an enum value its enum
  does not name, at any depth → INVALID_ARGUMENT naming the field (``scope: unknown
  MemoryScope value 42 ...``), before the handler sees the message. Checked generically
  from the generated messages' field metadata, as each message is decoded.

Handlers' own `GRPCError`s pass through untouched.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import betterproto2
import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether_hub.metrics import HubMetrics
from aether_hub.taskstore import StoreUnavailableError, describe_db_error
from aether_hub.tracing import server_span

__all__ = ("GuardedService", "guard_handler", "invalid_enum_field")

log = logging.getLogger("aether_hub.guard")

# grpclib's handler functions take the server stream (typed loosely by grpclib itself).
_HandlerFunc = Callable[["grpclib.server.Stream[Any, Any]"], Coroutine[Any, Any, None]]


# Per message class: its fields that may hold an enum somewhere (enum, message, map).
_CHECKED_KINDS: frozenset[str] = frozenset({"enum", "message", "map"})
_checked_fields: dict[type[Any], tuple[tuple[str, str], ...]] = {}


def _fields_to_check(cls: type[Any]) -> tuple[tuple[str, str], ...]:
    found = _checked_fields.get(cls)
    if found is None:
        pairs: list[tuple[str, str]] = []
        for f in dataclasses.fields(cls):
            meta = f.metadata.get("betterproto")
            kind = getattr(meta, "proto_type", None)
            if kind in _CHECKED_KINDS:
                pairs.append((f.name, str(kind)))
        found = tuple(pairs)
        _checked_fields[cls] = found
    return found


def _value_problem(value: object, path: str) -> str | None:
    if isinstance(value, betterproto2.Enum):
        enum_type = type(value)
        if value._value_ not in enum_type._value2member_map_:
            known = ", ".join(f"{m.value} {m.name}" for m in enum_type)
            return f"{path}: unknown {enum_type.__name__} value {int(value)} (known: {known})"
        return None
    if isinstance(value, betterproto2.Message):
        return invalid_enum_field(value, path)
    return None


def invalid_enum_field(message: object, prefix: str = "") -> str | None:
    """The first field of `message` (at any depth) holding an enum value its enum does not
    name, as ``path: problem``; None when every enum value is known."""
    if not dataclasses.is_dataclass(message) or isinstance(message, type):
        return None
    for name, _ in _fields_to_check(type(message)):
        value = getattr(message, name, None)
        path = f"{prefix}{name}"
        if isinstance(value, list):
            for i, item in enumerate(value):
                problem = _value_problem(item, f"{path}[{i}]")
                if problem is not None:
                    return problem
        elif isinstance(value, dict):
            for key, item in value.items():
                problem = _value_problem(item, f"{path}[{key!r}]")
                if problem is not None:
                    return problem
        elif value is not None:
            problem = _value_problem(value, path)
            if problem is not None:
                return problem
    return None


class _CheckingDispatch:
    """A stream's event dispatcher that refuses a request message with an unknown enum
    value as it is received (the generated handlers pass every decoded request through
    `stream._dispatch.recv_message`); everything else goes to the real dispatcher."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def recv_message(self, message: Any) -> Any:
        problem = invalid_enum_field(message)
        if problem is not None:
            raise GRPCError(Status.INVALID_ARGUMENT, problem)
        return await self._inner.recv_message(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def guard_handler(
    method: str, func: _HandlerFunc, metrics: HubMetrics | None = None
) -> _HandlerFunc:
    """`func` with storage failures answered as UNAVAILABLE and request messages with
    unknown enum values as INVALID_ARGUMENT; each call counted and timed by its final
    status in `metrics` when given."""

    async def handle(stream: grpclib.server.Stream[Any, Any]) -> None:
        stream._dispatch = _CheckingDispatch(stream._dispatch)  # type: ignore[assignment]  # same interface, checked
        with server_span(method, stream.metadata):
            try:
                await func(stream)
            except StoreUnavailableError as exc:
                raise GRPCError(Status.UNAVAILABLE, str(exc)) from None
            except sqlite3.Error as exc:
                reason = describe_db_error(exc)
                log.warning("%s: the Hub's database refused the call (%s)", method, reason)
                raise GRPCError(
                    Status.UNAVAILABLE,
                    f"the Hub's database cannot be used ({reason}); nothing was changed,"
                    " retry later",
                ) from None

    return handle if metrics is None else metrics.instrument(method, handle)


class _Service(Protocol):
    max_message_bytes: int

    def __mapping__(self) -> dict[str, grpclib.const.Handler]: ...


class GuardedService:
    """A service whose handlers are wrapped by `guard_handler` (what the server serves)."""

    def __init__(self, service: _Service, *, metrics: HubMetrics | None = None) -> None:
        self.service = service
        self._metrics = metrics
        self.SERVICE_NAME: str = str(getattr(service, "SERVICE_NAME", ""))

    @property
    def max_message_bytes(self) -> int:
        """The wrapped service's request size limit."""
        return self.service.max_message_bytes

    @max_message_bytes.setter
    def max_message_bytes(self, value: int) -> None:
        self.service.max_message_bytes = value

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping = self.service.__mapping__()
        return {
            name: handler._replace(func=guard_handler(name, handler.func, self._metrics))
            for name, handler in mapping.items()
        }
