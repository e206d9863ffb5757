"""Settings of the dev Hub, from the command line and an optional TOML/JSON config file.

A config file may hold Hub options (top level or under a `[hub]` table, named like the
command-line flags with underscores) and the fixed agents:

```toml
[hub]
port = 50051
dev = false

[[agents]]
id = "pm_sarah"
secret_env = "PM_SARAH_SECRET"   # the secret itself never goes in the file
trust_level = "standard"         # low | standard | high
```

Flags given on the command line win over the file.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from aether_hub.permissions import DEFAULT_SHARED_SUBJECTS, SubjectPolicy

__all__ = (
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "AgentSpec",
    "ConfigError",
    "HubConfig",
    "is_loopback_host",
    "load_config_file",
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051


class ConfigError(ValueError):
    """The Hub's settings are unusable; the message says which one and why."""


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """A fixed agent from a config file: its secret is read from `secret_env`."""

    agent_id: str
    secret_env: str = ""
    trust_level: str = "standard"


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Everything `aether hub` can be told. Defaults make a loopback dev Hub."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    db_path: str | None = None
    dev: bool = False
    nats_url: str | None = None
    # Where tasks live: "sqlite" (memory, or the --db file) or "jetstream" (shared by
    # every Hub replica on the --nats-url cluster, aether_hub/taskreplica.py).
    store: str = "sqlite"
    # Copies JetStream keeps of the task buckets (1 for one NATS node, 3 for a cluster).
    store_replicas: int = 1
    # A Hub replica not heard from this long is dead: its leases go back to the queue.
    replica_timeout_seconds: float = 10.0
    llm_provider: str = "echo"
    llm_base_url: str | None = None
    llm_api_key_env: str | None = None
    tools: tuple[str, ...] = ()
    client_token_env: str | None = None
    max_message_bytes: int = 4 * 1024 * 1024
    log_level: str = "INFO"
    # "plain" or "json" (one object per line); "" = $AETHER_LOG_FORMAT, else plain.
    log_format: str = ""
    heartbeat_interval_seconds: int = 30
    # A session silent for 2 heartbeat intervals plus this long expires (its leases requeue).
    session_grace_seconds: float = 5.0
    default_max_attempts: int = 3
    default_max_concurrent_tasks: int = 1
    # Finished tasks kept in memory for GetTask/ListTasks/duplicate detection.
    terminal_task_retention: int = 100_000
    # ... while their payloads and results take at most this many bytes, and for at most
    # this long after they finished (0 = no age bound). With --db older ones stay readable.
    terminal_task_retention_bytes: int = 256 * 1024 * 1024
    terminal_task_retention_seconds: float = 86_400.0
    # Seconds between flushes of the task changes nobody waits for (leases, progress; --db).
    flush_interval_seconds: float = 0.05
    # Serve Prometheus metrics at http://<host>:<metrics_port>/metrics; 0 = off.
    metrics_port: int = 0
    # Subject patterns every agent may use besides its own `agents.<id>.>` namespace.
    shared_subjects: tuple[str, ...] = DEFAULT_SHARED_SUBJECTS
    # Failed registrations per agent id / peer address before each further one locks the
    # key for a doubling delay (1 s, 2 s, ...) of at most register_max_lockout_seconds.
    register_free_failures: int = 5
    register_max_lockout_seconds: float = 300.0
    # TLS: the Hub's certificate chain and key (PEM); with tls_client_ca_file, clients
    # must present a certificate signed by that CA (mTLS).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    # Serve plaintext on a non-loopback address (only behind a TLS-terminating proxy).
    insecure: bool = False
    # Open client connections at once; more are closed at once.
    max_connections: int = 1000
    # A connection with no call in progress for this long is closed (0 = never).
    idle_timeout_seconds: float = 300.0
    # Memory each agent may hold in its own (agent) scope.
    memory_quota_bytes: int = 64 * 1024 * 1024
    memory_quota_keys: int = 10_000
    # Bytes of messages a subscriber may have waiting before it is cut off.
    subscriber_max_pending_bytes: int = 16 * 1024 * 1024
    agents: tuple[AgentSpec, ...] = field(default=())

    def validate(self) -> None:
        """Raise ConfigError naming the first unusable setting."""
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, not {self.port}")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(
                f"metrics_port must be between 1 and 65535 (0 = off), not {self.metrics_port}"
            )
        if self.max_message_bytes < 1024:
            raise ConfigError(
                f"max_message_bytes must be at least 1024, not {self.max_message_bytes}"
            )
        if self.heartbeat_interval_seconds < 1:
            raise ConfigError("heartbeat_interval_seconds must be at least 1")
        if self.session_grace_seconds < 0:
            raise ConfigError("session_grace_seconds must not be negative")
        if self.default_max_attempts < 1:
            raise ConfigError("default_max_attempts must be at least 1")
        if self.default_max_concurrent_tasks < 1:
            raise ConfigError("default_max_concurrent_tasks must be at least 1")
        if self.terminal_task_retention < 0:
            raise ConfigError("terminal_task_retention must not be negative")
        if self.terminal_task_retention_bytes < 0:
            raise ConfigError("terminal_task_retention_bytes must not be negative")
        if self.terminal_task_retention_seconds < 0:
            raise ConfigError("terminal_task_retention_seconds must not be negative (0 = no limit)")
        try:
            SubjectPolicy(self.shared_subjects)
        except ValueError as exc:
            raise ConfigError(f"shared_subjects: {exc}") from None
        if self.log_format not in ("", "plain", "json"):
            raise ConfigError(f"log_format must be 'plain' or 'json', not {self.log_format!r}")
        if self.nats_url:  # "" means no NATS, as create_bus() reads it
            self._validate_nats_url(self.nats_url)
        if self.store not in ("sqlite", "jetstream"):
            raise ConfigError(f"store must be 'sqlite' or 'jetstream', not {self.store!r}")
        if self.store == "jetstream" and not self.nats_url:
            raise ConfigError("--store jetstream needs --nats-url (the JetStream servers)")
        if not 1 <= self.store_replicas <= 5:
            raise ConfigError(f"store_replicas must be 1 to 5, not {self.store_replicas}")
        if self.replica_timeout_seconds <= 0:
            raise ConfigError("replica_timeout_seconds must be positive")
        if self.llm_provider not in ("echo", "openai"):
            raise ConfigError(f"llm_provider must be 'echo' or 'openai', not {self.llm_provider!r}")
        if self.client_token_env is None and not is_loopback_host(self.host):
            raise ConfigError(
                f"refusing to serve TaskService on non-loopback host {self.host!r} without a"
                " client token: pass --client-token-env VAR (the variable holds the token)"
                " or bind 127.0.0.1"
            )
        self._validate_security()

    @staticmethod
    def _validate_nats_url(value: str) -> None:
        # nats_bus imports nats-py lazily, so this needs no [hub] extra.
        from aether_hub.nats_bus import NatsUrlError, parse_nats_urls

        try:
            parse_nats_urls(value)
        except NatsUrlError as exc:
            raise ConfigError(str(exc)) from None

    def _validate_security(self) -> None:
        for name in (
            "register_free_failures",
            "max_connections",
            "memory_quota_bytes",
            "memory_quota_keys",
            "subscriber_max_pending_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.register_max_lockout_seconds < 1:
            raise ConfigError("register_max_lockout_seconds must be at least 1")
        if self.idle_timeout_seconds < 0:
            raise ConfigError("idle_timeout_seconds must not be negative (0 = never)")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("TLS needs both --tls-cert and --tls-key (PEM files)")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise ConfigError(f"{name} {path}: no such file")
        loopback = is_loopback_host(self.host)
        if self.dev and not loopback:
            raise ConfigError(
                f"refusing --dev on non-loopback host {self.host!r}: --dev enrols any agent"
                " that registers; enrol agents (`aether hub agents add`, --config) instead"
            )
        if not loopback and not self.tls_cert_file and not self.insecure:
            raise ConfigError(
                f"refusing to serve plaintext on non-loopback host {self.host!r}: pass"
                " --tls-cert FILE --tls-key FILE (and --tls-client-ca FILE for mTLS), or"
                " --insecure when a TLS-terminating proxy sits in front of the Hub"
            )

    @property
    def tls(self) -> bool:
        """Whether the Hub serves TLS."""
        return bool(self.tls_cert_file)

    def client_token(self) -> str | None:
        """The client token from `client_token_env`, or None when none is configured."""
        if self.client_token_env is None:
            return None
        token = os.environ.get(self.client_token_env, "")
        if not token:
            raise ConfigError(
                f"--client-token-env {self.client_token_env}: the variable is unset or empty"
            )
        return token

    def merged_with_file(self, path: str | os.PathLike[str], explicit: set[str]) -> HubConfig:
        """This config with the file's values for every setting not in `explicit`."""
        options, agents = load_config_file(path)
        known = {f.name for f in fields(HubConfig)}
        updates: dict[str, object] = {}
        for key, value in options.items():
            name = key.replace("-", "_")
            if name == "db":
                name = "db_path"
            if name not in known or name == "agents":
                raise ConfigError(f"{path}: unknown hub option {key!r}")
            if name in explicit:
                continue
            if name == "nats_url" and isinstance(value, list):
                # Several servers as a list of URLs: the same as comma-separated.
                if not value or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{path}: 'nats_url' must be a string or a list of strings")
                value = ",".join(value)
            if name in ("tools", "shared_subjects"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{path}: {name!r} must be a list of strings")
                value = tuple(value)
            updates[name] = value
        merged = replace(self, **updates, agents=self.agents + agents)  # type: ignore[arg-type]  # values are checked by validate() and the consumers
        _check_types(merged, path)
        return merged


def _check_types(config: HubConfig, path: str | os.PathLike[str]) -> None:
    expectations: dict[str, tuple[type, ...]] = {
        "host": (str,),
        "port": (int,),
        "metrics_port": (int,),
        "register_free_failures": (int,),
        "register_max_lockout_seconds": (int, float),
        "insecure": (bool,),
        "max_connections": (int,),
        "idle_timeout_seconds": (int, float),
        "memory_quota_bytes": (int,),
        "memory_quota_keys": (int,),
        "subscriber_max_pending_bytes": (int,),
        "dev": (bool,),
        "max_message_bytes": (int,),
        "heartbeat_interval_seconds": (int,),
        "default_max_attempts": (int,),
        "default_max_concurrent_tasks": (int,),
        "terminal_task_retention": (int,),
        "terminal_task_retention_bytes": (int,),
        "terminal_task_retention_seconds": (int, float),
        "flush_interval_seconds": (int, float),
        "session_grace_seconds": (int, float),
        "llm_provider": (str,),
        "store": (str,),
        "store_replicas": (int,),
        "replica_timeout_seconds": (int, float),
        "log_level": (str,),
        "log_format": (str,),
    }
    for name, types in expectations.items():
        value = getattr(config, name)
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise ConfigError(f"{path}: {name} has the wrong type ({type(value).__name__})")
    for name in (
        "db_path",
        "nats_url",
        "llm_base_url",
        "llm_api_key_env",
        "client_token_env",
        "tls_cert_file",
        "tls_key_file",
        "tls_client_ca_file",
    ):
        value = getattr(config, name)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{path}: {name} must be a string")


def load_config_file(
    path: str | os.PathLike[str],
) -> tuple[dict[str, object], tuple[AgentSpec, ...]]:
    """The Hub options and the agents of a TOML (`.toml`) or JSON file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    try:
        data = json.loads(text) if file.suffix.lower() == ".json" else _parse_toml(text)
    except ValueError as exc:
        raise ConfigError(f"{file}: not valid {_kind(file)}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a table/object")
    options: dict[str, object] = {}
    hub = data.get("hub", {})
    if not isinstance(hub, dict):
        raise ConfigError(f"{file}: 'hub' must be a table/object")
    options.update({k: v for k, v in data.items() if k not in ("hub", "agents")})
    options.update(hub)
    raw_agents = data.get("agents", [])
    if not isinstance(raw_agents, list):
        raise ConfigError(f"{file}: 'agents' must be a list of tables/objects")
    agents = tuple(_agent_spec(file, i, entry) for i, entry in enumerate(raw_agents))
    return options, agents


def _kind(file: Path) -> str:
    return "JSON" if file.suffix.lower() == ".json" else "TOML"


def _parse_toml(text: str) -> object:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(text)
    raise ConfigError("TOML config files need Python 3.11+; use a .json file")  # pragma: no cover


def _agent_spec(file: Path, index: int, entry: object) -> AgentSpec:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{file}: agents[{index}] must be a table/object")
    agent_id = entry.get("id", entry.get("agent_id"))
    if not isinstance(agent_id, str) or not agent_id.strip():
        raise ConfigError(f"{file}: agents[{index}].id is required")
    secret_env = entry.get("secret_env", "")
    if not isinstance(secret_env, str):
        raise ConfigError(f"{file}: agents[{index}].secret_env must be a string")
    if "secret" in entry:
        raise ConfigError(
            f"{file}: agents[{index}] has a literal 'secret'; put it in an environment"
            " variable and name that variable in 'secret_env'"
        )
    trust = entry.get("trust_level", "standard")
    if not isinstance(trust, (str, int)) or isinstance(trust, bool):
        raise ConfigError(f"{file}: agents[{index}].trust_level must be low|standard|high")
    return AgentSpec(agent_id=agent_id, secret_env=secret_env, trust_level=str(trust))


def is_loopback_host(host: str) -> bool:
    """Whether `host` only reaches this machine (127.0.0.0/8, ::1, localhost)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )
