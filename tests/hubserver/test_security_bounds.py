"""Bounds on what one client can consume (issue 11): connections (count, idle time),
ListTasks pages (never over the message limit, payloads only when asked), per-agent memory
quota, subscriber backlog in bytes. Each bound is hit, and the Hub still serves others.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import grpclib.client
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether._wire import client, pb
from aether_hub.bus import InProcessBus, SlowConsumerError, Subscription
from aether_hub.server import HubServer
from aether_hub.settings import HubConfig
from tests.hubserver.hubkit import AgentConn, grpc_status, running_hub

WAIT = 10.0


def _raw_connection(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.settimeout(WAIT)
    return sock


async def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the Hub closed `sock` (reads until EOF; the Hub's HTTP/2 preface may come
    first)."""

    def read() -> bool:
        try:
            while chunk := sock.recv(65536):
                del chunk
        except (ConnectionResetError, TimeoutError, OSError):
            return True
        return True

    return await asyncio.to_thread(read)


async def test_connections_past_the_limit_are_closed_and_others_still_served() -> None:
    async with running_hub(HubConfig(port=0, dev=True, max_connections=3)) as hub:
        held = [_raw_connection(hub.port) for _ in range(3)]
        try:
            while hub._server is not None and hub._server.limits.open < 3:  # type: ignore[union-attr]
                await asyncio.sleep(0.01)
            extra = _raw_connection(hub.port)
            assert await _closed_by_peer(extra)
            extra.close()
            assert hub._server.limits.refused >= 1  # type: ignore[union-attr]
        finally:
            held.pop().close()
        # One place is free again: a real client is served.
        while hub._server.limits.open >= 3:  # type: ignore[union-attr]
            await asyncio.sleep(0.01)
        channel = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            stub = client.TaskServiceStub(channel)
            assert (await stub.list_tasks(pb.ListTasksRequest())).tasks == []
        finally:
            channel.close()
            for sock in held:
                sock.close()


async def test_idle_connections_are_closed_but_busy_ones_are_kept() -> None:
    async with running_hub(HubConfig(port=0, dev=True, idle_timeout_seconds=0.3)) as hub:
        idle = _raw_connection(hub.port)
        channel = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            # An agent's task stream keeps its connection busy past the idle timeout.
            agent = await AgentConn.register(channel, "worker", task_types="job")
            agent.open_stream()
            assert await _closed_by_peer(idle)
            assert hub._server is not None and hub._server.limits is not None
            assert hub._server.limits.idle_closed >= 1
            tasks = client.TaskServiceStub(channel)
            task_id = (await tasks.submit_task(pb.SubmitTaskRequest(task_type="job"))).task_id
            assert (await agent.next_assignment()).task_id == task_id
            await agent.close_stream()
        finally:
            idle.close()
            channel.close()


async def test_list_tasks_pages_stay_under_the_message_limit() -> None:
    limit = 64 * 1024
    config = HubConfig(port=0, dev=True, max_message_bytes=limit)
    async with running_hub(config) as hub:
        channel = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            stub = client.TaskServiceStub(channel)
            payload = b"p" * (limit - 2048)
            ids = [
                (await stub.submit_task(pb.SubmitTaskRequest(payload=payload))).task_id
                for _ in range(6)
            ]
            # Without include_payloads: one small page, payloads left out.
            page = await stub.list_tasks(pb.ListTasksRequest())
            assert {t.task_id for t in page.tasks} == set(ids)
            assert all(t.payload == b"" for t in page.tasks)
            assert len(bytes(page)) < limit
            # With them: pages end early, each under the limit, and every task comes once.
            seen: list[str] = []
            token = ""
            while True:
                page = await stub.list_tasks(
                    pb.ListTasksRequest(include_payloads=True, page_token=token)
                )
                assert len(bytes(page)) <= limit
                assert all(t.payload == payload for t in page.tasks)
                seen += [t.task_id for t in page.tasks]
                token = page.next_page_token
                if not token:
                    break
            assert sorted(seen) == sorted(ids) and len(seen) == len(ids)
        finally:
            channel.close()


async def test_a_task_too_large_for_a_page_comes_without_its_payloads() -> None:
    limit = 64 * 1024
    config = HubConfig(port=0, dev=True, max_message_bytes=limit)
    async with running_hub(config) as hub:
        channel = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            tasks = client.TaskServiceStub(channel)
            agent = await AgentConn.register(channel, "big")
            agent.open_stream()
            task_id = (
                await tasks.submit_task(pb.SubmitTaskRequest(payload=b"p" * (limit - 2048)))
            ).task_id
            assert (await agent.next_assignment()).task_id == task_id
            await agent.result(task_id, result=b"r" * (limit - 2048))
            page = await tasks.list_tasks(pb.ListTasksRequest(include_payloads=True))
            (task,) = page.tasks
            assert task.task_id == task_id and task.payload == b"" and task.result == b""
            await agent.close_stream()
        finally:
            channel.close()


@pytest.fixture
async def quota_hub() -> AsyncIterator[HubServer]:
    config = HubConfig(port=0, dev=True, memory_quota_keys=3, memory_quota_bytes=200)
    async with running_hub(config) as hub:
        yield hub


async def test_memory_quota_in_keys_and_bytes(quota_hub: HubServer) -> None:
    channel = grpclib.client.Channel("127.0.0.1", quota_hub.port)
    try:
        memory = client.MemoryServiceStub(channel)
        hog = await AgentConn.register(channel, "hog")
        other = await AgentConn.register(channel, "other")

        async def store(agent: AgentConn, key: str, value: str) -> pb.StoreResponse:
            return await memory.store(
                pb.StoreRequest(key=key, value_json=value), metadata=agent.metadata
            )

        for key in ("a", "b", "c"):
            assert (await store(hog, key, "1")).success
        status, message = await grpc_status(store(hog, "d", "1"))
        assert status == Status.RESOURCE_EXHAUSTED
        assert "agent 'hog'" in message and "4 keys" in message and "limit is 3" in message
        assert (await store(hog, "a", "2")).success  # replacing a key adds none
        status, message = await grpc_status(store(hog, "b", '"' + "x" * 300 + '"'))
        assert status == Status.RESOURCE_EXHAUSTED and "bytes" in message
        # Deleting makes room; other agents have their own quota.
        await memory.delete(pb.DeleteRequest(key="c"), metadata=hog.metadata)
        assert (await store(hog, "d", "1")).success
        assert (await store(other, "a", "1")).success
    finally:
        channel.close()


def test_a_subscription_past_its_byte_limit_ends_with_slow_consumer() -> None:
    sub = Subscription("s.>", pending_bytes_limit=100)
    from aether_hub.bus import BusMessageData

    sub.offer(BusMessageData("s.a", b"x" * 60))
    assert sub.pending_bytes > 0
    sub.offer(BusMessageData("s.a", b"x" * 60))
    assert isinstance(sub.failure, SlowConsumerError)


async def test_a_slow_subscriber_is_cut_off_and_others_keep_receiving() -> None:
    config = HubConfig(port=0, dev=True, subscriber_max_pending_bytes=256 * 1024)
    async with running_hub(config) as hub:
        channel = grpclib.client.Channel("127.0.0.1", hub.port)
        slow_channel = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            stub = client.MessagingServiceStub(channel)
            slow_stub = client.MessagingServiceStub(slow_channel)
            publisher = await AgentConn.register(channel, "publisher")
            slow = await AgentConn.register(channel, "slow")
            fast = await AgentConn.register(channel, "fast")
            bus = hub.bus
            assert isinstance(bus, InProcessBus)
            # The slow subscriber reads one message and then stops reading.
            slow_call = slow_stub.subscribe(
                pb.SubscribeRequest(subject="events.>"), metadata=slow.metadata
            )
            slow_iter = slow_call.__aiter__()
            received: asyncio.Queue[pb.BusMessage] = asyncio.Queue()

            async def read_fast() -> None:
                async for message in stub.subscribe(
                    pb.SubscribeRequest(subject="events.>"), metadata=fast.metadata
                ):
                    received.put_nowait(message)

            fast_reader = asyncio.create_task(read_fast())
            first: asyncio.Future[object] = asyncio.ensure_future(slow_iter.__anext__())
            while bus.subscription_count < 2:
                await asyncio.sleep(0.01)
            chunk = b"z" * (32 * 1024)
            sent = 0
            failure: BaseException | None = None
            # Publish until the slow subscriber is cut off (its HTTP/2 window fills, then
            # its backlog at the Hub passes the byte limit).
            while failure is None and sent < 2000:
                await stub.publish(
                    pb.PublishRequest(subject="events.load", payload=chunk),
                    metadata=publisher.metadata,
                )
                sent += 1
                await asyncio.wait_for(received.get(), WAIT)  # the fast one keeps up
                if first.done():
                    first = asyncio.ensure_future(asyncio.sleep(3600))  # read no more
                slow_subs = [s for s in bus._subscriptions if s.failure is not None]
                if slow_subs:
                    failure = slow_subs[0].failure
            first.cancel()
            assert isinstance(failure, SlowConsumerError)
            # The slow call ends with RESOURCE_EXHAUSTED naming the cause.
            with pytest.raises(GRPCError) as caught:
                async with contextlib.aclosing(slow_iter) as it:  # type: ignore[type-var]
                    while True:
                        await asyncio.wait_for(it.__anext__(), WAIT)
            assert caught.value.status == Status.RESOURCE_EXHAUSTED
            assert "--subscriber-max-bytes" in (caught.value.message or "")
            # The fast subscriber still receives.
            await stub.publish(
                pb.PublishRequest(subject="events.after", payload=b"ok"),
                metadata=publisher.metadata,
            )
            while (await asyncio.wait_for(received.get(), WAIT)).subject != "events.after":
                pass
            fast_reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, GRPCError):
                await fast_reader
        finally:
            channel.close()
            slow_channel.close()
