"""The dev Hub's task queue (DESIGN.md §3) and its `TaskService`.

The queue lives in memory: one heap per routing key (target agent, task type, or any),
ordered by priority then submission order. A session's stream is fed by `_fill`, which
looks only at the heaps the session is eligible for, so dispatch is O(k log n) for an
agent handling k task types. A submitted task goes straight to a free session when there
is one; the session's stream handler is woken through its own `asyncio.Event`. Nothing
here awaits: every change is one synchronous step, so no lock is ever held across an
await and a slow agent only slows its own stream.

Leases: a task is leased when it is put on a session's stream. A lease ends with a
result, with the session's end (missed heartbeats, broken stream: attempt counted; an
Unregister or a released result: not counted) or with a cancellation/timeout. A task
that was cancelled or timed out while leased keeps its slot in the session ("zombie")
until the agent reports back or a heartbeat shows it is no longer running, so the agent
never runs more than its max_concurrent_tasks handlers.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import secrets
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether_hub._wire import pb, runtime, server
from aether_hub.auth import ClientAuth, Session
from aether_hub.clock import Clock, SystemClock
from aether_hub.taskrecord import (
    ANY_KEY,
    RoutingKey,
    TaskRecord,
    state_name,
)
from aether_hub.taskstore import TaskStore

__all__ = ("SessionSlot", "TaskQueue", "TaskService", "TaskSubmission")

log = logging.getLogger("aether_hub.tasks")

_PENDING = pb.TaskState.PENDING
_LEASED = pb.TaskState.LEASED
_RUNNING = pb.TaskState.RUNNING
_SUCCEEDED = pb.TaskState.SUCCEEDED
_FAILED = pb.TaskState.FAILED
_CANCELLED = pb.TaskState.CANCELLED
_TIMED_OUT = pb.TaskState.TIMED_OUT

_HeapEntry = tuple[int, int, TaskRecord]

MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100


def invalid(field_name: str, problem: str) -> GRPCError:
    """INVALID_ARGUMENT naming the field."""
    return GRPCError(Status.INVALID_ARGUMENT, f"{field_name}: {problem}")


@dataclass(frozen=True, slots=True)
class TaskSubmission:
    """A validated SubmitTask request."""

    description: str = ""
    payload: bytes = b""
    task_type: str = ""
    target_agent_id: str = ""
    priority: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    workflow_id: str = ""
    max_attempts: int = 0
    timeout_seconds: int = 0
    idempotency_key: str = ""

    @classmethod
    def from_request(cls, request: pb.SubmitTaskRequest) -> TaskSubmission:
        """Check a SubmitTaskRequest; INVALID_ARGUMENT names the first bad field."""
        if request.max_attempts < 0:
            raise invalid("max_attempts", "must not be negative")
        if request.timeout_seconds < 0:
            raise invalid("timeout_seconds", "must not be negative (0 means no timeout)")
        if "," in request.task_type or request.task_type != request.task_type.strip():
            raise invalid("task_type", "must be one type name (no commas or surrounding spaces)")
        if request.target_agent_id != request.target_agent_id.strip():
            raise invalid("target_agent_id", "must not have surrounding spaces")
        return cls(
            description=request.description,
            payload=request.payload,
            task_type=request.task_type,
            target_agent_id=request.target_agent_id,
            priority=request.priority,
            metadata=dict(request.metadata),
            workflow_id=request.workflow_id,
            max_attempts=request.max_attempts,
            timeout_seconds=request.timeout_seconds,
            idempotency_key=request.idempotency_key,
        )


class SessionSlot:
    """The queue's side of one agent session: its leases and its stream's outbox."""

    __slots__ = (
        "capacity",
        "closed_error",
        "closed_reason",
        "draining",
        "ended",
        "keys",
        "leases",
        "outbox",
        "session",
        "stream_gen",
        "streaming",
        "wake",
    )

    def __init__(self, session: Session) -> None:
        self.session = session
        self.capacity = session.max_concurrent_tasks
        # task_id -> record; includes cancelled/timed-out tasks the agent may still run.
        self.leases: dict[str, TaskRecord] = {}
        self.outbox: deque[pb.TaskStreamEvent] = deque()
        self.wake = asyncio.Event()
        self.stream_gen = 0
        self.streaming = False
        self.draining = False
        self.ended = False
        # Why the session ended; a non-empty closed_error ends its stream with that error.
        self.closed_reason = ""
        self.closed_error = ""
        keys: list[RoutingKey] = [("agent", session.agent_id)]
        keys.extend(("type", t) for t in sorted(session.task_types))
        keys.append(ANY_KEY)
        self.keys: tuple[RoutingKey, ...] = tuple(keys)

    @property
    def has_room(self) -> bool:
        """Whether the session can take another task now."""
        return self.streaming and not self.draining and len(self.leases) < self.capacity

    @property
    def active_leases(self) -> int:
        """Leased tasks that are not finished yet."""
        return sum(1 for rec in self.leases.values() if not rec.terminal)


class TaskQueue:
    """Tasks, their routing and leases, in memory; optionally written behind to SQLite."""

    def __init__(
        self,
        *,
        store: TaskStore | None = None,
        clock: Clock | None = None,
        default_max_attempts: int = 3,
        terminal_retention: int = 100_000,
    ) -> None:
        self._store = store
        self._clock: Clock = clock or SystemClock()
        self.default_max_attempts = default_max_attempts
        self._retention = terminal_retention
        self._tasks: dict[str, TaskRecord] = {}
        self._heaps: dict[RoutingKey, list[_HeapEntry]] = {}
        self._slots: dict[str, SessionSlot] = {}
        # Streaming sessions per routing key they are eligible for, and a round-robin cursor.
        self._by_key: dict[RoutingKey, list[SessionSlot]] = {}
        self._rr: dict[RoutingKey, int] = {}
        self._deadlines: list[tuple[float, int, TaskRecord]] = []
        self._terminal_order: OrderedDict[str, None] = OrderedDict()
        self._idempotency: dict[str, str] = {}
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._seq = itertools.count(1)
        # Set by the Hub before it stops: broken streams then requeue without an attempt.
        self.shutting_down = False
        if store is not None:
            self._restore(store)

    # -- restore ------------------------------------------------------------------------

    def _restore(self, store: TaskStore) -> None:
        records = store.load(terminal_limit=self._retention)
        self._seq = itertools.count(store.max_seq() + 1)
        requeued = 0
        for rec in records:
            self._tasks[rec.task_id] = rec
            if rec.idempotency_key:
                self._idempotency[rec.idempotency_key] = rec.task_id
            if rec.terminal:
                self._terminal_order[rec.task_id] = None
                continue
            if rec.state != _PENDING:
                # The Hub stopped while the task was leased: the lease died with it, and
                # that is not the task's fault, so the attempt does not count.
                rec.state = _PENDING
                rec.attempt = max(0, rec.attempt - 1)
                rec.session_id = ""
                rec.updated_at = self._clock.time()
                store.mark(rec)
                requeued += 1
            heapq.heappush(self._heaps.setdefault(rec.key, []), (-rec.priority, rec.seq, rec))
            if rec.deadline is not None:
                heapq.heappush(self._deadlines, (rec.deadline, rec.seq, rec))
        if records:
            log.info(
                "restored %d tasks from the database (%d were leased and are pending again)",
                len(records),
                requeued,
            )

    # -- lookups ------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord | None:
        """The task `task_id` (from memory, else from the database), or None."""
        rec = self._tasks.get(task_id)
        if rec is None and self._store is not None:
            rec = self._store.fetch(task_id)
        return rec

    def __len__(self) -> int:
        return len(self._tasks)

    def pending_count(self) -> int:
        """How many tasks wait for an agent."""
        return sum(1 for rec in self._tasks.values() if rec.state == _PENDING)

    def slot(self, session_id: str) -> SessionSlot | None:
        """The queue's state of a session, or None."""
        return self._slots.get(session_id)

    def records(self) -> list[TaskRecord]:
        """Every task held in memory, oldest first (for tests and tooling)."""
        return list(self._tasks.values())

    # -- submit -------------------------------------------------------------------------

    def submit(self, sub: TaskSubmission) -> TaskRecord:
        """Queue a task (or return the earlier one with the same idempotency key)."""
        if sub.idempotency_key:
            earlier = self._by_idempotency_key(sub.idempotency_key)
            if earlier is not None:
                return earlier
        now = self._clock.time()
        rec = TaskRecord(
            task_id=secrets.token_hex(12),
            seq=next(self._seq),
            description=sub.description,
            payload=sub.payload,
            task_type=sub.task_type,
            target_agent_id=sub.target_agent_id,
            priority=sub.priority,
            metadata=sub.metadata,
            workflow_id=sub.workflow_id,
            max_attempts=sub.max_attempts or self.default_max_attempts,
            created_at=now,
            deadline=now + sub.timeout_seconds if sub.timeout_seconds > 0 else None,
            idempotency_key=sub.idempotency_key,
            updated_at=now,
        )
        self._tasks[rec.task_id] = rec
        if sub.idempotency_key:
            self._idempotency[sub.idempotency_key] = rec.task_id
        if rec.deadline is not None:
            heapq.heappush(self._deadlines, (rec.deadline, rec.seq, rec))
        self._changed(rec)
        self._enqueue(rec)
        return rec

    def _by_idempotency_key(self, key: str) -> TaskRecord | None:
        task_id = self._idempotency.get(key)
        if task_id is None and self._store is not None:
            task_id = self._store.find_by_idempotency_key(key)
        return None if task_id is None else self.get(task_id)

    # -- dispatch -----------------------------------------------------------------------

    def _enqueue(self, rec: TaskRecord) -> None:
        key = rec.key
        heapq.heappush(self._heaps.setdefault(key, []), (-rec.priority, rec.seq, rec))
        sessions = self._by_key.get(key)
        if not sessions:
            return
        n = len(sessions)
        start = self._rr.get(key, 0) % n
        for i in range(n):
            slot = sessions[(start + i) % n]
            if slot.has_room:
                self._rr[key] = (start + i + 1) % n
                self._fill(slot)
                return

    def _fill(self, slot: SessionSlot) -> None:
        """Lease the best waiting tasks to `slot` while it has room."""
        heaps = self._heaps
        while slot.has_room:
            best: _HeapEntry | None = None
            best_heap: list[_HeapEntry] | None = None
            for key in slot.keys:
                heap = heaps.get(key)
                if not heap:
                    continue
                # Entries of tasks that left the pending state meanwhile are dropped lazily.
                while heap and heap[0][2].state != _PENDING:
                    heapq.heappop(heap)
                if heap and (best is None or heap[0] < best):
                    best = heap[0]
                    best_heap = heap
            if best is None or best_heap is None:
                return
            heapq.heappop(best_heap)
            self._lease(best[2], slot)

    def _lease(self, rec: TaskRecord, slot: SessionSlot) -> None:
        rec.state = _LEASED
        rec.attempt += 1
        rec.session_id = slot.session.session_id
        rec.assigned_agent_id = slot.session.agent_id
        rec.updated_at = self._clock.time()
        slot.leases[rec.task_id] = rec
        slot.outbox.append(pb.TaskStreamEvent(assignment=rec.assignment()))
        slot.wake.set()
        self._changed(rec)

    # -- sessions and streams -------------------------------------------------------------

    def add_session(self, session: Session) -> SessionSlot:
        """Make room for a newly registered session (it takes tasks once it streams)."""
        slot = SessionSlot(session)
        self._slots[session.session_id] = slot
        return slot

    def open_stream(
        self, session_id: str, max_concurrent_tasks: int = 0
    ) -> tuple[SessionSlot, int]:
        """Start feeding the session's task stream; returns the slot and the stream's number.

        A session has one stream: a second one replaces the first, and the tasks leased
        through the first go back to the queue (the agent may never have seen them).
        """
        slot = self._slots.get(session_id)
        if slot is None or slot.ended:
            raise GRPCError(Status.UNAUTHENTICATED, "session ended; register again")
        if slot.streaming:
            self._stop_streaming(slot, "task stream replaced by a newer one")
        if max_concurrent_tasks > 0:
            slot.capacity = max_concurrent_tasks
        slot.stream_gen += 1
        slot.streaming = True
        slot.draining = False
        for key in slot.keys:
            self._by_key.setdefault(key, []).append(slot)
        self._fill(slot)
        return slot, slot.stream_gen

    def close_stream(self, slot: SessionSlot, gen: int, *, connection_lost: bool = True) -> int:
        """The stream number `gen` of `slot` ended; how many tasks went back to the queue.

        With `connection_lost` (the agent's connection died: a crash, a network failure) its
        leases go back at once, attempt counted. Otherwise the agent cancelled the call on
        a live connection, which is how an agent stops taking tasks before it shuts down:
        the tasks it already received stay leased to the still-registered session (their
        results, releases or the Unregister follow), and only assignments that were never
        sent go back, uncounted.
        """
        if slot.ended or slot.stream_gen != gen or not slot.streaming:
            return 0
        if connection_lost and not self.shutting_down:
            return self._stop_streaming(
                slot, f"task stream of agent {slot.session.agent_id!r} broke"
            )
        return self._pause_streaming(slot)

    def _unlist(self, slot: SessionSlot) -> None:
        slot.streaming = False
        for key in slot.keys:
            sessions = self._by_key.get(key)
            if sessions is not None and slot in sessions:
                sessions.remove(slot)
                if not sessions:
                    del self._by_key[key]

    def _stop_streaming(self, slot: SessionSlot, reason: str) -> int:
        self._unlist(slot)
        slot.outbox.clear()
        # A Hub that shuts down breaks every stream; that is not the tasks' fault.
        return self._release_leases(slot, count_attempt=not self.shutting_down, reason=reason)

    def _pause_streaming(self, slot: SessionSlot) -> int:
        self._unlist(slot)
        unsent = [ev.assignment.task_id for ev in slot.outbox if ev.assignment is not None]
        # Cancellations still matter to the agent: they wait for its next stream.
        kept = [ev for ev in slot.outbox if ev.cancel is not None]
        slot.outbox.clear()
        slot.outbox.extend(kept)
        requeued = 0
        sid = slot.session.session_id
        for task_id in unsent:
            rec = slot.leases.pop(task_id, None)
            if rec is None or rec.terminal or rec.session_id != sid:
                continue
            if self._requeue(rec, count_attempt=False, reason="never sent"):
                requeued += 1
        return requeued

    def end_session(
        self, session_id: str, *, count_attempt: bool, reason: str, stream_error: str = ""
    ) -> int:
        """The session ended: its stream stops and its leases go back to the queue.

        `count_attempt` is True for a lost session (missed heartbeats, replaced) and False
        for an orderly Unregister. Returns how many tasks were requeued.
        """
        slot = self._slots.pop(session_id, None)
        if slot is None:
            return 0
        if slot.streaming:
            self._unlist(slot)
        slot.ended = True
        slot.closed_reason = reason
        slot.closed_error = stream_error
        slot.outbox.clear()
        requeued = self._release_leases(slot, count_attempt=count_attempt, reason=reason)
        slot.wake.set()
        return requeued

    def _release_leases(self, slot: SessionSlot, *, count_attempt: bool, reason: str) -> int:
        leases = list(slot.leases.values())
        slot.leases.clear()
        requeued = 0
        for rec in leases:
            if rec.terminal or rec.session_id != slot.session.session_id:
                continue
            if self._requeue(rec, count_attempt=count_attempt, reason=reason):
                requeued += 1
        return requeued

    def _requeue(self, rec: TaskRecord, *, count_attempt: bool, reason: str) -> bool:
        """Put a leased task back; False when it ran out of attempts and failed instead."""
        rec.session_id = ""
        if not count_attempt:
            rec.attempt = max(0, rec.attempt - 1)
        elif rec.attempt >= rec.max_attempts:
            self._finish(
                rec,
                _FAILED,
                error_message=(
                    f"gave up after {rec.attempt} of {rec.max_attempts} attempts;"
                    f" the last lease ended: {reason}"
                ),
            )
            return False
        rec.state = _PENDING
        rec.progress = 0.0
        rec.status_message = ""
        rec.updated_at = self._clock.time()
        self._changed(rec)
        self._enqueue(rec)
        return True

    # -- agent reports ------------------------------------------------------------------

    def _owned(self, slot: SessionSlot, task_id: str) -> TaskRecord:
        """The task, if `slot`'s agent may report on it; else PERMISSION_DENIED/NOT_FOUND."""
        rec = slot.leases.get(task_id)
        if rec is not None:
            return rec
        rec = self.get(task_id)
        if rec is None:
            raise GRPCError(Status.NOT_FOUND, f"unknown task {task_id!r}")
        # A result that outlived its session (the agent re-registered, its outbox flushes)
        # still counts when nobody else holds the task now.
        if (
            rec.assigned_agent_id == slot.session.agent_id
            and not rec.terminal
            and (rec.state == _PENDING or self._lease_agent(rec) == slot.session.agent_id)
        ):
            return rec
        if rec.terminal:
            # Finished: a late repeat from anyone is only acknowledged as a duplicate (an
            # agent whose lease expired may still flush its result after another finished).
            return rec
        raise GRPCError(
            Status.PERMISSION_DENIED,
            f"task {task_id!r} is not leased to this session (agent {slot.session.agent_id!r})",
        )

    def _lease_agent(self, rec: TaskRecord) -> str:
        holder = self._slots.get(rec.session_id) if rec.session_id else None
        return holder.session.agent_id if holder is not None else ""

    def report_status(self, slot: SessionSlot, status: pb.TaskStatus) -> bool:
        """Record progress of a leased task; whether it was recorded (False once finished)."""
        if not status.task_id:
            raise invalid("task_id", "is required")
        progress = float(status.progress)
        if math.isnan(progress) or not 0.0 <= progress <= 1.0:
            raise invalid("progress", f"must be between 0.0 and 1.0, not {status.progress!r}")
        rec = self._owned(slot, status.task_id)
        if rec.terminal or rec.state == _PENDING:
            # Finished, or back in the queue after its lease ended: nothing runs it now.
            return False
        rec.state = _RUNNING
        rec.progress = progress
        rec.status_message = status.message
        rec.updated_at = self._clock.time()
        self._changed(rec)
        return True

    def submit_result(self, slot: SessionSlot, result: pb.TaskResult) -> pb.SubmitResultResponse:
        """Apply a result: first terminal result wins, repeats are duplicates."""
        task_id = result.task_id
        if not task_id:
            raise invalid("task_id", "is required")
        rec = slot.leases.get(task_id)
        if rec is None or rec.session_id != slot.session.session_id:
            rec = self._owned(slot, task_id)
        if rec.terminal:
            # A zombie slot (cancelled or timed out while running) is free now.
            if slot.leases.pop(task_id, None) is not None:
                self._fill(slot)
            return pb.SubmitResultResponse(
                task_id=task_id,
                accepted=True,
                duplicate=True,
                message=f"task already finished as {state_name(rec.state)}",
            )
        if result.released:
            # Graceful shutdown: the agent hands the task back unfinished and takes no more
            # (set before the lease is dropped, or the freed slot would be refilled).
            slot.draining = True
            if rec.state == _PENDING:
                return pb.SubmitResultResponse(
                    task_id=task_id, accepted=True, message="already back in the queue"
                )
        self._detach(rec)
        if result.released:
            self._requeue(rec, count_attempt=False, reason="released by the agent")
            self._fill(slot)
            return pb.SubmitResultResponse(
                task_id=task_id, accepted=True, message="released; requeued"
            )
        if result.success:
            state = _SUCCEEDED
        elif result.cancelled:
            state = _CANCELLED
        else:
            state = _FAILED
        self._finish(
            rec,
            state,
            result=result.result,
            error_message=result.error_message,
            metrics=dict(result.metrics),
            agent_id=slot.session.agent_id,
        )
        self._fill(slot)
        return pb.SubmitResultResponse(task_id=task_id, accepted=True)

    def _detach(self, rec: TaskRecord) -> None:
        """Drop the task's lease from whichever session holds it."""
        if rec.session_id:
            holder = self._slots.get(rec.session_id)
            if holder is not None and holder.leases.pop(rec.task_id, None) is not None:
                self._fill(holder)
            rec.session_id = ""

    def heartbeat(self, slot: SessionSlot, running_task_ids: Iterable[str], active: int) -> None:
        """Free slots of finished tasks the agent says it no longer runs."""
        running = set(running_task_ids)
        if len(running) != active:
            return  # an agent that does not list its tasks: keep every slot
        freed = False
        for task_id, rec in list(slot.leases.items()):
            if rec.terminal and task_id not in running:
                del slot.leases[task_id]
                freed = True
        if freed:
            self._fill(slot)

    # -- client actions -----------------------------------------------------------------

    def cancel(self, task_id: str, reason: str = "") -> pb.CancelTaskResponse:
        """Cancel a pending or leased task; a leased one's agent gets a cancellation."""
        rec = self.get(task_id)
        if rec is None:
            raise GRPCError(Status.NOT_FOUND, f"unknown task {task_id!r}")
        if rec.terminal:
            return pb.CancelTaskResponse(
                success=False,
                state=rec.state,
                message=f"task already finished as {state_name(rec.state)}",
            )
        why = reason or "cancelled by a client"
        self._finish(rec, _CANCELLED, error_message=why, notify_reason=why)
        return pb.CancelTaskResponse(success=True, state=_CANCELLED, message="cancelled")

    def _finish(
        self,
        rec: TaskRecord,
        state: pb.TaskState,
        *,
        result: bytes = b"",
        error_message: str = "",
        metrics: dict[str, str] | None = None,
        agent_id: str = "",
        notify_reason: str = "",
    ) -> None:
        """Make `rec` terminal. With `notify_reason`, a leasing session is told to stop."""
        if rec.session_id:
            holder = self._slots.get(rec.session_id)
            if holder is not None and notify_reason:
                # Keep the slot: the handler runs until the agent reports back.
                holder.outbox.append(
                    pb.TaskStreamEvent(
                        cancel=pb.TaskCancellation(task_id=rec.task_id, reason=notify_reason)
                    )
                )
                holder.wake.set()
            elif holder is not None and holder.leases.pop(rec.task_id, None) is not None:
                self._fill(holder)
            rec.session_id = ""
        now = self._clock.time()
        rec.state = state
        rec.result = result
        rec.error_message = error_message
        if metrics is not None:
            rec.metrics = metrics
        if agent_id:
            rec.assigned_agent_id = agent_id
        if state == _SUCCEEDED:
            rec.progress = 1.0
        rec.completed_at = now
        rec.updated_at = now
        self._changed(rec)
        self._retire(rec)

    def _retire(self, rec: TaskRecord) -> None:
        order = self._terminal_order
        order[rec.task_id] = None
        while len(order) > self._retention:
            old_id, _ = order.popitem(last=False)
            old = self._tasks.pop(old_id, None)
            if old is not None and old.idempotency_key:
                self._idempotency.pop(old.idempotency_key, None)

    def list_tasks(
        self,
        *,
        state: pb.TaskState = pb.TaskState.UNSPECIFIED,
        agent_id: str = "",
        task_type: str = "",
        workflow_id: str = "",
        limit: int = DEFAULT_LIST_LIMIT,
        page_token: str = "",
    ) -> tuple[list[TaskRecord], str]:
        """Tasks matching every given filter, newest first, and the next page's token."""
        if limit < 0:
            raise invalid("limit", "must not be negative")
        limit = min(limit or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
        before: int | None = None
        if page_token:
            if not page_token.startswith("s") or not page_token[1:].isdigit():
                raise invalid("page_token", "is not a next_page_token from ListTasks")
            before = int(page_token[1:])
        out: list[TaskRecord] = []
        for rec in reversed(self._tasks.values()):
            if before is not None and rec.seq >= before:
                continue
            if state != pb.TaskState.UNSPECIFIED and rec.state != state:
                continue
            if agent_id and agent_id not in (rec.assigned_agent_id, rec.target_agent_id):
                continue
            if task_type and rec.task_type != task_type:
                continue
            if workflow_id and rec.workflow_id != workflow_id:
                continue
            if len(out) == limit:
                return out, f"s{out[-1].seq}"
            out.append(rec)
        return out, ""

    # -- time ---------------------------------------------------------------------------

    def sweep(self) -> int:
        """Time out tasks past their deadline; how many timed out."""
        now = self._clock.time()
        deadlines = self._deadlines
        timed_out = 0
        while deadlines and deadlines[0][0] <= now:
            _, _, rec = heapq.heappop(deadlines)
            if rec.terminal:
                continue
            seconds = (rec.deadline or now) - rec.created_at
            message = f"timed out: not finished within {seconds:g} s of submission"
            self._finish(rec, _TIMED_OUT, error_message=message, notify_reason=message)
            timed_out += 1
        return timed_out

    def next_deadline(self) -> float | None:
        """The earliest deadline of an unfinished task (epoch seconds), if any."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].terminal:
            heapq.heappop(deadlines)
        return deadlines[0][0] if deadlines else None

    # -- watching and persistence ---------------------------------------------------------

    def watch(self, task_id: str) -> asyncio.Event:
        """An event set whenever the task changes; pair with `unwatch`."""
        event = asyncio.Event()
        self._watchers.setdefault(task_id, set()).add(event)
        return event

    def unwatch(self, task_id: str, event: asyncio.Event) -> None:
        """Stop a `watch`."""
        events = self._watchers.get(task_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._watchers[task_id]

    async def wait_finished(self, task_id: str) -> TaskRecord:
        """Wait until the task is terminal; the record (NOT_FOUND GRPCError if unknown)."""
        rec = self.get(task_id)
        if rec is None:
            raise GRPCError(Status.NOT_FOUND, f"unknown task {task_id!r}")
        event = self.watch(task_id)
        try:
            while not rec.terminal:
                await event.wait()
                event.clear()
        finally:
            self.unwatch(task_id, event)
        return rec

    def _changed(self, rec: TaskRecord) -> None:
        if self._store is not None:
            self._store.mark(rec)
        events = self._watchers.get(rec.task_id)
        if events:
            for event in events:
                event.set()

    def flush(self) -> int:
        """Write changed tasks to the database now (no-op without `--db`)."""
        return self._store.flush() if self._store is not None else 0

    @property
    def store(self) -> TaskStore | None:
        """The write-behind store, when the Hub runs with `--db`."""
        return self._store


class TaskService(server.TaskServiceBase):
    """`aether.v1.TaskService`: clients submit, follow, cancel and list tasks."""

    def __init__(self, queue: TaskQueue, auth: ClientAuth) -> None:
        self._queue = queue
        self._auth = auth

    async def submit_task(
        self, request: pb.SubmitTaskRequest, context: runtime.ServerContext
    ) -> pb.SubmitTaskResponse:
        """Queue a task."""
        self._auth.check(context)
        rec = self._queue.submit(TaskSubmission.from_request(request))
        return pb.SubmitTaskResponse(task_id=rec.task_id)

    async def get_task(self, request: pb.GetTaskRequest, context: runtime.ServerContext) -> pb.Task:
        """One task; NOT_FOUND when unknown."""
        self._auth.check(context)
        return self._require(request.task_id).to_pb()

    async def watch_task(
        self, request: pb.WatchTaskRequest, context: runtime.ServerContext
    ) -> AsyncIterator[pb.TaskUpdate]:
        """The task now, then after every change, until it is terminal."""
        self._auth.check(context)
        rec = self._require(request.task_id)
        event = self._queue.watch(rec.task_id)
        try:
            yield pb.TaskUpdate(task=rec.to_pb())
            while not rec.terminal:
                await event.wait()
                event.clear()
                yield pb.TaskUpdate(task=rec.to_pb())
        finally:
            self._queue.unwatch(rec.task_id, event)

    async def cancel_task(
        self, request: pb.CancelTaskRequest, context: runtime.ServerContext
    ) -> pb.CancelTaskResponse:
        """Cancel a pending or running task."""
        self._auth.check(context)
        if not request.task_id:
            raise invalid("task_id", "is required")
        return self._queue.cancel(request.task_id, request.reason)

    async def list_tasks(
        self, request: pb.ListTasksRequest, context: runtime.ServerContext
    ) -> pb.ListTasksResponse:
        """Tasks matching the filters, newest first, one page at a time."""
        self._auth.check(context)
        records, token = self._queue.list_tasks(
            state=request.state,
            agent_id=request.agent_id,
            task_type=request.task_type,
            workflow_id=request.workflow_id,
            limit=request.limit,
            page_token=request.page_token,
        )
        return pb.ListTasksResponse(tasks=[rec.to_pb() for rec in records], next_page_token=token)

    def _require(self, task_id: str) -> TaskRecord:
        if not task_id:
            raise invalid("task_id", "is required")
        rec = self._queue.get(task_id)
        if rec is None:
            raise GRPCError(Status.NOT_FOUND, f"unknown task {task_id!r}")
        return rec
