"""OpenTelemetry traces across the whole path: TaskClient.submit → the Hub's SubmitTask →
dispatch → the agent's handle_task → its Hub calls (client and server side) → the result,
as one trace; a retry on another agent joins it. A real Hub (`TestHub`, in memory) and
real agents share the process and one `TracerProvider` with an in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util._once import Once

from aether import AetherAgent, AgentConfig, TaskAssignment, TaskResult, TaskState
from aether_hub.testing import TestHub


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A TracerProvider (exporting to memory) set as the global one for the test only."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


class Thinker(AetherAgent):
    """Asks the LLM, stores the answer in the task's memory, returns it."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        reply = await self.hub.llm.chat([{"role": "user", "content": task.description}])
        await self.hub.memory.store("answer", reply.content, scope="task")
        return TaskResult(task_id=task.task_id, success=True, result=reply.content.encode())


class Stuck(AetherAgent):
    """Never finishes a task (until it is stopped and hands the task back)."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__(config)
        self.started = asyncio.Event()

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def _one(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.name == name and s.kind is kind]
    assert len(found) == 1, f"{name} ({kind.name}): {[(s.name, s.kind.name) for s in spans]}"
    return found[0]


def _parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _id(span: ReadableSpan) -> int:
    assert span.context is not None
    span_id: int = span.context.span_id
    return span_id


def _trace(exporter: InMemorySpanExporter, root_name: str) -> list[ReadableSpan]:
    """The spans of the trace whose root is the CLIENT span `root_name`."""
    finished = list(exporter.get_finished_spans())
    roots = [s for s in finished if s.name == root_name and s.kind is SpanKind.CLIENT]
    assert len(roots) == 1
    assert roots[0].context is not None
    trace_id = roots[0].context.trace_id
    return [s for s in finished if s.context is not None and s.context.trace_id == trace_id]


SUBMIT = "aether.v1.TaskService/SubmitTask"


async def test_one_task_is_one_trace_from_submit_to_result(
    spans: InMemorySpanExporter,
) -> None:
    agent = Thinker(AgentConfig(agent_id="thinker", agent_name="Thinker"))
    async with TestHub(in_memory=True) as hub, hub.running(agent):
        submitted = await hub.client.submit("what is up", target_agent_id="thinker")
        task = await submitted.wait(timeout=10)
    assert task.state is TaskState.SUCCEEDED

    got = _trace(spans, SUBMIT)
    submit = _one(got, SUBMIT, SpanKind.CLIENT)
    served = _one(got, SUBMIT, SpanKind.SERVER)
    dispatch = _one(got, "dispatch", SpanKind.PRODUCER)
    handle = _one(got, "handle_task", SpanKind.CONSUMER)
    chat = _one(got, "aether.v1.LLMService/Chat", SpanKind.CLIENT)
    chat_served = _one(got, "aether.v1.LLMService/Chat", SpanKind.SERVER)
    store = _one(got, "aether.v1.MemoryService/Store", SpanKind.CLIENT)
    store_served = _one(got, "aether.v1.MemoryService/Store", SpanKind.SERVER)
    result = _one(got, "result", SpanKind.CONSUMER)

    assert _parent_of(submit) is None
    assert _parent_of(served) == _id(submit)
    assert _parent_of(dispatch) == _id(served)
    assert _parent_of(handle) == _id(dispatch)
    assert _parent_of(chat) == _id(handle)
    assert _parent_of(chat_served) == _id(chat)
    assert _parent_of(store) == _id(handle)
    assert _parent_of(store_served) == _id(store)
    assert _parent_of(result) == _id(served)

    # OpenTelemetry's RPC and GenAI conventions.
    assert served.attributes is not None
    assert served.attributes["rpc.system"] == "grpc"
    assert served.attributes["rpc.service"] == "aether.v1.TaskService"
    assert served.attributes["rpc.method"] == "SubmitTask"
    assert served.attributes["rpc.grpc.status_code"] == 0
    assert chat.attributes is not None
    assert chat.attributes["rpc.method"] == "Chat"
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.response.model"]
    input_tokens = chat.attributes["gen_ai.usage.input_tokens"]
    output_tokens = chat.attributes["gen_ai.usage.output_tokens"]
    assert isinstance(input_tokens, int) and input_tokens > 0
    assert isinstance(output_tokens, int) and output_tokens > 0
    assert handle.attributes is not None
    assert handle.attributes["aether.task.id"] == task.task_id
    assert handle.attributes["aether.task.success"] is True
    assert result.attributes is not None
    assert result.attributes["aether.task.success"] is True
    # The task keeps its trace context (the SubmitTask server span's).
    assert served.context is not None
    assert task.metadata["traceparent"].startswith(
        f"00-{served.context.trace_id:032x}-{served.context.span_id:016x}-"
    )


async def test_a_retry_on_another_agent_joins_the_same_trace(
    spans: InMemorySpanExporter,
) -> None:
    first = Stuck(AgentConfig(agent_id="first", agent_name="First", shutdown_grace_seconds=0))
    second = Thinker(AgentConfig(agent_id="second", agent_name="Second"))
    async with TestHub(in_memory=True) as hub:
        async with hub.running(first):
            submitted = await hub.client.submit("again")
            await asyncio.wait_for(first.started.wait(), 10)
        # The first agent's session ended with the task unfinished: it is queued again.
        async with hub.running(second):
            task = await submitted.wait(timeout=10)
    assert task.state is TaskState.SUCCEEDED
    assert task.assigned_agent_id == "second"

    got = _trace(spans, SUBMIT)
    served = _one(got, SUBMIT, SpanKind.SERVER)
    dispatches = [s for s in got if s.name == "dispatch"]
    handles = [s for s in got if s.name == "handle_task"]
    assert len(dispatches) == 2 and len(handles) == 2
    assert all(_parent_of(d) == _id(served) for d in dispatches)
    assert sorted(_parent_of(h) or 0 for h in handles) == sorted(_id(d) for d in dispatches)
    agents = {d.attributes["aether.agent.id"] for d in dispatches if d.attributes is not None}
    assert agents == {"first", "second"}
    # The second attempt's Hub calls are in the trace too.
    chat = _one(got, "aether.v1.LLMService/Chat", SpanKind.CLIENT)
    second_handle = next(
        h for h in handles if h.attributes and h.attributes.get("aether.task.success")
    )
    assert _parent_of(chat) == _id(second_handle)


async def test_without_a_tracer_provider_nothing_is_traced() -> None:
    # The API's default (no-op) provider: no span records, no context is kept with tasks.
    exporter = InMemorySpanExporter()
    unused = TracerProvider()
    unused.add_span_processor(SimpleSpanProcessor(exporter))
    assert not trace.get_tracer(__name__).start_span("probe").is_recording()
    agent = Thinker(AgentConfig(agent_id="thinker", agent_name="Thinker"))
    async with TestHub(in_memory=True) as hub, hub.running(agent):
        submitted = await hub.client.submit("quiet", target_agent_id="thinker")
        task = await submitted.wait(timeout=10)
    assert task.state is TaskState.SUCCEEDED
    assert "traceparent" not in task.metadata
    assert exporter.get_finished_spans() == ()
