"""Failed registrations are throttled per agent id and per peer (issue 11: 300 wrong secrets
at 18-42 guesses/s). Time is the Hub's fake clock: no test waits or measures.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpclib.client
import pytest
from grpclib.const import Status

from aether._wire import client, pb
from aether_hub.server import HubServer
from aether_hub.settings import AgentSpec, HubConfig
from tests.hubserver.hubkit import FakeClock, grpc_status, running_hub

SECRET = "right-secret-5xYq"
WRONG = "wrong-guess-Qz81"


@pytest.fixture
async def hub(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[HubServer, FakeClock]]:
    monkeypatch.setenv("THROTTLE_SECRET", SECRET)
    clock = FakeClock()
    config = HubConfig(
        port=0,
        register_free_failures=3,
        register_max_lockout_seconds=8,
        agents=(
            AgentSpec("victim", secret_env="THROTTLE_SECRET"),
            *(AgentSpec(f"other{i}", secret_env="THROTTLE_SECRET") for i in range(6)),
        ),
    )
    async with running_hub(config, clock=clock) as server:
        yield server, clock


async def test_wrong_secrets_lock_the_agent_id_with_a_growing_delay(
    hub: tuple[HubServer, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    server, clock = hub
    caplog.set_level(logging.INFO)
    channel = grpclib.client.Channel("127.0.0.1", server.port)
    try:
        stub = client.AgentServiceStub(channel)
        call = stub.register
        for _ in range(3):  # the free failures
            status, message = await grpc_status(
                call(pb.RegisterRequest(agent_id="victim", secret=WRONG))
            )
            assert status == Status.UNAUTHENTICATED
        # The 4th failure starts a 1 s lockout; the 5th call is refused unchecked.
        status, _ = await grpc_status(call(pb.RegisterRequest(agent_id="victim", secret=WRONG)))
        assert status == Status.UNAUTHENTICATED
        status, message = await grpc_status(
            call(pb.RegisterRequest(agent_id="victim", secret=SECRET))
        )
        assert status == Status.UNAVAILABLE
        assert "too many failed registrations for agent 'victim'" in message
        assert "retry in 1 s" in message
        # After the wait the next wrong secret doubles the lockout.
        clock.advance(1.5)
        status, _ = await grpc_status(call(pb.RegisterRequest(agent_id="victim", secret=WRONG)))
        assert status == Status.UNAUTHENTICATED
        status, message = await grpc_status(
            call(pb.RegisterRequest(agent_id="victim", secret=WRONG))
        )
        assert status == Status.UNAVAILABLE and "retry in 2 s" in message
        # The lockout is capped.
        for _ in range(5):
            clock.advance(100)
            await grpc_status(call(pb.RegisterRequest(agent_id="victim", secret=WRONG)))
        status, message = await grpc_status(
            call(pb.RegisterRequest(agent_id="victim", secret=SECRET))
        )
        assert status == Status.UNAVAILABLE and "retry in 8 s" in message
        # Once the lockout is over the right secret works and clears the count.
        clock.advance(9)
        reply = await call(pb.RegisterRequest(agent_id="victim", secret=SECRET))
        assert reply.success
    finally:
        channel.close()
    assert "victim" in caplog.text and "refused" in caplog.text
    assert WRONG not in caplog.text and SECRET not in caplog.text


async def test_failures_from_one_address_lock_that_address_for_every_agent_id(
    hub: tuple[HubServer, FakeClock],
) -> None:
    server, clock = hub
    channel = grpclib.client.Channel("127.0.0.1", server.port)
    try:
        stub = client.AgentServiceStub(channel)
        for i in range(4):  # one failure per id: no id is locked, the address is
            status, _ = await grpc_status(
                stub.register(pb.RegisterRequest(agent_id=f"other{i}", secret=WRONG))
            )
            assert status == Status.UNAUTHENTICATED
        status, message = await grpc_status(
            stub.register(pb.RegisterRequest(agent_id="other5", secret=SECRET))
        )
        assert status == Status.UNAVAILABLE
        assert "127.0.0.1" in message and "retry in" in message
        clock.advance(2)
        assert (await stub.register(pb.RegisterRequest(agent_id="other5", secret=SECRET))).success
    finally:
        channel.close()


async def test_unknown_agents_count_as_failures_too(hub: tuple[HubServer, FakeClock]) -> None:
    server, _ = hub
    channel = grpclib.client.Channel("127.0.0.1", server.port)
    try:
        stub = client.AgentServiceStub(channel)
        for _ in range(4):
            status, _ = await grpc_status(stub.register(pb.RegisterRequest(agent_id="ghost")))
            assert status == Status.UNAUTHENTICATED
        status, message = await grpc_status(stub.register(pb.RegisterRequest(agent_id="ghost")))
        assert status == Status.UNAVAILABLE and "retry in" in message
    finally:
        channel.close()
