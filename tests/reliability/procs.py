"""Helpers to run a fake Hub or an agent as a separate process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `python -m module args...` from the repository root."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def records(path: Path) -> list[dict[str, object]]:
    """The JSON lines a fake Hub process wrote so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_record(path: Path, kind: str, count: int = 1, timeout: float = 30.0) -> None:
    """Wait until the file holds `count` records of `kind`."""

    async def poll() -> None:
        while sum(1 for r in records(path) if r["kind"] == kind) < count:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


def stop(proc: subprocess.Popen[bytes]) -> str:
    """Kill the process if still running; return its output."""
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=30)
    return out.decode(errors="replace")
