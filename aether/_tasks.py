"""Running handlers: concurrency, timeouts, cancellation and duplicate deliveries."""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aether._context import set_current_task
from aether._logging import bind_task
from aether._tracing import TRACEPARENT, task_span
from aether._wire import models, pb

__all__ = ("CancelReason", "TaskRunner")

log = logging.getLogger("aether.tasks")

#: How many finished tasks are remembered, to answer a repeated assignment.
RECENT_TASKS = 4096
#: Result bytes kept for those answers; a task whose result was dropped runs again.
RECENT_RESULT_BYTES = 16 * 1024 * 1024
#: Room left in a message for everything but the result bytes.
_RESULT_OVERHEAD = 64 * 1024

Handler = Callable[[models.TaskAssignment], Awaitable[models.TaskResult]]
ResultSink = Callable[[pb.TaskResult], Awaitable[None]]


class CancelReason(enum.Enum):
    """Why a running handler was cancelled; decides what is reported."""

    #: A client cancelled the task (TaskCancellation on the stream).
    HUB = "cancelled by the Hub"
    #: The handler ran past `task_timeout_seconds`.
    TIMEOUT = "timed out"
    #: The agent is shutting down and hands the task back.
    SHUTDOWN = "released on shutdown"


class _Running:
    __slots__ = ("reason", "task", "timer")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.reason: CancelReason | None = None
        self.timer: asyncio.TimerHandle | None = None


def _failure(task_id: str, message: str, *, cancelled: bool = False) -> pb.TaskResult:
    return pb.TaskResult(task_id=task_id, success=False, error_message=message, cancelled=cancelled)


class TaskRunner:
    """Runs `handler` for each assignment, at most `max_concurrent` at once.

    Every assignment ends in exactly one result passed to `sink` (and first to `on_result`,
    when given): the handler's own, or a failure when it raised, returned something else,
    overran `timeout`, or was cancelled; on shutdown, a `released` result. An assignment
    of a task that is running is skipped (its handler will answer). An assignment of a task
    that finished recently means the Hub did not keep its result (at-least-once delivery):
    it is answered with the same result again, or, when that result is no longer kept, the
    task runs again.
    """

    def __init__(
        self,
        handler: Handler,
        sink: ResultSink,
        *,
        max_concurrent: int,
        timeout: float | None = None,
        max_result_bytes: int | None = None,
        on_result: Callable[[pb.TaskResult], None] | None = None,
    ) -> None:
        self._handler = handler
        self._sink = sink
        self._on_result = on_result
        self._timeout = timeout
        self._max_result_bytes = (
            max(0, max_result_bytes - _RESULT_OVERHEAD) if max_result_bytes else None
        )
        self._slots = asyncio.Semaphore(max_concurrent)
        self._running: dict[str, _Running] = {}
        # Finished tasks, oldest first, with their results while they fit the byte budget.
        self._recent: OrderedDict[str, pb.TaskResult | None] = OrderedDict()
        self._recent_bytes = 0
        # Every handler task until its result is handed to the sink.
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def running_ids(self) -> list[str]:
        """Ids of the tasks whose handlers are running (or waiting for a slot)."""
        return list(self._running)

    def __len__(self) -> int:
        return len(self._running)

    def seen(self, task_id: str) -> bool:
        """Whether the task is running or finished recently."""
        return task_id in self._running or task_id in self._recent

    def accept(self, assignment: pb.TaskAssignment) -> bool:
        """Start handling `assignment`; False (and nothing started) when it is running.

        A task that finished recently is answered again with its kept result (True)."""
        task_id = assignment.task_id
        if task_id in self._running:
            log.info("skipping task %s: it is already running", task_id)
            return False
        if task_id in self._recent:
            kept = self._recent[task_id]
            if kept is not None:
                self._recent.move_to_end(task_id)
                log.info(
                    "task %s: assigned again after it finished; sending its result again", task_id
                )
                self._track(asyncio.get_running_loop().create_task(self._send_again(kept)))
                return True
            self._forget(task_id)
            log.info("task %s: assigned again after it finished; running it again", task_id)
        entry = _Running()
        self._running[task_id] = entry
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(self._run(assignment, entry))
        entry.task = task
        self._track(task)
        return True

    async def _send_again(self, result: pb.TaskResult) -> None:
        # A coroutine for create_task: the sink is only typed as returning an awaitable.
        await self._sink(result)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._task_done)

    def _remember(self, task_id: str, result: pb.TaskResult) -> None:
        # A released task was handed back unfinished: a new assignment must run it.
        if result.released:
            return
        size = len(result.result) + len(result.error_message)
        if size > RECENT_RESULT_BYTES // 4:
            self._recent[task_id] = None
        else:
            self._recent[task_id] = result
            self._recent_bytes += size
        while len(self._recent) > RECENT_TASKS or self._recent_bytes > RECENT_RESULT_BYTES:
            self._forget(next(iter(self._recent)))

    def _forget(self, task_id: str) -> pb.TaskResult | None:
        kept = self._recent.pop(task_id, None)
        if kept is not None:
            self._recent_bytes -= len(kept.result) + len(kept.error_message)
        return kept

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("task runner failed", exc_info=task.exception())

    def cancel(self, task_id: str, reason: CancelReason = CancelReason.HUB) -> bool:
        """Cancel a running handler; False when the task is not running."""
        entry = self._running.get(task_id)
        if entry is None or entry.task is None or entry.reason is not None:
            return False
        entry.reason = reason
        entry.task.cancel()
        return True

    def _on_timeout(self, task_id: str) -> None:
        self.cancel(task_id, CancelReason.TIMEOUT)

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every handler finished and handed its result to the sink.

        False when `timeout` passed first.
        """
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def release_all(self) -> None:
        """Cancel every running handler now; each task is handed back (released)."""
        for task_id in list(self._running):
            self.cancel(task_id, CancelReason.SHUTDOWN)

    async def drain(self, grace: float, cancel_timeout: float) -> bool:
        """Let handlers finish within `grace` seconds, then release the rest.

        False when some handler still runs `cancel_timeout` seconds after its cancellation
        (it swallowed the CancelledError).
        """
        if await self.wait_idle(grace):
            return True
        self.release_all()
        return await self.wait_idle(cancel_timeout)

    async def abort(self, timeout: float = 5.0) -> None:
        """Cancel every handler at once without reporting (the session is gone for good).

        Waits at most `timeout` seconds for them: a handler that swallows its
        cancellation is abandoned rather than allowed to block shutdown.
        """
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def _run(self, wire: pb.TaskAssignment, entry: _Running) -> None:
        task_id = wire.task_id
        bind_task(task_id)  # this task's own context: every record of the handler names it
        result: pb.TaskResult
        try:
            async with self._slots:
                if self._timeout is not None:
                    entry.timer = asyncio.get_running_loop().call_later(
                        self._timeout, self._on_timeout, task_id
                    )
                assignment = models.TaskAssignment.from_wire(wire)
                set_current_task(assignment)
                with task_span(
                    wire.metadata.get(TRACEPARENT), task_id, wire.task_type, wire.attempt
                ) as span:
                    result = self._checked(await self._handler(assignment), task_id)
                    span.set("aether.task.success", result.success)
        except asyncio.CancelledError:
            reason = entry.reason
            if reason is None:
                raise  # not ours: the agent itself is being torn down
            _uncancel()
            if reason is CancelReason.SHUTDOWN:
                result = pb.TaskResult(
                    task_id=task_id,
                    success=False,
                    released=True,
                    error_message="released: the agent shut down before the task finished",
                )
            elif reason is CancelReason.TIMEOUT:
                log.warning("task %s: handler timed out after %ss", task_id, self._timeout)
                result = _failure(
                    task_id, f"handler timed out after {self._timeout}s", cancelled=True
                )
            else:
                log.info("task %s: handler cancelled by the Hub", task_id)
                result = _failure(task_id, "task cancelled", cancelled=True)
        except Exception as exc:
            log.exception("task %s: handle_task raised", task_id)
            result = _failure(task_id, f"handle_task raised {type(exc).__name__}: {exc}")
        finally:
            if entry.timer is not None:
                entry.timer.cancel()
            del self._running[task_id]
        self._remember(task_id, result)
        if self._on_result is not None:
            self._on_result(result)
        await self._sink(result)

    def _checked(self, result: object, task_id: str) -> pb.TaskResult:
        if not isinstance(result, models.TaskResult):
            log.error(
                "task %s: handle_task returned %s instead of a TaskResult; reporting failure",
                task_id,
                type(result).__name__,
            )
            return _failure(
                task_id, f"handle_task returned {type(result).__name__}, expected TaskResult"
            )
        if result.task_id != task_id:
            log.error(
                "task %s: handle_task returned a result for task %r; refusing it and "
                "reporting failure",
                task_id,
                result.task_id,
            )
            return _failure(
                task_id, f"handle_task returned a result for another task ({result.task_id!r})"
            )
        if self._max_result_bytes is not None and len(result.result) > self._max_result_bytes:
            log.error("task %s: result of %d bytes is too large", task_id, len(result.result))
            return _failure(
                task_id,
                f"result of {len(result.result)} bytes exceeds max_message_bytes",
            )
        return result.to_wire()


def _uncancel() -> None:
    # 3.11+: clear the cancellation request we consumed, so later awaits are not disturbed.
    if sys.version_info >= (3, 11):
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
