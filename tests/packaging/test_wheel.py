"""The wheel ships `aether`, `aether_cli`, `aether_hub`, `aether_sdk` and `aether_api`; they
import from it alone.

Editable installs put the repo and `generated/` on sys.path, which would hide a package
missing from the wheel; this test builds the real wheel, installs it into a fresh target
folder and imports from there with site processing (and so the editable paths) switched off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import importlib.metadata, json, pathlib, sys
import aether, aether_cli, aether_cli.tasks, aether_hub, aether_sdk, aether_api, aether._wire
found = {}
for mod in (aether, aether_cli, aether_hub, aether_sdk, aether_api):
    path = pathlib.Path(mod.__file__).parent
    found[mod.__name__] = {"dir": str(path), "typed": (path / "py.typed").is_file()}
dist = importlib.metadata.distribution("aether-agent-sdk")
found["dist"] = str(dist.locate_file(""))
found["scripts"] = sorted(ep.name for ep in dist.entry_points if ep.group == "console_scripts")
found["commands"] = sorted(ep.name for ep in dist.entry_points if ep.group == "aether.commands")
found["pytest11"] = sorted(ep.value for ep in dist.entry_points if ep.group == "pytest11")
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--wheel-dir", str(out), str(REPO)),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("aether_agent_sdk-*.whl")
    return built


def test_wheel_contains_the_five_packages_and_no_build_inputs(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith("aether_agent_sdk-")}
    assert tops == {"aether", "aether_cli", "aether_hub", "aether_sdk", "aether_api"}
    for package in ("aether", "aether_cli", "aether_hub", "aether_sdk", "aether_api"):
        assert f"{package}/py.typed" in names
    assert "aether_api/v1/messages.py" in names
    assert not any(name.startswith(("codegen/", "generated/", "tests/")) for name in names)


def test_installed_wheel_imports_without_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"),
            *("--target", str(target), str(wheel)),
        ],
        check=True,
        capture_output=True,
    )
    # Dependencies come from this venv's site-packages; `-S` skips its .pth files, so the
    # editable install's paths to the repo are not on sys.path.
    deps = sysconfig.get_paths()["purelib"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), deps])}
    done = subprocess.run(
        [sys.executable, "-S", "-c", PROBE],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    found = json.loads(done.stdout)
    for package in ("aether", "aether_cli", "aether_hub", "aether_sdk", "aether_api"):
        assert found[package]["dir"].startswith(str(target)), found[package]
        assert found[package]["typed"]
    assert found["dist"].startswith(str(target))
    assert found["scripts"] == ["aether"]
    assert found["commands"] == ["agents", "hub", "task"]
    assert found["pytest11"] == ["aether_hub.testing.plugin"]


def test_sdist_carries_every_package_the_wheel_is_built_from() -> None:
    # A wheel built from the sdist (what pip does with a source release) can only contain
    # what the sdist carries: a package missing from its include list vanishes silently.
    if sys.version_info < (3, 11):
        pytest.skip("reading pyproject.toml needs tomllib (Python 3.11+)")
    else:
        import tomllib

        project = tomllib.loads((REPO / "pyproject.toml").read_text())
        hatch = project["tool"]["hatch"]["build"]
        wheel_roots = {p.split("/")[0] for p in hatch["targets"]["wheel"]["packages"]}
        assert wheel_roots <= set(hatch["targets"]["sdist"]["include"])
