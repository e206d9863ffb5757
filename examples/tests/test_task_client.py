"""examples/task_client.py runs as its README says: as its own process, against a real dev
Hub, submitting 100 tasks, following them to the end and listing them."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from aether import AetherAgent, AgentConfig, TaskAssignment, TaskResult, TaskState
from aether_hub.testing import TestHub

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120.0


async def run_example(*argv: str) -> tuple[int, str]:
    """`python examples/task_client.py ARGV...`: its exit code and output."""
    env = {k: v for k, v in os.environ.items() if k != "AETHER_CLIENT_TOKEN"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "examples/task_client.py",
        *argv,
        cwd=ROOT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace")


def workflow_of(output: str) -> str:
    found = re.search(r"\(workflow (task-client-demo-[0-9a-f]+)\)", output)
    assert found, output
    return found.group(1)


async def test_100_tasks_with_its_own_echo_agent(hub: TestHub) -> None:
    code, output = await run_example("--hub-url", hub.url)
    assert code == 0, output
    assert "100/100 succeeded" in output
    assert "finished 100/100" in output
    workflow = workflow_of(output)
    assert f"listed 100 tasks of workflow {workflow}" in output

    tasks = [t async for t in hub.client.list(workflow_id=workflow, include_payloads=True)]
    assert len(tasks) == 100
    assert {t.state for t in tasks} == {TaskState.SUCCEEDED}
    assert {t.result for t in tasks} == {f"echo: item {i}".encode() for i in range(100)}
    (agent,) = {t.assigned_agent_id for t in tasks}
    assert agent.startswith("task-client-echo-")
    assert not hub.server.sessions.for_agent(agent)  # it stopped its agent on the way out


class AnalysisAgent(AetherAgent):
    """Stands in for the user's own agents."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        return TaskResult(task_id=task.task_id, success=True, result=task.payload.upper())


async def test_tasks_go_to_your_agents_with_task_type(hub: TestHub) -> None:
    config = AgentConfig(
        agent_id="your-analyst",
        agent_name="Analyst",
        hub_url=hub.url,
        capabilities={"task_types": "analysis"},
    )
    async with hub.running(AnalysisAgent(config)):
        code, output = await run_example(
            "--hub-url", f"grpc://{hub.url}", "--task-type", "analysis", "--count", "20"
        )
    assert code == 0, output
    assert "20/20 succeeded" in output and "started echo agent" not in output
    tasks = [
        t async for t in hub.client.list(workflow_id=workflow_of(output), include_payloads=True)
    ]
    assert {t.assigned_agent_id for t in tasks} == {"your-analyst"}
    assert sorted(t.result for t in tasks) == sorted(f"ITEM {i}".encode() for i in range(20))


async def test_an_unreachable_hub_is_one_clear_line() -> None:
    code, output = await run_example("--hub-url", "127.0.0.1:1", "--task-type", "x")
    assert code == 1
    *_, last = output.strip().splitlines()
    assert last.startswith("task_client: AetherConnectionError: SubmitTask failed: ")
    assert "127.0.0.1:1" in last and "Traceback" not in output
