"""The batched hot path over loopback: SubmitTasks (one call, one commit, one outcome per
task), several assignments per task stream event for agents that ask for them, and the
SDK on both ends (`TaskClient.submit_many`, `AetherAgent`) including its fallbacks."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from pathlib import Path

import grpclib.client
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether import (
    AetherAgent,
    AgentConfig,
    AuthenticationError,
    HubError,
    MessageTooLargeError,
    SubmitTaskRequest,
    SubmittedTask,
    TaskAssignment,
    TaskClient,
    TaskResult,
    TaskState,
)
from aether._wire import client, pb
from aether_hub import agent_service
from aether_hub.server import HubServer
from aether_hub.settings import HubConfig
from aether_hub.tasks import MAX_SUBMIT_BATCH, TaskService
from tests.hubserver.hubkit import WAIT, AgentConn, bearer, grpc_status, running_hub

S = pb.TaskState


def _req(**fields: object) -> pb.SubmitTaskRequest:
    return pb.SubmitTaskRequest(**fields)  # type: ignore[arg-type]  # test helper forwards keyword fields


# -- SubmitTasks on the wire ---------------------------------------------------------------


async def test_each_task_of_a_batch_is_acknowledged_or_refused_on_its_own(
    hub: HubServer, tasks: client.TaskServiceStub
) -> None:
    reply = await tasks.submit_tasks(
        pb.SubmitTasksRequest(
            tasks=[
                _req(description="first", task_type="a"),
                _req(description="bad", task_type="a,b"),
                _req(description="third", max_attempts=-1),
                _req(description="fourth", payload=b"\x01"),
            ]
        )
    )
    assert len(reply.results) == 4
    first, bad, third, fourth = reply.results
    assert first.submitted is not None and first.error is None
    assert fourth.submitted is not None
    assert bad.submitted is None and bad.error is not None
    assert bad.error.code == Status.INVALID_ARGUMENT.value
    assert bad.error.message.startswith("task_type:")
    assert third.error is not None and third.error.message.startswith("max_attempts:")
    # Only the good ones exist, in order, each as SubmitTask would have queued it.
    records = hub.queue.records()
    assert [r.description for r in records] == ["first", "fourth"]
    got = await tasks.get_task(pb.GetTaskRequest(task_id=fourth.submitted.task_id))
    assert got.state == S.PENDING and got.payload == b"\x01"
    assert records[0].task_id == first.submitted.task_id


async def test_idempotency_keys_in_a_batch(hub: HubServer, tasks: client.TaskServiceStub) -> None:
    earlier = await tasks.submit_task(_req(description="earlier", idempotency_key="k-old"))
    reply = await tasks.submit_tasks(
        pb.SubmitTasksRequest(
            tasks=[
                _req(description="new", idempotency_key="k-new"),
                _req(description="again", idempotency_key="k-old"),
                _req(description="new twice", idempotency_key="k-new"),
                _req(description="no key"),
            ]
        )
    )
    ids = [r.submitted.task_id for r in reply.results if r.submitted is not None]
    assert len(ids) == 4
    assert ids[1] == earlier.task_id
    assert ids[0] == ids[2] != earlier.task_id
    assert len(set(ids)) == 3
    assert len(hub.queue.records()) == 3
    # A later batch (or SubmitTask) with the same key finds the same task.
    again = await tasks.submit_tasks(
        pb.SubmitTasksRequest(tasks=[_req(description="x", idempotency_key="k-new")])
    )
    assert again.results[0].submitted is not None
    assert again.results[0].submitted.task_id == ids[0]


async def test_a_batch_over_the_limit_is_refused_naming_it(
    hub: HubServer, tasks: client.TaskServiceStub
) -> None:
    too_many = pb.SubmitTasksRequest(tasks=[_req() for _ in range(MAX_SUBMIT_BATCH + 1)])
    status, message = await grpc_status(tasks.submit_tasks(too_many))
    assert status is Status.INVALID_ARGUMENT
    assert message.startswith("tasks:") and str(MAX_SUBMIT_BATCH) in message
    assert hub.queue.records() == []
    empty = await tasks.submit_tasks(pb.SubmitTasksRequest())
    assert empty.results == []


async def test_roles_apply_to_each_task_of_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_CLIENT_TOKEN", "tok-batch")
    config = HubConfig(port=0, dev=True, client_token_env="BATCH_CLIENT_TOKEN")
    async with running_hub(config) as hub:
        channel = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            anonymous = client.TaskServiceStub(channel)
            status, _ = await grpc_status(anonymous.submit_tasks(pb.SubmitTasksRequest()))
            assert status is Status.UNAUTHENTICATED
            operator = client.TaskServiceStub(channel, metadata=bearer("tok-batch"))
            await operator.submit_task(_req(description="operator's", idempotency_key="op"))
            alice = await AgentConn.register(channel, "alice")
            as_alice = client.TaskServiceStub(channel, metadata=alice.metadata)
            reply = await as_alice.submit_tasks(
                pb.SubmitTasksRequest(
                    tasks=[
                        _req(description="sub-task"),
                        _req(description="x", idempotency_key="op"),
                    ]
                )
            )
            mine, theirs = reply.results
            assert mine.submitted is not None
            assert hub.queue.get(mine.submitted.task_id).submitted_by == "alice"  # type: ignore[union-attr]  # checked just above
            assert theirs.error is not None
            assert theirs.error.code == Status.PERMISSION_DENIED.value
            assert theirs.error.message.startswith("idempotency_key:")
        finally:
            channel.close()


async def test_a_batch_is_stored_before_it_is_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite3"
    async with running_hub(HubConfig(port=0, dev=True, db_path=str(db))) as hub:
        channel = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            stub = client.TaskServiceStub(channel)
            reply = await stub.submit_tasks(
                pb.SubmitTasksRequest(tasks=[_req(description=f"t{i}") for i in range(5)])
            )
            ids = [r.submitted.task_id for r in reply.results if r.submitted is not None]
            assert len(ids) == 5
            store = hub.queue.store
            assert store is not None
            for task_id in ids:  # read back from the table, not from memory
                stored = store.fetch(task_id)
                assert stored is not None and stored.state == S.PENDING
        finally:
            channel.close()


# -- several assignments per stream event -----------------------------------------------------


async def _submit_batch(tasks: client.TaskServiceStub, n: int) -> list[str]:
    reply = await tasks.submit_tasks(
        pb.SubmitTasksRequest(tasks=[_req(description=f"task {i}") for i in range(n)])
    )
    return [r.submitted.task_id for r in reply.results if r.submitted is not None]


async def test_an_agent_that_asks_gets_several_assignments_per_event(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    ids = await _submit_batch(tasks, 8)
    agent = await AgentConn.register(channel, "batcher", max_concurrent_tasks=8)
    agent.open_stream(assignment_batch_bytes=64 * 1024)
    received: list[str] = []
    events = 0
    while len(received) < 8:
        event = await agent.next_event()
        events += 1
        assert event.cancel is None
        if event.assignment is not None:
            received.append(event.assignment.task_id)
        received.extend(a.task_id for a in event.assignments)
    # Every task leased before the stream first ran went in one event, in lease order.
    assert events == 1 and received == ids
    for task_id in received:
        ack = await agent.result(task_id, result=task_id.encode())
        assert ack.accepted
    for task_id in ids:
        stored = await tasks.get_task(pb.GetTaskRequest(task_id=task_id))
        assert stored.state == S.SUCCEEDED and stored.result == task_id.encode()


async def test_an_agent_that_does_not_ask_gets_one_assignment_per_event(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    ids = await _submit_batch(tasks, 5)
    agent = await AgentConn.register(channel, "old-style", max_concurrent_tasks=5)
    agent.open_stream()  # assignment_batch_bytes 0: what agents that predate it send
    received = []
    for _ in ids:
        event = await agent.next_event()
        assert event.assignment is not None and event.assignments == []
        received.append(event.assignment.task_id)
    assert received == ids


async def test_result_batches_are_acknowledged_per_result_in_order(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    ids = await _submit_batch(tasks, 4)
    agent = await AgentConn.register(channel, "batch-results", max_concurrent_tasks=4)
    agent.open_stream(assignment_batch_bytes=64 * 1024)
    received: list[str] = []
    while len(received) < 4:
        event = await agent.next_event()
        received.extend(a.task_id for a in event.assignments)
        if event.assignment is not None:
            received.append(event.assignment.task_id)
    first = pb.TaskResultBatch(
        results=[
            pb.TaskResult(task_id=ids[0], success=True, result=b"0"),
            pb.TaskResult(task_id="no-such-task", success=True),  # refused, not fatal
            pb.TaskResult(task_id=ids[1], success=False, error_message="boom"),
        ]
    )
    second = pb.TaskResultBatch(
        results=[
            pb.TaskResult(task_id=ids[2], success=True),
            pb.TaskResult(task_id=ids[3], success=True),
            pb.TaskResult(task_id=ids[0], success=True),  # a repeat: a duplicate
        ]
    )
    answers = [
        answer
        async for answer in agent.stub.submit_result_batches(
            [first, second], metadata=agent.metadata
        )
    ]
    assert [[a.task_id for a in answer.acks] for answer in answers] == [
        [ids[0], "no-such-task", ids[1]],
        [ids[2], ids[3], ids[0]],
    ]
    refused = answers[0].acks[1]
    assert not refused.accepted and refused.message.startswith("NOT_FOUND")
    assert answers[1].acks[2].duplicate
    states = [(await tasks.get_task(pb.GetTaskRequest(task_id=i))).state for i in ids]
    assert states == [S.SUCCEEDED, S.FAILED, S.SUCCEEDED, S.SUCCEEDED]


def _event(task_id: str, payload: bytes = b"") -> pb.TaskStreamEvent:
    return pb.TaskStreamEvent(assignment=pb.TaskAssignment(task_id=task_id, payload=payload))


def test_batches_stop_at_a_cancellation_and_at_the_byte_budget() -> None:
    cancel = pb.TaskStreamEvent(cancel=pb.TaskCancellation(task_id="c"))
    unsent = deque([_event("a"), _event("b"), cancel, _event("d")])
    first = agent_service.take_assignments(unsent, 64 * 1024)
    assert [a.task_id for a in first.assignments] == ["a", "b"] and first.assignment is None
    assert unsent[0] is cancel  # order kept: the cancellation comes next, on its own
    unsent.popleft()
    single = agent_service.take_assignments(unsent, 64 * 1024)
    assert single.assignment is not None and single.assignment.task_id == "d"
    assert single.assignments == []
    # The budget bounds an event; a larger assignment still goes, alone.
    big = deque([_event("big", b"x" * 5000), _event("e", b"x" * 500), _event("f", b"x" * 500)])
    alone = agent_service.take_assignments(big, 2000)
    assert alone.assignment is not None and alone.assignment.task_id == "big"
    pair = agent_service.take_assignments(big, 2000)
    assert [a.task_id for a in pair.assignments] == ["e", "f"]
    assert len(bytes(pair)) <= 2000


async def test_a_negative_batch_budget_is_refused(
    hub: HubServer, channel: grpclib.client.Channel
) -> None:
    agent = await AgentConn.register(channel, "neg")
    agent.open_stream(assignment_batch_bytes=-1)
    await asyncio.wait_for(agent.stream_ended.wait(), WAIT)
    assert agent.stream_error is not None
    assert agent.stream_error.status is Status.INVALID_ARGUMENT
    assert (agent.stream_error.message or "").startswith("assignment_batch_bytes:")


# -- the SDK on both ends -------------------------------------------------------------------


class EchoAgent(AetherAgent):
    """Answers every task with its description."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        return TaskResult(task_id=task.task_id, success=True, result=task.description.encode())


def _agent(hub: HubServer, agent_id: str = "echo", concurrency: int = 16) -> EchoAgent:
    return EchoAgent(
        AgentConfig(
            agent_id=agent_id,
            agent_name=f"test {agent_id}",
            hub_url=hub.address,
            max_concurrent_tasks=concurrency,
            shutdown_grace_seconds=5,
        )
    )


async def test_sdk_agent_runs_batched_assignments_and_stores_every_result(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    take = agent_service.take_assignments

    def counting(
        unsent: deque[pb.TaskStreamEvent],
        max_bytes: int,
        ready: Callable[[str], bool] | None = None,
    ) -> pb.TaskStreamEvent:
        event = take(unsent, max_bytes, ready)
        batches.append(len(event.assignments))
        return event

    monkeypatch.setattr(agent_service, "take_assignments", counting)
    agent = _agent(hub)
    await agent.start()
    try:
        async with TaskClient(hub.address) as tc:
            submitted = await tc.submit_many([f"job {i}" for i in range(100)])
            assert all(isinstance(s, SubmittedTask) for s in submitted)
            for i, item in enumerate(submitted):
                assert isinstance(item, SubmittedTask)
                done = await item.wait(timeout=WAIT)
                assert done.state is TaskState.SUCCEEDED
                assert done.result == f"job {i}".encode()
    finally:
        await agent.stop()
    # The 16 tasks leased at once when the batch arrived went out together.
    assert any(n > 1 for n in batches)


async def test_submit_many_keeps_order_and_reports_each_refusal(hub: HubServer) -> None:
    async with TaskClient(hub.address, max_message_bytes=4096) as tc:
        items = await tc.submit_many(
            [
                SubmitTaskRequest(description="a", idempotency_key="key-a"),
                SubmitTaskRequest(description="bad", task_type="x,y"),
                SubmitTaskRequest(description="too large", payload=b"x" * 5000),
                "c",
                SubmitTaskRequest(description="a again", idempotency_key="key-a"),
                *[f"n{i}" for i in range(7)],
            ],
            chunk_size=3,
        )
        assert len(items) == 12
        assert isinstance(items[1], HubError) and "task_type" in str(items[1])
        assert isinstance(items[2], MessageTooLargeError)
        ok = [item for item in items if isinstance(item, SubmittedTask)]
        assert len(ok) == 10
        assert isinstance(items[0], SubmittedTask) and isinstance(items[4], SubmittedTask)
        assert items[0].task_id == items[4].task_id
        # Queued in the order given (chunk after chunk).
        descriptions = [r.description for r in hub.queue.records()]
        assert descriptions == ["a", "c", *[f"n{i}" for i in range(7)]]
        assert "too large" not in descriptions
    with pytest.raises(ValueError, match="chunk_size"):
        await TaskClient(hub.address).submit_many([], chunk_size=MAX_SUBMIT_BATCH + 1)


@pytest.mark.parametrize("how", ["not served", "unimplemented"])
async def test_submit_many_falls_back_to_submit_task_on_an_older_hub(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    mapping = TaskService.__mapping__
    calls: list[str] = []
    batch_calls: list[int] = []

    def without_batch(self: TaskService) -> dict[str, object]:
        return {k: v for k, v in mapping(self).items() if not k.endswith("/SubmitTasks")}

    async def unimplemented(
        self: TaskService, request: pb.SubmitTasksRequest, context: object
    ) -> pb.SubmitTasksResponse:
        batch_calls.append(len(request.tasks))
        raise GRPCError(Status.UNIMPLEMENTED, "Method not found")

    async def counting_submit(
        self: TaskService, request: pb.SubmitTaskRequest, context: object
    ) -> pb.SubmitTaskResponse:
        calls.append(request.description)
        return await original_submit(self, request, context)  # type: ignore[arg-type]  # forwards the real context

    original_submit = TaskService.submit_task
    if how == "not served":  # a grpclib Hub that predates SubmitTasks
        monkeypatch.setattr(TaskService, "__mapping__", without_batch)
    else:  # a server that answers UNIMPLEMENTED itself (grpcio, a proxy)
        monkeypatch.setattr(TaskService, "submit_tasks", unimplemented)
    monkeypatch.setattr(TaskService, "submit_task", counting_submit)
    async with running_hub(HubConfig(port=0, dev=True)) as hub:
        async with TaskClient(hub.address) as tc:
            first = await tc.submit_many(["a", SubmitTaskRequest(description="b", task_type="p,q")])
            assert isinstance(first[0], SubmittedTask)
            assert isinstance(first[1], HubError) and "task_type" in str(first[1])
            second = await tc.submit_many([f"more {i}" for i in range(5)], chunk_size=2)
            assert all(isinstance(item, SubmittedTask) for item in second)
        assert sorted(calls) == sorted(["a", "b", *[f"more {i}" for i in range(5)]])
        assert len(hub.queue.records()) == 6
        # Asked once per client; after that straight to SubmitTask.
        assert batch_calls == ([] if how == "not served" else [2])


async def test_submit_many_gives_each_task_the_error_of_a_failed_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCH_CLIENT_TOKEN", "tok-batch")
    config = HubConfig(port=0, dev=True, client_token_env="BATCH_CLIENT_TOKEN")
    async with running_hub(config) as hub, TaskClient(hub.address, token="wrong") as tc:
        items = await tc.submit_many(["a", "b", "c"], chunk_size=2)
        assert len(items) == 3
        assert all(isinstance(item, AuthenticationError) for item in items)
        assert hub.queue.records() == []
