"""The README's configuration reference is the one generated from AgentConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from aether.config import AgentConfig
from codegen.config_reference import BEGIN_MARKER, END_MARKER, render_table, replace_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_table_matches_agent_config() -> None:
    text = README.read_text(encoding="utf-8")
    assert text == replace_table(text), (
        "README.md's AgentConfig reference is stale: run "
        "`python -m codegen.config_reference --write README.md`"
    )


def test_table_lists_every_field_with_its_default_env_var_and_description() -> None:
    rows = [line for line in render_table().splitlines() if line.startswith("| `")]
    assert [row.split("|")[1].strip(" `") for row in rows] == list(AgentConfig.model_fields)
    by_name = {row.split("|")[1].strip(" `"): row for row in rows}
    assert "`required`" in by_name["agent_id"]
    assert "`'localhost:50051'`" in by_name["hub_url"]
    assert "`-1`" in by_name["max_reconnect_attempts"]
    assert "`AETHER_AGENT_SECRET`" in by_name["secret"]
    for name, field in AgentConfig.model_fields.items():
        assert field.description and field.description in by_name[name]


def test_replace_table_rewrites_only_between_markers() -> None:
    doc = f"intro\n{BEGIN_MARKER}\nold stuff\n{END_MARKER}\noutro\n"
    new = replace_table(doc)
    assert new.startswith("intro\n") and new.endswith(f"{END_MARKER}\noutro\n")
    assert "old stuff" not in new and render_table() in new
    with pytest.raises(ValueError, match="exactly once"):
        replace_table("no markers here")
