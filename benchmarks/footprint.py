"""Footprint of the SDK and the Hub: import time, start with a backlog, many agents.

- `import aether_sdk` in a fresh interpreter (`python -c`), the median of several runs,
  timed inside the interpreter around the import alone;
- the start of a Hub process (`python -m aether_hub --dev --db FILE`) on a database
  holding N pending tasks (made beforehand through `TaskQueue` and `TaskStore`): from
  spawning the process to its "listening" line, and its RSS then, next to the same for
  an empty database (the baseline: what a start costs without a backlog);
- the RSS of a Hub process with many connected agents (several agent processes of
  `benchmarks.api_agent`, each running many `AetherAgent`s), next to its RSS before they
  connected.

RSS of another process is read from /proc/PID/statm (Linux).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.api_e2e import serve_process

__all__ = ("Footprint", "measure")

_IMPORT_SNIPPET = (
    "import time; t = time.perf_counter(); import aether_sdk; print(time.perf_counter() - t)"
)
_STARTUP = 60.0


@dataclass(frozen=True)
class Footprint:
    """The footprint figures of one run."""

    import_runs: int
    import_aether_sdk_ms: float  # median
    backlog_tasks: int
    start_with_backlog_s: float
    start_empty_s: float
    hub_rss_with_backlog_kib: int
    hub_rss_empty_kib: int
    agents: int
    agent_processes: int
    hub_rss_before_agents_kib: int
    hub_rss_with_agents_kib: int

    @property
    def hub_kib_per_agent(self) -> float:
        """RSS the Hub grew by per connected agent."""
        grown = self.hub_rss_with_agents_kib - self.hub_rss_before_agents_kib
        return grown / self.agents if self.agents else 0.0


def rss_of(pid: int) -> int:
    """The resident set size of process `pid`, in KiB."""
    with open(f"/proc/{pid}/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def import_ms(runs: int) -> float:
    """Median milliseconds of `import aether_sdk` in a fresh interpreter."""
    times = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", _IMPORT_SNIPPET],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        times.append(float(done.stdout.strip().splitlines()[-1]) * 1000)
    return statistics.median(times)


def make_backlog(path: Path, tasks: int) -> None:
    """A Hub database holding `tasks` pending tasks of mixed priorities and types."""
    from aether_hub.db import Database
    from aether_hub.tasks import TaskQueue, TaskSubmission
    from aether_hub.taskstore import TaskStore

    db = Database(path)
    try:
        store = TaskStore(db)
        queue = TaskQueue(store=store)
        for i in range(tasks):
            queue.submit(
                TaskSubmission(
                    description=f"backlog {i}",
                    payload=b"p" * 256,
                    task_type=("bench", "other")[i % 2],
                    priority=i % 3,
                )
            )
            if i % 10_000 == 9_999:
                store.flush()
        store.flush()
    finally:
        db.close()


async def _start(db: Path) -> tuple[float, int]:
    """Seconds from spawn to listening, and the Hub's RSS then (KiB)."""
    argv = [sys.executable, "-m", "aether_hub", "--dev", "--port", "0", "--db", str(db)]
    start = time.perf_counter()
    async with serve_process(argv) as (_, pid):
        seconds = time.perf_counter() - start
        await asyncio.sleep(0.2)  # let the first flush and sweep run
        return seconds, rss_of(pid)


async def _agents_rss(agents: int, processes: int) -> tuple[int, int]:
    argv = [sys.executable, "-m", "aether_hub", "--dev", "--port", "0"]
    argv += ["--max-connections", str(agents + 100)]
    async with serve_process(argv) as (url, pid):
        await asyncio.sleep(0.2)
        before = rss_of(pid)
        per = [agents // processes + (1 if i < agents % processes else 0) for i in range(processes)]
        procs = []
        try:
            for k, n in enumerate(per):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "benchmarks.api_agent", "--hub-url", url,
                    "--agents", str(n), "--concurrency", "1", "--id-prefix", f"p{k}-",
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
                procs.append(proc)
            for proc in procs:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 300)
                if line.strip() != b"ready":
                    raise RuntimeError(f"the agents did not start: {line!r}")
            await asyncio.sleep(1.0)
            return before, rss_of(pid)
        finally:
            for proc in procs:
                if proc.stdin is not None:
                    proc.stdin.close()
            for proc in procs:
                try:
                    await asyncio.wait_for(proc.wait(), 60)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()


def measure(*, import_runs: int, backlog: int, agents: int, agent_processes: int) -> Footprint:
    """Every footprint figure."""
    imp = import_ms(import_runs)
    with tempfile.TemporaryDirectory(prefix="aether-bench-") as tmp:
        full, empty = Path(tmp) / "backlog.sqlite3", Path(tmp) / "empty.sqlite3"
        make_backlog(full, backlog)
        make_backlog(empty, 0)
        start_empty, rss_empty = asyncio.run(_start(empty))
        start_full, rss_full = asyncio.run(_start(full))
    before, with_agents = asyncio.run(_agents_rss(agents, agent_processes))
    return Footprint(
        import_runs=import_runs,
        import_aether_sdk_ms=imp,
        backlog_tasks=backlog,
        start_with_backlog_s=start_full,
        start_empty_s=start_empty,
        hub_rss_with_backlog_kib=rss_full,
        hub_rss_empty_kib=rss_empty,
        agents=agents,
        agent_processes=agent_processes,
        hub_rss_before_agents_kib=before,
        hub_rss_with_agents_kib=with_agents,
    )
