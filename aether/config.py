"""AgentConfig: everything an agent needs to reach and talk to its Hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from aether.address import DEFAULT_HUB_URL, HubAddress, parse_hub_url, parse_hub_urls
from aether.errors import AetherConfigError

# HubAddress and parse_hub_url live in aether.address; they stay importable from here.
__all__ = (
    "DEFAULT_HUB_URL",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "AgentConfig",
    "HubAddress",
    "parse_hub_url",
)

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def _parse_mapping(raw: str) -> dict[str, str]:
    """Read a JSON object or `k=v,k=v` into a str→str dict."""
    text = raw.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON object: {exc.msg}") from None
        if not isinstance(loaded, dict):
            raise ValueError("expected a JSON object")
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in loaded.items()}
    result: dict[str, str] = {}
    last_key: str | None = None
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            # A piece without "=" continues the previous value: the guide's
            # task_types=analysis,processing lists its types with commas.
            if last_key is None:
                raise ValueError(f"expected k=v pairs separated by commas, got {item.strip()!r}")
            result[last_key] = f"{result[last_key]},{item.strip()}"
            continue
        if not key.strip():
            raise ValueError(f"empty key in {item.strip()!r}")
        last_key = key.strip()
        result[last_key] = value.strip()
    return result


class AgentConfig(BaseModel):
    """Configuration of one agent: identity, Hub address, timings, limits and TLS.

    The secret is taken from `secret` or, as in the SDK guide, from `metadata["secret"]`
    (which is then moved out of `metadata`, so it is never sent as metadata nor shown).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: str = Field(min_length=1, description="Unique identifier (e.g. pm_sarah).")
    agent_name: str = Field(description="Human-readable name.")
    version: str = Field(default="0.1.0", description="Agent version.")
    hub_url: str = Field(
        default=DEFAULT_HUB_URL,
        description=(
            "Hub address: host:port or host (port 50051); grpcs:// or https:// for TLS."
            " Several, comma-separated (h1:50051,h2:50051), to fail over between them."
        ),
    )
    capabilities: dict[str, str] = Field(
        default_factory=dict, description="Key-value capability flags."
    )
    metadata: dict[str, str] = Field(default_factory=dict, description="Arbitrary metadata.")
    heartbeat_interval: float = Field(
        default=30, gt=0, description="Seconds between heartbeats (the Hub may override it)."
    )
    reconnect_delay: float = Field(
        default=5, ge=0, description="Seconds before the first reconnect attempt."
    )
    max_reconnect_attempts: int = Field(
        default=-1, ge=-1, description="Reconnect attempts before giving up (-1 = infinite)."
    )
    max_reconnect_delay: float = Field(
        default=120, gt=0, description="Upper bound of the reconnect backoff, in seconds."
    )
    connect_timeout: float = Field(
        default=10, gt=0, description="Seconds a connection attempt may take (TCP and TLS)."
    )
    secret: SecretStr | None = Field(default=None, description="The agent's shared secret.")
    max_concurrent_tasks: int = Field(default=10, ge=1, description="Tasks run at once.")
    shutdown_grace_seconds: float = Field(
        default=30, ge=0, description="How long running tasks may finish on shutdown."
    )
    task_timeout_seconds: float | None = Field(
        default=None, gt=0, description="Per-task handler timeout; None = no timeout."
    )
    tls_ca_file: str | None = Field(default=None, description="CA bundle to verify the Hub.")
    tls_cert_file: str | None = Field(default=None, description="Client certificate (mTLS).")
    tls_key_file: str | None = Field(default=None, description="Client private key (mTLS).")
    tls_server_name: str | None = Field(
        default=None, description="Override of the server name checked in the certificate."
    )
    max_message_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_BYTES, ge=1024, description="Largest message sent/accepted."
    )
    keepalive_interval: float = Field(
        default=20, gt=0, description="Seconds between HTTP/2 keepalive pings."
    )
    keepalive_timeout: float = Field(
        default=10, gt=0, description="Seconds to wait for a ping ack before dropping the link."
    )
    call_reconnect_wait: float = Field(
        default=30,
        ge=0,
        description=(
            "Seconds a Hub call (llm, tools, memory, messaging) made while reconnecting waits"
            " for the connection before raising AetherConnectionError (capped by the call's"
            " timeout; 0 = fail at once)."
        ),
    )

    if TYPE_CHECKING:
        # For type checkers only: like pydantic's own signature, but `secret` also takes a
        # plain str (validated into a SecretStr). Generated from the fields above; a test
        # checks it is in sync.
        # BEGIN generated __init__ (config_reference --write-init)
        def __init__(
            self,
            *,
            agent_id: str,
            agent_name: str,
            version: str = "0.1.0",
            hub_url: str = "localhost:50051",
            capabilities: dict[str, str] = ...,
            metadata: dict[str, str] = ...,
            heartbeat_interval: float = 30,
            reconnect_delay: float = 5,
            max_reconnect_attempts: int = -1,
            max_reconnect_delay: float = 120,
            connect_timeout: float = 10,
            secret: SecretStr | str | None = None,
            max_concurrent_tasks: int = 10,
            shutdown_grace_seconds: float = 30,
            task_timeout_seconds: float | None = None,
            tls_ca_file: str | None = None,
            tls_cert_file: str | None = None,
            tls_key_file: str | None = None,
            tls_server_name: str | None = None,
            max_message_bytes: int = 4194304,
            keepalive_interval: float = 20,
            keepalive_timeout: float = 10,
            call_reconnect_wait: float = 30,
        ) -> None: ...

        # END generated __init__

    #: Environment variable of each field read by `from_env()`.
    ENV_VARS: ClassVar[dict[str, str]] = {
        "agent_id": "AETHER_AGENT_ID",
        "agent_name": "AETHER_AGENT_NAME",
        "version": "AETHER_VERSION",
        "hub_url": "AETHER_HUB_URL",
        "capabilities": "AETHER_CAPABILITIES",
        "metadata": "AETHER_METADATA",
        "heartbeat_interval": "AETHER_HEARTBEAT_INTERVAL",
        "reconnect_delay": "AETHER_RECONNECT_DELAY",
        "max_reconnect_attempts": "AETHER_MAX_RECONNECT_ATTEMPTS",
        "max_reconnect_delay": "AETHER_MAX_RECONNECT_DELAY",
        "connect_timeout": "AETHER_CONNECT_TIMEOUT",
        "secret": "AETHER_AGENT_SECRET",
        "max_concurrent_tasks": "AETHER_MAX_CONCURRENT_TASKS",
        "shutdown_grace_seconds": "AETHER_SHUTDOWN_GRACE_SECONDS",
        "task_timeout_seconds": "AETHER_TASK_TIMEOUT_SECONDS",
        "tls_ca_file": "AETHER_TLS_CA_FILE",
        "tls_cert_file": "AETHER_TLS_CERT_FILE",
        "tls_key_file": "AETHER_TLS_KEY_FILE",
        "tls_server_name": "AETHER_TLS_SERVER_NAME",
        "max_message_bytes": "AETHER_MAX_MESSAGE_BYTES",
        "keepalive_interval": "AETHER_KEEPALIVE_INTERVAL",
        "keepalive_timeout": "AETHER_KEEPALIVE_TIMEOUT",
        "call_reconnect_wait": "AETHER_CALL_RECONNECT_WAIT",
    }

    @model_validator(mode="before")
    @classmethod
    def _move_metadata_secret(cls, data: object) -> object:
        # The guide passes the secret as metadata["secret"]; keep it out of the metadata map.
        if isinstance(data, dict):
            metadata = data.get("metadata")
            if isinstance(metadata, dict) and "secret" in metadata:
                metadata = dict(metadata)
                legacy = metadata.pop("secret")
                data = {**data, "metadata": metadata}
                if data.get("secret") is None and isinstance(legacy, str) and legacy:
                    data["secret"] = legacy
        return data

    @field_validator("hub_url")
    @classmethod
    def _check_hub_url(cls, value: str) -> str:
        parse_hub_urls(value)
        return value

    @property
    def hub_address(self) -> HubAddress:
        """The (first) address of `hub_url`; its `tls` is `uses_tls` (a tls_* setting also
        means TLS). See `hub_addresses` for all of them."""
        return self.hub_addresses[0]

    @property
    def hub_addresses(self) -> tuple[HubAddress, ...]:
        """Every address of `hub_url` (one, or the comma-separated list), in order, each
        with `tls` set as in `hub_address`. The agent fails over from one to the next."""
        addresses = parse_hub_urls(self.hub_url)
        if addresses[0].tls or not self._tls_settings_given():
            return addresses
        return tuple(HubAddress(host=a.host, port=a.port, tls=True) for a in addresses)

    @property
    def uses_tls(self) -> bool:
        """Whether the connection uses TLS (grpcs:// or https://, or any tls_* setting)."""
        return parse_hub_urls(self.hub_url)[0].tls or self._tls_settings_given()

    def _tls_settings_given(self) -> bool:
        return any((self.tls_ca_file, self.tls_cert_file, self.tls_key_file, self.tls_server_name))

    def secret_value(self) -> str:
        """The secret to send in RegisterRequest ("" when none is set)."""
        return self.secret.get_secret_value() if self.secret is not None else ""

    @classmethod
    def from_env(cls, *, env_file: str | Path | None = None, **overrides: object) -> AgentConfig:
        """Build a config from the `AETHER_*` environment variables (see `ENV_VARS`).

        `AETHER_CAPABILITIES` / `AETHER_METADATA` are a JSON object or `k=v,k=v`. Keyword
        `overrides` win over the environment. An invalid value raises `AetherConfigError`
        naming the variable.
        """
        raw = _EnvValues(_env_file=env_file)  # type: ignore[call-arg]  # pydantic-settings init kw
        data: dict[str, object] = {}
        for name, var in cls.ENV_VARS.items():
            value = getattr(raw, name)
            if value is None:
                continue
            if name in ("capabilities", "metadata"):
                try:
                    data[name] = _parse_mapping(value)
                except ValueError as exc:
                    raise AetherConfigError(f"{var}: {exc}", variable=var) from None
            elif name.startswith("task_timeout") and value.strip() in ("", "0", "none"):
                data[name] = None
            else:
                data[name] = value
        data.update(overrides)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _config_error(exc, from_env=set(data) - set(overrides)) from None


def _config_error(exc: ValidationError, *, from_env: set[str]) -> AetherConfigError:
    # Built from locations and messages only: pydantic's own text repeats the input value,
    # which could be the secret.
    first = exc.errors(include_input=False, include_url=False)[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    where = AgentConfig.ENV_VARS.get(field, field) if field in from_env else field
    if not where:
        where = "AgentConfig"
    if first["type"] == "missing" and field in AgentConfig.ENV_VARS:
        var = AgentConfig.ENV_VARS[field]
        return AetherConfigError(f"{var}: required ({field}) but not set", variable=var)
    return AetherConfigError(f"{where}: {first['msg']}", variable=where)


def _env_field(name: str) -> str | None:
    return Field(default=None, validation_alias=AliasChoices(AgentConfig.ENV_VARS[name]))


class _EnvValues(BaseSettings):
    """The raw strings of the AETHER_* variables; AgentConfig validates them."""

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=False)

    agent_id: str | None = _env_field("agent_id")
    agent_name: str | None = _env_field("agent_name")
    version: str | None = _env_field("version")
    hub_url: str | None = _env_field("hub_url")
    capabilities: str | None = _env_field("capabilities")
    metadata: str | None = _env_field("metadata")
    heartbeat_interval: str | None = _env_field("heartbeat_interval")
    reconnect_delay: str | None = _env_field("reconnect_delay")
    max_reconnect_attempts: str | None = _env_field("max_reconnect_attempts")
    max_reconnect_delay: str | None = _env_field("max_reconnect_delay")
    connect_timeout: str | None = _env_field("connect_timeout")
    secret: str | None = _env_field("secret")
    max_concurrent_tasks: str | None = _env_field("max_concurrent_tasks")
    shutdown_grace_seconds: str | None = _env_field("shutdown_grace_seconds")
    task_timeout_seconds: str | None = _env_field("task_timeout_seconds")
    tls_ca_file: str | None = _env_field("tls_ca_file")
    tls_cert_file: str | None = _env_field("tls_cert_file")
    tls_key_file: str | None = _env_field("tls_key_file")
    tls_server_name: str | None = _env_field("tls_server_name")
    max_message_bytes: str | None = _env_field("max_message_bytes")
    keepalive_interval: str | None = _env_field("keepalive_interval")
    keepalive_timeout: str | None = _env_field("keepalive_timeout")
    call_reconnect_wait: str | None = _env_field("call_reconnect_wait")
