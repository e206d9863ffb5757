"""A messaging subscription survives a Hub restart and ends cleanly on agent stop."""

from __future__ import annotations

import asyncio

from aether import AetherAgent, BusMessage, ConnectionState, json_payload
from tests.aether.conftest import SECRET, make_config
from tests.aether.fake_hub import FakeHub, HubState
from tests.aether.test_agent import EchoAgent, until


async def _collect(agent: AetherAgent, subject: str, into: asyncio.Queue[BusMessage]) -> str:
    async for message in agent.hub.messaging.subscribe(subject):
        into.put_nowait(message)
    return "ended"


async def test_subscription_resumes_after_hub_restart_and_ends_on_stop(hub: FakeHub) -> None:
    agent = EchoAgent(make_config(hub, max_reconnect_delay=0.2))
    await agent.start()
    received: asyncio.Queue[BusMessage] = asyncio.Queue()
    reader = asyncio.create_task(_collect(agent, "news", received))
    second: FakeHub | None = None
    try:
        await hub.state.wait_for(lambda: bool(hub.state.subscribers))
        await agent.hub.messaging.publish("news", {"n": 1})
        first = await asyncio.wait_for(received.get(), 30)
        assert json_payload(first) == {"n": 1}

        port = hub.port
        await hub.close()
        await until(lambda: agent.connection_state is ConnectionState.RECONNECTING)
        second = FakeHub(HubState(secret=SECRET))
        await second.start(port)
        await second.state.wait_for(lambda: bool(second.state.subscribers))
        assert not reader.done()
        await agent.hub.messaging.publish("news", {"n": 2})
        after = await asyncio.wait_for(received.get(), 30)
        assert json_payload(after) == {"n": 2}
        assert len(second.state.registrations) == 1
    finally:
        await agent.stop()
        if second is not None:
            await second.close()
    # The iteration ended on its own, without an error.
    assert await asyncio.wait_for(reader, 30) == "ended"
    assert received.empty()


async def test_subscription_waiting_for_a_reconnect_ends_when_the_agent_stops(
    hub: FakeHub,
) -> None:
    agent = EchoAgent(make_config(hub, max_reconnect_delay=0.2))
    await agent.start()
    received: asyncio.Queue[BusMessage] = asyncio.Queue()
    reader = asyncio.create_task(_collect(agent, "news", received))
    await hub.state.wait_for(lambda: bool(hub.state.subscribers))
    await hub.close()
    await until(lambda: agent.connection_state is ConnectionState.RECONNECTING)
    assert not reader.done()
    await agent.stop()
    assert await asyncio.wait_for(reader, 30) == "ended"
