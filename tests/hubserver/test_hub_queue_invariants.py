"""The task queue under random operation sequences: nothing lost, limits held, work-conserving.

Drives `TaskQueue` directly (no network) with Hypothesis-generated sequences of submits,
stream opens and breaks, results, releases, cancellations, session ends and deadline
sweeps, and checks the queue's invariants after every step.
"""

from __future__ import annotations

import heapq

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from hypothesis import given, settings
from hypothesis import strategies as st

from aether._wire import pb
from aether_hub.sessions import Session, SessionState
from aether_hub.taskrecord import TERMINAL_STATES
from aether_hub.tasks import TaskQueue, TaskSubmission
from tests.conftest import fuzz_scale
from tests.hubserver.hubkit import FakeClock

S = pb.TaskState
AGENTS = {"a": "x", "b": "y", "c": "x,y"}  # agent id -> task types

Op = tuple[str, int, int, int]
ops = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "submit",
                "submit",
                "submit",
                "open",
                "result",
                "result",
                "release",
                "cancel",
                "break",
                "pause",
                "end",
                "unregister",
                "tick",
                "heartbeat",
                "stray",
                "stray",
            ]
        ),
        st.integers(0, 5),
        st.integers(0, 5),
        st.integers(0, 3),
    ),
    min_size=5,
    max_size=60,
)
# Every run starts with one to three open sessions, so most steps have someone to serve.
openings = st.lists(
    st.tuples(st.just("open"), st.integers(0, 5), st.integers(0, 5), st.just(0)),
    min_size=1,
    max_size=3,
)


class Model:
    """The queue plus the sessions the test opened."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.queue = TaskQueue(clock=self.clock, default_max_attempts=2)
        self.sessions: dict[str, tuple[Session, int]] = {}
        self.ids: list[str] = []
        self.serial = 0

    def session(self, which: int) -> Session | None:
        live = sorted(self.sessions)
        if not live:
            return None
        return self.sessions[live[which % len(live)]][0]

    def apply(self, op: Op) -> None:
        name, i, j, k = op
        q = self.queue
        if name == "submit":
            types = ["", "x", "y", "z"]
            targets = ["", "", "", "a", "b"]
            rec = q.submit(
                TaskSubmission(
                    task_type=types[i % len(types)],
                    target_agent_id=targets[j % len(targets)],
                    priority=k,
                    timeout_seconds=(i + 1) * 10 if k == 3 else 0,
                )
            )
            self.ids.append(rec.task_id)
        elif name == "open":
            agent = sorted(AGENTS)[i % len(AGENTS)]
            self.serial += 1
            opened = Session(
                session_id=f"s{self.serial}",
                agent_id=agent,
                trust_level=pb.TrustLevel.LOW,
                capabilities={"task_types": AGENTS[agent]},
                max_concurrent_tasks=1 + j % 3,
            )
            q.add_session(opened)
            gen = q.open_stream(opened)
            self.sessions[opened.session_id] = (opened, gen)
        elif name in ("result", "release"):
            session = self.session(i)
            if session is None or not session.leases:
                return
            task_id = sorted(session.leases)[j % len(session.leases)]
            q.record_result(
                session,
                pb.TaskResult(task_id=task_id, success=k % 2 == 0, released=name == "release"),
            )
        elif name == "cancel":
            if self.ids:
                q.cancel(self.ids[i * 7 % len(self.ids)])
        elif name in ("break", "pause"):
            # A lost connection, or a stream the agent cancelled on a live connection.
            session = self.session(i)
            if session is not None:
                q.close_stream(
                    session,
                    self.sessions[session.session_id][1],
                    connection_lost=name == "break",
                )
                gen = q.open_stream(session)
                self.sessions[session.session_id] = (session, gen)
        elif name in ("end", "unregister"):
            session = self.session(i)
            if session is not None:
                del self.sessions[session.session_id]
                # What SessionRegistry.end does before it tells the queue.
                session.state = SessionState.EXPIRED if name == "end" else SessionState.CLOSED
                session.end_reason = "test"
                q.session_ended(session)
        elif name == "tick":
            self.clock.advance(7.0 * (i + 1))
            q.sweep()
        elif name == "stray":
            # Any session reporting on any task: late outbox results, statuses of tasks
            # that moved on, other agents' tasks. Refusals are fine; corruption is not.
            if not self.sessions or not self.ids:
                return
            task_id = self.ids[(i * 6 + j) % len(self.ids)]
            held = q.get(task_id)
            holder_agent = held.assigned_agent_id if held is not None else ""
            same_agent = [s for s, _ in self.sessions.values() if s.agent_id == holder_agent]
            # Mostly a session of the agent that last held the task (an outbox after a
            # reconnect), sometimes anyone.
            session = same_agent[0] if same_agent and i % 3 else self.session(i)
            assert session is not None
            try:
                if k == 0:
                    q.report_status(session, pb.TaskStatus(task_id=task_id, progress=0.5))
                else:
                    q.record_result(
                        session, pb.TaskResult(task_id=task_id, success=True, released=k == 2)
                    )
            except GRPCError as exc:
                assert exc.status in (Status.PERMISSION_DENIED, Status.NOT_FOUND)
        elif name == "heartbeat":
            session = self.session(i)
            if session is not None:
                running = [t for t, rec in session.leases.items() if not rec.terminal]
                q.heartbeat(session, running, len(running))

    def check(self) -> None:
        q = self.queue
        records = {rec.task_id: rec for rec in q.records()}
        assert set(self.ids) == set(records), "a task was lost"
        # The counters behind GetQueueStats agree with the tasks themselves.
        recount: dict[tuple[int, str, str], int] = {}
        for rec in records.values():
            kind = (int(rec.state), rec.task_type, rec.target_agent_id)
            recount[kind] = recount.get(kind, 0) + 1
        assert q.state_counts() == recount, "queue statistics drifted from the tasks"
        live = {sid: session for sid, (session, _) in self.sessions.items()}
        for rec in records.values():
            assert 0 <= rec.attempt <= rec.max_attempts
            if rec.state in TERMINAL_STATES:
                assert rec.session_id == ""
            elif rec.state == S.PENDING:
                assert rec.session_id == ""
                heap = q._heaps.get(rec.key, [])
                entries = sum(1 for entry in heap if entry[2] is rec)
                assert entries == 1, f"pending task queued {entries} times"
            else:
                assert rec.state in (S.LEASED, S.RUNNING)
                holder = live.get(rec.session_id)
                assert holder is not None, "leased to a session that is gone"
                assert holder.leases.get(rec.task_id) is rec
        for session in live.values():
            assert len(session.leases) <= session.capacity, "more leases than max_concurrent_tasks"
            if session.has_room:
                # Work-conserving: a session with room has nothing waiting for it.
                for key in session.routing_keys:
                    heap = list(q._heaps.get(key, []))
                    heapq.heapify(heap)
                    assert all(entry[2].state != S.PENDING for entry in heap), (
                        f"{session.agent_id} has room but {key} has waiting tasks"
                    )


@settings(max_examples=300 * fuzz_scale())
@given(openings, ops)
def test_queue_invariants_hold_under_random_operations(
    opening: list[Op], sequence: list[Op]
) -> None:
    model = Model()
    for op in opening + sequence:
        model.apply(op)
        model.check()
