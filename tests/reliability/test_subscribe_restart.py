"""A messaging subscription survives the dev Hub process being killed and restarted."""

from __future__ import annotations

import asyncio
import signal
import subprocess

from aether import AetherAgent, AgentConfig, BusMessage, ConnectionState
from tests.aether.test_agent import EchoAgent, until
from tests.reliability.procs import free_port, spawn, stop


async def _listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    async def poll() -> None:
        while True:
            assert proc.poll() is None, stop(proc)
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return

    await asyncio.wait_for(poll(), 60)


async def _collect(agent: AetherAgent, into: asyncio.Queue[BusMessage]) -> str:
    async for message in agent.hub.messaging.subscribe("shared.news.>"):
        into.put_nowait(message)
    return "ended"


async def _publish_until_received(
    agent: AetherAgent, received: asyncio.Queue[BusMessage], prefix: str
) -> BusMessage:
    """Publish until one arrives: delivery is at-most-once, and right after a reconnect
    the subscription may not be active yet."""

    async def attempt() -> BusMessage:
        n = 0
        while True:
            n += 1
            await agent.hub.messaging.publish(f"shared.news.{prefix}.{n}", {"n": n})
            try:
                message = await asyncio.wait_for(received.get(), 0.2)
            except asyncio.TimeoutError:
                continue
            if message.subject.startswith(f"shared.news.{prefix}."):  # not a late earlier one
                return message

    return await asyncio.wait_for(attempt(), 60)


async def test_subscription_survives_dev_hub_kill_and_restart() -> None:
    port = free_port()
    hub_args = ("--port", str(port), "--dev", "--host", "127.0.0.1")
    first = spawn("aether_hub", *hub_args)
    second: subprocess.Popen[bytes] | None = None
    agent = EchoAgent(
        AgentConfig(
            agent_id="subscriber",
            agent_name="Subscriber",
            hub_url=f"127.0.0.1:{port}",
            reconnect_delay=0.05,
            max_reconnect_delay=0.5,
            heartbeat_interval=0.2,
        )
    )
    received: asyncio.Queue[BusMessage] = asyncio.Queue()
    reader: asyncio.Task[str] | None = None
    try:
        await _listening(port, first)
        await agent.start()
        reader = asyncio.create_task(_collect(agent, received))
        before = await _publish_until_received(agent, received, "before")
        assert before.subject.startswith("shared.news.before.")

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        await until(lambda: agent.connection_state is ConnectionState.RECONNECTING)
        second = spawn("aether_hub", *hub_args)
        await _listening(port, second)
        await until(lambda: agent.connection_state is ConnectionState.CONNECTED)
        after = await _publish_until_received(agent, received, "after")
        assert after.subject.startswith("shared.news.after.")
        assert not reader.done()
    finally:
        await agent.stop()
        out = stop(first) + (stop(second) if second is not None else "")
    assert reader is not None
    assert await asyncio.wait_for(reader, 30) == "ended", out
