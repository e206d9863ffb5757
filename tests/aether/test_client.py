"""AgentClient, the low level: each call of the guide's table against the fake Hub."""

from __future__ import annotations

import inspect
import typing
from collections.abc import AsyncIterator

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
from aether._wire import models, pb
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


async def test_stream_events_and_submit_results_speak_models(hub: FakeHub) -> None:
    async with AgentClient(make_config(hub)) as client:
        await client.register()
        await hub.state.submit("e-1", description="first")
        seen: list[models.TaskStreamEvent] = []
        async for event in client.stream_events():
            seen.append(event)
            if len(seen) == 2:
                break
            await hub.state.cancel("e-1")
        assigned, cancelled = seen
        assert type(assigned) is models.TaskStreamEvent
        assert type(assigned.assignment) is models.TaskAssignment
        assert assigned.assignment.task_id == "e-1" and assigned.cancel is None
        assert type(cancelled.cancel) is models.TaskCancellation
        assert cancelled.cancel.task_id == "e-1" and cancelled.assignment is None

        async def results() -> AsyncIterator[TaskResult]:
            yield TaskResult(task_id="e-1", success=True, result=b"one")
            yield TaskResult(task_id="e-1", success=True, result=b"again")

        acks = [ack async for ack in client.submit_results(results())]
    assert all(type(ack) is models.SubmitResultResponse for ack in acks)
    assert [(a.task_id, a.accepted, a.duplicate) for a in acks] == [
        ("e-1", True, False),
        ("e-1", True, True),
    ]
    assert hub.state.results["e-1"].result == b"one"


def _wire_types_in(annotation: object) -> list[str]:
    """The wire classes (`aether_api...messages`) an annotation mentions, at any depth."""
    found: list[str] = []
    if isinstance(annotation, type) and annotation.__module__.endswith(".messages"):
        found.append(annotation.__qualname__)
    for arg in typing.get_args(annotation):
        found.extend(_wire_types_in(arg))
    return found


def test_public_methods_take_and_return_models_only() -> None:
    """The wire messages are one step away (`to_wire`/`from_wire`), never in the API."""
    checked = 0
    for name, member in inspect.getmembers(AgentClient):
        if name.startswith("_") or not callable(member):
            continue
        hints = typing.get_type_hints(member)
        wire = [w for hint in hints.values() for w in _wire_types_in(hint)]
        assert not wire, f"AgentClient.{name} mentions wire types {wire}"
        checked += 1
    assert checked >= 10
    # The helper does see a wire type where there is one.
    assert _wire_types_in(AsyncIterator[pb.TaskStreamEvent]) == ["TaskStreamEvent"]
