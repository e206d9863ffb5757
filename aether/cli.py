"""The `aether` console script.

Subcommands (each imported only when its parser is built, so `aether hub` starts fast):

- `aether hub [...]`        the development Hub (`aether.devhub.cli`)
- `aether agents list [...]` agents connected to a Hub (`aether.devhub.cli`)
- `aether task [...]`       submit and follow tasks (`aether.taskcli`)

A subcommand's parser sets `handler` (or `func`): a callable taking the parsed
arguments and returning an exit status (an int, None for 0, or an awaitable of those).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

__all__ = ("build_parser", "main")

if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _add_hub(subparsers: _SubParsers) -> None:
    from aether.devhub import cli as devhub_cli

    devhub_cli.add_hub_parser(subparsers).set_defaults(handler=devhub_cli.dispatch_hub)


def _add_agents(subparsers: _SubParsers) -> None:
    from aether.devhub import cli as devhub_cli

    devhub_cli.add_agents_parser(subparsers).set_defaults(handler=devhub_cli.run_agents_list)


def _add_task(subparsers: _SubParsers) -> None:
    from aether.taskcli import add_task_parser

    add_task_parser(subparsers)


def _add_run(subparsers: _SubParsers) -> None:
    from aether import runner

    runner.add_run_parser(subparsers)


# The subcommands, in help order.
_SUBCOMMANDS: tuple[tuple[str, Callable[[_SubParsers], None]], ...] = (
    ("hub", _add_hub),
    ("agents", _add_agents),
    ("task", _add_task),
    ("run", _add_run),
)


def build_parser() -> argparse.ArgumentParser:
    """The `aether` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="aether", description="Aether agent SDK tools.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for _name, add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `aether` command line; the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None) or getattr(args, "func", None)
    if not callable(handler):
        parser.error(f"{args.command}: no action (a subcommand is missing?)")
    result: object = handler(args)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return int(result) if isinstance(result, int) else 0


async def _await(awaitable: object) -> object:
    assert inspect.isawaitable(awaitable)
    return await awaitable


if __name__ == "__main__":
    sys.exit(main())
