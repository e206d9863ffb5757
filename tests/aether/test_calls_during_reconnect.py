"""Hub calls made while the agent reconnects wait for the new session (bounded)."""

from __future__ import annotations

import asyncio

import pytest

from aether import AetherConnectionError, AgentConfig, AgentStateError, ConnectionState
from tests.aether.conftest import SECRET, make_config
from tests.aether.fake_hub import FakeHub, HubState
from tests.aether.test_agent import EchoAgent, until

MESSAGES = [{"role": "user", "content": "still there?"}]


async def test_call_made_while_reconnecting_succeeds_once_the_hub_is_back(hub: FakeHub) -> None:
    agent = EchoAgent(make_config(hub, max_reconnect_delay=0.2))
    await agent.start()
    second: FakeHub | None = None
    try:
        port = hub.port
        await hub.close()
        await until(lambda: agent.connection_state is ConnectionState.RECONNECTING)
        call = asyncio.create_task(agent.hub.llm.chat(MESSAGES))
        second = FakeHub(HubState(secret=SECRET))
        await second.start(port)
        reply = await asyncio.wait_for(call, 60)
        assert reply.success and reply.content == "echo: still there?"
        assert [r.messages[0].content for r in second.state.llm_requests] == ["still there?"]
    finally:
        await agent.stop()
        if second is not None:
            await second.close()


async def test_wait_is_bounded_by_config_then_retryable_error(hub: FakeHub) -> None:
    agent = EchoAgent(make_config(hub, call_reconnect_wait=0.2, max_reconnect_delay=0.2))
    await agent.start()
    try:
        await hub.close()
        await until(lambda: agent.connection_state is ConnectionState.RECONNECTING)
        with pytest.raises(
            AetherConnectionError, match=r"not re-established within 0\.2 s"
        ) as info:
            await agent.hub.memory.store("k", {"v": 1})
        assert info.value.retryable
    finally:
        await agent.stop()


async def test_wait_is_bounded_by_the_call_timeout(hub: FakeHub) -> None:
    agent = EchoAgent(make_config(hub, max_reconnect_delay=0.2))
    await agent.start()
    try:
        await hub.close()
        await until(lambda: agent.connection_state is ConnectionState.RECONNECTING)
        with pytest.raises(AetherConnectionError, match=r"within 0\.3 s") as info:
            await agent.hub.tools.list(timeout=0.3)
        assert info.value.retryable
    finally:
        await agent.stop()


async def test_waiting_call_ends_when_the_agent_stops(hub: FakeHub) -> None:
    agent = EchoAgent(make_config(hub, max_reconnect_delay=0.2))
    await agent.start()
    await hub.close()
    await until(lambda: agent.connection_state is ConnectionState.RECONNECTING)
    call = asyncio.create_task(agent.hub.messaging.publish("s", {"x": 1}))
    await asyncio.sleep(0)
    await agent.stop()
    with pytest.raises(AetherConnectionError, match="closed while waiting") as info:
        await asyncio.wait_for(call, 30)
    assert not info.value.retryable


async def test_calls_on_a_stopped_agent_do_not_wait(hub: FakeHub) -> None:
    agent = EchoAgent(make_config(hub))
    with pytest.raises(AgentStateError):
        await agent.hub.llm.chat(MESSAGES)


def test_call_reconnect_wait_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_AGENT_ID", "a")
    monkeypatch.setenv("AETHER_AGENT_NAME", "A")
    monkeypatch.setenv("AETHER_CALL_RECONNECT_WAIT", "2.5")
    assert AgentConfig.from_env().call_reconnect_wait == 2.5
    assert AgentConfig(agent_id="a", agent_name="A").call_reconnect_wait == 30
