"""Hub-hosted key-value memory (`MemoryService`), kept in the Hub's SQLite database or,
with ``--store jetstream``, in a JetStream key-value bucket shared by every Hub replica
(:mod:`aether_hub.memory_jetstream`). Both are a :class:`MemoryBackend`: the same
validation, TTL, quota rules and errors; the service awaits whichever it was given.

Scopes:

- ``agent`` (also when unspecified): private to the calling agent. The scope id is the
  agent id of the caller's session; a ``scope_id`` sent by the client is ignored, so an
  agent cannot read another agent's memory.
- ``task`` and ``workflow``: shared by everything working on one task or workflow; the
  ``scope_id`` (the task or workflow id) is required. An agent may use the scope of a
  task it submitted or runs (ran), and of a workflow one of whose tasks it submitted or
  ran; any other is PERMISSION_DENIED (`ScopeAccess`, the Hub's task queue).
- ``global``: shared by every agent of the Hub; ``scope_id`` is ignored.

Values are JSON documents, stored as sent. A value with a TTL is gone for readers the
moment it expires; expired rows are deleted later by a sweep that the handlers run at
most every ``MemoryLimits.sweep_interval_seconds`` (and that :meth:`MemoryStore.sweep_expired`
and :meth:`MemoryService.sweep` run on demand).

Error rule: **a request the caller got wrong is INVALID_ARGUMENT** with a message that
starts with the field's name (``key: ...``, ``value_json: ...``, ``scope_id: ...``,
``ttl_seconds: ...``, ``limit: ...``) — empty or over-long keys, values over the size
limit or not valid JSON, a missing scope id, a negative TTL or limit. ``success=false``
with ``error_message`` is kept for failures of the Hub itself (a database or JetStream
error, :class:`MemoryUnavailableError`), which never end the process. A call without a
live session is UNAUTHENTICATED.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether_hub._wire import pb, runtime, server
from aether_hub.db import Database
from aether_hub.sessions import SessionRegistry

__all__ = (
    "MemoryBackend",
    "MemoryEntry",
    "MemoryInputError",
    "MemoryLimits",
    "MemoryQuotaError",
    "MemoryService",
    "MemoryStore",
    "MemoryUnavailableError",
    "SqliteMemoryBackend",
    "check_key",
    "check_limit",
    "check_ttl",
    "check_value",
    "quota_error",
    "scope_name",
)

_log = logging.getLogger(__name__)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS memory_entries (
    scope       TEXT NOT NULL,
    scope_id    TEXT NOT NULL,
    key         TEXT NOT NULL,
    value_json  TEXT NOT NULL,
    expires_at  REAL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (scope, scope_id, key)
);
CREATE INDEX IF NOT EXISTS memory_entries_expiry
    ON memory_entries (expires_at) WHERE expires_at IS NOT NULL;
"""

_SCOPE_NAMES: Final[dict[pb.MemoryScope, str]] = {
    pb.MemoryScope.UNSPECIFIED: "agent",
    pb.MemoryScope.AGENT: "agent",
    pb.MemoryScope.TASK: "task",
    pb.MemoryScope.WORKFLOW: "workflow",
    pb.MemoryScope.GLOBAL: "global",
}


def scope_name(scope: pb.MemoryScope | str) -> str:
    """``agent``, ``task``, ``workflow`` or ``global`` (unspecified counts as agent)."""
    if isinstance(scope, pb.MemoryScope):
        return _SCOPE_NAMES[scope]
    name = scope.strip().lower().removeprefix("memory_scope_")
    if name in ("", "unspecified"):
        return "agent"
    if name not in ("agent", "task", "workflow", "global"):
        raise MemoryInputError("scope", f"unknown scope {scope!r}")
    return name


@dataclass(frozen=True, slots=True)
class MemoryLimits:
    """Size limits and housekeeping settings of the memory service."""

    #: Longest key, in UTF-8 bytes.
    max_key_bytes: int = 256
    #: Largest value, in UTF-8 bytes of its JSON text.
    max_value_bytes: int = 1024 * 1024
    #: Keys List returns when the request's limit is 0.
    default_list_limit: int = 1000
    #: Most keys one List returns (larger limits are clamped).
    max_list_limit: int = 10_000
    #: Seconds between sweeps of expired values.
    sweep_interval_seconds: float = 60.0
    #: Live keys one agent may keep in its own (agent) scope.
    agent_quota_keys: int = 10_000
    #: UTF-8 bytes of keys plus values one agent may keep in its own (agent) scope.
    agent_quota_bytes: int = 64 * 1024 * 1024


class MemoryQuotaError(Exception):
    """A store would take an agent over its memory quota (RESOURCE_EXHAUSTED)."""


class MemoryUnavailableError(Exception):
    """The storage behind the memory failed (SQLite, JetStream): ``success=false``.

    The message is shown to the caller, so it names what failed and never carries
    credentials (server URLs with passwords, tokens).
    """


def quota_error(
    agent_id: str, keys: int, size: int, limits: MemoryLimits
) -> MemoryQuotaError | None:
    """The error for an agent that would keep `keys` keys of `size` bytes, or None."""
    if keys > limits.agent_quota_keys:
        return MemoryQuotaError(
            f"memory quota: agent {agent_id!r} would keep {keys} keys; the limit is"
            f" {limits.agent_quota_keys} (delete keys, or the Hub's --memory-quota-keys)"
        )
    if size > limits.agent_quota_bytes:
        return MemoryQuotaError(
            f"memory quota: agent {agent_id!r} would keep {size} bytes; the limit is"
            f" {limits.agent_quota_bytes} (delete keys, or the Hub's --memory-quota-bytes)"
        )
    return None


class ScopeAccess(Protocol):
    """Who may use which task and workflow scopes (the Hub's `TaskQueue`)."""

    def agent_may_use_task(self, agent_id: str, task_id: str) -> bool:
        """Whether the agent submitted or runs the task."""
        ...

    def agent_in_workflow(self, agent_id: str, workflow_id: str) -> bool:
        """Whether the agent submitted or ran a task of the workflow."""
        ...


class MemoryInputError(ValueError):
    """A request field is unusable; the message starts with the field's name."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class MemoryEntry:
    """A live value."""

    value_json: str
    expires_at: float | None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def check_key(key: str, limits: MemoryLimits) -> None:
    """Raise MemoryInputError unless `key` is non-empty and within the size limit."""
    if not key:
        raise MemoryInputError("key", "must not be empty")
    size = len(key.encode("utf-8"))
    if size > limits.max_key_bytes:
        raise MemoryInputError("key", f"is {size} bytes; the limit is {limits.max_key_bytes} bytes")


def check_value(value_json: str, limits: MemoryLimits) -> None:
    """Raise MemoryInputError unless `value_json` is JSON within the size limit."""
    size = len(value_json.encode("utf-8"))
    if size > limits.max_value_bytes:
        raise MemoryInputError(
            "value_json",
            f"is {size} bytes; the limit is {limits.max_value_bytes} bytes",
        )
    try:
        json.loads(value_json, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise MemoryInputError("value_json", f"is not valid JSON ({exc})") from None
    except (ValueError, RecursionError) as exc:
        raise MemoryInputError("value_json", f"is not valid JSON ({exc})") from None


def check_ttl(ttl_seconds: float) -> None:
    """Raise MemoryInputError unless `ttl_seconds` is 0 (never expires) or more."""
    if ttl_seconds < 0 or math.isnan(ttl_seconds):
        raise MemoryInputError("ttl_seconds", f"must be 0 or more, not {ttl_seconds}")


def check_limit(limit: int, limits: MemoryLimits) -> int:
    """How many keys a List with `limit` returns (0: the default; clamped)."""
    if limit < 0:
        raise MemoryInputError("limit", f"must be 0 or more, not {limit}")
    return min(limit or limits.default_list_limit, limits.max_list_limit)


class MemoryBackend(Protocol):
    """Where `MemoryService` keeps values; every call is awaited.

    `scope` is a :func:`scope_name`; `scope_id` is the agent, task or workflow id ("" for
    global). Input errors raise :class:`MemoryInputError`, a store over an agent's quota
    :class:`MemoryQuotaError`, a failure of the storage :class:`MemoryUnavailableError`.
    """

    async def store(
        self, scope: str, scope_id: str, key: str, value_json: str, ttl_seconds: float = 0
    ) -> None:
        """Store (replace) a value; `ttl_seconds` 0 means it never expires."""
        ...

    async def retrieve(self, scope: str, scope_id: str, key: str) -> MemoryEntry | None:
        """The live value under `key`, or None (also when it has expired)."""
        ...

    async def delete(self, scope: str, scope_id: str, key: str) -> bool:
        """Remove `key`; whether a live value was there."""
        ...

    async def list_keys(
        self, scope: str, scope_id: str, prefix: str = "", limit: int = 0
    ) -> list[str]:
        """Live keys of a scope starting with `prefix`, sorted; at most `limit` (0: default)."""
        ...

    async def snapshot(self, scope: pb.MemoryScope | str, scope_id: str = "") -> dict[str, object]:
        """The live values of a scope, decoded, by key (for tests and tooling)."""
        ...

    async def sweep(self) -> int:
        """Delete every expired value now; how many were deleted."""
        ...

    async def maybe_sweep(self) -> None:
        """Sweep when the last sweep is older than the sweep interval (handlers call it)."""
        ...

    async def stored_count(self) -> int:
        """Values stored, expired or not (to observe the sweep)."""
        ...


class MemoryStore:
    """The memory table, as plain Python calls (what the service and tests use).

    `clock` is the wall clock TTLs are measured with (seconds since the epoch),
    injectable so tests move time instead of waiting.
    """

    def __init__(
        self,
        db: Database,
        limits: MemoryLimits | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self.limits = limits or MemoryLimits()
        self._clock = clock
        self._last_sweep = clock()
        db.ensure_schema(_SCHEMA)

    # -- validation ------------------------------------------------------------------

    def check_key(self, key: str) -> None:
        """Raise MemoryInputError unless `key` is non-empty and within the size limit."""
        check_key(key, self.limits)

    def check_value(self, value_json: str) -> None:
        """Raise MemoryInputError unless `value_json` is JSON within the size limit."""
        check_value(value_json, self.limits)

    # -- operations ------------------------------------------------------------------

    def store(
        self, scope: str, scope_id: str, key: str, value_json: str, ttl_seconds: float = 0
    ) -> None:
        """Store (replace) a value; `ttl_seconds` 0 means it never expires."""
        self.check_key(key)
        self.check_value(value_json)
        check_ttl(ttl_seconds)
        now = self._clock()
        expires_at = now + ttl_seconds if ttl_seconds else None
        with self._db.conn:
            if scope == "agent":
                self._check_quota(scope_id, key, value_json, now)
            self._db.conn.execute(
                "INSERT INTO memory_entries (scope, scope_id, key, value_json, expires_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (scope, scope_id, key) DO UPDATE SET"
                " value_json = excluded.value_json, expires_at = excluded.expires_at,"
                " updated_at = excluded.updated_at",
                (scope, scope_id, key, value_json, expires_at, now),
            )

    def _check_quota(self, agent_id: str, key: str, value_json: str, now: float) -> None:
        """MemoryQuotaError when storing `key` would take `agent_id` over its quota."""
        row = self._db.conn.execute(
            "SELECT count(*), coalesce(sum(length(CAST(key AS BLOB))"
            " + length(CAST(value_json AS BLOB))), 0) FROM memory_entries"
            " WHERE scope = 'agent' AND scope_id = ? AND key != ?"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (agent_id, key, now),
        ).fetchone()
        keys = int(row[0]) + 1
        size = int(row[1]) + len(key.encode("utf-8")) + len(value_json.encode("utf-8"))
        error = quota_error(agent_id, keys, size, self.limits)
        if error is not None:
            raise error

    def retrieve(self, scope: str, scope_id: str, key: str) -> MemoryEntry | None:
        """The live value under `key`, or None (also when it has expired)."""
        self.check_key(key)
        row = self._db.conn.execute(
            "SELECT value_json, expires_at FROM memory_entries"
            " WHERE scope = ? AND scope_id = ? AND key = ?"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (scope, scope_id, key, self._clock()),
        ).fetchone()
        if row is None:
            return None
        return MemoryEntry(value_json=str(row[0]), expires_at=row[1])

    def delete(self, scope: str, scope_id: str, key: str) -> bool:
        """Remove `key`; whether a live value was there."""
        self.check_key(key)
        with self._db.conn:
            cursor = self._db.conn.execute(
                "DELETE FROM memory_entries WHERE scope = ? AND scope_id = ? AND key = ?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (scope, scope_id, key, self._clock()),
            )
        return cursor.rowcount > 0

    def list_keys(self, scope: str, scope_id: str, prefix: str = "", limit: int = 0) -> list[str]:
        """Live keys of a scope starting with `prefix`, sorted; at most `limit` (0: default)."""
        count = check_limit(limit, self.limits)
        rows = self._db.conn.execute(
            "SELECT key FROM memory_entries WHERE scope = ? AND scope_id = ?"
            " AND key >= ? AND substr(key, 1, ?) = ?"
            " AND (expires_at IS NULL OR expires_at > ?)"
            " ORDER BY key LIMIT ?",
            (scope, scope_id, prefix, len(prefix), prefix, self._clock(), count),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def snapshot(self, scope: pb.MemoryScope | str, scope_id: str = "") -> dict[str, object]:
        """The live values of a scope, decoded, by key (for tests and tooling)."""
        name = scope_name(scope)
        rows = self._db.conn.execute(
            "SELECT key, value_json FROM memory_entries WHERE scope = ? AND scope_id = ?"
            " AND (expires_at IS NULL OR expires_at > ?) ORDER BY key",
            (name, "" if name == "global" else scope_id, self._clock()),
        ).fetchall()
        return {str(key): json.loads(value) for key, value in rows}

    def sweep_expired(self) -> int:
        """Delete every expired value now; how many were deleted."""
        now = self._clock()
        self._last_sweep = now
        with self._db.conn:
            cursor = self._db.conn.execute(
                "DELETE FROM memory_entries WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (now,),
            )
        if cursor.rowcount:
            _log.debug("swept %d expired memory values", cursor.rowcount)
        return cursor.rowcount

    def maybe_sweep(self) -> None:
        """Sweep when the last sweep is older than the sweep interval."""
        if self._clock() - self._last_sweep >= self.limits.sweep_interval_seconds:
            self.sweep_expired()

    def stored_row_count(self) -> int:
        """Rows in the table, expired or not (to observe the sweep)."""
        row = self._db.conn.execute("SELECT count(*) FROM memory_entries").fetchone()
        return int(row[0])


class SqliteMemoryBackend:
    """The SQLite :class:`MemoryStore` as a :class:`MemoryBackend`.

    The calls run inline, as they always have: the Hub's SQLite connection belongs to the
    event loop's thread, and one memory call is a single short statement.
    """

    def __init__(self, store: MemoryStore) -> None:
        #: The synchronous store (tests and tools read it directly).
        self.sync = store

    def __repr__(self) -> str:
        return f"SqliteMemoryBackend({self.sync.limits!r})"

    async def store(
        self, scope: str, scope_id: str, key: str, value_json: str, ttl_seconds: float = 0
    ) -> None:
        """See :meth:`MemoryStore.store`."""
        try:
            self.sync.store(scope, scope_id, key, value_json, ttl_seconds)
        except sqlite3.Error as exc:
            raise MemoryUnavailableError(str(exc)) from exc

    async def retrieve(self, scope: str, scope_id: str, key: str) -> MemoryEntry | None:
        """See :meth:`MemoryStore.retrieve`."""
        try:
            return self.sync.retrieve(scope, scope_id, key)
        except sqlite3.Error as exc:
            raise MemoryUnavailableError(str(exc)) from exc

    async def delete(self, scope: str, scope_id: str, key: str) -> bool:
        """See :meth:`MemoryStore.delete`."""
        try:
            return self.sync.delete(scope, scope_id, key)
        except sqlite3.Error as exc:
            raise MemoryUnavailableError(str(exc)) from exc

    async def list_keys(
        self, scope: str, scope_id: str, prefix: str = "", limit: int = 0
    ) -> list[str]:
        """See :meth:`MemoryStore.list_keys`."""
        try:
            return self.sync.list_keys(scope, scope_id, prefix, limit)
        except sqlite3.Error as exc:
            raise MemoryUnavailableError(str(exc)) from exc

    async def snapshot(self, scope: pb.MemoryScope | str, scope_id: str = "") -> dict[str, object]:
        """See :meth:`MemoryStore.snapshot`."""
        try:
            return self.sync.snapshot(scope, scope_id)
        except sqlite3.Error as exc:
            raise MemoryUnavailableError(str(exc)) from exc

    async def sweep(self) -> int:
        """See :meth:`MemoryStore.sweep_expired`."""
        try:
            return self.sync.sweep_expired()
        except sqlite3.Error as exc:
            raise MemoryUnavailableError(str(exc)) from exc

    async def maybe_sweep(self) -> None:
        """See :meth:`MemoryStore.maybe_sweep`."""
        try:
            self.sync.maybe_sweep()
        except sqlite3.Error as exc:
            raise MemoryUnavailableError(str(exc)) from exc

    async def stored_count(self) -> int:
        """See :meth:`MemoryStore.stored_row_count`."""
        try:
            return self.sync.stored_row_count()
        except sqlite3.Error as exc:
            raise MemoryUnavailableError(str(exc)) from exc


def _invalid(exc: MemoryInputError) -> GRPCError:
    return GRPCError(Status.INVALID_ARGUMENT, str(exc))


def _timestamp(epoch: float | None) -> datetime.datetime | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)


def _failed(call: str, exc: MemoryUnavailableError) -> str:
    # The message is the backend's own (already free of credentials); no traceback, as
    # a store that is down fails every call and the stack says nothing new.
    _log.error("memory %s failed: %s", call, exc)
    return f"the Hub's store failed: {exc}"


class MemoryService(server.MemoryServiceBase):
    """`aether.v1.MemoryService` over a :class:`MemoryBackend`.

    `backend` None is a :class:`MemoryStore` in the Hub database `db` (one Hub); a
    :class:`~aether_hub.memory_jetstream.JetStreamMemoryStore` shares the memory between
    Hub replicas (`limits` and `clock` are then the backend's own).
    """

    def __init__(
        self,
        db: Database,
        sessions: SessionRegistry,
        limits: MemoryLimits | None = None,
        *,
        clock: Callable[[], float] = time.time,
        access: ScopeAccess | None = None,
        backend: MemoryBackend | None = None,
    ) -> None:
        self.backend: MemoryBackend = (
            backend
            if backend is not None
            else SqliteMemoryBackend(MemoryStore(db, limits, clock=clock))
        )
        self._sessions = sessions
        self._access = access

    def snapshot(self, scope: pb.MemoryScope | str, scope_id: str = "") -> dict[str, object]:
        """The live values of a scope, decoded (see :meth:`MemoryStore.snapshot`).

        Synchronous for the tests and `TestHub`, so only with the SQLite store; with
        another backend await ``service.backend.snapshot(...)``.
        """
        backend = self.backend
        if not isinstance(backend, SqliteMemoryBackend):
            raise RuntimeError(
                f"snapshot() reads the SQLite store; the memory is in {backend!r}:"
                " await service.backend.snapshot(...)"
            )
        return backend.sync.snapshot(scope, scope_id)

    async def sweep(self) -> int:
        """Delete expired values now (for the Hub's periodic housekeeping); how many."""
        return await self.backend.sweep()

    async def _housekeeping(self) -> None:
        try:
            await self.backend.maybe_sweep()
        except MemoryUnavailableError as exc:
            # The request itself may still work; its own call reports any failure.
            _log.error("sweeping expired memory values failed: %s", exc)

    async def _scope(
        self, context: runtime.ServerContext, scope: pb.MemoryScope, scope_id: str
    ) -> tuple[str, str]:
        session = self._sessions.require(context)
        await self._housekeeping()
        name = scope_name(scope)
        if name == "agent":
            return name, session.agent_id
        if name == "global":
            return name, ""
        if not scope_id:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"scope_id: required for the {name} scope (the {name} id)",
            )
        access = self._access
        if access is not None:
            allowed = (
                access.agent_may_use_task(session.agent_id, scope_id)
                if name == "task"
                else access.agent_in_workflow(session.agent_id, scope_id)
            )
            if not allowed:
                raise GRPCError(
                    Status.PERMISSION_DENIED,
                    f"scope_id: agent {session.agent_id!r} may not use the memory of {name}"
                    f" {scope_id!r}: only of a {name} it submitted or runs"
                    + (" (one of its tasks)" if name == "workflow" else ""),
                )
        return name, scope_id

    async def store(
        self, request: pb.StoreRequest, context: runtime.ServerContext
    ) -> pb.StoreResponse:
        """Store a value, replacing any value under the same key and scope."""
        scope, scope_id = await self._scope(context, request.scope, request.scope_id)
        try:
            await self.backend.store(
                scope, scope_id, request.key, request.value_json, request.ttl_seconds
            )
        except MemoryInputError as exc:
            raise _invalid(exc) from None
        except MemoryQuotaError as exc:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, str(exc)) from None
        except MemoryUnavailableError as exc:
            error = _failed("store", exc)
            return pb.StoreResponse(success=False, error_message=error)
        return pb.StoreResponse(success=True)

    async def retrieve(
        self, request: pb.RetrieveRequest, context: runtime.ServerContext
    ) -> pb.RetrieveResponse:
        """Read a value; found is false when there is none or it expired."""
        scope, scope_id = await self._scope(context, request.scope, request.scope_id)
        try:
            entry = await self.backend.retrieve(scope, scope_id, request.key)
        except MemoryInputError as exc:
            raise _invalid(exc) from None
        except MemoryUnavailableError as exc:
            error = _failed("retrieve", exc)
            return pb.RetrieveResponse(success=False, error_message=error)
        if entry is None:
            return pb.RetrieveResponse(success=True, found=False)
        return pb.RetrieveResponse(
            success=True,
            found=True,
            value_json=entry.value_json,
            expires_at=_timestamp(entry.expires_at),
        )

    async def delete(
        self, request: pb.DeleteRequest, context: runtime.ServerContext
    ) -> pb.DeleteResponse:
        """Remove a value; deleted says whether one was there."""
        scope, scope_id = await self._scope(context, request.scope, request.scope_id)
        try:
            deleted = await self.backend.delete(scope, scope_id, request.key)
        except MemoryInputError as exc:
            raise _invalid(exc) from None
        except MemoryUnavailableError as exc:
            error = _failed("delete", exc)
            return pb.DeleteResponse(success=False, error_message=error)
        return pb.DeleteResponse(success=True, deleted=deleted)

    async def list(
        self, request: pb.ListKeysRequest, context: runtime.ServerContext
    ) -> pb.ListKeysResponse:
        """The live keys of a scope, sorted, optionally by prefix."""
        scope, scope_id = await self._scope(context, request.scope, request.scope_id)
        try:
            keys = await self.backend.list_keys(scope, scope_id, request.prefix, request.limit)
        except MemoryInputError as exc:
            raise _invalid(exc) from None
        except MemoryUnavailableError as exc:
            error = _failed("list", exc)
            return pb.ListKeysResponse(success=False, error_message=error)
        return pb.ListKeysResponse(success=True, keys=keys)
