"""End to end through the public API, each part in its own process: what a user gets.

- the Hub: `python -m aether_hub --dev` (in memory, or with `--db FILE`),
- the agents: `python -m benchmarks.api_agent` (real `AetherAgent`s, 1 or 4 in one
  process, 64 task slots each),
- the client: this process, submitting with `aether.TaskClient.submit_many` (SubmitTasks
  calls of up to 1,000 tasks: what a program with many tasks uses), or — the rows labelled
  "submit per task" — with `TaskClient.submit` (one SubmitTask RPC per task, up to
  `IN_FLIGHT` at once), and following the queue with `queue_stats()`.

The same runs against the baseline (benchmarks/baseline.py: a bare grpclib broker, agents
and client with the same message classes and RPC shape, none of the Hub's logic) give
the ours / baseline ratios.

Throughput is tasks / seconds from the first submit until the Hub reports every task final
(all stored, with `--db`: an OK means committed). Latency is measured one task at a time
at low load: submit → the agent's handler starts (the agent reports its
`time.perf_counter()` — CLOCK_MONOTONIC, one clock for every process of the machine — in
the result's metrics) and submit → `wait()` returns the final task (result stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aether import SubmitTaskRequest, SubmittedTask, TaskClient, TaskState
from benchmarks.api_agent import TASK_TYPE
from benchmarks.baseline import BaselineClient
from benchmarks.natsproc import nats_jetstream
from benchmarks.timing import percentile

#: Submissions in flight at once (the client's concurrency).
IN_FLIGHT = 64
_LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
# Hub log lines worth reporting: WARNING, ERROR, CRITICAL records and tracebacks.
_PROBLEM = re.compile(rb" (WARNING|ERROR|CRITICAL) |^Traceback|^\S+Error\b")
_STARTUP = 60.0


#: The payloads of the runs: none ("tiny") and 64 KiB.
PAYLOADS = {"tiny": b"", "64 KiB": b"p" * (64 * 1024)}
#: 64 KiB tasks per run, as a fraction of the tiny ones (keeps `make bench` short).
LARGE_DIVISOR = 5
OURS = "ours"
BASELINE = "baseline (bare grpclib)"
#: The store of the `--store jetstream` rows: "jetstream R1" (bucket replicas), ...
JETSTREAM = "jetstream"
#: The `--store jetstream` rows: (NATS nodes = copies of the buckets, Hub replicas).
JETSTREAM_SETUPS = ((1, 1), (3, 1), (3, 2))
#: Their tasks and latency samples, as a fraction of the other rows' (every change of a
#: task is a JetStream write: several times slower; keeps `make bench` short).
JETSTREAM_DIVISOR = 2
#: Seconds a JetStream run may go without a task finishing before it counts as stalled.
STALL_SECONDS = 30.0


@dataclass(frozen=True)
class ApiRun:
    """One measured configuration."""

    store: str  # "memory", "sqlite (--db)", or "-" for the baseline
    agents: int
    tasks: int
    seconds: float
    latency_p50_ms: float | None  # submit -> result stored (the final task read back)
    latency_p99_ms: float | None
    latency_samples: int
    system: str = OURS
    payload: str = "tiny"
    payload_bytes: int = 0
    assigned_p50_ms: float | None = None  # submit -> the agent's handler starts
    assigned_p99_ms: float | None = None
    batched: bool = False  # ours: submitted with `submit_many` (else one `submit` per task)
    hubs: int = 1  # Hub processes (replicas sharing the tasks, with --store jetstream)
    error: str = ""  # why the run did not finish (then its figures are zero or None)

    @property
    def tasks_per_s(self) -> float:
        """Throughput of the run."""
        return self.tasks / self.seconds if self.seconds > 0 else 0.0

    @property
    def jetstream(self) -> bool:
        """Whether the Hub(s) kept the tasks in JetStream (`--store jetstream`)."""
        return self.store.startswith(JETSTREAM)

    @property
    def where(self) -> str:
        """The store, and with JetStream the Hubs: `jetstream R3, 2 hubs`."""
        if not self.jetstream:
            return self.store
        return f"{self.store}, {self.hubs} hub{'' if self.hubs == 1 else 's'}"

    @property
    def label(self) -> str:
        """`ours, memory, 1 agent, tiny` and the like."""
        where = "" if self.system != OURS else f"{self.where}, "
        plural = "" if self.agents == 1 else "s"
        how = "submit_many" if self.batched else "submit per task"
        return f"{self.system}, {where}{self.agents} agent{plural}, {self.payload}, {how}"


@dataclass(frozen=True)
class _Latencies:
    stored: list[float]
    assigned: list[float]


@contextlib.asynccontextmanager
async def _hub(db: Path | None, python: list[str] | None = None) -> AsyncIterator[str]:
    argv = [*(python or [sys.executable, "-m"]), "aether_hub", "--dev", "--port", "0"]
    argv += ["--log-level", "INFO"]
    if db is not None:
        argv += ["--db", str(db)]
    async with serve_process(argv) as (url, _):
        yield url


@contextlib.asynccontextmanager
async def serve_process(
    argv: list[str], log: list[bytes] | None = None
) -> AsyncIterator[tuple[str, int]]:
    """Run a server process until the block ends; its `127.0.0.1:PORT` (read from the
    `... listening on 127.0.0.1:PORT` line of its stderr) and its pid. `log` collects
    the lines of its stderr after that one that are warnings, errors or tracebacks."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    drain: asyncio.Task[None] | None = None
    try:
        port = await asyncio.wait_for(_port(proc.stderr), _STARTUP)

        async def swallow(stream: asyncio.StreamReader) -> None:
            while line := await stream.readline():
                if log is not None and _PROBLEM.search(line):
                    log.append(line.rstrip())

        drain = asyncio.create_task(swallow(proc.stderr))
        yield f"127.0.0.1:{port}", proc.pid
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
async def _agents(argv: list[str]) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
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


def _our_agents(url: str, count: int, python: list[str] | None = None) -> list[str]:
    argv = [*(python or [sys.executable, "-m"]), "benchmarks.api_agent"]
    return [*argv, "--hub-url", url, "--agents", str(count)]


def _baseline_agents(url: str, count: int) -> list[str]:
    return [sys.executable, "-m", "benchmarks.baseline", "agents", "--url", url,
            "--agents", str(count)]  # fmt: skip


async def _throughput(
    submit: Callable[[int], Awaitable[object]], idle: Callable[[], Awaitable[bool]], tasks: int
) -> float:
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with slots:
            await submit(i)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(tasks)))
    while not await idle():
        await asyncio.sleep(0.01)
    return time.perf_counter() - start


async def _our_latency(client: TaskClient, samples: int, payload: bytes) -> _Latencies:
    out = _Latencies([], [])
    for i in range(samples):
        start = time.perf_counter()
        task = await client.submit(f"latency {i}", task_type=TASK_TYPE, payload=payload)
        done = await task.wait(timeout=30)
        end = time.perf_counter()
        if done.state is not TaskState.SUCCEEDED:
            raise RuntimeError(f"latency task ended {done.state.name}")
        out.stored.append(end - start)
        out.assigned.append(float(done.metrics["arrived"]) - start)
    return out


async def _baseline_latency(client: BaselineClient, samples: int, payload: bytes) -> _Latencies:
    out = _Latencies([], [])
    for i in range(samples):
        start = time.perf_counter()
        task_id = await client.submit(f"latency {i}", task_type=TASK_TYPE, payload=payload)
        done = await client.wait(task_id)
        end = time.perf_counter()
        out.stored.append(end - start)
        out.assigned.append(float(done.metrics["arrived"]) - start)
    return out


def _ms(values: list[float], fraction: float) -> float | None:
    return percentile(sorted(values), fraction) * 1000 if values else None


def _result(
    *, system: str, store: str, agents: int, payload: str, tasks: int, seconds: float,
    lat: _Latencies, batched: bool = False,
) -> ApiRun:  # fmt: skip
    return ApiRun(
        store=store,
        agents=agents,
        tasks=tasks,
        seconds=seconds,
        latency_p50_ms=_ms(lat.stored, 0.50),
        latency_p99_ms=_ms(lat.stored, 0.99),
        latency_samples=len(lat.stored),
        system=system,
        payload=payload,
        payload_bytes=len(PAYLOADS[payload]),
        assigned_p50_ms=_ms(lat.assigned, 0.50),
        assigned_p99_ms=_ms(lat.assigned, 0.99),
        batched=batched,
    )


async def run_one(
    *,
    db: bool,
    agents: int,
    tasks: int,
    latency_samples: int,
    payload: str = "tiny",
    python: list[str] | None = None,
    batched: bool = True,
) -> ApiRun:
    """Measure one configuration of ours (a fresh Hub and agents). `python` runs a module
    in the Hub's and the agents' processes (default `python -m`)."""
    data = PAYLOADS[payload]
    with tempfile.TemporaryDirectory(prefix="aether-bench-") as tmp:
        path = Path(tmp) / "hub.sqlite3" if db else None
        async with (
            _hub(path, python) as url,
            _agents(_our_agents(url, agents, python)),
            TaskClient(url) as client,
        ):

            async def submit(i: int) -> object:
                return await client.submit(f"bench {i}", task_type=TASK_TYPE, payload=data)

            async def idle() -> bool:
                stats = await client.queue_stats()
                return stats.pending == 0 and stats.running == 0

            async def submit_all(count: int) -> float:
                if not batched:
                    return await _throughput(submit, idle, count)
                start = time.perf_counter()
                requests = (
                    SubmitTaskRequest(description=f"bench {i}", task_type=TASK_TYPE, payload=data)
                    for i in range(count)
                )
                outcomes = await client.submit_many(requests)
                refused = [o for o in outcomes if not isinstance(o, SubmittedTask)]
                if refused:
                    raise RuntimeError(f"{len(refused)} tasks refused: {refused[0]}")
                while not await idle():
                    await asyncio.sleep(0.01)
                return time.perf_counter() - start

            await submit_all(min(200, tasks))  # warm up every side
            seconds = await submit_all(tasks)
            lat = await _our_latency(client, latency_samples, data)
    store = "sqlite (--db)" if db else "memory"
    return _result(
        system=OURS, store=store, agents=agents, payload=payload, tasks=tasks,
        seconds=seconds, lat=lat, batched=batched,
    )  # fmt: skip


class _Stalled(Exception):
    """A JetStream run stopped making progress (what the Hubs held then, in the message)."""


async def _jetstream_idle(clients: list[TaskClient], deadline: float) -> None:
    """Return once every Hub reports no pending and no running task; `_Stalled` when none
    finished for `STALL_SECONDS` (or the run went past `deadline`)."""
    last: tuple[int, ...] = ()
    moved = time.perf_counter()
    while True:
        stats = await asyncio.gather(*(c.queue_stats() for c in clients))
        if all(s.pending == 0 and s.running == 0 for s in stats):
            return
        now = time.perf_counter()
        seen = tuple(n for s in stats for n in (s.pending, s.running))
        if seen != last:
            last, moved = seen, now
        if now - moved > STALL_SECONDS or now > deadline:
            raise _Stalled(await _unfinished(clients))
        await asyncio.sleep(0.01)


async def _unfinished(clients: list[TaskClient]) -> str:
    """What every Hub reports as pending and running, and the unfinished tasks the first
    one lists, counted by state and agent: for the report of a stall."""
    parts = []
    for i, client in enumerate(clients):
        stats = await client.queue_stats()
        parts.append(f"hub {i}: pending {stats.pending}, running {stats.running}")
    held: Counter[str] = Counter()
    for state in (TaskState.PENDING, TaskState.LEASED, TaskState.RUNNING):
        async for task in clients[0].list(state=state, page_size=1000, limit=5000):
            held[f"{state.name} {task.assigned_agent_id or '-'} attempt {task.attempt}"] += 1
    listed = ", ".join(f"{n} {what}" for what, n in held.most_common()) or "none"
    return f"{'; '.join(parts)}; unfinished tasks listed by hub 0: {listed}"


async def run_jetstream(
    *,
    nodes: int,
    hubs: int,
    tasks: int,
    latency_samples: int,
    payload: str = "tiny",
    hub_log: list[bytes] | None = None,
) -> ApiRun:
    """Measure ours with `--store jetstream`: `nodes` nats-server processes (a cluster
    with routes when more than one) keeping `nodes` copies of the task buckets, `hubs`
    Hub processes sharing them, one agent process of one agent per Hub (its `hub_url`
    lists every Hub, its own first), and this client submitting with `submit_many` to
    every Hub, a share each (throughput), or to each in turn (latency). `hub_log`
    collects the Hubs' warnings and errors. A run that stalls is returned with `error`
    set rather than raised, so that the other rows are still reported."""
    data = PAYLOADS[payload]
    store = f"{JETSTREAM} R{nodes}"
    seconds = 0.0
    lat = _Latencies([], [])
    error = ""
    with tempfile.TemporaryDirectory(prefix="aether-bench-nats-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            urls = await stack.enter_async_context(nats_jetstream(Path(tmp), nodes))
            argv = [sys.executable, "-m", "aether_hub", "--dev", "--port", "0",
                    "--log-level", "INFO", "--store", "jetstream", "--nats-url", urls,
                    "--store-replicas", str(nodes)]  # fmt: skip
            addresses = []
            for _ in range(hubs):
                address, _pid = await stack.enter_async_context(serve_process(argv, hub_log))
                addresses.append(address)
            for i in range(hubs):
                listed = ",".join(addresses[i:] + addresses[:i])
                agents = [*_our_agents(listed, 1), "--id-prefix", f"bench-hub{i}-"]
                await stack.enter_async_context(_agents(agents))
            clients = [await stack.enter_async_context(TaskClient(a)) for a in addresses]

            async def submit_all(count: int) -> float:
                start = time.perf_counter()

                async def share(k: int) -> None:
                    requests = (
                        SubmitTaskRequest(
                            description=f"bench {i}", task_type=TASK_TYPE, payload=data
                        )
                        for i in range(k, count, hubs)
                    )
                    outcomes = await clients[k].submit_many(requests)
                    refused = [o for o in outcomes if not isinstance(o, SubmittedTask)]
                    if refused:
                        raise RuntimeError(f"{len(refused)} tasks refused: {refused[0]}")

                await asyncio.gather(*(share(k) for k in range(hubs)))
                await _jetstream_idle(clients, start + 10 * STALL_SECONDS)
                return time.perf_counter() - start

            async def latency() -> _Latencies:
                out = _Latencies([], [])
                for i in range(latency_samples):
                    client = clients[i % hubs]
                    start = time.perf_counter()
                    task = await client.submit(f"latency {i}", task_type=TASK_TYPE, payload=data)
                    try:
                        done = await task.wait(timeout=STALL_SECONDS)
                    except TimeoutError as exc:  # TaskWaitTimeoutError
                        raise _Stalled(f"latency: {exc}; {await _unfinished(clients)}") from None
                    end = time.perf_counter()
                    if done.state is not TaskState.SUCCEEDED:
                        raise RuntimeError(f"latency task ended {done.state.name}")
                    out.stored.append(end - start)
                    out.assigned.append(float(done.metrics["arrived"]) - start)
                return out

            try:
                await submit_all(min(200, tasks))  # warm up every side
                seconds = await submit_all(tasks)
                lat = await latency()
            except _Stalled as exc:
                error = f"stalled: {exc}"
    run = _result(
        system=OURS, store=store, agents=hubs, payload=payload, tasks=tasks,
        seconds=seconds, lat=lat, batched=True,
    )  # fmt: skip
    return dataclasses.replace(run, hubs=hubs, error=error)


async def run_baseline(
    *, agents: int, tasks: int, latency_samples: int, payload: str = "tiny"
) -> ApiRun:
    """Measure one configuration of the bare grpclib baseline (benchmarks/baseline.py)."""
    data = PAYLOADS[payload]
    broker = [sys.executable, "-m", "benchmarks.baseline", "broker"]
    async with (
        serve_process(broker) as (url, _),
        _agents(_baseline_agents(url, agents)),
        BaselineClient(url) as client,
    ):

        async def submit(i: int) -> object:
            return await client.submit(f"bench {i}", task_type=TASK_TYPE, payload=data)

        await _throughput(submit, client.idle, min(200, tasks))
        seconds = await _throughput(submit, client.idle, tasks)
        lat = await _baseline_latency(client, latency_samples, data)
    return _result(
        system=BASELINE, store="-", agents=agents, payload=payload, tasks=tasks,
        seconds=seconds, lat=lat,
    )  # fmt: skip


def measure(tasks: int, latency_samples: int) -> list[ApiRun]:
    """Ours (in memory and with `--db`, with `submit_many`) and the baseline, 1 and 4
    agents, tiny and 64 KiB payloads, in one run (same machine state), and ours with one
    `submit` per task (in memory, 1 agent, tiny: the baseline's shape). Latency (one task
    at a time) is measured with tiny payloads and 1 agent; 64 KiB runs have
    `tasks // LARGE_DIVISOR` tasks. Then ours with `--store jetstream`
    (`JETSTREAM_SETUPS`: R1 and R3, one Hub and two; one agent per Hub, tiny,
    submit_many) with `tasks // JETSTREAM_DIVISOR` tasks and latency samples."""

    async def jetstream() -> list[ApiRun]:
        runs = []
        n = max(1, tasks // JETSTREAM_DIVISOR)
        samples = max(1, latency_samples // JETSTREAM_DIVISOR)
        for nodes, hubs in JETSTREAM_SETUPS:
            log: list[bytes] = []
            run = await run_jetstream(nodes=nodes, hubs=hubs, tasks=n, latency_samples=samples,
                                      hub_log=log)  # fmt: skip
            if run.error:
                print(f"{run.label}: {run.error}", file=sys.stderr, flush=True)
            for line in log[:20]:
                print(f"{run.where}, Hub log: {line.decode(errors='replace')}", file=sys.stderr)
            runs.append(run)
        return runs

    async def every() -> list[ApiRun]:
        runs = [await run_one(db=False, agents=1, tasks=tasks, latency_samples=0, batched=False)]
        for payload in PAYLOADS:
            n = tasks if payload == "tiny" else max(1, tasks // LARGE_DIVISOR)
            for agents in (1, 4):
                samples = latency_samples if payload == "tiny" and agents == 1 else 0
                for db in (False, True):
                    run = await run_one(
                        db=db, agents=agents, tasks=n, latency_samples=samples, payload=payload
                    )
                    runs.append(run)
                runs.append(
                    await run_baseline(
                        agents=agents, tasks=n, latency_samples=samples, payload=payload
                    )
                )
        return runs + await jetstream()

    return asyncio.run(every())
