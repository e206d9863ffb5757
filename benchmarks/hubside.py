"""What the benchmark does at the Hub: submit through the typed API and wait for results.

Shared by the in-process mode and the Hub worker subprocess (`benchmarks.hub_worker`).
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import sys
import time

from aether._wire import pb
from aether_hub.tasks import TaskQueue, TaskSubmission

TASK_TYPE = "bench"
PAYLOAD = b"p" * 256
WAIT_SECONDS = 120.0  # a stuck run fails clearly instead of hanging
_SUBMISSION = TaskSubmission(description="bench", payload=PAYLOAD, task_type=TASK_TYPE)


def rss_kib() -> int:
    """This process's resident set size in KiB after a full collection.

    Read from /proc/self/statm; where that is missing, the peak RSS from getrusage.
    """
    gc.collect()
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak


async def _wait_all(queue: TaskQueue, task_ids: list[str]) -> None:
    for task_id in task_ids:
        rec = await queue.wait_finished(task_id)
        if rec.state != pb.TaskState.SUCCEEDED:
            raise RuntimeError(f"task {task_id} ended as {rec.state!r}: {rec.error_message}")


async def run_tasks(queue: TaskQueue, n: int) -> float:
    """Seconds from submitting the first of `n` tasks until all are finished at the Hub."""
    start = time.perf_counter()
    ids = [queue.submit(_SUBMISSION).task_id for _ in range(n)]
    await asyncio.wait_for(_wait_all(queue, ids), WAIT_SECONDS)
    return time.perf_counter() - start


async def timed_submissions(queue: TaskQueue, n: int) -> dict[str, float]:
    """Submit `n` tasks one at a time, each after the last finished: id -> submit time.

    Times are `time.perf_counter()` readings (CLOCK_MONOTONIC on Linux, so comparable
    with the agent's readings in another process on the same machine).
    """
    out: dict[str, float] = {}
    for _ in range(n):
        start = time.perf_counter()
        task_id = queue.submit(_SUBMISSION).task_id
        out[task_id] = start
        await asyncio.wait_for(_wait_all(queue, [task_id]), WAIT_SECONDS)
    return out
