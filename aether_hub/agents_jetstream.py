"""Agent enrolments shared by every Hub replica: a JetStream key-value bucket.

With ``--store jetstream`` the enrolled agents live in the bucket ``AETHER_AGENTS`` (file
storage, `--store-replicas` copies, one revision per key) instead of each replica's SQLite
``agents`` table, so an agent enrolled once (``aether hub agents add --store jetstream``,
a ``--config`` file, or its first register on a ``--dev`` Hub) registers at any replica.
:class:`JetStreamAgentRegistry` is an :class:`~aether_hub.auth.AgentStore` with the rules
of the SQLite one (same id checks, same records, same errors).

Layout of the bucket:

- An agent lives under ``agent.<hex(agent_id)>``: hex keeps any id (dots, spaces inside,
  unicode) within the characters KV keys allow, and hex order is the UTF-8 byte order
  SQLite sorts ids in.
- The value is the JSON of the :class:`~aether_hub.auth.AgentRecord`: id, trust level,
  source, creation time and the salted scrypt hash of the secret (never the secret).

Every write is compare-and-set on the revision read (``Nats-Expected-Last-Subject-
Sequence``), so racing writers through different replicas are ordered by the stream:
the first enrolment of a ``--dev`` agent wins and the others read the winner's record
(:meth:`JetStreamAgentRegistry.add_if_absent`); a re-enrolment keeps the first
enrolment's ``created_at``. Reads ask the stream leader (not a direct get from a
follower), so an agent enrolled through one replica or the CLI is seen by the next
register at any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aether_hub._wire import pb
from aether_hub.auth import (
    AgentRecord,
    AgentRegistryUnavailableError,
    EnrolmentError,
    check_agent_id,
    enrol_with_secret,
    parse_trust_level,
)
from aether_hub.kvscan import latest_per_key

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

__all__ = ("AGENTS_BUCKET", "JetStreamAgentRegistry", "open_jetstream_agents")

AGENTS_BUCKET = "AETHER_AGENTS"
_STREAM = f"KV_{AGENTS_BUCKET}"
_SUBJECT = f"$KV.{AGENTS_BUCKET}."
_PREFIX = "agent."
_KV_OP = "KV-Operation"
# Since nats-server 2.11 markers the server places (TTL, max age) carry this instead.
_MARKER = "Nats-Marker-Reason"
_EXPECT_LAST = "Nats-Expected-Last-Subject-Sequence"
# JetStream's "wrong last sequence" (10071) and its constant form (10164).
_WRONG_LAST = (10071, 10164)
_TIMEOUT = 5.0
# Compare-and-set rounds before a call gives up: each lost round means another writer
# changed the same agent meanwhile, so this many in a row is contention, not bad luck.
_ATTEMPTS = 16


class _Conflict(Exception):
    """A compare-and-set lost: the agent's key changed since it was read."""


@dataclass(frozen=True, slots=True)
class _Stored:
    """The latest revision of one agent's key: `record` None when absent or deleted."""

    rev: int
    record: AgentRecord | None


def _nats_errors() -> tuple[type[BaseException], ...]:
    import nats.errors

    return (nats.errors.Error, asyncio.TimeoutError, OSError)


def _key(agent_id: str) -> str:
    # "_" for the empty id (never enrolled, but `get("")` must not build a bad subject);
    # hex never contains "_".
    return _PREFIX + (agent_id.encode("utf-8").hex() or "_")


def _deleted(headers: dict[str, str] | None) -> bool:
    if not headers:
        return False
    return headers.get(_KV_OP) in ("DEL", "PURGE") or _MARKER in headers


def _describe(exc: BaseException) -> str:
    # nats-py's messages name the failure (timeout, no responders, API error code), not
    # the connection's credentials; an empty one (asyncio's timeout) gets its type.
    return str(exc) or type(exc).__name__


def _encode(record: AgentRecord) -> bytes:
    return json.dumps(
        {
            "agent_id": record.agent_id,
            "trust_level": int(record.trust_level),
            "source": record.source,
            "created_at": record.created_at,
            "secret_hash": record.secret_hash,
        },
        sort_keys=True,
    ).encode("utf-8")


def _decode(data: bytes) -> AgentRecord:
    raw = json.loads(data)
    if not isinstance(raw, dict):
        raise ValueError("an agent record is not a JSON object")
    return AgentRecord(
        agent_id=str(raw["agent_id"]),
        trust_level=parse_trust_level(int(raw["trust_level"])),
        source=str(raw["source"]),
        created_at=float(raw["created_at"]),
        secret_hash=str(raw["secret_hash"]),
    )


class JetStreamAgentRegistry:
    """The enrolled agents in the JetStream bucket ``AETHER_AGENTS`` (see the module
    docstring). Build it with :func:`open_jetstream_agents`; it uses the caller's NATS
    connection and holds nothing else, so there is nothing to close."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    def __repr__(self) -> str:
        return f"JetStreamAgentRegistry({AGENTS_BUCKET!r})"

    async def get(self, agent_id: str) -> AgentRecord | None:
        """The enrolled agent `agent_id`, or None."""
        with self._failures("read"):
            return (await self._read(agent_id)).record

    async def list_agents(self) -> list[AgentRecord]:
        """Every enrolled agent, by id."""
        with self._failures("list"):
            records = [_decode(msg.data) for msg in await self._scan() if not _deleted(msg.headers)]
        # Python orders str by code point, which is the UTF-8 byte order SQLite uses.
        return sorted(records, key=lambda record: record.agent_id)

    async def add(
        self,
        agent_id: str,
        secret: str,
        trust_level: pb.TrustLevel = pb.TrustLevel.STANDARD,
        *,
        source: str = "cli",
    ) -> AgentRecord:
        """Enrol (or re-enrol) `agent_id` with `secret`, replacing an earlier record."""
        return await enrol_with_secret(self, agent_id, secret, trust_level, source=source)

    async def add_hashed(
        self, agent_id: str, secret_hash: str, trust_level: pb.TrustLevel, *, source: str
    ) -> AgentRecord:
        """Enrol `agent_id` with an already hashed secret (a re-enrolment keeps the first
        enrolment's `created_at`, as SQLite does); the record as stored."""
        check_agent_id(agent_id)
        level = parse_trust_level(trust_level)
        with self._failures("write"):
            for _ in range(_ATTEMPTS):
                old = await self._read(agent_id)
                record = AgentRecord(
                    agent_id=agent_id,
                    trust_level=level,
                    source=source,
                    created_at=old.record.created_at if old.record else time.time(),
                    secret_hash=secret_hash,
                )
                try:
                    await self._publish(agent_id, _encode(record), {}, last=old.rev)
                except _Conflict:
                    continue  # written meanwhile (another replica, the CLI): read again
                return record
            raise self._contention("write")

    async def add_if_absent(
        self, agent_id: str, secret_hash: str, trust_level: pb.TrustLevel, *, source: str
    ) -> tuple[AgentRecord, bool]:
        """Enrol `agent_id` unless it is enrolled already: (the stored record, whether this
        call enrolled it). Of enrolments racing through several replicas exactly one is
        written; the others return the winner's record (to check their secret against)."""
        check_agent_id(agent_id)
        level = parse_trust_level(trust_level)
        with self._failures("write"):
            for _ in range(_ATTEMPTS):
                old = await self._read(agent_id)
                if old.record is not None:
                    return old.record, False
                record = AgentRecord(
                    agent_id=agent_id,
                    trust_level=level,
                    source=source,
                    created_at=time.time(),
                    secret_hash=secret_hash,
                )
                try:
                    # Expecting the revision read (0 for a key never written, the deletion
                    # marker's for a removed agent): only one racing writer gets through.
                    await self._publish(agent_id, _encode(record), {}, last=old.rev)
                except _Conflict:
                    continue  # another enrolment won: the next read returns its record
                return record, True
            raise self._contention("write")

    async def remove(self, agent_id: str) -> bool:
        """Forget `agent_id`; whether it was enrolled."""
        with self._failures("delete"):
            for _ in range(_ATTEMPTS):
                old = await self._read(agent_id)
                if old.record is None:
                    return False
                try:
                    # A KV delete marker, so KV clients (`nats kv`) see the key deleted.
                    await self._publish(agent_id, b"", {_KV_OP: "DEL"}, last=old.rev)
                except _Conflict:
                    continue  # re-enrolled meanwhile: remove what is there now
                return True
            raise self._contention("delete")

    # -- JetStream ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """JetStream errors (and unreadable stored data) as AgentRegistryUnavailableError.

        The messages name the operation and the cause only: a stored record holds a
        secret's hash, so no record content goes into them.
        """
        try:
            yield
        except (EnrolmentError, AgentRegistryUnavailableError):
            raise
        except _nats_errors() as exc:
            raise AgentRegistryUnavailableError(
                f"JetStream {what} of the agent enrolments failed: {_describe(exc)}"
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise AgentRegistryUnavailableError(
                f"JetStream {what} of the agent enrolments failed: unreadable data in the"
                f" {AGENTS_BUCKET} bucket ({type(exc).__name__})"
            ) from None

    @staticmethod
    def _contention(what: str) -> AgentRegistryUnavailableError:
        return AgentRegistryUnavailableError(
            f"JetStream {what} of the agent enrolments failed: the agent's record kept"
            f" changing ({_ATTEMPTS} attempts); try again"
        )

    async def _read(self, agent_id: str) -> _Stored:
        from nats.js.errors import NotFoundError

        try:
            # Not a direct get: the stream leader answers, which has every acknowledged
            # write, whichever replica (or the CLI) made it.
            msg = await self._js.get_last_msg(_STREAM, f"{_SUBJECT}{_key(agent_id)}")
        except NotFoundError:
            return _Stored(rev=0, record=None)
        rev = msg.seq or 0
        if _deleted(msg.headers) or not msg.data:
            return _Stored(rev=rev, record=None)
        return _Stored(rev=rev, record=_decode(msg.data))

    async def _publish(
        self, agent_id: str, body: bytes, headers: dict[str, str], *, last: int
    ) -> None:
        """Write the agent's key only if its latest revision is `last` (0: none), else
        _Conflict."""
        from nats.js.errors import APIError

        try:
            await self._js.publish(
                f"{_SUBJECT}{_key(agent_id)}", body, headers={**headers, _EXPECT_LAST: str(last)}
            )
        except APIError as exc:
            if exc.err_code in _WRONG_LAST:
                raise _Conflict(agent_id) from None
            raise

    async def _scan(self) -> list[Msg]:
        """The latest message of every agent key, deletions included."""
        return await latest_per_key(self._js, _STREAM, f"{_SUBJECT}{_PREFIX}*", timeout=_TIMEOUT)


async def open_jetstream_agents(
    client: Client, *, replicas: int, timeout: float = _TIMEOUT, bind_existing: bool = False
) -> JetStreamAgentRegistry:
    """The registry in the ``AETHER_AGENTS`` bucket; `AgentRegistryUnavailableError`
    naming what failed.

    By default (the Hub) the bucket is created with `replicas` copies on file storage, or
    bound when it exists with that configuration; a different one is an error, as for the
    task and memory buckets, because the replicas must agree. With `bind_existing` (the
    CLI) an existing bucket is used as it is and `replicas` only applies when the bucket
    is missing, so that enrolling does not have to repeat the Hubs' `--store-replicas`.
    """
    from nats.js.api import KeyValueConfig, StorageType
    from nats.js.errors import NotFoundError

    js = client.jetstream(timeout=timeout)
    config = KeyValueConfig(
        bucket=AGENTS_BUCKET,
        history=1,
        replicas=replicas,
        storage=StorageType.FILE,
        description="Aether Hub agent enrolments: one key per agent (secrets hashed)",
    )
    try:
        if bind_existing:
            try:
                await js.stream_info(_STREAM)
            except NotFoundError:
                await js.create_key_value(config)
        else:
            await js.create_key_value(config)
    except _nats_errors() as exc:
        raise AgentRegistryUnavailableError(
            f"cannot open the JetStream bucket {AGENTS_BUCKET} ({replicas} replicas):"
            f" {_describe(exc)}"
        ) from None
    return JetStreamAgentRegistry(js)
