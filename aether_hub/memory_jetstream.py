"""Hub memory shared by every Hub replica: a JetStream key-value bucket (`--store jetstream`).

:class:`JetStreamMemoryStore` is a :class:`~aether_hub.memory_service.MemoryBackend` with
the rules of the SQLite :class:`~aether_hub.memory_service.MemoryStore` (the same
validation, TTL, quota and errors), kept in the bucket ``AETHER_MEMORY`` (file storage,
`replicas` copies, one revision per key), so a value stored through one replica is read
through any other.

Layout of the bucket:

- A value lives under ``<scope>.<hex(scope_id) or _>.<hex(key)>``: hex keeps any key
  (dots, slashes, unicode) within the characters KV keys allow, a scope is the subject
  filter ``<scope>.<hex(scope_id)>.*``, the hex of a prefix is a prefix of the hex, and
  hex order is the UTF-8 byte order SQLite sorts keys in.
- The message body is the value's JSON text exactly as sent; the expiry (seconds since
  the epoch, absent for none) is the header ``Aether-Expires-At``. In the header,
  List and the sweep read expiries from a headers-only scan instead of fetching every
  value, and the body stays the value, so values up to the Hub's size limit fit the
  server's `max_payload` as well as they can.
- ``usage.<hex(agent_id)>`` holds ``{"keys": n, "bytes": b}``: what the agent's own scope
  holds (expired values included until they are deleted), for the quota.

Reads ask the stream leader (not a direct get from a follower), so a value stored
through one replica is seen by the next read through any other.

TTL: a value is gone for readers once the store's `clock` passes its expiry; expired
values are deleted by :meth:`JetStreamMemoryStore.sweep`, which `maybe_sweep` runs in the
background at most every `MemoryLimits.sweep_interval_seconds` per replica. Every
deletion is compare-and-set on the revision read, so a value rewritten meanwhile, or
deleted by another replica's sweep, is left alone and counted once.

Quota guarantee (agent scope, across replicas): the usage key is changed only by
compare-and-set, and a store reserves its growth in it *before* writing the value (and
takes it back if the value's own compare-and-set loses a race), while shrinking and
deleting release usage only *after* the value is gone. So the usage key is never below
what the scope holds, and a store that would take it over `agent_quota_keys` /
`agent_quota_bytes` is refused, whichever replicas the stores go through: the quota is
never exceeded. The other way round it can be conservative: a replica that dies (or
loses its link) between reserving and writing leaves that reservation counted, so the
agent may be refused early by the size of that one value until it deletes keys; and
stores racing for the same key each hold a reservation until they lose the race, so
an agent close to its quota may see one of them refused meanwhile. When
a store is refused, the agent's expired values are swept first and the store tried once
more, so values that expired but were not swept yet do not count, as in SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aether_hub._wire import pb
from aether_hub.kvscan import latest_per_key
from aether_hub.memory_service import (
    MemoryEntry,
    MemoryInputError,
    MemoryLimits,
    MemoryQuotaError,
    MemoryUnavailableError,
    check_key,
    check_limit,
    check_ttl,
    check_value,
    quota_error,
    scope_name,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

__all__ = ("MEMORY_BUCKET", "JetStreamMemoryStore", "open_jetstream_memory")

log = logging.getLogger(__name__)

MEMORY_BUCKET = "AETHER_MEMORY"
_STREAM = f"KV_{MEMORY_BUCKET}"
_SUBJECT = f"$KV.{MEMORY_BUCKET}."
_EXPIRES = "Aether-Expires-At"
_KV_OP = "KV-Operation"
# Since nats-server 2.11 markers the server places (TTL, max age) carry this instead.
_MARKER = "Nats-Marker-Reason"
_EXPECT_LAST = "Nats-Expected-Last-Subject-Sequence"
_MSG_SIZE = "Nats-Msg-Size"  # the body's size in a headers-only delivery
# JetStream's "wrong last sequence" (10071) and its constant form (10164).
_WRONG_LAST = (10071, 10164)
_TIMEOUT = 5.0
# Compare-and-set rounds before a call gives up: each lost round means another call
# changed the same key meanwhile, so this many in a row is contention, not bad luck.
_ATTEMPTS = 32
# Every entry key has exactly three tokens; usage keys have two.
_ALL_ENTRIES = "*.*.*"


class _Conflict(Exception):
    """A compare-and-set lost: the key changed since it was read."""


@dataclass(frozen=True, slots=True)
class _Stored:
    """The latest message of one key: `value` None when there is none or it is deleted."""

    rev: int
    value: bytes | None
    expires_at: float | None


def _nats_errors() -> tuple[type[BaseException], ...]:
    import nats.errors

    return (nats.errors.Error, asyncio.TimeoutError, OSError)


def _hex(text: str) -> str:
    return text.encode("utf-8").hex() or "_"


def _entry_key(scope: str, scope_id: str, key: str) -> str:
    return f"{scope}.{_hex(scope_id)}.{_hex(key)}"


def _scope_filter(scope: str, scope_id: str) -> str:
    return f"{scope}.{_hex(scope_id)}.*"


def _usage_key(agent_id: str) -> str:
    return f"usage.{_hex(agent_id)}"


def _deleted(headers: dict[str, str] | None) -> bool:
    if not headers:
        return False
    return headers.get(_KV_OP) in ("DEL", "PURGE") or _MARKER in headers


def _expiry(headers: dict[str, str] | None) -> float | None:
    raw = (headers or {}).get(_EXPIRES)
    return None if raw is None else float(raw)


def _describe(exc: BaseException) -> str:
    # nats-py's messages name the failure (timeout, no responders, API error code), not
    # the connection's credentials; an empty one (asyncio's timeout) gets its type.
    return str(exc) or type(exc).__name__


class JetStreamMemoryStore:
    """Memory in the JetStream bucket ``AETHER_MEMORY`` (see the module docstring).

    Build it with :func:`open_jetstream_memory`. `clock` is the wall clock TTLs are
    measured with (seconds since the epoch), injectable so tests move time instead of
    waiting; replicas should run NTP-synchronised clocks, as a value's expiry is read
    against the reading replica's clock.
    """

    def __init__(
        self,
        js: JetStreamContext,
        limits: MemoryLimits | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._js = js
        self.limits = limits or MemoryLimits()
        self._clock = clock
        self._last_sweep = clock()
        self._sweeping: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"JetStreamMemoryStore(bucket={MEMORY_BUCKET!r})"

    async def close(self) -> None:
        """Stop a background sweep still running (the Hub is stopping)."""
        task, self._sweeping = self._sweeping, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the MemoryBackend calls --------------------------------------------------------

    async def store(
        self, scope: str, scope_id: str, key: str, value_json: str, ttl_seconds: float = 0
    ) -> None:
        """Store (replace) a value; `ttl_seconds` 0 means it never expires."""
        check_key(key, self.limits)
        check_value(value_json, self.limits)
        check_ttl(ttl_seconds)
        expires_at = self._clock() + ttl_seconds if ttl_seconds else None
        headers = {} if expires_at is None else {_EXPIRES: repr(expires_at)}
        body = value_json.encode("utf-8")
        name = _entry_key(scope, scope_id, key)
        with self._failures("write"):
            if scope != "agent":
                # No quota outside the agent scope: last writer wins, as in SQLite.
                await self._publish(name, body, headers, last=None)
                return
            await self._store_counted(scope_id, name, len(key.encode("utf-8")), body, headers)

    async def retrieve(self, scope: str, scope_id: str, key: str) -> MemoryEntry | None:
        """The live value under `key`, or None (also when it has expired)."""
        check_key(key, self.limits)
        with self._failures("read"):
            stored = await self._read(_entry_key(scope, scope_id, key))
            if stored.value is None or self._expired(stored.expires_at):
                return None
            return MemoryEntry(
                value_json=stored.value.decode("utf-8"), expires_at=stored.expires_at
            )

    async def delete(self, scope: str, scope_id: str, key: str) -> bool:
        """Remove `key`; whether a live value was there."""
        check_key(key, self.limits)
        name = _entry_key(scope, scope_id, key)
        with self._failures("delete"):
            for _ in range(_ATTEMPTS):
                stored = await self._read(name)
                if stored.value is None or self._expired(stored.expires_at):
                    return False  # an expired value waits for the sweep, as in SQLite
                try:
                    await self._publish(name, b"", {_KV_OP: "DEL"}, last=stored.rev)
                except _Conflict:
                    continue  # rewritten meanwhile: look again
                if scope == "agent":
                    size = len(key.encode("utf-8")) + len(stored.value)
                    await self._release(scope_id, 1, size)
                return True
            raise self._contention("delete")

    async def list_keys(
        self, scope: str, scope_id: str, prefix: str = "", limit: int = 0
    ) -> list[str]:
        """Live keys of a scope starting with `prefix`, sorted; at most `limit` (0: default)."""
        count = check_limit(limit, self.limits)
        with self._failures("list"):
            keys = [
                key
                for key, _, _ in self._live(await self._scan(_scope_filter(scope, scope_id)))
                if key.startswith(prefix)
            ]
        # Python orders str by code point, which is the UTF-8 byte order SQLite uses.
        return sorted(keys)[:count]

    async def snapshot(self, scope: pb.MemoryScope | str, scope_id: str = "") -> dict[str, object]:
        """The live values of a scope, decoded, by key (for tests and tooling)."""
        name = scope_name(scope)
        with self._failures("read"):
            msgs = await self._scan(
                _scope_filter(name, "" if name == "global" else scope_id), headers_only=False
            )
            return {key: json.loads(msg.data) for key, msg, _ in sorted(self._live(msgs))}

    async def sweep(self) -> int:
        """Delete every expired value now; how many this call deleted."""
        self._last_sweep = self._clock()
        with self._failures("sweep"):
            deleted = await self._sweep(_ALL_ENTRIES)
        if deleted:
            log.debug("swept %d expired memory values", deleted)
        return deleted

    async def maybe_sweep(self) -> None:
        """Start a sweep in the background when the last one is older than the interval.

        In the background because a sweep scans the whole bucket and the request that
        happens to trigger it should not wait for that.
        """
        if self._clock() - self._last_sweep < self.limits.sweep_interval_seconds:
            return
        if self._sweeping is not None and not self._sweeping.done():
            return
        self._last_sweep = self._clock()
        self._sweeping = asyncio.get_running_loop().create_task(
            self._sweep_in_background(), name="aether-memory-sweep"
        )

    async def stored_count(self) -> int:
        """Values in the bucket, expired or not (to observe the sweep)."""
        with self._failures("read"):
            msgs = await self._scan(_ALL_ENTRIES)
        return sum(1 for msg in msgs if not _deleted(msg.headers))

    # -- the agent scope's quota ---------------------------------------------------------

    async def _store_counted(
        self, agent_id: str, name: str, key_bytes: int, body: bytes, headers: dict[str, str]
    ) -> None:
        size = key_bytes + len(body)
        for _ in range(_ATTEMPTS):
            old = await self._read(name)
            # A stored value counts in the usage until deleted, expired or not.
            keys = 0 if old.value is not None else 1
            grow = size - (key_bytes + len(old.value) if old.value is not None else 0)
            reserved = (keys, max(grow, 0))
            if reserved != (0, 0):
                await self._reserve(agent_id, *reserved)
            try:
                await self._publish(name, body, headers, last=old.rev)
            except _Conflict:
                # Another call changed the key since it was read: this store's growth
                # was reckoned against a value that is gone; give it back and redo.
                if reserved != (0, 0):
                    await self._release(agent_id, *reserved)
                continue
            if grow < 0:
                await self._release(agent_id, 0, -grow)
            return
        raise self._contention("write")

    async def _reserve(self, agent_id: str, keys: int, size: int) -> None:
        """Count `keys`/`size` more for the agent, or MemoryQuotaError (after sweeping the
        agent's expired values once, which may make room)."""
        try:
            await self._change_usage(agent_id, keys, size, check=True)
        except MemoryQuotaError:
            if not await self._sweep(_scope_filter("agent", agent_id)):
                raise
            await self._change_usage(agent_id, keys, size, check=True)

    async def _release(self, agent_id: str, keys: int, size: int) -> None:
        """Count `keys`/`size` less for the agent. What is released is out of the bucket
        already (or never got in), so a failure here only leaves the usage too high,
        which is the safe side: it is logged, not raised."""
        try:
            with self._failures("quota update"):
                await self._change_usage(agent_id, -keys, -size, check=False)
        except MemoryUnavailableError as exc:
            log.warning(
                "memory usage of agent %r not lowered (stays counted): %s",
                agent_id,
                _describe(exc),
            )

    async def _change_usage(self, agent_id: str, keys: int, size: int, *, check: bool) -> None:
        name = _usage_key(agent_id)
        for _ in range(_ATTEMPTS):
            stored = await self._read(name)
            usage = json.loads(stored.value) if stored.value is not None else {}
            new_keys = max(0, int(usage.get("keys", 0)) + keys)
            new_size = max(0, int(usage.get("bytes", 0)) + size)
            if check:
                error = quota_error(agent_id, new_keys, new_size, self.limits)
                if error is not None:
                    raise error
            body = json.dumps({"keys": new_keys, "bytes": new_size}).encode()
            try:
                await self._publish(name, body, {}, last=stored.rev)
                return
            except _Conflict:
                continue
        raise self._contention("quota update")

    # -- sweeping -------------------------------------------------------------------------

    async def _sweep(self, subject_filter: str) -> int:
        now = self._clock()
        deleted = 0
        for msg in await self._scan(subject_filter):
            headers = msg.headers
            expires_at = _expiry(headers)
            if _deleted(headers) or expires_at is None or expires_at > now:
                continue
            name = msg.subject[len(_SUBJECT) :]
            try:
                await self._publish(name, b"", {_KV_OP: "DEL"}, last=msg.metadata.sequence.stream)
            except _Conflict:
                continue  # rewritten, or deleted by another replica's sweep
            deleted += 1
            scope, scope_hex, key_hex = name.split(".")
            if scope == "agent":
                size = len(bytes.fromhex(key_hex)) + int((headers or {}).get(_MSG_SIZE, "0"))
                agent_id = "" if scope_hex == "_" else bytes.fromhex(scope_hex).decode()
                await self._release(agent_id, 1, size)
        return deleted

    async def _sweep_in_background(self) -> None:
        try:
            await self.sweep()
        except MemoryUnavailableError as exc:
            log.error("sweeping expired memory values failed: %s", exc)

    # -- JetStream ------------------------------------------------------------------------

    def _expired(self, expires_at: float | None) -> bool:
        return expires_at is not None and expires_at <= self._clock()

    def _live(self, msgs: list[Msg]) -> Iterator[tuple[str, Msg, float | None]]:
        """(key, message, expiry) of the live values among scanned messages."""
        now = self._clock()
        for msg in msgs:
            if _deleted(msg.headers):
                continue
            expires_at = _expiry(msg.headers)
            if expires_at is not None and expires_at <= now:
                continue
            yield bytes.fromhex(msg.subject.rsplit(".", 1)[1]).decode("utf-8"), msg, expires_at

    @contextlib.contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """JetStream errors (and unreadable stored data) as MemoryUnavailableError."""
        try:
            yield
        except (MemoryInputError, MemoryQuotaError, MemoryUnavailableError):
            raise
        except _nats_errors() as exc:
            raise MemoryUnavailableError(f"JetStream {what} failed: {_describe(exc)}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise MemoryUnavailableError(
                f"JetStream {what} failed: unreadable data in the {MEMORY_BUCKET} bucket ({exc})"
            ) from exc

    @staticmethod
    def _contention(what: str) -> MemoryUnavailableError:
        return MemoryUnavailableError(
            f"JetStream {what} failed: the key kept changing ({_ATTEMPTS} attempts); try again"
        )

    async def _read(self, name: str) -> _Stored:
        from nats.js.errors import NotFoundError

        try:
            # Not a direct get: the stream leader answers, which has every acknowledged
            # write, whichever replica made it.
            msg = await self._js.get_last_msg(_STREAM, f"{_SUBJECT}{name}")
        except NotFoundError:
            return _Stored(rev=0, value=None, expires_at=None)
        rev = msg.seq or 0
        if _deleted(msg.headers):
            return _Stored(rev=rev, value=None, expires_at=None)
        return _Stored(rev=rev, value=msg.data or b"", expires_at=_expiry(msg.headers))

    async def _publish(
        self, name: str, body: bytes, headers: dict[str, str], *, last: int | None
    ) -> int:
        """Write `name`; with `last`, only if its latest revision is `last` (0: none),
        else _Conflict."""
        from nats.js.errors import APIError

        if last is not None:
            headers = {**headers, _EXPECT_LAST: str(last)}
        try:
            ack = await self._js.publish(f"{_SUBJECT}{name}", body, headers=headers or None)
        except APIError as exc:
            if exc.err_code in _WRONG_LAST:
                raise _Conflict(name) from None
            raise
        return int(ack.seq)

    async def _scan(self, subject_filter: str, *, headers_only: bool = True) -> list[Msg]:
        """The latest message of every key matching `subject_filter`, deletions included
        (headers only unless asked: enough for keys, expiries and sizes)."""
        return await latest_per_key(
            self._js,
            _STREAM,
            f"{_SUBJECT}{subject_filter}",
            headers_only=headers_only,
            timeout=_TIMEOUT,
        )


async def open_jetstream_memory(
    client: Client,
    *,
    replicas: int,
    limits: MemoryLimits | None = None,
    clock: Callable[[], float] = time.time,
) -> JetStreamMemoryStore:
    """Create (or bind) the ``AETHER_MEMORY`` bucket with `replicas` copies on file
    storage; `MemoryUnavailableError` naming what failed."""
    from nats.js.api import KeyValueConfig, StorageType

    js = client.jetstream(timeout=_TIMEOUT)
    try:
        await js.create_key_value(
            KeyValueConfig(
                bucket=MEMORY_BUCKET,
                history=1,
                replicas=replicas,
                storage=StorageType.FILE,
                description="Aether Hub memory: one key per value, and per-agent usage",
            )
        )
    except _nats_errors() as exc:
        raise MemoryUnavailableError(
            f"cannot open the JetStream bucket {MEMORY_BUCKET} ({replicas} replicas):"
            f" {_describe(exc)}"
        ) from None
    return JetStreamMemoryStore(js, limits, clock=clock)
