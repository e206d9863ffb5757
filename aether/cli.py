"""The `aether` console script.

Subcommands (each imported only when its parser is built, so every command starts fast):

- `aether run [...]`        run an agent class (`aether.runner`)
- commands that other packages register under the entry-point group `aether.commands`:
  `aether_cli` registers `aether task [...]` and `aether agents list [...]` (submit, follow
  and list tasks and agents), the Hub package `aether_hub` registers `aether hub [...]`.
  The SDK imports neither; it only loads what is registered, so `aether` works where the
  Hub is absent.

A subcommand's parser sets `handler`: a callable taking the parsed
arguments and returning an exit status (an int, None for 0, or an awaitable of those).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

__all__ = ("COMMANDS_GROUP", "build_parser", "main")

# Entry-point group of subcommands: each entry is `add(subparsers) -> None`.
COMMANDS_GROUP = "aether.commands"

if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _add_run(subparsers: _SubParsers) -> None:
    from aether import runner

    runner.add_run_parser(subparsers)


# The SDK's own subcommands, in help order (registered ones come first).
_SUBCOMMANDS: tuple[tuple[str, Callable[[_SubParsers], None]], ...] = (("run", _add_run),)

# What `aether hub` says when no package registered it (the SDK without its Hub).
_HUB_MISSING = (
    "the Aether Hub is not installed here: pip install 'aether-agent-sdk[hub]'"
    " (the Hub package `aether_hub` registers `aether hub`)"
)


def _registered_commands() -> list[tuple[str, Callable[[_SubParsers], None]]]:
    """Subcommands registered by installed packages (`aether.commands` entry points)."""
    found: list[tuple[str, Callable[[_SubParsers], None]]] = []
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        add: object = entry.load()
        if callable(add):
            found.append((entry.name, add))
    return found


def _add_missing_hub(subparsers: _SubParsers) -> None:
    # Listed in the help; `main` answers it before parsing (its options are unknown here).
    subparsers.add_parser("hub", help="run an Aether Hub (not installed)")


def build_parser() -> argparse.ArgumentParser:
    """The `aether` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="aether", description="Aether agent SDK tools.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    registered = _registered_commands()
    if "hub" not in {name for name, _ in registered}:
        _add_missing_hub(subparsers)
    for _name, add in [*registered, *_SUBCOMMANDS]:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `aether` command line; the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv[:1] == ["hub"] and "hub" not in {name for name, _ in _registered_commands()}:
        print(f"aether hub: {_HUB_MISSING}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
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
