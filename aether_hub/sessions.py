"""Agent sessions of the dev Hub: the one place a session is kept, from Register to its end.

A `Session` is opened by `Register` and named by the bearer token every later call of the
agent carries. It ends in exactly one way, `SessionRegistry.end`, whatever the cause
(docs/architecture.md#sessions):

- the agent unregisters (`SessionState.CLOSED`; its leases go back uncounted),
- the same agent registers again (`REPLACED`; attempts counted),
- the agent is silent for `MISSED_HEARTBEATS` heartbeat intervals plus a grace period
  (`EXPIRED`, by `expire_stale`; counted).

Ending makes the token stale, stamps the `sessions` table and tells the listeners (the
task queue, which hands the session's leases back and ends its task stream).

Tokens live in memory only: a restarted Hub forgets them and agents register again. The
table `sessions` (a row per session, kept up to date on register, heartbeat and end) lets
`aether agents list --db FILE` show who is connected; `read_session_rows` reads it.

The task queue keeps its per-session dispatch state on the same `Session` object (its
leases, the events waiting for its stream, the stream itself): `aether_hub.tasks` is the
only writer of those fields.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether_hub._wire import pb, runtime
from aether_hub.db import Database
from aether_hub.logcontext import bind_agent
from aether_hub.taskrecord import ANY_KEY, RoutingKey, TaskRecord

__all__ = (
    "MISSED_HEARTBEATS",
    "EndListener",
    "Session",
    "SessionInfo",
    "SessionRegistry",
    "SessionState",
    "StreamState",
    "read_session_rows",
)

log = logging.getLogger("aether_hub.sessions")

# Heartbeats an agent may miss before its session (and its leases) end.
#: A session silent this many heartbeat intervals (plus the grace) expires: one missed
#: heartbeat is tolerated, the second is not (docs/devhub.md, "Failure detection").
MISSED_HEARTBEATS = 2
#: Default slack on top, for a heartbeat delayed by a busy agent or network.
DEFAULT_SESSION_GRACE = 5.0

# Ended sessions kept in the `sessions` table across Hub restarts.
_SESSION_HISTORY = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id      TEXT PRIMARY KEY,
    agent_id        TEXT NOT NULL,
    agent_name      TEXT NOT NULL,
    version         TEXT NOT NULL,
    capabilities    TEXT NOT NULL,
    trust_level     INTEGER NOT NULL,
    connected_at    REAL NOT NULL,
    last_heartbeat  REAL NOT NULL,
    active_tasks    INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,
    ended_at        REAL
);
CREATE INDEX IF NOT EXISTS sessions_agent ON sessions (agent_id);
"""


class SessionState(enum.Enum):
    """Where a session is in its life; the value is what the `sessions` table stores."""

    CONNECTED = "connected"
    """Registered: calls with its token are accepted."""
    CLOSED = "closed"
    """The agent unregistered (or the Hub process that held the session stopped)."""
    REPLACED = "replaced"
    """The same agent registered again; the newer session took over."""
    EXPIRED = "expired"
    """The agent missed its heartbeats."""

    @property
    def counts_attempt(self) -> bool:
        """Whether leases cut short by ending in this state count as a task attempt.

        An orderly Unregister is not the task's fault; a lost or replaced agent may have
        crashed on the task, so its attempt counts towards max_attempts.
        """
        return self in (SessionState.REPLACED, SessionState.EXPIRED)


class StreamState(enum.Enum):
    """The session's task stream (`StreamTasks`), as the queue sees it."""

    NONE = "none"
    """No stream: the session takes no tasks (not opened yet, paused or broken)."""
    OPEN = "open"
    """Streaming: the queue leases tasks to the session while it has room."""
    DRAINING = "draining"
    """Streaming, but the agent handed a task back (it is stopping): no new tasks."""


class Session:
    """One agent session: who it is, its lifecycle, and the queue's state of it.

    Identity (`session_id`, `agent_id`, `trust_level`, `capabilities`, ...) is fixed at
    Register. `state`, `end_reason`, `end_error` and the heartbeat readings are written by
    `SessionRegistry`; `capacity`, `leases`, `unsent`, `wake`, `stream` and `stream_gen`
    by the task queue.
    """

    __slots__ = (
        "agent_id",
        "agent_name",
        "capabilities",
        "capacity",
        "connected_at",
        "end_error",
        "end_reason",
        "last_heartbeat",
        "last_seen",
        "leases",
        "max_concurrent_tasks",
        "reported_active_tasks",
        "routing_keys",
        "session_id",
        "state",
        "stream",
        "stream_gen",
        "task_types",
        "trust_level",
        "unsent",
        "version",
        "wake",
    )

    def __init__(
        self,
        session_id: str,
        agent_id: str,
        trust_level: pb.TrustLevel,
        capabilities: Mapping[str, str],
        *,
        agent_name: str = "",
        version: str = "",
        max_concurrent_tasks: int = 1,
        connected_at: float = 0.0,
        last_seen: float = 0.0,
    ) -> None:
        self.session_id = session_id
        self.agent_id = agent_id
        self.trust_level = trust_level
        self.capabilities: Mapping[str, str] = dict(capabilities)
        self.agent_name = agent_name
        self.version = version
        self.max_concurrent_tasks = max(1, max_concurrent_tasks)
        self.connected_at = connected_at
        raw = self.capabilities.get("task_types", "")
        self.task_types: frozenset[str] = frozenset(
            part.strip() for part in raw.split(",") if part.strip()
        )
        keys: list[RoutingKey] = [("agent", agent_id)]
        keys.extend(("type", t) for t in sorted(self.task_types))
        keys.append(ANY_KEY)
        # The queues this session takes tasks from, most specific first.
        self.routing_keys: tuple[RoutingKey, ...] = tuple(keys)
        # -- lifecycle (SessionRegistry) --
        self.state = SessionState.CONNECTED
        self.end_reason = ""
        # A non-empty end_error ends a still open task stream with UNAUTHENTICATED.
        self.end_error = ""
        self.last_seen = last_seen  # monotonic: what expiry measures
        self.last_heartbeat = connected_at  # wall clock: what people are shown
        self.reported_active_tasks = 0
        # -- dispatch (TaskQueue) --
        self.capacity = self.max_concurrent_tasks
        # task_id -> record; includes cancelled/timed-out tasks the agent may still run,
        # which keep their concurrency slot until the agent reports back.
        self.leases: dict[str, TaskRecord] = {}
        self.unsent: deque[pb.TaskStreamEvent] = deque()
        self.wake = asyncio.Event()
        self.stream = StreamState.NONE
        self.stream_gen = 0

    @property
    def live(self) -> bool:
        """Whether the session has not ended."""
        return self.state is SessionState.CONNECTED

    @property
    def streaming(self) -> bool:
        """Whether a task stream is open (taking tasks or draining)."""
        return self.stream is not StreamState.NONE

    @property
    def has_room(self) -> bool:
        """Whether the session can take another task now."""
        return self.stream is StreamState.OPEN and len(self.leases) < self.capacity

    @property
    def free_slots(self) -> int:
        """Tasks the session would be sent now (0 unless its stream takes tasks)."""
        if self.stream is not StreamState.OPEN:
            return 0
        return max(0, self.capacity - len(self.leases))

    @property
    def running_tasks(self) -> int:
        """Tasks leased to the session and not finished yet."""
        return sum(1 for rec in self.leases.values() if not rec.terminal)

    def __repr__(self) -> str:
        return (
            f"Session({self.session_id!r}, agent_id={self.agent_id!r},"
            f" state={self.state.name}, stream={self.stream.name})"
        )


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A row of the `sessions` table, as `aether agents list` shows it."""

    session_id: str
    agent_id: str
    agent_name: str
    version: str
    capabilities: Mapping[str, str]
    trust_level: pb.TrustLevel
    connected_at: float
    last_heartbeat: float
    active_tasks: int
    state: SessionState
    ended_at: float | None


EndListener = Callable[[Session], int]
"""Called with a session that just ended; returns how many of its tasks were requeued."""


def _unauthenticated(message: str) -> GRPCError:
    return GRPCError(Status.UNAUTHENTICATED, message)


class SessionRegistry:
    """The Hub's agent sessions: opening, lookup by token, heartbeats, expiry and ending.

    `clock` is the monotonic clock heartbeats are measured with (injectable for tests);
    `wall_clock` stamps the `sessions` table.
    """

    def __init__(
        self,
        db: Database,
        *,
        heartbeat_interval: float = 30.0,
        grace: float = DEFAULT_SESSION_GRACE,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._clock = clock
        self._wall_clock = wall_clock
        self.heartbeat_interval = heartbeat_interval
        self.grace = grace
        self._by_token: dict[str, Session] = {}
        self._token_of: dict[str, str] = {}
        self._by_id: dict[str, Session] = {}
        self._listeners: list[EndListener] = []
        self._record_failing = False
        db.ensure_schema(_SCHEMA)
        # Sessions of an earlier Hub process are gone with its tokens; keep a bounded
        # history of ended ones.
        with db.conn:
            db.conn.execute(
                "UPDATE sessions SET state = ?, ended_at = ? WHERE state = ?",
                (SessionState.CLOSED.value, wall_clock(), SessionState.CONNECTED.value),
            )
            db.conn.execute(
                "DELETE FROM sessions WHERE session_id NOT IN"
                " (SELECT session_id FROM sessions ORDER BY connected_at DESC LIMIT ?)",
                (_SESSION_HISTORY,),
            )

    def on_end(self, listener: EndListener) -> None:
        """Call `listener` with every session that ends (after it is marked ended)."""
        self._listeners.append(listener)

    # -- lookups ---------------------------------------------------------------------

    def require(self, context: runtime.ServerContext) -> Session:
        """The live session of the caller's bearer token, or GRPCError(UNAUTHENTICATED, ...)."""
        token = context.bearer_token
        if not token:
            raise _unauthenticated(
                "missing session token: send 'authorization: Bearer <session_token>' from Register"
            )
        session = self._by_token.get(token)
        if session is None:
            raise _unauthenticated("unknown or expired session token; register again")
        bind_agent(session.agent_id)  # the rest of this call's log records name the agent
        return session

    def by_token(self, token: str) -> Session | None:
        """The live session of `token`, or None."""
        return self._by_token.get(token)

    def get(self, session_id: str) -> Session | None:
        """The live session `session_id`, or None."""
        return self._by_id.get(session_id)

    def for_agent(self, agent_id: str) -> list[Session]:
        """The live sessions of `agent_id` (normally at most one)."""
        return [s for s in self._by_id.values() if s.agent_id == agent_id]

    def live(self) -> list[Session]:
        """Every live session, oldest first."""
        return sorted(self._by_id.values(), key=lambda s: (s.connected_at, s.session_id))

    def __len__(self) -> int:
        return len(self._by_id)

    # -- changes ---------------------------------------------------------------------

    def open(
        self,
        agent_id: str,
        *,
        trust_level: pb.TrustLevel,
        capabilities: Mapping[str, str],
        agent_name: str = "",
        version: str = "",
        max_concurrent_tasks: int = 1,
    ) -> tuple[Session, str]:
        """Open a session; returns it and its bearer token."""
        token = secrets.token_urlsafe(32)
        session = Session(
            session_id=secrets.token_hex(8),
            agent_id=agent_id,
            trust_level=trust_level,
            capabilities=capabilities,
            agent_name=agent_name,
            version=version,
            max_concurrent_tasks=max_concurrent_tasks,
            connected_at=self._wall_clock(),
            last_seen=self._clock(),
        )
        self._by_token[token] = session
        self._token_of[session.session_id] = token
        self._by_id[session.session_id] = session
        self._record(
            "INSERT INTO sessions (session_id, agent_id, agent_name, version, capabilities,"
            " trust_level, connected_at, last_heartbeat, active_tasks, state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
            (
                session.session_id,
                agent_id,
                agent_name,
                version,
                json.dumps(dict(capabilities), sort_keys=True),
                int(trust_level),
                session.connected_at,
                session.connected_at,
                SessionState.CONNECTED.value,
            ),
        )
        return session, token

    def touch(self, session: Session, *, active_tasks: int | None = None) -> bool:
        """Record a sign of life of `session` (a heartbeat); whether it is live."""
        if not session.live:
            return False
        session.last_seen = self._clock()
        session.last_heartbeat = self._wall_clock()
        if active_tasks is None:
            self._record(
                "UPDATE sessions SET last_heartbeat = ? WHERE session_id = ?",
                (session.last_heartbeat, session.session_id),
            )
        else:
            session.reported_active_tasks = active_tasks
            self._record(
                "UPDATE sessions SET last_heartbeat = ?, active_tasks = ? WHERE session_id = ?",
                (session.last_heartbeat, active_tasks, session.session_id),
            )
        return True

    def _record(self, sql: str, params: tuple[object, ...]) -> None:
        """Write to the `sessions` table, a record for operators: a database that refuses
        the write (a full disk) must not stop sessions from working or from ending, so the
        failure is logged once, until a write succeeds again."""
        try:
            with self._db.conn:
                self._db.conn.execute(sql, params)
        except sqlite3.Error as exc:
            if not self._record_failing:
                log.error("the sessions table cannot be written (%s); sessions go on", exc)
                self._record_failing = True
            return
        if self._record_failing:
            log.warning("the sessions table can be written again")
            self._record_failing = False

    def end(
        self,
        session: Session,
        state: SessionState = SessionState.CLOSED,
        *,
        reason: str = "",
        error: str = "",
    ) -> int:
        """End `session` in `state`; how many of its tasks went back to the queue.

        Its token becomes stale at once, the listeners hand its leases back (counting an
        attempt when `state.counts_attempt`) and a non-empty `error` ends its open task
        stream with UNAUTHENTICATED and that message. Ending an ended session does nothing.
        """
        if state is SessionState.CONNECTED:
            raise ValueError("a session ends in CLOSED, REPLACED or EXPIRED")
        if self._by_id.pop(session.session_id, None) is None:
            return 0
        self._by_token.pop(self._token_of.pop(session.session_id, ""), None)
        session.state = state
        session.end_reason = reason or state.value
        session.end_error = error
        # The leases go back first: nothing may leave a task leased to an ended session.
        requeued = sum(listener(session) for listener in self._listeners)
        self._record(
            "UPDATE sessions SET state = ?, ended_at = ?, active_tasks = 0 WHERE session_id = ?",
            (state.value, self._wall_clock(), session.session_id),
        )
        return requeued

    @property
    def expiry_seconds(self) -> float:
        """How long a session may be silent: MISSED_HEARTBEATS intervals plus the grace."""
        return MISSED_HEARTBEATS * self.heartbeat_interval + self.grace

    def expire_stale(self) -> int:
        """End the sessions silent longer than `expiry_seconds`; how many."""
        silence = self.expiry_seconds
        limit = self._clock() - silence
        stale = [s for s in self._by_id.values() if s.last_seen < limit]
        for session in stale:
            log.warning(
                "agent %r missed heartbeats for %g s; its session %s ends",
                session.agent_id,
                silence,
                session.session_id,
            )
            self.end(
                session,
                SessionState.EXPIRED,
                reason=f"agent {session.agent_id!r} missed heartbeats for {silence:g} s",
                error=f"session expired: no heartbeat for {silence:g} s; register again",
            )
        return len(stale)


def read_session_rows(db: Database, *, include_ended: bool = False) -> list[SessionInfo]:
    """The rows of the `sessions` table (of this or an earlier Hub process), newest first."""
    db.ensure_schema(_SCHEMA)
    query = (
        "SELECT session_id, agent_id, agent_name, version, capabilities, trust_level,"
        " connected_at, last_heartbeat, active_tasks, state, ended_at FROM sessions"
    )
    params: tuple[str, ...] = ()
    if not include_ended:
        query += " WHERE state = ?"
        params = (SessionState.CONNECTED.value,)
    query += " ORDER BY connected_at DESC"
    infos: list[SessionInfo] = []
    for row in db.conn.execute(query, params).fetchall():
        caps = json.loads(row[4]) if row[4] else {}
        infos.append(
            SessionInfo(
                session_id=str(row[0]),
                agent_id=str(row[1]),
                agent_name=str(row[2]),
                version=str(row[3]),
                capabilities={str(k): str(v) for k, v in caps.items()},
                trust_level=_trust_level(int(row[5])),
                connected_at=float(row[6]),
                last_heartbeat=float(row[7]),
                active_tasks=int(row[8]),
                state=SessionState(str(row[9])),
                ended_at=None if row[10] is None else float(row[10]),
            )
        )
    return infos


def _trust_level(value: int) -> pb.TrustLevel:
    # Rows only ever hold levels Register granted (1..3); anything else reads as LOW.
    try:
        level = pb.TrustLevel(value)
    except ValueError:
        return pb.TrustLevel.LOW
    return pb.TrustLevel.LOW if level == pb.TrustLevel.UNSPECIFIED else level
