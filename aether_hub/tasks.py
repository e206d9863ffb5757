"""The dev Hub's task queue and its `TaskService` (docs/architecture.md#delivery-semantics).

The queue lives in memory: one heap per routing key (target agent, task type, or any),
ordered by priority then submission order. A session's stream is fed by `_fill`, which
looks only at the heaps the session is eligible for, so dispatch is O(k log n) for an
agent handling k task types. A Hub restarted with `--db` leaves the pending tasks of its
database in the table and pages them into these heaps, in the same order, as sessions
look for work (`aether_hub/taskbacklog.py`). A submitted task goes straight to a free
session when there is one; the session's stream handler is woken through its own
`asyncio.Event`. Nothing here awaits: every change is one synchronous step, so no lock is
ever held across an await and a slow agent only slows its own stream.

Leases: a task is leased when it is put on a session's stream. A lease ends with a
result, with the session's end (missed heartbeats, broken stream: attempt counted; an
Unregister or a released result: not counted) or with a cancellation/timeout. A task
that was cancelled or timed out while leased keeps its concurrency slot in the session
("zombie") until the agent reports back or a heartbeat shows it is no longer running, so
the agent never runs more than its max_concurrent_tasks handlers.

The sessions themselves (`Session`, their states, ending) belong to `aether_hub.sessions`;
the queue writes only their dispatch fields (capacity, leases, unsent events, stream).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import logging
import math
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether_hub import inspection, tracing
from aether_hub._wire import pb, runtime, server
from aether_hub.auth import Caller, ClientAuth
from aether_hub.clock import Clock, SystemClock
from aether_hub.logcontext import bind_task
from aether_hub.metrics import HubMetrics
from aether_hub.sessions import Session, SessionRegistry, StreamState
from aether_hub.taskbacklog import Backlog
from aether_hub.taskindex import TaskIndex
from aether_hub.taskrecord import RoutingKey, TaskRecord, state_name
from aether_hub.taskreplica import TaskReplication, replica_sequence
from aether_hub.taskstore import StoreUnavailableError, TaskStore

__all__ = ("TaskQueue", "TaskService", "TaskSubmission")

log = logging.getLogger("aether_hub.tasks")

_PENDING = pb.TaskState.PENDING
_LEASED = pb.TaskState.LEASED
_RUNNING = pb.TaskState.RUNNING
_SUCCEEDED = pb.TaskState.SUCCEEDED
_FAILED = pb.TaskState.FAILED
_CANCELLED = pb.TaskState.CANCELLED
_TIMED_OUT = pb.TaskState.TIMED_OUT

_HeapEntry = tuple[int, int, TaskRecord]

# What a task's submission fixes (a replica takes them from the stored version only when
# its own was never stored).
_SUBMITTED_FIELDS = (
    "seq",
    "description",
    "payload",
    "task_type",
    "target_agent_id",
    "priority",
    "metadata",
    "workflow_id",
    "max_attempts",
    "created_at",
    "deadline",
    "idempotency_key",
    "submitted_by",
)
# What a stored version of a task replaces in the record a replica holds (the rest is
# fixed at submission or kept locally: `leased_at`, `stored_result`, cached datetimes).
_REPLICATED_FIELDS = (
    "state",
    "attempt",
    "assigned_agent_id",
    "session_id",
    "hub_id",
    "progress",
    "status_message",
    "result",
    "error_message",
    "metrics",
    "updated_at",
    "completed_at",
)

MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100
#: Tasks one SubmitTasks call may carry (the API's limit, proto/aether/v1/tasks.proto).
MAX_SUBMIT_BATCH = 1000


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
    # The submitting agent's id ('' for a client).
    submitted_by: str = ""

    @classmethod
    def from_request(
        cls, request: pb.SubmitTaskRequest, *, submitted_by: str = ""
    ) -> TaskSubmission:
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
            submitted_by=submitted_by,
        )


class TaskQueue:
    """Tasks, their routing and leases, in memory; stored in SQLite with `--db` (`TaskStore`)."""

    def __init__(
        self,
        *,
        store: TaskStore | None = None,
        clock: Clock | None = None,
        default_max_attempts: int = 3,
        terminal_retention: int = 100_000,
        terminal_retention_bytes: int = 256 * 1024 * 1024,
        terminal_retention_seconds: float = 86_400.0,
    ) -> None:
        self._store = store
        self._clock: Clock = clock or SystemClock()
        self.default_max_attempts = default_max_attempts
        # Finished tasks stay in memory while there are at most this many, their payloads
        # and results take at most this many bytes, and they finished at most this long
        # ago (0 = no age bound); older ones leave memory (with `--db`: read from the table).
        self._retention = terminal_retention
        self._retention_bytes = terminal_retention_bytes
        self._retention_seconds = terminal_retention_seconds
        #: Where the queue counts what happens to tasks (`HubServer` sets it).
        self.metrics: HubMetrics | None = None
        self._tasks: dict[str, TaskRecord] = {}
        # ListTasks filters over `_tasks` (kept in step by `_changed` and `_forget_record`).
        self._index = TaskIndex()
        self._heaps: dict[RoutingKey, list[_HeapEntry]] = {}
        # The live sessions, by id, to find a task's lease holder (SessionRegistry owns
        # them; `session_ended` drops them here).
        self._sessions: dict[str, Session] = {}
        # Streaming sessions per routing key they are eligible for, and a round-robin cursor.
        self._by_key: dict[RoutingKey, list[Session]] = {}
        self._rr: dict[RoutingKey, int] = {}
        self._deadlines: list[tuple[float, int, TaskRecord]] = []
        # Finished tasks held in memory, oldest finish first: id -> payload+result bytes.
        self._terminal_order: OrderedDict[str, int] = OrderedDict()
        self._terminal_bytes = 0
        self._idempotency: dict[str, str] = {}
        self._watchers: dict[str, set[asyncio.Event]] = {}
        # Agents that submitted or ran a task of each workflow (workflow memory access).
        self._workflow_agents: dict[str, set[str]] = {}
        self._seq: Iterator[int] = itertools.count(1)
        # With `--store jetstream`: the link to the shared task bucket (`attach`).
        self._replica: TaskReplication | None = None
        #: This replica's id with `--store jetstream` ('' for a single Hub).
        self.hub_id = ""
        # Set by the Hub before it stops: broken streams then requeue without an attempt.
        self.shutting_down = False
        # With `--db`: the pending tasks of the database not read yet (taskbacklog.py).
        self._backlog: Backlog | None = None
        if store is not None:
            self._restore(store)

    # -- restore ------------------------------------------------------------------------

    def _restore(self, store: TaskStore) -> None:
        """Take over the database's tasks: the leased ones go back to the queue, the
        newest finished ones are held (retention), the pending ones stay in the table
        and are read a page at a time as agents have room (`Backlog`), so a start costs
        neither time nor memory per pending task."""
        max_seq = store.max_seq()
        self._seq = itertools.count(max_seq + 1)
        leased = store.load_leased()
        finished = store.load_finished(self._retention)
        backlog = Backlog(store, max_seq)  # counts the pending tasks, reads none
        now = self._clock.time()
        for rec in leased:
            # The Hub stopped while the task was leased: the lease died with it, and
            # that is not the task's fault, so the attempt does not count.
            rec.state = _PENDING
            rec.attempt = max(0, rec.attempt - 1)
            rec.session_id = ""
            rec.updated_at = now
            store.mark(rec)
            self._adopt(rec)
        for rec in finished:
            self._adopt(rec)
        self._trim_terminal()
        if backlog:
            self._backlog = backlog
        if leased or finished or backlog:
            log.info(
                "restored tasks from the database: %d pending (read as agents have room),"
                " %d were leased and are pending again, %d finished held in memory",
                backlog.remaining,
                len(leased),
                len(finished),
            )

    def _adopt(self, rec: TaskRecord) -> None:
        """Hold a task read from the database: indexed, and queued while pending."""
        self._tasks[rec.task_id] = rec
        self._index.note(rec)
        self._note_workflow(rec, rec.submitted_by)
        self._note_workflow(rec, rec.assigned_agent_id)
        if rec.idempotency_key:
            self._idempotency[rec.idempotency_key] = rec.task_id
        if rec.terminal:
            self._hold_terminal(rec)
            return
        if self._backlog is not None:
            self._backlog.taken(rec)
        heapq.heappush(self._heaps.setdefault(rec.key, []), (-rec.priority, rec.seq, rec))
        if rec.deadline is not None:
            heapq.heappush(self._deadlines, (rec.deadline, rec.seq, rec))

    def _page_in(self, key: RoutingKey, heap: list[_HeapEntry] | None) -> list[_HeapEntry] | None:
        """`key`'s heap with its true best on top: the next pages of the database's
        backlog read first while the top may not be the best (taskbacklog.py)."""
        backlog = self._backlog
        while backlog is not None:
            while heap and heap[0][2].state != _PENDING:
                heapq.heappop(heap)
            if not backlog.needs_page(key, heap[0][:2] if heap else None):
                break
            tasks = self._tasks
            for rec in backlog.page(key):
                if rec.task_id not in tasks:
                    self._adopt(rec)
            heap = self._heaps.get(key)
            if not backlog:
                self._backlog = None
        return heap

    # -- replicas (`--store jetstream`, aether_hub/taskreplica.py) ------------------------

    def attach(self, replica: TaskReplication) -> None:
        """Share the tasks with the other replicas through `replica` (before serving)."""
        if self._store is not None:
            raise ValueError("a replicated queue keeps no SQLite task store")
        self._replica = replica
        self.hub_id = replica.hub_id
        self._seq = replica_sequence(self._clock.time)

    @property
    def replica(self) -> TaskReplication | None:
        """The link to the other replicas, with `--store jetstream`."""
        return self._replica

    @property
    def leases_need_storing(self) -> bool:
        """Whether an assignment must wait until its lease is stored (replicas race for
        the same tasks: only the stored lease may run)."""
        return self._replica is not None

    def lease_stored(self, session: Session, task_id: str) -> bool:
        """Whether `session`'s lease of `task_id` is stored (always, with one Hub)."""
        replica = self._replica
        if replica is None:
            return True
        rec = session.leases.get(task_id)
        if rec is None:
            return True  # nothing of this session's to wait for (never blocks the stream)
        return rec.rev > 0 and not replica.writing(task_id)

    def known_rev(self, task_id: str) -> int | None:
        """The stored revision of the task held (0: not stored yet), None if not held."""
        rec = self._tasks.get(task_id)
        return None if rec is None else rec.rev

    def apply_remote(self, remote: TaskRecord, *, force: bool = False) -> None:
        """Take a task as another replica stored it (newer than the version held; with
        `force` whatever its revision: the bucket is the truth)."""
        rec = self._tasks.get(remote.task_id)
        if rec is None:
            self._adopt(remote)
            if remote.state == _PENDING:
                self._offer(remote.key)
            elif remote.terminal:
                self._trim_terminal()
            return
        if remote.rev <= rec.rev and not force:
            return
        if rec.rev == 0:
            # Never stored from here: another replica created the task first (the same
            # idempotency key through both). Its submission stands, every field of it.
            self._index.drop(rec)
            for name in _SUBMITTED_FIELDS:
                setattr(rec, name, getattr(remote, name))
            rec._created_dt = rec._deadline_dt = None
            self._index.note(rec)
        was_terminal, was_pending = rec.terminal, rec.state == _PENDING
        holder = self._sessions.get(rec.session_id) if rec.session_id else None
        if holder is not None and remote.session_id != rec.session_id:
            self._lease_lost(rec, holder, remote)
        for name in _REPLICATED_FIELDS:
            setattr(rec, name, getattr(remote, name))
        rec.rev = remote.rev
        if rec.idempotency_key:
            self._idempotency.setdefault(rec.idempotency_key, rec.task_id)
        self._note_workflow(rec, rec.assigned_agent_id)
        self._observe(rec)
        if rec.terminal and not was_terminal:
            self._retire(rec)
        elif rec.state == _PENDING and not was_pending:
            self._enqueue(rec)

    def _lease_lost(self, rec: TaskRecord, holder: Session, remote: TaskRecord) -> None:
        """`holder`'s lease of `rec` is not the stored one: another replica finished,
        cancelled or requeued the task, or leased it first."""
        if holder.leases.pop(rec.task_id, None) is None:
            return
        for event in holder.unsent:
            if event.assignment is not None and event.assignment.task_id == rec.task_id:
                # Never sent (the usual race of two replicas for one pending task): the
                # agent knows nothing of it.
                holder.unsent.remove(event)
                self._fill(holder)
                return
        log.info(
            "task %s: agent %r runs it but its lease is gone (stored: %s, agent %r,"
            " replica %r); it is told to stop",
            rec.task_id,
            holder.agent_id,
            state_name(remote.state),
            remote.assigned_agent_id,
            remote.hub_id,
        )
        if remote.terminal:
            reason = remote.error_message or f"finished as {state_name(remote.state)}"
            # The handler runs until the agent reports back: keep its slot (a zombie).
            holder.leases[rec.task_id] = rec
        else:
            reason = "the lease of this task was lost; it runs elsewhere"
        holder.unsent.append(
            pb.TaskStreamEvent(cancel=pb.TaskCancellation(task_id=rec.task_id, reason=reason))
        )
        holder.wake.set()
        self._fill(holder)

    def remote_deleted(self, task_id: str) -> None:
        """Another replica dropped the finished task `task_id` from the bucket."""
        rec = self._tasks.get(task_id)
        if rec is None or not rec.terminal:
            return
        self._terminal_bytes -= self._terminal_order.pop(task_id, 0)
        self._forget_record(rec, replicated=True)

    def requeue_orphans(self, dead: Callable[[str], bool], *, count_attempt: bool) -> int:
        """Put back the tasks leased through the replicas that are `dead`; how many."""
        requeued = 0
        how = "stopped answering" if count_attempt else "stopped"
        for rec in list(self._tasks.values()):
            hub = rec.hub_id
            if hub and hub != self.hub_id and rec.state in (_LEASED, _RUNNING) and dead(hub):
                reason = f"Hub replica {hub} {how}"
                if self._requeue(rec, count_attempt=count_attempt, reason=reason):
                    requeued += 1
        return requeued

    # -- lookups ------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord | None:
        """The task `task_id` (from memory, else from the database), or None."""
        rec = self._tasks.get(task_id)
        if rec is None and self._store is not None:
            rec = self._store.fetch(task_id)
            backlog = self._backlog
            if rec is not None and not rec.terminal and backlog and rec.seq <= backlog.max_seq:
                # A pending task of the database not read yet: held from now on, so that
                # every caller (watchers, CancelTask, the dispatcher) shares one record.
                self._adopt(rec)
                if not self._backlog:
                    self._backlog = None
        return rec

    async def settled(self, rec: TaskRecord) -> None:
        """Return once the task's changes made here are stored (at once with one Hub):
        a reader is never shown a state that a lost race may still take back."""
        replica = self._replica
        if replica is not None and replica.writing(rec.task_id):
            await replica.durable()

    async def read_barrier(self) -> None:
        """With replicas: return once this replica holds every change stored before the
        call, its own included (`TaskReplication.caught_up`), so that a read through any
        replica sees every acknowledged change and never goes back in time."""
        replica = self._replica
        if replica is not None:
            if replica.pending:
                await replica.durable()
            await replica.caught_up()

    async def ensure_known(self, task_id: str) -> None:
        """With replicas: hold task `task_id` if the bucket has it (a result may come from
        an agent that moved here before this replica's watch brought the task)."""
        if self._replica is not None and task_id and task_id not in self._tasks:
            await self.lookup(task_id)

    async def lookup(self, task_id: str) -> TaskRecord | None:
        """`get`, and with replicas the bucket for a task this one has not seen yet (one
        submitted through another replica a moment ago)."""
        rec = self.get(task_id)
        replica = self._replica
        if rec is None and replica is not None:
            remote = await replica.fetch(task_id)
            if remote is not None:
                self.apply_remote(remote)
                rec = self._tasks.get(task_id)
        return rec

    def __len__(self) -> int:
        return len(self._tasks)

    def _note_workflow(self, rec: TaskRecord, agent_id: str) -> None:
        if rec.workflow_id and agent_id:
            self._workflow_agents.setdefault(rec.workflow_id, set()).add(agent_id)

    def agent_may_use_task(self, agent_id: str, task_id: str) -> bool:
        """Whether `agent_id` submitted or runs (ran) task `task_id` (task-scope memory)."""
        rec = self.get(task_id)
        return rec is not None and agent_id in (rec.submitted_by, rec.assigned_agent_id)

    def agent_in_workflow(self, agent_id: str, workflow_id: str) -> bool:
        """Whether `agent_id` submitted or ran a task of `workflow_id` (workflow memory)."""
        if agent_id in self._workflow_agents.get(workflow_id, ()):
            return True
        backlog = self._backlog
        return backlog is not None and backlog.in_workflow(workflow_id, agent_id)

    @property
    def list_examined(self) -> int:
        """Records `list_tasks` has looked at so far (its cost; for tests)."""
        return self._index.examined

    def records(self) -> list[TaskRecord]:
        """Every task held in memory, oldest first (for tests and tooling)."""
        return list(self._tasks.values())

    def state_counts(self) -> dict[tuple[int, str, str], int]:
        """Tasks held in memory per (state, task type, target agent id); O(kinds)."""
        return self._index.counts()

    def pending_by_type(self) -> dict[str, int]:
        """Pending tasks per task type ("" = untyped); O(queued), for metrics."""
        counts: dict[str, int] = {}
        for heap in self._heaps.values():
            for _, _, rec in heap:
                # Heaps keep entries of tasks that left the queue until they reach the top.
                if rec.state == _PENDING:
                    counts[rec.task_type] = counts.get(rec.task_type, 0) + 1
        for (task_type, _), n in self.backlog_counts().items():
            counts[task_type] = counts.get(task_type, 0) + n
        return counts

    def backlog_counts(self) -> dict[tuple[str, str], int]:
        """Pending tasks still only in the database, per (task type, target agent id)."""
        return self._backlog.counts() if self._backlog is not None else {}

    def running_by_type(self) -> dict[str, int]:
        """Leased, unfinished tasks per task type ("" = untyped); O(leases), for metrics."""
        counts: dict[str, int] = {}
        for session in self._sessions.values():
            for rec in session.leases.values():
                if rec.state in (_LEASED, _RUNNING):
                    counts[rec.task_type] = counts.get(rec.task_type, 0) + 1
        return counts

    # -- submit -------------------------------------------------------------------------

    def submit(self, sub: TaskSubmission) -> TaskRecord:
        """Queue a task (or return the earlier one with the same idempotency key).

        Without waiting for the store: the in-memory Hub's path, and tests. `submit_durably`
        is what `SubmitTask` uses.
        """
        rec, fresh = self._create(sub)
        if fresh:
            self._admit(rec)
        return rec

    async def submit_durably(self, sub: TaskSubmission) -> TaskRecord:
        """Queue a task once it is stored: nobody runs it, and nobody is told it exists,
        before the store committed it. Raises `StoreUnavailableError` (and forgets the
        task) when the store cannot write it."""
        if self._store is None and self._replica is None:
            return self.submit(sub)
        rec, fresh = self._create(sub)
        try:
            await self.durable()
        except StoreUnavailableError:
            if fresh:
                self._discard(rec)
            raise
        if fresh:
            self._admit(rec)
        return rec

    async def submit_many_durably(self, subs: Sequence[TaskSubmission]) -> list[TaskRecord]:
        """`submit_durably` for several tasks with one wait for the store (SubmitTasks).

        Each task is created in order (or found by its idempotency key, also one given
        earlier in `subs`), all are stored in one commit, then queued in order. Raises
        `StoreUnavailableError` (and forgets every new task) when the store cannot write
        them.
        """
        created = [self._create(sub) for sub in subs]
        if self._store is not None or self._replica is not None:
            try:
                await self.durable()
            except StoreUnavailableError:
                for rec, fresh in created:
                    if fresh:
                        self._discard(rec)
                raise
        for rec, fresh in created:
            if fresh:
                self._admit(rec)
        return [rec for rec, _ in created]

    async def durable(self) -> None:
        """Return once every change made so far is stored (at once without `--db`)."""
        if self._store is not None:
            await self._store.durable()
        elif self._replica is not None:
            await self._replica.durable()

    def _create(self, sub: TaskSubmission) -> tuple[TaskRecord, bool]:
        """The new task's record (marked for the store, not yet queued), and True; or the
        earlier task with the same idempotency key, and False."""
        if sub.idempotency_key:
            earlier = self._by_idempotency_key(sub.idempotency_key)
            if earlier is not None:
                return earlier, False
        now = self._clock.time()
        task_id = secrets.token_hex(12)
        if sub.idempotency_key and self._replica is not None:
            # One id per key across replicas: a second replica's create of the same key
            # loses the race and takes the first one's task (taskreplica.py).
            task_id = hashlib.sha256(sub.idempotency_key.encode()).hexdigest()[:24]
        rec = TaskRecord(
            task_id=task_id,
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
            submitted_by=sub.submitted_by,
        )
        self._tasks[rec.task_id] = rec
        if sub.idempotency_key:
            self._idempotency[sub.idempotency_key] = rec.task_id
        self._note_workflow(rec, sub.submitted_by)
        self._changed(rec)
        return rec, True

    def _admit(self, rec: TaskRecord) -> None:
        """Start the task's clock and offer it to the agents."""
        if self.metrics is not None:
            self.metrics.task_submitted()
        if rec.terminal:
            return  # cancelled while it was being stored
        if rec.deadline is not None:
            heapq.heappush(self._deadlines, (rec.deadline, rec.seq, rec))
        self._enqueue(rec)

    def _discard(self, rec: TaskRecord) -> None:
        """Forget a task whose submission was refused (never acknowledged, never queued)."""
        if self._tasks.get(rec.task_id) is rec:
            del self._tasks[rec.task_id]
            self._index.drop(rec)
        if rec.idempotency_key and self._idempotency.get(rec.idempotency_key) == rec.task_id:
            del self._idempotency[rec.idempotency_key]
        if self._store is not None:
            self._store.forget(rec.task_id)
        if self._replica is not None:
            self._replica.forget(rec.task_id)

    def _by_idempotency_key(self, key: str) -> TaskRecord | None:
        task_id = self._idempotency.get(key)
        if task_id is None and self._store is not None:
            task_id = self._store.find_by_idempotency_key(key)
        return None if task_id is None else self.get(task_id)

    # -- dispatch -----------------------------------------------------------------------

    def _enqueue(self, rec: TaskRecord) -> None:
        key = rec.key
        heapq.heappush(self._heaps.setdefault(key, []), (-rec.priority, rec.seq, rec))
        self._offer(key)

    def _offer(self, key: RoutingKey) -> None:
        """Give a free session eligible for `key` the chance to take its tasks."""
        sessions = self._by_key.get(key)
        if not sessions:
            return
        n = len(sessions)
        start = self._rr.get(key, 0) % n
        for i in range(n):
            session = sessions[(start + i) % n]
            if session.has_room:
                self._rr[key] = (start + i + 1) % n
                self._fill(session)
                return

    def _fill(self, session: Session) -> None:
        """Lease the best waiting tasks to `session` while it has room."""
        heaps = self._heaps
        while session.has_room:
            best: _HeapEntry | None = None
            best_heap: list[_HeapEntry] | None = None
            for key in session.routing_keys:
                heap = heaps.get(key)
                if self._backlog is not None:  # a restarted Hub's pending tasks
                    heap = self._page_in(key, heap)
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
            self._lease(best[2], session)

    def _lease(self, rec: TaskRecord, session: Session) -> None:
        rec.state = _LEASED
        rec.attempt += 1
        rec.session_id = session.session_id
        rec.hub_id = self.hub_id
        rec.assigned_agent_id = session.agent_id
        self._note_workflow(rec, session.agent_id)
        now = self._clock.time()
        if self.metrics is not None:
            # While pending, updated_at is when the task entered the queue (submitted,
            # requeued or restored): nothing else changes a pending task.
            self.metrics.task_leased(now - rec.updated_at)
        rec.leased_at = rec.updated_at = now
        session.leases[rec.task_id] = rec
        assignment = tracing.dispatch_assignment(rec, session.agent_id)
        session.unsent.append(pb.TaskStreamEvent(assignment=assignment))
        session.wake.set()
        self._changed(rec)

    # -- sessions and streams -------------------------------------------------------------

    def add_session(self, session: Session) -> None:
        """Take on a newly registered session (it takes tasks once it streams)."""
        self._sessions[session.session_id] = session
        if self._replica is not None:
            self._replica.agents_changed()

    def open_stream(self, session: Session, max_concurrent_tasks: int = 0) -> int:
        """Start feeding the session's task stream; returns the stream's number.

        A session has one stream: a second one replaces the first, and the tasks leased
        through the first go back to the queue (the agent may never have seen them).
        """
        if not session.live or self._sessions.get(session.session_id) is not session:
            raise GRPCError(Status.UNAUTHENTICATED, "session ended; register again")
        if session.streaming:
            self._stop_streaming(session, "task stream replaced by a newer one")
        if max_concurrent_tasks > 0:
            session.capacity = max_concurrent_tasks
        session.stream_gen += 1
        session.stream = StreamState.OPEN
        for key in session.routing_keys:
            self._by_key.setdefault(key, []).append(session)
        self._fill(session)
        return session.stream_gen

    def close_stream(self, session: Session, gen: int, *, connection_lost: bool = True) -> int:
        """The stream number `gen` of `session` ended; how many tasks went back to the queue.

        With `connection_lost` (the agent's connection died: a crash, a network failure) its
        leases go back at once, attempt counted. Otherwise the agent cancelled the call on
        a live connection, which is how an agent stops taking tasks before it shuts down:
        the tasks it already received stay leased to the still-registered session (their
        results, releases or the Unregister follow), and only assignments that were never
        sent go back, uncounted.
        """
        if not session.live or session.stream_gen != gen or not session.streaming:
            return 0
        if connection_lost and not self.shutting_down:
            return self._stop_streaming(session, f"task stream of agent {session.agent_id!r} broke")
        return self._pause_streaming(session)

    def _unlist(self, session: Session) -> None:
        session.stream = StreamState.NONE
        for key in session.routing_keys:
            sessions = self._by_key.get(key)
            if sessions is not None and session in sessions:
                sessions.remove(session)
                if not sessions:
                    del self._by_key[key]

    def _stop_streaming(self, session: Session, reason: str) -> int:
        self._unlist(session)
        session.unsent.clear()
        # A Hub that shuts down breaks every stream; that is not the tasks' fault.
        return self._release_leases(session, count_attempt=not self.shutting_down, reason=reason)

    def _pause_streaming(self, session: Session) -> int:
        self._unlist(session)
        unsent = [ev.assignment.task_id for ev in session.unsent if ev.assignment is not None]
        # Cancellations still matter to the agent: they wait for its next stream.
        kept = [ev for ev in session.unsent if ev.cancel is not None]
        session.unsent.clear()
        session.unsent.extend(kept)
        requeued = 0
        sid = session.session_id
        for task_id in unsent:
            rec = session.leases.pop(task_id, None)
            if rec is None or rec.terminal or rec.session_id != sid:
                continue
            if self._requeue(rec, count_attempt=False, reason="never sent"):
                requeued += 1
        return requeued

    def session_ended(self, session: Session) -> int:
        """`SessionRegistry.end` ended `session`: its stream stops, its leases go back.

        The attempt counts when the session was lost (`session.state.counts_attempt`:
        missed heartbeats, replaced), not for an orderly Unregister. Returns how many
        tasks were requeued.
        """
        if self._sessions.pop(session.session_id, None) is None:
            return 0
        if self._replica is not None:
            self._replica.agents_changed()
        if session.streaming:
            self._unlist(session)
        session.unsent.clear()
        requeued = self._release_leases(
            session, count_attempt=session.state.counts_attempt, reason=session.end_reason
        )
        # Wake the stream handler so it sees the end (and the end_error to fail with).
        session.wake.set()
        return requeued

    def _release_leases(self, session: Session, *, count_attempt: bool, reason: str) -> int:
        leases = list(session.leases.values())
        session.leases.clear()
        requeued = 0
        for rec in leases:
            if rec.terminal or rec.session_id != session.session_id:
                continue
            if self._requeue(rec, count_attempt=count_attempt, reason=reason):
                requeued += 1
        return requeued

    def _requeue(self, rec: TaskRecord, *, count_attempt: bool, reason: str) -> bool:
        """Put a leased task back; False when it ran out of attempts and failed instead."""
        rec.session_id = ""
        rec.hub_id = ""
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
        if self.metrics is not None:
            self.metrics.task_requeued()
        return True

    # -- agent reports ------------------------------------------------------------------

    def _owned(self, session: Session, task_id: str) -> TaskRecord:
        """The task, if `session`'s agent may report on it; else PERMISSION_DENIED/NOT_FOUND."""
        rec = session.leases.get(task_id)
        if rec is not None:
            return rec
        rec = self.get(task_id)
        if rec is None:
            raise GRPCError(Status.NOT_FOUND, f"unknown task {task_id!r}")
        # A result that outlived its session (the agent re-registered, its outbox flushes)
        # still counts when nobody else holds the task now.
        if (
            rec.assigned_agent_id == session.agent_id
            and not rec.terminal
            and (
                rec.state == _PENDING
                or self._lease_agent(rec) == session.agent_id
                # Leased through another replica to this very agent, which then moved
                # here (its replica died or it lost the connection): its result counts.
                or (rec.hub_id != "" and rec.hub_id != self.hub_id)
            )
        ):
            return rec
        if rec.terminal:
            # Finished: a late repeat from anyone is only acknowledged as a duplicate (an
            # agent whose lease expired may still flush its result after another finished).
            return rec
        raise GRPCError(
            Status.PERMISSION_DENIED,
            f"task {task_id!r} is not leased to this session (agent {session.agent_id!r})",
        )

    def _lease_agent(self, rec: TaskRecord) -> str:
        holder = self._sessions.get(rec.session_id) if rec.session_id else None
        return holder.agent_id if holder is not None else ""

    def report_status(self, session: Session, status: pb.TaskStatus) -> bool:
        """Record progress of a leased task; whether it was recorded (False once finished)."""
        if not status.task_id:
            raise invalid("task_id", "is required")
        progress = float(status.progress)
        if math.isnan(progress) or not 0.0 <= progress <= 1.0:
            raise invalid("progress", f"must be between 0.0 and 1.0, not {status.progress!r}")
        rec = self._owned(session, status.task_id)
        if rec.terminal or rec.state == _PENDING:
            # Finished, or back in the queue after its lease ended: nothing runs it now.
            return False
        rec.state = _RUNNING
        rec.progress = progress
        rec.status_message = status.message
        rec.updated_at = self._clock.time()
        self._changed(rec)
        return True

    def record_result(self, session: Session, result: pb.TaskResult) -> pb.SubmitResultResponse:
        """Apply a result: first terminal result wins, repeats are duplicates."""
        task_id = result.task_id
        if not task_id:
            raise invalid("task_id", "is required")
        rec = session.leases.get(task_id)
        if rec is None or rec.session_id != session.session_id:
            rec = self._owned(session, task_id)
        if rec.terminal:
            # A zombie slot (cancelled or timed out while running) is free now.
            if session.leases.pop(task_id, None) is not None:
                self._fill(session)
            return pb.SubmitResultResponse(
                task_id=task_id,
                accepted=True,
                duplicate=True,
                message=f"task already finished as {state_name(rec.state)}",
            )
        if result.released:
            # Graceful shutdown: the agent hands the task back unfinished and takes no more
            # (set before the lease is dropped, or the freed slot would be refilled).
            if session.stream is StreamState.OPEN:
                session.stream = StreamState.DRAINING
            if rec.state == _PENDING:
                return pb.SubmitResultResponse(
                    task_id=task_id, accepted=True, message="already back in the queue"
                )
        self._detach(rec)
        if result.released:
            self._requeue(rec, count_attempt=False, reason="released by the agent")
            self._fill(session)
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
            agent_id=session.agent_id,
        )
        self._fill(session)
        return pb.SubmitResultResponse(task_id=task_id, accepted=True)

    def _detach(self, rec: TaskRecord) -> None:
        """Drop the task's lease from whichever session holds it."""
        if rec.session_id:
            holder = self._sessions.get(rec.session_id)
            if holder is not None and holder.leases.pop(rec.task_id, None) is not None:
                self._fill(holder)
            rec.session_id = ""

    def heartbeat(self, session: Session, running_task_ids: Iterable[str], active: int) -> None:
        """Free slots of finished tasks the agent says it no longer runs."""
        running = set(running_task_ids)
        if len(running) != active:
            return  # an agent that does not list its tasks: keep every slot
        freed = False
        for task_id, rec in list(session.leases.items()):
            if rec.terminal and task_id not in running:
                del session.leases[task_id]
                freed = True
        if freed:
            self._fill(session)

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
            holder = self._sessions.get(rec.session_id)
            if holder is not None and notify_reason:
                # Keep the slot: the handler runs until the agent reports back.
                holder.unsent.append(
                    pb.TaskStreamEvent(
                        cancel=pb.TaskCancellation(task_id=rec.task_id, reason=notify_reason)
                    )
                )
                holder.wake.set()
            elif holder is not None and holder.leases.pop(rec.task_id, None) is not None:
                self._fill(holder)
            rec.session_id = ""
        rec.hub_id = ""
        now = self._clock.time()
        if self.metrics is not None:
            ran = None  # not leased when it ended (e.g. cancelled while pending)
            if rec.leased_at is not None and rec.state in (_LEASED, _RUNNING):
                ran = now - rec.leased_at
            self.metrics.task_finished(state, ran)
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
        self._hold_terminal(rec)
        self._trim_terminal()

    def _hold_terminal(self, rec: TaskRecord) -> None:
        size = len(rec.payload) + len(rec.result)
        self._terminal_bytes += size - self._terminal_order.pop(rec.task_id, 0)
        self._terminal_order[rec.task_id] = size

    def _trim_terminal(self) -> int:
        """Drop the oldest finished tasks from memory while over a retention bound (count,
        bytes of payloads and results, age); how many were dropped."""
        order = self._terminal_order
        cutoff = None
        if self._retention_seconds > 0:
            cutoff = self._clock.time() - self._retention_seconds
        dropped = 0
        while order:
            old_id = next(iter(order))
            old = self._tasks.get(old_id)
            if not (
                len(order) > self._retention
                or self._terminal_bytes > self._retention_bytes
                or (
                    cutoff is not None
                    and old is not None
                    and (old.completed_at or old.updated_at) < cutoff
                )
                or old is None
            ):
                break
            self._terminal_bytes -= order.pop(old_id)
            dropped += 1
            if old is None:
                continue
            self._forget_record(old)
        return dropped

    def _forget_record(self, old: TaskRecord, *, replicated: bool = False) -> None:
        """Drop a finished task from memory (the table keeps it with `--db`; with
        `--store jetstream` it leaves the bucket too, unless `replicated`: another
        replica dropped it)."""
        if self._replica is not None and not replicated:
            self._replica.drop(old.task_id)
        del self._tasks[old.task_id]
        self._index.drop(old)
        if old.idempotency_key and self._idempotency.get(old.idempotency_key) == old.task_id:
            del self._idempotency[old.idempotency_key]

    def terminal_held(self) -> tuple[int, int]:
        """Finished tasks held in memory and the bytes of their payloads and results."""
        return len(self._terminal_order), self._terminal_bytes

    def list_tasks(
        self,
        *,
        state: pb.TaskState = pb.TaskState.UNSPECIFIED,
        agent_id: str = "",
        task_type: str = "",
        workflow_id: str = "",
        limit: int = DEFAULT_LIST_LIMIT,
        page_token: str = "",
        visible_to: str = "",
    ) -> tuple[list[TaskRecord], str]:
        """Tasks matching every given filter, newest first, and the next page's token.

        With `visible_to` (an agent id) only the tasks that agent submitted or runs.
        """
        if limit < 0:
            raise invalid("limit", "must not be negative")
        limit = min(limit or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
        before: int | None = None
        if page_token:
            if not page_token.startswith("s") or not page_token[1:].isdigit():
                raise invalid("page_token", "is not a next_page_token from ListTasks")
            before = int(page_token[1:])
        out: list[TaskRecord] = []
        # The shortest index list that applies, newest first (aether_hub/taskindex.py).
        matches = self._index.query(
            state=state,
            agent_id=agent_id,
            task_type=task_type,
            workflow_id=workflow_id,
            visible_to=visible_to,
            before=before,
        )
        if self._backlog is not None and state in (pb.TaskState.UNSPECIFIED, _PENDING):
            # Pending tasks still only in the database, merged in seq order.
            unread = self._unread_matching(
                before,
                agent_id=agent_id,
                task_type=task_type,
                workflow_id=workflow_id,
                visible_to=visible_to,
            )
            matches = heapq.merge(matches, unread, key=lambda rec: -rec.seq)
        for rec in matches:
            if len(out) == limit:
                return out, f"s{out[-1].seq}"
            out.append(rec)
        return out, ""

    def _unread_matching(
        self,
        before: int | None,
        *,
        agent_id: str,
        task_type: str,
        workflow_id: str,
        visible_to: str,
    ) -> Iterator[TaskRecord]:
        """Pending tasks of the database not held in memory, matching the filters,
        newest first (read for the listing only: nothing is adopted)."""
        backlog, store = self._backlog, self._store
        while backlog is not None and store is not None:
            page = backlog.listing(
                before,
                256,
                agent_id=agent_id,
                task_type=task_type,
                workflow_id=workflow_id,
                visible_to=visible_to,
            )
            for rec in page:
                if rec.task_id not in self._tasks and not store.is_dirty(rec.task_id):
                    yield rec
            if len(page) < 256:
                return
            before = page[-1].seq

    # -- time ---------------------------------------------------------------------------

    def sweep(self) -> int:
        """Time out tasks past their deadline; how many timed out."""
        now = self._clock.time()
        if self._backlog is not None:
            # Pending tasks of the database past their deadline: held, then timed out below.
            for rec in self._backlog.expired(now):
                if rec.task_id not in self._tasks:
                    self._adopt(rec)
            if not self._backlog:
                self._backlog = None
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
        self._trim_terminal()  # finished tasks past the age bound
        return timed_out

    def next_deadline(self) -> float | None:
        """The earliest deadline of an unfinished task (epoch seconds), if any."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].terminal:
            heapq.heappop(deadlines)
        first = deadlines[0][0] if deadlines else None
        later = self._backlog.next_deadline if self._backlog is not None else None
        if later is None or (first is not None and first <= later):
            return first
        return later

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
        elif self._replica is not None:
            self._replica.mark(rec)
        self._observe(rec)

    def _observe(self, rec: TaskRecord) -> None:
        """Index the task's new state and wake its watchers."""
        if self._tasks.get(rec.task_id) is rec:
            self._index.note(rec)
        events = self._watchers.get(rec.task_id)
        if events:
            for event in events:
                event.set()

    def flush(self) -> int:
        """Write changed tasks to the database now (no-op without `--db`)."""
        return self._store.flush() if self._store is not None else 0

    @property
    def store(self) -> TaskStore | None:
        """The task store (group commit), when the Hub runs with `--db`."""
        return self._store


def may_see(caller: Caller, rec: TaskRecord) -> bool:
    """Whether `caller` may get, watch or cancel `rec`: a client any task, an agent the
    tasks it submitted or runs (ran)."""
    return caller.is_client or caller.agent_id in (rec.submitted_by, rec.assigned_agent_id)


def _submit_error(status: Status, message: str) -> pb.SubmitTasksResult:
    """One refused task of a SubmitTasks call."""
    return pb.SubmitTasksResult(error=pb.SubmitTaskError(code=status.value, message=message))


def _denied(caller: Caller, what: str) -> GRPCError:
    return GRPCError(
        Status.PERMISSION_DENIED,
        f"{caller.describe()} (a session token) may not {what}: agents see only the tasks"
        " they submitted or run; use the client token for operator access",
    )


class TaskService(server.TaskServiceBase):
    """`aether.v1.TaskService`: clients submit, follow, cancel and list tasks.

    Roles (`aether_hub.auth.ClientAuth`): the client token may do everything; an agent's
    session token may submit tasks (sub-tasks, recorded as submitted by it), get, watch
    and cancel the tasks it submitted or runs, and list only those; ListAgents and
    GetQueueStats are for clients. Anything else is PERMISSION_DENIED.
    """

    def __init__(self, queue: TaskQueue, auth: ClientAuth, sessions: SessionRegistry) -> None:
        self._queue = queue
        self._auth = auth
        self._sessions = sessions

    async def submit_task(
        self, request: pb.SubmitTaskRequest, context: runtime.ServerContext
    ) -> pb.SubmitTaskResponse:
        """Queue a task."""
        caller = self._auth.check(context)
        sub = TaskSubmission.from_request(request, submitted_by=caller.agent_id)
        tracing.stamp_submission(sub.metadata, context.metadata)
        rec = await self._queue.submit_durably(sub)
        if rec.submitted_by != caller.agent_id and not caller.is_client:
            # An idempotency key of someone else's task: not the caller's to see.
            raise GRPCError(
                Status.PERMISSION_DENIED,
                f"idempotency_key: names a task {caller.describe()} did not submit;"
                " use keys of your own",
            )
        return pb.SubmitTaskResponse(task_id=rec.task_id)

    async def submit_tasks(
        self, request: pb.SubmitTasksRequest, context: runtime.ServerContext
    ) -> pb.SubmitTasksResponse:
        """Queue several tasks, each as `submit_task` would (same checks, roles, trace
        context and idempotency keys), with one wait for the store; one result per task,
        in order: its id, or the status `submit_task` would have failed with."""
        caller = self._auth.check(context)
        if len(request.tasks) > MAX_SUBMIT_BATCH:
            raise invalid(
                "tasks",
                f"at most {MAX_SUBMIT_BATCH} tasks per SubmitTasks call, got"
                f" {len(request.tasks)}; split the batch",
            )
        results: list[pb.SubmitTasksResult | None] = []
        subs: list[TaskSubmission] = []
        for task in request.tasks:
            try:
                sub = TaskSubmission.from_request(task, submitted_by=caller.agent_id)
            except GRPCError as exc:
                results.append(_submit_error(exc.status, exc.message or ""))
                continue
            tracing.stamp_submission(sub.metadata, context.metadata)
            subs.append(sub)
            results.append(None)
        records = iter(await self._queue.submit_many_durably(subs))
        for i, result in enumerate(results):
            if result is not None:
                continue
            rec = next(records)
            if rec.submitted_by != caller.agent_id and not caller.is_client:
                results[i] = _submit_error(
                    Status.PERMISSION_DENIED,
                    f"idempotency_key: names a task {caller.describe()} did not submit;"
                    " use keys of your own",
                )
            else:
                results[i] = pb.SubmitTasksResult(
                    submitted=pb.SubmitTaskResponse(task_id=rec.task_id)
                )
        return pb.SubmitTasksResponse(results=[r for r in results if r is not None])

    async def get_task(self, request: pb.GetTaskRequest, context: runtime.ServerContext) -> pb.Task:
        """One task; NOT_FOUND when unknown."""
        caller = self._auth.check(context)
        await self._queue.read_barrier()
        return (await self._require(request.task_id, caller, "get")).to_pb()

    async def watch_task(
        self, request: pb.WatchTaskRequest, context: runtime.ServerContext
    ) -> AsyncIterator[pb.TaskUpdate]:
        """The task now, then after every change, until it is terminal."""
        caller = self._auth.check(context)
        await self._queue.read_barrier()
        rec = await self._require(request.task_id, caller, "watch")
        event = self._queue.watch(rec.task_id)
        try:
            yield pb.TaskUpdate(task=rec.to_pb())
            while not rec.terminal:
                await event.wait()
                event.clear()
                await self._queue.settled(rec)
                yield pb.TaskUpdate(task=rec.to_pb())
        finally:
            self._queue.unwatch(rec.task_id, event)

    async def cancel_task(
        self, request: pb.CancelTaskRequest, context: runtime.ServerContext
    ) -> pb.CancelTaskResponse:
        """Cancel a pending or running task."""
        caller = self._auth.check(context)
        await self._queue.read_barrier()
        rec = await self._require(request.task_id, caller, "cancel")
        while True:
            reply = self._queue.cancel(request.task_id, request.reason)
            await self._queue.durable()
            if not reply.success or rec.state == _CANCELLED:
                return reply
            # Replicas: another one changed the task first and its change stands.
            if rec.terminal:
                return pb.CancelTaskResponse(
                    success=False,
                    state=rec.state,
                    message=f"task already finished as {state_name(rec.state)}",
                )

    async def list_tasks(
        self, request: pb.ListTasksRequest, context: runtime.ServerContext
    ) -> pb.ListTasksResponse:
        """Tasks matching the filters, newest first, one page at a time (an agent: only
        the tasks it submitted or runs)."""
        caller = self._auth.check(context)
        await self._queue.read_barrier()
        records, token = self._queue.list_tasks(
            state=request.state,
            agent_id=request.agent_id,
            task_type=request.task_type,
            workflow_id=request.workflow_id,
            limit=request.limit,
            page_token=request.page_token,
            visible_to=caller.agent_id,
        )
        # A page never exceeds the message limit: it ends early when the next task would
        # not fit (room is kept for the token and the framing).
        budget = max(1024, self.max_message_bytes - 1024)
        used = 0
        tasks: list[pb.Task] = []
        for i, rec in enumerate(records):
            task = rec.to_pb(payloads=request.include_payloads)
            size = len(bytes(task)) + 8  # field tag and length prefix
            if size > budget and request.include_payloads and not tasks:
                task = rec.to_pb(payloads=False)  # too large alone: GetTask has the rest
                size = len(bytes(task)) + 8
            if tasks and used + size > budget:
                token = f"s{records[i - 1].seq}"
                break
            tasks.append(task)
            used += size
        return pb.ListTasksResponse(tasks=tasks, next_page_token=token)

    async def list_agents(
        self, request: pb.ListAgentsRequest, context: runtime.ServerContext
    ) -> pb.ListAgentsResponse:
        """The agents with a live session (aether_hub/inspection.py); clients only."""
        caller = self._auth.check(context)
        if not caller.is_client:
            raise _denied(caller, "list the connected agents")
        reply = inspection.agent_infos(self._sessions.live(), request)
        replica = self._queue.replica
        if replica is not None:
            # The agents of the other replicas, as their last announcement listed them.
            reply.agents += [
                info
                for info in replica.remote_agents()
                if (not request.agent_id or info.agent_id == request.agent_id)
                and (not request.task_type or request.task_type in info.task_types)
            ]
            reply.agents.sort(key=lambda info: info.agent_id)
        return reply

    async def get_queue_stats(
        self, request: pb.GetQueueStatsRequest, context: runtime.ServerContext
    ) -> pb.QueueStats:
        """Queued and running tasks per type (aether_hub/inspection.py); clients only."""
        caller = self._auth.check(context)
        if not caller.is_client:
            raise _denied(caller, "read the queue statistics")
        await self._queue.read_barrier()
        return inspection.queue_stats(
            self._sessions.live(), self._queue.state_counts(), self._queue.backlog_counts()
        )

    async def _require(self, task_id: str, caller: Caller, action: str) -> TaskRecord:
        if not task_id:
            raise invalid("task_id", "is required")
        bind_task(task_id)  # the rest of this call's log records name the task
        rec = await self._queue.lookup(task_id)
        if rec is None:
            raise GRPCError(Status.NOT_FOUND, f"unknown task {task_id!r}")
        if not may_see(caller, rec):
            raise _denied(caller, f"{action} task {task_id!r}")
        return rec
