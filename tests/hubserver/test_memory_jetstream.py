"""Memory backends: the same behaviour from SQLite and from JetStream (a real nats-server),
and what only JetStream has to do: share values, TTLs and quotas between Hub replicas."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import nats
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from nats.aio.client import Client

from aether._wire import client, pb
from aether_hub.db import Database
from aether_hub.memory_jetstream import (
    MEMORY_BUCKET,
    JetStreamMemoryStore,
    open_jetstream_memory,
)
from aether_hub.memory_service import (
    MemoryBackend,
    MemoryInputError,
    MemoryLimits,
    MemoryQuotaError,
    MemoryService,
    MemoryStore,
    MemoryUnavailableError,
    SqliteMemoryBackend,
)
from aether_hub.sessions import SessionRegistry
from tests.hubserver.nats_fixture import NatsServer, nats_jetstream, nats_server
from tests.hubserver.service_harness import serve_services

if TYPE_CHECKING:
    from nats.js import JetStreamContext

__all__ = ("nats_jetstream", "nats_server")  # the fixtures, imported for the tests here

START = 1_700_000_000.0
LIMITS = MemoryLimits(max_key_bytes=16, max_value_bytes=64, sweep_interval_seconds=60)


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Backends:
    """Makes backends of one kind that share one clock (and, for JetStream, one server)."""

    kind: str
    clock: FakeClock
    make: Callable[[MemoryLimits], Awaitable[MemoryBackend]]


async def _connect(server: NatsServer) -> Client:
    return await nats.connect(server.url, allow_reconnect=False)


@dataclass
class _JetStreamReplicas:
    server: NatsServer
    clock: FakeClock
    clients: list[Client] = field(default_factory=list)
    stores: list[JetStreamMemoryStore] = field(default_factory=list)

    async def make(self, limits: MemoryLimits = LIMITS) -> JetStreamMemoryStore:
        """A store on a connection of its own: one Hub replica."""
        nc = await _connect(self.server)
        self.clients.append(nc)
        store = await open_jetstream_memory(nc, replicas=1, limits=limits, clock=self.clock)
        self.stores.append(store)
        return store

    async def close(self) -> None:
        for store in self.stores:
            await store.close()
        for nc in self.clients:
            with contextlib.suppress(Exception):
                await nc.close()


@pytest.fixture
async def replicas(nats_jetstream: NatsServer) -> AsyncIterator[_JetStreamReplicas]:
    made = _JetStreamReplicas(nats_jetstream, FakeClock())
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture(params=["sqlite", "jetstream"])
async def backends(request: pytest.FixtureRequest) -> AsyncIterator[Backends]:
    if request.param == "sqlite":
        clock = FakeClock()
        dbs: list[Database] = []

        async def make_sqlite(limits: MemoryLimits) -> MemoryBackend:
            db = Database()
            dbs.append(db)
            return SqliteMemoryBackend(MemoryStore(db, limits, clock=clock))

        yield Backends("sqlite", clock, make_sqlite)
        for db in dbs:
            db.close()
        return
    made = _JetStreamReplicas(request.getfixturevalue("nats_jetstream"), FakeClock())

    async def make_jetstream(limits: MemoryLimits) -> MemoryBackend:
        return await made.make(limits)

    try:
        yield Backends("jetstream", made.clock, make_jetstream)
    finally:
        await made.close()


# --- the same behaviour from both backends --------------------------------------------


async def test_store_then_retrieve_gives_the_value_as_sent(backends: Backends) -> None:
    memory = await backends.make(LIMITS)
    await memory.store("agent", "agent-a", "my-config", '{"theme":  "dark"}')
    got = await memory.retrieve("agent", "agent-a", "my-config")
    assert got is not None
    assert got.value_json == '{"theme":  "dark"}'
    assert got.expires_at is None
    assert await memory.retrieve("agent", "agent-a", "nothing") is None


async def test_store_replaces(backends: Backends) -> None:
    memory = await backends.make(LIMITS)
    await memory.store("task", "t-1", "k", "1")
    await memory.store("task", "t-1", "k", "2")
    assert await memory.snapshot("task", "t-1") == {"k": 2}


async def test_scopes_and_scope_ids_are_apart(backends: Backends) -> None:
    memory = await backends.make(LIMITS)
    await memory.store("agent", "alice", "k", '"alice"')
    await memory.store("agent", "bob", "k", '"bob"')
    await memory.store("task", "t-1", "k", '"t-1"')
    await memory.store("workflow", "t-1", "k", '"w-1"')
    await memory.store("global", "", "k", '"global"')
    assert await memory.snapshot("agent", "alice") == {"k": "alice"}
    assert await memory.snapshot(pb.MemoryScope.AGENT, "bob") == {"k": "bob"}
    assert await memory.snapshot("task", "t-1") == {"k": "t-1"}
    assert await memory.snapshot("task", "t-2") == {}
    assert await memory.snapshot("workflow", "t-1") == {"k": "w-1"}
    assert await memory.snapshot("global", "ignored") == {"k": "global"}


async def test_ttl_expiry_is_immediate_for_readers_and_swept_later(backends: Backends) -> None:
    memory = await backends.make(LIMITS)
    clock = backends.clock
    await memory.store("agent", "a", "short", '"lived"', ttl_seconds=10)
    await memory.store("agent", "a", "forever", '"here"')

    clock.now = START + 9.5
    got = await memory.retrieve("agent", "a", "short")
    assert got is not None and got.expires_at == START + 10

    clock.now = START + 10
    assert await memory.retrieve("agent", "a", "short") is None
    assert await memory.list_keys("agent", "a") == ["forever"]
    assert not await memory.delete("agent", "a", "short")
    assert await memory.stored_count() == 2  # gone for readers, stored until swept
    assert await memory.sweep() == 1
    assert await memory.stored_count() == 1
    assert await memory.sweep() == 0
    assert await memory.snapshot("agent", "a") == {"forever": "here"}


async def test_store_without_ttl_clears_an_earlier_ttl(backends: Backends) -> None:
    memory = await backends.make(LIMITS)
    await memory.store("global", "", "k", "1", ttl_seconds=5)
    await memory.store("global", "", "k", "2")
    backends.clock.now = START + 100
    got = await memory.retrieve("global", "", "k")
    assert got is not None and got.value_json == "2"


async def test_maybe_sweep_sweeps_once_the_interval_passed(backends: Backends) -> None:
    memory = await backends.make(LIMITS)
    await memory.store("task", "t", "a", "1", ttl_seconds=1)
    await memory.maybe_sweep()
    backends.clock.now = START + 30
    await memory.maybe_sweep()  # expired, but the interval has not passed
    assert await memory.stored_count() == 1
    backends.clock.now = START + 61
    await memory.maybe_sweep()  # SQLite sweeps here and now; JetStream in the background
    for _ in range(200):
        if await memory.stored_count() == 0:
            break
        await asyncio.sleep(0.01)
    assert await memory.stored_count() == 0


@pytest.mark.parametrize(
    ("key", "value_json", "ttl", "message"),
    [
        ("", "1", 0, "key: must not be empty"),
        ("k" * 17, "1", 0, "key: is 17 bytes; the limit is 16 bytes"),
        ("é" * 9, "1", 0, "key: is 18 bytes; the limit is 16 bytes"),
        ("k", '"' + "x" * 70 + '"', 0, "value_json: is 72 bytes; the limit is 64 bytes"),
        ("k", "{not json", 0, "value_json: is not valid JSON"),
        ("k", "", 0, "value_json: is not valid JSON"),
        ("k", "NaN", 0, "value_json: is not valid JSON"),
        ("k", "1", -1, "ttl_seconds: must be 0 or more, not -1"),
    ],
)
async def test_bad_input_is_a_memory_input_error_naming_the_field(
    backends: Backends, key: str, value_json: str, ttl: int, message: str
) -> None:
    memory = await backends.make(LIMITS)
    with pytest.raises(MemoryInputError) as caught:
        await memory.store("agent", "a", key, value_json, ttl_seconds=ttl)
    assert str(caught.value).startswith(message)
    assert await memory.snapshot("agent", "a") == {}
    assert await memory.stored_count() == 0


async def test_bad_keys_and_limits_on_the_other_calls(backends: Backends) -> None:
    memory = await backends.make(LIMITS)
    for call in (memory.retrieve, memory.delete):
        with pytest.raises(MemoryInputError, match=r"^key: must not be empty$"):
            await call("agent", "a", "")
    with pytest.raises(MemoryInputError, match=r"^limit: must be 0 or more, not -1$"):
        await memory.list_keys("agent", "a", limit=-1)


async def test_value_and_key_at_the_limit_are_accepted(backends: Backends) -> None:
    memory = await backends.make(LIMITS)
    value = "x" * 62  # 64 bytes with the quotes
    await memory.store("agent", "a", "k" * 16, json.dumps(value))
    assert await memory.snapshot("agent", "a") == {"k" * 16: value}


async def test_list_with_prefix_and_limit(backends: Backends) -> None:
    memory = await backends.make(LIMITS)
    for key in ["b/2", "a/1", "b/1", "b/3", "c", "b_x"]:
        await memory.store("agent", "a", key, json.dumps(key))
    assert await memory.list_keys("agent", "a") == ["a/1", "b/1", "b/2", "b/3", "b_x", "c"]
    assert await memory.list_keys("agent", "a", "b/") == ["b/1", "b/2", "b/3"]
    assert await memory.list_keys("agent", "a", "b", 2) == ["b/1", "b/2"]
    assert await memory.list_keys("agent", "a", "b_") == ["b_x"]  # no wildcards
    assert await memory.list_keys("agent", "b") == []


async def test_list_by_prefix_with_dots_slashes_and_unicode(backends: Backends) -> None:
    memory = await backends.make(LIMITS)
    keys = ["a.b", "a.b.c", "a/b", "a", "a..", ".a", "é", "é.x", "ä/ö", "日本", "日本.語", "*", ">"]
    for key in keys:
        await memory.store("workflow", "w.1/é", key, "0")
    await memory.store("workflow", "w.1", "a.b.d", "0")  # another scope id, like a prefix
    assert await memory.list_keys("workflow", "w.1/é") == sorted(keys)
    for prefix in ["a", "a.", "a.b", "a.b.", "a/", ".", "é", "é.", "日", "日本.", "*", ">", "ä"]:
        expected = sorted(k for k in keys if k.startswith(prefix))
        assert await memory.list_keys("workflow", "w.1/é", prefix) == expected, prefix
    assert await memory.list_keys("workflow", "w.1") == ["a.b.d"]
    assert await memory.snapshot("workflow", "w.1/é") == dict.fromkeys(sorted(keys), 0)


async def test_delete(backends: Backends) -> None:
    memory = await backends.make(LIMITS)
    await memory.store("global", "", "k", "1")
    assert await memory.delete("global", "", "k")
    assert not await memory.delete("global", "", "k")
    assert await memory.retrieve("global", "", "k") is None
    await memory.store("global", "", "k", "2")  # a deleted key can be stored again
    assert await memory.snapshot("global") == {"k": 2}


QUOTA = MemoryLimits(max_key_bytes=16, max_value_bytes=64, agent_quota_keys=3, agent_quota_bytes=30)


async def test_quota_counts_keys_of_the_agent_scope(backends: Backends) -> None:
    memory = await backends.make(QUOTA)
    for key in ("a", "b", "c"):
        await memory.store("agent", "ag", key, "1")
    with pytest.raises(MemoryQuotaError) as caught:
        await memory.store("agent", "ag", "d", "1")
    assert str(caught.value) == (
        "memory quota: agent 'ag' would keep 4 keys; the limit is 3"
        " (delete keys, or the Hub's --memory-quota-keys)"
    )
    await memory.store("agent", "ag", "a", "2")  # replacing a key is not one more
    await memory.store("agent", "other", "d", "1")  # quotas are per agent
    await memory.store("task", "t", "d", "1")  # and only in the agent scope
    assert await memory.delete("agent", "ag", "b")
    await memory.store("agent", "ag", "d", "1")
    assert await memory.list_keys("agent", "ag") == ["a", "c", "d"]


async def test_quota_counts_bytes_of_keys_and_values(backends: Backends) -> None:
    memory = await backends.make(QUOTA)
    await memory.store("agent", "ag", "k1", json.dumps("x" * 12))  # 2 + 14 bytes
    with pytest.raises(MemoryQuotaError) as caught:
        await memory.store("agent", "ag", "k2", json.dumps("x" * 11))  # 16 + 2 + 13
    assert str(caught.value) == (
        "memory quota: agent 'ag' would keep 31 bytes; the limit is 30"
        " (delete keys, or the Hub's --memory-quota-bytes)"
    )
    await memory.store("agent", "ag", "k1", "1")  # shrinking makes room
    await memory.store("agent", "ag", "k2", json.dumps("x" * 11))
    with pytest.raises(MemoryQuotaError):
        await memory.store("agent", "ag", "k1", json.dumps("x" * 12))  # growing may not
    assert await memory.snapshot("agent", "ag") == {"k1": 1, "k2": "x" * 11}


async def test_expired_values_do_not_count_toward_the_quota(backends: Backends) -> None:
    memory = await backends.make(QUOTA)
    await memory.store("agent", "ag", "a", "1", ttl_seconds=5)
    await memory.store("agent", "ag", "b", "1", ttl_seconds=5)
    await memory.store("agent", "ag", "c", "1")
    backends.clock.now = START + 5
    await memory.store("agent", "ag", "d", "1")
    await memory.store("agent", "ag", "e", "1")
    with pytest.raises(MemoryQuotaError):
        await memory.store("agent", "ag", "f", "1")
    assert await memory.list_keys("agent", "ag") == ["c", "d", "e"]


# --- JetStream: several replicas on one server ----------------------------------------


async def test_a_value_stored_through_one_replica_is_read_through_another(
    replicas: _JetStreamReplicas,
) -> None:
    one, two = await replicas.make(), await replicas.make()
    await one.store("agent", "agent-a", "k.1/é", '{"v": 1}', ttl_seconds=30)
    got = await two.retrieve("agent", "agent-a", "k.1/é")
    assert got is not None
    assert (got.value_json, got.expires_at) == ('{"v": 1}', START + 30)
    assert await two.list_keys("agent", "agent-a") == ["k.1/é"]
    await two.store("agent", "agent-a", "k.1/é", "2")
    assert await one.snapshot("agent", "agent-a") == {"k.1/é": 2}
    assert await one.delete("agent", "agent-a", "k.1/é")
    assert await two.retrieve("agent", "agent-a", "k.1/é") is None
    assert not await two.delete("agent", "agent-a", "k.1/é")


async def test_ttl_across_replicas_and_one_sweep_deletes_each_value_once(
    replicas: _JetStreamReplicas,
) -> None:
    one, two = await replicas.make(), await replicas.make()
    for key in ("a", "b", "c"):
        await one.store("agent", "ag", key, "1", ttl_seconds=10)
    await one.store("agent", "ag", "stays", "1")
    replicas.clock.now = START + 10
    assert await two.retrieve("agent", "ag", "a") is None
    assert await two.list_keys("agent", "ag") == ["stays"]
    swept = await asyncio.gather(one.sweep(), two.sweep())
    assert sum(swept) == 3
    assert await one.stored_count() == 1
    assert await _usage(replicas, "ag") == {"keys": 1, "bytes": len("stays") + 1}


async def test_quota_holds_across_replicas_even_for_concurrent_stores(
    replicas: _JetStreamReplicas,
) -> None:
    one, two = await replicas.make(QUOTA), await replicas.make(QUOTA)
    await one.store("agent", "ag", "a", "1")
    await two.store("agent", "ag", "b", "1")
    await one.store("agent", "ag", "c", "1")
    for store in (one, two):
        with pytest.raises(MemoryQuotaError, match="would keep 4 keys"):
            await store.store("agent", "ag", "d", "1")
    assert await two.delete("agent", "ag", "a")
    assert await two.delete("agent", "ag", "b")
    assert await one.delete("agent", "ag", "c")

    # Ten new keys at once through both replicas: exactly three fit.
    outcomes = await asyncio.gather(
        *((one, two)[i % 2].store("agent", "ag", f"n{i}", "1") for i in range(10)),
        return_exceptions=True,
    )
    assert sum(1 for o in outcomes if o is None) == 3
    assert all(o is None or isinstance(o, MemoryQuotaError) for o in outcomes)
    assert len(await one.list_keys("agent", "ag")) == 3
    assert await _usage(replicas, "ag") == {"keys": 3, "bytes": 3 * len("n0") + 3}


async def test_concurrent_writes_of_one_key_keep_the_usage_exact(
    replicas: _JetStreamReplicas,
) -> None:
    # Ample quota: stores racing for one new key each reserve a key until they lose the
    # race and give it back, so a tight quota could refuse some of them meanwhile.
    one, two = await replicas.make(), await replicas.make()
    values = [json.dumps("x" * n) for n in range(8)]
    await asyncio.gather(
        *((one, two)[i % 2].store("agent", "ag", "k", v) for i, v in enumerate(values))
    )
    stored = await one.retrieve("agent", "ag", "k")
    assert stored is not None
    assert await _usage(replicas, "ag") == {"keys": 1, "bytes": 1 + len(stored.value_json)}
    await asyncio.gather(one.delete("agent", "ag", "k"), two.delete("agent", "ag", "k"))
    assert await _usage(replicas, "ag") == {"keys": 0, "bytes": 0}


async def _usage(replicas: _JetStreamReplicas, agent_id: str) -> object:
    """The usage the bucket holds for `agent_id`, read with plain nats-py."""
    kv = await replicas.clients[0].jetstream().key_value(MEMORY_BUCKET)
    entry = await kv.get(f"usage.{agent_id.encode().hex()}")
    return json.loads(entry.value or b"null")


async def test_a_failing_jetstream_is_a_memory_unavailable_error(
    replicas: _JetStreamReplicas,
) -> None:
    store = await replicas.make()
    await store.store("global", "", "k", "1")
    await replicas.clients[0].close()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.store("global", "", "k", "2"),
        lambda: store.store("agent", "a", "k", "2"),
        lambda: store.retrieve("global", "", "k"),
        lambda: store.delete("global", "", "k"),
        lambda: store.list_keys("global", ""),
        lambda: store.snapshot("global"),
        store.sweep,
    ]
    for call in calls:
        with pytest.raises(MemoryUnavailableError, match=r"^JetStream [a-z ]+ failed: "):
            await call()


async def test_open_fails_with_a_memory_unavailable_error(nats_server: NatsServer) -> None:
    nc = await _connect(nats_server)  # a server without JetStream
    try:
        with pytest.raises(MemoryUnavailableError, match="cannot open the JetStream bucket"):
            await open_jetstream_memory(nc, replicas=1)
    finally:
        await nc.close()


# --- the service over gRPC, two Hub replicas ------------------------------------------


async def test_memory_service_replicas_share_values_and_report_failures(
    replicas: _JetStreamReplicas, tmp_path: Path
) -> None:
    one, two = await replicas.make(), await replicas.make()
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()

    def service(
        store: JetStreamMemoryStore,
    ) -> Callable[[Database, SessionRegistry], list[MemoryService]]:
        return lambda db, sessions: [MemoryService(db, sessions, backend=store)]

    async with (
        serve_services(tmp_path / "one", service(one)) as hub_one,
        serve_services(tmp_path / "two", service(two)) as hub_two,
    ):
        stub_one = client.MemoryServiceStub(hub_one.channel)
        stub_two = client.MemoryServiceStub(hub_two.channel)
        auth_one, auth_two = hub_one.login("agent-a"), hub_two.login("agent-a")
        stored = await stub_one.store(
            pb.StoreRequest(key="cfg", value_json='{"theme": "dark"}', ttl_seconds=60),
            metadata=auth_one,
        )
        assert stored.success
        got = await stub_two.retrieve(pb.RetrieveRequest(key="cfg"), metadata=auth_two)
        assert got.success and got.found and json.loads(got.value_json) == {"theme": "dark"}
        listed = await stub_two.list(pb.ListKeysRequest(prefix="c"), metadata=auth_two)
        assert listed.keys == ["cfg"]
        with pytest.raises(GRPCError) as caught:
            await stub_two.store(pb.StoreRequest(key="k", value_json="{"), metadata=auth_two)
        assert caught.value.status is Status.INVALID_ARGUMENT

        # JetStream gone for replica one: success=false, and the service keeps serving.
        await replicas.clients[0].close()
        failed = await stub_one.retrieve(pb.RetrieveRequest(key="cfg"), metadata=auth_one)
        assert not failed.success
        assert failed.error_message.startswith("the Hub's store failed: JetStream read failed")
        failed_store = await stub_one.store(
            pb.StoreRequest(key="k", value_json="1"), metadata=auth_one
        )
        assert not failed_store.success
        assert (await stub_two.retrieve(pb.RetrieveRequest(key="cfg"), metadata=auth_two)).found


def test_the_sync_snapshot_is_only_for_sqlite() -> None:
    db = Database()
    try:
        # Building the store sends nothing to JetStream, so any context does here.
        store = JetStreamMemoryStore(cast("JetStreamContext", object()))
        service = MemoryService(db, SessionRegistry(db), backend=store)
        assert service.backend is store
        with pytest.raises(RuntimeError, match=r"await service\.backend\.snapshot"):
            service.snapshot("global")
    finally:
        db.close()
