"""The task store commits its groups in a thread of its own (aether_hub/taskstore.py).

With a database file a group's rows are snapshotted on the event loop and committed by
the store's thread on a second connection: the loop goes on serving meanwhile, calls
that change tasks during that commit wait for the next group, an OK still means
committed, and a failing commit answers `StoreUnavailableError` and keeps the changes.
Each test holds SQLite's write lock from a connection of its own to keep a commit in
flight for as long as it needs.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aether_hub.db import Database
from aether_hub.tasks import TaskQueue, TaskSubmission
from aether_hub.taskstore import StoreUnavailableError, TaskStore
from tests.hubserver.hubkit import FakeClock

BIG = b"p" * 65536


class Hub:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = Database(path)
        self.store = TaskStore(self.db)
        self.queue = TaskQueue(store=self.store, clock=FakeClock())

    def stored_ids(self) -> set[str]:
        """The task ids committed to the file, read by a connection of its own."""
        conn = sqlite3.connect(self.path)
        try:
            return {str(row[0]) for row in conn.execute("SELECT task_id FROM tasks")}
        finally:
            conn.close()

    def lock(self) -> sqlite3.Connection:
        """A connection holding the file's write lock until it commits."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        return conn


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub(tmp_path / "hub.sqlite3")
    yield h
    h.db.close()


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} did not happen within 5 s")


async def test_the_loop_serves_while_a_group_commits_and_later_calls_wait_for_the_next(
    hub: Hub,
) -> None:
    blocker = hub.lock()
    first = hub.queue.submit(TaskSubmission(task_type="a", payload=BIG))
    first_ok = asyncio.create_task(hub.store.durable())
    # The store's thread waits for the lock; the event loop keeps running meanwhile.
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert not first_ok.done()
    # In flight: not in the table yet, so read from memory.
    assert hub.store.is_dirty(first.task_id)
    fetched = hub.store.fetch(first.task_id)
    assert fetched is first

    # A change made during the commit waits for the next group, not for this one.
    second = hub.queue.submit(TaskSubmission(task_type="a"))
    second_ok = asyncio.create_task(hub.store.durable())
    # Nothing new to write, but the group in flight holds `first`: wait for it.
    again_ok = asyncio.create_task(_durable_after(hub, first.task_id))
    blocker.execute("COMMIT")
    blocker.close()

    await asyncio.wait_for(first_ok, 10)
    assert first.task_id in hub.stored_ids()
    await asyncio.wait_for(second_ok, 10)
    assert {first.task_id, second.task_id} <= hub.stored_ids()
    assert await asyncio.wait_for(again_ok, 10)
    assert not hub.store.is_dirty(first.task_id)
    assert not hub.store.is_dirty(second.task_id)


def _failing(hub: Hub) -> str | None:
    return hub.store.failing


async def _durable_after(hub: Hub, task_id: str) -> bool:
    await hub.store.durable()
    return task_id in hub.stored_ids()


async def test_a_failing_group_answers_unavailable_and_its_changes_are_written_later(
    hub: Hub,
) -> None:
    # An insert fails the way a full disk does (the trigger is dropped to "free space").
    with hub.db.conn:
        hub.db.conn.execute(
            "CREATE TRIGGER full BEFORE INSERT ON tasks"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    rec = hub.queue.submit(TaskSubmission(task_type="a"))
    with pytest.raises(StoreUnavailableError, match="the disk is full"):
        await hub.store.durable()
    assert _failing(hub) == "the disk is full"
    assert hub.store.is_dirty(rec.task_id)
    assert rec.task_id not in hub.stored_ids()

    with hub.db.conn:
        hub.db.conn.execute("DROP TRIGGER full")
    await hub.store.durable()  # the kept change goes with the next group
    assert _failing(hub) is None  # and logged that writes work again
    assert rec.task_id in hub.stored_ids()
    assert not hub.store.is_dirty(rec.task_id)


async def test_a_refused_submission_is_not_written_by_the_next_group(hub: Hub) -> None:
    with hub.db.conn:
        hub.db.conn.execute(
            "CREATE TRIGGER full BEFORE INSERT ON tasks"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    refused = asyncio.create_task(hub.queue.submit_durably(TaskSubmission(task_type="a")))
    # Another task changed in the same pass goes into the same (failing) group.
    await asyncio.sleep(0)
    other = hub.queue.submit(TaskSubmission(task_type="b"))
    other_ok = asyncio.create_task(hub.store.durable())
    with pytest.raises(StoreUnavailableError):
        await refused
    with hub.db.conn:
        hub.db.conn.execute("DROP TRIGGER full")
    with pytest.raises(StoreUnavailableError):
        await other_ok  # it was in the failed group too
    await hub.store.durable()
    # The refused task was forgotten before the next group was built: only `other`.
    assert hub.stored_ids() == {other.task_id}


async def test_close_finishes_the_group_in_flight_and_writes_the_rest(hub: Hub) -> None:
    blocker = hub.lock()
    first = hub.queue.submit(TaskSubmission(task_type="a"))
    first_ok = asyncio.create_task(hub.store.durable())
    await _until(lambda: hub.store.is_dirty(first.task_id) and not first_ok.done(), "a write")
    await asyncio.sleep(0.05)
    second = hub.queue.submit(TaskSubmission(task_type="a"))  # marked, nobody waits
    # Released from another thread: `close` holds the event loop while it waits.
    release = threading.Timer(0.1, blocker.execute, ("COMMIT",))
    release.start()
    hub.db.close()  # waits for the thread, then writes `second` itself
    release.join()
    blocker.close()
    assert {first.task_id, second.task_id} <= hub.stored_ids()
    await asyncio.wait_for(first_ok, 10)
