"""`ListAgents` and `GetQueueStats` (aether_hub/inspection.py) through the public `TaskClient`,
against a real Hub with real SDK agents; and the `aether task submit --wait` warning built on
them."""

from __future__ import annotations

import asyncio
import datetime
import sys
from collections.abc import AsyncIterator
from io import StringIO

import pytest

from aether import (
    AetherAgent,
    AgentConfig,
    AgentState,
    AuthenticationError,
    TaskAssignment,
    TaskClient,
    TaskResult,
    TrustLevel,
)
from aether_cli.tasks import amain
from aether_hub.settings import HubConfig
from aether_hub.testing import TestHub

WAIT = 30.0


class Parked(AetherAgent):
    """Holds every task until `release` is set."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__(config)
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        self.started.set()
        await self.release.wait()
        return TaskResult(task_id=task.task_id, success=True)


def parked(hub: TestHub, agent_id: str, task_types: str, slots: int = 2) -> Parked:
    return Parked(
        AgentConfig(
            agent_id=agent_id,
            agent_name=f"{agent_id} name",
            version="1.2.3",
            hub_url=hub.url,
            capabilities={"task_types": task_types},
            max_concurrent_tasks=slots,
            shutdown_grace_seconds=0.5,
        )
    )


@pytest.fixture
async def hub() -> AsyncIterator[TestHub]:
    async with TestHub() as made:
        yield made


async def test_list_agents_describes_each_connected_agent(hub: TestHub) -> None:
    before = datetime.datetime.now(datetime.timezone.utc)
    reviewer = parked(hub, "reviewer", "code_review,lint", slots=3)
    analyst = parked(hub, "analyst", "analysis")
    async with hub.running(reviewer, analyst), TaskClient(hub.url) as client:
        await client.submit("review", task_type="lint")
        await asyncio.wait_for(reviewer.started.wait(), WAIT)
        agents = await client.list_agents()
        assert [a.agent_id for a in agents] == ["analyst", "reviewer"]
        info = agents[1]
        assert info.agent_name == "reviewer name" and info.version == "1.2.3"
        assert list(info.task_types) == ["code_review", "lint"]
        assert info.state is AgentState.STREAMING
        assert info.running_tasks == 1 and info.max_concurrent_tasks == 3
        assert info.capabilities["task_types"] == "code_review,lint"
        assert info.trust_level is TrustLevel.LOW  # what a --dev Hub gives an unknown agent
        assert info.connected_at is not None and info.connected_at >= before
        assert info.last_heartbeat is not None and info.last_heartbeat >= info.connected_at
        assert agents[0].running_tasks == 0

        only_lint = await client.list_agents(task_type="lint")
        assert [a.agent_id for a in only_lint] == ["reviewer"]
        assert await client.list_agents(task_type="translation") == []
        assert [a.agent_id for a in await client.list_agents(agent_id="analyst")] == ["analyst"]
        reviewer.release.set()
    async with TaskClient(hub.url) as client:
        assert await client.list_agents() == []  # both stopped: their sessions ended


async def test_queue_stats_count_pending_and_running_per_type(hub: TestHub) -> None:
    reviewer = parked(hub, "reviewer", "lint", slots=1)
    async with hub.running(reviewer), TaskClient(hub.url) as client:
        await client.submit("first", task_type="lint")
        await asyncio.wait_for(reviewer.started.wait(), WAIT)
        await client.submit("second", task_type="lint")  # waits: the only slot is taken
        await client.submit("nobody serves this", task_type="translation")
        await client.submit("untyped")  # every agent takes untyped tasks, but none has room
        await client.submit("for a stranger", target_agent_id="stranger")
        stats = await client.queue_stats()
        by_type = {row.task_type: row for row in stats.task_types}
        assert list(by_type) == ["", "lint", "translation"]  # ordered by type
        lint = by_type["lint"]
        assert (lint.pending, lint.running, lint.agents, lint.free_slots) == (1, 1, 1, 0)
        translation = by_type["translation"]
        assert (translation.pending, translation.agents) == (1, 0)
        untyped = by_type[""]
        assert (untyped.pending, untyped.agents, untyped.waiting_for_target) == (2, 1, 1)
        assert (stats.connected_agents, stats.pending, stats.running) == (1, 4, 1)
        reviewer.release.set()


async def test_inspection_needs_the_client_token(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "inspection-token-5d1"
    monkeypatch.setenv("INSPECTION_TOKEN", token)
    config = HubConfig(host="127.0.0.1", port=0, dev=True, client_token_env="INSPECTION_TOKEN")
    async with TestHub(config) as hub:
        async with TaskClient(hub.url) as client:
            with pytest.raises(AuthenticationError) as caught:
                await client.list_agents()
            with pytest.raises(AuthenticationError):
                await client.queue_stats()
        assert token not in str(caught.value)
        async with TaskClient(hub.url, token=token) as client:
            assert await client.list_agents() == []
            assert (await client.queue_stats()).connected_agents == 0


async def _submit_wait(
    hub: TestHub, monkeypatch: pytest.MonkeyPatch, *argv: str
) -> tuple[int, str]:
    err = StringIO()
    monkeypatch.setattr(sys, "stdout", StringIO())
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.delenv("AETHER_CLIENT_TOKEN", raising=False)
    # --deadline 1: the task times out, so the command ends without an agent.
    code = await amain(["submit", "x", *argv, "--wait", "--deadline", "1", "--hub-url", hub.url])
    return code, err.getvalue()


async def test_submit_wait_warns_when_no_connected_agent_serves_the_type(
    hub: TestHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    analyst = parked(hub, "analyst", "analysis")
    async with hub.running(analyst):
        code, err = await _submit_wait(hub, monkeypatch, "--type", "translation")
    assert code == 1  # timed out
    assert "warning: no connected agent serves task type 'translation'" in err
    assert "the task waits until one is" in err


async def test_submit_wait_warns_when_the_target_agent_is_not_connected(
    hub: TestHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, err = await _submit_wait(hub, monkeypatch, "--agent", "ghost")
    assert code == 1
    assert "warning: agent 'ghost' is not connected" in err


async def test_submit_wait_does_not_warn_when_an_agent_serves_the_type(
    hub: TestHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    analyst = parked(hub, "analyst", "analysis")
    analyst.release.set()
    async with hub.running(analyst):
        code, err = await _submit_wait(hub, monkeypatch, "--type", "analysis")
    assert code == 0, err
    assert "warning" not in err


async def test_aether_agents_list_shows_the_agents_of_an_in_memory_hub(hub: TestHub) -> None:
    """The console command against a Hub without --db: what it knows comes over the wire."""
    analyst = parked(hub, "analyst", "analysis,report")
    async with hub.running(analyst):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aether.cli", "agents", "list", "--hub-url", hub.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode == 0, err.decode()
    header, row = out.decode().splitlines()
    assert header.split() == [
        "AGENT",
        "ID",
        "NAME",
        "STATE",
        "TASK",
        "TYPES",
        "RUNNING",
        "LAST",
        "HEARTBEAT",
    ]
    assert row.split()[:5] == ["analyst", "analyst", "name", "streaming", "analysis,report"]
    assert "0/2" in row
