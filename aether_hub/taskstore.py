"""Persistence of tasks in the Hub database (only with `--db FILE`), by group commit.

The queue marks a task dirty whenever it changes. A call that acknowledges a change
(SubmitTask, SubmitResult(s), CancelTask) then awaits `durable()`, which returns once every
change marked before it is committed: the first such call of an event-loop pass schedules
one write, and every call of the same pass waits for that one transaction (group commit),
so a busy Hub costs one commit per group, not one per task. Changes nobody waits for
(leases, progress) are written by the Hub's flush loop every few milliseconds, or ride
along with the next group.

With a database file the group's rows are built on the event loop (a snapshot of the
records as tuples) and written and committed by a thread of the store's own, on a second
connection (`Database.connect_writer`): the event loop keeps serving RPCs meanwhile, and
the calls of the passes that run during one commit gather into the next group. One write
runs at a time, so groups commit in order; the waiters of a group are answered on the
event loop once its commit returned. Reads stay on the loop's connection: WAL shows them
every committed group, and a task whose write has not committed yet is read from memory
(`fetch`, `is_dirty`).

A write that fails (disk full, read-only file, I/O error) keeps its changes for the next
one and fails the calls that wait for it with `StoreUnavailableError`: they answer
UNAVAILABLE, never OK. The store logs the failure once when it starts and once when writes
succeed again (docs/devhub.md, "Durability").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import json
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

from aether import TERMINAL_TASK_STATES
from aether_hub._wire import pb
from aether_hub.db import Database
from aether_hub.taskrecord import TaskRecord

__all__ = ("StoreUnavailableError", "TaskStore", "describe_db_error")

log = logging.getLogger("aether_hub.store")


class StoreUnavailableError(Exception):
    """The database refused a write; the change is not stored (yet). Retryable."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id            TEXT PRIMARY KEY,
    seq                INTEGER NOT NULL,
    description        TEXT NOT NULL,
    payload            BLOB NOT NULL,
    task_type          TEXT NOT NULL,
    target_agent_id    TEXT NOT NULL,
    priority           INTEGER NOT NULL,
    metadata           TEXT NOT NULL,
    workflow_id        TEXT NOT NULL,
    max_attempts       INTEGER NOT NULL,
    created_at         REAL NOT NULL,
    deadline           REAL,
    idempotency_key    TEXT NOT NULL,
    state              INTEGER NOT NULL,
    attempt            INTEGER NOT NULL,
    assigned_agent_id  TEXT NOT NULL,
    progress           REAL NOT NULL,
    status_message     TEXT NOT NULL,
    result             BLOB NOT NULL,
    error_message      TEXT NOT NULL,
    metrics            TEXT NOT NULL,
    updated_at         REAL NOT NULL,
    completed_at       REAL,
    submitted_by       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS tasks_seq ON tasks (seq);
CREATE INDEX IF NOT EXISTS tasks_idempotency ON tasks (idempotency_key)
    WHERE idempotency_key != '';
CREATE TABLE IF NOT EXISTS task_payloads (
    task_id  TEXT PRIMARY KEY,
    payload  BLOB NOT NULL
);
"""

# The queue of a restarted Hub reads its pending tasks from the table a page at a time
# (aether_hub/taskbacklog.py), so these partial indexes hold only what a start or a page
# needs: pending tasks in dispatch order per routing key, leased tasks (requeued on start),
# finished tasks by seq (the newest are held in memory), pending deadlines and workflows.
# Their WHERE clauses are literals, repeated word for word by the queries that use them
# (SQLite picks a partial index only then). States: 1 pending, 2 leased, 3 running,
# 4..7 finished.
_BACKLOG_SCHEMA = """
CREATE INDEX IF NOT EXISTS tasks_backlog_agent
    ON tasks (target_agent_id, priority DESC, seq, task_type)
    WHERE state = 1 AND target_agent_id != '';
CREATE INDEX IF NOT EXISTS tasks_backlog_type ON tasks (task_type, priority DESC, seq)
    WHERE state = 1 AND target_agent_id = '';
CREATE INDEX IF NOT EXISTS tasks_backlog_seq ON tasks (seq) WHERE state = 1;
CREATE INDEX IF NOT EXISTS tasks_backlog_deadline ON tasks (deadline)
    WHERE state = 1 AND deadline IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_backlog_workflow ON tasks (workflow_id)
    WHERE state = 1 AND workflow_id != '';
CREATE INDEX IF NOT EXISTS tasks_leased ON tasks (seq) WHERE state IN (2, 3);
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (seq) WHERE state IN (4, 5, 6, 7);
"""

_COLUMN_NAMES = (
    "task_id", "seq", "description", "payload", "task_type", "target_agent_id", "priority",
    "metadata", "workflow_id", "max_attempts", "created_at", "deadline", "idempotency_key",
    "state", "attempt", "assigned_agent_id", "progress", "status_message", "result",
    "error_message", "metrics", "updated_at", "completed_at", "submitted_by",
)  # fmt: skip
_COLUMNS = ", ".join(_COLUMN_NAMES)
# What a read returns: the columns above, the payload from `task_payloads` when it is there
# (a large payload), else from the row (a small one, or any row of an older Hub).
_READ_COLUMNS = (
    "task_id, seq, description,"
    " COALESCE((SELECT p.payload FROM task_payloads p WHERE p.task_id = tasks.task_id),"
    " tasks.payload),"
    " task_type, target_agent_id, priority, metadata,"
    " workflow_id, max_attempts, created_at, deadline, idempotency_key, state, attempt,"
    " assigned_agent_id, progress, status_message, result, error_message, metrics,"
    " updated_at, completed_at, submitted_by"
)

# A task's first write stores the whole row; a payload longer than this goes to its own
# table (`task_payloads`, written once), so the later changes of the task rewrite a small
# row. SQLite rewrites a row whole on every UPDATE, with its overflow pages.
_INLINE_PAYLOAD = 1024
# A later change writes only the columns the queue changes after submission (what a lease,
# a progress report, a result or a cancellation sets), and the result only when it
# changed. The others are fixed when the task is created (aether_hub/tasks.py never
# assigns them afterwards): leaving them out spares binding them, and `json.dumps` of the
# metadata, on every step of every task. `submitted_by` stays: a row of an older Hub
# gets it filled in after the column was added.
_MUTABLE_COLUMNS = (
    "state", "attempt", "assigned_agent_id", "progress", "status_message",
    "error_message", "metrics", "updated_at", "completed_at", "submitted_by",
)  # fmt: skip
_SET_INDEXES = tuple(_COLUMN_NAMES.index(name) for name in _MUTABLE_COLUMNS)
_SET = ", ".join(f"{_COLUMN_NAMES[i]} = ?" for i in _SET_INDEXES)
_UPDATE = f"UPDATE tasks SET {_SET} WHERE task_id = ?"
_UPDATE_WITH_RESULT = f"UPDATE tasks SET {_SET}, result = ? WHERE task_id = ?"

_Row = tuple[
    str,
    int,
    str,
    bytes,
    str,
    str,
    int,
    str,
    str,
    int,
    float,
    "float | None",
    str,
    int,
    int,
    str,
    float,
    str,
    bytes,
    str,
    str,
    float,
    "float | None",
    str,
]


def _json_map(data: dict[str, str]) -> str:
    return json.dumps(data) if data else "{}"  # most tasks have none: skip the encoder


def _to_row(rec: TaskRecord) -> tuple[object, ...]:
    return (
        rec.task_id,
        rec.seq,
        rec.description,
        rec.payload if len(rec.payload) <= _INLINE_PAYLOAD else b"",
        rec.task_type,
        rec.target_agent_id,
        rec.priority,
        _json_map(rec.metadata),
        rec.workflow_id,
        rec.max_attempts,
        rec.created_at,
        rec.deadline,
        rec.idempotency_key,
        int(rec.state),
        rec.attempt,
        rec.assigned_agent_id,
        rec.progress,
        rec.status_message,
        rec.result,
        rec.error_message,
        _json_map(rec.metrics),
        rec.updated_at,
        rec.completed_at,
        rec.submitted_by,
    )


def _to_update(rec: TaskRecord, *, with_result: bool) -> tuple[object, ...]:
    # The values of _MUTABLE_COLUMNS, in that order.
    values = (
        int(rec.state),
        rec.attempt,
        rec.assigned_agent_id,
        rec.progress,
        rec.status_message,
        rec.error_message,
        _json_map(rec.metrics),
        rec.updated_at,
        rec.completed_at,
        rec.submitted_by,
    )
    if with_result:
        return (*values, rec.result, rec.task_id)
    return (*values, rec.task_id)


class _RowMissing(Exception):
    """An UPDATE found no row for a task the store believed written (rolls back)."""


@dataclass
class _Plan:
    """One transaction's statements, built on the event loop from the records as they are
    then (a snapshot: the loop may change the records while a thread writes it)."""

    # Each task with the result its row holds once the transaction commits.
    written: list[tuple[TaskRecord, bytes]] = field(default_factory=list)
    inserts: list[tuple[object, ...]] = field(default_factory=list)
    payloads: list[tuple[object, ...]] = field(default_factory=list)
    updates: list[tuple[object, ...]] = field(default_factory=list)
    updates_with_result: list[tuple[object, ...]] = field(default_factory=list)


def _plan(records: Iterable[TaskRecord]) -> _Plan:
    """A task's first write inserts its row (and its payload, once); a later change
    updates the row's changing columns, with the result only when it changed."""
    plan = _Plan()
    for rec in records:
        plan.written.append((rec, rec.result))
        if rec.stored_result is None:
            plan.inserts.append(_to_row(rec))
            if len(rec.payload) > _INLINE_PAYLOAD:
                plan.payloads.append((rec.task_id, rec.payload))
        elif rec.result is rec.stored_result:
            plan.updates.append(_to_update(rec, with_result=False))
        else:
            plan.updates_with_result.append(_to_update(rec, with_result=True))
    return plan


# Rows per statement: a group's rows go in a few multi-row statements, not one statement
# per row. In the store's thread each statement releases the GIL while SQLite runs it and
# must get it back from the busy event loop, which can take a switch interval (5 ms) each
# time: a few statements per group, not one per task. 512 rows of 24 columns bind 12,288
# parameters (SQLite allows 32,766 since 3.32). Chunks are powers of two, so at most ten
# statement shapes per kind are prepared (and cached by the connection).
_CHUNK = 512
# UPDATE ... FROM needs SQLite 3.33; older ones update one row per statement.
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)


def _chunks(rows: list[tuple[object, ...]]) -> Iterable[list[tuple[object, ...]]]:
    start, size = 0, _CHUNK
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        yield rows[start : start + size]
        start += size


def _values(width: int, count: int) -> str:
    one = "(" + ", ".join("?" * width) + ")"
    return ", ".join([one] * count)


def _flat(chunk: list[tuple[object, ...]]) -> list[object]:
    # In C: the store's thread holds the GIL (and so keeps the event loop waiting) while
    # it runs Python code.
    return list(itertools.chain.from_iterable(chunk))


@functools.lru_cache(maxsize=64)
def _insert_sql(head: str, width: int, count: int) -> str:
    return f"{head} VALUES {_values(width, count)}"


@functools.lru_cache(maxsize=64)
def _update_sql(with_result: bool, count: int) -> str:
    names = [*_MUTABLE_COLUMNS, "result"] if with_result else list(_MUTABLE_COLUMNS)
    sets = ", ".join(f"{name} = v.column{i}" for i, name in enumerate(names, 1))
    return (
        f"UPDATE tasks SET {sets} FROM (VALUES {_values(len(names) + 1, count)}) AS v"
        f" WHERE tasks.task_id = v.column{len(names) + 1}"
    )


def _insert_many(conn: sqlite3.Connection, head: str, rows: list[tuple[object, ...]]) -> None:
    for chunk in _chunks(rows):
        conn.execute(_insert_sql(head, len(chunk[0]), len(chunk)), _flat(chunk))


def _update_many(
    conn: sqlite3.Connection, rows: list[tuple[object, ...]], *, with_result: bool
) -> int:
    """Apply UPDATE rows (the values of _MUTABLE_COLUMNS, [result,] task_id); how many
    rows of the table were updated."""
    if not rows:
        return 0
    if not _UPDATE_FROM:
        return conn.executemany(_UPDATE_WITH_RESULT if with_result else _UPDATE, rows).rowcount
    updated = 0
    for chunk in _chunks(rows):
        updated += conn.execute(_update_sql(with_result, len(chunk)), _flat(chunk)).rowcount
    return updated


def _execute(conn: sqlite3.Connection, plan: _Plan) -> bool:
    """Run `plan` in one transaction on `conn` (any thread; nothing of the records is
    read here). False, with nothing written, when a row to update is missing."""
    try:
        with conn:
            updated = _update_many(conn, plan.updates, with_result=False)
            updated += _update_many(conn, plan.updates_with_result, with_result=True)
            if updated != len(plan.updates) + len(plan.updates_with_result):
                raise _RowMissing
            if plan.inserts:
                _insert_many(conn, f"INSERT OR REPLACE INTO tasks ({_COLUMNS})", plan.inserts)
            if plan.payloads:
                _insert_many(
                    conn, "INSERT OR REPLACE INTO task_payloads (task_id, payload)", plan.payloads
                )
    except _RowMissing:
        return False
    return True


@dataclass
class _Write:
    """A group being written by the store's thread."""

    batch: dict[str, TaskRecord]
    plan: _Plan
    waiters: list[asyncio.Future[None]]
    loop: asyncio.AbstractEventLoop
    future: concurrent.futures.Future[bool] | None = None
    finished: bool = False


def _from_row(row: tuple[object, ...]) -> TaskRecord:
    r: _Row = row  # type: ignore[assignment]  # the schema above fixes the column types
    rec = TaskRecord(
        task_id=r[0],
        seq=int(r[1]),
        description=r[2],
        payload=bytes(r[3]),
        task_type=r[4],
        target_agent_id=r[5],
        priority=int(r[6]),
        metadata=_str_map(r[7]),
        workflow_id=r[8],
        max_attempts=int(r[9]),
        created_at=float(r[10]),
        deadline=None if r[11] is None else float(r[11]),
        idempotency_key=r[12],
        state=pb.TaskState(int(r[13])),
        attempt=int(r[14]),
        assigned_agent_id=r[15],
        progress=float(r[16]),
        status_message=r[17],
        result=bytes(r[18]),
        error_message=r[19],
        metrics=_str_map(r[20]),
        updated_at=float(r[21]),
        completed_at=None if r[22] is None else float(r[22]),
        submitted_by=r[23],
    )
    rec.stored_result = rec.result  # the row exists: later changes update it
    return rec


# Columns added after the first release of the table: (name, definition). A database file
# of an older Hub gets them on open (existing rows take the default).
_ADDED_COLUMNS: tuple[tuple[str, str], ...] = (
    # Who submitted the task: an agent id, or '' for a client (token holder / operator).
    ("submitted_by", "TEXT NOT NULL DEFAULT ''"),
)


def _migrate(db: Database) -> None:
    present = {str(row[1]) for row in db.conn.execute("PRAGMA table_info(tasks)").fetchall()}
    for name, definition in _ADDED_COLUMNS:
        if name not in present:
            with db.conn:
                db.conn.execute(f"ALTER TABLE tasks ADD COLUMN {name} {definition}")
            log.info("database: added column tasks.%s", name)


def _str_map(text: str) -> dict[str, str]:
    data = json.loads(text) if text else {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


class TaskStore:
    """Tasks in the `tasks` table: changes marked in memory, committed in groups."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._dirty: dict[str, TaskRecord] = {}
        # Calls waiting for the next write, and whether its start is scheduled.
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        # Why writes fail, while they do (None when the last write succeeded).
        self._failing: str | None = None
        # With a file: the group the thread writes now (at most one), the thread and its
        # connection (opened at the first group). An in-memory database has one
        # connection only: its groups are written on the event loop.
        self._threaded = db.is_persistent
        self._writing: _Write | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None
        db.ensure_schema(_SCHEMA)
        _migrate(db)
        db.ensure_schema(_BACKLOG_SCHEMA)
        db.on_close(self._close)

    @property
    def failing(self) -> str | None:
        """Why the last flush failed, or None when it succeeded."""
        return self._failing

    def mark(self, rec: TaskRecord) -> None:
        """Remember that `rec` changed; it is written on the next flush."""
        self._dirty[rec.task_id] = rec

    def forget(self, task_id: str) -> None:
        """Drop a change that must not be written (a submission that was refused)."""
        self._dirty.pop(task_id, None)

    async def durable(self) -> None:
        """Return once every change marked before this call is committed.

        Raises `StoreUnavailableError` when the write that should store them fails; the
        changes stay marked for a later write.
        """
        if not self._dirty and self._writing is None:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if not self._dirty:
            assert self._writing is not None
            # Every change is committed or in the group the thread writes: wait for it.
            self._writing.waiters.append(waiter)
        else:
            self._waiters.append(waiter)
            if not self._scheduled:
                self._scheduled = True
                # After the callbacks already ready: the rest of this pass joins the group.
                loop.call_soon(self._start_group)
        await waiter

    def _start_group(self) -> None:
        """Write the marked changes for the calls waiting (a scheduled callback)."""
        self._scheduled = False
        if self._writing is not None:
            return  # the group in flight starts the next one when it is committed
        waiters, self._waiters = self._waiters, []
        if not waiters:
            return
        if not self._threaded or self._db.closed or not self._dirty:
            self._flush_for(waiters)
            return
        loop = asyncio.get_running_loop()
        if self._executor is None:
            try:
                self._writer = self._db.connect_writer()
            except sqlite3.Error as exc:
                self._fail(waiters, self._failed(exc, len(self._dirty)))
                return
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="aether-hub-store"
            )
        batch, self._dirty = self._dirty, {}
        write = _Write(batch=batch, plan=_plan(batch.values()), waiters=waiters, loop=loop)
        self._writing = write
        assert self._writer is not None
        write.future = self._executor.submit(_execute, self._writer, write.plan)
        write.future.add_done_callback(lambda _: self._committed_soon(write))

    def _committed_soon(self, write: _Write) -> None:
        # In the store's thread: hand the outcome to the event loop.
        with contextlib.suppress(RuntimeError):  # the loop is closed: `_close` finishes it
            write.loop.call_soon_threadsafe(self._committed, write)

    def _committed(self, write: _Write) -> None:
        """The thread finished `write`: record what the table holds, answer its waiters,
        start the next group (on the event loop; also from `_close`, once)."""
        if write.finished:
            return
        write.finished = True
        self._writing = None
        assert write.future is not None
        error: StoreUnavailableError | None = None
        try:
            complete = write.future.result()
        except sqlite3.Error as exc:
            complete = False
            error = self._failed(exc, len(write.batch))
        except Exception as exc:  # not expected: answer UNAVAILABLE rather than hang
            log.exception("writing task changes to the database failed")
            complete = False
            error = StoreUnavailableError(f"the Hub could not store the change: {exc}")
        if complete:
            for rec, result in write.plan.written:
                rec.stored_result = result
            self._recovered(len(write.batch))
            for waiter in write.waiters:
                if not waiter.done():
                    waiter.set_result(None)
        else:
            # Keep the changes for the next write (newer marks of the same task win).
            write.batch.update(self._dirty)
            self._dirty = write.batch
            if error is not None:
                self._fail(write.waiters, error)
            else:
                # A row to update was missing (not expected): write every task of the
                # group whole, in the next group, which these calls wait for.
                for rec in write.batch.values():
                    rec.stored_result = None
                self._waiters[:0] = write.waiters
        if self._waiters and not self._scheduled and not write.loop.is_closed():
            self._scheduled = True
            # Not at once: calls failed above run first (a refused submission forgets
            # its task before the next group is built).
            write.loop.call_soon(self._start_group)

    def _flush_for(self, waiters: list[asyncio.Future[None]]) -> None:
        try:
            self.flush()
        except StoreUnavailableError as exc:
            self._fail(waiters, exc)
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    @staticmethod
    def _fail(waiters: list[asyncio.Future[None]], exc: StoreUnavailableError) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)

    def flush(self) -> int:
        """Write every changed task in one transaction, on the calling thread; how many
        were written.

        Returns 0 at once while the store's thread writes a group or calls wait for the
        next one: that next group carries these changes (the Hub's flush loop calls this
        every few milliseconds and must not hold the event loop for a commit). Raises
        `StoreUnavailableError` when the database refuses the write; the changes are kept
        for the next flush.
        """
        if not self._dirty or self._db.closed:
            return 0
        if self._writing is not None or self._waiters:
            return 0
        batch = self._dirty
        self._dirty = {}
        try:
            self._write(list(batch.values()))
        except sqlite3.Error as exc:
            # Keep the changes for the next flush (newer marks of the same task win).
            batch.update(self._dirty)
            self._dirty = batch
            raise self._failed(exc, len(batch)) from None
        self._recovered(len(batch))
        return len(batch)

    def _recovered(self, count: int) -> None:
        if self._failing is not None:
            log.warning(
                "the task database accepts writes again (%d changes stored); the Hub"
                " acknowledges task changes again",
                count,
            )
            self._failing = None

    def _write(self, records: list[TaskRecord]) -> None:
        """One transaction on the loop's connection (see `_plan`). A record marks what
        the table holds only once the commit succeeded."""
        plan = _plan(records)
        if not _execute(self._db.conn, plan):
            # A row the table lacks (not expected): write every task of the batch whole.
            for rec in records:
                rec.stored_result = None
            plan = _plan(records)
            _execute(self._db.conn, plan)
        for rec, result in plan.written:
            rec.stored_result = result

    def _close(self) -> None:
        """Before the database closes: let the thread finish its group, write what is
        still marked, answer every call still waiting, close the thread's connection."""
        write = self._writing
        if write is not None and write.future is not None:
            with contextlib.suppress(Exception):  # its error is handled by `_committed`
                write.future.result()
            self._committed(write)
        waiters, self._waiters = self._waiters, []
        try:
            self.flush()
        except StoreUnavailableError as exc:
            self._fail(waiters, exc)
        else:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def _failed(self, exc: sqlite3.Error, waiting: int) -> StoreUnavailableError:
        reason = describe_db_error(exc)
        if self._failing is None:
            log.error(
                "the task database cannot be written (%s): calls that change tasks answer"
                " UNAVAILABLE until it can; %d changes wait",
                reason,
                waiting,
            )
        self._failing = reason
        return StoreUnavailableError(
            f"the Hub could not store the change: its database cannot be written ({reason});"
            " nothing was acknowledged, retry later"
        )

    def is_dirty(self, task_id: str) -> bool:
        """Whether a change of `task_id` waits to be written or committed (the table is
        behind)."""
        if task_id in self._dirty:
            return True
        return self._writing is not None and task_id in self._writing.batch

    def _unwritten(self, task_id: str) -> TaskRecord | None:
        rec = self._dirty.get(task_id)
        if rec is None and self._writing is not None:
            rec = self._writing.batch.get(task_id)
        return rec

    def load_leased(self) -> list[TaskRecord]:
        """The tasks that were leased or running when the Hub stopped, by seq."""
        return [
            _from_row(row)
            for row in self._db.conn.execute(
                f"SELECT {_READ_COLUMNS} FROM tasks WHERE state IN (2, 3) ORDER BY seq"
            )
        ]

    def load_finished(self, limit: int) -> list[TaskRecord]:
        """The newest `limit` finished tasks, oldest first."""
        rows = self._db.conn.execute(
            f"SELECT {_READ_COLUMNS} FROM tasks WHERE state IN (4, 5, 6, 7)"
            " ORDER BY seq DESC LIMIT ?",
            (limit,),
        ).fetchall()
        rows.reverse()
        return [_from_row(row) for row in rows]

    def backlog_counts(self, max_seq: int) -> dict[tuple[str, str], int]:
        """Pending tasks with seq <= `max_seq` per (task type, target agent)."""
        conn = self._db.conn
        counts: dict[tuple[str, str], int] = {}
        for task_type, target, n in conn.execute(
            "SELECT task_type, target_agent_id, COUNT(*) FROM tasks"
            " WHERE state = 1 AND target_agent_id != '' AND seq <= ?"
            " GROUP BY target_agent_id, task_type",
            (max_seq,),
        ):
            counts[(str(task_type), str(target))] = int(n)
        for task_type, n in conn.execute(
            "SELECT task_type, COUNT(*) FROM tasks"
            " WHERE state = 1 AND target_agent_id = '' AND seq <= ? GROUP BY task_type",
            (max_seq,),
        ):
            counts[(str(task_type), "")] = int(n)
        return counts

    def backlog_page(
        self, key: tuple[str, str], after: tuple[int, int] | None, max_seq: int, limit: int
    ) -> list[TaskRecord]:
        """Up to `limit` pending tasks of routing key `key` with seq <= `max_seq`, in
        dispatch order (priority descending, then seq), after the position `after`
        (-priority, seq) when given."""
        kind, name = key
        if kind == "agent":
            where = "state = 1 AND target_agent_id != '' AND target_agent_id = ?"
        else:
            where = "state = 1 AND target_agent_id = '' AND task_type = ?"
        args: list[object] = [name, max_seq]
        sql = f"SELECT {_READ_COLUMNS} FROM tasks WHERE {where} AND seq <= ?"
        if after is not None:
            priority, seq = -after[0], after[1]
            sql += " AND (priority < ? OR (priority = ? AND seq > ?))"
            args += [priority, priority, seq]
        sql += " ORDER BY priority DESC, seq LIMIT ?"
        args.append(limit)
        return [_from_row(row) for row in self._db.conn.execute(sql, args).fetchall()]

    def backlog_expired(self, now: float, max_seq: int) -> list[TaskRecord]:
        """Pending tasks with seq <= `max_seq` whose deadline is at or before `now`."""
        rows = self._db.conn.execute(
            f"SELECT {_READ_COLUMNS} FROM tasks WHERE state = 1 AND deadline IS NOT NULL"
            " AND deadline <= ? AND seq <= ? ORDER BY deadline",
            (now, max_seq),
        ).fetchall()
        return [rec for rec in map(_from_row, rows) if not self.is_dirty(rec.task_id)]

    def backlog_next_deadline(self, after: float, max_seq: int) -> float | None:
        """The earliest deadline after `after` of a pending task with seq <= `max_seq`."""
        row = self._db.conn.execute(
            "SELECT MIN(deadline) FROM tasks WHERE state = 1 AND deadline IS NOT NULL"
            " AND deadline > ? AND seq <= ?",
            (after, max_seq),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def backlog_in_workflow(self, workflow_id: str, agent_id: str, max_seq: int) -> bool:
        """Whether a pending task of `workflow_id` with seq <= `max_seq` was submitted
        or last run by `agent_id`."""
        row = self._db.conn.execute(
            "SELECT 1 FROM tasks WHERE state = 1 AND workflow_id != '' AND workflow_id = ?"
            " AND seq <= ? AND (submitted_by = ? OR assigned_agent_id = ?) LIMIT 1",
            (workflow_id, max_seq, agent_id, agent_id),
        ).fetchone()
        return row is not None

    def backlog_listing(
        self,
        before: int | None,
        max_seq: int,
        limit: int,
        *,
        agent_id: str = "",
        task_type: str = "",
        workflow_id: str = "",
        visible_to: str = "",
    ) -> list[TaskRecord]:
        """Up to `limit` pending tasks with seq <= `max_seq` (and < `before`) matching
        the ListTasks filters, newest first (ListTasks merges them with the tasks held in
        memory)."""
        top = max_seq if before is None else min(max_seq, before - 1)
        where = "state = 1 AND seq <= ?"
        args: list[object] = [top]
        if agent_id:
            where += " AND (target_agent_id = ? OR assigned_agent_id = ?)"
            args += [agent_id, agent_id]
        if task_type:
            where += " AND task_type = ?"
            args.append(task_type)
        if workflow_id:
            where += " AND workflow_id = ?"
            args.append(workflow_id)
        if visible_to:
            where += " AND (submitted_by = ? OR assigned_agent_id = ?)"
            args += [visible_to, visible_to]
        rows = self._db.conn.execute(
            f"SELECT {_READ_COLUMNS} FROM tasks WHERE {where} ORDER BY seq DESC LIMIT ?",
            [*args, limit],
        ).fetchall()
        return [_from_row(row) for row in rows]

    def load(self, *, terminal_limit: int) -> list[TaskRecord]:
        """Every unfinished task and the newest `terminal_limit` finished ones, by seq."""
        terminal = [int(s) for s in _terminal_states()]
        marks = ",".join("?" * len(terminal))
        conn = self._db.conn
        active = conn.execute(
            f"SELECT {_READ_COLUMNS} FROM tasks WHERE state NOT IN ({marks})", terminal
        ).fetchall()
        done = conn.execute(
            f"SELECT {_READ_COLUMNS} FROM tasks WHERE state IN ({marks}) ORDER BY seq DESC LIMIT ?",
            [*terminal, terminal_limit],
        ).fetchall()
        records = [_from_row(row) for row in active + done]
        records.sort(key=lambda rec: rec.seq)
        return records

    def max_seq(self) -> int:
        """The highest task seq ever stored (0 for none)."""
        row = self._db.conn.execute("SELECT MAX(seq) FROM tasks").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def fetch(self, task_id: str) -> TaskRecord | None:
        """A task no longer held in memory, from the table."""
        pending = self._unwritten(task_id)
        if pending is not None:
            return pending
        row = self._db.conn.execute(
            f"SELECT {_READ_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,)
        ).fetchone()
        return None if row is None else _from_row(row)

    def find_by_idempotency_key(self, key: str) -> str | None:
        """The id of the task first submitted with `key`, from the table."""
        row = self._db.conn.execute(
            "SELECT task_id FROM tasks WHERE idempotency_key = ? ORDER BY seq LIMIT 1", (key,)
        ).fetchone()
        return None if row is None else str(row[0])


def describe_db_error(exc: sqlite3.Error) -> str:
    """A short, user-facing reason for a failed database write."""
    text = str(exc) or type(exc).__name__
    if "disk is full" in text or "database or disk is full" in text:
        return "the disk is full"
    if "readonly" in text or "read-only" in text:
        return "the database file is read-only"
    return text


def _terminal_states() -> tuple[pb.TaskState, ...]:
    # Sorted: the SQL parameters come out the same on every run.
    return tuple(sorted(TERMINAL_TASK_STATES))
