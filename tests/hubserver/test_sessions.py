"""The session registry on its own: one way to end a session, expiry, the `sessions` table."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aether._wire import pb
from aether_hub.db import Database
from aether_hub.sessions import (
    Session,
    SessionRegistry,
    SessionState,
    StreamState,
    read_session_rows,
)


class Clock:
    """A settable clock for both the monotonic and the wall readings."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def registry(db: Database, clock: Clock) -> SessionRegistry:
    return SessionRegistry(db, heartbeat_interval=30.0, clock=clock, wall_clock=clock)


def open_session(sessions: SessionRegistry, agent_id: str) -> tuple[Session, str]:
    return sessions.open(
        agent_id,
        trust_level=pb.TrustLevel.STANDARD,
        capabilities={"task_types": "a, b"},
        agent_name=agent_id.title(),
        max_concurrent_tasks=2,
    )


def test_a_session_ends_once_and_its_listeners_hear_of_it(tmp_path: Path) -> None:
    db = Database(tmp_path / "hub.sqlite3")
    sessions = registry(db, Clock())
    heard: list[tuple[str, SessionState, bool]] = []

    def listener(session: Session) -> int:
        heard.append((session.session_id, session.state, session.state.counts_attempt))
        return 2

    sessions.on_end(listener)
    session, token = open_session(sessions, "planner")
    assert sessions.live() == [session] and sessions.by_token(token) is session
    assert session.task_types == frozenset({"a", "b"})
    assert session.stream is StreamState.NONE and session.free_slots == 0

    requeued = sessions.end(session, SessionState.REPLACED, reason="again", error="replaced")
    assert requeued == 2
    assert heard == [(session.session_id, SessionState.REPLACED, True)]
    assert not session.live and session.end_reason == "again" and session.end_error == "replaced"
    assert sessions.by_token(token) is None and sessions.get(session.session_id) is None
    # Ending it again (e.g. an Unregister racing the expiry) changes nothing.
    assert sessions.end(session, SessionState.CLOSED) == 0
    assert session.state is SessionState.REPLACED and len(heard) == 1
    assert not SessionState.CLOSED.counts_attempt
    db.close()


def test_silent_sessions_expire_and_live_lists_the_rest(tmp_path: Path) -> None:
    clock = Clock()
    db = Database(tmp_path / "hub.sqlite3")
    sessions = registry(db, clock)
    quiet, _ = open_session(sessions, "quiet")
    clock.now += 10
    chatty, _ = open_session(sessions, "chatty")
    assert sessions.live() == [quiet, chatty]  # oldest first
    clock.now += 55
    assert sessions.touch(chatty, active_tasks=1)
    assert chatty.last_heartbeat == clock.now and chatty.reported_active_tasks == 1
    assert sessions.expire_stale() == 0  # quiet: 65 s = 2 x 30 s + 5 s grace, not more
    clock.now += 1  # quiet: 66 s; chatty: 1 s
    assert sessions.expire_stale() == 1
    assert quiet.state is SessionState.EXPIRED and "no heartbeat for 65 s" in quiet.end_error
    assert sessions.live() == [chatty]
    assert not sessions.touch(quiet)
    db.close()


def test_the_sessions_table_keeps_its_format_across_hub_restarts(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    clock = Clock()
    db = Database(path)
    sessions = registry(db, clock)
    kept, _ = open_session(sessions, "kept")
    gone, _ = open_session(sessions, "gone")
    sessions.end(gone)
    db.close()

    # What `aether agents list --db` and older Hub versions read: plain strings.
    with sqlite3.connect(path) as raw:
        rows = dict(raw.execute("SELECT agent_id, state FROM sessions").fetchall())
    assert rows == {"kept": "connected", "gone": "closed"}

    reopened = Database(path)
    assert [r.agent_id for r in read_session_rows(reopened)] == ["kept"]
    registry(reopened, clock)  # a new Hub process: the old tokens are gone
    infos = read_session_rows(reopened, include_ended=True)
    assert {i.agent_id: i.state for i in infos} == {
        "kept": SessionState.CLOSED,
        "gone": SessionState.CLOSED,
    }
    assert all(i.capabilities == {"task_types": "a, b"} for i in infos)
    assert read_session_rows(reopened) == []
    assert kept.session_id in {i.session_id for i in infos}
    reopened.close()
