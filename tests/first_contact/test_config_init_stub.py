"""AgentConfig's typed `__init__` (for type checkers) is the one generated from its fields."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from aether.config import AgentConfig
from codegen.config_reference import render_init_stub, replace_init_stub

CONFIG_PY = Path(inspect.getfile(AgentConfig))


def test_config_init_stub_is_in_sync_with_model_fields() -> None:
    source = CONFIG_PY.read_text(encoding="utf-8")
    assert source == replace_init_stub(source), (
        "AgentConfig's typed __init__ is stale: run "
        "`python -m codegen.config_reference --write-init`"
    )


def test_stub_has_every_field_keyword_only_with_required_ness_and_str_for_secrets() -> None:
    tree = ast.parse("class C:\n    if True:\n" + render_init_stub())
    init = tree.body[0].body[0].body[0]  # type: ignore[attr-defined]  # known shape
    assert isinstance(init, ast.FunctionDef)
    params = init.args.kwonlyargs
    assert [p.arg for p in params] == list(AgentConfig.model_fields)
    defaults = dict(zip([p.arg for p in params], init.args.kw_defaults, strict=True))
    for name, field in AgentConfig.model_fields.items():
        assert (defaults[name] is None) == field.is_required(), name
    annotations = {p.arg: ast.unparse(p.annotation) for p in params if p.annotation}
    assert annotations["secret"] == "SecretStr | str | None"
    assert annotations["agent_id"] == "str"
    assert annotations["task_timeout_seconds"] == "float | None"


def test_stub_exists_for_type_checkers_only() -> None:
    # At run time pydantic's own __init__ validates (and wraps the secret).
    assert "__init__" not in vars(AgentConfig)
    config = AgentConfig(agent_id="a", agent_name="b", secret="sk-hidden-1")
    assert config.secret is not None and config.secret.get_secret_value() == "sk-hidden-1"
    assert "sk-hidden-1" not in repr(config) and "sk-hidden-1" not in str(config)
