"""Fail-over between several Hub addresses (`hub_url="h1:port,h2:port"`), with real Hubs.

Two dev Hubs on loopback ports; an agent and a `TaskClient` given both addresses. No timed
assertions: every wait is for an event, under a generous timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from aether import (
    AetherAgent,
    AetherConnectionError,
    AgentConfig,
    ConnectionState,
    TaskAssignment,
    TaskClient,
    TaskResult,
    TaskState,
)
from aether.address import HubAddress
from aether_cli.tasks import amain
from aether_hub.server import HubServer
from aether_hub.settings import HubConfig
from tests.hubserver.hubkit import running_hub

WAIT = 30.0  # generous: never a timing assertion


class EchoAgent(AetherAgent):
    """Returns the task's payload."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        return TaskResult(task_id=task.task_id, success=True, result=task.payload)


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hub_config() -> HubConfig:
    return HubConfig(host="127.0.0.1", port=0, dev=True)


def agent_config(hub_url: str, **extra: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "agent_id": "failover-agent",
        "agent_name": "Failover",
        "hub_url": hub_url,
        "reconnect_delay": 0.05,
        "max_reconnect_delay": 0.2,
        **extra,
    }
    return AgentConfig(**settings)


async def connected_agents(hub: HubServer) -> set[str]:
    async with TaskClient(hub.address) as client:
        return {agent.agent_id for agent in await client.list_agents()}


@contextlib.asynccontextmanager
async def dropping_server() -> AsyncIterator[int]:
    """A TCP server that accepts, reads what comes, and closes: the connection succeeds but
    every call on it breaks after it was sent (a Hub that died mid-call)."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read(65536)
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


# ----------------------------------------------------------------------------- agents


async def test_agent_fails_over_to_the_second_hub_and_runs_a_task_there() -> None:
    async with running_hub(hub_config()) as first, running_hub(hub_config()) as second:
        agent = EchoAgent(agent_config(f"{first.address},{second.address}"))
        back: asyncio.Queue[ConnectionState] = asyncio.Queue()
        try:
            await agent.start()
            agent.add_connection_callback(back.put_nowait)  # the changes from now on
            assert agent.config.hub_addresses == (
                HubAddress("127.0.0.1", first.port),
                HubAddress("127.0.0.1", second.port),
            )
            assert "failover-agent" in await connected_agents(first)
            registrations = agent.client.session_generation

            await first.stop()  # the agent's session is lost with it
            while (state := await asyncio.wait_for(back.get(), WAIT)) is not (
                ConnectionState.CONNECTED
            ):
                assert state is not ConnectionState.CLOSED, agent.error
            assert agent.client.session_generation == registrations + 1  # a new session
            assert "failover-agent" in await connected_agents(second)

            async with TaskClient(second.address) as client:
                task = await client.submit("after the fail-over", payload=b"still here")
                done = await task.wait(timeout=WAIT)
            assert done.state is TaskState.SUCCEEDED and done.result == b"still here"
            assert done.assigned_agent_id == "failover-agent"
        finally:
            await agent.stop()


async def test_agent_registers_at_the_second_address_when_the_first_is_down() -> None:
    async with running_hub(hub_config()) as hub:
        # Not even one reconnect allowed: both addresses are tried within the first attempt.
        agent = EchoAgent(
            agent_config(f"127.0.0.1:{dead_port()},{hub.address}", max_reconnect_attempts=0)
        )
        try:
            await asyncio.wait_for(agent.start(), WAIT)
            assert agent.connection_state is ConnectionState.CONNECTED
            assert "failover-agent" in await connected_agents(hub)
            async with TaskClient(hub.address) as client:
                done = await (await client.submit("hello", payload=b"x")).wait(timeout=WAIT)
            assert done.state is TaskState.SUCCEEDED
        finally:
            await agent.stop()


async def test_agent_that_reaches_no_address_names_every_one_it_tried() -> None:
    ports = (dead_port(), dead_port())
    url = ",".join(f"127.0.0.1:{port}" for port in ports)
    agent = EchoAgent(agent_config(url, max_reconnect_attempts=0, secret="s3cret-value"))
    with pytest.raises(AetherConnectionError) as info:
        await asyncio.wait_for(agent.start(), WAIT)
    message = str(info.value)
    for port in ports:
        assert f"grpc://127.0.0.1:{port}" in message
    assert "connection refused" in message
    assert "s3cret-value" not in message and "s3cret-value" not in repr(agent)
    assert agent.connection_state is ConnectionState.CLOSED


# ----------------------------------------------------------------------------- TaskClient


async def test_taskclient_uses_the_second_address_when_the_first_is_down() -> None:
    async with running_hub(hub_config()) as hub:
        url = f"127.0.0.1:{dead_port()},{hub.address}"
        async with TaskClient(url) as client:
            assert client.address == client.addresses[0]
            # Nothing was sent to the dead address: even a submit without a key moves on.
            task = await client.submit("first", payload=b"1")
            assert client.address == HubAddress("127.0.0.1", hub.port)  # it stays there
            assert (await client.get(task.task_id)).state is TaskState.PENDING
            assert [t.task_id async for t in client.list()] == [task.task_id]
        assert hub.queue.get(task.task_id) is not None
        # connect() fails over too.
        async with TaskClient(url) as client:
            await client.connect()
            assert client.address.port == hub.port


async def test_taskclient_retries_only_safe_calls_after_a_failure_on_the_way() -> None:
    async with running_hub(hub_config()) as hub, dropping_server() as dropper:
        url = f"127.0.0.1:{dropper},{hub.address}"
        async with TaskClient(url) as client:
            # Connected, then the call broke: it may have reached a Hub, so a submit without
            # an idempotency key is not made again elsewhere.
            with pytest.raises(AetherConnectionError) as info:
                await client.submit("maybe queued twice")
            assert f"127.0.0.1:{dropper}" in str(info.value)
            assert not [t async for t in TaskClient(hub.address).list()]
            # With a key a repeat finds the first task: safe, so it goes to the next Hub.
            keyed = await client.submit("once", idempotency_key="job-1")
            assert client.address.port == hub.port
        async with TaskClient(url) as client:
            # Reads are safe too.
            assert (await client.get(keyed.task_id)).description == "once"
            assert client.address.port == hub.port
        async with TaskClient(url) as client:
            again = await client.submit("once", idempotency_key="job-1")
            assert again.task_id == keyed.task_id


async def test_taskclient_error_names_every_address_when_none_answers() -> None:
    ports = (dead_port(), dead_port())
    async with TaskClient(",".join(f"127.0.0.1:{p}" for p in ports), token="tok-123") as client:
        with pytest.raises(AetherConnectionError) as info:
            await client.get("some-task")
        error = info.value
        assert error.reason == "refused" and error.retryable
        for port in ports:
            assert f"grpc://127.0.0.1:{port}" in str(error)
            assert f"127.0.0.1:{port}" in (error.hub_url or "")
        assert "tok-123" not in str(error) and "tok-123" not in repr(client)


async def test_taskclient_watch_goes_on_at_the_standby_that_took_over_the_db(
    tmp_path: Path,
) -> None:
    # Active/standby: the second Hub starts on the first one's --db file once the first has
    # stopped (the database lock allows one at a time), at an address the client knows.
    db = str(tmp_path / "hub.sqlite3")
    standby_port = dead_port()
    first = HubServer(HubConfig(host="127.0.0.1", port=0, dev=True, db_path=db))
    await first.start()
    second: HubServer | None = None
    agent: EchoAgent | None = None
    try:
        async with TaskClient(f"{first.address},127.0.0.1:{standby_port}") as client:
            task = await client.submit("survives the switch", payload=b"ok")
            updates = client.watch(task.task_id)
            assert (await asyncio.wait_for(updates.__anext__(), WAIT)).state is TaskState.PENDING
            await first.stop()
            second = HubServer(HubConfig(host="127.0.0.1", port=standby_port, dev=True, db_path=db))
            await second.start()
            again = await asyncio.wait_for(updates.__anext__(), WAIT)
            assert again.task_id == task.task_id and again.state is TaskState.PENDING
            assert client.address.port == standby_port
            agent = EchoAgent(agent_config(second.address))
            await agent.start()
            final = await asyncio.wait_for(updates.__anext__(), WAIT)
            while final.state is not TaskState.SUCCEEDED:
                assert final.state not in (TaskState.FAILED, TaskState.CANCELLED), final
                final = await asyncio.wait_for(updates.__anext__(), WAIT)
            assert final.result == b"ok"
    finally:
        if agent is not None:
            await agent.stop()
        await first.stop()
        if second is not None:
            await second.stop()


# ----------------------------------------------------------------------------- names


async def test_a_name_with_several_ips_is_tried_ip_by_ip(monkeypatch: pytest.MonkeyPatch) -> None:
    """grpclib hands the name to asyncio, which tries each IP it resolves to in turn."""
    real: Callable[..., Any] = socket.getaddrinfo
    asked: list[str] = []

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hubs.failover.test":
            asked.append(host)
            # The first IP has nothing listening (127.0.0.2 is loopback too on Linux).
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", int(port))),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port))),
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    async with running_hub(hub_config()) as hub:
        async with TaskClient(f"hubs.failover.test:{hub.port}") as client:
            task = await client.submit("by name")
        agent = EchoAgent(agent_config(f"hubs.failover.test:{hub.port}"))
        try:
            await asyncio.wait_for(agent.start(), WAIT)
            done = await asyncio.wait_for(hub.queue.wait_finished(task.task_id), WAIT)
            assert done.state == TaskState.SUCCEEDED
        finally:
            await agent.stop()
    assert asked


# ----------------------------------------------------------------------------- aether task


async def test_aether_task_takes_several_hub_urls(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AETHER_HUB_URL", raising=False)
    monkeypatch.delenv("AETHER_CLIENT_TOKEN", raising=False)
    dead = (dead_port(), dead_port())
    async with running_hub(hub_config()) as hub:
        code = await amain(
            ["submit", "via the list", "--hub-url", f"127.0.0.1:{dead[0]},{hub.address}"]
        )
        out = capsys.readouterr().out
        assert code == 0, out
        assert hub.queue.get(out.split()[-1]) is not None  # "submitted task <id>"
    capsys.readouterr()
    code = await amain(["list", "--hub-url", ",".join(f"127.0.0.1:{p}" for p in dead)])
    err = capsys.readouterr().err
    assert code == 3, err
    assert f"cannot reach the Aether Hub at 127.0.0.1:{dead[0]} or 127.0.0.1:{dead[1]}" in err
    code = await amain(["list", "--hub-url", f"127.0.0.1:{dead[0]},,x"])
    err = capsys.readouterr().err
    assert (
        code == 2 and "--hub-url: invalid Hub address list" in err and "part 2 of 3 is empty" in err
    )
