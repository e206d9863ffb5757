"""The ledger of a reliability scenario: what the Hub acknowledged, and what became of it.

Every task id whose SubmitTask was answered OK is recorded (`Ledger.ok`); every refusal is
counted by kind (`Ledger.refused`). `Ledger.observe` reads every task from the Hub and
remembers the first final state seen of each; `Ledger.settle` waits until every
acknowledged task is final and returns a `LedgerReport`:

- lost: acknowledged, but the Hub does not know the task (must be 0),
- not_final: acknowledged and known, but not final by the deadline (must be 0),
- changed: seen final once, later final differently (the final state is set once: 0),
- duplicates: executions beyond the first of a task, from the agents' execution log (what
  at-least-once delivery allows after a crash or a partition; counted and reported).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aether import (
    TERMINAL_TASK_STATES,
    AetherConnectionError,
    AetherError,
    HubError,
    Task,
    TaskClient,
    TaskNotFoundError,
    TaskState,
)

__all__ = ("Ledger", "LedgerReport", "Submitter", "executions", "hold_on", "refusal_kind")

#: A final state as compared across reads: state, result, error, agent.
Final = tuple[TaskState, bytes, str, str]


def refusal_kind(exc: AetherError) -> str:
    """A short name for why a submission was not acknowledged."""
    if isinstance(exc, AetherConnectionError):
        if exc.reason == "unavailable":
            return "UNAVAILABLE"
        return f"connection:{exc.reason or 'error'}"
    if isinstance(exc, HubError):
        return exc.status.name if exc.status is not None else "hub-error"
    return type(exc).__name__


def _final(task: Task) -> Final:
    return (task.state, task.result, task.error_message, task.assigned_agent_id)


def executions(path: Path) -> Counter[str]:
    """How many times each task was started, from a fleet's `--exec-log`."""
    counts: Counter[str] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                counts[json.loads(line)["task_id"]] += 1
    return counts


@dataclass
class LedgerReport:
    """What became of the acknowledged tasks (see the module docs)."""

    acked: int
    lost: list[str]
    not_final: dict[str, TaskState]
    changed: list[str]
    states: Counter[TaskState]
    refused: Counter[str]
    executions: int = 0
    duplicates: int = 0
    unacked_executed: int = 0
    settle_seconds: float = 0.0

    def summary(self) -> str:
        states = ", ".join(f"{s.name}={n}" for s, n in sorted(self.states.items()))
        refused = ", ".join(f"{k}={n}" for k, n in sorted(self.refused.items())) or "none"
        return (
            f"acked={self.acked} lost={len(self.lost)} not_final={len(self.not_final)}"
            f" changed={len(self.changed)} states[{states}] refused[{refused}]"
            f" executions={self.executions} duplicates={self.duplicates}"
            f" unacked_executed={self.unacked_executed} settled_in={self.settle_seconds:.1f}s"
        )

    def check(self) -> None:
        """AssertionError unless nothing acknowledged was lost, unfinished or changed."""
        assert not self.lost, f"{len(self.lost)} acknowledged tasks lost: {self.lost[:10]}"
        assert not self.not_final, f"not final: {dict(list(self.not_final.items())[:10])}"
        assert not self.changed, f"final state changed: {self.changed[:10]}"


@dataclass
class Ledger:
    """Acknowledged task ids, refusals, and the first final state seen of each task."""

    acked: dict[str, float] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)
    finals: dict[str, Final] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)

    def ok(self, task_id: str) -> None:
        assert task_id not in self.acked, f"the Hub gave out task id {task_id} twice"
        self.acked[task_id] = time.monotonic()

    def refuse(self, exc: AetherError) -> None:
        self.refused[refusal_kind(exc)] += 1

    def acked_since(self, moment: float) -> int:
        """How many submissions were acknowledged after `moment` (time.monotonic())."""
        return sum(1 for t in self.acked.values() if t > moment)

    async def wait_acked_since(self, moment: float, count: int, *, timeout: float) -> float:
        """Wait until `count` submissions were acknowledged after `moment`; how long it took
        from `moment`."""
        deadline = time.monotonic() + timeout
        while self.acked_since(moment) < count:
            assert time.monotonic() < deadline, (
                f"fewer than {count} submissions acknowledged within {timeout:g} s"
                f" (refused: {dict(self.refused)})"
            )
            await asyncio.sleep(0.05)
        return time.monotonic() - moment

    async def wait_refused(self, kind: str, count: int, *, timeout: float) -> None:
        """Wait until `count` submissions in all were refused as `kind`."""
        deadline = time.monotonic() + timeout
        while self.refused[kind] < count:
            assert time.monotonic() < deadline, (
                f"fewer than {count} {kind} refusals within {timeout:g} s"
                f" (refused: {dict(self.refused)}, acked: {len(self.acked)})"
            )
            await asyncio.sleep(0.05)

    def _see(self, task: Task) -> None:
        if task.state not in TERMINAL_TASK_STATES:
            if task.task_id in self.finals:
                self.changed.add(task.task_id)
            return
        final = _final(task)
        first = self.finals.setdefault(task.task_id, final)
        if first != final:
            self.changed.add(task.task_id)

    async def observe(self, client: TaskClient) -> dict[str, Task]:
        """Every task the Hub holds, by id; final states are remembered (and compared with
        the ones seen before)."""
        tasks: dict[str, Task] = {}
        async for task in client.list(page_size=1000):
            tasks[task.task_id] = task
            self._see(task)
        return tasks

    async def settle(
        self,
        client: TaskClient,
        *,
        timeout: float,
        exec_log: Path | None = None,
        interval: float = 0.5,
    ) -> LedgerReport:
        """Wait (up to `timeout` s) until every acknowledged task is final; the report."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            try:
                tasks = await self.observe(client)
            except AetherError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(interval)
                continue
            missing = [tid for tid in self.acked if tid not in tasks]
            for task_id in missing:  # beyond the Hub's in-memory retention: ask for each
                with contextlib.suppress(TaskNotFoundError):
                    task = await client.get(task_id)
                    tasks[task_id] = task
                    self._see(task)
            unfinished = {
                tid: tasks[tid].state
                for tid in self.acked
                if tid in tasks and tasks[tid].state not in TERMINAL_TASK_STATES
            }
            lost = [tid for tid in self.acked if tid not in tasks]
            if (not unfinished and not lost) or time.monotonic() > deadline:
                break
            await asyncio.sleep(interval)
        runs = executions(exec_log) if exec_log is not None else Counter()
        return LedgerReport(
            acked=len(self.acked),
            lost=lost,
            not_final=unfinished,
            changed=sorted(self.changed),
            states=Counter(tasks[tid].state for tid in self.acked if tid in tasks),
            refused=Counter(self.refused),
            executions=sum(runs.values()),
            duplicates=sum(n - 1 for n in runs.values() if n > 1),
            unacked_executed=sum(1 for tid in runs if tid not in self.acked),
            settle_seconds=time.monotonic() - start,
        )


class Submitter:
    """Submits tasks continuously (`rate` per second over `workers` concurrent callers) and
    records each answer in the ledger. Use as `async with submitter.running(): ...`."""

    def __init__(
        self,
        client: TaskClient,
        ledger: Ledger,
        *,
        rate: float = 100.0,
        workers: int = 4,
        description: str = "work",
        task_type: str = "",
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.rate = rate
        self.workers = workers
        self.description = description
        self.task_type = task_type
        self.calls = 0

    async def _worker(self) -> None:
        period = self.workers / self.rate
        next_at = time.monotonic()
        while True:
            next_at += period
            try:
                self.calls += 1
                task = await self.client.submit(self.description, task_type=self.task_type)
            except AetherError as exc:
                self.ledger.refuse(exc)
            else:
                self.ledger.ok(task.task_id)
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = time.monotonic()  # fell behind (a slow call): do not burst

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Submitter]:
        workers = [asyncio.create_task(self._worker()) for _ in range(self.workers)]
        try:
            yield self
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


def states_of(tasks: Iterable[Task]) -> Counter[TaskState]:
    """How many tasks are in each state."""
    return Counter(task.state for task in tasks)


async def hold_on(client: TaskClient, ledger: Ledger, agent_id: str) -> Task:
    """Submit "hold" tasks until one runs on `agent_id` (a fleet started with `--hold`, which
    never finishes them; other agents finish theirs); that task, RUNNING."""
    for _ in range(20):
        submitted = await client.submit("hold")
        ledger.ok(submitted.task_id)
        task_id = submitted.task_id

        async def started(task_id: str = task_id) -> Task | None:
            task = await client.get(task_id)
            return task if task.state in (TaskState.RUNNING, TaskState.SUCCEEDED) else None

        deadline = time.monotonic() + 30
        while (task := await started()) is None:
            assert time.monotonic() < deadline, f"hold task {task_id} did not start"
            await asyncio.sleep(0.05)
        if task.state is TaskState.RUNNING and task.assigned_agent_id == agent_id:
            return task
    raise AssertionError(f"no hold task reached {agent_id}")
