"""Finished tasks leave the Hub's memory by count, bytes and age; ListTasks filters use
indexes (docs/devhub.md). Drives `TaskQueue` directly: no network, no timing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aether._wire import pb
from aether_hub.commands import configure_hub_parser, hub_config_from_args
from aether_hub.db import Database
from aether_hub.settings import ConfigError, HubConfig
from aether_hub.tasks import TaskQueue, TaskSubmission
from aether_hub.taskstore import TaskStore
from tests.conftest import fuzz_scale
from tests.hubserver.hubkit import FakeClock
from tests.hubserver.test_hub_queue_invariants import Model, Op, openings, ops

S = pb.TaskState
KIB64 = b"x" * (64 * 1024)


def _finish(queue: TaskQueue, n: int, payload: bytes = KIB64) -> list[str]:
    ids = []
    for _ in range(n):
        rec = queue.submit(TaskSubmission(payload=payload))
        queue.cancel(rec.task_id, "done")
        ids.append(rec.task_id)
    return ids


def test_finished_payload_bytes_stay_under_the_byte_bound() -> None:
    bound = 1024 * 1024
    queue = TaskQueue(clock=FakeClock(), terminal_retention_bytes=bound)
    ids = _finish(queue, 200)
    count, held = queue.terminal_held()
    assert held <= bound
    assert sum(len(r.payload) + len(r.result) for r in queue.records()) <= bound
    assert count == bound // len(KIB64)
    # The newest finished tasks are the ones kept; without --db the rest are gone.
    assert queue.get(ids[-1]) is not None
    assert queue.get(ids[0]) is None


def test_finished_tasks_are_bounded_by_count() -> None:
    queue = TaskQueue(clock=FakeClock(), terminal_retention=10)
    _finish(queue, 50, payload=b"p")
    assert queue.terminal_held()[0] == 10
    assert len(queue) == 10


def test_finished_tasks_leave_memory_after_the_age_bound() -> None:
    clock = FakeClock()
    queue = TaskQueue(clock=clock, terminal_retention_seconds=60)
    old = _finish(queue, 3, payload=b"p")
    clock.advance(30)
    new = _finish(queue, 2, payload=b"p")
    pending = queue.submit(TaskSubmission(payload=b"waiting"))
    clock.advance(31)
    queue.sweep()
    assert all(queue.get(i) is None for i in old)
    assert all(queue.get(i) is not None for i in new)
    assert queue.get(pending.task_id) is not None  # unfinished tasks are never retired
    clock.advance(60)
    queue.sweep()
    assert queue.terminal_held() == (0, 0)
    assert queue.get(pending.task_id) is not None


def test_with_db_a_retired_task_keeps_its_payload_in_the_database(tmp_path: Path) -> None:
    db = Database(tmp_path / "hub.sqlite3")
    try:
        queue = TaskQueue(store=TaskStore(db), clock=FakeClock(), terminal_retention_bytes=0)
        rec = queue.submit(TaskSubmission(payload=KIB64, idempotency_key="k1"))
        queue.cancel(rec.task_id, "done")
        queue.flush()
        assert rec.task_id not in {r.task_id for r in queue.records()}
        assert queue.terminal_held() == (0, 0)
        stored = queue.get(rec.task_id)
        assert stored is not None
        assert stored.payload == KIB64
        assert stored.state == S.CANCELLED
        # The idempotency key still names the stored task.
        again = queue.submit(TaskSubmission(payload=b"other", idempotency_key="k1"))
        assert again.task_id == rec.task_id
    finally:
        db.close()


def test_retention_bounds_come_from_flags_and_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    path.write_text(json.dumps({"hub": {"terminal_task_retention_seconds": 600}}))
    parser = argparse.ArgumentParser()
    configure_hub_parser(parser)
    args = parser.parse_args(
        ["--config", str(path), "--retain-tasks", "500", "--retain-task-bytes", "1048576"]
    )
    config = hub_config_from_args(args)
    assert config.terminal_task_retention == 500
    assert config.terminal_task_retention_bytes == 1048576
    assert config.terminal_task_retention_seconds == 600
    defaults = HubConfig()
    assert defaults.terminal_task_retention_bytes == 256 * 1024 * 1024
    assert defaults.terminal_task_retention_seconds == 86_400
    with pytest.raises(ConfigError, match="terminal_task_retention_seconds"):
        HubConfig(terminal_task_retention_seconds=-1).validate()


def _brute(
    queue: TaskQueue,
    *,
    state: pb.TaskState = S.UNSPECIFIED,
    agent_id: str = "",
    task_type: str = "",
    visible_to: str = "",
) -> list[str]:
    out = []
    for rec in sorted(queue.records(), key=lambda r: -r.seq):
        if state != S.UNSPECIFIED and rec.state != state:
            continue
        if agent_id and agent_id not in (rec.assigned_agent_id, rec.target_agent_id):
            continue
        if task_type and rec.task_type != task_type:
            continue
        if visible_to and visible_to not in (rec.submitted_by, rec.assigned_agent_id):
            continue
        out.append(rec.task_id)
    return out


def _paged(queue: TaskQueue, limit: int, **filters: object) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        page, token = queue.list_tasks(limit=limit, page_token=token, **filters)  # type: ignore[arg-type]
        ids += [rec.task_id for rec in page]
        if not token:
            return ids


def test_a_filtered_listing_examines_only_matching_records() -> None:
    queue = TaskQueue(clock=FakeClock())
    for i in range(1000):
        rec = queue.submit(TaskSubmission(task_type="rare" if i % 100 == 0 else "common"))
        if i % 2:
            queue.cancel(rec.task_id)
    before = queue.list_examined
    page, token = queue.list_tasks(task_type="rare")
    assert len(page) == 10 and token == ""
    assert queue.list_examined - before == 10
    # Newest first, and a page of a big state class costs the page, not the history.
    assert [r.seq for r in page] == sorted((r.seq for r in page), reverse=True)
    before = queue.list_examined
    page, token = queue.list_tasks(state=S.CANCELLED, limit=20)
    assert len(page) == 20 and token
    assert queue.list_examined - before <= 21
    before = queue.list_examined
    page, _ = queue.list_tasks(state=S.CANCELLED, limit=20, page_token=token)
    assert len(page) == 20 and all(r.seq < int(token[1:]) for r in page)
    assert queue.list_examined - before <= 21


@settings(max_examples=10 * fuzz_scale(), deadline=None)
@given(start=openings, steps=ops, retention=st.integers(0, 8), limit=st.integers(1, 4))
def test_indexed_listing_equals_a_full_scan(
    start: list[Op], steps: list[Op], retention: int, limit: int
) -> None:
    model = Model()
    model.queue = TaskQueue(clock=model.clock, default_max_attempts=2, terminal_retention=retention)
    for op in start + steps:
        model.apply(op)
    queue = model.queue
    filters: list[dict[str, object]] = [{}]
    filters += [{"state": s} for s in (S.PENDING, S.LEASED, S.RUNNING, S.SUCCEEDED, S.FAILED)]
    filters += [{"state": S.CANCELLED}, {"state": S.TIMED_OUT}]
    filters += [{"agent_id": a} for a in ("a", "b", "c")]
    filters += [{"task_type": t} for t in ("x", "y", "")]
    filters += [{"visible_to": a} for a in ("a", "c")]
    filters += [{"state": S.SUCCEEDED, "agent_id": "c"}, {"task_type": "x", "agent_id": "a"}]
    for f in filters:
        assert _paged(queue, limit, **f) == _brute(queue, **f)  # type: ignore[arg-type]
