"""Delivery semantics of the dev Hub over loopback, with the generated stubs.

The rules: docs/architecture.md#delivery-semantics.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpclib.client
from grpclib.const import Status

from aether._wire import client, pb
from aether_hub.server import HubServer
from tests.hubserver.hubkit import WAIT, AgentConn, FakeClock, grpc_status

S = pb.TaskState


async def submit(tasks: client.TaskServiceStub, **fields: object) -> str:
    """Submit a task; its id."""
    resp = await tasks.submit_task(pb.SubmitTaskRequest(**fields))  # type: ignore[arg-type]  # test helper forwards keyword fields
    assert resp.task_id
    return resp.task_id


async def state_of(tasks: client.TaskServiceStub, task_id: str) -> pb.Task:
    """The task as GetTask shows it."""
    return await tasks.get_task(pb.GetTaskRequest(task_id=task_id))


async def test_submit_dispatch_result_roundtrip(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    agent = await AgentConn.register(channel, "worker")
    agent.open_stream()
    task_id = await submit(
        tasks,
        description="hello",
        payload=b"\x00\x01",
        metadata={"k": "v"},
        workflow_id="wf-1",
        priority=3,
    )
    assignment = await agent.next_assignment()
    assert assignment.task_id == task_id
    assert assignment.description == "hello" and assignment.payload == b"\x00\x01"
    assert assignment.metadata == {"k": "v"} and assignment.workflow_id == "wf-1"
    assert assignment.attempt == 1 and assignment.priority == 3
    assert assignment.created_at is not None
    leased = await state_of(tasks, task_id)
    assert leased.state == S.LEASED and leased.assigned_agent_id == "worker"

    status = await agent.stub.report_status(
        pb.TaskStatus(task_id=task_id, state=S.RUNNING, progress=0.5, message="half way"),
        metadata=agent.metadata,
    )
    assert status.accepted
    running = await state_of(tasks, task_id)
    assert running.state == S.RUNNING and abs(running.progress - 0.5) < 1e-6
    assert running.status_message == "half way"

    ack = await agent.result(task_id, result=b"done")
    assert ack.accepted and not ack.duplicate and ack.task_id == task_id
    done = await state_of(tasks, task_id)
    assert done.state == S.SUCCEEDED and done.result == b"done"
    assert done.completed_at is not None and done.attempt == 1


async def test_routing_by_task_type_and_target(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    coder = await AgentConn.register(channel, "coder", task_types="code_review, analysis")
    writer = await AgentConn.register(channel, "writer", task_types="writing")
    coder.open_stream()
    writer.open_stream()
    review = await submit(tasks, task_type="code_review")
    assert (await coder.next_assignment()).task_id == review
    essay = await submit(tasks, task_type="writing")
    assert (await writer.next_assignment()).task_id == essay
    # Addressed to the writer although of a type only the coder lists: the target wins.
    targeted = await submit(tasks, task_type="analysis", target_agent_id="writer")
    await writer.result(essay)
    assert (await writer.next_assignment()).task_id == targeted
    # A type nobody handles waits.
    orphan = await submit(tasks, task_type="painting")
    await coder.result(review)
    await writer.result(targeted)
    assert (await state_of(tasks, orphan)).state == S.PENDING
    # An untyped task goes to any agent.
    anyone = await submit(tasks, description="whatever")
    first = await asyncio.wait_for(
        asyncio.wait(
            [asyncio.ensure_future(coder.events.get()), asyncio.ensure_future(writer.events.get())],
            return_when=asyncio.FIRST_COMPLETED,
        ),
        WAIT,
    )
    done, pending = first
    for fut in pending:
        fut.cancel()
    event = next(iter(done)).result()
    assert event.assignment is not None and event.assignment.task_id == anyone
    # A late agent for the waiting type gets it.
    painter = await AgentConn.register(channel, "painter", task_types="painting")
    painter.open_stream()
    assert (await painter.next_assignment()).task_id == orphan


async def test_priority_then_fifo(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    ids = [
        await submit(tasks, description="low-1", priority=1),
        await submit(tasks, description="high-1", priority=5),
        await submit(tasks, description="low-2", priority=1),
        await submit(tasks, description="high-2", priority=5),
        await submit(tasks, description="mid", priority=3),
    ]
    agent = await AgentConn.register(channel, "solo")
    agent.open_stream()
    order = []
    for _ in ids:
        assignment = await agent.next_assignment()
        order.append(assignment.description)
        await agent.result(assignment.task_id)
    assert order == ["high-1", "high-2", "mid", "low-1", "low-2"]


async def test_concurrency_limit_is_honoured(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    agent = await AgentConn.register(channel, "pair", max_concurrent_tasks=2)
    agent.open_stream()
    ids = [await submit(tasks, description=str(i)) for i in range(5)]
    first = [(await agent.next_assignment()).task_id for _ in range(2)]
    assert first == ids[:2]
    session = hub.sessions.get(agent.session_id)
    assert session is not None and len(session.leases) == 2 and not session.unsent
    states = [(await state_of(tasks, t)).state for t in ids]
    assert states == [S.LEASED, S.LEASED, S.PENDING, S.PENDING, S.PENDING]
    await agent.result(first[0])
    third = await agent.next_assignment()
    assert third.task_id == ids[2]
    assert len(session.leases) == 2
    assert [(await state_of(tasks, t)).state for t in ids[3:]] == [S.PENDING, S.PENDING]


async def test_stream_override_of_max_concurrent_tasks(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    agent = await AgentConn.register(channel, "wide", max_concurrent_tasks=1)
    agent.open_stream(max_concurrent_tasks=3)
    for i in range(4):
        await submit(tasks, description=str(i))
    got = {(await agent.next_assignment()).description for _ in range(3)}
    assert got == {"0", "1", "2"}
    session = hub.sessions.get(agent.session_id)
    assert session is not None and len(session.leases) == 3


async def test_lease_expiry_redelivers_with_next_attempt(
    hub: HubServer,
    hub_clock: FakeClock,
    channel: grpclib.client.Channel,
    tasks: client.TaskServiceStub,
) -> None:
    dead = await AgentConn.register(channel, "dead")
    dead.open_stream()
    task_id = await submit(tasks, description="survive")
    assert (await dead.next_assignment()).attempt == 1
    alive = await AgentConn.register(channel, "alive")
    alive.open_stream()
    # Only the live agent keeps heart-beating.
    for _ in range(4):
        hub_clock.advance(30)
        await alive.heartbeat()
        hub.sweep()
    again = await alive.next_assignment()
    assert again.task_id == task_id and again.attempt == 2
    task = await state_of(tasks, task_id)
    assert task.state == S.LEASED and task.assigned_agent_id == "alive" and task.attempt == 2
    # The dead session's late result is refused: the task is leased to another agent.
    status, _ = await grpc_status(dead.result(task_id))
    assert status == Status.UNAUTHENTICATED  # its session is gone
    assert (await alive.result(task_id)).accepted
    await dead.close_stream()


async def test_lost_connection_requeues_and_max_attempts_fail_the_task(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    agent = await AgentConn.register(channel, "crashy")
    task_id = await submit(tasks, description="poison", max_attempts=2)
    for attempt in (1, 2):
        # The stream runs on its own connection, which then dies (as with a crash).
        conn = grpclib.client.Channel("127.0.0.1", hub.port)
        agent.open_stream(channel=conn)
        assignment = await agent.next_assignment()
        assert assignment.task_id == task_id and assignment.attempt == attempt
        conn.close()
        await agent.close_stream()
        # The Hub notices the lost connection; wait for the task to leave LEASED.
        for _ in range(500):
            if (await state_of(tasks, task_id)).state != S.LEASED:
                break
            await asyncio.sleep(0.01)
    task = await state_of(tasks, task_id)
    assert task.state == S.FAILED
    assert "gave up after 2 of 2 attempts" in task.error_message
    assert "stream" in task.error_message


async def test_cancelled_stream_keeps_leases_for_an_orderly_shutdown(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    # An agent that shuts down first cancels its stream (no new tasks), then hands back
    # what it could not finish and unregisters: no attempt is counted.
    agent = await AgentConn.register(channel, "tidy", max_concurrent_tasks=2)
    agent.open_stream()
    ids = [await submit(tasks), await submit(tasks)]
    for _ in ids:
        await agent.next_assignment()
    await agent.close_stream()
    session = hub.sessions.get(agent.session_id)
    assert session is not None
    for _ in range(500):
        if not session.streaming:
            break
        await asyncio.sleep(0.01)
    assert not session.streaming
    assert [(await state_of(tasks, t)).state for t in ids] == [S.LEASED, S.LEASED]
    third = await submit(tasks)  # nobody streams: it waits
    assert (await state_of(tasks, third)).state == S.PENDING
    ack = await agent.result(ids[0], success=False, released=True)
    assert ack.accepted
    resp = await agent.stub.unregister(
        pb.UnregisterRequest(agent_id="tidy"), metadata=agent.metadata
    )
    assert resp.requeued_tasks == 1
    for task_id in ids:
        task = await state_of(tasks, task_id)
        assert task.state == S.PENDING and task.attempt == 0


async def test_duplicate_results_are_acknowledged(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    agent = await AgentConn.register(channel, "dup")
    agent.open_stream()
    task_id = await submit(tasks)
    await agent.next_assignment()
    first = await agent.result(task_id, result=b"first")
    assert first.accepted and not first.duplicate
    second = await agent.result(task_id, success=False, error_message="late")
    assert second.accepted and second.duplicate
    task = await state_of(tasks, task_id)
    assert task.state == S.SUCCEEDED and task.result == b"first" and task.error_message == ""


async def test_result_for_a_task_of_another_agent_is_permission_denied(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    owner = await AgentConn.register(channel, "owner")
    thief = await AgentConn.register(channel, "thief")
    owner.open_stream()
    task_id = await submit(tasks, target_agent_id="owner")
    await owner.next_assignment()
    status, message = await grpc_status(thief.result(task_id))
    assert status == Status.PERMISSION_DENIED and "not leased to this session" in message
    status, _ = await grpc_status(
        thief.stub.report_status(
            pb.TaskStatus(task_id=task_id, progress=0.1), metadata=thief.metadata
        )
    )
    assert status == Status.PERMISSION_DENIED
    status, _ = await grpc_status(thief.result("no-such-task"))
    assert status == Status.NOT_FOUND
    assert (await state_of(tasks, task_id)).state == S.LEASED
    assert (await owner.result(task_id)).accepted


async def test_released_task_is_requeued_without_counting_an_attempt(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    leaving = await AgentConn.register(channel, "leaving", max_concurrent_tasks=2)
    leaving.open_stream()
    task_id = await submit(tasks)
    kept = await submit(tasks)
    waiting = await submit(tasks)
    assert (await leaving.next_assignment()).attempt == 1
    assert (await leaving.next_assignment()).task_id == kept
    ack = await leaving.result(task_id, success=False, released=True)
    assert ack.accepted and not ack.duplicate
    task = await state_of(tasks, task_id)
    assert task.state == S.PENDING and task.attempt == 0
    # A releasing agent is draining: the freed slot is not refilled.
    assert (await state_of(tasks, waiting)).state == S.PENDING
    session = hub.sessions.get(leaving.session_id)
    assert session is not None and set(session.leases) == {kept}
    fresh = await AgentConn.register(channel, "fresh")
    fresh.open_stream()
    redelivered = await fresh.next_assignment()
    assert redelivered.task_id == task_id and redelivered.attempt == 1


async def test_unregister_requeues_leases_without_counting_attempts(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    agent = await AgentConn.register(channel, "quitter", max_concurrent_tasks=2)
    agent.open_stream()
    ids = [await submit(tasks), await submit(tasks)]
    for _ in ids:
        await agent.next_assignment()
    resp = await agent.stub.unregister(
        pb.UnregisterRequest(agent_id="quitter"), metadata=agent.metadata
    )
    assert resp.success and resp.requeued_tasks == 2
    for task_id in ids:
        task = await state_of(tasks, task_id)
        assert task.state == S.PENDING and task.attempt == 0
    await agent.stream_ended.wait()
    assert agent.stream_error is None  # an orderly end


async def test_cancel_pending_and_leased_tasks(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    pending_id = await submit(tasks, task_type="nobody")
    resp = await tasks.cancel_task(pb.CancelTaskRequest(task_id=pending_id, reason="nah"))
    assert resp.success and resp.state == S.CANCELLED
    again = await tasks.cancel_task(pb.CancelTaskRequest(task_id=pending_id))
    assert not again.success and again.state == S.CANCELLED

    agent = await AgentConn.register(channel, "busy")
    agent.open_stream()
    leased_id = await submit(tasks)
    await agent.next_assignment()
    resp = await tasks.cancel_task(pb.CancelTaskRequest(task_id=leased_id, reason="stop it"))
    assert resp.success
    cancel = await agent.next_cancel()
    assert cancel.task_id == leased_id and cancel.reason == "stop it"
    # The handler still runs until the agent reports: its slot stays taken.
    queued = await submit(tasks)
    assert (await state_of(tasks, queued)).state == S.PENDING
    ack = await agent.result(leased_id, success=False, cancelled=True)
    assert ack.duplicate
    assert (await agent.next_assignment()).task_id == queued
    assert (await state_of(tasks, leased_id)).state == S.CANCELLED
    status, message = await grpc_status(tasks.cancel_task(pb.CancelTaskRequest(task_id="")))
    assert status == Status.INVALID_ARGUMENT and "task_id" in message


async def test_heartbeat_frees_the_slot_of_a_cancelled_task(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    agent = await AgentConn.register(channel, "forgetful")
    agent.open_stream()
    first = await submit(tasks)
    await agent.next_assignment()
    await tasks.cancel_task(pb.CancelTaskRequest(task_id=first))
    await agent.next_cancel()
    second = await submit(tasks)
    await agent.heartbeat(running=[first])  # still running: slot stays taken
    assert (await state_of(tasks, second)).state == S.PENDING
    await agent.heartbeat(running=[])  # stopped without reporting: slot freed
    assert (await agent.next_assignment()).task_id == second


async def test_task_timeout(
    hub: HubServer,
    hub_clock: FakeClock,
    channel: grpclib.client.Channel,
    tasks: client.TaskServiceStub,
) -> None:
    agent = await AgentConn.register(channel, "slow")
    agent.open_stream()
    task_id = await submit(tasks, timeout_seconds=5)
    assignment = await agent.next_assignment()
    assert assignment.deadline is not None
    hub_clock.advance(4)
    hub.sweep()
    assert (await state_of(tasks, task_id)).state == S.LEASED
    hub_clock.advance(2)
    hub.sweep()
    task = await state_of(tasks, task_id)
    assert task.state == S.TIMED_OUT and "timed out" in task.error_message
    cancel = await agent.next_cancel()
    assert cancel.task_id == task_id and "timed out" in cancel.reason
    # A pending task times out too.
    waiting = await submit(tasks, task_type="nobody", timeout_seconds=1)
    hub_clock.advance(1.5)
    hub.sweep()
    assert (await state_of(tasks, waiting)).state == S.TIMED_OUT


async def test_watch_task_streams_until_terminal(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    task_id = await submit(tasks, description="watched")
    seen: list[pb.TaskState] = []
    first_seen = asyncio.Event()

    async def watch() -> None:
        async for update in tasks.watch_task(pb.WatchTaskRequest(task_id=task_id)):
            assert update.task is not None
            seen.append(update.task.state)
            first_seen.set()

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(first_seen.wait(), WAIT)
    agent = await AgentConn.register(channel, "w")
    agent.open_stream()
    await agent.next_assignment()
    await agent.result(task_id)
    await asyncio.wait_for(watcher, WAIT)  # the stream ends by itself at the terminal state
    assert seen[0] == S.PENDING and seen[-1] == S.SUCCEEDED
    status, _ = await grpc_status(
        tasks.watch_task(pb.WatchTaskRequest(task_id="missing")).__anext__()
    )
    assert status == Status.NOT_FOUND


async def test_list_tasks_filters_and_pages(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    ids = [await submit(tasks, task_type="a", workflow_id="wf") for _ in range(5)]
    other = await submit(tasks, task_type="b")
    page = await tasks.list_tasks(pb.ListTasksRequest(task_type="a", limit=2))
    assert [t.task_id for t in page.tasks] == [ids[4], ids[3]]  # newest first
    assert page.next_page_token
    page2 = await tasks.list_tasks(
        pb.ListTasksRequest(task_type="a", limit=2, page_token=page.next_page_token)
    )
    assert [t.task_id for t in page2.tasks] == [ids[2], ids[1]]
    page3 = await tasks.list_tasks(
        pb.ListTasksRequest(task_type="a", limit=2, page_token=page2.next_page_token)
    )
    assert [t.task_id for t in page3.tasks] == [ids[0]] and page3.next_page_token == ""
    everything = await tasks.list_tasks(pb.ListTasksRequest())
    assert len(everything.tasks) == 6
    by_wf = await tasks.list_tasks(pb.ListTasksRequest(workflow_id="wf", state=S.PENDING))
    assert {t.task_id for t in by_wf.tasks} == set(ids)
    await tasks.cancel_task(pb.CancelTaskRequest(task_id=other))
    cancelled = await tasks.list_tasks(pb.ListTasksRequest(state=S.CANCELLED))
    assert [t.task_id for t in cancelled.tasks] == [other]
    status, message = await grpc_status(tasks.list_tasks(pb.ListTasksRequest(page_token="junk")))
    assert status == Status.INVALID_ARGUMENT and "page_token" in message


async def test_idempotency_key_returns_the_first_task(
    hub: HubServer, tasks: client.TaskServiceStub
) -> None:
    first = await submit(tasks, description="once", idempotency_key="order-42")
    second = await submit(tasks, description="twice", idempotency_key="order-42")
    assert first == second
    assert len(hub.queue) == 1


async def test_get_task_errors(tasks: client.TaskServiceStub) -> None:
    status, message = await grpc_status(tasks.get_task(pb.GetTaskRequest(task_id="")))
    assert status == Status.INVALID_ARGUMENT and "task_id" in message
    status, _ = await grpc_status(tasks.get_task(pb.GetTaskRequest(task_id="nope")))
    assert status == Status.NOT_FOUND
    status, message = await grpc_status(tasks.submit_task(pb.SubmitTaskRequest(max_attempts=-1)))
    assert status == Status.INVALID_ARGUMENT and "max_attempts" in message
    status, message = await grpc_status(tasks.submit_task(pb.SubmitTaskRequest(task_type="a,b")))
    assert status == Status.INVALID_ARGUMENT and "task_type" in message


async def test_submit_results_stream(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    agent = await AgentConn.register(channel, "batch", max_concurrent_tasks=3)
    agent.open_stream()
    ids = [await submit(tasks) for _ in range(3)]
    for _ in ids:
        await agent.next_assignment()
    results = [pb.TaskResult(task_id=t, success=True, result=t.encode()) for t in ids]
    results.append(pb.TaskResult(task_id=ids[0], success=True))  # a repeat
    results.append(pb.TaskResult(task_id="unknown", success=True))
    acks = [ack async for ack in agent.stub.submit_results(results, metadata=agent.metadata)]
    assert [a.task_id for a in acks] == [*ids, ids[0], "unknown"]
    assert all(a.accepted and not a.duplicate for a in acks[:3])
    assert acks[3].accepted and acks[3].duplicate
    assert not acks[4].accepted and "NOT_FOUND" in acks[4].message
    for task_id in ids:
        task = await state_of(tasks, task_id)
        assert task.state == S.SUCCEEDED and task.result == task_id.encode()


async def test_oversize_message_is_resource_exhausted() -> None:
    from aether_hub.settings import HubConfig
    from tests.hubserver.hubkit import running_hub

    async with running_hub(HubConfig(port=0, dev=True, max_message_bytes=4096)) as hub:
        ch = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            stub = client.TaskServiceStub(ch)
            status, message = await grpc_status(
                stub.submit_task(pb.SubmitTaskRequest(payload=b"x" * 10_000))
            )
            assert status == Status.RESOURCE_EXHAUSTED and "4096" in message
            ok = await stub.submit_task(pb.SubmitTaskRequest(payload=b"x" * 1000))
            assert ok.task_id
        finally:
            ch.close()


async def test_slow_stream_reader_does_not_stall_other_agents(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    # "stuck" opens its stream but never reads past the first event: its transport
    # backs up. Meanwhile "fast" keeps working through its own tasks.
    stuck = await AgentConn.register(channel, "stuck", task_types="big", max_concurrent_tasks=50)
    first_read = asyncio.Event()
    never = asyncio.Event()

    async def read_once_then_hang() -> None:
        request = pb.StreamTasksRequest(agent_id="stuck")
        async for _event in stuck.stub.stream_tasks(request, metadata=stuck.metadata):
            first_read.set()
            await never.wait()

    for _ in range(50):
        await submit(tasks, task_type="big", payload=b"y" * 60_000)
    reader = asyncio.create_task(read_once_then_hang())
    await asyncio.wait_for(first_read.wait(), WAIT)
    fast = await AgentConn.register(channel, "fast", task_types="small")
    fast.open_stream()
    for i in range(20):
        task_id = await submit(tasks, task_type="small", description=str(i))
        assignment = await fast.next_assignment()
        assert assignment.task_id == task_id
        assert (await fast.result(task_id)).accepted
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader


async def test_result_from_a_newer_session_of_the_same_agent_is_accepted(
    hub: HubServer, channel: grpclib.client.Channel, tasks: client.TaskServiceStub
) -> None:
    # An agent loses its connection mid-task, registers again and flushes its outbox.
    old = await AgentConn.register(channel, "phoenix", max_concurrent_tasks=2)
    old.open_stream()
    first = await submit(tasks)
    second = await submit(tasks)
    await old.next_assignment()
    await old.next_assignment()
    await old.close_stream()
    new = await AgentConn.register(channel, "phoenix", max_concurrent_tasks=2)
    # `first` is pending again (nobody streams yet): the outbox result still counts.
    assert (await state_of(tasks, first)).state == S.PENDING
    ack = await new.result(first, result=b"from the outbox")
    assert ack.accepted and not ack.duplicate
    done = await state_of(tasks, first)
    assert done.state == S.SUCCEEDED and done.result == b"from the outbox"
    # `second` is redelivered to the new session, and its outbox result is accepted too.
    new.open_stream()
    redelivered = await new.next_assignment()
    assert redelivered.task_id == second and redelivered.attempt == 2
    assert (await new.result(second)).accepted
    assert (await state_of(tasks, second)).state == S.SUCCEEDED


async def test_late_result_of_an_expired_lease_is_a_duplicate(
    hub: HubServer,
    hub_clock: FakeClock,
    channel: grpclib.client.Channel,
    tasks: client.TaskServiceStub,
) -> None:
    slow = await AgentConn.register(channel, "slowpoke")
    slow.open_stream()
    task_id = await submit(tasks)
    await slow.next_assignment()
    quick = await AgentConn.register(channel, "quick")
    quick.open_stream()
    for _ in range(4):  # only "quick" heart-beats: slowpoke's lease expires
        hub_clock.advance(30)
        await quick.heartbeat()
        hub.sweep()
    assert (await quick.next_assignment()).attempt == 2
    assert (await quick.result(task_id, result=b"quick")).accepted
    # slowpoke comes back (new session) and flushes its outbox: acknowledged, not applied.
    back = await AgentConn.register(channel, "slowpoke")
    ack = await back.result(task_id, result=b"slow")
    assert ack.accepted and ack.duplicate
    assert (await state_of(tasks, task_id)).result == b"quick"
    await slow.close_stream()
