"""End-to-end benchmark: one real AetherAgent against a real dev Hub.

Two modes (`--e2e-mode`):

- `subprocess` (default): the Hub (`HubServer`, in memory, `dev=True`) runs in its own
  process (`benchmarks.hub_worker`), the agent in this one — the deployment's shape, each
  side on its own core.
- `in-process`: Hub and agent share one process and one event loop (both compete for one
  core: a lower bound).

Either way every assignment and result goes over loopback gRPC through grpclib, our
codecs and the SDK's model conversion. Tasks are submitted through the Hub's typed API
(`TaskQueue.submit`) inside the Hub process, not with SubmitTask RPCs: the budget is about
dispatch and results, and a unary RPC per task (about 3,000/s with grpclib) would measure
the submitting client instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Protocol

from aether import AetherAgent, AgentConfig, TaskAssignment, TaskResult
from aether_hub.server import HubServer
from aether_hub.settings import HubConfig
from benchmarks.hubside import TASK_TYPE, rss_kib, run_tasks, timed_submissions
from benchmarks.timing import percentile

MODES = {
    "subprocess": "Hub (HubServer) in a subprocess, one AetherAgent in this process",
    "in-process": "HubServer and one AetherAgent in one process and event loop",
}
SUBMISSION = "pre-submitted through the Hub's typed API (TaskQueue.submit), not SubmitTask RPCs"
_STARTUP_SECONDS = 60.0


class BenchAgent(AetherAgent):
    """Answers every task at once; records when each assignment reached `handle_task`."""

    arrivals: dict[str, float]

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        self.arrivals[task.task_id] = time.perf_counter()
        return TaskResult(task_id=task.task_id, success=True, result=b"ok")


class _Hub(Protocol):
    address: str

    async def run(self, n: int) -> float: ...
    async def latency(self, n: int) -> dict[str, float]: ...
    async def rss_kib(self) -> int: ...
    async def close(self) -> None: ...


class _InProcessHub:
    def __init__(self, hub: HubServer) -> None:
        self._hub = hub
        self.address = hub.address

    async def run(self, n: int) -> float:
        return await run_tasks(self._hub.queue, n)

    async def latency(self, n: int) -> dict[str, float]:
        return await timed_submissions(self._hub.queue, n)

    async def rss_kib(self) -> int:
        return rss_kib()

    async def close(self) -> None:
        await self._hub.stop()


class _SubprocessHub:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self._proc = proc
        self.address = f"127.0.0.1:{port}"

    @classmethod
    async def start(cls) -> _SubprocessHub:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.hub_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), _STARTUP_SECONDS)
            if not line:
                raise RuntimeError("the Hub worker exited before listening (see its stderr)")
            return cls(proc, int(json.loads(line)["port"]))
        except BaseException:
            proc.kill()
            await proc.wait()
            raise

    async def _call(self, **command: object) -> dict[str, object]:
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write((json.dumps(command) + "\n").encode())
        await stdin.drain()
        line = await stdout.readline()
        if not line:
            raise RuntimeError(f"the Hub worker exited during {command} (see its stderr)")
        reply: dict[str, object] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the Hub worker refused {command}: {reply['error']}")
        return reply

    async def run(self, n: int) -> float:
        return float(str((await self._call(cmd="run", n=n))["seconds"]))

    async def latency(self, n: int) -> dict[str, float]:
        submitted = (await self._call(cmd="latency", n=n))["submitted"]
        assert isinstance(submitted, dict)
        return {str(k): float(v) for k, v in submitted.items()}

    async def rss_kib(self) -> int:
        return int(str((await self._call(cmd="rss"))["rss_kib"]))

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._call(cmd="quit"), 30)
            await asyncio.wait_for(self._proc.wait(), 30)
        except (RuntimeError, OSError, asyncio.TimeoutError):
            pass
        finally:
            if self._proc.returncode is None:
                self._proc.kill()
                await self._proc.wait()


@dataclass(frozen=True)
class E2EResult:
    """Throughput, dispatch latency and memory of one run."""

    mode: str
    mode_description: str
    submission: str
    tasks: int
    agent_concurrency: int
    seconds: float
    tasks_per_s: float
    latency_samples: int
    dispatch_p50_ms: float
    dispatch_p99_ms: float
    hub_rss_before_kib: int
    hub_rss_after_kib: int
    hub_rss_growth_kib_per_10k_tasks: float
    agent_rss_before_kib: int
    agent_rss_after_kib: int
    agent_rss_growth_kib_per_10k_tasks: float
    # Retention: the Hub's RSS once `retention_tasks` tasks finished (default retention:
    # the newest 100,000 finished tasks stay in memory), after as many more (every held
    # task replaced once: the one-time growth of the Hub's dicts under churn happens
    # here), and after `steady_tasks` more (the steady state).
    retention_tasks: int = 0
    hub_rss_at_retention_kib: int = 0
    hub_rss_after_turnover_kib: int = 0
    steady_tasks: int = 0
    hub_rss_after_steady_kib: int = 0

    @property
    def hub_rss_turnover_growth_kib_per_10k(self) -> float:
        """The Hub's RSS growth per 10k finished tasks while retention turns over once."""
        if self.retention_tasks <= 0:
            return 0.0
        grown = self.hub_rss_after_turnover_kib - self.hub_rss_at_retention_kib
        return grown * 10_000 / self.retention_tasks

    @property
    def hub_rss_steady_growth_kib_per_10k(self) -> float:
        """The Hub's RSS growth per 10k finished tasks once retention is full."""
        if self.steady_tasks <= 0:
            return 0.0
        grown = self.hub_rss_after_steady_kib - self.hub_rss_after_turnover_kib
        return grown * 10_000 / self.steady_tasks


async def _start_hub(mode: str) -> _Hub:
    if mode == "subprocess":
        return await _SubprocessHub.start()
    hub = HubServer(HubConfig(port=0, dev=True))
    await hub.start()
    return _InProcessHub(hub)


async def _latencies(hub: _Hub, agent: BenchAgent, samples: int) -> list[float]:
    submitted = await hub.latency(samples)
    out = sorted(agent.arrivals.pop(task_id) - start for task_id, start in submitted.items())
    agent.arrivals.clear()
    return out


#: Tasks per `run` command while filling retention (bounds the queue's pending peak).
_CHUNK = 10_000


async def _run_chunked(hub: _Hub, n: int) -> None:
    while n > 0:
        await hub.run(min(n, _CHUNK))
        n -= _CHUNK


async def run(
    mode: str,
    tasks: int,
    latency_samples: int,
    agent_concurrency: int,
    retention_tasks: int = 0,
    steady_tasks: int = 0,
) -> E2EResult:
    """Start the Hub and the agent, warm up, then measure; then, with `retention_tasks`,
    run tasks until that many finished, as many more, and `steady_tasks` more, reading
    the Hub's RSS after each."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, not {mode!r}")
    hub = await _start_hub(mode)
    try:
        agent = BenchAgent(
            AgentConfig(
                agent_id="bench",
                agent_name="Benchmark agent",
                hub_url=hub.address,
                capabilities={"task_types": TASK_TYPE},
                max_concurrent_tasks=agent_concurrency,
            )
        )
        agent.arrivals = {}
        await agent.start()
        try:
            await hub.run(min(tasks, 2000))  # warm-up
            await _latencies(hub, agent, min(latency_samples, 50))
            agent.arrivals.clear()
            hub_before, agent_before = await hub.rss_kib(), rss_kib()
            seconds = await hub.run(tasks)
            agent.arrivals.clear()
            hub_after, agent_after = await hub.rss_kib(), rss_kib()
            lat = await _latencies(hub, agent, latency_samples)
            done = min(tasks, 2000) + min(latency_samples, 50) + tasks + latency_samples
            at_retention = after_turnover = after_steady = 0
            if retention_tasks > 0:
                retention_tasks = max(retention_tasks, done)
                await _run_chunked(hub, retention_tasks - done)
                at_retention = await hub.rss_kib()
                await _run_chunked(hub, retention_tasks)
                after_turnover = await hub.rss_kib()
                await _run_chunked(hub, steady_tasks)
                after_steady = await hub.rss_kib()
            agent.arrivals.clear()
        finally:
            await agent.stop()
    finally:
        await hub.close()
    per_10k = 10_000 / tasks
    return E2EResult(
        mode=mode,
        mode_description=MODES[mode],
        submission=SUBMISSION,
        tasks=tasks,
        agent_concurrency=agent_concurrency,
        seconds=seconds,
        tasks_per_s=tasks / seconds,
        latency_samples=len(lat),
        dispatch_p50_ms=percentile(lat, 0.50) * 1000,
        dispatch_p99_ms=percentile(lat, 0.99) * 1000,
        hub_rss_before_kib=hub_before,
        hub_rss_after_kib=hub_after,
        hub_rss_growth_kib_per_10k_tasks=(hub_after - hub_before) * per_10k,
        agent_rss_before_kib=agent_before,
        agent_rss_after_kib=agent_after,
        agent_rss_growth_kib_per_10k_tasks=(agent_after - agent_before) * per_10k,
        retention_tasks=retention_tasks,
        hub_rss_at_retention_kib=at_retention,
        hub_rss_after_turnover_kib=after_turnover,
        steady_tasks=steady_tasks if retention_tasks > 0 else 0,
        hub_rss_after_steady_kib=after_steady,
    )


def measure(
    mode: str,
    tasks: int,
    latency_samples: int,
    agent_concurrency: int,
    retention_tasks: int = 0,
    steady_tasks: int = 0,
) -> E2EResult:
    """Run the end-to-end benchmark in a fresh event loop (SDK and Hub logs quietened)."""
    logging.getLogger("aether").setLevel(logging.WARNING)
    return asyncio.run(
        run(mode, tasks, latency_samples, agent_concurrency, retention_tasks, steady_tasks)
    )
