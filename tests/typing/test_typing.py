"""The public API's types: the guide's code type-checks, misuse does not.

One `mypy --strict` run (the project's configuration) over the guide's three examples as
shipped in `examples/`, this folder's guide snippets, and a set of misuse snippets; each
misuse snippet must fail with the expected error code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api as mypy_api

HERE = Path(__file__).parent
ROOT = HERE.parents[1]

GUIDE_EXAMPLES = ("quickstart.py", "code_reviewer.py", "data_processor.py")
GUIDE_FILES = sorted(
    [*(ROOT / "examples" / name for name in GUIDE_EXAMPLES), *HERE.glob("guide_*.py")]
)

PRELUDE = """\
from aether_sdk import AetherAgent, AgentConfig, TaskAssignment, TaskResult


async def misuse(agent: AetherAgent) -> None:
"""

#: name → (body inside `misuse`, or a whole module when it starts with "MODULE:"), code.
MISUSES: dict[str, tuple[str, str]] = {
    "result_task_id_int": ("    TaskResult(task_id=1)", "arg-type"),
    "memory_key_int": ("    await agent.hub.memory.store(key=1, value={})", "arg-type"),
    "memory_value_not_json": (
        '    await agent.hub.memory.store(key="k", value={"a": object()})',
        "dict-item",
    ),
    "memory_scope_unknown": (
        '    await agent.hub.memory.retrieve(key="k", scope="session")',
        "arg-type",
    ),
    "config_missing_name": ('    AgentConfig(agent_id="a")', "call-arg"),
    "config_agent_id_int": ('    AgentConfig(agent_id=1, agent_name="b")', "arg-type"),
    "config_secret_read_is_not_str": (
        '    s: str = AgentConfig(agent_id="a", agent_name="b", secret="s").secret',
        "assignment",
    ),
    "config_unknown_field": (
        '    AgentConfig(agent_id="a", agent_name="A", hubb_url="x")',
        "call-arg",
    ),
    "chat_message_not_str": (
        '    await agent.hub.llm.chat(messages=[{"role": "user", "content": 1}])',
        "dict-item",
    ),
    "usage_tokens_is_int": (
        '    r = await agent.hub.llm.chat(messages=[])\n    r.usage.total_tokens + "x"',
        "operator",
    ),
    "memory_value_is_json_not_str": (
        '    s: str = (await agent.hub.memory.retrieve(key="k")).value()',
        "assignment",
    ),
    "chunk_usage_may_be_none": (
        "    async for c in agent.hub.llm.chat_stream(messages=[]):\n        c.usage.total_tokens",
        "union-attr",
    ),
    "request_timeout_str": (
        '    await agent.hub.messaging.request(subject="s", payload={}, timeout="10")',
        "arg-type",
    ),
    "start_not_awaited_value": ("    x: int = await agent.start()", "func-returns-value"),
    "handler_wrong_return": (
        "MODULE:from aether_sdk import AetherAgent, TaskAssignment\n\n\n"
        "class Bad(AetherAgent):\n"
        "    async def handle_task(self, task: TaskAssignment) -> str:\n"
        '        return "no"\n',
        "override",
    ),
    "unknown_export": ("MODULE:from aether_sdk import NotAThing as NotAThing\n", "attr-defined"),
}


#: name → body inside `well_typed`: each must type-check without any error.
WELL_TYPED: dict[str, str] = {
    # A plain str secret is accepted (pydantic wraps it in a SecretStr) ...
    "config_secret_str": '    AgentConfig(agent_id="a", agent_name="b", secret="s")',
    # ... and reads back as SecretStr | None.
    "config_secret_reads_secretstr": (
        '    c = AgentConfig(agent_id="a", agent_name="b", secret="s")\n'
        "    s: SecretStr | None = c.secret\n"
        '    AgentConfig(agent_id="a", agent_name="b", secret=s)'
    ),
}

WELL_TYPED_PRELUDE = """\
from pydantic import SecretStr

from aether_sdk import AgentConfig


def well_typed() -> None:
"""


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Run mypy once; map each checked file name to its error lines."""
    folder = tmp_path_factory.mktemp("misuse")
    for name, (body, _) in MISUSES.items():
        text = body.removeprefix("MODULE:") if body.startswith("MODULE:") else PRELUDE + body
        (folder / f"misuse_{name}.py").write_text(text + "\n")
    for name, body in WELL_TYPED.items():
        (folder / f"ok_{name}.py").write_text(WELL_TYPED_PRELUDE + body + "\n")
    paths = [str(p) for p in GUIDE_FILES] + sorted(str(p) for p in folder.glob("*.py"))
    stdout, stderr, _ = mypy_api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path_factory.mktemp("mypy-cache")),
            "--no-error-summary",
            "--show-error-codes",
            *paths,
        ]
    )
    assert not stderr, stderr
    errors: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        match = re.match(r"(.+?\.py):\d+: error: ", line)
        if match:
            errors.setdefault(Path(match.group(1)).name, []).append(line)
    return errors


@pytest.mark.parametrize("path", GUIDE_FILES, ids=lambda p: p.name)
def test_guide_code_type_checks(path: Path, mypy_output: dict[str, list[str]]) -> None:
    assert mypy_output.get(path.name, []) == []


@pytest.mark.parametrize("name", sorted(WELL_TYPED))
def test_well_typed_snippet_type_checks(name: str, mypy_output: dict[str, list[str]]) -> None:
    assert mypy_output.get(f"ok_{name}.py", []) == []


@pytest.mark.parametrize("name", sorted(MISUSES))
def test_misuse_fails_to_type_check(name: str, mypy_output: dict[str, list[str]]) -> None:
    lines = mypy_output.get(f"misuse_{name}.py", [])
    code = MISUSES[name][1]
    assert any(f"[{code}]" in line for line in lines), lines or "no error reported"


def test_three_guide_examples_present() -> None:
    names = {p.name for p in GUIDE_FILES if p.is_file()}
    assert {*GUIDE_EXAMPLES, "guide_snippets.py"} <= names


def test_readme_snippet_is_verbatim() -> None:
    """`guide_readme_hub_services.py` is the README's Hub services snippet, unchanged."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Hub services: `self.hub`") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.S)
    assert snippet is not None
    checked = (HERE / "guide_readme_hub_services.py").read_text()
    assert checked.endswith("\n\n" + snippet.group(1))
