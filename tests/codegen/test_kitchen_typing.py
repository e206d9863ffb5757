"""The generator's output for the kitchen sink passes `mypy --strict` and ruff.

The committed `aether_api` is type-checked with the rest of the repository; the
kitchen sink holds the constructs the real API lacks (keyword and shadowing field
names, nested enums, Struct, every scalar type), so its output is checked here.
"""

from __future__ import annotations

import subprocess
import sys

from tests.generated import genpkgs


def _run(args: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_kitchen_output_passes_mypy_strict() -> None:
    package_dir = genpkgs.kitchen_generated()
    cache = genpkgs.scratch_dir("mypy-kitchen-")
    done = _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--warn-unreachable",
            "--python-version",
            "3.10",
            "--cache-dir",
            str(cache),
            "--config-file",
            "",  # no project config: the output must stand on its own
            package_dir.name,
        ],
        cwd=str(package_dir.parent),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout


def test_kitchen_output_passes_ruff() -> None:
    package_dir = genpkgs.kitchen_generated()
    config = genpkgs.REPO / "pyproject.toml"
    for command in (["check"], ["format", "--check"]):
        done = _run(
            [
                sys.executable,
                "-m",
                "ruff",
                *command,
                "--no-cache",
                "--config",
                str(config),
                package_dir.name,
            ],
            cwd=str(package_dir.parent),
        )
        assert done.returncode == 0, f"ruff {' '.join(command)}:\n{done.stdout}{done.stderr}"
