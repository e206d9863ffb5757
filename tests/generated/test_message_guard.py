"""The generated runtime's guards: message-size limit and missing/undecodable requests.

Real grpclib server on 127.0.0.1; raw client streams craft what a stub never sends.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import grpclib.client
import grpclib.server
import pytest
from aether_api.grpc.reflection.v1 import client as reflection_client
from aether_api.grpc.reflection.v1 import messages as reflection_pb
from aether_api.grpc.reflection.v1 import server as reflection_server
from aether_api.runtime import DEFAULT_MAX_MESSAGE_BYTES, ServerContext
from aether_api.v1 import client, server
from aether_api.v1 import messages as pb
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

CHAT = "/aether.v1.LLMService/Chat"


class _LLM(server.LLMServiceBase):
    """Answers with `reply_size` bytes of text; counts handler invocations."""

    def __init__(self, reply_size: int = 10) -> None:
        self.calls = 0
        self.reply_size = reply_size

    async def chat(self, request: pb.ChatRequest, context: ServerContext) -> pb.ChatResponse:
        self.calls += 1
        return pb.ChatResponse(success=True, content="x" * self.reply_size)

    async def chat_stream(
        self, request: pb.ChatRequest, context: ServerContext
    ) -> AsyncIterator[pb.ChatChunk]:
        self.calls += 1
        yield pb.ChatChunk(delta="small")
        yield pb.ChatChunk(delta="y" * self.reply_size)


class _Reflection(reflection_server.ServerReflectionBase):
    """Bidirectional: answers each request with the host it named."""

    async def server_reflection_info(
        self, requests: AsyncIterator[reflection_pb.ServerReflectionRequest], context: ServerContext
    ) -> AsyncIterator[reflection_pb.ServerReflectionResponse]:
        async for request in requests:
            yield reflection_pb.ServerReflectionResponse(valid_host=request.host)


async def _serve(
    *services: server.LLMServiceBase | reflection_server.ServerReflectionBase,
) -> tuple[grpclib.server.Server, grpclib.client.Channel]:
    srv = grpclib.server.Server(list(services))
    await srv.start("127.0.0.1", 0)
    assert isinstance(srv._server, asyncio.Server)
    port = srv._server.sockets[0].getsockname()[1]
    return srv, grpclib.client.Channel("127.0.0.1", port)


@pytest.fixture
async def llm() -> AsyncIterator[tuple[_LLM, grpclib.client.Channel]]:
    service = _LLM()
    srv, chan = await _serve(service, _Reflection())
    try:
        yield service, chan
    finally:
        chan.close()
        srv.close()
        await srv.wait_closed()


def _raw(chan: grpclib.client.Channel) -> grpclib.client.Stream[pb.ChatRequest, pb.ChatResponse]:
    # STREAM_STREAM on our side only lifts grpclib's client-side checks; the server
    # still dispatches the unary Chat handler.
    return chan.request(
        CHAT, Cardinality.STREAM_STREAM, pb.ChatRequest, pb.ChatResponse, timeout=10
    )


def _prefix(size: int) -> bytes:
    return struct.pack(">?I", False, size)


async def test_default_limit_is_4_mib() -> None:
    assert DEFAULT_MAX_MESSAGE_BYTES == 4 * 1024 * 1024
    assert server.LLMServiceBase.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES


async def test_oversize_request_rejected_before_its_body_arrives(
    llm: tuple[_LLM, grpclib.client.Channel],
) -> None:
    service, chan = llm
    with pytest.raises(GRPCError) as info:
        async with _raw(chan) as stream:
            await stream.send_request()
            # Announce 1 GiB but send only 10 bytes: the server must answer from the prefix.
            await stream._stream.send_data(_prefix(1 << 30) + b"x" * 10)
            await stream.recv_initial_metadata()
    assert info.value.status is Status.RESOURCE_EXHAUSTED
    assert "exceeds the limit" in (info.value.message or "")
    assert service.calls == 0


async def test_request_over_instance_limit_rejected(
    llm: tuple[_LLM, grpclib.client.Channel],
) -> None:
    service, chan = llm
    service.max_message_bytes = 100
    stub = client.LLMServiceStub(chan)
    big = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="z" * 200)])
    with pytest.raises(GRPCError) as info:
        await stub.chat(big, timeout=10)
    assert info.value.status is Status.RESOURCE_EXHAUSTED
    assert service.calls == 0
    small = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="z")])
    assert (await stub.chat(small, timeout=10)).success
    assert service.calls == 1


async def test_undecodable_request_is_invalid_argument(
    llm: tuple[_LLM, grpclib.client.Channel],
) -> None:
    service, chan = llm
    garbage = b"\x12\x02\xff\xfe"  # field 2 (model, a string) holding invalid UTF-8
    with pytest.raises(GRPCError) as info:
        async with _raw(chan) as stream:
            await stream.send_request()
            await stream._stream.send_data(_prefix(len(garbage)) + garbage, end_stream=True)
            await stream.recv_initial_metadata()
    assert info.value.status is Status.INVALID_ARGUMENT
    assert "ChatRequest" in (info.value.message or "")
    assert service.calls == 0


async def test_missing_request_is_invalid_argument(
    llm: tuple[_LLM, grpclib.client.Channel],
) -> None:
    service, chan = llm
    with pytest.raises(GRPCError) as info:
        async with _raw(chan) as stream:
            await stream.send_request(end=True)
            await stream.recv_initial_metadata()
    assert info.value.status is Status.INVALID_ARGUMENT
    assert "missing request" in (info.value.message or "")
    assert service.calls == 0


async def test_client_refuses_oversize_reply(llm: tuple[_LLM, grpclib.client.Channel]) -> None:
    service, chan = llm
    service.reply_size = 1000
    stub = client.LLMServiceStub(chan, max_message_bytes=500)
    request = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="hi")])
    with pytest.raises(GRPCError) as info:
        await stub.chat(request, timeout=10)
    assert info.value.status is Status.RESOURCE_EXHAUSTED
    received: list[str] = []
    with pytest.raises(GRPCError) as info:
        async for chunk in stub.chat_stream(request, timeout=10):
            received.append(chunk.delta)
    assert info.value.status is Status.RESOURCE_EXHAUSTED
    assert received == ["small"]
    # The same stub with the default limit takes the reply.
    assert len((await client.LLMServiceStub(chan).chat(request, timeout=10)).content) == 1000


async def test_bidirectional_call_and_default_metadata(
    llm: tuple[_LLM, grpclib.client.Channel],
) -> None:
    _, chan = llm
    stub = reflection_client.ServerReflectionStub(chan, metadata={"x-a": "1"})
    requests = [
        reflection_pb.ServerReflectionRequest(host=f"h{i}", list_services="") for i in range(3)
    ]
    hosts = [r.valid_host async for r in stub.server_reflection_info(requests, timeout=10)]
    assert hosts == ["h0", "h1", "h2"]

    async def gen() -> AsyncIterator[reflection_pb.ServerReflectionRequest]:
        for i in range(2):
            yield reflection_pb.ServerReflectionRequest(host=f"a{i}")

    hosts = [r.valid_host async for r in stub.server_reflection_info(gen(), timeout=10)]
    assert hosts == ["a0", "a1"]


async def test_failing_request_iterator_surfaces_its_error(
    llm: tuple[_LLM, grpclib.client.Channel],
) -> None:
    _, chan = llm
    stub = reflection_client.ServerReflectionStub(chan)

    async def broken() -> AsyncIterator[reflection_pb.ServerReflectionRequest]:
        yield reflection_pb.ServerReflectionRequest(host="ok")
        raise RuntimeError("request source failed")

    with pytest.raises(RuntimeError, match="request source failed"):
        async for _ in stub.server_reflection_info(broken(), timeout=10):
            pass
