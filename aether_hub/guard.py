"""One guard around every handler of the Hub: failures of the Hub's own storage become a
retryable gRPC status with a clear message, instead of grpclib's `UNKNOWN: Internal Server
Error` (which clients treat as permanent).

- `StoreUnavailableError` (a task change that could not be committed) → UNAVAILABLE.
- Any other `sqlite3.Error` escaping a handler (a full disk, a read-only file while storing
  memory, enrolments...) → UNAVAILABLE naming the cause.

Handlers' own `GRPCError`s pass through untouched.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether_hub.taskstore import StoreUnavailableError, describe_db_error

__all__ = ("GuardedService", "guard_handler")

log = logging.getLogger("aether_hub.guard")

# grpclib's handler functions take the server stream (typed loosely by grpclib itself).
_HandlerFunc = Callable[["grpclib.server.Stream[Any, Any]"], Coroutine[Any, Any, None]]


def guard_handler(method: str, func: _HandlerFunc) -> _HandlerFunc:
    """`func` with storage failures answered as UNAVAILABLE."""

    async def handle(stream: grpclib.server.Stream[Any, Any]) -> None:
        try:
            await func(stream)
        except StoreUnavailableError as exc:
            raise GRPCError(Status.UNAVAILABLE, str(exc)) from None
        except sqlite3.Error as exc:
            reason = describe_db_error(exc)
            log.warning("%s: the Hub's database refused the call (%s)", method, reason)
            raise GRPCError(
                Status.UNAVAILABLE,
                f"the Hub's database cannot be used ({reason}); nothing was changed, retry later",
            ) from None

    return handle


class _Service(Protocol):
    max_message_bytes: int

    def __mapping__(self) -> dict[str, grpclib.const.Handler]: ...


class GuardedService:
    """A service whose handlers are wrapped by `guard_handler` (what the server serves)."""

    def __init__(self, service: _Service) -> None:
        self.service = service
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
            name: handler._replace(func=guard_handler(name, handler.func))
            for name, handler in mapping.items()
        }
