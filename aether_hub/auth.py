"""Credentials of the dev Hub: agent enrolment, secrets and client tokens.

- `AgentRegistry`: the enrolled agents (SQLite table `agents`), each with a salted scrypt
  hash of its secret and a trust level; `hash_secret`/`verify_secret` make and check them.
- `AgentStore`: the awaited registry interface the Hub uses, so that enrolments can live
  in SQLite (`SqliteAgentStore`, one Hub) or in JetStream
  (`aether_hub.agents_jetstream.JetStreamAgentRegistry`, shared by every Hub replica).
- `ClientAuth`: who calls `TaskService` (`Caller`): a holder of the client token (the
  submitter/operator role) or an agent presenting its session token (the agent role,
  limited to its own tasks; see `TaskService`).

The sessions `Register` opens with these credentials live in `aether_hub.sessions`.

Secrets and tokens never appear in logs, reprs or error messages.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether_hub._wire import pb, runtime
from aether_hub.db import Database
from aether_hub.sessions import SessionRegistry

__all__ = (
    "AgentRecord",
    "AgentRegistry",
    "AgentRegistryUnavailableError",
    "AgentStore",
    "Caller",
    "ClientAuth",
    "EnrolmentError",
    "RegisterThrottle",
    "SqliteAgentStore",
    "check_agent_id",
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
"""

# scrypt cost: about 20 ms and 16 MiB per check, enough for a development Hub's secrets.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_LEN = 32

_TRUST_NAMES: dict[str, pb.TrustLevel] = {
    "low": pb.TrustLevel.LOW,
    "standard": pb.TrustLevel.STANDARD,
    "high": pb.TrustLevel.HIGH,
}


class EnrolmentError(ValueError):
    """An agent could not be enrolled (bad id, missing secret variable, bad trust level)."""


class AgentRegistryUnavailableError(Exception):
    """The storage of the enrolments failed (JetStream unreachable, a database error).

    Its message names what failed, never a secret or a secret's hash.
    """


def check_agent_id(agent_id: str) -> None:
    """EnrolmentError unless `agent_id` is non-empty without surrounding spaces."""
    if not agent_id or agent_id != agent_id.strip():
        raise EnrolmentError(f"invalid agent id {agent_id!r}")


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
        """Enrol `agent_id` with an already hashed secret (a re-enrolment keeps the first
        enrolment's `created_at`); the record as stored."""
        check_agent_id(agent_id)
        level = parse_trust_level(trust_level)
        with self._db.conn:
            self._db.conn.execute(
                "INSERT INTO agents (agent_id, secret_hash, trust_level, source, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (agent_id) DO UPDATE SET"
                " secret_hash = excluded.secret_hash, trust_level = excluded.trust_level,"
                " source = excluded.source",
                (agent_id, secret_hash, int(level), source, time.time()),
            )
        return self._stored(agent_id)

    def add_if_absent(
        self,
        agent_id: str,
        secret_hash: str,
        trust_level: pb.TrustLevel,
        *,
        source: str,
    ) -> tuple[AgentRecord, bool]:
        """Enrol `agent_id` unless it is enrolled already: (the stored record, whether this
        call enrolled it). The first of racing enrolments wins; the others get its record."""
        check_agent_id(agent_id)
        level = parse_trust_level(trust_level)
        with self._db.conn:
            cursor = self._db.conn.execute(
                "INSERT INTO agents (agent_id, secret_hash, trust_level, source, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (agent_id) DO NOTHING",
                (agent_id, secret_hash, int(level), source, time.time()),
            )
        return self._stored(agent_id), cursor.rowcount > 0

    def _stored(self, agent_id: str) -> AgentRecord:
        record = self.get(agent_id)
        if record is None:  # pragma: no cover - written just before, on this connection
            raise sqlite3.DatabaseError(f"agent {agent_id!r} vanished while being enrolled")
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


class AgentStore(Protocol):
    """The enrolled agents as the Hub reads and writes them; every call is awaited.

    Implemented by `SqliteAgentStore` (one Hub's database) and by
    `aether_hub.agents_jetstream.JetStreamAgentRegistry` (shared by the Hub replicas of
    `--store jetstream`). A bad id or trust level raises `EnrolmentError`, a failure of
    the storage `AgentRegistryUnavailableError`.
    """

    async def get(self, agent_id: str) -> AgentRecord | None:
        """The enrolled agent `agent_id`, or None."""
        ...

    async def list_agents(self) -> list[AgentRecord]:
        """Every enrolled agent, by id."""
        ...

    async def add(
        self,
        agent_id: str,
        secret: str,
        trust_level: pb.TrustLevel = pb.TrustLevel.STANDARD,
        *,
        source: str = "cli",
    ) -> AgentRecord:
        """Enrol (or re-enrol) `agent_id` with `secret` (stored hashed)."""
        ...

    async def add_hashed(
        self, agent_id: str, secret_hash: str, trust_level: pb.TrustLevel, *, source: str
    ) -> AgentRecord:
        """Enrol (or re-enrol) `agent_id` with an already hashed secret; the stored record."""
        ...

    async def add_if_absent(
        self, agent_id: str, secret_hash: str, trust_level: pb.TrustLevel, *, source: str
    ) -> tuple[AgentRecord, bool]:
        """Enrol `agent_id` unless enrolled: (the stored record, whether this call did)."""
        ...

    async def remove(self, agent_id: str) -> bool:
        """Forget `agent_id`; whether it was enrolled."""
        ...


async def enrol_with_secret(
    store: AgentStore,
    agent_id: str,
    secret: str,
    trust_level: pb.TrustLevel,
    *,
    source: str,
) -> AgentRecord:
    """`AgentStore.add` for every store: check, hash the secret off the event loop (scrypt
    takes tens of milliseconds), then `add_hashed`."""
    check_agent_id(agent_id)
    level = parse_trust_level(trust_level)
    hashed = await asyncio.to_thread(hash_secret, secret)
    return await store.add_hashed(agent_id, hashed, level, source=source)


class SqliteAgentStore:
    """The SQLite `AgentRegistry` as an `AgentStore`.

    The calls run inline: the Hub's SQLite connection belongs to the event loop's thread
    and each call is one short statement. Only hashing a secret (scrypt, about 20 ms)
    goes to a thread.
    """

    def __init__(self, registry: AgentRegistry) -> None:
        #: The synchronous registry (the CLI and tests use it directly).
        self.sync = registry

    def __repr__(self) -> str:
        return "SqliteAgentStore()"

    async def get(self, agent_id: str) -> AgentRecord | None:
        """See `AgentRegistry.get`."""
        try:
            return self.sync.get(agent_id)
        except sqlite3.Error as exc:
            raise AgentRegistryUnavailableError(f"database: {exc}") from exc

    async def list_agents(self) -> list[AgentRecord]:
        """See `AgentRegistry.list_agents`."""
        try:
            return self.sync.list_agents()
        except sqlite3.Error as exc:
            raise AgentRegistryUnavailableError(f"database: {exc}") from exc

    async def add(
        self,
        agent_id: str,
        secret: str,
        trust_level: pb.TrustLevel = pb.TrustLevel.STANDARD,
        *,
        source: str = "cli",
    ) -> AgentRecord:
        """See `AgentRegistry.add`."""
        return await enrol_with_secret(self, agent_id, secret, trust_level, source=source)

    async def add_hashed(
        self, agent_id: str, secret_hash: str, trust_level: pb.TrustLevel, *, source: str
    ) -> AgentRecord:
        """See `AgentRegistry.add_hashed`."""
        try:
            return self.sync.add_hashed(agent_id, secret_hash, trust_level, source=source)
        except sqlite3.Error as exc:
            raise AgentRegistryUnavailableError(f"database: {exc}") from exc

    async def add_if_absent(
        self, agent_id: str, secret_hash: str, trust_level: pb.TrustLevel, *, source: str
    ) -> tuple[AgentRecord, bool]:
        """See `AgentRegistry.add_if_absent`."""
        try:
            return self.sync.add_if_absent(agent_id, secret_hash, trust_level, source=source)
        except sqlite3.Error as exc:
            raise AgentRegistryUnavailableError(f"database: {exc}") from exc

    async def remove(self, agent_id: str) -> bool:
        """See `AgentRegistry.remove`."""
        try:
            return self.sync.remove(agent_id)
        except sqlite3.Error as exc:
            raise AgentRegistryUnavailableError(f"database: {exc}") from exc


def _unauthenticated(message: str) -> GRPCError:
    return GRPCError(Status.UNAUTHENTICATED, message)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls TaskService: a client (`agent_id` empty) or an agent's live session."""

    agent_id: str = ""

    @property
    def is_client(self) -> bool:
        """Whether the caller has the client role (submit, see and cancel every task)."""
        return not self.agent_id

    def describe(self) -> str:
        """``the client`` or ``agent 'x'``, for messages."""
        return "the client" if self.is_client else f"agent {self.agent_id!r}"


CLIENT = Caller()


class ClientAuth:
    """Who may call `TaskService`, and in which role.

    - The client token (``--client-token-env``) is the client role: submitter and
      operator, everything on TaskService.
    - An agent's session token is the agent role: it may submit (sub-)tasks and see, watch
      and cancel only the tasks it submitted or runs (`TaskService` enforces this).
    - With no client token configured (a loopback Hub) a caller without a session token
      is a client.
    """

    def __init__(self, client_token: str | None, sessions: SessionRegistry) -> None:
        self._token = client_token.encode("utf-8") if client_token else None
        self._sessions = sessions

    @property
    def required(self) -> bool:
        """Whether callers must present a token."""
        return self._token is not None

    def check(self, context: runtime.ServerContext) -> Caller:
        """The caller; GRPCError(UNAUTHENTICATED) when it may not use TaskService."""
        presented = context.bearer_token
        if (
            presented
            and self._token is not None
            and hmac.compare_digest(presented.encode("utf-8"), self._token)
        ):
            return CLIENT
        if presented:
            session = self._sessions.by_token(presented)
            if session is not None:
                return Caller(agent_id=session.agent_id)
        if self._token is None:
            return CLIENT
        if not presented:
            raise _unauthenticated(
                "missing client token: send 'authorization: Bearer <client token>'"
            )
        raise _unauthenticated("invalid client token")

    def __repr__(self) -> str:
        return f"ClientAuth(required={self.required})"


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class RegisterThrottle:
    """Slows down secret guessing: failed registrations per agent id and per peer address.

    The first `free_failures` failures of a key cost nothing; each further one locks the
    key for a delay that doubles (1 s, 2 s, 4 s ... up to `max_lockout_seconds`). While
    locked, Register is refused (UNAVAILABLE with the time to wait) without checking the
    secret. A success clears the agent id's count; a key with no failure for
    `forget_after_seconds` starts over. At most `max_keys` keys are remembered (the oldest
    are dropped first), so guessing cannot grow the Hub's memory without bound.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        free_failures: int = 5,
        max_lockout_seconds: float = 300.0,
        forget_after_seconds: float = 900.0,
        max_keys: int = 10_000,
    ) -> None:
        self._clock = clock
        self.free_failures = free_failures
        self.max_lockout_seconds = max_lockout_seconds
        self._forget_after = forget_after_seconds
        self._max_keys = max_keys
        self._failures: OrderedDict[tuple[str, str], _Failures] = OrderedDict()

    def _get(self, key: tuple[str, str], now: float) -> _Failures | None:
        entry = self._failures.get(key)
        if entry is not None and now - entry.last > self._forget_after:
            del self._failures[key]
            return None
        return entry

    def retry_after(self, agent_id: str, peer: str) -> tuple[float, str] | None:
        """(seconds to wait, what is locked) when Register must be refused now, else None."""
        now = self._clock()
        for key, what in ((("agent", agent_id), f"agent {agent_id!r}"), (("peer", peer), peer)):
            if not key[1]:
                continue
            entry = self._get(key, now)
            if entry is not None and entry.locked_until > now:
                return entry.locked_until - now, what
        return None

    def failed(self, agent_id: str, peer: str) -> float:
        """Count a failure of both keys; the lockout it starts (0 for none), in seconds."""
        now = self._clock()
        longest = 0.0
        for key in (("agent", agent_id), ("peer", peer)):
            if not key[1]:
                continue
            entry = self._get(key, now) or _Failures()
            entry.count += 1
            entry.last = now
            over = entry.count - self.free_failures
            if over > 0:
                delay = min(float(2 ** min(over - 1, 30)), self.max_lockout_seconds)
                entry.locked_until = now + delay
                longest = max(longest, delay)
            self._failures[key] = entry
            self._failures.move_to_end(key)
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)
        return longest

    def succeeded(self, agent_id: str) -> None:
        """A registration of `agent_id` succeeded: its count starts over."""
        self._failures.pop(("agent", agent_id), None)
