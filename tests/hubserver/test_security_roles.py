"""Least privilege on TaskService (issue 11: "any token is a master key").

Roles: the client token (submitter/operator) may do everything; an agent's session token
may submit (sub-)tasks and get, watch and cancel only the tasks it submitted or runs, lists
only those, and may not call ListAgents or GetQueueStats. Every rule is tested allowed and
refused; a refusal is PERMISSION_DENIED naming the agent.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpclib.client
import pytest
from grpclib.const import Status

from aether._wire import client, pb
from aether_hub.db import Database
from aether_hub.server import HubServer
from aether_hub.settings import HubConfig
from aether_hub.taskstore import TaskStore
from tests.hubserver.hubkit import AgentConn, bearer, grpc_status, running_hub

TOKEN = "roles-client-token-0123456789"


@dataclass
class World:
    """A Hub with a client token, two agents and a task of each kind."""

    hub: HubServer
    channel: grpclib.client.Channel
    operator: client.TaskServiceStub  # with the client token
    alice: AgentConn
    bob: AgentConn
    alice_tasks: client.TaskServiceStub  # with alice's session token
    bob_tasks: client.TaskServiceStub
    by_client: str  # submitted by the client, pending, nobody runs it
    by_alice: str  # submitted by alice
    bobs_running: str  # submitted by the client, leased to bob


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    monkeypatch.setenv("ROLES_CLIENT_TOKEN", TOKEN)
    config = HubConfig(port=0, dev=True, client_token_env="ROLES_CLIENT_TOKEN")
    async with running_hub(config) as hub:
        channel = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            operator = client.TaskServiceStub(channel, metadata=bearer(TOKEN))
            alice = await AgentConn.register(channel, "alice", task_types="alice-work")
            bob = await AgentConn.register(channel, "bob", task_types="bob-work")
            alice_tasks = client.TaskServiceStub(channel, metadata=alice.metadata)
            bob_tasks = client.TaskServiceStub(channel, metadata=bob.metadata)
            by_client = (
                await operator.submit_task(
                    pb.SubmitTaskRequest(description="nobody's", target_agent_id="nobody")
                )
            ).task_id
            by_alice = (
                await alice_tasks.submit_task(
                    pb.SubmitTaskRequest(description="sub-task", task_type="unserved")
                )
            ).task_id
            bobs_running = (
                await operator.submit_task(
                    pb.SubmitTaskRequest(description="for bob", task_type="bob-work")
                )
            ).task_id
            bob.open_stream()
            assert (await bob.next_assignment()).task_id == bobs_running
            yield World(
                hub=hub,
                channel=channel,
                operator=operator,
                alice=alice,
                bob=bob,
                alice_tasks=alice_tasks,
                bob_tasks=bob_tasks,
                by_client=by_client,
                by_alice=by_alice,
                bobs_running=bobs_running,
            )
            await bob.close_stream()
        finally:
            channel.close()


def _denied(status: Status, message: str, agent: str) -> None:
    assert status == Status.PERMISSION_DENIED, (status, message)
    assert f"agent {agent!r}" in message
    assert "client token" in message


async def test_the_client_token_may_do_everything(world: World) -> None:
    c = world.operator
    for task_id in (world.by_client, world.by_alice, world.bobs_running):
        assert (await c.get_task(pb.GetTaskRequest(task_id=task_id))).task_id == task_id
        updates = [u async for u in _first_update(c, task_id)]
        assert updates[0].task is not None and updates[0].task.task_id == task_id
    listed = await c.list_tasks(pb.ListTasksRequest())
    assert {t.task_id for t in listed.tasks} == {
        world.by_client,
        world.by_alice,
        world.bobs_running,
    }
    agents = await c.list_agents(pb.ListAgentsRequest())
    assert {a.agent_id for a in agents.agents} == {"alice", "bob"}
    assert await c.get_queue_stats(pb.GetQueueStatsRequest()) is not None
    reply = await c.cancel_task(pb.CancelTaskRequest(task_id=world.bobs_running))
    assert reply.success


async def _first_update(stub: client.TaskServiceStub, task_id: str) -> AsyncIterator[pb.TaskUpdate]:
    async for update in stub.watch_task(pb.WatchTaskRequest(task_id=task_id)):
        yield update
        return


async def test_an_agent_may_submit_and_follow_its_own_sub_tasks(world: World) -> None:
    a = world.alice_tasks
    task = await a.get_task(pb.GetTaskRequest(task_id=world.by_alice))
    assert task.task_id == world.by_alice
    assert world.hub.queue.get(world.by_alice) is not None
    assert world.hub.queue.get(world.by_alice).submitted_by == "alice"  # type: ignore[union-attr]
    updates = [u async for u in _first_update(a, world.by_alice)]
    assert updates[0].task is not None
    reply = await a.cancel_task(pb.CancelTaskRequest(task_id=world.by_alice))
    assert reply.success


async def test_an_agent_may_get_watch_and_cancel_the_task_it_runs(world: World) -> None:
    b = world.bob_tasks
    assert (await b.get_task(pb.GetTaskRequest(task_id=world.bobs_running))).assigned_agent_id
    updates = [u async for u in _first_update(b, world.bobs_running)]
    assert updates[0].task is not None
    reply = await b.cancel_task(pb.CancelTaskRequest(task_id=world.bobs_running))
    assert reply.success


async def test_an_agent_may_not_touch_tasks_of_others(world: World) -> None:
    a = world.alice_tasks
    for task_id in (world.by_client, world.bobs_running):
        status, message = await grpc_status(a.get_task(pb.GetTaskRequest(task_id=task_id)))
        _denied(status, message, "alice")
        status, message = await grpc_status(a.cancel_task(pb.CancelTaskRequest(task_id=task_id)))
        _denied(status, message, "alice")
        status, message = await grpc_status(_drain(a, task_id))
        _denied(status, message, "alice")
    # bob's running task is still running: alice's cancel did nothing.
    rec = world.hub.queue.get(world.bobs_running)
    assert rec is not None and not rec.terminal
    # bob may not see alice's sub-task either.
    status, message = await grpc_status(
        world.bob_tasks.get_task(pb.GetTaskRequest(task_id=world.by_alice))
    )
    _denied(status, message, "bob")


async def _drain(stub: client.TaskServiceStub, task_id: str) -> None:
    async for _ in stub.watch_task(pb.WatchTaskRequest(task_id=task_id)):
        pass


async def test_an_agent_lists_only_its_own_tasks(world: World) -> None:
    alice = await world.alice_tasks.list_tasks(pb.ListTasksRequest())
    assert [t.task_id for t in alice.tasks] == [world.by_alice]
    bob = await world.bob_tasks.list_tasks(pb.ListTasksRequest())
    assert [t.task_id for t in bob.tasks] == [world.bobs_running]
    # Filters cannot widen the view.
    bob_by_agent = await world.alice_tasks.list_tasks(pb.ListTasksRequest(agent_id="bob"))
    assert bob_by_agent.tasks == []


async def test_an_agent_may_not_list_agents_or_read_queue_stats(world: World) -> None:
    status, message = await grpc_status(world.alice_tasks.list_agents(pb.ListAgentsRequest()))
    _denied(status, message, "alice")
    status, message = await grpc_status(
        world.alice_tasks.get_queue_stats(pb.GetQueueStatsRequest())
    )
    _denied(status, message, "alice")


async def test_an_agent_may_not_claim_another_submitters_idempotency_key(world: World) -> None:
    key_task = await world.operator.submit_task(
        pb.SubmitTaskRequest(description="keyed", idempotency_key="order-7")
    )
    status, message = await grpc_status(
        world.alice_tasks.submit_task(
            pb.SubmitTaskRequest(description="keyed", idempotency_key="order-7")
        )
    )
    assert status == Status.PERMISSION_DENIED
    assert "idempotency_key" in message and key_task.task_id not in message
    # Its own key is fine, and repeats answer the same task.
    first = await world.alice_tasks.submit_task(pb.SubmitTaskRequest(idempotency_key="mine"))
    again = await world.alice_tasks.submit_task(pb.SubmitTaskRequest(idempotency_key="mine"))
    assert first.task_id == again.task_id


async def test_unknown_and_missing_tokens_are_unauthenticated(world: World) -> None:
    anonymous = client.TaskServiceStub(world.channel)
    status, _ = await grpc_status(anonymous.list_tasks(pb.ListTasksRequest()))
    assert status == Status.UNAUTHENTICATED
    forged = client.TaskServiceStub(world.channel, metadata=bearer("not-a-token"))
    status, message = await grpc_status(forged.list_tasks(pb.ListTasksRequest()))
    assert status == Status.UNAUTHENTICATED and "not-a-token" not in message


async def test_a_session_token_is_an_agent_also_without_a_client_token() -> None:
    async with running_hub(HubConfig(port=0, dev=True)) as hub:
        channel = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            open_client = client.TaskServiceStub(channel)  # loopback, no token configured
            await open_client.submit_task(pb.SubmitTaskRequest(description="operator's"))
            agent = await AgentConn.register(channel, "carol")
            as_agent = client.TaskServiceStub(channel, metadata=agent.metadata)
            assert (await as_agent.list_tasks(pb.ListTasksRequest())).tasks == []
            status, message = await grpc_status(as_agent.list_agents(pb.ListAgentsRequest()))
            _denied(status, message, "carol")
        finally:
            channel.close()


async def test_submitted_by_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite3"
    config = HubConfig(port=0, dev=True, db_path=str(db))
    async with running_hub(config) as hub:
        channel = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            agent = await AgentConn.register(channel, "dave")
            stub = client.TaskServiceStub(channel, metadata=agent.metadata)
            task_id = (await stub.submit_task(pb.SubmitTaskRequest(task_type="x"))).task_id
        finally:
            channel.close()
    async with running_hub(config) as hub:
        rec = hub.queue.get(task_id)
        assert rec is not None and rec.submitted_by == "dave"


def test_an_older_tasks_table_gets_the_submitted_by_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, description TEXT NOT NULL,
            payload BLOB NOT NULL, task_type TEXT NOT NULL, target_agent_id TEXT NOT NULL,
            priority INTEGER NOT NULL, metadata TEXT NOT NULL, workflow_id TEXT NOT NULL,
            max_attempts INTEGER NOT NULL, created_at REAL NOT NULL, deadline REAL,
            idempotency_key TEXT NOT NULL, state INTEGER NOT NULL, attempt INTEGER NOT NULL,
            assigned_agent_id TEXT NOT NULL, progress REAL NOT NULL,
            status_message TEXT NOT NULL, result BLOB NOT NULL, error_message TEXT NOT NULL,
            metrics TEXT NOT NULL, updated_at REAL NOT NULL, completed_at REAL
        );
        INSERT INTO tasks VALUES ('t1', 1, 'old', x'', '', '', 0, '{}', '', 3, 1.0, NULL, '',
            1, 0, '', 0.0, '', x'', '', '{}', 1.0, NULL);
        """
    )
    conn.commit()
    conn.close()
    database = Database(path)
    try:
        store = TaskStore(database)
        (rec,) = store.load(terminal_limit=10)
        assert rec.task_id == "t1" and rec.submitted_by == ""
        rec.submitted_by = "erin"
        store.mark(rec)
        store.flush()
        fetched = store.fetch("t1")
        assert fetched is not None and fetched.submitted_by == "erin"
    finally:
        database.close()
