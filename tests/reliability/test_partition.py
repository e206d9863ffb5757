"""A silently dead connection (a frozen TCP proxy) is noticed by keepalive, then replaced."""

from __future__ import annotations

from aether import AgentConfig, ConnectionState
from tests.aether.conftest import SECRET
from tests.aether.fake_hub import FakeHub
from tests.aether.test_agent import EchoAgent, until
from tests.reliability.proxy import FreezableProxy


async def test_partitioned_connection_is_detected(fake_hub: FakeHub) -> None:
    proxy = FreezableProxy(fake_hub.port)
    await proxy.start()
    states: list[ConnectionState] = []
    agent = EchoAgent(
        AgentConfig(
            agent_id="partition-agent",
            agent_name="Partition",
            hub_url=f"127.0.0.1:{proxy.port}",
            metadata={"secret": SECRET},
            keepalive_interval=0.2,
            keepalive_timeout=0.5,
            heartbeat_interval=3600,  # only keepalive can notice the partition
            reconnect_delay=0.05,
        )
    )
    agent.add_connection_callback(states.append)
    try:
        await agent.start()
        await fake_hub.state.submit("before")
        await fake_hub.state.wait_for(lambda: "before" in fake_hub.state.results)
        proxy.freeze(include_new=False)  # the reconnect goes through
        await until(lambda: ConnectionState.RECONNECTING in states, timeout=30)
        await fake_hub.state.wait_for(lambda: len(fake_hub.state.registrations) == 2)
        await until(lambda: agent.connection_state is ConnectionState.CONNECTED)
        await fake_hub.state.submit("after")
        await fake_hub.state.wait_for(lambda: "after" in fake_hub.state.results)
    finally:
        await agent.stop()
        await proxy.close()
    assert fake_hub.state.heartbeats == []
