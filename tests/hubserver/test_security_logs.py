"""No secret or token in any log, at any level, from any logger (issue 11, finding 1).

At DEBUG the `hpack` logger prints every decoded header, `authorization` included; the
Hub's and the SDK's logging setup install `aether.install_log_redaction`, which masks
bearer tokens, named secrets and known secret values in every record.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from aether import AetherAgent, AgentConfig, TaskAssignment, TaskClient, TaskResult, TaskState
from aether.logredact import redact
from aether_hub.settings import AgentSpec, HubConfig
from tests.hubserver.hubkit import running_hub
from tests.hubserver.test_hub_process import hub_process

AGENT_SECRET = "agent-secret-Xq7vLm2Pz9"
CLIENT_TOKEN = "client-token-Hk4bNw8Rt3"
# secrets.token_urlsafe(32): the shape of a session token.
SESSION_TOKEN_SHAPE = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


class Echo(AetherAgent):
    """Answers every task with its description."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        return TaskResult(task_id=task.task_id, success=True, result=task.description.encode())


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def debug_logs() -> Iterator[_Collect]:
    """Every record of every logger at DEBUG, formatted, for the duration of the test."""
    root = logging.getLogger()
    handler = _Collect()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_redact_masks_header_forms() -> None:
    for text in (
        "Adding b'authorization'=b'Bearer tok-123456789' to the header table",
        "Decoded (b'authorization', b'Bearer tok-123456789'), consumed 5",
        "NeverIndexedHeaderTuple(b'authorization', b'Basic tok-123456789')",
        "metadata {'authorization': 'Bearer tok-123456789'}",
        "config secret='tok-123456789' session_token=tok-123456789",
    ):
        assert "tok-123456789" not in redact(text), text
    assert redact("secret: must not be empty") == "secret: must not be empty"


async def test_a_whole_task_cycle_at_debug_logs_no_secret_or_token(
    monkeypatch: pytest.MonkeyPatch, debug_logs: _Collect
) -> None:
    monkeypatch.setenv("LOGS_AGENT_SECRET", AGENT_SECRET)
    monkeypatch.setenv("LOGS_CLIENT_TOKEN", CLIENT_TOKEN)
    config = HubConfig(
        port=0,
        client_token_env="LOGS_CLIENT_TOKEN",
        agents=(AgentSpec("echoer", secret_env="LOGS_AGENT_SECRET"),),
        log_level="DEBUG",
    )
    async with running_hub(config) as hub:
        agent = Echo(
            AgentConfig(
                agent_id="echoer",
                agent_name="Echo",
                hub_url=hub.address,
                secret=SecretStr(AGENT_SECRET),
                capabilities={"task_types": "echo"},
            )
        )
        await agent.start()
        try:
            async with TaskClient(hub.address, token=CLIENT_TOKEN) as tasks:
                submitted = await tasks.submit("hello", task_type="echo")
                task = await submitted.wait(timeout=30)
                assert task.state == TaskState.SUCCEEDED
                assert [t async for t in tasks.list()]
            tokens = list(hub.sessions._by_token)  # every live session token
            assert tokens
        finally:
            await agent.stop()
    text = "\n".join(debug_logs.lines)
    # The test exercised the leaking path: hpack printed the authorization header.
    assert "authorization" in text
    for value in (AGENT_SECRET, CLIENT_TOKEN, *tokens):
        assert value not in text
    assert not SESSION_TOKEN_SHAPE.search(text)


async def test_hub_and_agent_processes_at_debug_print_no_secret_or_token(
    tmp_path: Path,
) -> None:
    agent_file = tmp_path / "echo_agent.py"
    agent_file.write_text(
        "from aether import AetherAgent, TaskAssignment, TaskResult\n\n\n"
        "class Echo(AetherAgent):\n"
        "    async def handle_task(self, task: TaskAssignment) -> TaskResult:\n"
        "        return TaskResult(task_id=task.task_id, success=True,"
        " result=task.description.encode())\n"
    )
    hub_config = tmp_path / "hub.json"
    hub_config.write_text(
        '{"agents": [{"id": "echoer", "secret_env": "LOGS_AGENT_SECRET"}]}', encoding="utf-8"
    )
    env = {"LOGS_AGENT_SECRET": AGENT_SECRET, "LOGS_CLIENT_TOKEN": CLIENT_TOKEN}
    async with hub_process(
        "--log-level",
        "DEBUG",
        "--client-token-env",
        "LOGS_CLIENT_TOKEN",
        "--config",
        str(hub_config),
        env=env,
    ) as hub:
        agent_env = dict(os.environ)
        agent_env.update(
            AETHER_AGENT_SECRET=AGENT_SECRET,
            AETHER_CAPABILITIES="task_types=echo",
        )
        agent = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aether.cli",
            "run",
            f"{agent_file}:Echo",
            "--hub-url",
            f"127.0.0.1:{hub.port}",
            "--agent-id",
            "echoer",
            "--log-level",
            "DEBUG",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=agent_env,
        )
        try:
            async with TaskClient(f"127.0.0.1:{hub.port}", token=CLIENT_TOKEN) as tasks:
                submitted = await tasks.submit("hello", task_type="echo")
                task = await submitted.wait(timeout=60)
                assert task.state == TaskState.SUCCEEDED
        finally:
            agent.terminate()
            agent_out, _ = await asyncio.wait_for(agent.communicate(), 30)
        await hub.stop()
    hub_text = "".join(hub.lines)
    agent_text = agent_out.decode()
    assert "authorization" in hub_text and "authorization" in agent_text
    for text in (hub_text, agent_text):
        assert AGENT_SECRET not in text
        assert CLIENT_TOKEN not in text
        assert not SESSION_TOKEN_SHAPE.search(text)
