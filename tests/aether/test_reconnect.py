"""Reconnects (in-process Hub restarts), giving up, auth failures, and the secret in logs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aether import (
    AetherAgent,
    AetherConnectionError,
    AgentConfig,
    AuthenticationError,
    ConnectionState,
    TaskAssignment,
    TaskResult,
)
from aether._backoff import BACKOFF_MULTIPLIER
from tests.aether.conftest import SECRET, make_config
from tests.aether.fake_hub import FakeHub, HubState
from tests.aether.test_agent import BlockingAgent, EchoAgent, until


async def _restart(port: int, **state: object) -> FakeHub:
    hub = FakeHub(HubState(secret=SECRET, **state))  # type: ignore[arg-type]  # test helper passes HubState's keywords
    await hub.start(port)
    return hub


async def test_gives_up_after_max_reconnect_attempts(hub: FakeHub) -> None:
    await hub.close()  # nothing listens on the port any more
    delays: list[float] = []

    async def fake_sleep(delay: float) -> None:
        delays.append(delay)

    agent = EchoAgent(make_config(hub, max_reconnect_attempts=3, reconnect_delay=1.0))
    agent._sleep = fake_sleep
    with pytest.raises(AetherConnectionError) as info:
        await agent.start()
    message = str(info.value)
    assert "max_reconnect_attempts=3" in message and "4 attempt(s)" in message
    assert hub.url in message or f"127.0.0.1:{hub.port}" in message
    assert len(delays) == 3
    for n, delay in enumerate(delays):
        nominal = BACKOFF_MULTIPLIER**n
        assert nominal * 0.8 - 1e-9 <= delay <= nominal * 1.2 + 1e-9
    assert agent.connection_state is ConnectionState.CLOSED


async def test_run_raises_when_reconnects_run_out(hub: FakeHub) -> None:
    agent = EchoAgent(make_config(hub, max_reconnect_attempts=2, reconnect_delay=0.01))
    runner = asyncio.create_task(agent.run())
    await hub.state.wait_for(lambda: bool(hub.state.registrations))
    await hub.close()
    with pytest.raises(AetherConnectionError, match="max_reconnect_attempts=2"):
        await asyncio.wait_for(runner, 60)
    assert agent.connection_state is ConnectionState.CLOSED
    assert agent.error is not None


async def test_run_that_cannot_register_logs_that_reason_not_a_stop_call(
    hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    await hub.close()  # nothing listens on the port any more
    agent = EchoAgent(make_config(hub, max_reconnect_attempts=0))
    with caplog.at_level(logging.INFO, logger="aether"), pytest.raises(AetherConnectionError):
        await asyncio.wait_for(agent.run(), 60)
    stopping = [r.getMessage() for r in caplog.records if " stopping: " in r.getMessage()]
    assert stopping == [f"agent {agent.config.agent_id} stopping: could not register"]


async def test_reconnects_and_flushes_results_after_hub_restart(hub: FakeHub) -> None:
    agent = BlockingAgent(make_config(hub, heartbeat_interval=0.1))
    states: list[ConnectionState] = []
    agent.add_connection_callback(states.append)
    await agent.start()
    second: FakeHub | None = None
    try:
        await hub.state.submit("during-outage")
        await until(lambda: agent.started == ["during-outage"])
        port = hub.port
        await hub.close()
        await until(lambda: agent.connection_state is ConnectionState.RECONNECTING)
        agent.release.set()  # the result is produced while the Hub is down
        await asyncio.sleep(0.1)
        # The new Hub knows nothing of the old lease; like a Hub with a persistent queue
        # it takes the result of a task it did not lease to this session.
        second = await _restart(port, accept_unleased_results=True)
        await second.state.wait_for(lambda: "during-outage" in second.state.results)
        assert second.state.results["during-outage"].success
        assert len(second.state.registrations) == 1
        await until(lambda: agent.connection_state is ConnectionState.CONNECTED)
        # And the new session takes tasks.
        await second.state.submit("after")
        await second.state.wait_for(lambda: "after" in second.state.results)
    finally:
        await agent.stop()
        if second is not None:
            await second.close()
    assert states[:4] == [
        ConnectionState.CONNECTING,
        ConnectionState.CONNECTED,
        ConnectionState.RECONNECTING,
        ConnectionState.CONNECTED,
    ]
    assert len(agent._outbox) == 0


async def test_stale_session_registers_again(hub: FakeHub) -> None:
    agent = EchoAgent(make_config(hub, heartbeat_interval=0.05))
    async with agent:
        hub.state.sessions.clear()  # the Hub forgot the session: calls get UNAUTHENTICATED
        await hub.state.wait_for(lambda: len(hub.state.registrations) == 2)
        await hub.state.submit("t")
        await hub.state.wait_for(lambda: "t" in hub.state.results)
    # The task went out on the new session and its result came back through it.
    assert hub.state.results["t"].success
    assert len(hub.state.registrations) == 2


async def test_a_server_fault_during_register_is_retried_with_backoff(hub: FakeHub) -> None:
    """UNKNOWN / INTERNAL from Register (e.g. a Hub whose disk is full) is worth another
    attempt: the agent keeps trying instead of exiting."""
    hub.state.register_faults = ["disk full", "still full"]
    agent = EchoAgent(make_config(hub, reconnect_delay=0.01, max_reconnect_attempts=5))
    async with agent:
        await hub.state.submit("t")
        await hub.state.wait_for(lambda: "t" in hub.state.results)
    assert hub.state.register_faults == []
    assert len(hub.state.registrations) == 1
    assert hub.state.results["t"].success


async def test_server_faults_count_against_the_attempt_limit(hub: FakeHub) -> None:
    hub.state.register_faults = ["x"] * 10
    agent = EchoAgent(make_config(hub, reconnect_delay=0.01, max_reconnect_attempts=2))
    with pytest.raises(AetherConnectionError, match="max_reconnect_attempts=2"):
        await asyncio.wait_for(agent.run(), 60)
    assert hub.state.register_faults == ["x"] * 7  # the first try and two retries


async def test_secret_rejected_on_reconnect_is_fatal_not_a_loop(hub: FakeHub) -> None:
    agent = EchoAgent(make_config(hub, reconnect_delay=0.01))
    runner = asyncio.create_task(agent.run())
    await hub.state.wait_for(lambda: bool(hub.state.registrations))
    port = hub.port
    await hub.close()
    second = FakeHub(HubState(secret="a-different-secret"))
    await second.start(port)
    try:
        with pytest.raises(AuthenticationError, match="secret"):
            await asyncio.wait_for(runner, 60)
        await asyncio.sleep(0.2)
        assert second.state.auth_failures == 1
    finally:
        await second.close()


async def test_secret_never_logged(hub: FakeHub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    class Failing(AetherAgent):
        async def handle_task(self, task: TaskAssignment) -> TaskResult:
            raise RuntimeError("handler failure")

    agent = Failing(make_config(hub, heartbeat_interval=0.05))
    texts = [repr(agent), repr(agent.config), str(agent.config), repr(agent.client)]
    async with agent:
        await hub.state.submit("x")
        await hub.state.wait_for(lambda: "x" in hub.state.results)
        hub.state.sessions.clear()
        await hub.state.wait_for(lambda: len(hub.state.registrations) == 2)
    hub.state.secret = "other"
    with pytest.raises(AuthenticationError) as info:
        await Failing(make_config(hub)).start()
    texts.append(str(info.value))
    assert hub.state.registrations[0].secret == SECRET  # it did travel, in the request body
    assert SECRET not in caplog.text
    for text in texts:
        assert SECRET not in text


async def test_a_connection_attempt_that_hangs_is_bounded_by_connect_timeout() -> None:
    """A peer that accepts TCP but never answers (a half-healed partition, a wedged proxy):
    each attempt gives up after `connect_timeout` instead of hanging, so the agent's retries
    and its attempt limit still apply."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # hold the connection open, say nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        config = AgentConfig(
            agent_id="hang",
            agent_name="hang",
            hub_url=f"grpcs://127.0.0.1:{port}",  # the TLS handshake never completes
            connect_timeout=0.2,
            reconnect_delay=0.01,
            max_reconnect_attempts=1,
        )
        with pytest.raises(AetherConnectionError, match="max_reconnect_attempts=1") as caught:
            await asyncio.wait_for(EchoAgent(config).run(), 60)
        assert "timed out" in str(caught.value)
        assert len(accepted) == 2  # the first try and one retry, each cut off
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
