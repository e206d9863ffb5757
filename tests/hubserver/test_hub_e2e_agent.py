"""A real `AetherAgent` (the SDK) against a real dev Hub: the whole path, no doubles."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpclib.client
import pytest
from pydantic import SecretStr

from aether import AetherAgent, AgentConfig, TaskAssignment, TaskResult
from aether._wire import client, pb
from aether_hub.server import HubServer
from aether_hub.settings import AgentSpec, HubConfig
from aether_hub.tasks import TaskSubmission
from tests.hubserver.hubkit import running_hub

S = pb.TaskState


class ReviewAgent(AetherAgent):
    """Uses the Hub's LLM and memory, reports progress, returns a result."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        await self.report_progress(0.5, "asking the LLM")
        reply = await self.hub.llm.chat(messages=[{"role": "user", "content": task.description}])
        await self.hub.memory.store(
            key=f"review-{task.task_id}", value={"len": len(reply.content)}, scope="global"
        )
        return TaskResult(
            task_id=task.task_id,
            success=reply.success,
            result=reply.content.encode(),
            metrics={"model": reply.model},
        )


class BlockingAgent(AetherAgent):
    """Starts a task and waits until cancelled (by stop())."""

    started: asyncio.Event

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def _wait_terminal(hub: HubServer, task_id: str) -> pb.Task:
    rec = await asyncio.wait_for(hub.queue.wait_finished(task_id), 30)
    return rec.to_pb()


async def test_sdk_agent_runs_tasks_through_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVIEWER_SECRET", "e2e-secret")
    config = HubConfig(
        port=0,
        agents=(AgentSpec("reviewer", secret_env="REVIEWER_SECRET", trust_level="standard"),),
    )
    async with running_hub(config) as hub:
        agent = ReviewAgent(
            AgentConfig(
                agent_id="reviewer",
                agent_name="Reviewer",
                hub_url=hub.address,
                secret=SecretStr("e2e-secret"),
                capabilities={"task_types": "code_review"},
                max_concurrent_tasks=4,
            )
        )
        ch = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            await agent.start()
            tasks = client.TaskServiceStub(ch)
            ids = [
                (
                    await tasks.submit_task(
                        pb.SubmitTaskRequest(description=f"review #{i}", task_type="code_review")
                    )
                ).task_id
                for i in range(5)
            ]
            for task_id in ids:
                task = await _wait_terminal(hub, task_id)
                assert task.state == S.SUCCEEDED, task.error_message
                assert task.assigned_agent_id == "reviewer" and task.attempt == 1
                assert task.result  # the echo provider answered
                assert task.metrics.get("model")
                stored = hub.memory.snapshot("global")
                assert stored[f"review-{task_id}"] == {"len": len(task.result.decode())}
            sessions = hub.sessions.for_agent("reviewer")
            assert len(sessions) == 1 and sessions[0].trust_level == pb.TrustLevel.STANDARD
        finally:
            await agent.stop()
            ch.close()
        assert hub.sessions.for_agent("reviewer") == []  # stop() unregistered


async def test_agent_stop_hands_running_tasks_back() -> None:
    async with running_hub(HubConfig(port=0, dev=True)) as hub:
        agent = BlockingAgent(
            AgentConfig(
                agent_id="blocker",
                agent_name="Blocker",
                hub_url=hub.address,
                shutdown_grace_seconds=0.1,
            )
        )
        agent.started = asyncio.Event()
        ch = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            await agent.start()
            tasks = client.TaskServiceStub(ch)
            task_id = (await tasks.submit_task(pb.SubmitTaskRequest(description="long"))).task_id
            await asyncio.wait_for(agent.started.wait(), 30)
            await agent.stop()
            task = await tasks.get_task(pb.GetTaskRequest(task_id=task_id))
            # Handed back unfinished: pending again, the attempt not counted.
            assert task.state == S.PENDING and task.attempt == 0
        finally:
            ch.close()


class EchoAgent(AetherAgent):
    """Returns the task's payload."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        return TaskResult(task_id=task.task_id, success=True, result=task.payload)


async def test_agent_survives_a_hub_restart_with_db(tmp_path: Path) -> None:
    db = str(tmp_path / "hub.sqlite3")
    first = HubServer(HubConfig(port=0, dev=True, db_path=db))
    await first.start()
    port = first.port
    agent = EchoAgent(
        AgentConfig(
            agent_id="survivor",
            agent_name="Survivor",
            hub_url=f"127.0.0.1:{port}",
            reconnect_delay=0.05,
            max_reconnect_delay=0.2,
        )
    )
    second: HubServer | None = None
    try:
        await agent.start()
        before = first.queue.submit(TaskSubmission(payload=b"before"))
        assert (await asyncio.wait_for(first.queue.wait_finished(before.task_id), 30)).result == (
            b"before"
        )
        await first.stop()
        # While the Hub is down a task waits in the database; the new Hub (same port, same
        # file) has it pending, and the agent, reconnected, runs it.
        second = HubServer(HubConfig(port=port, dev=True, db_path=db))
        await second.start()
        after = second.queue.submit(TaskSubmission(payload=b"after"))
        done = await asyncio.wait_for(second.queue.wait_finished(after.task_id), 30)
        assert done.state == S.SUCCEEDED and done.result == b"after"
        assert done.assigned_agent_id == "survivor"
        old = second.queue.get(before.task_id)
        assert old is not None and old.state == S.SUCCEEDED  # history kept across restarts
    finally:
        await agent.stop()
        if second is not None:
            await second.stop()
        await first.stop()
