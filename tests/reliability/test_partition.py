"""A silently dead connection (a frozen TCP proxy) is noticed by keepalive, then replaced."""

from __future__ import annotations

import asyncio
import contextlib

from aether import AgentConfig, ConnectionState
from tests.aether.conftest import SECRET
from tests.aether.fake_hub import FakeHub
from tests.aether.test_agent import EchoAgent, until


class FreezableProxy:
    """A loopback TCP proxy; `freeze()` silently stops the connections open at that moment
    (nothing is forwarded, nothing is closed), as a network partition would."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.flows: list[asyncio.Event] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        for flow in self.flows:
            flow.clear()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        flow = asyncio.Event()
        flow.set()
        self.flows.append(flow)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, flow))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, flow: asyncio.Event
    ) -> None:
        try:
            while data := await src.read(65536):
                await flow.wait()
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()


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
        proxy.freeze()
        await until(lambda: ConnectionState.RECONNECTING in states, timeout=30)
        await fake_hub.state.wait_for(lambda: len(fake_hub.state.registrations) == 2)
        await until(lambda: agent.connection_state is ConnectionState.CONNECTED)
        await fake_hub.state.submit("after")
        await fake_hub.state.wait_for(lambda: "after" in fake_hub.state.results)
    finally:
        await agent.stop()
        await proxy.close()
    assert fake_hub.state.heartbeats == []
