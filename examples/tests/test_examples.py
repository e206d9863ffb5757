"""Every example runs as its README says, against a real dev Hub, and gives its result.

Each example is started as its own process (`python examples/x.py`, or `aether run` for
the Quickstart, whose hub_url is fixed to localhost:50051) with HUB_URL pointing at the
test's Hub; the test waits for it to register, submits a task routed to it, checks the
result, then sends SIGTERM and checks that the process exits cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from aether import TaskState
from aether_hub.settings import HubConfig
from aether_hub.testing import TestHub

EXAMPLES = Path(__file__).resolve().parents[1]
ROOT = EXAMPLES.parent
PYTHON = sys.executable
AETHER = str(Path(sys.executable).with_name("aether"))
STARTUP_TIMEOUT = 30.0


class ExampleProcess:
    """A running example; its output is collected for failure messages."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.output = b""

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit code (the process must stop on its own)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(self.proc.communicate(), timeout)
        self.output += out
        return self.proc.returncode if self.proc.returncode is not None else -1

    def describe(self) -> str:
        return self.output.decode("utf-8", "replace")[-3000:]


@contextlib.asynccontextmanager
async def example(argv: Sequence[str], hub_url: str) -> AsyncIterator[ExampleProcess]:
    """Run an example process with HUB_URL set; kill it if the test leaves it running."""
    env = {
        **os.environ,
        "HUB_URL": hub_url,
        "AGENT_SECRET": "",
        "PYTHONUNBUFFERED": "1",
        "AETHER_HUB_URL": hub_url,
    }
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    running = ExampleProcess(proc)
    try:
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


async def _registered(hub: TestHub, running: ExampleProcess, *agent_ids: str) -> None:
    for agent_id in agent_ids:
        waiter = asyncio.ensure_future(hub.wait_for_agent(agent_id, timeout=STARTUP_TIMEOUT))
        exited = asyncio.ensure_future(running.proc.wait())
        done, _ = await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if waiter not in done:
            waiter.cancel()
            code = await running.terminate()
            pytest.fail(f"example exited ({code}) before registering:\n{running.describe()}")
        waiter.result()


async def _stop_cleanly(running: ExampleProcess) -> None:
    code = await running.terminate()
    assert code == 0, f"example exited with {code}:\n{running.describe()}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _http_get(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(status_line.split()[1])


async def test_quickstart_under_aether_run_with_health_endpoint(hub: TestHub) -> None:
    health_port = _free_port()
    argv = [
        AETHER,
        "run",
        "examples/quickstart.py:MyAgent",
        "--agent-id",
        "my-agent-001",
        "--task-types",
        "analysis,processing",
        "--health-port",
        str(health_port),
        "--health-host",
        "127.0.0.1",
    ]
    async with example(argv, hub.url) as running:
        await _registered(hub, running, "my-agent-001")
        task = await hub.run_task("Summarize the logs", task_type="analysis")
        assert task.state is TaskState.SUCCEEDED, task.error_message
        assert task.result == b"Processed: Summarize the logs"
        assert task.metrics == {"processing_time": "0.5s"}
        assert task.assigned_agent_id == "my-agent-001"
        # Registered and streaming: both probes pass (the agent registered before
        # the Hub could route it a task, so readiness holds by now).
        assert await _http_get(health_port, "/healthz") == 200
        assert await _http_get(health_port, "/readyz") == 200
        await _stop_cleanly(running)
    assert b"Processing task" in running.output


async def test_quickstart_verbatim_on_the_default_port() -> None:
    """`python examples/quickstart.py` itself, which only knows localhost:50051."""
    hub = TestHub(HubConfig(host="127.0.0.1", port=50051, dev=True))
    try:
        await hub.start()
    except OSError:
        pytest.skip("port 50051 is in use (a Hub is running?); covered by aether run above")
    try:
        async with example([PYTHON, "examples/quickstart.py"], hub.url) as running:
            await _registered(hub, running, "my-agent-001")
            task = await hub.run_task("hello", task_type="processing")
            assert task.state is TaskState.SUCCEEDED, task.error_message
            assert task.result == b"Processed: hello"
            await _stop_cleanly(running)
    finally:
        await hub.stop()


async def test_code_reviewer(hub: TestHub) -> None:
    diff = b"+def add(a, b):\n+    return a + b\n"
    async with example([PYTHON, "examples/code_reviewer.py"], hub.url) as running:
        await _registered(hub, running, "dev_py_reviewer")
        # Its capabilities list no task_types, so it is reached by target agent id.
        task = await hub.run_task("review", payload=diff, target_agent_id="dev_py_reviewer")
        assert task.state is TaskState.SUCCEEDED, task.error_message
        assert task.result.startswith(b"echo: Review this diff:")
        assert diff in task.result
        assert int(task.metrics["tokens"]) > 0
        assert task.metrics["model"]
        message = await hub.wait_for_message("review.completed")
        assert json.loads(message.payload) == {"task_id": task.task_id, "agent": "dev_py_reviewer"}
        assert [c.messages[-1][1] for c in hub.llm_calls] == [
            "Review this diff:\n\n" + diff.decode()
        ]
        await _stop_cleanly(running)


async def test_data_processor(hub: TestHub) -> None:
    data = {"order": 42, "status": "late"}
    async with example([PYTHON, "examples/data_processor.py"], hub.url) as running:
        await _registered(hub, running, "data_processor")
        task = await hub.run_task(
            "classify", payload=json.dumps(data).encode(), target_agent_id="data_processor"
        )
        assert task.state is TaskState.SUCCEEDED, task.error_message
        assert task.result == f"echo: {json.dumps(data)}".encode()
        # The analysis is persisted in task-scoped memory.
        stored = hub.memory("task", task.task_id)
        assert stored == {f"analysis-{task.task_id}": {"result": task.result.decode()}}
        await _stop_cleanly(running)


async def test_tools_and_memory(hub: TestHub) -> None:
    async with example([PYTHON, "examples/tools_and_memory.py"], hub.url) as running:
        await _registered(hub, running, "issue_triager")
        results = []
        for comment in ("Needs a test", "Looks good"):
            payload = json.dumps({"issue_id": "123", "comment": comment}).encode()
            task = await hub.run_task("triage", payload=payload, task_type="triage")
            assert task.state is TaskState.SUCCEEDED, task.error_message
            results.append(json.loads(task.result))
        assert results == [
            {"issue_id": "123", "comments_on_issue": 1, "triaged": 1},
            {"issue_id": "123", "comments_on_issue": 2, "triaged": 2},
        ]
        assert hub.memory("agent", "issue_triager") == {"triaged-count": 2}
        bad = await hub.run_task("triage", payload=b"not json", task_type="triage")
        assert bad.state is TaskState.FAILED
        assert "issue_id and comment" in bad.error_message
        await _stop_cleanly(running)


async def test_request_reply_pair(hub: TestHub) -> None:
    async with example([PYTHON, "examples/request_reply.py"], hub.url) as running:
        await _registered(hub, running, "quote_service", "order_agent")
        order = json.dumps({"item": "widget", "quantity": 3}).encode()
        task = await hub.run_task("price it", payload=order, task_type="order")
        assert task.state is TaskState.SUCCEEDED, task.error_message
        assert json.loads(task.result) == {"item": "widget", "quantity": 3, "total": 7.5}
        unknown = json.dumps({"item": "sprocket", "quantity": 1}).encode()
        task = await hub.run_task("price it", payload=unknown, task_type="order")
        assert task.state is TaskState.FAILED
        assert "unknown item 'sprocket'" in task.error_message
        await _stop_cleanly(running)


async def test_long_task_reports_progress(hub: TestHub) -> None:
    async with example([PYTHON, "examples/long_task.py"], hub.url) as running:
        await _registered(hub, running, "long_task_worker")
        payload = json.dumps({"steps": 4, "step_seconds": 0.05}).encode()
        task_id = await hub.submit("crunch", payload=payload, task_type="long_job")
        seen: list[tuple[float, str]] = []
        async for task in hub.watch(task_id):
            if task.status_message:
                seen.append((task.progress, task.status_message))
        final = await hub.get_task(task_id)
        assert final.state is TaskState.SUCCEEDED, final.error_message
        assert json.loads(final.result) == {"steps_done": 4}
        assert seen, "no progress report was observed"
        progress = [p for p, _ in seen]
        assert progress == sorted(progress)  # progress only moves forward
        assert seen[-1] == (1.0, "step 4/4")
        await _stop_cleanly(running)


async def test_long_task_cancellation_reaches_the_handler(hub: TestHub) -> None:
    async with example([PYTHON, "examples/long_task.py"], hub.url) as running:
        await _registered(hub, running, "long_task_worker")
        payload = json.dumps({"steps": 1000, "step_seconds": 0.05}).encode()
        task_id = await hub.submit("forever", payload=payload, task_type="long_job")
        async for task in hub.watch(task_id):
            if task.status_message.startswith("step"):
                break  # it is running
        await hub.cancel_task(task_id, reason="test")
        final = await hub.wait_for_task(task_id)
        assert final.state is TaskState.CANCELLED
        await _stop_cleanly(running)
    assert b"cancelled after" in running.output


async def test_demo_runs_to_completion() -> None:
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        str(EXAMPLES / "demo.py"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "4/4 ok" in text
    assert "SUCCEEDED" in text and "FAILED" not in text
    assert "Token usage (Hub LLM provider): 2 chat call(s)" in text
    assert "review.completed x2" in text
