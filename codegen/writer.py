"""Format rendered modules with the pinned ruff, write what changed, report drift."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

RUFF_CONFIG = Path(__file__).parent / "ruff-generated.toml"
"""Not named ruff.toml, so that ruff does not also apply it to codegen/ itself."""


class FormatError(RuntimeError):
    """ruff could not format or lint-fix the generated code (a template bug)."""


def _ruff(args: list[str], cwd: Path) -> None:
    cmd = [sys.executable, "-m", "ruff", *args, "--config", str(RUFF_CONFIG), "--no-cache"]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise FormatError(
            f"{' '.join(args[:1])} failed on generated code:\n{proc.stdout}{proc.stderr}"
        )


def format_files(files: dict[str, str]) -> dict[str, bytes]:
    """Format every ``.py`` text with ruff (lint fixes, then the formatter) in one batch."""
    with tempfile.TemporaryDirectory(prefix="aether-codegen-fmt-") as tmp:
        root = Path(tmp)
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        # Format first (long lines are the formatter's job), apply the lint fixes
        # (import order, ...), format what the fixes touched, then require a clean lint.
        _ruff(["format", "--quiet", "."], root)
        _ruff(["check", "--fix-only", "--quiet", "."], root)
        _ruff(["format", "--quiet", "."], root)
        _ruff(["check", "--quiet", "."], root)
        return {rel: (root / rel).read_bytes() for rel in files}


@dataclass(frozen=True)
class Drift:
    """How an output dir differs from what the generator produces."""

    stale: tuple[str, ...]
    missing: tuple[str, ...]
    extra: tuple[str, ...]

    @property
    def clean(self) -> bool:
        """True when the output dir is exactly what the generator produces."""
        return not (self.stale or self.missing or self.extra)


def _existing(out: Path, roots: set[str]) -> set[str]:
    found: set[str] = set()
    for root in roots:
        base = out / root
        if not base.exists():
            continue
        for path in base.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                found.add(path.relative_to(out).as_posix())
    return found


def diff(out: Path, files: dict[str, bytes]) -> Drift:
    """Compare the wanted files with the output dir."""
    roots = {rel.split("/", 1)[0] for rel in files}
    existing = _existing(out, roots)
    stale = sorted(
        rel for rel, data in files.items() if rel in existing and (out / rel).read_bytes() != data
    )
    missing = sorted(rel for rel in files if rel not in existing)
    extra = sorted(existing - set(files))
    return Drift(tuple(stale), tuple(missing), tuple(extra))


def write(out: Path, files: dict[str, bytes]) -> Drift:
    """Make the output dir match: write changed/missing files, delete extra ones."""
    drift = diff(out, files)
    for rel in (*drift.stale, *drift.missing):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[rel])
    for rel in drift.extra:
        (out / rel).unlink()
    return drift
