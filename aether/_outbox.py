"""Results on their way to the Hub: kept until acknowledged, re-sent after a reconnect."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from aether._backoff import backoff_delay
from aether._wire import pb
from aether.client import AgentClient
from aether.errors import (
    AetherConnectionError,
    AetherError,
    AgentStateError,
    AuthenticationError,
    PermissionDeniedError,
    method_not_served,
)

__all__ = ("Outbox",)

log = logging.getLogger("aether.results")

_END = None

# Bytes of a TaskResult besides its result, error message and metrics, rounded well up:
# batches are cut by an upper bound of their size.
_RESULT_OVERHEAD = 64


def _size_bound(result: pb.TaskResult) -> int:
    """An upper bound of the result's encoded size (at most 4 bytes a character)."""
    size = (
        _RESULT_OVERHEAD
        + len(result.result)
        + 4 * (len(result.error_message) + len(result.task_id))
    )
    for key, value in result.metrics.items():
        size += 16 + 4 * (len(key) + len(value))
    return size


def _refused_for_now(exc: AetherError) -> bool:
    """Whether the Hub answered UNAVAILABLE itself (the connection works; it cannot take
    the call now), rather than the connection failing."""
    return isinstance(exc, AetherConnectionError) and exc.reason == "unavailable"


class Outbox:
    """Unacknowledged results by task id, in submission order.

    While a session is attached, results go out on one `SubmitResultBatches` stream: the
    results ready when a message is sent share it (within half of `max_message_bytes`), and
    each answer acknowledges one message's results, in order. A Hub that does not serve it
    gets one `SubmitResults` stream (a message per result), and one that serves neither
    unary `SubmitResult` calls. A result leaves the outbox when the Hub acknowledges it (accepted,
    duplicate, or refused for good); a broken link calls `on_lost` and keeps it for the next
    session.
    """

    def __init__(self, client: AgentClient, on_lost: Callable[[str], None]) -> None:
        self._client = client
        self._on_lost = on_lost
        self._pending: dict[str, pb.TaskResult] = {}
        self._empty = asyncio.Event()
        self._empty.set()
        self._queue: asyncio.Queue[pb.TaskResult | None] | None = None
        self._unary = False
        # False once the Hub showed it has no SubmitResultBatches (until the next session).
        self._batches = True
        self._ending = False
        self._unary_tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._pending

    def put(self, result: pb.TaskResult) -> None:
        """Keep `result` until acknowledged; send it now if a session is attached."""
        self._pending[result.task_id] = result
        self._empty.clear()
        self._send(result)

    def _send(self, result: pb.TaskResult) -> None:
        if self._queue is not None:
            self._queue.put_nowait(result)
        elif self._unary:
            task = asyncio.get_running_loop().create_task(self._send_unary(result))
            self._unary_tasks.add(task)
            task.add_done_callback(self._unary_tasks.discard)

    def _done(self, task_id: str) -> None:
        self._pending.pop(task_id, None)
        if not self._pending:
            self._empty.set()

    async def wait_empty(self, timeout: float) -> bool:
        """Wait until every result was acknowledged; False when `timeout` passed first."""
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def run_session(self) -> None:
        """Send everything pending, then each new result, until the session ends.

        Returns when the stream ends after `end_session()`; calls `on_lost` on failure. A
        stream the Hub itself ends with UNAVAILABLE (it could not store the results, e.g.
        its disk is full) is opened again after a pause on the same session, the results
        kept here meanwhile: giving the session up would hand the agent's running tasks
        back to the queue, each time counting an attempt against them.
        """
        self._unary = False
        self._batches = True
        self._ending = False
        refusals = 0
        while True:
            queue: asyncio.Queue[pb.TaskResult | None] = asyncio.Queue()
            self._queue = queue
            for result in list(self._pending.values()):
                queue.put_nowait(result)
            if self._ending:
                queue.put_nowait(_END)
            try:
                if self._batches:
                    batches = self._client._submit_result_batches_wire(self._batched(queue))
                    async for answer in batches:
                        refusals = 0
                        for ack in answer.acks:
                            self._on_ack(ack)
                else:
                    async for ack in self._client._submit_results_wire(self._requests(queue)):
                        refusals = 0
                        self._on_ack(ack)
                if not self._ending:
                    self._on_lost("result stream closed by the Hub")
                return
            except AgentStateError:
                self._on_lost("disconnected")
                return
            except AetherError as exc:
                if self._batches and method_not_served(exc):
                    log.info("the Hub has no SubmitResultBatches; sending results on SubmitResults")
                    self._batches = False
                    continue  # at once, with every pending result again
                if method_not_served(exc):
                    log.info("the Hub has no SubmitResults stream; sending results one by one")
                    self._queue = None
                    self._unary = True
                    for result in list(self._pending.values()):
                        self._send(result)
                    return
                if not _refused_for_now(exc):
                    self._on_lost(f"result stream failed: {exc}")
                    return
                delay = self._retry_delay(refusals)
                if refusals == 0:
                    log.warning(
                        "the Hub cannot take results now (%s); %d result(s) kept, sent again"
                        " in %.1f s",
                        exc,
                        len(self._pending),
                        delay,
                    )
                refusals += 1
            finally:
                if self._queue is queue:
                    self._queue = None
            await asyncio.sleep(delay)

    def _retry_delay(self, refusals: int) -> float:
        config = self._client.config
        first = max(0.05, min(config.reconnect_delay, 1.0))
        return backoff_delay(refusals, first, max_delay=max(first, config.max_reconnect_delay))

    def detach(self) -> None:
        """The session is over: keep new results until the next one."""
        self._queue = None
        self._unary = False

    def end_session(self) -> None:
        """Finish the result stream once what was queued is sent."""
        self._ending = True
        if self._queue is not None:
            self._queue.put_nowait(_END)

    async def _requests(
        self, queue: asyncio.Queue[pb.TaskResult | None]
    ) -> AsyncIterator[pb.TaskResult]:
        while (result := await queue.get()) is not _END:
            yield result

    async def _batched(
        self, queue: asyncio.Queue[pb.TaskResult | None]
    ) -> AsyncIterator[pb.TaskResultBatch]:
        """The queued results, as batches of what is ready when each is sent (within half
        of `max_message_bytes`; a larger result goes alone), until `_END`."""
        budget = self._client.config.max_message_bytes // 2
        carry: pb.TaskResult | None = None
        while True:
            first = carry if carry is not None else await queue.get()
            carry = None
            if first is None:  # _END
                return
            batch = [first]
            used = _size_bound(first)
            ended = False
            while not queue.empty():
                result = queue.get_nowait()
                if result is None:  # _END
                    ended = True
                    break
                size = _size_bound(result)
                if used + size > budget:
                    carry = result
                    break
                batch.append(result)
                used += size
            yield pb.TaskResultBatch(results=batch)
            if ended:
                return

    def _on_ack(self, ack: pb.SubmitResultResponse) -> None:
        task_id = ack.task_id
        if ack.accepted:
            self._done(task_id)
        elif ack.message.startswith("UNAUTHENTICATED"):
            self._on_lost(f"session rejected: {ack.message}")
        else:
            log.warning(
                "task %s: the Hub refused the result (%s); dropping it", task_id, ack.message
            )
            self._done(task_id)

    async def _send_unary(self, result: pb.TaskResult) -> None:
        task_id = result.task_id
        try:
            reply = await self._client._submit_result_wire(result)
        except PermissionDeniedError as exc:
            # The lease is gone (expired, or another session has the task): the Hub will
            # not take this result; it redelivers or already has the task elsewhere.
            log.warning("task %s: the Hub refused the result (%s); dropping it", task_id, exc)
            self._done(task_id)
            return
        except AuthenticationError as exc:
            self._on_lost(f"session rejected: {exc}")
            return
        except AgentStateError:
            return  # disconnected meanwhile; sent again after the reconnect
        except AetherError as exc:
            if exc.retryable:
                self._on_lost(f"sending a result failed: {exc}")
            else:
                log.error("task %s: result rejected: %s; dropping it", task_id, exc)
                self._done(task_id)
            return
        if not reply.accepted:
            log.warning("task %s: the Hub did not accept the result: %s", task_id, reply.message)
        self._done(task_id)
