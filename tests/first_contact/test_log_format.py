"""Log formats: plain text (the default) and `--log-format json` / `AETHER_LOG_FORMAT=json`
for `aether run` and `aether hub`, one JSON object per line with the agent and task a record
is about (from context variables, aether/_logging.py and aether_hub/logcontext.py)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from aether import AetherAgent, AgentConfig, TaskAssignment, TaskResult, configure_logging
from aether._logging import JsonFormatter, log_context
from aether_hub.logcontext import HubLogContext, bind_task
from aether_hub.testing import TestHub

AETHER = str(Path(sys.executable).with_name("aether"))
PLAIN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")

AGENT_SOURCE = textwrap.dedent(
    """
    import logging

    from aether import AetherAgent, TaskAssignment, TaskResult

    class Worker(AetherAgent):
        async def handle_task(self, task: TaskAssignment) -> TaskResult:
            logging.getLogger("worker").info("handling %s", task.description)
            return TaskResult(task_id=task.task_id, success=True)
    """
)


@pytest.fixture
def agent_file(tmp_path: Path) -> Path:
    path = tmp_path / "fc_log_agent.py"
    path.write_text(AGENT_SOURCE)
    return path


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """configure_logging(json) into a buffer, beside pytest's own handlers; removed after."""
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("INFO", fmt="json", stream=buffer, force=True)
    assert handler is not None
    handler.addFilter(HubLogContext())
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _records(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AETHER_")}
    env.update(extra)
    return env


# -- the formatter and the context ----------------------------------------------------------


def test_json_lines_carry_context_fields_only_when_bound(json_lines: io.StringIO) -> None:
    log = logging.getLogger("fc.logs")
    log.info("outside")
    with log_context(agent_id="a1"):
        log.warning("in the agent %s", "a1")
        with log_context(task_id="t9"):
            log.info("in a task")
        log.info("after the task")
    log.info("explicit", extra={"task_id": "t1"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("it failed")
    records = _records(json_lines.getvalue())
    assert [r["message"] for r in records] == [
        "outside",
        "in the agent a1",
        "in a task",
        "after the task",
        "explicit",
        "it failed",
    ]
    outside, agent, task, after, explicit, failed = records
    assert set(outside) == {"time", "level", "logger", "message"}
    assert outside["logger"] == "fc.logs" and outside["level"] == "INFO"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", outside["time"])
    assert (agent["agent_id"], agent["level"]) == ("a1", "WARNING")
    assert "task_id" not in agent
    assert (task["agent_id"], task["task_id"]) == ("a1", "t9")
    assert "task_id" not in after
    assert explicit["task_id"] == "t1"
    assert failed["level"] == "ERROR" and "RuntimeError: boom" in failed["exception"]


def test_the_format_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    level = root.level
    buffer = io.StringIO()
    monkeypatch.setenv("AETHER_LOG_FORMAT", "json")
    handler = configure_logging("INFO", stream=buffer, force=True)
    assert handler is not None
    try:
        assert isinstance(handler.formatter, JsonFormatter)
        monkeypatch.setenv("AETHER_LOG_FORMAT", "plain")
        # Calling again replaces the handler it installed (not one more beside it).
        again = configure_logging("INFO", stream=buffer, force=True)
        assert again is not None
        assert [h for h in root.handlers if type(h) is type(again)] == [again]
        handler = again
        logging.getLogger("fc.logs").info("plain again")
        assert PLAIN_LINE.match(buffer.getvalue().splitlines()[-1])
        monkeypatch.setenv("AETHER_LOG_FORMAT", "xml")
        with pytest.raises(ValueError, match="AETHER_LOG_FORMAT"):
            configure_logging("INFO", stream=buffer, force=True)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_a_configured_root_logger_is_left_alone() -> None:
    # pytest's handlers are on the root logger, as an application's own would be.
    assert logging.getLogger().handlers
    assert configure_logging("INFO", fmt="json") is None


async def test_hub_call_context_names_the_task(json_lines: io.StringIO) -> None:
    async def a_call() -> None:
        bind_task("t-hub")
        logging.getLogger("aether_hub.fc").info("about a task")

    await asyncio.create_task(a_call())  # each gRPC call runs in its own task
    logging.getLogger("aether_hub.fc").info("another call")
    first, second = _records(json_lines.getvalue())
    assert first["task_id"] == "t-hub"
    assert "task_id" not in second  # a binding never outlives its call


class _Worker(AetherAgent):
    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        logging.getLogger("worker").info("handling %s", task.description)
        return TaskResult(task_id=task.task_id, success=True)


async def test_in_process_agent_and_hub_records_name_agent_and_task(
    json_lines: io.StringIO,
) -> None:
    async with TestHub() as hub:
        agents = [
            _Worker(AgentConfig(agent_id=agent_id, agent_name=agent_id, hub_url=hub.url))
            for agent_id in ("w1", "w2")
        ]
        async with hub.running(agents[0]), hub.running(agents[1]):
            one = await hub.run_task("first", target_agent_id="w1")
            two = await hub.run_task("second", target_agent_id="w2")
    records = _records(json_lines.getvalue())
    handled = {r["message"]: r for r in records if r["logger"] == "worker"}
    assert (handled["handling first"]["agent_id"], handled["handling first"]["task_id"]) == (
        "w1",
        one.task_id,
    )
    assert (handled["handling second"]["agent_id"], handled["handling second"]["task_id"]) == (
        "w2",
        two.task_id,
    )
    # The SDK's own records of each agent name it, without a task.
    connected = [r for r in records if r["message"].startswith("connection connecting ->")]
    assert sorted(r["agent_id"] for r in connected) == ["w1", "w2"]
    assert all("task_id" not in r for r in connected)
    # The Hub's records of a Register name the registering agent.
    registered = [r for r in records if r["logger"] == "aether_hub.agent_service"]
    registered = [r for r in registered if " registered (session " in r["message"]]
    assert sorted(r["agent_id"] for r in registered) == ["w1", "w2"]


# -- the commands ---------------------------------------------------------------------------


async def _run_unreachable(agent_file: Path, *args: str, **env: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        AETHER,
        "run",
        f"{agent_file}:Worker",
        "--agent-id",
        "lonely",
        "--hub-url",
        f"127.0.0.1:{_closed_port()}",
        *args,
        env=_env(AETHER_MAX_RECONNECT_ATTEMPTS="2", AETHER_RECONNECT_DELAY="0.01", **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_aether_run_plain_by_default(agent_file: Path) -> None:
    code, err = await _run_unreachable(agent_file)
    assert code == 1, err
    log_lines = [line for line in err.splitlines() if not line.startswith("aether run:")]
    assert log_lines and all(PLAIN_LINE.match(line) for line in log_lines), err
    warnings = [line for line in log_lines if " WARNING aether.connection: " in line]
    assert len(warnings) == 1 and "connection refused" in warnings[0]


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_aether_run_json(agent_file: Path, how: str) -> None:
    if how == "flag":
        code, err = await _run_unreachable(agent_file, "--log-format", "json")
    else:
        code, err = await _run_unreachable(agent_file, AETHER_LOG_FORMAT="json")
    assert code == 1, err
    log_lines = [line for line in err.splitlines() if not line.startswith("aether run:")]
    records = _records("\n".join(log_lines))
    warnings = [r for r in records if r["level"] == "WARNING"]
    assert len(warnings) == 1
    assert warnings[0]["logger"] == "aether.connection"
    assert warnings[0]["agent_id"] == "lonely"
    assert "connection refused" in warnings[0]["message"]


async def test_aether_run_json_names_the_task_of_a_handler_record(agent_file: Path) -> None:
    async with TestHub() as hub:
        proc = await asyncio.create_subprocess_exec(
            AETHER,
            "run",
            f"{agent_file}:Worker",
            "--agent-id",
            "w-json",
            "--hub-url",
            hub.url,
            "--log-format",
            "json",
            env=_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await hub.wait_for_agent("w-json")
            task = await hub.run_task("the job", target_agent_id="w-json")
            proc.terminate()
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
    assert proc.returncode == 0, err.decode()
    records = _records(err.decode())
    (handled,) = [r for r in records if r["message"] == "handling the job"]
    assert handled["agent_id"] == "w-json" and handled["task_id"] == task.task_id
    assert all(r.get("agent_id") == "w-json" for r in records if r["logger"] == "aether.agent")


async def test_aether_hub_json_names_the_agent_of_a_call() -> None:
    proc = await asyncio.create_subprocess_exec(
        AETHER,
        "hub",
        "--port",
        "0",
        "--dev",
        "--log-format",
        "json",
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        first = json.loads(await asyncio.wait_for(proc.stderr.readline(), 30))
        assert first["logger"] == "aether_hub" and first["level"] == "INFO"
        listening = re.match(r"Aether Hub listening on (\S+)", first["message"])
        assert listening is not None, first
        address = listening.group(1)
        agent = _Worker(AgentConfig(agent_id="remote", agent_name="remote", hub_url=address))
        async with agent:
            pass
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    records = _records(rest.decode())
    service = [r for r in records if r["logger"] == "aether_hub.agent_service"]
    assert service and all(r["agent_id"] == "remote" for r in service)
    assert any("registered" in r["message"] for r in service)


async def test_aether_hub_rejects_an_unknown_log_format() -> None:
    proc = await asyncio.create_subprocess_exec(
        AETHER,
        "hub",
        "--port",
        "0",
        env=_env(AETHER_LOG_FORMAT="yaml"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"AETHER_LOG_FORMAT" in err
