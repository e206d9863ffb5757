"""LLMService over a real grpclib server: echo, trust policy, validation, and the openai
provider against a fake OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether._wire import client, pb
from aether_hub.db import Database
from aether_hub.llm_providers import (
    ChatTurn,
    Completion,
    CompletionRequest,
    EchoProvider,
    LLMProvider,
    OpenAIProvider,
    count_tokens,
    make_llm_provider,
)
from aether_hub.llm_service import DEFAULT_MODEL, LLMService, ModelPolicy
from aether_hub.sessions import SessionRegistry
from tests.hubserver.fake_openai import (
    FakeOpenAI,
    Reply,
    SeenRequest,
    completion_json,
    run_fake_openai,
    sse,
)
from tests.hubserver.service_harness import ServiceHarness, bearer, serve_services

SECRET = "sk-test-Very-Secret-4242"

POLICY = ModelPolicy(
    default_model="cheap-model", standard_models=frozenset({"cheap-model", "good-model"})
)


class Hub:
    def __init__(self, harness: ServiceHarness, provider: LLMProvider) -> None:
        self.harness = harness
        self.provider = provider
        self.stub = client.LLMServiceStub(harness.channel)

    def login(self, trust: pb.TrustLevel = pb.TrustLevel.STANDARD) -> dict[str, str]:
        return self.harness.login("llm-agent", trust)


def _serve(
    tmp_path: Path, provider: LLMProvider
) -> contextlib.AbstractAsyncContextManager[ServiceHarness]:
    def make(db: Database, sessions: SessionRegistry) -> list[LLMService]:
        return [LLMService(sessions, provider, POLICY)]

    return serve_services(tmp_path, make)


@pytest.fixture
async def echo_hub(tmp_path: Path) -> AsyncIterator[Hub]:
    provider = EchoProvider()
    async with _serve(tmp_path, provider) as harness:
        yield Hub(harness, provider)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


@pytest.fixture
async def openai_hub(
    tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Hub]:
    monkeypatch.setenv("FAKE_OPENAI_KEY", SECRET)
    provider = make_llm_provider(
        "openai", base_url=fake.base_url, api_key_env="FAKE_OPENAI_KEY", timeout=5
    )
    try:
        async with _serve(tmp_path, provider) as harness:
            yield Hub(harness, provider)
    finally:
        await provider.aclose()


def chat(text: str, **fields: object) -> pb.ChatRequest:
    return pb.ChatRequest(
        messages=[
            pb.ChatMessage(role="system", content="You are terse."),
            pb.ChatMessage(role="user", content=text),
        ],
        **fields,  # type: ignore[arg-type]  # tests pass the ChatRequest fields by name
    )


async def collect(stream: AsyncIterator[pb.ChatChunk]) -> list[pb.ChatChunk]:
    return [chunk async for chunk in stream]


# -- echo -------------------------------------------------------------------------------


def test_token_counting_is_words_and_punctuation() -> None:
    assert count_tokens("") == 0
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("  spaced   out  ") == 2
    assert count_tokens("echo: it's") == 5


async def test_echo_chat(echo_hub: Hub) -> None:
    reply = await echo_hub.stub.chat(chat("Review this diff, please."), metadata=echo_hub.login())
    assert reply.success and reply.error_message == ""
    assert reply.content == "echo: Review this diff, please."
    assert reply.model == "cheap-model"
    assert reply.finish_reason == "stop"
    assert reply.usage is not None
    # prompt: "You are terse." (4) + "Review this diff, please." (6)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (10, 8)
    assert reply.usage.total_tokens == 18


async def test_echo_uses_the_last_user_message(echo_hub: Hub) -> None:
    request = pb.ChatRequest(
        messages=[
            pb.ChatMessage(role="user", content="first"),
            pb.ChatMessage(role="assistant", content="answer"),
            pb.ChatMessage(role="user", content="second"),
            pb.ChatMessage(role="tool", content="tool output"),
        ]
    )
    reply = await echo_hub.stub.chat(request, metadata=echo_hub.login())
    assert reply.content == "echo: second"


async def test_echo_honours_max_tokens(echo_hub: Hub) -> None:
    reply = await echo_hub.stub.chat(
        chat("one two three four five", max_tokens=3), metadata=echo_hub.login()
    )
    assert reply.content == "echo: one"
    assert reply.finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


async def test_echo_stream_matches_chat(echo_hub: Hub) -> None:
    auth = echo_hub.login()
    whole = await echo_hub.stub.chat(chat("stream me, word by word"), metadata=auth)
    chunks = await collect(
        echo_hub.stub.chat_stream(chat("stream me, word by word"), metadata=auth)
    )
    assert len(chunks) > 3
    assert "".join(c.delta for c in chunks) == whole.content
    assert all(c.finish_reason == "" and c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason == "stop" and last.error_message == ""
    assert last.usage == whole.usage
    assert {c.model for c in chunks} == {"cheap-model"}


async def test_echo_stream_truncates_at_max_tokens(echo_hub: Hub) -> None:
    chunks = await collect(
        echo_hub.stub.chat_stream(chat("a b c d e f", max_tokens=4), metadata=echo_hub.login())
    )
    assert "".join(c.delta for c in chunks) == "echo: a b"
    assert chunks[-1].finish_reason == "length"


async def test_provider_keeps_the_calls_it_served(echo_hub: Hub) -> None:
    await echo_hub.stub.chat(chat("remember me", temperature=0.5), metadata=echo_hub.login())
    calls = echo_hub.provider.calls
    assert len(calls) == 1
    assert calls[0].request.messages[-1] == ChatTurn("user", "remember me")
    assert calls[0].request.temperature == 0.5
    assert calls[0].completion is not None
    assert calls[0].completion.content == "echo: remember me"


# -- trust policy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trust", "requested", "answered"),
    [
        (pb.TrustLevel.UNSPECIFIED, "good-model", "cheap-model"),
        (pb.TrustLevel.LOW, "good-model", "cheap-model"),
        (pb.TrustLevel.LOW, "", "cheap-model"),
        (pb.TrustLevel.STANDARD, "good-model", "good-model"),
        (pb.TrustLevel.STANDARD, "huge-model", "cheap-model"),
        (pb.TrustLevel.HIGH, "huge-model", "huge-model"),
        (pb.TrustLevel.HIGH, "", "cheap-model"),
    ],
)
async def test_trust_level_picks_the_model(
    echo_hub: Hub, trust: pb.TrustLevel, requested: str, answered: str
) -> None:
    reply = await echo_hub.stub.chat(chat("hi", model=requested), metadata=echo_hub.login(trust))
    assert reply.success
    assert reply.model == answered
    assert echo_hub.provider.calls[-1].request.model == answered


def test_default_policy_and_environment_override() -> None:
    builtin = ModelPolicy.default({})
    assert builtin.default_model == DEFAULT_MODEL
    assert builtin.resolve("gpt-4o", pb.TrustLevel.STANDARD) == "gpt-4o"
    assert builtin.resolve("gpt-4o", pb.TrustLevel.LOW) == DEFAULT_MODEL
    assert builtin.allowed(pb.TrustLevel.HIGH) is None
    local = ModelPolicy.default(
        {"AETHER_HUB_LLM_DEFAULT_MODEL": "llama3.2", "AETHER_HUB_LLM_MODELS": "llama3.2, qwen3"}
    )
    assert local.default_model == "llama3.2"
    assert local.allowed(pb.TrustLevel.STANDARD) == frozenset({"llama3.2", "qwen3"})
    assert local.resolve("gpt-4o", pb.TrustLevel.STANDARD) == "llama3.2"


# -- validation and auth ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.ChatRequest(), "messages: at least one message is required"),
        (
            pb.ChatRequest(
                messages=[
                    pb.ChatMessage(role="user", content="x"),
                    pb.ChatMessage(role="robot", content="y"),
                ]
            ),
            "messages[1].role: 'robot' is not one of assistant, system, tool, user",
        ),
        (chat("x", temperature=2.5), "temperature: must be between 0.0 and 2.0, not 2.5"),
        (chat("x", temperature=-0.5), "temperature: must be between 0.0 and 2.0, not -0.5"),
        (chat("x", max_tokens=0), "max_tokens: must be at least 1, not 0"),
    ],
)
async def test_malformed_requests_are_invalid_argument(
    echo_hub: Hub, request_: pb.ChatRequest, message: str
) -> None:
    for call in (echo_hub.stub.chat, echo_hub.stub.chat_stream):
        with pytest.raises(GRPCError) as caught:
            if call is echo_hub.stub.chat:
                await echo_hub.stub.chat(request_, metadata=echo_hub.login())
            else:
                await collect(echo_hub.stub.chat_stream(request_, metadata=echo_hub.login()))
        assert caught.value.status is Status.INVALID_ARGUMENT
        assert caught.value.message == message
    assert echo_hub.provider.calls == ()


async def test_boundary_values_are_accepted(echo_hub: Hub) -> None:
    for fields in ({"temperature": 0.0}, {"temperature": 2.0}, {"max_tokens": 1}):
        assert (await echo_hub.stub.chat(chat("x", **fields), metadata=echo_hub.login())).success


async def test_unauthenticated(echo_hub: Hub) -> None:
    for metadata in (None, bearer("stale-token")):
        with pytest.raises(GRPCError) as caught:
            await echo_hub.stub.chat(chat("x"), metadata=metadata)
        assert caught.value.status is Status.UNAUTHENTICATED
        with pytest.raises(GRPCError) as caught:
            await collect(echo_hub.stub.chat_stream(chat("x"), metadata=metadata))
        assert caught.value.status is Status.UNAUTHENTICATED


# -- openai -----------------------------------------------------------------------------


async def test_openai_chat(openai_hub: Hub, fake: FakeOpenAI) -> None:
    async def respond(request: SeenRequest) -> Reply:
        return Reply(body=completion_json("Looks good.", model="good-model-2025"))

    fake.respond = respond
    reply = await openai_hub.stub.chat(
        chat("Review this", model="good-model", temperature=0.3, max_tokens=50),
        metadata=openai_hub.login(),
    )
    assert reply.success, reply.error_message
    assert reply.content == "Looks good."
    assert reply.model == "good-model-2025"
    assert reply.finish_reason == "stop"
    assert reply.usage == pb.Usage(prompt_tokens=11, completion_tokens=7, total_tokens=18)

    [seen] = fake.seen
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert seen.json() == {
        "model": "good-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Review this"},
        ],
        "temperature": 0.3,
        "max_tokens": 50,
    }


async def test_openai_sends_the_policy_model_not_the_requested_one(
    openai_hub: Hub, fake: FakeOpenAI
) -> None:
    async def respond(request: SeenRequest) -> Reply:
        return Reply(body=completion_json("ok", model=str(request.json()["model"])))

    fake.respond = respond
    reply = await openai_hub.stub.chat(
        chat("x", model="good-model"), metadata=openai_hub.login(pb.TrustLevel.LOW)
    )
    assert reply.model == "cheap-model"
    assert fake.seen[0].json()["model"] == "cheap-model"


async def test_openai_stream(openai_hub: Hub, fake: FakeOpenAI) -> None:
    events = [
        b": keep-alive comment\n\n",
        sse({"model": "m1", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
        sse({"model": "m1", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
        sse({"model": "m1", "choices": [{"index": 0, "delta": {"content": "lo!"}}]}),
        sse({"model": "m1", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}),
        sse({"model": "m1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}),
        sse("[DONE]"),
    ]

    async def respond(request: SeenRequest) -> Reply:
        return Reply(events=events)

    fake.respond = respond
    chunks = await collect(openai_hub.stub.chat_stream(chat("hi"), metadata=openai_hub.login()))
    assert [c.delta for c in chunks] == ["Hel", "lo!", ""]
    last = chunks[-1]
    assert last.finish_reason == "length"
    assert last.usage == pb.Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7)
    assert {c.model for c in chunks} == {"m1"}
    body = fake.seen[0].json()
    assert body["stream"] is True


async def test_openai_stream_without_usage_estimates_it(openai_hub: Hub, fake: FakeOpenAI) -> None:
    async def respond(request: SeenRequest) -> Reply:
        return Reply(
            events=[
                sse({"choices": [{"delta": {"content": "two words"}}]}),
                sse("[DONE]"),
            ]
        )

    fake.respond = respond
    chunks = await collect(openai_hub.stub.chat_stream(chat("a b c"), metadata=openai_hub.login()))
    assert chunks[-1].finish_reason == "stop"
    # The system prompt (4) + "a b c" (3); the answer has 2.
    assert chunks[-1].usage == pb.Usage(prompt_tokens=7, completion_tokens=2, total_tokens=9)


async def test_openai_upstream_500(
    openai_hub: Hub, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    async def respond(request: SeenRequest) -> Reply:
        return Reply(status=500, body=b'{"error": {"message": "model overloaded"}}')

    fake.respond = respond
    with caplog.at_level(logging.DEBUG):
        reply = await openai_hub.stub.chat(chat("x"), metadata=openai_hub.login())
        chunks = await collect(openai_hub.stub.chat_stream(chat("x"), metadata=openai_hub.login()))
    expected = f"the LLM provider at {fake.base_url} answered HTTP 500: model overloaded"
    assert not reply.success
    assert reply.error_message == expected
    assert [c.error_message for c in chunks] == [expected]
    assert openai_hub.provider.calls[-1].error == expected
    assert SECRET not in caplog.text


async def test_openai_error_that_echoes_the_key_is_redacted(
    openai_hub: Hub, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    async def respond(request: SeenRequest) -> Reply:
        return Reply(
            status=401, body=f'{{"error": {{"message": "Incorrect API key {SECRET}"}}}}'.encode()
        )

    fake.respond = respond
    with caplog.at_level(logging.DEBUG):
        reply = await openai_hub.stub.chat(chat("x"), metadata=openai_hub.login())
    assert not reply.success
    assert reply.error_message.endswith("answered HTTP 401: Incorrect API key ***")
    assert SECRET not in caplog.text
    assert SECRET not in repr(openai_hub.provider)


async def test_openai_plain_text_error_body(openai_hub: Hub, fake: FakeOpenAI) -> None:
    async def respond(request: SeenRequest) -> Reply:
        return Reply(status=429, body=b"slow down\n", content_type="text/plain")

    fake.respond = respond
    reply = await openai_hub.stub.chat(chat("x"), metadata=openai_hub.login())
    assert reply.error_message.endswith("answered HTTP 429: slow down")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>not json</html>", "answered with invalid JSON"),
        (b'{"choices": []}', "answered without choices[0].message.content"),
        (
            b'{"choices": [{"message": {"content": 5}}]}',
            "answered without choices[0].message.content",
        ),
    ],
)
async def test_openai_malformed_answers(
    openai_hub: Hub, fake: FakeOpenAI, body: bytes, problem: str
) -> None:
    async def respond(request: SeenRequest) -> Reply:
        return Reply(body=body)

    fake.respond = respond
    reply = await openai_hub.stub.chat(chat("x"), metadata=openai_hub.login())
    assert not reply.success
    assert reply.error_message == f"the LLM provider at {fake.base_url} {problem}"


async def test_openai_errors_inside_a_200_answer(openai_hub: Hub, fake: FakeOpenAI) -> None:
    async def respond(request: SeenRequest) -> Reply:
        if request.json().get("stream"):
            return Reply(
                events=[
                    sse({"choices": [{"delta": {"content": "par"}}]}),
                    sse({"error": {"message": "context length exceeded"}}),
                ]
            )
        return Reply(body=b'{"error": {"message": "quota used up"}}')

    fake.respond = respond
    reply = await openai_hub.stub.chat(chat("x"), metadata=openai_hub.login())
    assert reply.error_message == f"the LLM provider at {fake.base_url} reported: quota used up"
    chunks = await collect(openai_hub.stub.chat_stream(chat("x"), metadata=openai_hub.login()))
    assert [c.delta for c in chunks] == ["par", ""]
    assert chunks[-1].error_message == (
        f"the LLM provider at {fake.base_url} reported: context length exceeded"
    )


async def test_openai_stream_with_invalid_json_event(openai_hub: Hub, fake: FakeOpenAI) -> None:
    async def respond(request: SeenRequest) -> Reply:
        return Reply(events=[sse({"choices": [{"delta": {"content": "ok"}}]}), b"data: {oops\n\n"])

    fake.respond = respond
    chunks = await collect(openai_hub.stub.chat_stream(chat("x"), metadata=openai_hub.login()))
    assert [c.delta for c in chunks] == ["ok", ""]
    assert chunks[-1].error_message == f"the LLM provider at {fake.base_url} streamed invalid JSON"


async def test_openai_timeout(tmp_path: Path, fake: FakeOpenAI) -> None:
    stuck = asyncio.Event()  # never set: the upstream never answers

    async def respond(request: SeenRequest) -> Reply:
        return Reply(body=completion_json("late"), hold=stuck)

    fake.respond = respond
    provider = OpenAIProvider(fake.base_url, api_key_env="UNSET_KEY_VAR_FOR_TEST", timeout=0.3)
    try:
        async with _serve(tmp_path, provider) as harness:
            hub = Hub(harness, provider)
            reply = await hub.stub.chat(chat("x"), metadata=hub.login())
            chunks = await collect(hub.stub.chat_stream(chat("x"), metadata=hub.login()))
    finally:
        await provider.aclose()
    expected = f"the LLM provider at {fake.base_url} did not answer within 0.3 s"
    assert not reply.success
    assert reply.error_message == expected
    assert [c.error_message for c in chunks] == [expected]
    # No key configured: no authorization header goes out.
    assert "authorization" not in fake.seen[0].headers


async def test_openai_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    provider = OpenAIProvider(base_url, timeout=5)
    try:
        async with _serve(tmp_path, provider) as harness:
            hub = Hub(harness, provider)
            reply = await hub.stub.chat(chat("x"), metadata=hub.login())
            chunks = await collect(hub.stub.chat_stream(chat("x"), metadata=hub.login()))
    finally:
        await provider.aclose()
    assert not reply.success
    assert reply.error_message.startswith(f"cannot connect to the LLM provider at {base_url}")
    assert chunks[-1].error_message.startswith("cannot connect to the LLM provider")


async def test_crashing_provider_is_reported_not_raised(tmp_path: Path) -> None:
    class Broken(EchoProvider):
        async def complete(self, request: CompletionRequest) -> Completion:
            raise RuntimeError("bug")

    provider = Broken()
    async with _serve(tmp_path, provider) as harness:
        hub = Hub(harness, provider)
        reply = await hub.stub.chat(chat("x"), metadata=hub.login())
    assert not reply.success
    assert reply.error_message == "the echo provider failed unexpectedly"


def test_unknown_provider() -> None:
    with pytest.raises(ValueError, match="unknown LLM provider 'gpt'"):
        make_llm_provider("gpt")


async def test_openai_repr_hides_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_KEY", SECRET)
    provider = OpenAIProvider("http://user:pw@127.0.0.1:1/v1", api_key_env="SOME_KEY")
    try:
        assert SECRET not in repr(provider)
        assert "pw" not in repr(provider)
        assert "SOME_KEY" in repr(provider)
    finally:
        await provider.aclose()


async def test_openai_warns_when_its_key_variable_is_unset(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("AETHER_TEST_UNSET_KEY", raising=False)
    monkeypatch.setenv("AETHER_TEST_SET_KEY", "sk-test-value")
    with caplog.at_level(logging.WARNING, logger="aether_hub.llm_providers"):
        unset = OpenAIProvider("http://127.0.0.1:9/v1", api_key_env="AETHER_TEST_UNSET_KEY")
        await unset.aclose()
    assert [r.getMessage() for r in caplog.records] == [
        "LLM provider openai: $AETHER_TEST_UNSET_KEY is not set;"
        " requests go to http://127.0.0.1:9/v1 without an API key"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aether_hub.llm_providers"):
        keyed = OpenAIProvider("http://127.0.0.1:9/v1", api_key_env="AETHER_TEST_SET_KEY")
        await keyed.aclose()
    assert caplog.records == []
