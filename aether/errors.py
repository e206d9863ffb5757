"""The SDK's exceptions: one root, a connection branch and a status branch.

Every error says whether retrying may help (`retryable`) and carries the gRPC status it came
from when there was one (`status`). Messages say what to check; none ever contains a secret.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Final

from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

if TYPE_CHECKING:
    from aether._wire import models, pb

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
    "TaskNotFoundError",
    "TaskWaitTimeoutError",
    "map_exception",
    "method_not_served",
)

# Statuses after which the same call may succeed on a fresh connection.
_RETRYABLE_STATUSES = frozenset(
    {Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.ABORTED, Status.CANCELLED}
)


class AetherError(Exception):
    """Root of every error the SDK raises.

    `detail` is the Hub's own explanation (a gRPC status message) or the transport's,
    without the SDK's advice around it; "" when there was none.
    """

    status: Status | None
    retryable: bool

    def __init__(
        self,
        message: str,
        *,
        status: Status | None = None,
        retryable: bool = False,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.detail = detail

    def __str__(self) -> str:
        return self.message


class AetherConfigError(AetherError, ValueError):
    """A configuration value is invalid; `variable` names the field or environment variable."""

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class AetherConnectionError(AetherError):
    """The Hub could not be reached, or the connection to it broke.

    `reason` is one short word for programs: "refused" (nothing listens there), "timeout",
    "lost" (the connection broke), "tls" (a TLS failure), "not-tls" (TLS to a plaintext
    Hub), "unavailable" (the Hub answered UNAVAILABLE), "unreachable" (any other network
    failure) or "" (not from `map_exception`).
    """

    def __init__(
        self,
        message: str,
        *,
        hub_url: str | None = None,
        status: Status | None = Status.UNAVAILABLE,
        retryable: bool = True,
        reason: str = "",
        detail: str = "",
    ) -> None:
        super().__init__(message, status=status, retryable=retryable, detail=detail)
        self.hub_url = hub_url
        self.reason = reason


class AuthenticationError(AetherError):
    """The Hub rejected the credentials: the agent's secret or session token, or a
    client's token (UNAUTHENTICATED). Not retried."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message, status=Status.UNAUTHENTICATED, retryable=False, detail=detail)


class PermissionDeniedError(AetherError):
    """The Hub refused the call for this session (PERMISSION_DENIED)."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message, status=Status.PERMISSION_DENIED, retryable=False, detail=detail)


class RegistrationError(AetherError):
    """The Hub answered Register with success=false."""


class HubError(AetherError):
    """The Hub answered a call with a non-OK gRPC status not covered by a narrower error."""


class MessageTooLargeError(HubError):
    """A message exceeds `max_message_bytes` (RESOURCE_EXHAUSTED)."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message, status=Status.RESOURCE_EXHAUSTED, retryable=False, detail=detail)


class TaskNotFoundError(HubError):
    """The Hub knows no task with this id (NOT_FOUND); `task_id` is the id asked for."""

    def __init__(self, message: str, *, task_id: str, detail: str = "") -> None:
        super().__init__(message, status=Status.NOT_FOUND, retryable=False, detail=detail)
        self.task_id = task_id


class TaskWaitTimeoutError(AetherError, TimeoutError):
    """`TaskClient.wait` gave up before the task finished (the task itself goes on).

    `task_id` is the task waited for, `task` the last state of it that was seen (None when
    none arrived) and `timeout` the seconds waited. Also a `TimeoutError`.
    """

    def __init__(
        self, message: str, *, task_id: str, task: models.Task | None, timeout: float
    ) -> None:
        super().__init__(message, status=None, retryable=True)
        self.task_id = task_id
        self.task = task
        self.timeout = timeout

    @property
    def state(self) -> pb.TaskState | None:
        """The task's last seen state (None when no update arrived)."""
        return None if self.task is None else self.task.state


class AgentStateError(AetherError, RuntimeError):
    """An agent or client method was called in a state that does not allow it."""


class TaskContextError(AgentStateError):
    """A task-scoped call was made outside a running `handle_task`."""


#: What to check when the Hub rejects an agent's credentials (the default `auth_hint`).
AGENT_AUTH_HINT: Final = (
    "rejected the agent's credentials: check that AETHER_AGENT_SECRET / "
    "AgentConfig.secret / metadata['secret'] matches the agent record in the Hub."
)

# ssl reasons of a TLS client talking to a peer that answers in plaintext (OpenSSL reads the
# peer's HTTP/2 bytes as a TLS record header).
_PLAINTEXT_PEER_REASONS: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"}
)


def _scrub(text: str, secret: str | None) -> str:
    if secret:
        return text.replace(secret, "***")
    return text


def _authority(hub_url: str) -> str:
    """`host:port` of a `hub_url` text, whatever scheme it has."""
    _, sep, rest = hub_url.partition("://")
    return rest if sep else hub_url


def _tls_of(hub_url: str) -> bool | None:
    """What the scheme of `hub_url` says about TLS (None without a scheme)."""
    scheme, sep, _ = hub_url.partition("://")
    if not sep:
        return None
    return scheme.lower() in ("grpcs", "https")


def method_not_served(exc: AetherError) -> bool:
    """Whether `exc` says the Hub does not serve the method called (one that predates it):
    UNIMPLEMENTED, or what a grpclib server answers for a method it does not know (a
    trailers-only reply without a content-type, which grpclib's client reports as
    UNKNOWN "Missing content-type header")."""
    return exc.status is Status.UNIMPLEMENTED or (
        exc.status is Status.UNKNOWN and exc.detail == "Missing content-type header"
    )


def map_exception(
    exc: BaseException,
    *,
    hub_url: str,
    operation: str,
    secret: str | None = None,
    task_id: str | None = None,
    auth_hint: str = AGENT_AUTH_HINT,
    fresh_connection: bool = False,
    client_certificate: bool | None = None,
) -> AetherError:
    """Translate a transport or gRPC failure into the SDK's own error type.

    `operation` names what was being done (e.g. "Register") for the message; `secret`, when
    given, is scrubbed from any text that came from the peer. `task_id` names the task the
    call was about: NOT_FOUND then becomes `TaskNotFoundError`. `auth_hint` completes
    "The Hub at <hub_url> ..." for UNAUTHENTICATED (the default is about agent secrets).
    `fresh_connection` says nothing was received on the connection yet: a plaintext
    connection closed at once then most likely reached a TLS port, and the message says so
    (whether the call used TLS is read from the scheme of `hub_url`). `client_certificate`
    says whether the client presented a certificate: a TLS connection without one that is
    closed at once most likely reached a Hub that requires client certificates (mTLS).
    """
    if isinstance(exc, AetherError):
        return exc
    if isinstance(exc, GRPCError):
        return _map_status(exc, hub_url, operation, secret, task_id, auth_hint)
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None)
        if reason in _PLAINTEXT_PEER_REASONS:
            return AetherConnectionError(
                f"{operation} failed: the Hub at {hub_url} does not speak TLS ({reason}): "
                f"use grpc://{_authority(hub_url)} (plaintext), or serve the Hub with TLS.",
                hub_url=hub_url,
                retryable=False,
                reason="not-tls",
                detail=str(exc),
            )
        return AetherConnectionError(
            f"{operation} failed: TLS error talking to the Hub at {hub_url} ({exc}). Check the "
            "CA file, client certificate and key, and the server name (tls_* settings).",
            hub_url=hub_url,
            retryable=False,
            reason="tls",
            detail=str(exc),
        )
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return AetherConnectionError(
            f"{operation} timed out talking to the Hub at {hub_url}.",
            hub_url=hub_url,
            status=Status.DEADLINE_EXCEEDED,
            reason="timeout",
        )
    if isinstance(exc, (OSError, StreamTerminatedError, ProtocolError, EOFError)):
        detail = _scrub(str(exc) or type(exc).__name__, secret)
        lost = not isinstance(exc, OSError) or isinstance(exc, ConnectionResetError)
        if lost and fresh_connection and _tls_of(hub_url) is False:
            return AetherConnectionError(
                f"{operation} failed: the Hub at {hub_url} closed the connection before "
                f"answering ({detail}). A Hub that serves TLS does this to a plaintext "
                f"client: if it does, use grpcs://{_authority(hub_url)} (with the CA file "
                "that signed its certificate).",
                hub_url=hub_url,
                reason="lost",
                detail=detail,
            )
        if lost and fresh_connection and _tls_of(hub_url) is True and client_certificate is False:
            return AetherConnectionError(
                f"{operation} failed: the Hub at {hub_url} closed the TLS connection before "
                f"answering ({detail}). A Hub that requires client certificates (mTLS) does "
                "this to a client that presents none: set tls_cert_file and tls_key_file "
                "(--tls-cert-file/--tls-key-file, AETHER_TLS_CERT_FILE/AETHER_TLS_KEY_FILE) "
                "to a certificate signed by the CA the Hub trusts.",
                hub_url=hub_url,
                reason="tls",
                detail=detail,
            )
        if isinstance(exc, ConnectionRefusedError):
            reason = "refused"
        elif lost:
            reason = "lost"
        else:
            reason = "unreachable"
        return AetherConnectionError(
            f"{operation} failed: cannot reach the Aether Hub at {hub_url} ({detail}). Check "
            "that the Hub is running, that hub_url / AETHER_HUB_URL points to the right host "
            "and port, and that firewalls allow the connection.",
            hub_url=hub_url,
            reason=reason,
            detail=detail,
        )
    return AetherError(f"{operation} failed: {type(exc).__name__}: {_scrub(str(exc), secret)}")


def _map_status(
    exc: GRPCError,
    hub_url: str,
    operation: str,
    secret: str | None,
    task_id: str | None,
    auth_hint: str,
) -> AetherError:
    detail = _scrub(exc.message or exc.status.name, secret)
    if exc.status is Status.UNAUTHENTICATED:
        return AuthenticationError(
            f"{operation} failed: UNAUTHENTICATED ({detail}). The Hub at {hub_url} {auth_hint}",
            detail=detail,
        )
    if exc.status is Status.PERMISSION_DENIED:
        return PermissionDeniedError(
            f"{operation} failed: PERMISSION_DENIED ({detail})", detail=detail
        )
    if exc.status is Status.RESOURCE_EXHAUSTED:
        return MessageTooLargeError(
            f"{operation} failed: RESOURCE_EXHAUSTED ({detail})", detail=detail
        )
    if exc.status is Status.NOT_FOUND and task_id is not None:
        return TaskNotFoundError(
            f"{operation} failed: the Hub at {hub_url} has no task {task_id!r} ({detail})",
            task_id=task_id,
            detail=detail,
        )
    if exc.status is Status.UNAVAILABLE:
        return AetherConnectionError(
            f"{operation} failed: the Hub at {hub_url} is unavailable ({detail}). "
            "Check that the Hub is running and hub_url / AETHER_HUB_URL is right.",
            hub_url=hub_url,
            reason="unavailable",
            detail=detail,
        )
    return HubError(
        f"{operation} failed: {exc.status.name} ({detail})",
        status=exc.status,
        retryable=exc.status in _RETRYABLE_STATUSES,
        detail=detail,
    )
