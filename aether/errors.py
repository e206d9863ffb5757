"""The SDK's exceptions: one root, a connection branch and a status branch.

Every error says whether retrying may help (`retryable`) and carries the gRPC status it came
from when there was one (`status`). Messages say what to check; none ever contains a secret.
"""

from __future__ import annotations

import asyncio
import ssl

from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

__all__ = (
    "AetherConfigError",
    "AetherConnectionError",
    "AetherError",
    "AgentStateError",
    "AuthenticationError",
    "HubError",
    "MessageTooLargeError",
    "PermissionDeniedError",
    "RegistrationError",
    "TaskContextError",
    "map_exception",
)

# Statuses after which the same call may succeed on a fresh connection.
_RETRYABLE_STATUSES = frozenset(
    {Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.ABORTED, Status.CANCELLED}
)


class AetherError(Exception):
    """Root of every error the SDK raises."""

    status: Status | None
    retryable: bool

    def __init__(
        self, message: str, *, status: Status | None = None, retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class AetherConfigError(AetherError, ValueError):
    """A configuration value is invalid; `variable` names the field or environment variable."""

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class AetherConnectionError(AetherError):
    """The Hub could not be reached, or the connection to it broke."""

    def __init__(
        self,
        message: str,
        *,
        hub_url: str | None = None,
        status: Status | None = Status.UNAVAILABLE,
        retryable: bool = True,
    ) -> None:
        super().__init__(message, status=status, retryable=retryable)
        self.hub_url = hub_url


class AuthenticationError(AetherError):
    """The Hub rejected the agent's secret or session token (UNAUTHENTICATED). Not retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=Status.UNAUTHENTICATED, retryable=False)


class PermissionDeniedError(AetherError):
    """The Hub refused the call for this session (PERMISSION_DENIED)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=Status.PERMISSION_DENIED, retryable=False)


class RegistrationError(AetherError):
    """The Hub answered Register with success=false."""


class HubError(AetherError):
    """The Hub answered a call with a non-OK gRPC status not covered by a narrower error."""


class MessageTooLargeError(HubError):
    """A message exceeds `max_message_bytes` (RESOURCE_EXHAUSTED)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=Status.RESOURCE_EXHAUSTED, retryable=False)


class AgentStateError(AetherError, RuntimeError):
    """An agent or client method was called in a state that does not allow it."""


class TaskContextError(AgentStateError):
    """A task-scoped call was made outside a running `handle_task`."""


def _scrub(text: str, secret: str | None) -> str:
    if secret:
        return text.replace(secret, "***")
    return text


def map_exception(
    exc: BaseException,
    *,
    hub_url: str,
    operation: str,
    secret: str | None = None,
) -> AetherError:
    """Translate a transport or gRPC failure into the SDK's own error type.

    `operation` names what was being done (e.g. "Register") for the message; `secret`, when
    given, is scrubbed from any text that came from the peer.
    """
    if isinstance(exc, AetherError):
        return exc
    if isinstance(exc, GRPCError):
        detail = _scrub(exc.message or exc.status.name, secret)
        if exc.status is Status.UNAUTHENTICATED:
            return AuthenticationError(
                f"{operation} failed: UNAUTHENTICATED ({detail}). The Hub at {hub_url} "
                "rejected the agent's credentials: check that AETHER_AGENT_SECRET / "
                "AgentConfig.secret / metadata['secret'] matches the agent record in the Hub."
            )
        if exc.status is Status.PERMISSION_DENIED:
            return PermissionDeniedError(f"{operation} failed: PERMISSION_DENIED ({detail})")
        if exc.status is Status.RESOURCE_EXHAUSTED:
            return MessageTooLargeError(f"{operation} failed: RESOURCE_EXHAUSTED ({detail})")
        if exc.status is Status.UNAVAILABLE:
            return AetherConnectionError(
                f"{operation} failed: the Hub at {hub_url} is unavailable ({detail}). "
                "Check that the Hub is running and hub_url / AETHER_HUB_URL is right.",
                hub_url=hub_url,
            )
        return HubError(
            f"{operation} failed: {exc.status.name} ({detail})",
            status=exc.status,
            retryable=exc.status in _RETRYABLE_STATUSES,
        )
    if isinstance(exc, ssl.SSLError):
        return AetherConnectionError(
            f"{operation} failed: TLS error talking to the Hub at {hub_url} ({exc}). Check the "
            "CA file, client certificate and key, and the server name (tls_* settings).",
            hub_url=hub_url,
            retryable=False,
        )
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return AetherConnectionError(
            f"{operation} timed out talking to the Hub at {hub_url}.",
            hub_url=hub_url,
            status=Status.DEADLINE_EXCEEDED,
        )
    if isinstance(exc, (OSError, StreamTerminatedError, ProtocolError, EOFError)):
        detail = _scrub(str(exc) or type(exc).__name__, secret)
        return AetherConnectionError(
            f"{operation} failed: cannot reach the Aether Hub at {hub_url} ({detail}). Check "
            "that the Hub is running, that hub_url / AETHER_HUB_URL points to the right host "
            "and port, and that firewalls allow the connection.",
            hub_url=hub_url,
        )
    return AetherError(f"{operation} failed: {type(exc).__name__}: {_scrub(str(exc), secret)}")
