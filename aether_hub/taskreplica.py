"""Tasks shared by several Hub replicas through NATS JetStream (`--store jetstream`).

Every replica holds the whole task table in memory (the same `TaskQueue` as one Hub, so
priorities, task types and target agents route exactly as they do there) and keeps it in
step with a JetStream key-value bucket, ``AETHER_TASKS``, one key per task:

- **Writes** are compare-and-set on the key's revision (`Nats-Expected-Last-Subject-
  Sequence`). A replica's changes are written in rounds, one at a time, each round
  carrying every change made since the last one (group commit); an RPC that needs its
  change stored (`TaskQueue.durable`) waits for the round that carries it. A write is
  acknowledged by the stream's quorum (R1, R3) before the round ends.
- **A lost race** (another replica changed the task first: two replicas leasing the same
  pending task, a result against a cancellation) reads the key again and takes the
  stored version: the other replica won, and the local state follows (`TaskQueue.
  apply_remote` moves leases, tells agents to stop, wakes watchers).
- **Other replicas' changes** arrive through a watch of the bucket (an ordered consumer)
  and go through the same `apply_remote`.
- **Liveness**: each replica puts its key in ``AETHER_HUBS`` every `timeout / 4` seconds
  and soon after an agent connects or leaves, with its connected agents (`ListAgents` on
  any replica lists them all). A replica not heard from for `timeout` seconds is dead: the
  surviving replicas put the tasks it had leased back in the queue (attempt counted), each
  move a compare-and-set, so exactly one replica makes it. A replica that cannot reach
  JetStream itself judges nobody. One that stops in order deletes its key, and its leases
  go back at once (attempt not counted).
- An assignment goes to the agent only once its lease is stored (`AgentService`
  waits for `TaskQueue.durable` when `leases_need_storing`), so a task is never run by
  two agents unless a lease was lost (its replica died or was cut off for `timeout`).

JetStream's own mechanisms do the distributed part: revisions for compare-and-set, the
watch for change delivery, `max_age`-free buckets with a configurable replica count for
durability. There is no lock manager and no consensus here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from aether_hub._wire import pb
from aether_hub.taskrecord import TaskRecord
from aether_hub.taskstore import StoreUnavailableError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = (
    "HUBS_BUCKET",
    "TASKS_BUCKET",
    "ReplicaSink",
    "TaskReplication",
    "decode_record",
    "encode_record",
    "replica_sequence",
)

log = logging.getLogger("aether_hub.taskreplica")

TASKS_BUCKET = "AETHER_TASKS"
HUBS_BUCKET = "AETHER_HUBS"
_TASK = "t."
_HUB = "h."
# Seconds a purge marker of a retired task stays in the bucket (see `drop`).
_MARKER_TTL = 300.0
# Seconds a write round may take before it counts as failed (the store is unavailable).
_WRITE_TIMEOUT = 5.0
# Seconds between attempts while writes fail.
_RETRY_DELAY = 0.5
# Seconds a starting replica keeps trying to open the buckets and announce itself.
_OPEN_PATIENCE = 30.0
# How often the watch of the task bucket is checked, and how long it may stay behind the
# bucket without progress before it is made again.
_STALL_CHECK_SECONDS = 0.5
_STALL_SECONDS = 1.5
# Seconds to wait for the bucket's newest revision, and for this replica to catch up
# with it before a read (`caught_up`).
_INFO_TIMEOUT = 2.0
_CATCH_UP_TIMEOUT = 10.0
# A write that lost a compare-and-set without a newer version to be found: how often it
# asks again, and the pause before the n-th time (n times this).
_RACE_ATTEMPTS = 5
_RACE_PAUSE = 0.02
_KV_OPERATION = "KV-Operation"
# JetStream's error code for "no message found" (a 404 that really means no such key).
_NO_MESSAGE_FOUND = 10037
_MARKER_REASON = "Nats-Marker-Reason"


class ReplicaSink(Protocol):
    """What the replication needs of the task queue (`TaskQueue` is one)."""

    def known_rev(self, task_id: str) -> int | None:
        """The revision the queue holds of `task_id`, None when it holds no such task."""

    def apply_remote(self, remote: TaskRecord, *, force: bool = False) -> None:
        """Take the stored version `remote` of a task (newer than the one held, or
        whatever its revision with `force`)."""

    def remote_deleted(self, task_id: str) -> None:
        """Another replica dropped the finished task `task_id` (retention)."""

    def requeue_orphans(self, dead: Callable[[str], bool], *, count_attempt: bool) -> int:
        """Put back the tasks leased through the replicas that are `dead`; how many."""


def encode_record(rec: TaskRecord) -> bytes:
    """The stored form of a task (JSON; payload and result in base64)."""
    return json.dumps(
        {
            "id": rec.task_id,
            "seq": rec.seq,
            "d": rec.description,
            "p": base64.b64encode(rec.payload).decode(),
            "type": rec.task_type,
            "to": rec.target_agent_id,
            "pri": rec.priority,
            "meta": rec.metadata,
            "wf": rec.workflow_id,
            "max": rec.max_attempts,
            "c": rec.created_at,
            "dl": rec.deadline,
            "ik": rec.idempotency_key,
            "s": int(rec.state),
            "a": rec.attempt,
            "ag": rec.assigned_agent_id,
            "sid": rec.session_id,
            "hub": rec.hub_id,
            "pr": rec.progress,
            "sm": rec.status_message,
            "r": base64.b64encode(rec.result).decode(),
            "e": rec.error_message,
            "m": rec.metrics,
            "u": rec.updated_at,
            "done": rec.completed_at,
            "by": rec.submitted_by,
        },
        separators=(",", ":"),
    ).encode()


def decode_record(data: bytes, rev: int) -> TaskRecord:
    """The task stored as `data` at revision `rev`; ValueError when it is not one."""
    try:
        d = json.loads(data)
        return TaskRecord(
            task_id=str(d["id"]),
            seq=int(d["seq"]),
            description=str(d["d"]),
            payload=base64.b64decode(d["p"]),
            task_type=str(d["type"]),
            target_agent_id=str(d["to"]),
            priority=int(d["pri"]),
            metadata={str(k): str(v) for k, v in d["meta"].items()},
            workflow_id=str(d["wf"]),
            max_attempts=int(d["max"]),
            created_at=float(d["c"]),
            deadline=None if d["dl"] is None else float(d["dl"]),
            idempotency_key=str(d["ik"]),
            state=_state(int(d["s"])),
            attempt=int(d["a"]),
            assigned_agent_id=str(d["ag"]),
            session_id=str(d["sid"]),
            hub_id=str(d["hub"]),
            progress=float(d["pr"]),
            status_message=str(d["sm"]),
            result=base64.b64decode(d["r"]),
            error_message=str(d["e"]),
            metrics={str(k): str(v) for k, v in d["m"].items()},
            updated_at=float(d["u"]),
            completed_at=None if d["done"] is None else float(d["done"]),
            submitted_by=str(d["by"]),
            rev=rev,
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"not a stored task: {exc}") from None


_STATES = {int(state): state for state in pb.TaskState}


def _state(number: int) -> pb.TaskState:
    state = _STATES.get(number)
    if state is None:
        raise ValueError(f"unknown task state {number}")
    return state


def replica_sequence(clock: Callable[[], float] = time.time) -> Iterator[int]:
    """Submission numbers unique across replicas and increasing within one.

    The microseconds of the wall clock, shifted left 12 bits, plus a random 12-bit number
    fixed for this replica: two replicas collide only when they draw the same number and
    submit in the same microsecond. Across replicas the order is the clocks' order.
    """
    slot = secrets.randbelow(4096)
    last = 0
    while True:
        now = max(int(clock() * 1_000_000), last + 1)
        last = now
        yield (now << 12) | slot


class _UnsettledError(Exception):
    """A write neither stored nor superseded by a stored version (retried)."""


def _nats_errors() -> tuple[type[BaseException], ...]:
    import nats.errors

    return (nats.errors.Error, asyncio.TimeoutError, OSError, _UnsettledError)


class TaskReplication:
    """This replica's link to the shared task bucket (see the module docstring)."""

    def __init__(
        self,
        client: Client,
        tasks: KeyValue,
        hubs: KeyValue,
        *,
        hub_id: str,
        timeout: float,
        agents: Callable[[], pb.ListAgentsResponse],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nc = client
        self._tasks = tasks
        self._hubs = hubs
        self.hub_id = hub_id
        self.timeout = timeout
        self._agents = agents
        self._monotonic = monotonic
        self._sink: ReplicaSink | None = None
        self._dirty: dict[str, TaskRecord] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._round: asyncio.Task[None] | None = None
        # Keys written by the round in flight; watch entries for them wait for its end.
        self._writing: set[str] = set()
        self._stashed: dict[str, tuple[bytes, int, bool]] = {}
        self._failing: str | None = None
        self._loops: list[asyncio.Task[None]] = []
        # Other replicas: when each was last heard from (monotonic), and its agents.
        # Per replica: when (monotonic) a new revision of its key arrived, and that revision.
        # A watch that restarts delivers old entries again: they do not count as news.
        self._seen: dict[str, tuple[float, int]] = {}
        self._remote_agents: dict[str, pb.ListAgentsResponse] = {}
        self._dead: set[str] = set()
        self._started_at = monotonic()
        self._swept_at_start = False
        self._announce = asyncio.Event()
        # The highest revision of the task bucket seen through the watch.
        self._watch_rev = 0
        self._advanced = asyncio.Event()
        # The highest revision this replica wrote (acknowledged): the watch must reach it.
        self._written_rev = 0
        # Set to make the watch again at once (a reader found it behind and not moving).
        self._restart_watch = asyncio.Event()
        self._js = client.jetstream(timeout=_WRITE_TIMEOUT)
        self._prefix = f"$KV.{TASKS_BUCKET}."
        self._beat_ok_at = monotonic()

    @classmethod
    async def open(
        cls,
        client: Client,
        *,
        replicas: int,
        timeout: float,
        agents: Callable[[], pb.ListAgentsResponse],
    ) -> TaskReplication:
        """Create (or bind) the buckets with `replicas` copies each; raises
        `StoreUnavailableError` naming what failed."""
        js = client.jetstream(timeout=_WRITE_TIMEOUT)
        # A cluster that just formed may have no peers for the buckets for a moment.
        deadline = time.monotonic() + _OPEN_PATIENCE
        while True:
            try:
                return await cls._open(
                    js, client, replicas=replicas, timeout=timeout, agents=agents
                )
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(_RETRY_DELAY)

    @classmethod
    async def _open(
        cls,
        js: JetStreamContext,
        client: Client,
        *,
        replicas: int,
        timeout: float,
        agents: Callable[[], pb.ListAgentsResponse],
    ) -> TaskReplication:
        from nats.js.api import KeyValueConfig, StorageType

        try:
            tasks = await js.create_key_value(
                KeyValueConfig(
                    bucket=TASKS_BUCKET,
                    history=1,
                    replicas=replicas,
                    storage=StorageType.FILE,
                    description="Aether Hub tasks, one key per task",
                )
            )
            hubs = await js.create_key_value(
                KeyValueConfig(
                    bucket=HUBS_BUCKET,
                    history=1,
                    replicas=replicas,
                    storage=StorageType.MEMORY,
                    # The key of a replica killed without a word leaves after an hour
                    # (its leases went back long before).
                    ttl=3600.0,
                    description="Aether Hub replicas: liveness and connected agents",
                )
            )
        except _nats_errors() as exc:
            raise StoreUnavailableError(
                f"cannot open the JetStream buckets {TASKS_BUCKET}/{HUBS_BUCKET}"
                f" ({replicas} replicas): {exc or type(exc).__name__}"
            ) from None
        return cls(
            client,
            tasks,
            hubs,
            hub_id=secrets.token_hex(6),
            timeout=timeout,
            agents=agents,
        )

    def __repr__(self) -> str:
        return f"TaskReplication(hub_id={self.hub_id!r}, timeout={self.timeout:g})"

    @property
    def failing(self) -> str | None:
        """Why writes fail now, or None."""
        return self._failing

    # -- start and stop -------------------------------------------------------------------

    async def start(self, sink: ReplicaSink) -> int:
        """Load every stored task into `sink`, then follow the changes; how many loaded."""
        self._sink = sink
        watcher = await self._tasks.watch(f"{_TASK}>")
        loaded = 0
        while True:
            entry = await watcher.updates(timeout=30.0)  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
            if entry is None:
                break
            self._take(entry.key, entry.value, entry.revision, entry.operation is not None)
            loaded += 1
        # From here on the changes come from a subscription of our own that starts at the
        # last revision seen, so that it can be made again from there when it stalls.
        with contextlib.suppress(*_nats_errors()):
            await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
        hubs = await self._hubs.watch(f"{_HUB}>")
        deadline = self._monotonic() + _OPEN_PATIENCE
        while True:
            try:
                await self._beat()
                break
            except _nats_errors() as exc:
                # A bucket just made may have no leader yet ("no response from stream").
                if self._monotonic() > deadline:
                    raise StoreUnavailableError(
                        f"cannot announce this Hub replica in {HUBS_BUCKET}: {exc}"
                    ) from None
                await asyncio.sleep(_RETRY_DELAY)
        self._loops = [
            asyncio.create_task(self._follow(), name="aether-task-watch"),
            asyncio.create_task(self._follow_hubs(hubs), name="aether-hub-watch"),
            asyncio.create_task(self._beat_loop(), name="aether-hub-beat"),
        ]
        return loaded

    async def close(self) -> None:
        """Store what is left (best effort), say this replica left, stop following."""
        with contextlib.suppress(StoreUnavailableError, asyncio.TimeoutError):
            await asyncio.wait_for(self.durable(), _WRITE_TIMEOUT)
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(*_nats_errors()):
            await self._hubs.delete(f"{_HUB}{self.hub_id}")

    # -- writes ---------------------------------------------------------------------------

    def mark(self, rec: TaskRecord) -> None:
        """`rec` changed: write it in the next round."""
        self._dirty[rec.task_id] = rec
        if self._round is None:
            self._round = asyncio.get_running_loop().create_task(self._rounds())

    def forget(self, task_id: str) -> None:
        """Do not write `task_id` (its submission was refused)."""
        self._dirty.pop(task_id, None)

    async def durable(self) -> None:
        """Return once every change marked so far is stored; `StoreUnavailableError`
        when the round that carried them failed (they are retried)."""
        if self._round is None and not self._dirty:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        if self._round is None:
            self._round = asyncio.get_running_loop().create_task(self._rounds())
        await future

    async def _rounds(self) -> None:
        try:
            while self._dirty or self._waiters:
                # One event-loop pass lets the RPCs in flight add their changes.
                await asyncio.sleep(0)
                batch, self._dirty = self._dirty, {}
                waiters, self._waiters = self._waiters, []
                self._writing = set(batch)
                try:
                    error = await self._write(list(batch.values()))
                except Exception as exc:
                    # A bug, not the store: say so, and never leave a waiter hanging.
                    log.exception("writing task changes to JetStream failed")
                    error = f"internal error while writing: {type(exc).__name__}"
                finally:
                    self._writing = set()
                    self._take_stashed()
                if error is None:
                    if self._failing is not None:
                        log.warning("task writes to JetStream work again")
                        self._failing = None
                    for future in waiters:
                        if not future.done():
                            future.set_result(None)
                    continue
                if self._failing is None:
                    log.error("task writes to JetStream fail (retrying): %s", error)
                self._failing = error
                for task_id, rec in batch.items():
                    self._dirty.setdefault(task_id, rec)
                for future in waiters:
                    if not future.done():
                        future.set_exception(StoreUnavailableError(error))
                await asyncio.sleep(_RETRY_DELAY)
        finally:
            self._round = None

    async def _write(self, records: list[TaskRecord]) -> str | None:
        if not records:
            return None
        outcomes = await asyncio.gather(
            *(self._write_one(rec) for rec in records), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if not errors:
            return None
        first = errors[0]
        if not isinstance(first, _nats_errors()):
            raise first
        return f"JetStream write failed: {first or type(first).__name__}"

    async def _write_one(self, rec: TaskRecord) -> None:
        from nats.js.errors import KeyWrongLastSequenceError

        key = f"{_TASK}{rec.task_id}"
        base = rec.rev
        value = encode_record(rec)
        for attempt in range(_RACE_ATTEMPTS):
            try:
                if base == 0:
                    # `create` also takes over a key whose last entry is a purge marker
                    # (a retired task whose idempotency key is used again).
                    rev = await self._tasks.create(key, value)
                else:
                    rev = await self._tasks.update(key, value, last=base)
            except KeyWrongLastSequenceError:
                # Another replica changed the task first: its version stands.
                stored = await self._stored(rec.task_id)
                if stored is not None and (stored[1] > base or attempt == _RACE_ATTEMPTS - 1):
                    # The last time round, a version no newer than this replica's says that
                    # the replica's revision is not the bucket's (the cluster lost a write
                    # it had not acknowledged to everyone): the stored one is the truth.
                    self._deliver(rec.task_id, stored[0], stored[1], deleted=stored[2], force=True)
                    return
                if stored is None and attempt == _RACE_ATTEMPTS - 1:
                    # Gone from the bucket (retired long ago by another replica): there is
                    # nothing left to change, and retrying would fail every round.
                    log.warning("task %s is no longer stored; its change is dropped", rec.task_id)
                    self._deliver(rec.task_id, b"", 0, deleted=True)
                    return
                # No newer version yet: the other write is still being agreed on by the
                # cluster (a clustered stream refuses a compare-and-set on a subject with
                # a write in flight). Ask again in a moment.
                await asyncio.sleep(_RACE_PAUSE * (attempt + 1))
                continue
            if rec.rev == base:
                rec.rev = rev
            self._written_rev = max(self._written_rev, rev)
            return
        raise _UnsettledError(f"task {rec.task_id}: lost a race but found no newer version")

    async def _stored(self, task_id: str) -> tuple[bytes, int, bool] | None:
        """The task's key as stored: (value, revision, deleted), or None when there never
        was one. A 404 of JetStream is "no such key" only with its no-message code (the
        client library's `KeyNotFoundError` also covers a stream without a leader)."""
        from nats.js.errors import NotFoundError

        try:
            msg = await self._js.get_msg(
                f"KV_{TASKS_BUCKET}", subject=f"{self._prefix}{_TASK}{task_id}"
            )
        except NotFoundError as exc:
            if exc.err_code == _NO_MESSAGE_FOUND:
                return None
            raise
        headers = msg.headers or {}
        deleted = _KV_OPERATION in headers or _MARKER_REASON in headers
        return (msg.data or b"", msg.seq or 0, deleted)

    # -- reads ----------------------------------------------------------------------------

    async def fetch(self, task_id: str) -> TaskRecord | None:
        """The stored task `task_id` (not only the version this replica holds), or None."""
        try:
            stored = await self._stored(task_id)
        except _nats_errors() as exc:
            raise StoreUnavailableError(f"JetStream read failed: {exc}") from None
        if stored is None or stored[2]:
            return None
        return decode_record(stored[0], stored[1])

    @property
    def pending(self) -> bool:
        """Whether some change made here is not stored yet."""
        return bool(self._dirty or self._writing)

    def writing(self, task_id: str) -> bool:
        """Whether a change of `task_id` is not stored yet."""
        return task_id in self._dirty or task_id in self._writing

    def drop(self, task_id: str) -> None:
        """Remove a finished task from the bucket (retention), in the background.

        A purge whose marker expires after `_MARKER_TTL` seconds (long enough for every
        replica's watch to see it): finished tasks leave no tombstone behind, so neither
        the bucket nor a replica's start grows with the tasks ever run. A finished task
        never changes again, so there is no revision to compare with.
        """

        async def delete() -> None:
            with contextlib.suppress(*_nats_errors()):
                await self._tasks.purge(f"{_TASK}{task_id}", msg_ttl=_MARKER_TTL)

        task = asyncio.get_running_loop().create_task(delete())
        self._loops.append(task)
        task.add_done_callback(self._loops.remove)

    # -- following other replicas ---------------------------------------------------------

    def _take(self, key: str, value: bytes | None, rev: int | None, deleted: bool) -> None:
        if (rev or 0) > self._watch_rev:
            self._watch_rev = rev or 0
            self._advanced.set()
        task_id = key[len(_TASK) :]
        if task_id in self._writing:
            self._stashed[task_id] = (value or b"", rev or 0, deleted)
            return
        self._deliver(task_id, value or b"", rev or 0, deleted=deleted)

    def _take_stashed(self) -> None:
        stashed, self._stashed = self._stashed, {}
        for task_id, (value, rev, deleted) in stashed.items():
            try:
                self._deliver(task_id, value, rev, deleted=deleted)
            except Exception:
                log.exception("applying the stored version of task %s failed", task_id)

    def _deliver(
        self, task_id: str, value: bytes, rev: int, *, deleted: bool, force: bool = False
    ) -> None:
        sink = self._sink
        if sink is None:
            return
        if deleted:
            sink.remote_deleted(task_id)
            return
        known = sink.known_rev(task_id)
        if known is not None and rev <= known and not force:
            return  # this replica's own write, or older than what it holds
        try:
            remote = decode_record(value, rev)
        except ValueError as exc:
            log.error("ignored the stored task %r: %s", task_id, exc)
            return
        # A change of this replica not written yet was made on an older version: the
        # stored one stands, and writing the change now would undo the other replica's.
        self._dirty.pop(task_id, None)
        sink.apply_remote(remote, force=force)

    async def _on_change(self, msg: Msg) -> None:
        try:
            headers = msg.headers or {}
            # A delete or purge (KV-Operation), or a marker the server left (nats-server
            # 2.11+ expiry markers).
            deleted = _KV_OPERATION in headers or _MARKER_REASON in headers
            key = msg.subject[len(self._prefix) :]
            self._take(key, msg.data, msg.metadata.sequence.stream, deleted)
        except Exception:
            log.exception("applying the stored version of %s failed", msg.subject)

    async def _subscribe(self) -> Subscription | None:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        start = self._watch_rev + 1
        try:
            return await self._js.subscribe(
                f"{self._prefix}{_TASK}>",
                stream=f"KV_{TASKS_BUCKET}",
                cb=self._on_change,
                ordered_consumer=True,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
                ),
                inactive_threshold=300.0,
            )
        except _nats_errors() as exc:
            log.debug("cannot follow the task bucket from revision %d yet: %s", start, exc)
            return None

    async def _last_revision(self) -> int:
        """The task bucket's newest revision; `StoreUnavailableError` when JetStream does
        not answer within `_INFO_TIMEOUT`."""
        try:
            info = await asyncio.wait_for(self._js.stream_info(f"KV_{TASKS_BUCKET}"), _INFO_TIMEOUT)
        except _nats_errors() as exc:
            raise StoreUnavailableError(
                f"JetStream does not answer: {exc or type(exc).__name__}"
            ) from None
        return (info.state.last_seq or 0) if info.state is not None else 0

    async def caught_up(self) -> None:
        """Return once this replica has applied every change stored before the call
        (a read barrier: a read after it sees every acknowledged change, whichever
        replica made it). `StoreUnavailableError` when that takes over `_CATCH_UP_TIMEOUT`
        seconds or JetStream does not answer."""
        target = max(await self._last_revision(), self._written_rev)
        deadline = self._monotonic() + _CATCH_UP_TIMEOUT
        stuck_since = self._monotonic()
        seen = self._watch_rev
        while self._watch_rev < target:
            now = self._monotonic()
            if now > deadline:
                raise StoreUnavailableError(
                    f"this Hub replica is behind the task bucket (at revision"
                    f" {self._watch_rev} of {target}); try again"
                )
            if self._watch_rev != seen:
                seen, stuck_since = self._watch_rev, now
            elif now - stuck_since > _STALL_SECONDS:
                self._restart_watch.set()
                stuck_since = now
            self._advanced.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), _STALL_CHECK_SECONDS)

    async def _follow(self) -> None:
        """Follow the bucket's changes, and follow again from the last revision seen when
        the subscription stalls: behind the stream (or this replica's own writes) with no
        progress for `_STALL_SECONDS`. An ordered consumer on a NATS node that died does
        not always come back by itself."""
        sub: Subscription | None = None
        progress_rev, behind_since = -1, 0.0
        try:
            while True:
                if sub is None:
                    sub = await self._subscribe()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._restart_watch.wait(), _STALL_CHECK_SECONDS)
                now = self._monotonic()
                restart = self._restart_watch.is_set()
                self._restart_watch.clear()
                if not restart:
                    last = self._written_rev
                    if last <= self._watch_rev:
                        with contextlib.suppress(StoreUnavailableError):
                            last = await self._last_revision()
                    if last <= self._watch_rev or self._watch_rev != progress_rev:
                        progress_rev, behind_since = self._watch_rev, now
                        continue
                    if sub is not None and now - behind_since < _STALL_SECONDS:
                        continue
                    log.warning(
                        "following the task bucket stalled at revision %d of %d; following"
                        " again from there",
                        self._watch_rev,
                        last,
                    )
                if sub is not None:
                    with contextlib.suppress(*_nats_errors()):
                        await sub.unsubscribe()
                sub = None
                behind_since = now
        finally:
            if sub is not None:
                with contextlib.suppress(*_nats_errors()):
                    await sub.unsubscribe()

    async def _follow_hubs(self, watcher: KeyValue.KeyWatcher) -> None:
        while True:
            try:
                await self._read_hubs(watcher)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following the Hub replicas failed; watching again")
            await asyncio.sleep(_RETRY_DELAY)
            with contextlib.suppress(Exception):
                watcher = await self._hubs.watch(f"{_HUB}>")

    async def _read_hubs(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None or not entry.key.startswith(_HUB):
                continue
            hub_id = entry.key[len(_HUB) :]
            if hub_id == self.hub_id:
                continue
            if entry.operation is not None:
                # It stopped in order. The tasks its agents were running stay leased
                # through it (a stopping Hub hands back only what it never sent): they go
                # back now, without counting an attempt, and an agent that moves to another
                # replica may still deliver its result.
                self._seen.pop(hub_id, None)
                self._remote_agents.pop(hub_id, None)
                if self._sink is not None:
                    self._sink.requeue_orphans(hub_id.__eq__, count_attempt=False)
                continue
            rev = entry.revision or 0
            known = self._seen.get(hub_id)
            if known is not None and rev <= known[1]:
                continue
            self._seen[hub_id] = (self._monotonic(), rev)
            self._dead.discard(hub_id)
            try:
                self._remote_agents[hub_id] = pb.ListAgentsResponse.parse(entry.value or b"")
            except Exception:
                log.warning("ignored the agent list of Hub replica %s (not readable)", hub_id)

    def alive(self, hub_id: str) -> bool:
        """Whether replica `hub_id` was heard from within `timeout` (this one always is)."""
        if hub_id == self.hub_id or not hub_id:
            return True
        seen = self._seen.get(hub_id)
        return seen is not None and self._monotonic() - seen[0] <= self.timeout

    def remote_agents(self) -> list[pb.AgentInfo]:
        """The agents connected to the other live replicas."""
        return [
            info
            for hub_id, listing in self._remote_agents.items()
            if self.alive(hub_id)
            for info in listing.agents
        ]

    async def _beat(self) -> None:
        await self._hubs.put(f"{_HUB}{self.hub_id}", bytes(self._agents()))
        now = self._monotonic()
        if now - self._beat_ok_at > self.timeout / 2:
            # Back after this replica's own trouble with JetStream (a node lost, a leader
            # election): the others were as unable to announce themselves, and their news
            # may still be on the way. Everyone starts a fresh `timeout`.
            self._seen = {hub: (now, rev) for hub, (_, rev) in self._seen.items()}
        self._beat_ok_at = now

    def agents_changed(self) -> None:
        """An agent connected or left: announce this replica's agents soon."""
        self._announce.set()

    async def _beat_loop(self) -> None:
        interval = max(0.05, self.timeout / 4)
        while True:
            # At the interval, or soon after the agents changed (at most every 0.2 s).
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._announce.wait(), interval)
                await asyncio.sleep(0.2)
            self._announce.clear()
            try:
                await self._beat()
                await self.check_replicas()
            except _nats_errors() as exc:
                log.debug("could not announce this Hub replica: %s", exc)

    async def _still_silent(self, hub: str) -> bool:
        """Whether replica `hub`'s key in the bucket has no revision newer than the last
        one seen (the watch may lag; the bucket itself is the judge)."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        try:
            entry = await self._hubs.get(f"{_HUB}{hub}")
        except (KeyNotFoundError, KeyDeletedError):
            return True
        rev = entry.revision or 0
        if rev > self._seen[hub][1]:
            self._seen[hub] = (self._monotonic(), rev)
            return False
        return True

    async def check_replicas(self) -> int:
        """Put back the leases of replicas silent for `timeout`; how many tasks."""
        sink = self._sink
        if sink is None:
            return 0
        now = self._monotonic()
        if now - self._beat_ok_at > self.timeout / 2:
            # This replica cannot reach JetStream itself: the silence of the others says
            # nothing about them (and their leases could not be moved anyway).
            return 0
        suspects = {hub for hub, (seen, _) in self._seen.items() if now - seen > self.timeout}
        newly_dead = {hub for hub in suspects - self._dead if await self._still_silent(hub)}
        first_look = not self._swept_at_start and now - self._started_at > self.timeout
        if not newly_dead and not first_look:
            return 0
        self._dead |= newly_dead
        self._swept_at_start = True
        for hub in sorted(newly_dead):
            log.warning(
                "Hub replica %s was not heard from for %g s: its leases go back", hub, self.timeout
            )
        return sink.requeue_orphans(lambda hub: not self.alive(hub), count_attempt=True)
