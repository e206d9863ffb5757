"""`aether run`: loading the agent class, building its config, exit codes."""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
from pathlib import Path

import pytest

from aether import AgentConfig
from aether.errors import AetherConfigError
from aether.runner import AgentSpecError, build_config, configure_parser, load_agent_class, main
from aether_hub.testing import TestHub

ROOT = Path(__file__).resolve().parents[2]
AETHER = str(Path(sys.executable).with_name("aether"))

AGENT_SOURCE = textwrap.dedent(
    """
    from aether import AetherAgent, TaskAssignment, TaskResult

    NOT_AN_AGENT = 42

    class Echo(AetherAgent):
        async def handle_task(self, task: TaskAssignment) -> TaskResult:
            return TaskResult(task_id=task.task_id, success=True, result=task.payload)
    """
)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(["x:Y", *argv])


@pytest.fixture
def agent_file(tmp_path: Path) -> Path:
    path = tmp_path / "fc_runner_agent.py"
    path.write_text(AGENT_SOURCE)
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in AgentConfig.ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_loads_a_class_from_a_file_path(agent_file: Path) -> None:
    cls = load_agent_class(f"{agent_file}:Echo")
    assert cls.__name__ == "Echo"


def test_loads_a_class_from_a_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    cls = load_agent_class("examples.quickstart:MyAgent")
    assert cls.__name__ == "MyAgent"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "expected module:AgentClass"),
        ("missing_module_fc_xyz:Agent", "cannot import module 'missing_module_fc_xyz'"),
        ("/nonexistent/agent.py:Agent", "no such file"),
        ("{file}:Missing", "has no attribute 'Missing'"),
        ("{file}:NOT_AN_AGENT", "is not an AetherAgent subclass"),
        ("aether:AetherAgent", "AetherAgent itself"),
    ],
)
def test_bad_specs_name_what_is_wrong(agent_file: Path, spec: str, message: str) -> None:
    with pytest.raises(AgentSpecError, match=message):
        load_agent_class(spec.format(file=agent_file))


def test_flags_win_over_env_and_add_to_capabilities(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AETHER_AGENT_ID", "from-env")
    clean_env.setenv("AETHER_HUB_URL", "envhost:1234")
    clean_env.setenv("AETHER_CAPABILITIES", "python=true,task_types=a")
    clean_env.setenv("AETHER_AGENT_SECRET", "sk-from-env")
    config = build_config(
        _args("--agent-id", "from-flag", "--task-types", "b,c", "--capability", "gpu=yes")
    )
    assert config.agent_id == "from-flag"
    assert config.agent_name == "from-flag"  # defaults to the id
    assert config.hub_url == "envhost:1234"
    assert config.capabilities == {"python": "true", "task_types": "b,c", "gpu": "yes"}
    assert config.secret_value() == "sk-from-env"


def test_agent_name_from_env_is_kept(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AETHER_AGENT_ID", "a1")
    clean_env.setenv("AETHER_AGENT_NAME", "Agent One")
    assert build_config(_args()).agent_name == "Agent One"


def test_agent_id_from_the_env_file_names_the_agent_too(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `--agent-name` says "default: the id"; that holds when the id comes from --env-file.
    env_file = tmp_path / "agent.env"
    env_file.write_text("AETHER_AGENT_ID=from-file\nAETHER_HUB_URL=filehost:1\n")
    config = build_config(_args("--env-file", str(env_file), "--hub-url", "flaghost:2"))
    assert (config.agent_id, config.agent_name) == ("from-file", "from-file")
    assert config.hub_url == "flaghost:2"
    env_file.write_text("AETHER_AGENT_ID=from-file\nAETHER_AGENT_NAME=File Agent\n")
    assert build_config(_args("--env-file", str(env_file))).agent_name == "File Agent"
    clean_env.setenv("AETHER_AGENT_ID", "from-env")  # the environment wins over the file
    assert build_config(_args("--env-file", str(env_file))).agent_id == "from-env"


def test_a_missing_env_file_is_an_error(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("AETHER_AGENT_ID", "a1")
    with pytest.raises(AetherConfigError, match=r"--env-file .*missing\.env: no such file"):
        build_config(_args("--env-file", str(tmp_path / "missing.env")))


def test_config_errors_name_the_setting(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(AetherConfigError, match="AETHER_AGENT_ID"):
        build_config(_args())
    with pytest.raises(AetherConfigError, match="--capability expects KEY=VALUE"):
        build_config(_args("--agent-id", "a", "--capability", "novalue"))
    with pytest.raises(AetherConfigError, match="--hub-url: invalid Hub address 'h:no-port'"):
        build_config(_args("--agent-id", "a", "--hub-url", "h:no-port"))
    # The one address grammar: a host alone is fine (port 50051), and so is https://.
    assert build_config(_args("--agent-id", "a", "--hub-url", "no-port")).hub_url == "no-port"
    assert build_config(_args("--agent-id", "a", "--hub-url", "https://hub")).uses_tls


def test_usage_errors_exit_2_with_a_message(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["examples.quickstart:Nope", "--agent-id", "a"]) == 2
    assert "aether run:" in capsys.readouterr().err
    assert main(["examples/quickstart.py:MyAgent"]) == 2
    assert "AETHER_AGENT_ID" in capsys.readouterr().err


async def test_unreachable_hub_with_limited_retries_exits_1(agent_file: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        AETHER,
        "run",
        f"{agent_file}:Echo",
        "--agent-id",
        "lonely",
        "--hub-url",
        "127.0.0.1:1",
        env={"AETHER_MAX_RECONNECT_ATTEMPTS": "1", "AETHER_RECONNECT_DELAY": "0.01"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, out.decode()
    assert b"AetherConnectionError" in out


async def test_runs_an_agent_file_against_a_hub(hub: TestHub, agent_file: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        AETHER,
        "run",
        f"{agent_file}:Echo",
        "--agent-id",
        "echo-1",
        "--hub-url",
        hub.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await hub.wait_for_agent("echo-1")
        task = await hub.run_task("x", payload=b"ping", target_agent_id="echo-1")
        assert task.result == b"ping"
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out.decode()
        assert b"stopping: received SIGTERM" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
