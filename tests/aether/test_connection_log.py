"""An agent that cannot reach its Hub says where it tried, why it failed and when it retries,
once per kind of failure; the recovery is said once too (aether/_connlog.py)."""

from __future__ import annotations

import logging
import socket
import ssl

import pytest

from aether import AetherConnectionError, AuthenticationError, HubError
from aether._connlog import ConnectionLog, failure_kind
from aether.errors import map_exception
from tests.aether.conftest import SECRET, make_config
from tests.aether.fake_hub import FakeHub, HubState
from tests.aether.test_agent import EchoAgent

_LOGGER = "aether.connection"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == _LOGGER and r.levelno == logging.WARNING
    ]


async def test_closed_port_warns_once_naming_address_and_refusal(
    hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    await hub.close()  # nothing listens on the port any more
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    agent = EchoAgent(make_config(hub, max_reconnect_attempts=4, reconnect_delay=1.0))
    agent._sleep = fake_sleep
    with caplog.at_level(logging.DEBUG, logger="aether"), pytest.raises(AetherConnectionError):
        await agent.start()
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings  # five refused attempts, one warning
    (warning,) = warnings
    assert f"127.0.0.1:{hub.port}" in warning
    assert "connection refused" in warning
    assert f"retrying in {sleeps[0]:.2f}s" in warning  # the delay actually waited
    repeats = [
        r.getMessage() for r in caplog.records if "failed again (connection refused)" in r.message
    ]
    assert len(repeats) == 3  # attempts 2-4 at DEBUG; the 5th gives up with the error


async def test_recovery_is_logged_once_at_info(
    hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    port = hub.port
    await hub.close()
    sleeps: list[float] = []
    restarted: list[FakeHub] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)
        if len(sleeps) == 3:  # three attempts were refused: the Hub comes back
            second = FakeHub(HubState(secret=SECRET))
            await second.start(port)
            restarted.append(second)

    agent = EchoAgent(make_config(hub, max_reconnect_attempts=10, reconnect_delay=0.01))
    agent._sleep = fake_sleep
    try:
        with caplog.at_level(logging.INFO, logger="aether"):
            await agent.start()
            await agent.stop()
    finally:
        for second in restarted:
            await second.close()
    assert len(_warnings(caplog)) == 1
    recovered = [r.getMessage() for r in caplog.records if "after 3 failed attempt(s)" in r.message]
    assert recovered == [
        f"agent test-agent connected to the Aether Hub at grpc://127.0.0.1:{port} "
        "after 3 failed attempt(s)"
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.message in recovered)


async def test_first_connection_that_works_logs_nothing_about_failures(
    hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    agent = EchoAgent(make_config(hub))
    with caplog.at_level(logging.DEBUG, logger="aether"):
        await agent.start()
        await agent.stop()
    assert _warnings(caplog) == []
    assert not [r for r in caplog.records if "failed attempt" in r.getMessage()]


def _mapped_from(exc: BaseException) -> AetherConnectionError:
    """What the client raises for `exc`: the SDK's error, the transport's as its context."""
    try:
        try:
            raise exc
        except BaseException as inner:
            raise map_exception(
                inner, hub_url="grpc://hub.example:50051", operation="Connect"
            ) from None
    except AetherConnectionError as mapped:
        return mapped


@pytest.mark.parametrize(
    ("transport_error", "kind"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (socket.gaierror(-2, "Name or service not known"), "DNS failure"),
        (ssl.SSLError(1, "certificate verify failed"), "TLS error"),
        (TimeoutError(), "timeout"),
        (ConnectionResetError(104, "reset"), "connection lost"),
        (OSError(113, "No route to host"), "network unreachable"),
    ],
)
def test_failure_kinds(transport_error: BaseException, kind: str) -> None:
    assert failure_kind(_mapped_from(transport_error)) == kind


def test_hub_answers_are_named_by_status() -> None:
    from grpclib.const import Status

    assert failure_kind(HubError("boom", status=Status.INTERNAL)) == "the Hub answered INTERNAL"
    assert failure_kind(AuthenticationError("no")) == "the Hub answered UNAUTHENTICATED"


def test_a_new_kind_of_failure_warns_again_and_success_resets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connlog = ConnectionLog("grpc://hub.example:50051", "a1")
    refused = _mapped_from(ConnectionRefusedError(111, "Connection refused"))
    dns = _mapped_from(socket.gaierror(-2, "Name or service not known"))
    with caplog.at_level(logging.DEBUG, logger=_LOGGER):
        connlog.failed(refused, 1.0)
        connlog.failed(refused, 2.0)
        connlog.failed(dns, 3.0)
        connlog.failed(dns, 4.0)
        connlog.succeeded()
        connlog.succeeded()  # nothing failed since: nothing to say
        connlog.failed(refused, 1.0)
    warnings = _warnings(caplog)
    assert len(warnings) == 3
    assert "connection refused" in warnings[0] and "retrying in 1.00s" in warnings[0]
    assert "DNS failure" in warnings[1] and "retrying in 3.00s" in warnings[1]
    assert "connection refused" in warnings[2]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [
        "agent a1 connected to the Aether Hub at grpc://hub.example:50051 after 4 failed attempt(s)"
    ]
