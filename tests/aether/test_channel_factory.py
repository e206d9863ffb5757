"""Public hooks for other transports: `HubServer.build_services()` and channel factories.

The agent reaches a dev Hub whose handlers were built without a socket, over grpclib's
public in-memory `ChannelFor`; every connection (reconnects too) uses the factory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from grpclib.client import Channel

from aether import AetherAgent, AgentClient, AgentConfig, ConnectionState
from aether.errors import AgentStateError
from aether_hub.server import HubServer, Servable
from aether_hub.settings import HubConfig
from aether_hub.testing import open_in_memory_channel

CONFIG = AgentConfig(agent_id="factory-agent", agent_name="Factory", hub_url="127.0.0.1:9")


@pytest.fixture
async def services() -> AsyncIterator[tuple[HubServer, tuple[Servable, ...]]]:
    server = HubServer(HubConfig(dev=True))
    built = await server.build_services()
    try:
        yield server, built
    finally:
        await server.stop()


class _Factory:
    """Counts calls; each returns a fresh in-memory channel to `services`."""

    def __init__(self, stack: AsyncExitStack, services: tuple[Servable, ...]) -> None:
        self.calls = 0
        self._stack = stack
        self._services = services

    async def __call__(self) -> Channel:
        self.calls += 1
        return await open_in_memory_channel(self._stack, self._services)


async def test_build_services_serves_nothing_on_a_socket(
    services: tuple[HubServer, tuple[Servable, ...]],
) -> None:
    server, built = services
    names = {str(getattr(s, "SERVICE_NAME", "")) for s in built}
    assert {"aether.v1.AgentService", "aether.v1.TaskService", "grpc.health.v1.Health"} <= names
    assert not server.is_running
    with pytest.raises(RuntimeError):
        _ = server.port
    with pytest.raises(RuntimeError, match="already started"):
        await server.start()


async def test_client_registers_through_its_channel_factory(
    services: tuple[HubServer, tuple[Servable, ...]],
) -> None:
    server, built = services
    async with AsyncExitStack() as stack:
        factory = _Factory(stack, built)
        client = AgentClient(CONFIG, channel_factory=factory)
        await client.connect()
        registration = await client.register()
        assert registration.session_token
        assert server.sessions.for_agent("factory-agent")
        # A reconnect makes a new channel with the factory.
        client.drop_for_reconnect()
        await client.connect()
        await client.register()
        assert factory.calls == 2
        await client.disconnect()


async def test_agent_channel_factory_and_set_channel_factory(
    services: tuple[HubServer, tuple[Servable, ...]],
) -> None:
    _, built = services
    async with AsyncExitStack() as stack:
        factory = _Factory(stack, built)
        agent = AetherAgent(CONFIG, channel_factory=factory)
        async with agent:
            assert agent.connection_state is ConnectionState.CONNECTED
            assert factory.calls == 1
            with pytest.raises(AgentStateError):
                agent.client.set_channel_factory(None)
        later = AetherAgent(CONFIG)
        later.client.set_channel_factory(factory)
        async with later:
            assert later.connection_state is ConnectionState.CONNECTED
        assert factory.calls == 2
