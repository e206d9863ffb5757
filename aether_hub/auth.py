"""Agent enrolment, secrets, sessions and client tokens of the dev Hub.

- `AgentRegistry`: the enrolled agents (SQLite table `agents`), each with a salted scrypt
  hash of its secret and a trust level.
- `SessionRegistry`: the live sessions opened by `Register`, looked up by the bearer token
  every later call carries. Tokens live in memory only: a restarted Hub forgets them and
  agents register again. A row per session in the table `sessions` (kept up to date on
  register, heartbeat and end) lets `aether agents list --db FILE` show who is connected.
- `ClientAuth`: the optional client token `TaskService` callers present.

Secrets and tokens never appear in logs, reprs or error messages.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether_hub._wire import pb, runtime
from aether_hub.db import Database

__all__ = (
    "AgentRecord",
    "AgentRegistry",
    "ClientAuth",
    "EnrolmentError",
    "Session",
    "SessionInfo",
    "SessionRegistry",
    "hash_secret",
    "parse_trust_level",
    "trust_level_name",
    "verify_secret",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    agent_id     TEXT PRIMARY KEY,
    secret_hash  TEXT NOT NULL,
    trust_level  INTEGER NOT NULL,
    source       TEXT NOT NULL,
    created_at   REAL NOT NULL
);
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

# scrypt cost: about 20 ms and 16 MiB per check, enough for a development Hub's secrets.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_LEN = 32

# Ended sessions kept in the `sessions` table across Hub restarts.
_SESSION_HISTORY = 1000

_TRUST_NAMES: dict[str, pb.TrustLevel] = {
    "low": pb.TrustLevel.LOW,
    "standard": pb.TrustLevel.STANDARD,
    "high": pb.TrustLevel.HIGH,
}


class EnrolmentError(ValueError):
    """An agent could not be enrolled (bad id, missing secret variable, bad trust level)."""


def parse_trust_level(value: str | int | pb.TrustLevel) -> pb.TrustLevel:
    """`low`/`standard`/`high` (any case, optional `TRUST_LEVEL_` prefix) or 1..3."""
    if isinstance(value, pb.TrustLevel):
        return value
    if isinstance(value, int):
        try:
            level = pb.TrustLevel(value)
        except ValueError:
            raise EnrolmentError(f"unknown trust level {value!r}; use 1, 2 or 3") from None
        if level == pb.TrustLevel.UNSPECIFIED:
            return pb.TrustLevel.LOW
        return level
    text = value.strip().lower().removeprefix("trust_level_")
    if text.isdigit():
        return parse_trust_level(int(text))
    try:
        return _TRUST_NAMES[text]
    except KeyError:
        raise EnrolmentError(
            f"unknown trust level {value!r}; use one of: low, standard, high"
        ) from None


def trust_level_name(level: pb.TrustLevel) -> str:
    """The lower-case name of a trust level (`unspecified` counts as `low`)."""
    for name, member in _TRUST_NAMES.items():
        if member == level:
            return name
    return "low"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str) -> str:
    """A salted scrypt hash of `secret`, as `scrypt$n$r$p$salt$hash` (empty for no secret)."""
    if not secret:
        return ""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_SCRYPT_LEN
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether `secret` matches a `hash_secret` value, compared in constant time.

    An empty stored hash means the agent was enrolled without a secret and any secret
    (including none) is accepted.
    """
    if not stored:
        return True
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            secret.encode("utf-8"),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """An enrolled agent. `secret_hash` is never shown in its repr."""

    agent_id: str
    trust_level: pb.TrustLevel
    source: str
    created_at: float
    secret_hash: str = field(repr=False, default="")

    @property
    def has_secret(self) -> bool:
        """Whether registering as this agent needs a secret."""
        return bool(self.secret_hash)


class AgentRegistry:
    """The enrolled agents, in the Hub database's `agents` table."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.ensure_schema(_SCHEMA)

    def get(self, agent_id: str) -> AgentRecord | None:
        """The enrolled agent `agent_id`, or None."""
        row = self._db.conn.execute(
            "SELECT agent_id, secret_hash, trust_level, source, created_at"
            " FROM agents WHERE agent_id = ?",
            (agent_id,),
        ).fetchone()
        return None if row is None else self._record(row)

    def list_agents(self) -> list[AgentRecord]:
        """Every enrolled agent, by id."""
        rows = self._db.conn.execute(
            "SELECT agent_id, secret_hash, trust_level, source, created_at"
            " FROM agents ORDER BY agent_id"
        ).fetchall()
        return [self._record(row) for row in rows]

    def add(
        self,
        agent_id: str,
        secret: str,
        trust_level: pb.TrustLevel = pb.TrustLevel.STANDARD,
        *,
        source: str = "cli",
    ) -> AgentRecord:
        """Enrol (or re-enrol) `agent_id` with `secret`, replacing an earlier record."""
        return self.add_hashed(agent_id, hash_secret(secret), trust_level, source=source)

    def add_hashed(
        self,
        agent_id: str,
        secret_hash: str,
        trust_level: pb.TrustLevel,
        *,
        source: str,
    ) -> AgentRecord:
        """Enrol `agent_id` with an already hashed secret."""
        if not agent_id or agent_id != agent_id.strip():
            raise EnrolmentError(f"invalid agent id {agent_id!r}")
        record = AgentRecord(
            agent_id=agent_id,
            trust_level=parse_trust_level(trust_level),
            source=source,
            created_at=time.time(),
            secret_hash=secret_hash,
        )
        with self._db.conn:
            self._db.conn.execute(
                "INSERT INTO agents (agent_id, secret_hash, trust_level, source, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (agent_id) DO UPDATE SET"
                " secret_hash = excluded.secret_hash, trust_level = excluded.trust_level,"
                " source = excluded.source",
                (agent_id, secret_hash, int(record.trust_level), source, record.created_at),
            )
        return record

    def remove(self, agent_id: str) -> bool:
        """Forget `agent_id`; whether it was enrolled."""
        with self._db.conn:
            cursor = self._db.conn.execute("DELETE FROM agents WHERE agent_id = ?", (agent_id,))
        return cursor.rowcount > 0

    @staticmethod
    def _record(row: tuple[str, str, int, str, float]) -> AgentRecord:
        return AgentRecord(
            agent_id=row[0],
            secret_hash=row[1],
            trust_level=parse_trust_level(int(row[2])),
            source=row[3],
            created_at=float(row[4]),
        )


@dataclass(frozen=True, slots=True)
class Session:
    """A live agent session, opened by `Register` and named by its bearer token."""

    session_id: str
    agent_id: str
    trust_level: pb.TrustLevel
    capabilities: Mapping[str, str]
    agent_name: str = ""
    version: str = ""
    max_concurrent_tasks: int = 1
    connected_at: float = 0.0

    @property
    def task_types(self) -> frozenset[str]:
        """The task types of `capabilities["task_types"]` (comma-separated)."""
        raw = self.capabilities.get("task_types", "")
        return frozenset(part.strip() for part in raw.split(",") if part.strip())


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
    state: str
    ended_at: float | None


def _unauthenticated(message: str) -> GRPCError:
    return GRPCError(Status.UNAUTHENTICATED, message)


class SessionRegistry:
    """The Hub's live agent sessions, by bearer token and by id.

    `clock` is the monotonic clock heartbeats are measured with (injectable for tests);
    `wall_clock` stamps the `sessions` table.
    """

    def __init__(
        self,
        db: Database,
        *,
        heartbeat_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._clock = clock
        self._wall_clock = wall_clock
        self.heartbeat_interval = heartbeat_interval
        self._by_token: dict[str, Session] = {}
        self._token_of: dict[str, str] = {}
        self._by_id: dict[str, Session] = {}
        self._last_seen: dict[str, float] = {}
        db.ensure_schema(_SCHEMA)
        # Sessions of an earlier Hub process are gone with its tokens; keep a bounded
        # history of ended ones.
        with db.conn:
            db.conn.execute(
                "UPDATE sessions SET state = 'closed', ended_at = ? WHERE state = 'connected'",
                (wall_clock(),),
            )
            db.conn.execute(
                "DELETE FROM sessions WHERE session_id NOT IN"
                " (SELECT session_id FROM sessions ORDER BY connected_at DESC LIMIT ?)",
                (_SESSION_HISTORY,),
            )

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
        return session

    def optional(self, context: runtime.ServerContext) -> Session | None:
        """The live session of the caller's bearer token, or None when there is none."""
        token = context.bearer_token
        if not token:
            return None
        return self._by_token.get(token)

    def by_token(self, token: str) -> Session | None:
        """The live session of `token`, or None."""
        return self._by_token.get(token)

    def get(self, session_id: str) -> Session | None:
        """The live session `session_id`, or None."""
        return self._by_id.get(session_id)

    def for_agent(self, agent_id: str) -> list[Session]:
        """The live sessions of `agent_id` (normally at most one)."""
        return [s for s in self._by_id.values() if s.agent_id == agent_id]

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def last_seen(self, session_id: str) -> float | None:
        """The clock reading of the session's last sign of life."""
        return self._last_seen.get(session_id)

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
            capabilities=dict(capabilities),
            agent_name=agent_name,
            version=version,
            max_concurrent_tasks=max(1, max_concurrent_tasks),
            connected_at=self._wall_clock(),
        )
        self._by_token[token] = session
        self._token_of[session.session_id] = token
        self._by_id[session.session_id] = session
        self._last_seen[session.session_id] = self._clock()
        with self._db.conn:
            self._db.conn.execute(
                "INSERT INTO sessions (session_id, agent_id, agent_name, version, capabilities,"
                " trust_level, connected_at, last_heartbeat, active_tasks, state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 'connected')",
                (
                    session.session_id,
                    agent_id,
                    agent_name,
                    version,
                    json.dumps(dict(capabilities), sort_keys=True),
                    int(trust_level),
                    session.connected_at,
                    session.connected_at,
                ),
            )
        return session, token

    def touch(self, session_id: str, *, active_tasks: int | None = None) -> bool:
        """Record a heartbeat of `session_id`; whether the session is live."""
        if session_id not in self._by_id:
            return False
        self._last_seen[session_id] = self._clock()
        with self._db.conn:
            if active_tasks is None:
                self._db.conn.execute(
                    "UPDATE sessions SET last_heartbeat = ? WHERE session_id = ?",
                    (self._wall_clock(), session_id),
                )
            else:
                self._db.conn.execute(
                    "UPDATE sessions SET last_heartbeat = ?, active_tasks = ? WHERE session_id = ?",
                    (self._wall_clock(), active_tasks, session_id),
                )
        return True

    def close(self, session_id: str, *, state: str = "closed") -> Session | None:
        """End `session_id` (its token becomes stale); the session, or None if unknown."""
        session = self._by_id.pop(session_id, None)
        if session is None:
            return None
        token = self._token_of.pop(session_id, "")
        self._by_token.pop(token, None)
        self._last_seen.pop(session_id, None)
        with self._db.conn:
            self._db.conn.execute(
                "UPDATE sessions SET state = ?, ended_at = ?, active_tasks = 0"
                " WHERE session_id = ?",
                (state, self._wall_clock(), session_id),
            )
        return session

    def stale(self, *, misses: float = 3.0) -> list[Session]:
        """Sessions silent for more than `misses` heartbeat intervals."""
        limit = self._clock() - misses * self.heartbeat_interval
        return [self._by_id[sid] for sid, seen in self._last_seen.items() if seen < limit]

    # -- reading the table (for `aether agents list`) -----------------------------------

    @staticmethod
    def read_sessions(db: Database, *, include_ended: bool = False) -> list[SessionInfo]:
        """The rows of the `sessions` table, newest first."""
        db.ensure_schema(_SCHEMA)
        query = (
            "SELECT session_id, agent_id, agent_name, version, capabilities, trust_level,"
            " connected_at, last_heartbeat, active_tasks, state, ended_at FROM sessions"
        )
        if not include_ended:
            query += " WHERE state = 'connected'"
        query += " ORDER BY connected_at DESC"
        infos: list[SessionInfo] = []
        for row in db.conn.execute(query).fetchall():
            caps = json.loads(row[4]) if row[4] else {}
            infos.append(
                SessionInfo(
                    session_id=str(row[0]),
                    agent_id=str(row[1]),
                    agent_name=str(row[2]),
                    version=str(row[3]),
                    capabilities={str(k): str(v) for k, v in caps.items()},
                    trust_level=parse_trust_level(int(row[5])),
                    connected_at=float(row[6]),
                    last_heartbeat=float(row[7]),
                    active_tasks=int(row[8]),
                    state=str(row[9]),
                    ended_at=None if row[10] is None else float(row[10]),
                )
            )
        return infos


class ClientAuth:
    """Who may call `TaskService`: holders of the client token, or live agent sessions.

    With no client token configured every caller is accepted (the Hub refuses to bind a
    non-loopback address in that case).
    """

    def __init__(self, client_token: str | None, sessions: SessionRegistry) -> None:
        self._token = client_token.encode("utf-8") if client_token else None
        self._sessions = sessions

    @property
    def required(self) -> bool:
        """Whether callers must present a token."""
        return self._token is not None

    def check(self, context: runtime.ServerContext) -> None:
        """Raise GRPCError(UNAUTHENTICATED) unless the caller may use TaskService."""
        if self._token is None:
            return
        presented = context.bearer_token
        if not presented:
            raise _unauthenticated(
                "missing client token: send 'authorization: Bearer <client token>'"
            )
        if hmac.compare_digest(presented.encode("utf-8"), self._token):
            return
        if self._sessions.by_token(presented) is not None:
            return
        raise _unauthenticated("invalid client token")

    def __repr__(self) -> str:
        return f"ClientAuth(required={self.required})"
