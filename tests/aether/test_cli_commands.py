"""The `aether` console script finds `aether hub` through the `aether.commands` entry points,
and says how to get the Hub where none is registered."""

from __future__ import annotations

import pytest

from aether import cli


def test_hub_comes_from_its_entry_point() -> None:
    names = [name for name, _ in cli._registered_commands()]
    assert names == ["hub"]
    args = cli.build_parser().parse_args(["hub", "--port", "0"])
    assert args.handler.__module__ == "aether_hub.commands"


def test_without_the_hub_aether_hub_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    assert cli.main(["hub", "--dev"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'aether-agent-sdk[hub]'" in err
    # The SDK's own commands are still there.
    assert cli.build_parser().parse_args(["task", "get", "t1"]).task_id == "t1"
