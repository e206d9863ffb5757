"""MessagingService over a real grpclib server, on the in-process bus and on real NATS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether._wire import client, pb
from aether_hub.bus import InProcessBus, MessageBus
from aether_hub.db import Database
from aether_hub.messaging_service import MessagingService
from aether_hub.nats_bus import create_bus
from aether_hub.permissions import SubjectPolicy
from aether_hub.sessions import SessionRegistry
from tests.hubserver.nats_fixture import NatsServer, nats_server
from tests.hubserver.service_harness import ServiceHarness, bearer, serve_services

__all__ = ("nats_server",)

WAIT = 10.0
PROBE = "x-test-probe"


class Hub:
    def __init__(self, harness: ServiceHarness, bus: MessageBus) -> None:
        self.harness = harness
        self.bus = bus
        self.stub = client.MessagingServiceStub(harness.channel)


@pytest.fixture(params=["inproc", "nats"])
async def hub(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Hub]:
    if request.param == "inproc":
        bus = await create_bus(None)
    else:
        server: NatsServer = request.getfixturevalue("nats_server")
        bus = await create_bus(server.url)

    def make(db: Database, sessions: SessionRegistry) -> list[MessagingService]:
        # Bus semantics on any subject: every subject is shared here (the permission
        # rules have their own tests in test_security_subjects.py).
        return [MessagingService(bus, sessions, SubjectPolicy((">",)))]

    try:
        async with serve_services(tmp_path, make) as harness:
            yield Hub(harness, bus)
    finally:
        await bus.close()


class Subscriber:
    """A gRPC Subscribe call read by a background task into a queue."""

    def __init__(self, hub: Hub, auth: dict[str, str], subject: str, queue_group: str = ""):
        self._hub = hub
        self._auth = auth
        self._request = pb.SubscribeRequest(subject=subject, queue_group=queue_group)
        self.messages: asyncio.Queue[pb.BusMessage] = asyncio.Queue()
        self.failure: BaseException | None = None
        self._probe_seen = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        try:
            async for message in self._hub.stub.subscribe(self._request, metadata=self._auth):
                if PROBE in message.headers:
                    self._probe_seen.set()
                else:
                    self.messages.put_nowait(message)
        except GRPCError as exc:
            self.failure = exc
            self._probe_seen.set()

    async def start(self, probe_subject: str) -> None:
        """Start reading; return once a probe on `probe_subject` came through."""
        self._task = asyncio.create_task(self._read())

        async def probe() -> None:
            while not self._probe_seen.is_set():
                await self._hub.stub.publish(
                    pb.PublishRequest(subject=probe_subject, headers={PROBE: "1"}),
                    metadata=self._auth,
                )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._probe_seen.wait(), 0.05)

        await asyncio.wait_for(probe(), WAIT)

    async def next(self) -> pb.BusMessage:
        return await asyncio.wait_for(self.messages.get(), WAIT)

    async def cancel(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def test_publish_reaches_python_subscribers_of_the_bus(hub: Hub) -> None:
    auth = hub.harness.login("publisher")
    async with hub.bus.subscribe("review.*") as messages:
        reply = await hub.stub.publish(
            pb.PublishRequest(
                subject="review.completed",
                payload=b'{"task_id": "1"}',
                headers={"k": "v"},
                reply_to="answers.1",
            ),
            metadata=auth,
        )
        assert reply.success and reply.error_message == ""
        got = await asyncio.wait_for(anext(messages), WAIT)
    assert got.subject == "review.completed"
    assert got.payload == b'{"task_id": "1"}'
    assert dict(got.headers) == {"k": "v"}
    assert got.reply_to == "answers.1"


async def test_subscribe_streams_matching_messages(hub: Hub) -> None:
    listener = Subscriber(hub, hub.harness.login("listener"), "agent.>")
    await listener.start("agent.probe")
    publisher = hub.harness.login("publisher")
    for subject in ["agent.status", "other.status", "agent.x.y"]:
        await hub.stub.publish(
            pb.PublishRequest(subject=subject, payload=subject.encode()), metadata=publisher
        )
    first = await listener.next()
    second = await listener.next()
    assert [(first.subject, first.payload), (second.subject, second.payload)] == [
        ("agent.status", b"agent.status"),
        ("agent.x.y", b"agent.x.y"),
    ]
    assert listener.messages.empty()
    await listener.cancel()


async def test_request_reply_between_two_agents(hub: Hub) -> None:
    responder_auth = hub.harness.login("responder")
    responder = Subscriber(hub, responder_auth, "math.double")
    await responder.start("math.double")

    async def serve_one() -> None:
        message = await responder.next()
        await hub.stub.publish(
            pb.PublishRequest(
                subject=message.reply_to,
                payload=str(int(message.payload) * 2).encode(),
                headers={"served-by": "responder"},
            ),
            metadata=responder_auth,
        )

    serving = asyncio.create_task(serve_one())
    reply = await hub.stub.request(
        pb.RequestRequest(subject="math.double", payload=b"21", timeout_ms=int(WAIT * 1000)),
        metadata=hub.harness.login("asker"),
    )
    await serving
    await responder.cancel()
    assert reply.success, reply.error_message
    assert reply.payload == b"42"
    assert reply.headers == {"served-by": "responder"}


async def test_request_without_responders(hub: Hub) -> None:
    reply = await hub.stub.request(
        pb.RequestRequest(subject="nobody.home", payload=b"?"),
        metadata=hub.harness.login(),
    )
    assert not reply.success
    assert reply.error_message == "no responders on subject nobody.home"


async def test_request_timeout(hub: Hub) -> None:
    silent = Subscriber(hub, hub.harness.login("silent"), "slow.service")
    await silent.start("slow.service")
    reply = await hub.stub.request(
        pb.RequestRequest(subject="slow.service", timeout_ms=200),
        metadata=hub.harness.login("asker"),
    )
    await silent.cancel()
    assert not reply.success
    assert reply.error_message == "timed out after 200 ms waiting for a reply on slow.service"


async def test_cancelling_subscribe_removes_the_subscription(hub: Hub) -> None:
    auth = hub.harness.login()
    listener = Subscriber(hub, auth, "jobs.new")
    await listener.start("jobs.new")
    await listener.cancel()

    async def until_no_responders() -> None:
        while True:
            reply = await hub.stub.request(
                pb.RequestRequest(subject="jobs.new", timeout_ms=100), metadata=auth
            )
            if reply.error_message == "no responders on subject jobs.new":
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(until_no_responders(), WAIT)
    if isinstance(hub.bus, InProcessBus):
        assert hub.bus.subscription_count == 0


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.PublishRequest(subject=""), "subject: must not be empty"),
        (pb.PublishRequest(subject="a.*"), "subject: 'a.*' must not contain wildcards"),
        (pb.PublishRequest(subject="a.>"), "subject: 'a.>' must not contain wildcards"),
        (pb.PublishRequest(subject="a..b"), "subject: 'a..b' has an empty token"),
        (pb.PublishRequest(subject="a b"), "subject: 'a b' must not contain whitespace"),
        (pb.PublishRequest(subject="a", reply_to="r.*"), "reply_to: 'r.*' must not contain"),
        (pb.RequestRequest(subject="a.*"), "subject: 'a.*' must not contain wildcards"),
        (pb.RequestRequest(subject="a", timeout_ms=-5), "timeout_ms: must be 0"),
        (pb.PublishRequest(subject="a", headers={"a b": "x"}), "headers: header name 'a b'"),
        (pb.PublishRequest(subject="a", headers={"": "x"}), "headers: a header name must not"),
        (
            pb.RequestRequest(subject="a", headers={"k": "x\r\nPUB evil 0"}),
            "headers: the value of header 'k' must not contain line breaks",
        ),
        (pb.SubscribeRequest(subject=""), "subject: must not be empty"),
        (pb.SubscribeRequest(subject="a.>.b"), "subject: 'a.>.b': '>' is only allowed"),
        (pb.SubscribeRequest(subject="a", queue_group="x y"), "queue_group: 'x y' must not"),
    ],
)
async def test_malformed_requests_are_invalid_argument_naming_the_field(
    hub: Hub, request_: pb.PublishRequest | pb.RequestRequest | pb.SubscribeRequest, message: str
) -> None:
    auth = hub.harness.login()
    with pytest.raises(GRPCError) as caught:
        if isinstance(request_, pb.PublishRequest):
            await hub.stub.publish(request_, metadata=auth)
        elif isinstance(request_, pb.RequestRequest):
            await hub.stub.request(request_, metadata=auth)
        else:
            async for _ in hub.stub.subscribe(request_, metadata=auth):
                pass
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.message is not None and caught.value.message.startswith(message)


async def test_calls_without_a_session_are_unauthenticated(hub: Hub) -> None:
    async with hub.bus.subscribe("a") as messages:
        for metadata in (None, bearer("stale")):
            with pytest.raises(GRPCError) as caught:
                await hub.stub.publish(pb.PublishRequest(subject="a"), metadata=metadata)
            assert caught.value.status is Status.UNAUTHENTICATED
            with pytest.raises(GRPCError) as caught:
                await hub.stub.request(pb.RequestRequest(subject="a"), metadata=metadata)
            assert caught.value.status is Status.UNAUTHENTICATED
            with pytest.raises(GRPCError) as caught:
                async for _ in hub.stub.subscribe(
                    pb.SubscribeRequest(subject="a"), metadata=metadata
                ):
                    pass
            assert caught.value.status is Status.UNAUTHENTICATED
        # Nothing reached the bus: the next message there is the one published now.
        await hub.bus.publish("a", b"after", {})
        assert (await asyncio.wait_for(anext(messages), WAIT)).payload == b"after"


async def test_publish_on_a_closed_bus_is_reported_not_raised(tmp_path: Path) -> None:
    bus = InProcessBus()

    def make(db: Database, sessions: SessionRegistry) -> list[MessagingService]:
        # Bus semantics on any subject: every subject is shared here (the permission
        # rules have their own tests in test_security_subjects.py).
        return [MessagingService(bus, sessions, SubjectPolicy((">",)))]

    async with serve_services(tmp_path, make) as harness:
        await bus.close()
        stub = client.MessagingServiceStub(harness.channel)
        reply = await stub.publish(pb.PublishRequest(subject="a"), metadata=harness.login())
        assert not reply.success
        assert reply.error_message == "the message bus is closed"
