"""The operator's side of the `aether` command: `aether task` and `aether agents`.

A client of the SDK, kept out of it: `aether` (the library agents and applications import)
holds only what runs inside a user's process, and `aether run`. These commands are
registered under the `aether.commands` entry-point group, as the Hub registers `aether hub`,
and use only the SDK's public modules (`aether.taskclient`, `aether.address`, ...).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ("register_agents", "register_task")


def register_task(subparsers: _SubParsers) -> None:
    """Add `aether task` (imported only when the parser is built)."""
    from aether_cli.tasks import add_task_parser

    add_task_parser(subparsers)


def register_agents(subparsers: _SubParsers) -> None:
    """Add `aether agents list`."""
    from aether_cli.tasks import add_agents_parser

    add_agents_parser(subparsers)
