"""One kind of model: `self.hub` returns the generated models, with their JSON helpers.

Against the real development Hub (`aether_hub.testing.TestHub`: a grpclib server on
127.0.0.1, SQLite memory, the offline echo LLM and the built-in tools).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pickle
from collections.abc import AsyncIterator

import pytest

from aether import (
    AetherAgent,
    AgentConfig,
    JsonFieldError,
    JsonValue,
    TaskAssignment,
    TaskResult,
    TaskState,
    json_payload,
)
from aether._wire import models
from aether_hub.settings import HubConfig
from aether_hub.testing import TestHub
from tests.typing.guide_readme_hub_services import Triage


class Idle(AetherAgent):
    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        return TaskResult(task_id=task.task_id, success=True)


def _agent(hub: TestHub, agent_id: str = "models-agent") -> Idle:
    return Idle(AgentConfig(agent_id=agent_id, agent_name="Models", hub_url=hub.url))


async def test_llm_returns_generated_models() -> None:
    async with TestHub() as hub:
        agent = _agent(hub)
        async with hub.running(agent):
            response = await agent.hub.llm.chat(messages=[{"role": "user", "content": "hi"}])
            chunks = [
                c async for c in agent.hub.llm.chat_stream([{"role": "user", "content": "hi"}])
            ]
    assert type(response) is models.ChatResponse
    assert type(response.usage) is models.Usage
    assert response.success and response.content == "echo: hi"
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    assert response.usage.total_tokens > 0
    assert all(type(c) is models.ChatChunk for c in chunks)
    assert "".join(c.delta for c in chunks) == "echo: hi"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert chunks[0].usage is None  # only the last chunk carries usage


async def test_failed_chat_has_zero_usage_not_none() -> None:
    """A failed completion carries no usage on the wire; the model reads it as zeros."""
    config = HubConfig(
        host="127.0.0.1",
        dev=True,
        llm_provider="openai",
        llm_base_url="http://127.0.0.1:9/v1",  # discard port: nothing answers
    )
    async with TestHub(config) as hub:
        agent = _agent(hub)
        async with hub.running(agent):
            response = await agent.hub.llm.chat(messages=[{"role": "user", "content": "hi"}])
    assert not response.success and response.error_message
    assert response.usage == models.Usage()
    assert response.usage.total_tokens == 0


async def test_memory_returns_generated_models_and_value_parses() -> None:
    async with TestHub() as hub:
        agent = _agent(hub)
        async with hub.running(agent):
            memory = agent.hub.memory
            stored = await memory.store(key="cfg", value={"theme": "dark", "n": [1, 2]})
            found = await memory.retrieve(key="cfg")
            listed = await memory.list()
            deleted = await memory.delete(key="cfg")
            missing = await memory.retrieve(key="cfg")
            await memory.store(key="null", value=None)
            null = await memory.retrieve(key="null")
    assert type(stored) is models.StoreResponse and stored.success
    assert type(found) is models.RetrieveResponse
    assert found.found and found.value() == {"theme": "dark", "n": [1, 2]}
    assert json.loads(found.value_json) == found.value()
    assert type(listed) is models.ListKeysResponse and listed.keys == ["cfg"]
    assert type(deleted) is models.DeleteResponse and deleted.deleted
    assert missing.success and not missing.found
    assert missing.value_json == "" and missing.value() is None
    assert null.found and null.value() is None


async def test_tools_return_generated_models_and_result_parses() -> None:
    async with TestHub() as hub:
        agent = _agent(hub)
        async with hub.running(agent):
            tools = await agent.hub.tools.list()
            added = await agent.hub.tools.execute(
                tool_id="add_comment", input={"issue_id": "7", "comment": "LGTM"}
            )
            listed = await agent.hub.tools.execute(tool_id="list_comments", input={"issue_id": "7"})
            unknown = await agent.hub.tools.execute(tool_id="no_such_tool")
    assert tools and all(type(t) is models.ToolInfo for t in tools)
    by_id = {t.tool_id: t for t in tools}
    schema = by_id["add_comment"].input_schema()
    assert isinstance(schema, dict) and set(schema["properties"]) >= {"issue_id", "comment"}
    assert type(added) is models.ExecuteToolResponse and added.success
    comments = listed.result()
    assert isinstance(comments, list) and len(comments) == 1
    assert json.loads(listed.result_json) == comments
    assert not unknown.success and unknown.result() is None


@contextlib.asynccontextmanager
async def _responder(
    agent: AetherAgent, prefix: str, answer: JsonValue
) -> AsyncIterator[asyncio.Queue[models.BusMessage]]:
    """Answer every request on `prefix.*` with `answer`, once the subscription is live; the
    queue gets each request."""
    messaging = agent.hub.messaging
    received: asyncio.Queue[models.BusMessage] = asyncio.Queue()
    live = asyncio.Event()

    async def serve() -> None:
        async for message in messaging.subscribe(f"{prefix}.*"):
            if message.subject == f"{prefix}.probe":
                live.set()
                continue
            received.put_nowait(message)
            await messaging.publish(message.reply_to, answer)

    server = asyncio.create_task(serve())
    try:
        # Live once a probe arrives (TestHub's own recorder listens on every subject, so a
        # request never finds "no responders").
        for _ in range(600):
            await messaging.publish(f"{prefix}.probe", b"")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(live.wait(), 0.05)
            if live.is_set():
                break
        yield received
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def test_messaging_returns_generated_models_and_payloads_parse() -> None:
    async with TestHub() as hub:
        agent = _agent(hub)
        async with hub.running(agent), _responder(agent, "pricing", {"total": 7.5}) as received:
            reply = await agent.hub.messaging.request("pricing.quote", {"item": "x"}, timeout=30)
            published = await agent.hub.messaging.publish("events.raw.bytes", b"\xff\x00")
            message = await asyncio.wait_for(received.get(), 30)
    assert type(reply) is models.RequestResponse
    assert reply.success and json_payload(reply) == {"total": 7.5}
    assert type(message) is models.BusMessage
    assert json_payload(message) == {"item": "x"}
    assert type(published) is models.PublishResponse and published.success


async def test_readme_snippet_runs() -> None:
    """The README's Hub services example, against the real dev Hub."""
    async with TestHub() as hub:
        triage = Triage(AgentConfig(agent_id="triage", agent_name="Triage", hub_url=hub.url))
        quotes = _agent(hub, "quotes")
        async with hub.running(triage, quotes), _responder(quotes, "pricing", {"total": 2.5}):
            await triage.hub.tools.execute(
                tool_id="add_comment", input={"issue_id": "7", "comment": "seen"}
            )
            task = await hub.run_task("hello", target_agent_id="triage")
    assert task.state is TaskState.SUCCEEDED, task.error_message
    summary = task.result.decode()
    assert summary.startswith(f"{hub_tokens(hub)} tokens, 0 seen, ")
    assert "[{" in summary and summary.endswith("{'total': 2.5}")


def hub_tokens(hub: TestHub) -> int:
    (call,) = hub.llm_calls
    return call.total_tokens


# -- the helpers themselves -------------------------------------------------------------------


def test_value_of_found_and_missing() -> None:
    found = models.RetrieveResponse(success=True, found=True, value_json='{"a": [1, "b"]}')
    assert found.value() == {"a": [1, "b"]}
    missing = models.RetrieveResponse(success=True, found=False)
    assert missing.value() is None


def test_invalid_json_raises_a_typed_error_naming_the_field() -> None:
    broken = models.RetrieveResponse(success=True, found=True, value_json='{"secret": "s3cr')
    with pytest.raises(JsonFieldError) as info:
        broken.value()
    assert isinstance(info.value, ValueError)
    assert info.value.field == "RetrieveResponse.value_json"
    assert str(info.value).startswith("RetrieveResponse.value_json is not valid JSON: ")
    assert "s3cr" not in str(info.value)  # the field's content is never repeated
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.field, str(again)) == (info.value.field, str(info.value))

    with pytest.raises(JsonFieldError, match=r"ExecuteToolResponse\.result_json"):
        models.ExecuteToolResponse(result_json="nope").result()
    with pytest.raises(JsonFieldError, match=r"ToolInfo\.input_schema_json"):
        models.ToolInfo(tool_id="t", input_schema_json="[1,").input_schema()


def test_json_payload() -> None:
    assert json_payload(models.BusMessage(payload=b'{"n": 1}')) == {"n": 1}
    assert json_payload(models.RequestResponse(payload=b"[true]")) == [True]
    assert json_payload(models.TaskAssignment(task_id="t", payload=b'"x"')) == "x"
    assert json_payload(models.BusMessage()) is None
    with pytest.raises(JsonFieldError, match=r"^BusMessage\.payload is not valid JSON"):
        json_payload(models.BusMessage(payload=b"\xff\xfe not json"))
