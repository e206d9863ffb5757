"""What the task store writes per change (aether_hub/taskstore.py).

A task's first write inserts its row, and a large payload once into `task_payloads`; a
later change (lease, progress, result) updates the row's columns, with the result only
when it arrives, so a 64 KiB payload is not written again on every step. Real SQLite
files; a restart reads back exactly what a Hub that never stopped holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from aether._wire import pb
from aether_hub.db import Database
from aether_hub.sessions import Session
from aether_hub.tasks import TaskQueue, TaskSubmission
from aether_hub.taskstore import TaskStore
from tests.hubserver.hubkit import FakeClock

S = pb.TaskState
BIG = bytes(range(256)) * 256  # 64 KiB: stored in task_payloads
SMALL = b"small payload"  # stored in the row


class Hub:
    """A queue over a database file, reopened by `restart` (like a Hub process); every
    statement the store runs is traced (with its parameters)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = FakeClock()
        self.statements: list[str] = []
        self._open()

    def _open(self) -> None:
        self.db = Database(self.path)
        self.db.conn.set_trace_callback(self.statements.append)
        self.queue = TaskQueue(store=TaskStore(self.db), clock=self.clock)

    def flush(self) -> list[str]:
        """Write what is marked; the statements that wrote it."""
        self.statements.clear()
        self.queue.flush()
        return [s for s in self.statements if s.split(" ", 1)[0] in ("INSERT", "UPDATE")]

    def restart(self) -> TaskQueue:
        self.queue.flush()
        self.db.close()
        self._open()
        return self.queue

    def close(self) -> None:
        self.queue.flush()
        self.db.close()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub(tmp_path / "hub.sqlite3")
    yield h
    h.close()


def _session(queue: TaskQueue, n: int) -> Session:
    session = Session(
        session_id=f"s{n}",
        agent_id=f"agent-{n}",
        trust_level=pb.TrustLevel.LOW,
        capabilities={"task_types": "a"},
        max_concurrent_tasks=4,
    )
    queue.add_session(session)
    queue.open_stream(session)
    return session


def _hex(data: bytes) -> str:
    return data.hex()  # a statement with the blob as a parameter shows x'<hex>'


def test_a_change_after_the_insert_does_not_write_the_payload_again(hub: Hub) -> None:
    rec = hub.queue.submit(TaskSubmission(payload=BIG, task_type="a"))
    first = hub.flush()
    assert sum(_hex(BIG) in s for s in first) == 1  # once, into task_payloads
    assert any(s.startswith("INSERT OR REPLACE INTO task_payloads") for s in first)

    session = _session(hub.queue, 1)
    assert rec.state == S.LEASED
    leased = hub.flush()
    assert len(leased) == 1 and leased[0].startswith("UPDATE tasks SET")
    assert _hex(BIG) not in leased[0] and "result" not in leased[0]

    hub.queue.report_status(session, pb.TaskStatus(task_id=rec.task_id, progress=0.5))
    running = hub.flush()
    assert len(running) == 1 and _hex(BIG) not in running[0] and "result" not in running[0]

    result = b"\xfe" * 5000
    hub.queue.record_result(
        session, pb.TaskResult(task_id=rec.task_id, success=True, result=result)
    )
    done = hub.flush()
    assert len(done) == 1 and done[0].startswith("UPDATE tasks SET")
    assert _hex(BIG) not in done[0] and done[0].count(_hex(result)) == 1

    # The row holds no copy of the large payload; task_payloads holds it once.
    conn = hub.db.conn
    assert conn.execute("SELECT length(payload) FROM tasks").fetchall() == [(0,)]
    assert conn.execute("SELECT payload FROM task_payloads").fetchall() == [(BIG,)]


def test_payloads_and_results_survive_a_restart_after_several_changes(hub: Hub) -> None:
    queue = hub.queue
    big = queue.submit(TaskSubmission(description="big", payload=BIG, task_type="a"))
    small = queue.submit(TaskSubmission(description="small", payload=SMALL, task_type="a"))
    left = queue.submit(TaskSubmission(description="left", payload=BIG[::-1], task_type="a"))
    hub.flush()
    session = _session(queue, 1)
    assert {big.state, small.state, left.state} == {S.LEASED}
    hub.flush()
    queue.report_status(session, pb.TaskStatus(task_id=left.task_id, progress=0.25))
    queue.record_result(session, pb.TaskResult(task_id=big.task_id, success=True, result=BIG))
    hub.flush()
    queue.record_result(
        session, pb.TaskResult(task_id=small.task_id, success=False, error_message="no")
    )
    # The last changes are written by the restart's flush; `left` is still leased.
    queue = hub.restart()

    got_big, got_small, got_left = (queue.get(r.task_id) for r in (big, small, left))
    assert got_big is not None and got_small is not None and got_left is not None
    assert (got_big.state, got_big.payload, got_big.result) == (S.SUCCEEDED, BIG, BIG)
    assert got_big.assigned_agent_id == "agent-1" and got_big.attempt == 1
    assert (got_small.state, got_small.payload, got_small.error_message) == (
        S.FAILED,
        SMALL,
        "no",
    )
    # Leased when the Hub stopped: pending again, with its payload, and it runs.
    assert (got_left.state, got_left.payload, got_left.attempt) == (S.PENDING, BIG[::-1], 0)
    session = _session(queue, 2)
    assert got_left.state == S.LEASED
    assert session.unsent[0].assignment is not None
    assert session.unsent[0].assignment.payload == BIG[::-1]
    queue.record_result(session, pb.TaskResult(task_id=left.task_id, success=True, result=b"late"))
    queue = hub.restart()
    again = queue.get(left.task_id)
    assert again is not None
    assert (again.state, again.payload, again.result) == (S.SUCCEEDED, BIG[::-1], b"late")


def test_a_task_row_missing_from_the_table_is_written_whole(hub: Hub) -> None:
    rec = hub.queue.submit(TaskSubmission(payload=BIG, task_type="a"))
    hub.flush()
    hub.db.conn.execute("DELETE FROM tasks")  # behind the store's back
    hub.db.conn.commit()
    _session(hub.queue, 1)
    hub.flush()
    queue = hub.restart()
    got = queue.get(rec.task_id)
    assert got is not None and got.payload == BIG and got.state == S.PENDING


def test_a_database_of_the_previous_layout_keeps_its_payloads(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, description TEXT NOT NULL,
            payload BLOB NOT NULL, task_type TEXT NOT NULL, target_agent_id TEXT NOT NULL,
            priority INTEGER NOT NULL, metadata TEXT NOT NULL, workflow_id TEXT NOT NULL,
            max_attempts INTEGER NOT NULL, created_at REAL NOT NULL, deadline REAL,
            idempotency_key TEXT NOT NULL, state INTEGER NOT NULL, attempt INTEGER NOT NULL,
            assigned_agent_id TEXT NOT NULL, progress REAL NOT NULL,
            status_message TEXT NOT NULL, result BLOB NOT NULL, error_message TEXT NOT NULL,
            metrics TEXT NOT NULL, updated_at REAL NOT NULL, completed_at REAL
        );
        """
    )
    # A pending task and a leased one, each with a large payload in the row.
    for task_id, seq, state in (("t1", 1, 1), ("t2", 2, 2)):
        conn.execute(
            "INSERT INTO tasks VALUES (?, ?, 'old', ?, 'a', '', 0, '{}', '', 3, 1.0, NULL, '',"
            " ?, ?, '', 0.0, '', x'', '', '{}', 1.0, NULL)",
            (task_id, seq, BIG, state, state - 1),
        )
    conn.commit()
    conn.close()

    h = Hub(path)
    try:
        assert h.queue.get("t2") is not None  # read at start: pending again
        session = _session(h.queue, 1)
        h.flush()
        for task_id in ("t1", "t2"):
            rec = h.queue.get(task_id)
            assert rec is not None and rec.state == S.LEASED and rec.payload == BIG
            h.queue.record_result(
                session, pb.TaskResult(task_id=task_id, success=True, result=b"ok")
            )
        queue = h.restart()
        for task_id in ("t1", "t2"):
            rec = queue.get(task_id)
            assert rec is not None and (rec.state, rec.payload, rec.result) == (
                S.SUCCEEDED,
                BIG,
                b"ok",
            )
    finally:
        h.close()


def test_a_later_change_does_not_write_the_columns_fixed_at_submission(hub: Hub) -> None:
    rec = hub.queue.submit(
        TaskSubmission(description="describe me", task_type="a", metadata={"team": "blue"})
    )
    (insert,) = hub.flush()
    assert "describe me" in insert and '"team": "blue"' in insert
    _session(hub.queue, 1)
    assert rec.state == S.LEASED
    (lease,) = hub.flush()
    # Only what a lease changes: not the description, metadata, task type, priority...
    assert lease.startswith("UPDATE tasks SET")
    assert "describe me" not in lease and "team" not in lease
    assert "metadata" not in lease and "description" not in lease
    queue = hub.restart()
    again = queue.get(rec.task_id)
    assert again is not None
    assert (again.description, again.metadata) == ("describe me", {"team": "blue"})
