"""Command line of the Hub: `aether hub ...`.

- `aether hub [options]` (or `python -m aether_hub`) runs the Hub until SIGINT/SIGTERM.
- `aether hub agents add ID --secret-env VAR [--trust-level L] [--db FILE]` enrols a fixed
  agent (the secret is read from the variable and stored as a salted hash).
- `aether hub agents list|remove ... --db FILE` shows or removes enrolled agents.
- With `--store jetstream --nats-url URL[,URL...] [--store-replicas N]` the agents commands
  work on the enrolments every Hub replica of `--store jetstream` shares (the JetStream
  bucket AETHER_AGENTS) instead of a database file.

Who is connected to a running Hub is the SDK's `aether agents list --hub-url URL` (the
`ListAgents` call).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aether_hub.settings import DEFAULT_HOST, DEFAULT_PORT, ConfigError, HubConfig

if TYPE_CHECKING:
    from aether_hub._wire import pb
    from aether_hub.auth import AgentRecord
    from aether_hub.db import Database

__all__ = ("add_hub_parser", "main", "register_hub")

# The Hub database when no --db is given (for `aether hub` and the agents commands).
DB_ENV = "AETHER_HUB_DB"
_DB_HELP = f"the Hub's database file (default: ${DB_ENV}; with --store sqlite)"

# Flag dest -> HubConfig field, for the flags that set Hub options.
_HUB_OPTIONS = {
    "host": "host",
    "port": "port",
    "metrics_port": "metrics_port",
    "db": "db_path",
    "dev": "dev",
    "nats_url": "nats_url",
    "store": "store",
    "store_replicas": "store_replicas",
    "replica_timeout": "replica_timeout_seconds",
    "llm_provider": "llm_provider",
    "llm_base_url": "llm_base_url",
    "llm_api_key_env": "llm_api_key_env",
    "tools": "tools",
    "client_token_env": "client_token_env",
    "max_message_bytes": "max_message_bytes",
    "log_level": "log_level",
    "log_format": "log_format",
    "heartbeat_interval": "heartbeat_interval_seconds",
    "session_grace": "session_grace_seconds",
    "max_attempts": "default_max_attempts",
    "retain_tasks": "terminal_task_retention",
    "retain_task_bytes": "terminal_task_retention_bytes",
    "retain_task_seconds": "terminal_task_retention_seconds",
    "shared_subjects": "shared_subjects",
    "register_free_failures": "register_free_failures",
    "register_max_lockout": "register_max_lockout_seconds",
    "tls_cert": "tls_cert_file",
    "tls_key": "tls_key_file",
    "tls_client_ca": "tls_client_ca_file",
    "insecure": "insecure",
    "max_connections": "max_connections",
    "idle_timeout": "idle_timeout_seconds",
    "memory_quota_bytes": "memory_quota_bytes",
    "memory_quota_keys": "memory_quota_keys",
    "subscriber_max_bytes": "subscriber_max_pending_bytes",
}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, not {value}")
    return value


def add_hub_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add `hub` (with its `agents` subcommands) to a parent parser's subcommands."""
    parser = subparsers.add_parser(
        "hub",
        help="run the development Hub",
        description="Run the development Aether Hub (all services, one process).",
    )
    configure_hub_parser(parser)
    return parser


def configure_hub_parser(parser: argparse.ArgumentParser) -> None:
    """The options of `aether hub` (also used by `python -m aether_hub`)."""
    s = argparse.SUPPRESS  # only flags actually given override the config file
    parser.add_argument("--host", default=s, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=_port, default=s, help=f"port (default {DEFAULT_PORT}; 0 = any free port)"
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=s,
        metavar="N",
        help="serve Prometheus metrics at http://HOST:N/metrics (default 0 = off)",
    )
    parser.add_argument(
        "--db",
        default=s,
        metavar="FILE",
        help=f"SQLite file for all state (default: ${DB_ENV}, else in memory)",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        default=s,
        help="enrol unknown agents on their first register (trust level low)",
    )
    parser.add_argument(
        "--nats-url",
        default=s,
        metavar="URL[,URL...]",
        help="bridge messaging to NATS: one server, or a cluster's nodes comma-separated"
        " (tried in order; the Hub fails over between them)",
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "jetstream"),
        default=s,
        help="where tasks live: sqlite (memory, or the --db file; the default) or jetstream"
        " (shared by every Hub replica on the --nats-url cluster)",
    )
    parser.add_argument(
        "--store-replicas",
        type=int,
        default=s,
        metavar="N",
        help="copies JetStream keeps of the task buckets (1, or 3 on a cluster; default 1)",
    )
    parser.add_argument(
        "--replica-timeout",
        type=float,
        default=s,
        metavar="SECONDS",
        help="with --store jetstream: a Hub replica silent this long is dead and its"
        " leased tasks go back to the queue (default 10)",
    )
    parser.add_argument(
        "--llm-provider", choices=("echo", "openai"), default=s, help="LLM provider (echo)"
    )
    parser.add_argument("--llm-base-url", default=s, metavar="URL", help="OpenAI-compatible URL")
    parser.add_argument(
        "--llm-api-key-env", default=s, metavar="VAR", help="variable holding the LLM API key"
    )
    parser.add_argument(
        "--tools", nargs="+", default=s, metavar="MODULE", help="tool plugin modules to load"
    )
    security = parser.add_argument_group("security and bounds (docs/devhub.md#security-model)")
    security.add_argument(
        "--tls-cert", default=s, metavar="FILE", help="serve TLS: certificate chain (PEM)"
    )
    security.add_argument(
        "--tls-key", default=s, metavar="FILE", help="the certificate's private key (PEM)"
    )
    security.add_argument(
        "--tls-client-ca",
        default=s,
        metavar="FILE",
        help="mTLS: clients must present a certificate signed by this CA (PEM)",
    )
    security.add_argument(
        "--insecure",
        action="store_true",
        default=s,
        help="allow plaintext on a non-loopback address (behind a TLS-terminating proxy)",
    )
    security.add_argument(
        "--register-free-failures",
        type=_positive_int,
        default=s,
        metavar="N",
        help="failed registrations per agent id / address before lockouts start (default 5)",
    )
    security.add_argument(
        "--register-max-lockout",
        type=float,
        default=s,
        metavar="SECONDS",
        help="longest lockout after failed registrations; doubles from 1 s (default 300)",
    )
    security.add_argument(
        "--max-connections",
        type=_positive_int,
        default=s,
        metavar="N",
        help="open client connections at once; more are closed (default 1000)",
    )
    security.add_argument(
        "--idle-timeout",
        type=float,
        default=s,
        metavar="SECONDS",
        help="close a connection with no call in progress for this long (default 300; 0 = never)",
    )
    security.add_argument(
        "--memory-quota-bytes",
        type=_positive_int,
        default=s,
        metavar="N",
        help="bytes of keys and values each agent may keep in its agent scope (default 64 MiB)",
    )
    security.add_argument(
        "--memory-quota-keys",
        type=_positive_int,
        default=s,
        metavar="N",
        help="keys each agent may keep in its agent scope (default 10000)",
    )
    security.add_argument(
        "--subscriber-max-bytes",
        type=_positive_int,
        default=s,
        metavar="N",
        help="bytes of messages waiting for one subscriber before it is cut off (default 16 MiB)",
    )
    parser.add_argument(
        "--shared-subjects",
        nargs="*",
        default=s,
        metavar="PATTERN",
        help="subject patterns every agent may publish/subscribe besides its own"
        " agents.<id>.> (default: shared.> events.> review.> pricing.>; none: no shared ones)",
    )
    parser.add_argument(
        "--config", default=None, metavar="FILE", help="TOML/JSON file: hub options and agents"
    )
    parser.add_argument(
        "--client-token-env",
        default=s,
        metavar="VAR",
        help="variable holding the token TaskService callers must present (needed off loopback)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=_positive_int,
        default=s,
        metavar="N",
        help="largest accepted message (default 4 MiB)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=_positive_int,
        default=s,
        metavar="SECONDS",
        help="heartbeat interval agents are told to keep (default 30)",
    )
    parser.add_argument(
        "--session-grace",
        type=float,
        default=s,
        metavar="SECONDS",
        help="a session silent for 2 heartbeat intervals plus this long expires and its"
        " tasks go back to the queue (default 5)",
    )
    parser.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=s,
        metavar="N",
        help="deliveries before a task fails, unless it says otherwise (default 3)",
    )
    parser.add_argument(
        "--retain-tasks",
        type=_positive_int,
        default=s,
        metavar="N",
        help="finished tasks kept in memory (default 100000; with --db older ones are read"
        " from the database, without it they are gone)",
    )
    parser.add_argument(
        "--retain-task-bytes",
        type=_positive_int,
        default=s,
        metavar="N",
        help="bytes of payloads and results of finished tasks kept in memory (default 256 MiB)",
    )
    parser.add_argument(
        "--retain-task-seconds",
        type=float,
        default=s,
        metavar="SECONDS",
        help="how long a finished task stays in memory (default 86400; 0 = no age limit)",
    )
    parser.add_argument(
        "--log-level",
        default=s,
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level (INFO)",
    )
    parser.add_argument(
        "--log-format",
        default=s,
        type=str.lower,
        choices=("plain", "json"),
        help="log lines as plain text or one JSON object each (default: $AETHER_LOG_FORMAT,"
        " else plain)",
    )
    sub = parser.add_subparsers(dest="hub_command", metavar="{agents}")
    agents = sub.add_parser(
        "agents",
        help="manage the agents enrolled in a Hub database (or shared JetStream store)",
        description="Enrol, list and remove the fixed agents of a Hub database (--db FILE),"
        " or of the Hub replicas sharing JetStream (--store jetstream --nats-url URL).",
    )
    agents_sub = agents.add_subparsers(dest="agents_command", metavar="{add,list,remove}")
    agents_sub.required = True
    add = agents_sub.add_parser("add", help="enrol a fixed agent (or change its secret)")
    add.add_argument("agent_id", metavar="ID")
    add.add_argument(
        "--secret-env", required=True, metavar="VAR", help="variable holding the agent's secret"
    )
    add.add_argument(
        "--trust-level", default="standard", help="low | standard | high (default standard)"
    )
    _add_agents_store_flags(add)
    lst = agents_sub.add_parser("list", help="list the enrolled agents")
    _add_agents_store_flags(lst)
    lst.add_argument("--json", action="store_true", help="print JSON")
    rm = agents_sub.add_parser("remove", help="forget an enrolled agent")
    rm.add_argument("agent_id", metavar="ID")
    _add_agents_store_flags(rm)


def _add_agents_store_flags(parser: argparse.ArgumentParser) -> None:
    # Own dests (agents_*): a subcommand's defaults would overwrite the `aether hub` flags
    # of the same name, which the handler falls back to (`aether hub --store jetstream
    # --nats-url URL agents list` works too).
    parser.add_argument("--db", dest="agents_db", metavar="FILE", help=_DB_HELP)
    parser.add_argument(
        "--store",
        dest="agents_store",
        choices=("sqlite", "jetstream"),
        default=None,
        help="where the enrolments live: sqlite (the --db file; the default) or jetstream"
        " (shared by every Hub replica of --store jetstream on the --nats-url servers)",
    )
    parser.add_argument(
        "--nats-url",
        dest="agents_nats_url",
        default=None,
        metavar="URL[,URL...]",
        help="with --store jetstream: the NATS servers (comma-separated, tried in order)",
    )
    parser.add_argument(
        "--store-replicas",
        dest="agents_store_replicas",
        type=_positive_int,
        default=None,
        metavar="N",
        help="with --store jetstream: copies of the enrolments' bucket when this creates"
        " it (use the Hubs' --store-replicas; default 1); an existing bucket is used as is",
    )


# -- running --------------------------------------------------------------------------


def hub_config_from_args(args: argparse.Namespace) -> HubConfig:
    """The HubConfig of parsed `aether hub` flags (and their --config file)."""
    given = {
        field: getattr(args, dest) for dest, field in _HUB_OPTIONS.items() if hasattr(args, dest)
    }
    if "tools" in given:
        tools: list[str] = []
        for value in given["tools"]:
            tools.extend(part.strip() for part in str(value).split(",") if part.strip())
        given["tools"] = tuple(tools)
    if "shared_subjects" in given:
        given["shared_subjects"] = tuple(str(v) for v in given["shared_subjects"])
    if "db_path" not in given and os.environ.get(DB_ENV):
        given["db_path"] = os.environ[DB_ENV]
    config = HubConfig()
    if args.config:
        config = config.merged_with_file(args.config, set(given))
    return dataclasses.replace(config, **given)


def _setup_logging(level: str, log_format: str = "") -> None:
    # No secret or token in any record, whichever logger writes it (hpack prints
    # headers, with the authorization one, at DEBUG).
    from aether import configure_logging, install_log_redaction
    from aether_hub.logcontext import HubLogContext

    install_log_redaction()
    handler = configure_logging(
        getattr(logging, level.upper(), logging.INFO), fmt=log_format or None
    )
    if handler is not None:
        # Records logged while handling a call name its agent and task (JSON format).
        handler.addFilter(HubLogContext())


async def _serve(config: HubConfig) -> None:
    from aether_hub.server import HubServer

    hub = HubServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await hub.start()
    await hub.serve_until(stop)


def run_hub(args: argparse.Namespace) -> int:
    """`aether hub`: run until SIGINT/SIGTERM; the exit status."""
    try:
        config = hub_config_from_args(args)
        config.validate()
    except ConfigError as exc:
        print(f"aether hub: error: {exc}", file=sys.stderr)
        return 2
    try:
        _setup_logging(config.log_level, config.log_format)
    except ValueError as exc:  # a bad $AETHER_LOG_FORMAT
        print(f"aether hub: error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config))
    except ConfigError as exc:
        print(f"aether hub: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"aether hub: error: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"aether hub: error: database {config.db_path}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _open_db(path: str | None, *, must_exist: bool) -> Database:
    from aether_hub.db import Database

    path = path or os.environ.get(DB_ENV) or None
    if path is None:
        raise ConfigError(
            f"--db FILE (or ${DB_ENV}) is required: agents live in the Hub's database file"
        )
    if must_exist and not os.path.exists(path):
        raise ConfigError(f"no Hub database at {path}")
    return Database(path)


def run_hub_agents(args: argparse.Namespace) -> int:
    """`aether hub agents add|list|remove`."""
    from aether_hub.auth import AgentRegistry, AgentRegistryUnavailableError, EnrolmentError
    from aether_hub.bus import BusError
    from aether_hub.nats_bus import NatsUrlError

    command: str = args.agents_command
    try:
        store = args.agents_store or getattr(args, "store", None) or "sqlite"
        if store == "jetstream":
            return asyncio.run(_run_agents_on_jetstream(args, command))
        db = _open_db(args.agents_db or getattr(args, "db", None), must_exist=command != "add")
        try:
            registry = AgentRegistry(db)
            if command == "add":
                secret = _agent_secret(args)
                record = registry.add(
                    args.agent_id, secret, _trust_level(args.trust_level), source="cli"
                )
                _print_enrolled(record)
            elif command == "remove":
                return _print_removed(args.agent_id, registry.remove(args.agent_id))
            else:
                _print_agents(registry.list_agents(), as_json=args.json)
        finally:
            db.close()
    except (ConfigError, EnrolmentError, NatsUrlError) as exc:
        print(f"aether hub agents: error: {exc}", file=sys.stderr)
        return 2
    except (BusError, AgentRegistryUnavailableError) as exc:
        print(f"aether hub agents: error: --store jetstream: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"aether hub agents: error: database: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run_agents_on_jetstream(args: argparse.Namespace, command: str) -> int:
    """An agents command on the AETHER_AGENTS bucket (what the Hubs of --store jetstream
    share); BusError/AgentRegistryUnavailableError when JetStream cannot be reached."""
    from aether_hub.agents_jetstream import open_jetstream_agents
    from aether_hub.nats_bus import NatsBus

    if args.agents_db:
        raise ConfigError("--db is for --store sqlite; --store jetstream uses --nats-url")
    nats_url = args.agents_nats_url or getattr(args, "nats_url", None)
    if not nats_url:
        raise ConfigError("--store jetstream needs --nats-url (the JetStream servers)")
    replicas = args.agents_store_replicas or getattr(args, "store_replicas", None) or 1
    if not 1 <= replicas <= 5:
        raise ConfigError(f"--store-replicas must be 1 to 5, not {replicas}")
    # Checked before connecting: a missing secret should not wait for NATS.
    secret = _agent_secret(args) if command == "add" else ""
    level = _trust_level(args.trust_level) if command == "add" else None
    link = await NatsBus.connect(nats_url)
    try:
        registry = await open_jetstream_agents(link.client, replicas=replicas, bind_existing=True)
        if command == "add":
            assert level is not None
            _print_enrolled(await registry.add(args.agent_id, secret, level, source="cli"))
        elif command == "remove":
            return _print_removed(args.agent_id, await registry.remove(args.agent_id))
        else:
            _print_agents(await registry.list_agents(), as_json=args.json)
    finally:
        await link.close()
    return 0


def _agent_secret(args: argparse.Namespace) -> str:
    secret = os.environ.get(args.secret_env, "")
    if not secret:
        raise ConfigError(f"--secret-env {args.secret_env}: the variable is unset or empty")
    return secret


def _trust_level(text: str) -> pb.TrustLevel:
    from aether_hub.auth import parse_trust_level

    return parse_trust_level(text)


def _print_enrolled(record: AgentRecord) -> None:
    from aether_hub.auth import trust_level_name

    print(
        f"enrolled agent {record.agent_id!r} (trust level {trust_level_name(record.trust_level)})"
    )


def _print_removed(agent_id: str, removed: bool) -> int:
    if not removed:
        print(f"aether hub agents: no agent {agent_id!r}", file=sys.stderr)
        return 1
    print(f"removed agent {agent_id!r}")
    return 0


def _print_agents(records: Sequence[AgentRecord], *, as_json: bool) -> None:
    from aether_hub.auth import trust_level_name

    rows = [
        {
            "agent_id": r.agent_id,
            "trust_level": trust_level_name(r.trust_level),
            "source": r.source,
            "has_secret": r.has_secret,
            "created_at": _iso(r.created_at),
        }
        for r in records
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ("agent_id", "trust_level", "source", "has_secret"))


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _print_table(rows: Sequence[dict[str, object]], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())


def dispatch_hub(args: argparse.Namespace) -> int:
    """Run `aether hub` or one of its `agents` subcommands."""
    if getattr(args, "hub_command", None) == "agents":
        return run_hub_agents(args)
    return run_hub(args)


def register_hub(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`aether hub ...` (the `aether.commands` entry point `hub`)."""
    add_hub_parser(subparsers).set_defaults(handler=dispatch_hub)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m aether_hub [hub options]`."""
    parser = argparse.ArgumentParser(
        prog="python -m aether_hub", description="Run the development Aether Hub."
    )
    configure_hub_parser(parser)
    return dispatch_hub(parser.parse_args(argv))
