"""How to test your own agents: copy these.

- `TaskHarness` runs your agent's `handle_task` against in-memory Hub services (no
  network, no port): fast unit tests.
- The `hub` fixture (from the `aether` pytest plugin, installed with the SDK) is a real
  dev Hub on a free local port: integration tests with the agent's real connection.
"""

from __future__ import annotations

import json

import pytest

from aether import AgentConfig, TaskState
from aether_hub.testing import TaskHarness, TestHub
from examples.code_reviewer import CodeReviewerAgent
from examples.data_processor import DataProcessorAgent
from examples.long_task import LongTaskAgent
from examples.quickstart import MyAgent


def config(agent_id: str) -> AgentConfig:
    # hub_url is not used by TaskHarness; agent_id and agent_name are required.
    return AgentConfig(agent_id=agent_id, agent_name=agent_id)


async def test_quickstart_agent_processes_the_description() -> None:
    async with TaskHarness(MyAgent(config("quick"))) as harness:
        run = await harness.run("Summarize the logs")
    assert run.success
    assert run.text == "Processed: Summarize the logs"
    assert run.metrics == {"processing_time": "0.5s"}


async def test_code_reviewer_asks_the_llm_and_announces_the_review() -> None:
    async with TaskHarness(CodeReviewerAgent(config("reviewer"))) as harness:
        run = await harness.run("review", payload=b"+x = 1\n")
    assert run.success, run.error_message
    # The prompt the agent sent, as the Hub's LLM saw it:
    (call,) = run.llm_calls
    assert call.messages[0][0] == "system"
    assert call.messages[1] == ("user", "Review this diff:\n\n+x = 1\n")
    assert run.metrics["tokens"] == str(call.total_tokens)
    # ...and the message it published for other agents:
    (message,) = run.messages
    assert message.subject == "review.completed"
    assert json.loads(message.payload)["task_id"] == run.task.task_id


async def test_data_processor_stores_its_analysis_in_task_memory() -> None:
    async with TaskHarness(DataProcessorAgent(config("processor"))) as harness:
        run = await harness.run("classify", payload=b'{"a": 1}')
        stored = harness.hub.memory("task", run.task.task_id)
    assert run.success
    assert stored == {f"analysis-{run.task.task_id}": {"result": run.text}}


async def test_long_task_reports_progress_and_rejects_bad_input() -> None:
    async with TaskHarness(LongTaskAgent(config("long"))) as harness:
        run = await harness.run("crunch", payload=b'{"steps": 3, "step_seconds": 0.01}')
        bad = await harness.run("crunch", payload=b'{"steps": 0}')
    assert run.success and json.loads(run.result) == {"steps_done": 3}
    # Every report the agent made, in order (progress travels as a 32-bit float).
    assert [p.message for p in run.progress] == [
        "starting 3 steps",
        "step 1/3",
        "step 2/3",
        "step 3/3",
    ]
    assert [p.progress for p in run.progress] == pytest.approx([0, 1 / 3, 2 / 3, 1], abs=1e-6)
    assert not bad.success and bad.error_message == "steps must be 1..1000"


async def test_with_the_hub_fixture(hub: TestHub) -> None:
    agent = MyAgent(AgentConfig(agent_id="a1", agent_name="A", hub_url=hub.url))
    async with hub.running(agent):
        task = await hub.run_task("hello", target_agent_id="a1")
    assert task.state is TaskState.SUCCEEDED
    assert task.result == b"Processed: hello"
