"""MemoryService over a real grpclib server and a real SQLite file."""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether._wire import client, pb
from aether_hub.db import Database
from aether_hub.memory_service import MemoryLimits, MemoryService, MemoryStore
from aether_hub.sessions import SessionRegistry
from tests.hubserver.service_harness import ServiceHarness, bearer, serve_services

START = 1_700_000_000.0


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class MemoryHub:
    def __init__(self, harness: ServiceHarness, service: MemoryService, clock: FakeClock):
        self.harness = harness
        self.service = service
        self.clock = clock
        self.stub = client.MemoryServiceStub(harness.channel)


LIMITS = MemoryLimits(max_key_bytes=16, max_value_bytes=64, sweep_interval_seconds=60)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[MemoryHub]:
    clock = FakeClock()
    services: list[MemoryService] = []

    def make(db: Database, sessions: SessionRegistry) -> list[MemoryService]:
        services.append(MemoryService(db, sessions, LIMITS, clock=clock))
        return services

    async with serve_services(tmp_path, make) as harness:
        yield MemoryHub(harness, services[0], clock)


async def store(
    hub: MemoryHub,
    auth: dict[str, str],
    key: str,
    value: object,
    scope: pb.MemoryScope = pb.MemoryScope.AGENT,
    scope_id: str = "",
    ttl: int = 0,
) -> pb.StoreResponse:
    return await hub.stub.store(
        pb.StoreRequest(
            key=key, value_json=json.dumps(value), scope=scope, scope_id=scope_id, ttl_seconds=ttl
        ),
        metadata=auth,
    )


async def retrieve(
    hub: MemoryHub,
    auth: dict[str, str],
    key: str,
    scope: pb.MemoryScope = pb.MemoryScope.AGENT,
    scope_id: str = "",
) -> pb.RetrieveResponse:
    return await hub.stub.retrieve(
        pb.RetrieveRequest(key=key, scope=scope, scope_id=scope_id), metadata=auth
    )


async def test_store_then_retrieve(hub: MemoryHub) -> None:
    auth = hub.harness.login("agent-a")
    assert (await store(hub, auth, "my-config", {"theme": "dark"})).success
    got = await retrieve(hub, auth, "my-config")
    assert got.success and got.found
    assert json.loads(got.value_json) == {"theme": "dark"}
    assert got.expires_at is None


async def test_store_replaces(hub: MemoryHub) -> None:
    auth = hub.harness.login("agent-a")
    await store(hub, auth, "k", 1)
    await store(hub, auth, "k", 2)
    assert json.loads((await retrieve(hub, auth, "k")).value_json) == 2


async def test_missing_key_is_success_not_found(hub: MemoryHub) -> None:
    got = await retrieve(hub, hub.harness.login(), "nothing")
    assert got.success and not got.found and got.value_json == ""


async def test_unspecified_scope_is_the_agent_scope(hub: MemoryHub) -> None:
    auth = hub.harness.login("agent-a")
    await store(hub, auth, "k", "v", scope=pb.MemoryScope.UNSPECIFIED)
    assert (await retrieve(hub, auth, "k", scope=pb.MemoryScope.AGENT)).found
    assert hub.service.snapshot("agent", "agent-a") == {"k": "v"}


async def test_agent_scope_is_private_whatever_scope_id_says(hub: MemoryHub) -> None:
    alice = hub.harness.login("alice")
    bob = hub.harness.login("bob")
    await store(hub, alice, "secret", "alice's")
    assert not (await retrieve(hub, bob, "secret")).found
    # Bob naming Alice's agent id as scope_id does not reach her values.
    assert not (await retrieve(hub, bob, "secret", scope_id="alice")).found
    # ...and Bob storing with scope_id="alice" writes to his own scope.
    await store(hub, bob, "secret", "bob's", scope_id="alice")
    assert json.loads((await retrieve(hub, alice, "secret")).value_json) == "alice's"
    assert hub.service.snapshot(pb.MemoryScope.AGENT, "bob") == {"secret": "bob's"}


@pytest.mark.parametrize("scope", [pb.MemoryScope.TASK, pb.MemoryScope.WORKFLOW])
async def test_task_and_workflow_scopes_are_shared_by_id(
    hub: MemoryHub, scope: pb.MemoryScope
) -> None:
    alice = hub.harness.login("alice")
    bob = hub.harness.login("bob")
    await store(hub, alice, "step", 1, scope=scope, scope_id="w-1")
    assert json.loads((await retrieve(hub, bob, "step", scope, "w-1")).value_json) == 1
    assert not (await retrieve(hub, bob, "step", scope, "w-2")).found
    assert not (await retrieve(hub, bob, "step", pb.MemoryScope.GLOBAL)).found


@pytest.mark.parametrize(
    ("scope", "name"), [(pb.MemoryScope.TASK, "task"), (pb.MemoryScope.WORKFLOW, "workflow")]
)
async def test_task_and_workflow_scopes_need_a_scope_id(
    hub: MemoryHub, scope: pb.MemoryScope, name: str
) -> None:
    auth = hub.harness.login()
    with pytest.raises(GRPCError) as caught:
        await store(hub, auth, "k", 1, scope=scope)
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.message == f"scope_id: required for the {name} scope (the {name} id)"
    with pytest.raises(GRPCError) as caught:
        await hub.stub.list(pb.ListKeysRequest(scope=scope), metadata=auth)
    assert caught.value.status is Status.INVALID_ARGUMENT


async def test_global_scope_is_shared_and_ignores_scope_id(hub: MemoryHub) -> None:
    alice = hub.harness.login("alice")
    bob = hub.harness.login("bob")
    await store(hub, alice, "motd", "hi", scope=pb.MemoryScope.GLOBAL, scope_id="x")
    got = await retrieve(hub, bob, "motd", pb.MemoryScope.GLOBAL, scope_id="y")
    assert json.loads(got.value_json) == "hi"
    assert hub.service.snapshot("global") == {"motd": "hi"}


async def test_ttl_expiry_is_immediate_for_readers_and_swept_later(hub: MemoryHub) -> None:
    auth = hub.harness.login("agent-a")
    await store(hub, auth, "short", "lived", ttl=10)
    await store(hub, auth, "forever", "here")

    hub.clock.now = START + 9.5
    got = await retrieve(hub, auth, "short")
    assert got.found
    assert got.expires_at == datetime.datetime.fromtimestamp(START + 10, datetime.timezone.utc)

    hub.clock.now = START + 10
    assert not (await retrieve(hub, auth, "short")).found
    keys = await hub.stub.list(pb.ListKeysRequest(), metadata=auth)
    assert keys.keys == ["forever"]
    deleted = await hub.stub.delete(pb.DeleteRequest(key="short"), metadata=auth)
    assert deleted.success and not deleted.deleted
    # Gone for readers, but the row waits for the sweep.
    assert await hub.service.backend.stored_count() == 2

    hub.clock.now = START + 61  # past the sweep interval: the next write sweeps
    await store(hub, auth, "other", 1)
    assert await hub.service.backend.stored_count() == 2  # forever + other
    assert hub.service.snapshot("agent", "agent-a") == {"forever": "here", "other": 1}


async def test_store_without_ttl_clears_an_earlier_ttl(hub: MemoryHub) -> None:
    auth = hub.harness.login()
    await store(hub, auth, "k", 1, ttl=5)
    await store(hub, auth, "k", 2)
    hub.clock.now = START + 100
    assert (await retrieve(hub, auth, "k")).found


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
async def test_bad_store_requests_are_invalid_argument_naming_the_field(
    hub: MemoryHub, key: str, value_json: str, ttl: int, message: str
) -> None:
    auth = hub.harness.login("agent-a")
    with pytest.raises(GRPCError) as caught:
        await hub.stub.store(
            pb.StoreRequest(key=key, value_json=value_json, ttl_seconds=ttl), metadata=auth
        )
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.message is not None and caught.value.message.startswith(message)
    assert hub.service.snapshot("agent", "agent-a") == {}


async def test_value_at_the_limit_is_accepted(hub: MemoryHub) -> None:
    auth = hub.harness.login("agent-a")
    value = "x" * 62  # 64 bytes with the quotes
    assert (await store(hub, auth, "k" * 16, value)).success
    assert hub.service.snapshot("agent", "agent-a") == {"k" * 16: value}


async def test_list_with_prefix_and_limit(hub: MemoryHub) -> None:
    auth = hub.harness.login()
    for key in ["b/2", "a/1", "b/1", "b/3", "c", "b_x"]:
        await store(hub, auth, key, key)
    everything = await hub.stub.list(pb.ListKeysRequest(), metadata=auth)
    assert everything.success
    assert everything.keys == ["a/1", "b/1", "b/2", "b/3", "b_x", "c"]
    by_prefix = await hub.stub.list(pb.ListKeysRequest(prefix="b/"), metadata=auth)
    assert by_prefix.keys == ["b/1", "b/2", "b/3"]
    limited = await hub.stub.list(pb.ListKeysRequest(prefix="b", limit=2), metadata=auth)
    assert limited.keys == ["b/1", "b/2"]
    # LIKE wildcards in a prefix are plain characters.
    assert (await hub.stub.list(pb.ListKeysRequest(prefix="b_"), metadata=auth)).keys == ["b_x"]
    with pytest.raises(GRPCError) as caught:
        await hub.stub.list(pb.ListKeysRequest(limit=-1), metadata=auth)
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.message == "limit: must be 0 or more, not -1"


async def test_delete(hub: MemoryHub) -> None:
    auth = hub.harness.login()
    await store(hub, auth, "k", 1)
    first = await hub.stub.delete(pb.DeleteRequest(key="k"), metadata=auth)
    again = await hub.stub.delete(pb.DeleteRequest(key="k"), metadata=auth)
    assert (first.success, first.deleted) == (True, True)
    assert (again.success, again.deleted) == (True, False)
    assert not (await retrieve(hub, auth, "k")).found


@pytest.mark.parametrize("metadata", [None, bearer("not-a-session"), {"authorization": "Basic x"}])
async def test_calls_without_a_live_session_are_unauthenticated(
    hub: MemoryHub, metadata: dict[str, str] | None
) -> None:
    with pytest.raises(GRPCError) as caught:
        await hub.stub.store(pb.StoreRequest(key="k", value_json="1"), metadata=metadata)
    assert caught.value.status is Status.UNAUTHENTICATED
    with pytest.raises(GRPCError) as caught:
        await hub.stub.retrieve(pb.RetrieveRequest(key="k"), metadata=metadata)
    assert caught.value.status is Status.UNAUTHENTICATED
    assert await hub.service.backend.stored_count() == 0


async def test_ended_session_is_unauthenticated(hub: MemoryHub) -> None:
    session, token = hub.harness.sessions.open(
        "agent-a", trust_level=pb.TrustLevel.LOW, capabilities={}
    )
    await store(hub, bearer(token), "k", 1)
    hub.harness.sessions.end(session)
    with pytest.raises(GRPCError) as caught:
        await retrieve(hub, bearer(token), "k")
    assert caught.value.status is Status.UNAUTHENTICATED


def test_values_survive_a_restart_with_a_database_file(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    db = Database(path)
    MemoryStore(db).store("global", "", "k", '{"a": [1, 2]}')
    db.close()
    reopened = Database(path)
    try:
        assert MemoryStore(reopened).snapshot("global") == {"k": {"a": [1, 2]}}
    finally:
        reopened.close()


def test_sweep_expired_on_demand() -> None:
    clock = FakeClock()
    db = Database()
    memory = MemoryStore(db, clock=clock)
    memory.store("task", "t-1", "a", "1", ttl_seconds=1)
    memory.store("task", "t-1", "b", "2")
    assert memory.sweep_expired() == 0
    clock.now += 1
    assert memory.sweep_expired() == 1
    assert memory.list_keys("task", "t-1") == ["b"]
    db.close()


async def test_reads_sweep_too_and_sweep_on_demand(hub: MemoryHub) -> None:
    auth = hub.harness.login("agent-a")
    await store(hub, auth, "a", 1, ttl=1)
    await store(hub, auth, "b", 2, ttl=1)
    hub.clock.now = START + 61
    assert not (await retrieve(hub, auth, "unrelated")).found
    assert await hub.service.backend.stored_count() == 0
    await store(hub, auth, "c", 3, ttl=1)
    hub.clock.now = START + 62
    assert await hub.service.sweep() == 1
