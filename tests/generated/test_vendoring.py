"""The generated package can be vendored: generated under another name, used from anywhere.

`python -m codegen --package vendored_x --out <tmp>` must give a package that
imports nothing of ours (`aether`, `aether_api`), refers to itself only by
relative imports, depends on betterproto2, grpclib and pydantic alone, and works
in a process that cannot import our packages at all.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.generated import genpkgs

VENDORED = "vendored_x"
_OURS = frozenset({"aether", "aether_api", "aether_sdk", "codegen"})
# Third-party top-level modules the generated code may import.
_ALLOWED_THIRD_PARTY = frozenset(
    {"betterproto2", "grpclib", "pydantic", "typing_extensions", "multidict"}
)


@functools.cache
def _vendored() -> Path:
    return genpkgs.run_codegen(package=VENDORED, out=genpkgs.scratch_dir("vendored-"))


@pytest.fixture(scope="module")
def vendored() -> Path:
    """The folder of the freshly generated `vendored_x` package."""
    return _vendored()


def _sources(package_dir: Path) -> list[Path]:
    files = sorted(package_dir.rglob("*.py"))
    assert files, f"no Python files under {package_dir}"
    return files


def test_same_modules_as_the_committed_package(vendored: Path) -> None:
    committed = genpkgs.REPO / "generated" / "aether_api"
    names = {p.relative_to(vendored).as_posix() for p in vendored.rglob("*") if p.is_file()}
    expected = {
        p.relative_to(committed).as_posix()
        for p in committed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert names == expected
    assert (vendored / "py.typed").exists()


def test_no_trace_of_our_package_names(vendored: Path) -> None:
    for path in _sources(vendored):
        text = path.read_text(encoding="utf-8")
        assert "aether_api" not in text, f"{path.relative_to(vendored)} mentions aether_api"


def test_imports_are_relative_or_allowed(vendored: Path) -> None:
    stdlib = sys.stdlib_module_names
    problems: list[str] = []
    for path in _sources(vendored):
        where = path.relative_to(vendored).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=where)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                tops = [(node.module or "").split(".")[0]]
            else:
                continue
            for top in tops:
                if top == VENDORED:
                    problems.append(f"{where}:{node.lineno}: absolute import of its own package")
                elif top in _OURS:
                    problems.append(f"{where}:{node.lineno}: imports {top}")
                elif top not in stdlib and top not in _ALLOWED_THIRD_PARTY and top != "__future__":
                    problems.append(f"{where}:{node.lineno}: imports third-party {top}")
    assert not problems, "\n".join(problems)


_SCRIPT = """
import importlib, json, pkgutil, sys

# Make our own packages unimportable, whatever the interpreter's site setup adds.
for name in ("aether", "aether_api", "aether_sdk", "codegen"):
    sys.modules[name] = None
# The editable install puts the repository and its generated/ folder on the path.
ours = {sys.argv[1], sys.argv[1] + "/generated"}
sys.path[:] = [p for p in sys.path if p.rstrip("/") not in ours]

import vendored_x
modules = sorted(m.name for m in pkgutil.walk_packages(vendored_x.__path__, "vendored_x."))
for name in modules:
    importlib.import_module(name)

from vendored_x.v1 import messages, models

wire = messages.TaskResult(task_id="t", success=True, result=b"\\x00x", metrics={"a": "b"})
decoded = messages.TaskResult.parse(bytes(wire))
model = models.TaskResult.from_wire(decoded)
validated = models.TaskResult.model_validate(model.model_dump())
event = messages.TaskStreamEvent(assignment=messages.TaskAssignment(task_id="t", attempt=2))

# A real call through the vendored server base and stub, over loopback.
import asyncio
from grpclib.client import Channel
from grpclib.server import Server
from vendored_x.grpc.health.v1 import client as health_client
from vendored_x.grpc.health.v1 import messages as health
from vendored_x.grpc.health.v1 import server as health_server

class Health(health_server.HealthBase):
    async def check(self, request, context):
        return health.HealthCheckResponse(status=health.HealthCheckResponseServingStatus.SERVING)

    async def watch(self, request, context):
        yield health.HealthCheckResponse(status=health.HealthCheckResponseServingStatus.SERVING)

async def call():
    server = Server([Health()])
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]
    channel = Channel("127.0.0.1", port)
    try:
        reply = await health_client.HealthStub(channel).check(
            health.HealthCheckRequest(service=""), timeout=30
        )
        return reply.status.name
    finally:
        channel.close()
        server.close()
        await server.wait_closed()

status = asyncio.run(call())
print(json.dumps({
    "health": status,
    "modules": modules,
    "wire_equal": decoded == wire,
    "model_task_id": model.task_id,
    "model_back_equal": validated.to_wire() == wire,
    "event_attempt": messages.TaskStreamEvent.parse(bytes(event)).assignment.attempt,
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("aether", "aether_api")
                     and sys.modules[m] is not None),
}))
"""


def test_vendored_package_works_alone(vendored: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(vendored.parent)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(genpkgs.REPO)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["wire_equal"] is True
    assert report["model_task_id"] == "t"
    assert report["model_back_equal"] is True
    assert report["event_attempt"] == 2
    assert report["loaded"] == []
    assert report["health"] == "SERVING"
    assert f"{VENDORED}.v1.client" in report["modules"]
    assert f"{VENDORED}.v1.server" in report["modules"]
    assert f"{VENDORED}.grpc.health.v1.server" in report["modules"]
