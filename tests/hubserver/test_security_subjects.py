"""Messaging subject permissions and memory scope rules (issue 11).

An agent publishes and subscribes only under `agents.<its id>.>` and the Hub's shared
subjects (default: shared.> events.> review.> pricing.>); request/reply inboxes are private
to the requester. Task and workflow memory is for agents that submitted or run a task of
it. Refusals are PERMISSION_DENIED naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpclib.client
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether._wire import client, pb
from aether_hub.permissions import DEFAULT_SHARED_SUBJECTS, SubjectPolicy, pattern_within
from aether_hub.server import HubServer
from aether_hub.settings import ConfigError, HubConfig
from tests.hubserver.hubkit import AgentConn, grpc_status, running_hub

WAIT = 10.0


@pytest.fixture
async def hub() -> AsyncIterator[HubServer]:
    async with running_hub(HubConfig(port=0, dev=True)) as server:
        yield server


@pytest.fixture
async def channel(hub: HubServer) -> AsyncIterator[grpclib.client.Channel]:
    ch = grpclib.client.Channel("127.0.0.1", hub.port)
    try:
        yield ch
    finally:
        ch.close()


def test_pattern_within() -> None:
    assert pattern_within("review.*", "review.>")
    assert pattern_within("review.a.b", "review.>")
    assert not pattern_within("review", "review.>")
    assert not pattern_within(">", "review.>")
    assert not pattern_within("*.x", "review.>")
    assert pattern_within("agents.a.*", "agents.a.>")
    assert not pattern_within("agents.*.x", "agents.a.>")
    assert pattern_within("a.*", "a.*") and not pattern_within("a.>", "a.*")


def test_an_agent_id_with_a_dot_gets_no_own_namespace() -> None:
    policy = SubjectPolicy(())
    assert policy.allowance("alice") == ("agents.alice.>",)
    assert policy.allowance("a.b") == ()


def test_bad_shared_subjects_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="shared_subjects"):
        HubConfig(shared_subjects=("a..b",)).validate()
    with pytest.raises(ConfigError, match="inbox"):
        HubConfig(shared_subjects=("_INBOX.>",)).validate()


async def _publish(
    stub: client.MessagingServiceStub, agent: AgentConn, subject: str, reply_to: str = ""
) -> pb.PublishResponse:
    return await stub.publish(
        pb.PublishRequest(subject=subject, payload=b"x", reply_to=reply_to),
        metadata=agent.metadata,
    )


async def _subscribe_status(
    stub: client.MessagingServiceStub, agent: AgentConn, pattern: str
) -> tuple[Status, str]:
    async def first() -> None:
        async for _ in stub.subscribe(
            pb.SubscribeRequest(subject=pattern), metadata=agent.metadata
        ):
            return

    return await grpc_status(asyncio.wait_for(first(), WAIT))


async def test_own_namespace_and_shared_subjects_are_allowed(
    hub: HubServer, channel: grpclib.client.Channel
) -> None:
    alice = await AgentConn.register(channel, "alice")
    stub = client.MessagingServiceStub(channel)
    for subject in ("agents.alice.inbox", "review.completed", "pricing.quote", "events.x.y"):
        assert (await _publish(stub, alice, subject)).success
    got: asyncio.Queue[pb.BusMessage] = asyncio.Queue()

    async def read(pattern: str) -> None:
        async for message in stub.subscribe(
            pb.SubscribeRequest(subject=pattern), metadata=alice.metadata
        ):
            got.put_nowait(message)

    readers = [asyncio.create_task(read(p)) for p in ("agents.alice.>", "review.*")]
    try:
        while hub.bus.subscription_count < 2:  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
        await _publish(stub, alice, "agents.alice.note")
        await _publish(stub, alice, "review.done")
        subjects = {(await asyncio.wait_for(got.get(), WAIT)).subject for _ in range(2)}
        assert subjects == {"agents.alice.note", "review.done"}
    finally:
        for reader in readers:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, GRPCError):
                await reader


async def test_beyond_the_allowance_is_permission_denied(
    hub: HubServer, channel: grpclib.client.Channel
) -> None:
    alice = await AgentConn.register(channel, "alice")
    await AgentConn.register(channel, "bob")
    stub = client.MessagingServiceStub(channel)
    for pattern in (">", "agents.>", "agents.bob.>", "agents.*.inbox", "*.completed", "x.y"):
        status, message = await _subscribe_status(stub, alice, pattern)
        assert status == Status.PERMISSION_DENIED, (pattern, status, message)
        assert message.startswith("subject:") and "alice" in message
    for subject in ("agents.bob.inbox", "secret.plans"):
        status, message = await grpc_status(_publish(stub, alice, subject))
        assert status == Status.PERMISSION_DENIED and message.startswith("subject:")
        status, message = await grpc_status(
            stub.request(pb.RequestRequest(subject=subject), metadata=alice.metadata)
        )
        assert status == Status.PERMISSION_DENIED and message.startswith("subject:")
    status, message = await grpc_status(_publish(stub, alice, "review.x", reply_to="agents.bob.r"))
    assert status == Status.PERMISSION_DENIED and message.startswith("reply_to:")


async def test_request_reply_inboxes_are_private(
    hub: HubServer, channel: grpclib.client.Channel
) -> None:
    requester = await AgentConn.register(channel, "requester")
    responder = await AgentConn.register(channel, "responder")
    snoop = await AgentConn.register(channel, "snoop")
    stub = client.MessagingServiceStub(channel)
    for pattern in ("_INBOX.>", "_INBOX.*"):
        status, message = await _subscribe_status(stub, snoop, pattern)
        assert status == Status.PERMISSION_DENIED and "private" in message

    async def serve() -> None:
        async for message in stub.subscribe(
            pb.SubscribeRequest(subject="pricing.quote"), metadata=responder.metadata
        ):
            # Replying to the inbox is allowed (a literal _INBOX.<id> subject).
            await _publish(stub, responder, message.reply_to)

    server = asyncio.create_task(serve())
    try:
        while hub.bus.subscription_count < 1:  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
        reply = await stub.request(
            pb.RequestRequest(subject="pricing.quote", payload=b"q", timeout_ms=5000),
            metadata=requester.metadata,
        )
        assert reply.success, reply.error_message
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError, GRPCError):
            await server


async def test_shared_subjects_come_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    config = HubConfig(port=0, dev=True, shared_subjects=("team.>",))
    async with running_hub(config) as hub:
        channel = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            agent = await AgentConn.register(channel, "a1")
            stub = client.MessagingServiceStub(channel)
            assert (await _publish(stub, agent, "team.news")).success
            status, _ = await grpc_status(_publish(stub, agent, "review.completed"))
            assert status == Status.PERMISSION_DENIED
        finally:
            channel.close()
    assert "review.>" in DEFAULT_SHARED_SUBJECTS and "pricing.>" in DEFAULT_SHARED_SUBJECTS


# -- memory scopes ----------------------------------------------------------------------


async def test_task_and_workflow_memory_only_for_their_agents(
    hub: HubServer, channel: grpclib.client.Channel
) -> None:
    worker = await AgentConn.register(channel, "worker", task_types="job")
    other = await AgentConn.register(channel, "other")
    tasks = client.TaskServiceStub(channel)
    task_id = (
        await tasks.submit_task(pb.SubmitTaskRequest(task_type="job", workflow_id="wf-1"))
    ).task_id
    worker.open_stream()
    assert (await worker.next_assignment()).task_id == task_id
    memory = client.MemoryServiceStub(channel)
    for scope, scope_id in ((pb.MemoryScope.TASK, task_id), (pb.MemoryScope.WORKFLOW, "wf-1")):
        stored = await memory.store(
            pb.StoreRequest(key="k", value_json="1", scope=scope, scope_id=scope_id),
            metadata=worker.metadata,
        )
        assert stored.success
        got = await memory.retrieve(
            pb.RetrieveRequest(key="k", scope=scope, scope_id=scope_id),
            metadata=worker.metadata,
        )
        assert got.found
        for call in (
            memory.retrieve(
                pb.RetrieveRequest(key="k", scope=scope, scope_id=scope_id),
                metadata=other.metadata,
            ),
            memory.store(
                pb.StoreRequest(key="k", value_json="2", scope=scope, scope_id=scope_id),
                metadata=other.metadata,
            ),
            memory.list(
                pb.ListKeysRequest(scope=scope, scope_id=scope_id), metadata=other.metadata
            ),
            memory.delete(
                pb.DeleteRequest(key="k", scope=scope, scope_id=scope_id),
                metadata=other.metadata,
            ),
        ):
            status, message = await grpc_status(call)
            assert status == Status.PERMISSION_DENIED, (scope, status, message)
            assert message.startswith("scope_id:") and "'other'" in message
    # An unknown task is nobody's.
    status, _ = await grpc_status(
        memory.retrieve(
            pb.RetrieveRequest(key="k", scope=pb.MemoryScope.TASK, scope_id="no-such-task"),
            metadata=worker.metadata,
        )
    )
    assert status == Status.PERMISSION_DENIED
    await worker.close_stream()


async def test_an_agent_uses_the_memory_of_a_sub_task_it_submitted(
    hub: HubServer, channel: grpclib.client.Channel
) -> None:
    parent = await AgentConn.register(channel, "parent")
    as_agent = client.TaskServiceStub(channel, metadata=parent.metadata)
    sub = (await as_agent.submit_task(pb.SubmitTaskRequest(task_type="later"))).task_id
    memory = client.MemoryServiceStub(channel)
    stored = await memory.store(
        pb.StoreRequest(key="in", value_json='"x"', scope=pb.MemoryScope.TASK, scope_id=sub),
        metadata=parent.metadata,
    )
    assert stored.success
