"""`self.hub` facades: the guide's call signatures and typed responses, over the wire."""

from __future__ import annotations

import asyncio
import json

import pytest

from aether import (
    AetherAgent,
    AetherConnectionError,
    AgentStateError,
    BusMessage,
    ConnectionState,
    TaskAssignment,
    TaskContextError,
    TaskResult,
    json_payload,
)
from tests.aether.conftest import make_config
from tests.aether.fake_hub import FakeHub
from tests.aether.test_agent import until


class Idle(AetherAgent):
    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        return TaskResult(task_id=task.task_id, success=True)


async def test_llm_chat(hub: FakeHub) -> None:
    async with Idle(make_config(hub)) as agent:
        response = await agent.hub.llm.chat(
            messages=[
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "two words"},
            ],
            model="gpt-4o-mini",
            temperature=0.3,
            max_tokens=1000,
        )
    assert response.success
    assert response.content == "echo: two words"
    assert response.model == "gpt-4o-mini"
    assert response.usage.total_tokens == 7 + 3
    (request,) = hub.state.llm_requests
    assert request.temperature == pytest.approx(0.3)
    assert request.max_tokens == 1000
    assert [m.role for m in request.messages] == ["system", "user"]


async def test_llm_chat_rejects_bad_messages(hub: FakeHub) -> None:
    async with Idle(make_config(hub)) as agent:
        with pytest.raises(ValueError, match="at least one"):
            await agent.hub.llm.chat(messages=[])
        with pytest.raises(ValueError, match="role"):
            await agent.hub.llm.chat(messages=[{"content": "no role"}])


async def test_tools(hub: FakeHub) -> None:
    async with Idle(make_config(hub)) as agent:
        tools = await agent.hub.tools.list()
        result = await agent.hub.tools.execute(tool_id="add", input={"a": 2, "b": 3})
        missing = await agent.hub.tools.execute(tool_id="nope", input={})
    assert [t.tool_id for t in tools] == ["add"]
    assert result.success and json.loads(result.result_json) == {"sum": 5}
    assert result.result() == {"sum": 5}
    assert not missing.success and missing.error_message == "unknown tool"


async def test_memory_agent_scope(hub: FakeHub) -> None:
    async with Idle(make_config(hub)) as agent:
        memory = agent.hub.memory
        stored = await memory.store(
            key="my-config", value={"theme": "dark"}, scope="agent", ttl=3600
        )
        response = await memory.retrieve(key="my-config", scope="agent")
        keys = await memory.list(scope="agent")
        deleted = await memory.delete(key="my-config", scope="agent")
        gone = await memory.retrieve(key="my-config", scope="agent")
    assert stored.success
    assert response.success and response.found
    assert json.loads(response.value_json) == {"theme": "dark"}
    assert response.value() == {"theme": "dark"}
    assert keys.keys == ["my-config"]
    assert deleted.deleted
    assert gone.success and not gone.found and gone.value() is None


async def test_memory_task_and_workflow_scope_use_current_task(hub: FakeHub) -> None:
    seen: dict[str, object] = {}

    class Scoped(AetherAgent):
        async def handle_task(self, task: TaskAssignment) -> TaskResult:
            await self.hub.memory.store(key="k", value=[1, 2], scope="task")
            await self.hub.memory.store(key="w", value="wf", scope="workflow")
            seen["task"] = (await self.hub.memory.retrieve(key="k", scope="task")).value()
            return TaskResult(task_id=task.task_id, success=True)

    async with Scoped(make_config(hub)) as agent:
        await hub.state.submit("task-42", workflow_id="wf-7")
        await hub.state.wait_for(lambda: "task-42" in hub.state.results)
        with pytest.raises(TaskContextError, match="handle_task"):
            await agent.hub.memory.store(key="x", value=1, scope="task")
    assert hub.state.results["task-42"].success
    assert seen["task"] == [1, 2]
    assert hub.state.memory[(2, "task-42", "k")] == "[1,2]"
    assert hub.state.memory[(3, "wf-7", "w")] == '"wf"'


async def test_memory_rejects_unserialisable_value(hub: FakeHub) -> None:
    async with Idle(make_config(hub)) as agent:
        with pytest.raises(TypeError, match="JSON"):
            await agent.hub.memory.store(key="k", value={"x": object()})  # type: ignore[dict-item]  # the misuse under test


async def test_messaging(hub: FakeHub) -> None:
    async with Idle(make_config(hub)) as agent:
        messaging = agent.hub.messaging
        received: list[BusMessage] = []

        async def listen() -> None:
            async for message in messaging.subscribe("agent.status"):
                received.append(message)
                return

        listener = asyncio.create_task(listen())
        await hub.state.wait_for(lambda: bool(hub.state.subscribers))
        published = await messaging.publish(
            subject="agent.status",
            payload={"agent_id": agent.config.agent_id, "status": "processing"},
        )
        await asyncio.wait_for(listener, 20)
        raw = await messaging.publish(subject="raw", payload=b"\x00\x01")
        reply = await messaging.request(
            subject="echo.status", payload={"workflow_id": "123"}, timeout=10
        )
        nobody = await messaging.request(subject="workflow.status", payload={}, timeout=1)
    assert published.success and raw.success
    assert json.loads(hub.state.published[0].payload) == {
        "agent_id": "test-agent",
        "status": "processing",
    }
    assert hub.state.published[1].payload == b"\x00\x01"
    assert json_payload(received[0]) == {"agent_id": "test-agent", "status": "processing"}
    assert reply.success and json_payload(reply) == {"workflow_id": "123"}
    assert reply.headers["timeout_ms"] == "10000"
    assert not nobody.success and nobody.error_message == "no responders"


async def test_hub_before_start_is_a_clear_error(hub: FakeHub) -> None:
    agent = Idle(make_config(hub))
    with pytest.raises(AgentStateError, match="not connected"):
        await agent.hub.llm.chat(messages=[{"role": "user", "content": "hi"}])


async def test_hub_call_while_reconnecting_is_retryable(hub: FakeHub) -> None:
    agent = Idle(make_config(hub, reconnect_delay=30))
    async with agent:
        await hub.close()
        await until(lambda: agent.connection_state is ConnectionState.RECONNECTING)
        with pytest.raises(AetherConnectionError, match="re-established") as info:
            await agent.hub.memory.retrieve(key="k")
        assert info.value.retryable


async def test_llm_chat_stream(hub: FakeHub) -> None:
    async with Idle(make_config(hub)) as agent:
        chunks = [
            chunk
            async for chunk in agent.hub.llm.chat_stream(
                messages=[{"role": "user", "content": "stream me"}]
            )
        ]
    assert "".join(c.delta for c in chunks) == "echo: stream me"
    assert chunks[-1].finish_reason == "stop"
