"""Persistence of tasks in the Hub database (only with `--db FILE`), by group commit.

The queue marks a task dirty whenever it changes. A call that acknowledges a change
(SubmitTask, SubmitResult(s), CancelTask) then awaits `durable()`, which returns once every
change marked before it is committed: the first such call of an event-loop pass schedules
one flush, and every call of the same pass waits for that one transaction (group commit),
so a busy Hub costs one commit per pass, not one per task. Changes nobody waits for
(leases, progress) are written by the Hub's flush loop every few milliseconds.

A flush that fails (disk full, read-only file, I/O error) keeps its changes for the next
one and fails the calls that wait for it with `StoreUnavailableError`: they answer
UNAVAILABLE, never OK. The store logs the failure once when it starts and once when writes
succeed again (docs/devhub.md, "Durability").
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3

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
_INSERT = (
    f"INSERT OR REPLACE INTO tasks ({_COLUMNS}) VALUES ({', '.join('?' for _ in _COLUMN_NAMES)})"
)
_INSERT_PAYLOAD = "INSERT OR REPLACE INTO task_payloads (task_id, payload) VALUES (?, ?)"
# A later change: every column but the key and those fixed at submission (seq, payload,
# idempotency key: their indexes stay untouched); the result only when it changed.
_SET_INDEXES = tuple(
    i
    for i, name in enumerate(_COLUMN_NAMES)
    if name not in ("task_id", "seq", "payload", "idempotency_key", "result")
)
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


def _to_row(rec: TaskRecord) -> tuple[object, ...]:
    return (
        rec.task_id,
        rec.seq,
        rec.description,
        rec.payload if len(rec.payload) <= _INLINE_PAYLOAD else b"",
        rec.task_type,
        rec.target_agent_id,
        rec.priority,
        json.dumps(rec.metadata),
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
        json.dumps(rec.metrics),
        rec.updated_at,
        rec.completed_at,
        rec.submitted_by,
    )


def _to_update(rec: TaskRecord, *, with_result: bool) -> tuple[object, ...]:
    row = _to_row(rec)
    values = tuple(row[i] for i in _SET_INDEXES)
    if with_result:
        return (*values, rec.result, rec.task_id)
    return (*values, rec.task_id)


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
        # Calls waiting for the next flush, and whether one is scheduled.
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        # Why writes fail, while they do (None when the last flush succeeded).
        self._failing: str | None = None
        db.ensure_schema(_SCHEMA)
        _migrate(db)
        db.ensure_schema(_BACKLOG_SCHEMA)

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

        Raises `StoreUnavailableError` when the flush that should store them fails; the
        changes stay marked for a later flush.
        """
        if not self._dirty:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        if not self._scheduled:
            self._scheduled = True
            # After the callbacks already ready: the rest of this pass joins the group.
            loop.call_soon(self._flush_for_waiters)
        await waiter

    def _flush_for_waiters(self) -> None:
        self._scheduled = False
        waiters, self._waiters = self._waiters, []
        try:
            self.flush()
        except StoreUnavailableError as exc:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def flush(self) -> int:
        """Write every changed task in one transaction; how many were written.

        Raises `StoreUnavailableError` when the database refuses the write; the changes
        are kept for the next flush.
        """
        if not self._dirty or self._db.closed:
            return 0
        batch = self._dirty
        self._dirty = {}
        try:
            self._write(list(batch.values()))
        except sqlite3.Error as exc:
            # Keep the changes for the next flush (newer marks of the same task win).
            batch.update(self._dirty)
            self._dirty = batch
            raise self._failed(exc) from None
        if self._failing is not None:
            log.warning(
                "the task database accepts writes again (%d changes stored); the Hub"
                " acknowledges task changes again",
                len(batch),
            )
            self._failing = None
        return len(batch)

    def _write(self, records: list[TaskRecord]) -> None:
        """One transaction: a task's first write inserts its row (and its payload, once);
        a later change updates the row's changed columns, with the result only when it
        changed. A record marks what the table holds only once the commit succeeded."""
        new: list[TaskRecord] = []
        updates: list[tuple[object, ...]] = []
        updates_with_result: list[tuple[object, ...]] = []
        for rec in records:
            if rec.stored_result is None:
                new.append(rec)
            elif rec.result is rec.stored_result:
                updates.append(_to_update(rec, with_result=False))
            else:
                updates_with_result.append(_to_update(rec, with_result=True))
        conn = self._db.conn
        with conn:
            updated = 0
            if updates:
                updated += conn.executemany(_UPDATE, updates).rowcount
            if updates_with_result:
                updated += conn.executemany(_UPDATE_WITH_RESULT, updates_with_result).rowcount
            if updated != len(updates) + len(updates_with_result):
                # A row the table lacks (not expected): write every task of the batch whole.
                new = records
            if new:
                conn.executemany(_INSERT, [_to_row(rec) for rec in new])
                large = [(r.task_id, r.payload) for r in new if len(r.payload) > _INLINE_PAYLOAD]
                if large:
                    conn.executemany(_INSERT_PAYLOAD, large)
        for rec in records:
            rec.stored_result = rec.result

    def _failed(self, exc: sqlite3.Error) -> StoreUnavailableError:
        reason = describe_db_error(exc)
        if self._failing is None:
            log.error(
                "the task database cannot be written (%s): calls that change tasks answer"
                " UNAVAILABLE until it can; %d changes wait",
                reason,
                len(self._dirty),
            )
        self._failing = reason
        return StoreUnavailableError(
            f"the Hub could not store the change: its database cannot be written ({reason});"
            " nothing was acknowledged, retry later"
        )

    def is_dirty(self, task_id: str) -> bool:
        """Whether a change of `task_id` waits to be written (the table is behind)."""
        return task_id in self._dirty

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
        return [rec for rec in map(_from_row, rows) if rec.task_id not in self._dirty]

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
        pending = self._dirty.get(task_id)
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
