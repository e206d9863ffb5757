"""AgentService of the dev Hub over loopback: enrolment, secrets, sessions, heartbeats."""

from __future__ import annotations

import grpclib.client
import pytest
from grpclib.const import Status

from aether._wire import client, pb
from aether_hub.auth import AgentRegistry, hash_secret, verify_secret
from aether_hub.db import Database
from aether_hub.server import HubServer
from aether_hub.settings import AgentSpec, HubConfig
from tests.hubserver.hubkit import AgentConn, FakeClock, bearer, grpc_status, running_hub


async def test_dev_hub_enrols_unknown_agent_with_low_trust(
    hub: HubServer, channel: grpclib.client.Channel
) -> None:
    stub = client.AgentServiceStub(channel)
    reg = await stub.register(pb.RegisterRequest(agent_id="newbie", agent_name="New"))
    assert reg.success
    assert reg.trust_level == pb.TrustLevel.LOW
    assert reg.heartbeat_interval_seconds == 30
    assert len(reg.session_token) >= 32
    record = await hub.agents.get("newbie")
    assert record is not None and record.source == "dev-enrolled"
    session = hub.sessions.by_token(reg.session_token)
    assert session is not None and session.session_id == reg.session_id


async def test_non_dev_hub_refuses_unknown_agent() -> None:
    async with running_hub(HubConfig(port=0)) as hub:
        ch = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            stub = client.AgentServiceStub(ch)
            status, message = await grpc_status(stub.register(pb.RegisterRequest(agent_id="x")))
            assert status == Status.UNAUTHENTICATED
            assert "not enrolled" in message and "--dev" in message
        finally:
            ch.close()


async def test_enrolled_agent_needs_its_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_SECRET", "s3cret-value")
    config = HubConfig(
        port=0,
        agents=(AgentSpec(agent_id="pm", secret_env="PM_SECRET", trust_level="high"),),
    )
    async with running_hub(config) as hub:
        ch = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            stub = client.AgentServiceStub(ch)
            status, message = await grpc_status(
                stub.register(pb.RegisterRequest(agent_id="pm", secret="wrong"))
            )
            assert status == Status.UNAUTHENTICATED
            assert "wrong secret" in message and "s3cret" not in message
            status, message = await grpc_status(stub.register(pb.RegisterRequest(agent_id="pm")))
            assert status == Status.UNAUTHENTICATED and "needs its secret" in message
            reg = await stub.register(pb.RegisterRequest(agent_id="pm", secret="s3cret-value"))
            assert reg.success and reg.trust_level == pb.TrustLevel.HIGH
            # The guide's form: the secret in metadata["secret"].
            reg2 = await stub.register(
                pb.RegisterRequest(agent_id="pm", metadata={"secret": "s3cret-value"})
            )
            assert reg2.success
        finally:
            ch.close()


def test_secrets_are_stored_as_salted_hashes() -> None:
    db = Database()
    try:
        registry = AgentRegistry(db)
        record = registry.add("a", "hunter2")
        raw = db.conn.execute("SELECT secret_hash FROM agents").fetchone()[0]
        assert "hunter2" not in raw and raw.startswith("scrypt$")
        assert verify_secret("hunter2", record.secret_hash)
        assert not verify_secret("hunter3", record.secret_hash)
        assert hash_secret("hunter2") != hash_secret("hunter2")  # salted
        assert "hunter2" not in repr(record) and raw not in repr(record)
    finally:
        db.close()


async def test_missing_and_stale_tokens_are_unauthenticated(
    hub: HubServer, channel: grpclib.client.Channel
) -> None:
    agent = await AgentConn.register(channel, "a1")
    stub = agent.stub
    hb = pb.HeartbeatRequest(agent_id="a1")
    status, message = await grpc_status(stub.heartbeat(hb))
    assert status == Status.UNAUTHENTICATED and "missing session token" in message
    status, _ = await grpc_status(stub.heartbeat(hb, metadata=bearer("not-a-token")))
    assert status == Status.UNAUTHENTICATED
    assert (await stub.heartbeat(hb, metadata=agent.metadata)).success
    # A second registration replaces the session: the first token is stale now.
    again = await AgentConn.register(channel, "a1")
    status, _ = await grpc_status(stub.heartbeat(hb, metadata=agent.metadata))
    assert status == Status.UNAUTHENTICATED
    assert (await stub.heartbeat(hb, metadata=again.metadata)).success


async def test_malformed_requests_name_the_field(
    hub: HubServer, channel: grpclib.client.Channel
) -> None:
    stub = client.AgentServiceStub(channel)
    status, message = await grpc_status(stub.register(pb.RegisterRequest(agent_id="")))
    assert status == Status.INVALID_ARGUMENT and "agent_id" in message
    status, message = await grpc_status(
        stub.register(pb.RegisterRequest(agent_id="a", max_concurrent_tasks=-1))
    )
    assert status == Status.INVALID_ARGUMENT and "max_concurrent_tasks" in message
    agent = await AgentConn.register(channel, "a")
    status, message = await grpc_status(
        stub.heartbeat(pb.HeartbeatRequest(agent_id=""), metadata=agent.metadata)
    )
    assert status == Status.INVALID_ARGUMENT and "agent_id" in message
    status, message = await grpc_status(
        stub.submit_result(pb.TaskResult(task_id=""), metadata=agent.metadata)
    )
    assert status == Status.INVALID_ARGUMENT and "task_id" in message
    status, message = await grpc_status(
        stub.report_status(pb.TaskStatus(task_id="t", progress=2.0), metadata=agent.metadata)
    )
    assert status == Status.INVALID_ARGUMENT and "progress" in message
    # Another agent's id with this session's token.
    status, _ = await grpc_status(
        stub.heartbeat(pb.HeartbeatRequest(agent_id="someone-else"), metadata=agent.metadata)
    )
    assert status == Status.PERMISSION_DENIED
    # The Hub still serves after all that.
    assert (await agent.heartbeat()).success


async def test_missed_heartbeats_end_the_session(
    hub: HubServer, hub_clock: FakeClock, channel: grpclib.client.Channel
) -> None:
    agent = await AgentConn.register(channel, "sleepy")
    agent.open_stream()
    hub_clock.advance(60)
    assert (await agent.heartbeat()).success  # alive at 60 s
    hub_clock.advance(64)
    hub.sweep()
    # The bound: 2 heartbeat intervals (2 x 30 s) + the grace (5 s) = 65 s of silence.
    assert hub.sessions.get(agent.session_id) is not None
    hub_clock.advance(2)
    hub.sweep()
    assert hub.sessions.get(agent.session_id) is None
    await agent.stream_ended.wait()
    assert agent.stream_error is not None
    assert agent.stream_error.status == Status.UNAUTHENTICATED
    assert "session expired" in (agent.stream_error.message or "")
    status, _ = await grpc_status(agent.heartbeat())
    assert status == Status.UNAUTHENTICATED
    await agent.close_stream()


async def test_unregister_ends_the_session(hub: HubServer, channel: grpclib.client.Channel) -> None:
    agent = await AgentConn.register(channel, "leaver")
    resp = await agent.stub.unregister(
        pb.UnregisterRequest(agent_id="leaver", reason="done"), metadata=agent.metadata
    )
    assert resp.success and resp.requeued_tasks == 0
    assert hub.sessions.get(agent.session_id) is None
    status, _ = await grpc_status(agent.heartbeat())
    assert status == Status.UNAUTHENTICATED
