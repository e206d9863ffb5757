"""Hub settings: command line, TOML/JSON config files, validation; the `aether` CLI wiring."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from aether.cli import build_parser
from aether_hub.commands import configure_hub_parser, hub_config_from_args
from aether_hub.reflection import file_dependencies
from aether_hub.server import HubServer
from aether_hub.settings import AgentSpec, ConfigError, HubConfig, is_loopback_host
from tests.hubserver.hubkit import running_hub


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_hub_parser(parser)
    return parser.parse_args(list(argv))


def test_defaults_are_a_loopback_dev_hub() -> None:
    config = hub_config_from_args(_parse())
    assert config == HubConfig()
    assert (config.host, config.port, config.db_path, config.dev) == (
        "127.0.0.1",
        50051,
        None,
        False,
    )
    config.validate()


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    path.write_text(
        json.dumps(
            {
                "hub": {"port": 6000, "dev": True, "tools": ["a.b"], "max-message-bytes": 9999},
                "agents": [{"id": "x", "secret_env": "X_SECRET", "trust_level": "high"}],
            }
        )
    )
    config = hub_config_from_args(
        _parse("--config", str(path), "--port", "7000", "--tools", "c.d,e.f", "g.h")
    )
    assert config.port == 7000  # the flag wins
    assert config.dev is True and config.max_message_bytes == 9999  # from the file
    assert config.tools == ("c.d", "e.f", "g.h")
    assert config.agents == (AgentSpec("x", secret_env="X_SECRET", trust_level="high"),)


@pytest.mark.parametrize(
    ("content", "suffix", "problem"),
    [
        ('{"hub": {"prot": 1}}', ".json", "unknown hub option 'prot'"),
        ('{"agents": [{"id": "a", "secret": "plain"}]}', ".json", "literal 'secret'"),
        ('{"agents": [{"secret_env": "A"}]}', ".json", "agents[0].id is required"),
        ('{"port": "many"}', ".json", "port has the wrong type"),
        ("port = [", ".toml", "not valid TOML"),
        ("[1, 2]", ".json", "top level must be"),
    ],
)
def test_bad_config_files_are_clear_errors(
    tmp_path: Path, content: str, suffix: str, problem: str
) -> None:
    path = tmp_path / f"hub{suffix}"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        hub_config_from_args(_parse("--config", str(path)))
    assert problem in str(info.value)
    assert "plain" not in str(info.value)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        hub_config_from_args(_parse("--config", "/no/such/file.toml"))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_validate_rejects_non_loopback_without_client_token() -> None:
    with pytest.raises(ConfigError, match="--client-token-env"):
        HubConfig(host="0.0.0.0").validate()
    HubConfig(host="0.0.0.0", client_token_env="TOKEN_VAR", insecure=True).validate()
    with pytest.raises(ConfigError, match="max_message_bytes"):
        HubConfig(max_message_bytes=10).validate()


def test_aether_cli_has_the_subcommands() -> None:
    parser = build_parser()
    args = parser.parse_args(["hub", "--port", "0", "--dev"])
    assert args.command == "hub" and args.port == 0 and args.dev is True
    args = parser.parse_args(["agents", "list", "--hub-url", "h:1", "--json"])
    assert args.command == "agents" and args.hub_url == "h:1" and args.json
    args = parser.parse_args(["hub", "agents", "add", "a1", "--secret-env", "S"])
    assert args.hub_command == "agents" and args.agent_id == "a1"
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"hub", "agents", "task", "run"} <= set(choices)


def test_file_dependencies_of_a_descriptor() -> None:
    from aether_hub._wire import descriptors

    deps = file_dependencies(descriptors.FILE_DESCRIPTORS["aether/v1/tasks.proto"])
    assert deps == ["aether/v1/common.proto", "google/protobuf/timestamp.proto"]
    assert file_dependencies(descriptors.FILE_DESCRIPTORS["aether/v1/common.proto"]) == []


async def test_no_task_table_without_db() -> None:
    # Without --db the queue lives in memory only: no task is ever written to SQLite.
    async with running_hub(HubConfig(port=0, dev=True)) as hub:
        assert hub.queue.store is None
        assert not hub.db.is_persistent
        tables = {
            row[0] for row in hub.db.conn.execute("SELECT name FROM sqlite_master").fetchall()
        }
        assert "tasks" not in tables


async def test_hub_server_lifecycle_guards() -> None:
    hub = HubServer(HubConfig(port=0, dev=True))
    await hub.stop()  # safe before start
    with pytest.raises(RuntimeError, match="not started"):
        _ = hub.port
    hub2 = HubServer(HubConfig(port=0, dev=True))
    await hub2.start()
    try:
        assert hub2.is_running
        with pytest.raises(RuntimeError, match="already started"):
            await hub2.start()
    finally:
        await hub2.stop()
        await hub2.stop()  # idempotent
    assert not hub2.is_running


def test_db_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AETHER_HUB_DB", str(tmp_path / "env.sqlite3"))
    assert hub_config_from_args(_parse()).db_path == str(tmp_path / "env.sqlite3")
    assert hub_config_from_args(_parse("--db", "flag.db")).db_path == "flag.db"
    # The agents commands use it too.
    monkeypatch.setenv("SOME_SECRET", "value-1")
    args = build_parser().parse_args(["hub", "agents", "add", "a1", "--secret-env", "SOME_SECRET"])
    assert args.handler(args) == 0
    args = build_parser().parse_args(["hub", "agents", "list", "--json"])
    assert args.handler(args) == 0
    from aether_hub.auth import AgentRegistry
    from aether_hub.db import Database

    db = Database(tmp_path / "env.sqlite3")
    try:
        assert [r.agent_id for r in AgentRegistry(db).list_agents()] == ["a1"]
    finally:
        db.close()


async def test_failed_start_releases_everything(tmp_path: Path) -> None:
    # A bad tool plugin: the Hub refuses to start with a clear error and leaves nothing open.
    hub = HubServer(
        HubConfig(port=0, dev=True, db_path=str(tmp_path / "h.db"), tools=("no_such_mod",))
    )
    with pytest.raises(ConfigError, match="no_such_mod"):
        await hub.start()
    assert not hub.is_running
    assert hub.db.closed
    await hub.stop()  # still safe


async def test_bad_trust_level_in_config_is_a_config_error() -> None:
    hub = HubServer(
        HubConfig(port=0, agents=(AgentSpec("ops", secret_env="", trust_level="supreme"),))
    )
    with pytest.raises(ConfigError, match="trust level"):
        await hub.start()
