"""AgentClient, the low level: each call of the guide's table against the fake Hub."""

from __future__ import annotations

import pytest

from aether import (
    AetherConnectionError,
    AgentClient,
    AgentStateError,
    AuthenticationError,
    TaskResult,
    TaskState,
    TaskStatus,
    TrustLevel,
)
from tests.aether.conftest import make_config
from tests.aether.fake_hub import FakeHub


def connected(client: AgentClient) -> bool:
    """A call, so that mypy does not keep the earlier narrowing of the property."""
    return client.is_connected


async def test_client_calls(hub: FakeHub) -> None:
    async with AgentClient(make_config(hub)) as client:
        assert client.is_connected
        registration = await client.register()
        assert registration.success and registration.trust_level is TrustLevel.STANDARD
        beat = await client.send_heartbeat(["x"])
        assert beat.success
        assert hub.state.heartbeats[0].running_task_ids == ["x"]
        await hub.state.submit("c-1", description="from client")
        async for task in client.stream_tasks():
            assert task.task_id == "c-1" and task.description == "from client"
            break
        assert await client.report_status(
            TaskStatus(task_id="c-1", state=TaskState.RUNNING, progress=0.25)
        )
        ack = await client.submit_result(TaskResult(task_id="c-1", success=True, result=b"r"))
        assert ack.accepted and not ack.duplicate
        again = await client.submit_result(TaskResult(task_id="c-1", success=True))
        assert again.duplicate
        assert (await client.unregister("done")).success
    assert not connected(client)
    assert hub.state.results["c-1"].result == b"r"
    assert hub.state.unregistered[0].reason == "done"


async def test_client_closes_session_on_exit(hub: FakeHub) -> None:
    async with AgentClient(make_config(hub)) as client:
        await client.register()
    assert len(hub.state.unregistered) == 1


async def test_calls_before_connect_or_register(hub: FakeHub) -> None:
    client = AgentClient(make_config(hub))
    with pytest.raises(AgentStateError, match="connect"):
        await client.register()
    await client.connect()
    try:
        with pytest.raises(AgentStateError, match="register"):
            await client.send_heartbeat()
    finally:
        await client.disconnect()


async def test_unreachable_hub_names_url(hub: FakeHub) -> None:
    url = hub.url
    await hub.close()
    client = AgentClient(make_config(hub))
    with pytest.raises(AetherConnectionError) as info:
        await client.connect()
    assert url in str(info.value) and "running" in str(info.value)
    assert info.value.retryable


async def test_stale_token_is_authentication_error(hub: FakeHub) -> None:
    async with AgentClient(make_config(hub)) as client:
        await client.register()
        hub.state.sessions.clear()  # e.g. the Hub forgot the session
        with pytest.raises(AuthenticationError) as info:
            await client.send_heartbeat()
        assert not info.value.retryable
