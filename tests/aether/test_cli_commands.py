"""The `aether` console script finds `aether hub` through the `aether.commands` entry points,
and says how to get the Hub where none is registered."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from aether import cli


def test_hub_comes_from_its_entry_point() -> None:
    names = [name for name, _ in cli._registered_commands()]
    assert names == ["agents", "hub", "task"]
    args = cli.build_parser().parse_args(["hub", "--port", "0"])
    assert args.handler.__module__ == "aether_hub.commands"
    # The operator's commands come from `aether_cli`, not from the SDK package.
    args = cli.build_parser().parse_args(["task", "get", "t1"])
    assert args.handler.__module__ == "aether_cli.tasks"


def test_without_the_hub_aether_hub_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hubless = [e for e in entry_points(group=cli.COMMANDS_GROUP) if e.name != "hub"]
    monkeypatch.setattr(cli, "entry_points", lambda group: hubless)
    assert cli.main(["hub", "--dev"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'aether-agent-sdk[hub]'" in err
    # The other commands are still there.
    assert cli.build_parser().parse_args(["task", "get", "t1"]).task_id == "t1"
    assert cli.build_parser().parse_args(["run", "m:A"]).command == "run"
