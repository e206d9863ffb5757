"""A restarted Hub leaves its pending tasks in the database and pages them in.

Real SQLite files: the queue's dispatch order after a restart equals the order of a Hub
that never stopped, payloads are read on dispatch, and GetTask, CancelTask, WatchTask,
ListTasks, idempotency keys, deadlines, workflow access and the queue counts see the
tasks not read yet (aether_hub/taskbacklog.py).
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aether import AetherAgent, AgentConfig, TaskAssignment, TaskClient, TaskResult, TaskState
from aether._wire import pb
from aether_hub import inspection, taskbacklog
from aether_hub.db import Database
from aether_hub.sessions import Session
from aether_hub.settings import HubConfig
from aether_hub.tasks import TaskQueue, TaskSubmission
from aether_hub.taskstore import TaskStore
from tests.conftest import fuzz_scale
from tests.hubserver.hubkit import FakeClock, running_hub

S = pb.TaskState
AGENT = "agent-x"


@pytest.fixture(autouse=True)
def _small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(taskbacklog, "PAGE_SIZE", 7)


class Hub:
    """A queue over a database file, reopened by `restart` (like a Hub process)."""

    def __init__(self, path: Path, clock: FakeClock | None = None) -> None:
        self.path = path
        self.clock = clock or FakeClock()
        self.db = Database(path)
        self.queue = TaskQueue(store=TaskStore(self.db), clock=self.clock)
        self.serial = 0

    def restart(self) -> TaskQueue:
        """Write what is marked, close, and open a fresh queue on the same file."""
        self.queue.flush()
        self.db.close()
        self.db = Database(self.path)
        self.queue = TaskQueue(store=TaskStore(self.db), clock=self.clock)
        return self.queue

    def close(self) -> None:
        self.queue.flush()
        self.db.close()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub(tmp_path / "hub.sqlite3")
    yield h
    h.close()


def _session(queue: TaskQueue, n: int, capacity: int = 1, types: str = "a,b") -> Session:
    session = Session(
        session_id=f"s{n}",
        agent_id=AGENT,
        trust_level=pb.TrustLevel.LOW,
        capabilities={"task_types": types},
        max_concurrent_tasks=capacity,
    )
    queue.add_session(session)
    queue.open_stream(session)
    return session


def _run_one(queue: TaskQueue, session: Session) -> str | None:
    """Finish the session's oldest lease; its description (None when idle)."""
    if not session.leases:
        return None
    task_id = next(iter(session.leases))
    rec = session.leases[task_id]
    queue.record_result(session, pb.TaskResult(task_id=task_id, success=True, result=b"r"))
    return rec.description


def _mixed(n: int, seed: int = 7) -> list[TaskSubmission]:
    rnd = random.Random(seed)
    subs = []
    for i in range(n):
        subs.append(
            TaskSubmission(
                description=f"t{i}",
                payload=f"payload {i}".encode(),
                task_type=rnd.choice(["a", "b", "", "c"]),
                target_agent_id=rnd.choice(["", "", "", AGENT, "agent-y"]),
                priority=rnd.randrange(4),
            )
        )
    return subs


def _drain(queue: TaskQueue, session: Session, extra: dict[int, TaskSubmission]) -> list[str]:
    """Run every task the session gets, one at a time; `extra[i]` is submitted after
    the i-th task ran."""
    order: list[str] = []
    while True:
        done = _run_one(queue, session)
        if done is None:
            return order
        order.append(done)
        if len(order) in extra:
            queue.submit(extra[len(order)])


def test_restart_keeps_the_dispatch_order_of_a_hub_that_never_stopped(hub: Hub) -> None:
    subs = _mixed(300)
    reference = TaskQueue(clock=FakeClock())
    for sub in subs:
        reference.submit(sub)
        hub.queue.submit(sub)
    # New tasks arrive while the backlog drains: some beat it, some wait behind it.
    extra = {
        i: TaskSubmission(description=f"new{i}", task_type="a", priority=i % 5)
        for i in (1, 5, 20, 21, 60)
    }
    expected = _drain(reference, _session(reference, 1), extra)
    queue = hub.restart()
    assert len(queue) == 0  # nothing pending was read at start
    # A task read early (GetTask) keeps its place in the order.
    early = next(r for r in hub.queue.list_tasks(limit=1000)[0] if r.priority == 0)
    assert queue.get(early.task_id) is not None
    assert _drain(queue, _session(queue, 1), extra) == expected
    # Eligible tasks all ran; the others (type c, agent-y) still wait in the table.
    left = {r.description for r in queue.list_tasks(state=S.PENDING, limit=1000)[0]}
    assert left == {
        s.description for s in subs if s.task_type == "c" or s.target_agent_id == "agent-y"
    } - {d for d in expected}


def test_payloads_are_read_on_dispatch_and_memory_holds_a_page(hub: Hub) -> None:
    ids = [hub.queue.submit(TaskSubmission(payload=bytes([i]) * 1000, task_type="a")).task_id
           for i in range(50)]  # fmt: skip
    queue = hub.restart()
    assert len(queue) == 0
    session = _session(queue, 1, capacity=3)
    assert len(queue) <= 3 + taskbacklog.PAGE_SIZE
    rec = queue.get(ids[0])
    assert rec is not None and rec.state == S.LEASED and rec.payload == bytes([0]) * 1000
    assert session.unsent  # the assignment, with its payload, is on the stream
    first = session.unsent[0]
    assert first.assignment is not None and first.assignment.payload == rec.payload


def test_get_cancel_and_watch_a_task_not_read_yet(hub: Hub) -> None:
    ids = [hub.queue.submit(TaskSubmission(description=f"d{i}", task_type="a")).task_id
           for i in range(30)]  # fmt: skip
    queue = hub.restart()
    target = ids[20]
    event = queue.watch(target)
    got = queue.get(target)
    assert got is not None and got.state == S.PENDING and got.description == "d20"
    reply = queue.cancel(target, "not needed")
    assert reply.success and event.is_set()
    again = queue.get(target)  # the same record, which the cancellation changed
    assert again is got and again.state == S.CANCELLED
    session = _session(queue, 1)
    ran = _drain(queue, session, {})
    assert "d20" not in ran and len(ran) == 29
    # After another restart the cancellation is still there, and nothing runs twice.
    queue = hub.restart()
    stored = queue.get(target)
    assert stored is not None and stored.state == S.CANCELLED
    assert _drain(queue, _session(queue, 2), {}) == []


def test_nothing_is_lost_across_restarts_with_leases_and_counts(hub: Hub) -> None:
    ids = [hub.queue.submit(sub).task_id for sub in _mixed(120, seed=3)]
    queue = hub.restart()
    stats = inspection.queue_stats([], queue.state_counts(), queue.backlog_counts())
    assert stats.pending == 120
    assert sum(queue.pending_by_type().values()) == 120
    session = _session(queue, 1, capacity=4, types="a,b,c")
    for _ in range(10):
        _run_one(queue, session)
    # Crash with 4 leased: they are pending again after the restart, uncounted.
    queue = hub.restart()
    stats = inspection.queue_stats([], queue.state_counts(), queue.backlog_counts())
    assert stats.pending == 110 and stats.running == 0
    assert sum(t.waiting_for_target for t in stats.task_types) > 0  # agents not connected
    for n, agent_id in enumerate([AGENT, "agent-y"]):
        s = Session(
            session_id=f"z{n}",
            agent_id=agent_id,
            trust_level=pb.TrustLevel.LOW,
            capabilities={"task_types": "a,b,c"},
            max_concurrent_tasks=2,
        )
        queue.add_session(s)
        queue.open_stream(s)
        while _run_one(queue, s) is not None:
            pass
    queue = hub.restart()
    finished = [queue.get(i) for i in ids]
    assert all(r is not None and r.state == S.SUCCEEDED for r in finished)
    assert all(r is not None and r.attempt == 1 for r in finished)
    stats = inspection.queue_stats([], queue.state_counts(), queue.backlog_counts())
    assert stats.pending == 0


def test_listing_idempotency_deadlines_and_workflows_see_the_backlog(tmp_path: Path) -> None:
    clock = FakeClock()
    hub = Hub(tmp_path / "hub.sqlite3", clock)
    try:
        q = hub.queue
        keyed = q.submit(TaskSubmission(description="keyed", idempotency_key="k1"))
        short = q.submit(TaskSubmission(description="short", timeout_seconds=10))
        q.submit(TaskSubmission(description="sub", workflow_id="wf", submitted_by="agent-s"))
        for i in range(20):
            q.submit(TaskSubmission(description=f"plain{i}"))
        queue = hub.restart()
        listed = [r.description for r in queue.list_tasks(limit=1000)[0]]
        assert listed[0] == "plain19" and listed[-1] == "keyed" and len(listed) == 23
        page, token = queue.list_tasks(limit=5)
        assert [r.description for r in page] == listed[:5] and token
        assert [r.description for r in queue.list_tasks(limit=5, page_token=token)[0]] == (
            listed[5:10]
        )
        for filters in ({"workflow_id": "wf"}, {"visible_to": "agent-s"}):
            found = queue.list_tasks(limit=10, **filters)[0]  # type: ignore[arg-type]
            assert [r.description for r in found] == ["sub"]
        assert queue.list_tasks(state=S.RUNNING, limit=10)[0] == []
        assert queue.agent_in_workflow("agent-s", "wf")
        assert not queue.agent_in_workflow("agent-t", "wf")
        again = queue.submit(TaskSubmission(description="again", idempotency_key="k1"))
        assert again.task_id == keyed.task_id
        assert queue.next_deadline() == short.deadline
        clock.advance(11)
        assert queue.sweep() == 1
        timed_out = queue.get(short.task_id)
        assert timed_out is not None and timed_out.state == S.TIMED_OUT
        session = Session(
            session_id="s1",
            agent_id="agent-any",
            trust_level=pb.TrustLevel.LOW,
            capabilities={},
            max_concurrent_tasks=1,
        )
        queue.add_session(session)
        queue.open_stream(session)
        ran = []
        while (d := _run_one(queue, session)) is not None:
            ran.append(d)
        assert sorted(ran) == sorted(["keyed", "sub", *(f"plain{i}" for i in range(20))])
    finally:
        hub.close()


class _Echo(AetherAgent):
    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        return TaskResult(task_id=task.task_id, success=True, result=task.payload)


async def test_a_restarted_hub_serves_its_backlog_over_the_api(tmp_path: Path) -> None:
    config = HubConfig(port=0, dev=True, db_path=str(tmp_path / "hub.sqlite3"))
    async with running_hub(config) as hub, TaskClient(hub.address) as tc:
        ids = [
            (await tc.submit(f"job {i}", task_type="a", payload=f"p{i}".encode())).task_id
            for i in range(40)
        ]
    async with running_hub(config) as hub, TaskClient(hub.address) as tc:
        assert len(hub.queue) == 0  # nothing pending was read at start
        stats = await tc.queue_stats()
        assert stats.pending == 40
        task = await tc.get(ids[30])
        assert task.state is TaskState.PENDING and task.payload == b"p30"
        listed = [t.task_id async for t in tc.list(page_size=7)]  # pages across the table
        assert listed == ids[::-1]
        cancelled = await tc.cancel(ids[35], reason="not needed")
        assert cancelled.success
        agent = _Echo(
            AgentConfig(
                agent_id="echo",
                agent_name="echo",
                hub_url=hub.address,
                capabilities={"task_types": "a"},
                max_concurrent_tasks=4,
            )
        )
        await agent.start()
        try:
            done = [await tc.wait(task_id, timeout=30) for task_id in ids]
        finally:
            await agent.stop()
        for i, final in enumerate(done):
            if i == 35:
                assert final.state is TaskState.CANCELLED
            else:
                assert final.state is TaskState.SUCCEEDED and final.result == f"p{i}".encode()


_TASK = st.tuples(
    st.sampled_from(["a", "b", "", "c"]),
    st.sampled_from(["", "", AGENT, "agent-y"]),
    st.integers(min_value=-2, max_value=2),
)


@settings(max_examples=40 * fuzz_scale(), deadline=None)
@given(
    tasks=st.lists(_TASK, max_size=40),
    page=st.integers(min_value=1, max_value=5),
    early=st.sets(st.integers(min_value=0, max_value=39), max_size=5),
    capacity=st.integers(min_value=1, max_value=3),
)
def test_any_backlog_dispatches_in_the_order_of_a_hub_that_never_stopped(
    tasks: list[tuple[str, str, int]], page: int, early: set[int], capacity: int
) -> None:
    subs = [
        TaskSubmission(description=f"t{i}", task_type=t, target_agent_id=a, priority=p)
        for i, (t, a, p) in enumerate(tasks)
    ]
    extra = {2: TaskSubmission(description="new", task_type="a", priority=1)}
    reference = TaskQueue(clock=FakeClock())
    for sub in subs:
        reference.submit(sub)
    expected = _drain(reference, _session(reference, 1, capacity), extra)
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(taskbacklog, "PAGE_SIZE", page)
        hub = Hub(Path(tmp) / "hub.sqlite3")
        try:
            ids = [hub.queue.submit(sub).task_id for sub in subs]
            queue = hub.restart()
            for i in sorted(early):
                if i < len(ids):
                    assert queue.get(ids[i]) is not None  # read early, out of order
            assert _drain(queue, _session(queue, 1, capacity), extra) == expected
            left = inspection.queue_stats([], queue.state_counts(), queue.backlog_counts())
            assert left.pending == len(subs) + (1 if len(expected) >= 2 else 0) - len(expected)
        finally:
            hub.close()
