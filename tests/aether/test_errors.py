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
    TaskNotFoundError,
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


def test_not_found_of_a_task_is_task_not_found() -> None:
    exc = GRPCError(Status.NOT_FOUND, "unknown task 't-1'")
    error = map_exception(exc, hub_url=URL, operation="GetTask", task_id="t-1")
    assert isinstance(error, TaskNotFoundError) and isinstance(error, HubError)
    assert (error.task_id, error.status, error.retryable) == ("t-1", Status.NOT_FOUND, False)
    assert error.detail == "unknown task 't-1'"
    # Not about a task (e.g. a tool): a plain HubError.
    assert type(mapped(exc)) is HubError


def test_auth_hint_replaces_the_agent_advice() -> None:
    exc = GRPCError(Status.UNAUTHENTICATED, f"invalid client token {SECRET}")
    error = map_exception(
        exc, hub_url=URL, operation="ListTasks", secret=SECRET, auth_hint="wants a token."
    )
    assert isinstance(error, AuthenticationError)
    assert str(error) == (
        f"ListTasks failed: UNAUTHENTICATED (invalid client token ***). The Hub at {URL}"
        " wants a token."
    )
    assert error.detail == "invalid client token ***"


def test_tls_to_a_plaintext_hub_names_the_cause() -> None:
    exc = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
    exc.reason = "WRONG_VERSION_NUMBER"  # as the ssl module sets it
    error = map_exception(exc, hub_url="grpcs://hub.example:50051", operation="Register")
    assert isinstance(error, AetherConnectionError)
    assert "the Hub at grpcs://hub.example:50051 does not speak TLS" in str(error)
    assert "use grpc://hub.example:50051" in str(error)
    assert (error.reason, error.retryable) == ("not-tls", False)


@pytest.mark.parametrize(
    ("hub_url", "fresh", "hinted"),
    [
        ("grpc://hub.example:50051", True, True),
        ("grpc://hub.example:50051", False, False),  # it answered before: a plain loss
        ("grpcs://hub.example:50051", True, False),  # already TLS
    ],
)
def test_plaintext_connection_closed_at_once_hints_at_tls(
    hub_url: str, fresh: bool, hinted: bool
) -> None:
    error = map_exception(
        StreamTerminatedError("Connection lost"),
        hub_url=hub_url,
        operation="GetTask",
        fresh_connection=fresh,
    )
    assert isinstance(error, AetherConnectionError)
    assert error.reason == "lost" and error.retryable
    assert ("use grpcs://hub.example:50051" in str(error)) is hinted


def test_connection_reasons() -> None:
    refused = mapped(ConnectionRefusedError(111, "refused"))
    assert isinstance(refused, AetherConnectionError) and refused.reason == "refused"
    timeout = mapped(TimeoutError())
    assert isinstance(timeout, AetherConnectionError) and timeout.reason == "timeout"
    unreachable = mapped(OSError(-2, "Name or service not known"))
    assert isinstance(unreachable, AetherConnectionError)
    assert unreachable.reason == "unreachable"
