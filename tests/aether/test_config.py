"""AgentConfig: the guide's defaults, from_env, and secret handling."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from aether.config import AgentConfig, parse_hub_url
from aether.errors import AetherConfigError

SECRET = "sk-very-secret-value"


def test_guide_defaults() -> None:
    config = AgentConfig(agent_id="a", agent_name="A")
    assert config.version == "0.1.0"
    assert config.hub_url == "localhost:50051"
    assert config.capabilities == {}
    assert config.metadata == {}
    assert config.heartbeat_interval == 30
    assert config.reconnect_delay == 5
    assert config.max_reconnect_attempts == -1
    assert config.max_concurrent_tasks == 10
    assert config.shutdown_grace_seconds == 30
    assert config.task_timeout_seconds is None
    assert config.max_message_bytes == 4 * 1024 * 1024
    assert config.secret is None


def test_agent_id_required_and_non_empty() -> None:
    with pytest.raises(ValidationError, match="agent_id"):
        AgentConfig(agent_id="", agent_name="A")


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [
        ("localhost:50051", "localhost", 50051, False),
        ("grpc://hub:9090", "hub", 9090, False),
        ("grpcs://hub.example.com:443", "hub.example.com", 443, True),
        ("[::1]:7000", "::1", 7000, False),
        # The one grammar of aether.address: a bare host, http:// and https:// too.
        ("localhost", "localhost", 50051, False),
        ("http://x:1", "x", 1, False),
        ("https://hub.example.com", "hub.example.com", 50051, True),
    ],
)
def test_hub_url_forms(url: str, host: str, port: int, tls: bool) -> None:
    address = parse_hub_url(url)
    assert (address.host, address.port, address.tls) == (host, port, tls)
    config = AgentConfig(agent_id="a", agent_name="A", hub_url=url)
    assert config.hub_url == url  # kept as given; parsed on use
    assert config.hub_address == address


@pytest.mark.parametrize("url", ["ftp://x:1", ":1", "x:notaport", "x:70000", "x:0", "::1:1"])
def test_bad_hub_url_rejected(url: str) -> None:
    with pytest.raises(ValidationError, match="hub_url"):
        AgentConfig(agent_id="a", agent_name="A", hub_url=url)


def test_tls_settings_make_the_address_tls() -> None:
    config = AgentConfig(agent_id="a", agent_name="A", hub_url="hub:1", tls_ca_file="/ca.pem")
    assert config.uses_tls
    assert str(config.hub_address) == "grpcs://hub:1"


def test_metadata_secret_moves_out_of_metadata() -> None:
    config = AgentConfig(agent_id="a", agent_name="A", metadata={"secret": SECRET, "team": "x"})
    assert config.metadata == {"team": "x"}
    assert config.secret_value() == SECRET
    for text in (repr(config), str(config), config.model_dump_json()):
        assert SECRET not in text


def test_explicit_secret_wins_and_is_hidden() -> None:
    config = AgentConfig(
        agent_id="a", agent_name="A", secret=SecretStr(SECRET), metadata={"secret": "other"}
    )
    assert config.secret_value() == SECRET
    assert "secret" not in config.metadata
    assert SECRET not in repr(config)


def test_from_env_reads_guide_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "AETHER_HUB_URL": "hub:9090",
        "AETHER_AGENT_ID": "my-agent-001",
        "AETHER_AGENT_NAME": "My Agent",
        "AETHER_AGENT_SECRET": SECRET,
        "AETHER_VERSION": "1.0.0",
        "AETHER_HEARTBEAT_INTERVAL": "30",
        "AETHER_RECONNECT_DELAY": "5",
        "AETHER_MAX_RECONNECT_ATTEMPTS": "-1",
        "AETHER_CAPABILITIES": "task_types=analysis,processing,python=true",
        "AETHER_METADATA": '{"team": "core", "tier": 2}',
        "AETHER_TASK_TIMEOUT_SECONDS": "12.5",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = AgentConfig.from_env()
    assert config.hub_url == "hub:9090"
    assert config.agent_id == "my-agent-001"
    assert config.agent_name == "My Agent"
    assert config.secret_value() == SECRET
    assert config.version == "1.0.0"
    assert config.capabilities == {"task_types": "analysis,processing", "python": "true"}
    assert config.metadata == {"team": "core", "tier": "2"}
    assert config.task_timeout_seconds == 12.5
    assert SECRET not in repr(config)


def test_from_env_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_AGENT_ID", "from-env")
    config = AgentConfig.from_env(agent_id="override", agent_name="N")
    assert config.agent_id == "override"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("AETHER_HEARTBEAT_INTERVAL", "often"),
        ("AETHER_HEARTBEAT_INTERVAL", "0"),
        ("AETHER_MAX_RECONNECT_ATTEMPTS", "-5"),
        ("AETHER_CAPABILITIES", "=x"),
        ("AETHER_METADATA", "{not json"),
        ("AETHER_HUB_URL", "host:notaport"),
    ],
)
def test_from_env_invalid_value_names_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv("AETHER_AGENT_ID", "a")
    monkeypatch.setenv("AETHER_AGENT_NAME", "A")
    monkeypatch.setenv(var, value)
    with pytest.raises(AetherConfigError) as info:
        AgentConfig.from_env()
    assert info.value.variable == var
    assert var in str(info.value)


def test_from_env_missing_required_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AETHER_AGENT_ID", raising=False)
    monkeypatch.setenv("AETHER_AGENT_NAME", "A")
    with pytest.raises(AetherConfigError, match="AETHER_AGENT_ID"):
        AgentConfig.from_env()


def test_from_env_error_never_contains_secret(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AETHER_AGENT_ID", "a")
    monkeypatch.setenv("AETHER_AGENT_NAME", "A")
    monkeypatch.setenv("AETHER_AGENT_SECRET", SECRET)
    monkeypatch.setenv("AETHER_MAX_CONCURRENT_TASKS", SECRET)  # invalid, and secret-looking
    with pytest.raises(AetherConfigError) as info:
        AgentConfig.from_env()
    assert info.value.variable == "AETHER_MAX_CONCURRENT_TASKS"
    assert SECRET not in str(info.value)
    assert SECRET not in caplog.text


def test_from_env_reads_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in AgentConfig.ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("AETHER_AGENT_ID=file-agent\nAETHER_AGENT_NAME=File Agent\n")
    config = AgentConfig.from_env(env_file=env_file)
    assert (config.agent_id, config.agent_name) == ("file-agent", "File Agent")


def test_config_is_immutable() -> None:
    config = AgentConfig(agent_id="a", agent_name="A")
    with pytest.raises(ValidationError):
        config.agent_id = "b"
