"""aether_hub.testing: the TestHub handles, the in-memory mode and the pytest plugin."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest

from aether import AetherAgent, AgentConfig, TaskAssignment, TaskResult, TaskState
from aether_hub.testing import TaskHarness, TestHub, TestHubError


class Recorder(AetherAgent):
    """Stores, publishes and chats, so every handle has something to show."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        await self.hub.memory.store(key="last", value={"id": task.task_id}, scope="global")
        await self.hub.messaging.publish("events.recorder.done", {"id": task.task_id})
        reply = await self.hub.llm.chat(messages=[{"role": "user", "content": task.description}])
        return TaskResult(task_id=task.task_id, success=True, result=reply.content.encode())


async def test_handles_show_memory_messages_and_llm_calls(hub: TestHub) -> None:
    agent = Recorder(AgentConfig(agent_id="rec", agent_name="Rec", hub_url=hub.url))
    async with hub.running(agent):
        task = await hub.run_task("two words", target_agent_id="rec")
    assert task.state is TaskState.SUCCEEDED
    assert task.result == b"echo: two words"
    assert hub.memory("global") == {"last": {"id": task.task_id}}
    assert [m.subject for m in hub.messages] == ["events.recorder.done"]
    (call,) = hub.llm_calls
    assert call.messages == (("user", "two words"),)
    assert call.prompt_tokens > 0 and call.completion_tokens > 0
    assert call.total_tokens == call.prompt_tokens + call.completion_tokens


async def test_waits_fail_with_a_message_saying_what_did_not_happen(hub: TestHub) -> None:
    task_id = await hub.submit("for nobody", target_agent_id="absent")
    with pytest.raises(TestHubError, match=r"still PENDING after 0.2 s \(assigned to no agent\)"):
        await hub.wait_for_task(task_id, timeout=0.2)
    await hub.publish("seen.subject", b"x")
    assert (await hub.wait_for_message("seen.subject")).payload == b"x"
    with pytest.raises(TestHubError, match=r"no message on 'other' within 0.2 s.*seen.subject"):
        await hub.wait_for_message("other", timeout=0.2)
    with pytest.raises(TestHubError, match="did not register"):
        await hub.wait_for_agent("absent", timeout=0.2)


async def test_cancel_task(hub: TestHub) -> None:
    task_id = await hub.submit("for nobody", target_agent_id="absent")
    reply = await hub.cancel_task(task_id, reason="not needed")
    assert reply.success
    assert (await hub.wait_for_task(task_id)).state is TaskState.CANCELLED


async def test_in_memory_hub_has_no_url_and_harness_needs_its_context() -> None:
    async with TestHub(in_memory=True) as hub:
        with pytest.raises(RuntimeError, match="no URL"):
            _ = hub.url
    harness = TaskHarness(Recorder(AgentConfig(agent_id="r", agent_name="R")))
    with pytest.raises(RuntimeError, match="async with TaskHarness"):
        await harness.run("x")


async def test_harness_scopes_runs_and_memory() -> None:
    async with TaskHarness(Recorder(AgentConfig(agent_id="r", agent_name="R"))) as harness:
        first = await harness.run("one")
        second = await harness.run("two")
        assert harness.memory("global") == {"last": {"id": second.task.task_id}}
        assert harness.memory() == {}  # nothing in the agent's own scope
    # Each run sees only its own messages and LLM calls.
    assert [m.payload for m in first.messages] == [f'{{"id":"{first.task.task_id}"}}'.encode()]
    assert [c.messages for c in second.llm_calls] == [(("user", "two"),)]
    assert first.text == "echo: one" and second.success


def test_plugin_entry_point_gives_other_projects_the_hub_fixture(tmp_path: Path) -> None:
    # A project with no conftest and pytest-asyncio in strict mode: the fixture comes
    # from the installed `aether` entry point alone.
    (tmp_path / "test_uses_hub.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from aether_hub.testing import TestHub

            @pytest.mark.asyncio
            async def test_hub(hub: TestHub) -> None:
                task_id = await hub.submit("x", target_agent_id="nobody")
                assert (await hub.get_task(task_id)).task_id == task_id
            """
        )
    )
    # ...and a conftest can reconfigure the Hub behind it.
    (tmp_path / "test_configured.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from aether_hub.settings import HubConfig
            from aether_hub.testing import TestHub

            @pytest.fixture
            def aether_hub_config() -> HubConfig:
                return HubConfig(host="127.0.0.1", port=0, dev=True, default_max_attempts=7)

            @pytest.mark.asyncio
            async def test_configured(hub: TestHub) -> None:
                task_id = await hub.submit("x", target_agent_id="nobody")
                assert (await hub.get_task(task_id)).max_attempts == 7
            """
        )
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = strict\n")

    async def _run() -> tuple[int, bytes]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
        return proc.returncode or 0, out

    code, out = asyncio.run(_run())
    assert code == 0, out.decode()
    assert b"2 passed" in out


class Sleeper(AetherAgent):
    """Never finishes on its own."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        await asyncio.sleep(3600)
        return TaskResult(task_id=task.task_id, success=True)


async def test_harness_hub_times_out_tasks_past_their_deadline() -> None:
    async with TaskHarness(Sleeper(AgentConfig(agent_id="s", agent_name="S"))) as harness:
        run = await harness.run("forever", deadline_seconds=1)
    assert run.task.state is TaskState.TIMED_OUT
    assert not run.success


def test_public_names_resolve_lazily() -> None:
    import aether_hub.testing as testing

    assert sorted(testing.__all__) == [
        "HarnessRun",
        "LLMCall",
        "ProgressReport",
        "RecordedMessage",
        "TaskHarness",
        "TestHub",
        "TestHubError",
        "open_in_memory_channel",
    ]
    for name in testing.__all__:
        assert getattr(testing, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = testing.Nope
