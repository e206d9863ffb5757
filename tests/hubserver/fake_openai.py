"""A tiny OpenAI-compatible HTTP/1.1 server on 127.0.0.1 for the LLM provider tests.

Each test says how the server answers by setting ``server.respond``: a coroutine
function from the recorded :class:`SeenRequest` to a :class:`Reply`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

__all__ = ("FakeOpenAI", "Reply", "SeenRequest", "completion_json", "run_fake_openai", "sse")


@dataclass(frozen=True)
class SeenRequest:
    """A request the fake server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        parsed = json.loads(self.body)
        assert isinstance(parsed, dict)
        return parsed


@dataclass
class Reply:
    """What to answer: a status and a body, or SSE events written one by one."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    events: Sequence[bytes] = ()
    #: Wait for this before answering (a test sets it to simulate a stuck upstream).
    hold: asyncio.Event | None = None


def completion_json(
    content: str, *, model: str = "upstream-model", finish_reason: str = "stop"
) -> bytes:
    """An OpenAI chat.completion body."""
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }
    ).encode()


def sse(event: object) -> bytes:
    """One server-sent event carrying `event` as JSON (or a raw string)."""
    data = event if isinstance(event, str) else json.dumps(event)
    return f"data: {data}\n\n".encode()


@dataclass
class FakeOpenAI:
    """The running server: where it is and what it saw."""

    port: int
    respond: Callable[[SeenRequest], Awaitable[Reply]]
    seen: list[SeenRequest] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


_REASONS = {200: "OK", 401: "Unauthorized", 429: "Too Many Requests", 500: "Server Error"}


async def _default(request: SeenRequest) -> Reply:
    return Reply(body=completion_json("hello"))


@contextlib.asynccontextmanager
async def run_fake_openai() -> AsyncIterator[FakeOpenAI]:
    """Serve until the context ends."""
    writers: set[asyncio.StreamWriter] = set()
    handlers: set[asyncio.Task[None]] = set()
    fake = FakeOpenAI(port=0, respond=_default)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            seen = SeenRequest(method, path, headers, body)
            fake.seen.append(seen)
            reply = await fake.respond(seen)
            if reply.hold is not None:
                await reply.hold.wait()
            reason = _REASONS.get(reply.status, "Status")
            if reply.events:
                writer.write(
                    f"HTTP/1.1 {reply.status} {reason}\r\ncontent-type: text/event-stream\r\n"
                    "connection: close\r\n\r\n".encode()
                )
                for event in reply.events:
                    writer.write(event)
                    await writer.drain()
            else:
                writer.write(
                    f"HTTP/1.1 {reply.status} {reason}\r\ncontent-type: {reply.content_type}\r\n"
                    f"content-length: {len(reply.body)}\r\nconnection: close\r\n\r\n".encode()
                    + reply.body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writers.discard(writer)
            if task is not None:
                handlers.discard(task)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    fake.port = int(server.sockets[0].getsockname()[1])
    try:
        yield fake
    finally:
        server.close()
        for handler in list(handlers):
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for writer in list(writers):
            writer.close()
        await server.wait_closed()
