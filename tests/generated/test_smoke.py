"""Loopback smoke test of the committed `aether_api`: a generated server base and stub talk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpclib.client
import grpclib.server
import pytest
from aether_api.runtime import ServerContext
from aether_api.v1 import client, server
from aether_api.v1 import messages as pb


class _EchoLLM(server.LLMServiceBase):
    """Answers with the last message reversed; streams it word by word."""

    def __init__(self) -> None:
        self.seen_tokens: list[str | None] = []
        self.seen_extra: list[list[str | bytes]] = []

    async def chat(self, request: pb.ChatRequest, context: ServerContext) -> pb.ChatResponse:
        self.seen_tokens.append(context.bearer_token)
        self.seen_extra.append(context.metadata.getall("x-extra", []))
        assert context.method == "/aether.v1.LLMService/Chat"
        text = request.messages[-1].content
        return pb.ChatResponse(
            success=True,
            content=text[::-1],
            model=request.model or "echo",
            usage=pb.Usage(prompt_tokens=len(text), completion_tokens=len(text)),
        )

    async def chat_stream(
        self, request: pb.ChatRequest, context: ServerContext
    ) -> AsyncIterator[pb.ChatChunk]:
        words = request.messages[-1].content.split()
        for word in words:
            yield pb.ChatChunk(delta=word, model="echo")
        yield pb.ChatChunk(finish_reason="stop", usage=pb.Usage(total_tokens=len(words)))


@pytest.fixture
async def channel() -> AsyncIterator[tuple[grpclib.client.Channel, _EchoLLM]]:
    service = _EchoLLM()
    srv = grpclib.server.Server([service])
    await srv.start("127.0.0.1", 0)
    assert isinstance(srv._server, asyncio.Server)
    port = srv._server.sockets[0].getsockname()[1]
    chan = grpclib.client.Channel("127.0.0.1", port)
    try:
        yield chan, service
    finally:
        chan.close()
        srv.close()
        await srv.wait_closed()


async def test_unary_call(channel: tuple[grpclib.client.Channel, _EchoLLM]) -> None:
    chan, service = channel
    stub = client.LLMServiceStub(chan, metadata={"authorization": "Bearer tok-1"})
    request = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="hello")])
    reply = await stub.chat(request, timeout=10)
    assert reply.success
    assert reply.content == "olleh"
    assert reply.model == "echo"
    assert reply.usage is not None and reply.usage.prompt_tokens == 5
    assert service.seen_tokens == ["tok-1"]


async def test_server_streaming_call(channel: tuple[grpclib.client.Channel, _EchoLLM]) -> None:
    chan, _ = channel
    stub = client.LLMServiceStub(chan)
    request = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="a b c")])
    chunks = [chunk async for chunk in stub.chat_stream(request, timeout=10)]
    assert [c.delta for c in chunks] == ["a", "b", "c", ""]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage == pb.Usage(total_tokens=3)


async def test_call_metadata_replaces_stub_metadata_per_key(
    channel: tuple[grpclib.client.Channel, _EchoLLM],
) -> None:
    chan, service = channel
    stub = client.LLMServiceStub(
        chan, metadata={"authorization": "Bearer stub", "x-extra": "from-stub"}
    )
    request = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="x")])
    await stub.chat(request, timeout=10)
    await stub.chat(request, timeout=10, metadata={"authorization": "Bearer call"})
    await stub.chat(request, timeout=10, metadata=[("x-extra", "a"), ("x-extra", "b")])
    assert service.seen_tokens == ["stub", "call", "stub"]
    assert service.seen_extra == [["from-stub"], ["from-stub"], ["a", "b"]]
