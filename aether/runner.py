"""`aether run module:AgentClass`: run an agent class, configured from env and flags.

The agent class is loaded from an importable module (`my_pkg.agents:Reviewer`) or a file
(`path/to/agent.py:Reviewer`); its configuration comes from the `AETHER_*` environment
variables (see `AgentConfig.ENV_VARS`), with command-line flags winning over them. With
`--health-port` it also serves `/healthz` and `/readyz` for Kubernetes probes and `/metrics`
for Prometheus.
SIGTERM and SIGINT stop the agent gracefully (running tasks get `shutdown_grace_seconds`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dotenv import dotenv_values
from pydantic import ValidationError

from aether._logging import LOG_FORMATS, configure_logging
from aether.address import parse_hub_urls
from aether.agent import AetherAgent
from aether.config import AgentConfig
from aether.errors import AetherConfigError, AetherError
from aether.health_http import HealthServer, agent_probe
from aether.logredact import install_log_redaction

__all__ = (
    "AgentSpecError",
    "add_run_parser",
    "build_config",
    "configure_parser",
    "load_agent_class",
    "main",
    "run",
)

_log = logging.getLogger("aether.run")

#: Exit codes: 0 clean stop, 1 the agent failed, 2 bad command line or configuration.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class AgentSpecError(AetherConfigError):
    """The `module:AgentClass` argument does not name a loadable AetherAgent subclass."""


def load_agent_class(spec: str) -> type[AetherAgent]:
    """Import `module:Class` or `file.py:Class` and check it subclasses `AetherAgent`.

    The current directory is importable (as with `python -m`), and so is the directory of
    a file given by path, so the agent's own sibling modules import normally.
    """
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise AgentSpecError(
            f"expected module:AgentClass (e.g. my_agent:MyAgent or agent.py:MyAgent), got {spec!r}",
            variable="AGENT",
        )
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        path = Path(module_part).resolve()
        if not path.is_file():
            raise AgentSpecError(f"no such file: {module_part}", variable="AGENT")
        sys.path.insert(0, str(path.parent))
        module_name = path.stem
        import_spec = importlib.util.spec_from_file_location(module_name, path)
        if import_spec is None or import_spec.loader is None:
            raise AgentSpecError(f"cannot import {module_part}", variable="AGENT")
        module = importlib.util.module_from_spec(import_spec)
        sys.modules[module_name] = module
        import_spec.loader.exec_module(module)
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as exc:
            raise AgentSpecError(
                f"cannot import module {module_part!r}: {exc}", variable="AGENT"
            ) from None
    target: object = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise AgentSpecError(
                f"module {module_part!r} has no attribute {attr!r}", variable="AGENT"
            )
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, AetherAgent)):
        raise AgentSpecError(
            f"{spec} is not an AetherAgent subclass (got {target!r})", variable="AGENT"
        )
    if target is AetherAgent:
        raise AgentSpecError("AetherAgent itself has no handle_task; name your subclass")
    return target


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise AetherConfigError(f"{flag} expects KEY=VALUE, got {item!r}", variable=flag)
        result[key.strip()] = value.strip()
    return result


def _env_file_values(env_file: str | None) -> dict[str, str]:
    """The variables set in `--env-file` (none without it); a missing file is an error."""
    if env_file is None:
        return {}
    if not Path(env_file).is_file():
        raise AetherConfigError(f"--env-file {env_file}: no such file", variable="--env-file")
    return {key: value for key, value in dotenv_values(env_file).items() if value is not None}


def build_config(args: argparse.Namespace) -> AgentConfig:
    """The agent's config: `AETHER_*` variables, overridden by the flags that were given.

    `--capability` and `--metadata` add to (and override keys of) `AETHER_CAPABILITIES` /
    `AETHER_METADATA`. `agent_name` defaults to `agent_id`. Raises `AetherConfigError`
    naming the bad value.
    """
    if args.hub_url is not None:
        # The one address grammar (aether.address), checked here to name the flag.
        try:
            parse_hub_urls(args.hub_url)
        except AetherConfigError as exc:
            raise AetherConfigError(f"--hub-url: {exc}", variable="--hub-url") from None
    simple = {
        "hub_url": args.hub_url,
        "agent_id": args.agent_id,
        "agent_name": args.agent_name,
        "version": args.agent_version,
        "max_concurrent_tasks": args.max_concurrent_tasks,
    }
    overrides: dict[str, object] = {k: v for k, v in simple.items() if v is not None}
    env = AgentConfig.ENV_VARS
    from_file = _env_file_values(args.env_file)

    def setting(name: str) -> str | None:
        # The process environment wins over the .env file, as in AgentConfig.from_env.
        return os.environ.get(env[name]) or from_file.get(env[name])

    agent_id = args.agent_id or setting("agent_id")
    if "agent_name" not in overrides and not setting("agent_name") and agent_id:
        overrides["agent_name"] = agent_id
    config = AgentConfig.from_env(env_file=args.env_file, **overrides)

    capabilities = _pairs(args.capability, "--capability")
    if args.task_types is not None:
        capabilities["task_types"] = args.task_types
    metadata = _pairs(args.metadata, "--metadata")
    if not capabilities and not metadata:
        return config
    data = config.model_dump()
    data["capabilities"] = {**config.capabilities, **capabilities}
    data["metadata"] = {**config.metadata, **metadata}
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise AetherConfigError(f"{where}: {first['msg']}", variable=where) from None


def add_run_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add `run` to the `aether` command's subcommands (its handler is `run`)."""
    parser = subparsers.add_parser(
        "run",
        help="run an agent class (module:AgentClass) against a Hub",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    configure_parser(parser)
    parser.set_defaults(handler=run)
    return parser


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the `aether run` arguments to `parser`."""
    parser.add_argument(
        "agent",
        metavar="module:AgentClass",
        help="the agent class, e.g. my_agent:MyAgent or path/to/agent.py:MyAgent",
    )
    parser.add_argument(
        "--hub-url",
        help="the Hub's address: HOST[:PORT], grpc:// or grpcs:// (TLS); several,"
        " comma-separated, to fail over between them (env AETHER_HUB_URL)",
    )
    parser.add_argument("--agent-id", help="unique agent id (env AETHER_AGENT_ID)")
    parser.add_argument(
        "--agent-name", help="human-readable name (env AETHER_AGENT_NAME; default: the id)"
    )
    parser.add_argument("--agent-version", help="the agent's version (env AETHER_VERSION)")
    parser.add_argument(
        "--capability",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a capability flag; repeatable (added to AETHER_CAPABILITIES)",
    )
    parser.add_argument(
        "--task-types", help="comma-separated task types to accept (capabilities['task_types'])"
    )
    parser.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="metadata; repeatable"
    )
    parser.add_argument(
        "--max-concurrent-tasks",
        type=int,
        help="tasks at once (env AETHER_MAX_CONCURRENT_TASKS)",
    )
    parser.add_argument("--env-file", help="read AETHER_* variables from this .env file too")
    parser.add_argument(
        "--health-port",
        type=int,
        help="serve /healthz, /readyz and /metrics (Prometheus) on this port (off by default)",
    )
    parser.add_argument(
        "--health-host", default="0.0.0.0", help="address of the health endpoint (default 0.0.0.0)"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level (default INFO)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="log lines as plain text or one JSON object each (env AETHER_LOG_FORMAT;"
        " default plain)",
    )


async def _serve(agent: AetherAgent, health: HealthServer | None) -> None:
    if health is not None:
        await health.start()
    try:
        await agent.run()
    finally:
        if health is not None:
            await health.stop()


def run(args: argparse.Namespace) -> int:
    """Run the agent `args` describe until it is stopped; returns the process exit code."""
    install_log_redaction()
    try:
        configure_logging(args.log_level, fmt=getattr(args, "log_format", None))
    except ValueError as exc:  # a bad AETHER_LOG_FORMAT
        print(f"aether run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        agent_class = load_agent_class(args.agent)
        config = build_config(args)
        agent = agent_class(config)
        health = None
        if args.health_port is not None:
            health = HealthServer(
                agent_probe(agent),
                host=args.health_host,
                port=args.health_port,
                metrics=agent.metrics_registry,
            )
    except (AetherConfigError, ValueError) as exc:
        print(f"aether run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _log.info("running %s as %r against %s", args.agent, config.agent_id, config.hub_url)
    try:
        asyncio.run(_serve(agent, health))
    except KeyboardInterrupt:
        return EXIT_OK
    except AetherError as exc:
        print(f"aether run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # e.g. the health port is taken
        print(f"aether run: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m aether.runner ...`, the same as `aether run ...`."""
    parser = argparse.ArgumentParser(prog="aether run", description=__doc__)
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
