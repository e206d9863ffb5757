"""Transport failures map to the SDK's own errors, each marked retryable or not."""

from __future__ import annotations

import ssl

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from aether import (
    AetherConnectionError,
    AetherError,
    AuthenticationError,
    HubError,
    MessageTooLargeError,
    PermissionDeniedError,
)
from aether.errors import map_exception

URL = "grpc://hub.example:50051"
SECRET = "sk-do-not-show"


def mapped(exc: BaseException) -> AetherError:
    return map_exception(exc, hub_url=URL, operation="Op", secret=SECRET)


@pytest.mark.parametrize(
    ("exc", "kind", "status", "retryable"),
    [
        (
            GRPCError(Status.UNAUTHENTICATED, "bad"),
            AuthenticationError,
            Status.UNAUTHENTICATED,
            False,
        ),
        (
            GRPCError(Status.PERMISSION_DENIED),
            PermissionDeniedError,
            Status.PERMISSION_DENIED,
            False,
        ),
        (
            GRPCError(Status.RESOURCE_EXHAUSTED),
            MessageTooLargeError,
            Status.RESOURCE_EXHAUSTED,
            False,
        ),
        (GRPCError(Status.UNAVAILABLE), AetherConnectionError, Status.UNAVAILABLE, True),
        (GRPCError(Status.DEADLINE_EXCEEDED), HubError, Status.DEADLINE_EXCEEDED, True),
        (GRPCError(Status.INVALID_ARGUMENT), HubError, Status.INVALID_ARGUMENT, False),
        (GRPCError(Status.UNIMPLEMENTED), HubError, Status.UNIMPLEMENTED, False),
        (ConnectionRefusedError(111, "refused"), AetherConnectionError, Status.UNAVAILABLE, True),
        (StreamTerminatedError("Connection lost"), AetherConnectionError, Status.UNAVAILABLE, True),
        (TimeoutError(), AetherConnectionError, Status.DEADLINE_EXCEEDED, True),
        (ssl.SSLError("bad cert"), AetherConnectionError, Status.UNAVAILABLE, False),
    ],
)
def test_mapping(exc: Exception, kind: type[AetherError], status: Status, retryable: bool) -> None:
    error = mapped(exc)
    assert type(error) is kind
    assert error.status is status
    assert error.retryable is retryable


def test_unauthenticated_says_what_to_check() -> None:
    message = str(mapped(GRPCError(Status.UNAUTHENTICATED, "invalid secret")))
    assert "UNAUTHENTICATED" in message and URL in message
    assert "AETHER_AGENT_SECRET" in message and "metadata['secret']" in message


def test_unreachable_says_what_to_check() -> None:
    message = str(mapped(ConnectionRefusedError(111, "Connect call failed")))
    assert URL in message and "running" in message and "AETHER_HUB_URL" in message


def test_secret_echoed_by_peer_is_scrubbed() -> None:
    error = mapped(GRPCError(Status.INTERNAL, f"cannot parse {SECRET}"))
    assert SECRET not in str(error) and "***" in str(error)


def test_sdk_errors_pass_through() -> None:
    original = HubError("x")
    assert mapped(original) is original
