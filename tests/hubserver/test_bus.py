"""The message bus: subject rules, and the same behaviour in process and over real NATS."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import pytest

from aether_hub.bus import (
    BusClosedError,
    BusError,
    BusMessageData,
    InProcessBus,
    MessageBus,
    NoRespondersError,
    RequestTimeoutError,
    subject_error,
    subject_matches,
)
from aether_hub.nats_bus import NatsBus, _redact_url, create_bus
from tests.hubserver.nats_fixture import NatsServer, find_nats_server, nats_server, run_nats_server

__all__ = ("nats_server",)

WAIT = 10.0


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.b", "a.b.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.*", "a", False),
        ("*.b", "a.b", True),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c.d", True),
        ("a.>", "a", False),
        (">", "anything.at.all", True),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
        ("*.*", "a.b", True),
    ],
)
def test_subject_matching(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


@pytest.mark.parametrize(
    ("subject", "wildcards", "problem"),
    [
        ("", True, "empty"),
        ("a..b", True, "empty token"),
        (".a", True, "empty token"),
        ("a.", True, "empty token"),
        ("a b", True, "whitespace"),
        ("a.*", False, "wildcards"),
        ("a.>", False, "wildcards"),
        ("a.>.b", True, "last token"),
    ],
)
def test_subject_errors(subject: str, wildcards: bool, problem: str) -> None:
    error = subject_error(subject, wildcards=wildcards)
    assert error is not None
    assert problem in error


@pytest.mark.parametrize("subject", ["a", "a.b.c", "a.*", "a.*.>", ">", "x_y-z.1"])
def test_valid_patterns(subject: str) -> None:
    assert subject_error(subject, wildcards=True) is None


@pytest.fixture(params=["inproc", "nats"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[MessageBus]:
    if request.param == "inproc":
        made: MessageBus = await create_bus(None)
        assert isinstance(made, InProcessBus)
    else:
        server: NatsServer = request.getfixturevalue("nats_server")
        made = await create_bus(server.url)
        assert isinstance(made, NatsBus)
    yield made
    await made.close()


async def _next(messages: AsyncIterator[BusMessageData]) -> BusMessageData:
    return await asyncio.wait_for(anext(messages), WAIT)


async def test_publish_reaches_matching_subscribers_only(bus: MessageBus) -> None:
    async with (
        bus.subscribe("review.*") as star,
        bus.subscribe("review.>") as rest,
        bus.subscribe("other") as other,
    ):
        await bus.publish("review.completed", b"one", {"k": "v"})
        await bus.publish("review.deep.nested", b"two", {})
        await bus.publish("other", b"three", {})

        got = await _next(star)
        assert (got.subject, got.payload, dict(got.headers)) == (
            "review.completed",
            b"one",
            {"k": "v"},
        )
        assert [(await _next(rest)).payload for _ in range(2)] == [b"one", b"two"]
        assert (await _next(other)).payload == b"three"
        # `review.*` must not have seen the three-token subject: the next thing it
        # gets is a message published after it.
        await bus.publish("review.later", b"four", {})
        assert (await _next(star)).payload == b"four"


async def test_reply_to_is_carried(bus: MessageBus) -> None:
    async with bus.subscribe("jobs") as messages:
        await bus.publish("jobs", b"x", {}, reply_to="answers.here")
        assert (await _next(messages)).reply_to == "answers.here"


async def test_queue_group_delivers_each_message_once(bus: MessageBus) -> None:
    received: dict[str, list[bytes]] = {"a": [], "b": [], "all": []}
    total = 20
    done = asyncio.Event()

    async def collect(name: str, messages: AsyncIterator[BusMessageData]) -> None:
        async for message in messages:
            received[name].append(message.payload)
            if len(received["a"]) + len(received["b"]) == total and len(received["all"]) == total:
                done.set()

    async with (
        bus.subscribe("work.item", "workers") as a,
        bus.subscribe("work.item", "workers") as b,
        bus.subscribe("work.item") as everyone,
    ):
        tasks = [
            asyncio.create_task(collect("a", a)),
            asyncio.create_task(collect("b", b)),
            asyncio.create_task(collect("all", everyone)),
        ]
        for i in range(total):
            await bus.publish("work.item", str(i).encode(), {})
        await asyncio.wait_for(done.wait(), WAIT)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    expected = sorted(str(i).encode() for i in range(total))
    assert sorted(received["a"] + received["b"]) == expected
    assert sorted(received["all"]) == expected
    if isinstance(bus, InProcessBus):
        # In process the group is served round robin.
        assert len(received["a"]) == len(received["b"]) == total // 2


async def test_request_gets_first_reply(bus: MessageBus) -> None:
    async with bus.subscribe("math.double") as requests:

        async def responder() -> None:
            message = await anext(requests)
            value = int(message.payload)
            await bus.publish(message.reply_to, str(value * 2).encode(), {"answered": "yes"})

        task = asyncio.create_task(responder())
        reply = await bus.request("math.double", b"21", {}, timeout=WAIT)
        await task
    assert reply.payload == b"42"
    assert reply.headers.get("answered") == "yes"


async def test_request_without_responders(bus: MessageBus) -> None:
    with pytest.raises(NoRespondersError, match=re.escape("no responders on subject nobody.home")):
        await bus.request("nobody.home", b"", {}, timeout=WAIT)


async def test_request_timeout(bus: MessageBus) -> None:
    async with bus.subscribe("slow.service"):
        with pytest.raises(
            RequestTimeoutError,
            match=re.escape("timed out after 200 ms waiting for a reply on slow.service"),
        ):
            await bus.request("slow.service", b"", {}, timeout=0.2)


async def test_close_ends_subscriptions(bus: MessageBus) -> None:
    async with bus.subscribe("a.b") as messages:
        reader = asyncio.create_task(_next(messages))
        await asyncio.sleep(0)
        await bus.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(reader, WAIT)


async def test_closed_inprocess_bus_refuses_calls() -> None:
    bus = InProcessBus()
    await bus.close()
    with pytest.raises(BusClosedError):
        await bus.publish("a", b"", {})
    with pytest.raises(BusClosedError):
        async with bus.subscribe("a"):
            pass


async def test_leaving_the_context_unsubscribes() -> None:
    bus = InProcessBus()
    async with bus.subscribe("a"):
        assert bus.subscription_count == 1
    assert bus.subscription_count == 0
    with pytest.raises(NoRespondersError):
        await bus.request("a", b"", {}, timeout=WAIT)


async def test_slow_consumer_drops_instead_of_growing() -> None:
    bus = InProcessBus(pending_limit=3)
    async with bus.subscribe("a") as messages:
        for i in range(5):
            await bus.publish("a", str(i).encode(), {})
        got = [(await _next(messages)).payload for _ in range(3)]
        assert got == [b"0", b"1", b"2"]
        await bus.publish("a", b"fresh", {})
        assert (await _next(messages)).payload == b"fresh"


async def test_nats_connect_failure_names_the_url() -> None:
    # A port nothing listens on (bound, then closed) refuses at once.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BusError, match=f"cannot connect to NATS at nats://127.0.0.1:{port}"):
        await NatsBus.connect(f"nats://user:hunter2@127.0.0.1:{port}", connect_timeout=1)


def test_urls_are_shown_without_credentials() -> None:
    assert _redact_url("nats://user:hunter2@host:4222") == "nats://host:4222"
    assert _redact_url("tls://token@host") == "tls://host"
    assert _redact_url("host:4222") == "host:4222"


async def test_nats_bus_repr_hides_credentials(nats_server: NatsServer) -> None:
    bus = await NatsBus.connect(f"nats://someone:hunter2@{nats_server.host}:{nats_server.port}")
    try:
        assert "hunter2" not in repr(bus)
        assert f"127.0.0.1:{nats_server.port}" in repr(bus)
    finally:
        await bus.close()


async def test_two_hubs_share_messages_through_nats(nats_server: NatsServer) -> None:
    # Each Hub process has its own NatsBus; NATS carries messages between them.
    first = await create_bus(nats_server.url)
    second = await create_bus(nats_server.url)
    try:
        async with second.subscribe("review.*") as messages, second.subscribe("math.add") as calls:

            async def responder() -> None:
                call = await anext(calls)
                await second.publish(call.reply_to, b"3", {})

            task = asyncio.create_task(responder())
            await first.publish("review.completed", b"from the first hub", {"hub": "1"})
            got = await _next(messages)
            assert (got.payload, dict(got.headers)) == (b"from the first hub", {"hub": "1"})
            reply = await first.request("math.add", b"1+2", {}, timeout=WAIT)
            await task
            assert reply.payload == b"3"
    finally:
        await first.close()
        await second.close()


async def test_nats_bus_survives_a_server_restart() -> None:
    binary = find_nats_server()
    assert binary is not None
    with run_nats_server(binary) as server:
        bus = await create_bus(server.url)
        port = server.port
    try:
        # The server is gone: calls fail softly instead of raising transport errors.
        await bus.publish("still.here", b"buffered", {})
        with pytest.raises(BusError):
            await bus.request("still.here", b"", {}, timeout=0.2)
        with run_nats_server(binary, port=port):
            async with bus.subscribe("back.online") as messages:

                async def until_delivered() -> BusMessageData:
                    while True:
                        await bus.publish("back.online", b"hello again", {})
                        with contextlib.suppress(asyncio.TimeoutError):
                            return await asyncio.wait_for(anext(messages), 0.2)

                got = await asyncio.wait_for(until_delivered(), WAIT * 2)
                assert got.payload == b"hello again"
            await bus.close()
    finally:
        await bus.close()
