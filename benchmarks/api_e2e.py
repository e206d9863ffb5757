"""End to end through the public API, each part in its own process: what a user gets.

- the Hub: `python -m aether_hub --dev` (in memory, or with `--db FILE`),
- the agents: `python -m benchmarks.api_agent` (real `AetherAgent`s),
- the client: this process, submitting with `aether.TaskClient.submit` (one SubmitTask RPC
  per task, up to `IN_FLIGHT` at once) and following the queue with `queue_stats()`.

Throughput is tasks / seconds from the first submit until the Hub reports every task final
(all stored, with `--db`: an OK means committed). Latency is measured one task at a time
at low load: submit → `wait()` returns the final task (result stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aether import TaskClient, TaskState
from benchmarks.api_agent import TASK_TYPE
from benchmarks.timing import percentile

#: Submissions in flight at once (the client's concurrency).
IN_FLIGHT = 64
_LISTENING = re.compile(rb"Aether Hub listening on 127\.0\.0\.1:(\d+)")
_STARTUP = 60.0


@dataclass(frozen=True)
class ApiRun:
    """One measured configuration."""

    store: str  # "memory" or "sqlite (--db)"
    agents: int
    tasks: int
    seconds: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_samples: int

    @property
    def tasks_per_s(self) -> float:
        """Throughput of the run."""
        return self.tasks / self.seconds if self.seconds > 0 else 0.0


@contextlib.asynccontextmanager
async def _hub(db: Path | None) -> AsyncIterator[str]:
    argv = [sys.executable, "-m", "aether_hub", "--dev", "--port", "0", "--log-level", "INFO"]
    if db is not None:
        argv += ["--db", str(db)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    drain: asyncio.Task[None] | None = None
    try:
        port = await asyncio.wait_for(_port(proc.stderr), _STARTUP)

        async def swallow(stream: asyncio.StreamReader) -> None:
            while await stream.readline():
                pass

        drain = asyncio.create_task(swallow(proc.stderr))
        yield f"127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            drain.cancel()


async def _port(stderr: asyncio.StreamReader) -> int:
    while True:
        line = await stderr.readline()
        if not line:
            raise RuntimeError("the Hub exited before listening")
        found = _LISTENING.search(line)
        if found:
            return int(found.group(1))


@contextlib.asynccontextmanager
async def _agents(url: str, count: int) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.api_agent", "--hub-url", url, "--agents", str(count),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), _STARTUP)
        if line.strip() != b"ready":
            raise RuntimeError(f"the agents did not start: {line!r}")
        yield
    finally:
        if proc.returncode is None:
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()


async def _throughput(client: TaskClient, tasks: int) -> float:
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with slots:
            await client.submit(f"bench {i}", task_type=TASK_TYPE)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(tasks)))
    while True:
        stats = await client.queue_stats()
        if stats.pending == 0 and stats.running == 0:
            return time.perf_counter() - start
        await asyncio.sleep(0.01)


async def _latency(client: TaskClient, samples: int) -> list[float]:
    seconds = []
    for i in range(samples):
        start = time.perf_counter()
        task = await client.submit(f"latency {i}", task_type=TASK_TYPE)
        done = await task.wait(timeout=30)
        if done.state is not TaskState.SUCCEEDED:
            raise RuntimeError(f"latency task ended {done.state.name}")
        seconds.append(time.perf_counter() - start)
    return seconds


async def run_one(*, db: bool, agents: int, tasks: int, latency_samples: int) -> ApiRun:
    """Measure one configuration (a fresh Hub and agents)."""
    with tempfile.TemporaryDirectory(prefix="aether-bench-") as tmp:
        path = Path(tmp) / "hub.sqlite3" if db else None
        async with _hub(path) as url, _agents(url, agents), TaskClient(url) as client:
            await _throughput(client, min(200, tasks))  # warm up both sides
            seconds = await _throughput(client, tasks)
            latencies = await _latency(client, latency_samples)
    return ApiRun(
        store="sqlite (--db)" if db else "memory",
        agents=agents,
        tasks=tasks,
        seconds=seconds,
        latency_p50_ms=percentile(sorted(latencies), 0.50) * 1000,
        latency_p99_ms=percentile(sorted(latencies), 0.99) * 1000,
        latency_samples=latency_samples,
    )


def measure(tasks: int, latency_samples: int) -> list[ApiRun]:
    """In memory and with `--db`, one agent, in one run (same machine state)."""

    async def both() -> list[ApiRun]:
        return [
            await run_one(db=False, agents=1, tasks=tasks, latency_samples=latency_samples),
            await run_one(db=True, agents=1, tasks=tasks, latency_samples=latency_samples),
        ]

    return asyncio.run(both())
