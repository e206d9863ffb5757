"""LLM providers behind the Hub's `LLMService`.

- ``echo`` (:class:`EchoProvider`): offline and deterministic. It answers
  ``"echo: <last user message>"``, counts tokens with :func:`count_tokens` (words and
  single punctuation marks), and honours ``max_tokens`` by truncating the answer and
  reporting ``finish_reason="length"`` (``"stop"`` otherwise). It answers as whatever
  model the trust policy picked. Streaming sends one chunk per token (with the
  whitespace before it), then a last chunk with ``finish_reason`` and usage.
- ``openai`` (:class:`OpenAIProvider`): the OpenAI-compatible chat API
  (``POST {base_url}/chat/completions``) over httpx, so OpenAI, vLLM, Ollama and the
  like. The API key is read from an environment variable and is never logged nor put
  in an error message. Timeouts, refused connections, HTTP error statuses and
  malformed answers raise :class:`ProviderError` with a clear message; streaming uses
  ``stream: true`` server-sent events.

Every provider keeps the last calls it served in ``provider.calls`` (bounded), for
tests and tooling that want to see what agents asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    import httpx

__all__ = (
    "CALL_HISTORY",
    "ROLES",
    "ChatTurn",
    "Completion",
    "CompletionChunk",
    "CompletionRequest",
    "EchoProvider",
    "LLMProvider",
    "OpenAIProvider",
    "ProviderCall",
    "ProviderError",
    "TokenUsage",
    "count_tokens",
    "make_llm_provider",
)

_log = logging.getLogger(__name__)

#: The roles a chat message may have.
ROLES: Final = frozenset({"system", "user", "assistant", "tool"})
#: How many calls a provider remembers in `provider.calls`.
CALL_HISTORY: Final = 1000

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """A simple deterministic token count: words plus single punctuation marks."""
    return sum(1 for _ in _TOKEN.finditer(text))


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One message of a conversation."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """What a provider is asked: the model is the one the trust policy picked."""

    messages: tuple[ChatTurn, ...]
    model: str
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts of one completion."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """prompt_tokens + completion_tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    """A complete answer."""

    content: str
    model: str
    finish_reason: str
    usage: TokenUsage


@dataclass(frozen=True, slots=True)
class CompletionChunk:
    """A piece of a streamed answer; the last one has finish_reason and usage."""

    delta: str
    model: str
    finish_reason: str = ""
    usage: TokenUsage | None = None


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """A call a provider served: the request, and the answer or the error."""

    request: CompletionRequest
    streamed: bool
    completion: Completion | None = None
    error: str = ""


class ProviderError(Exception):
    """The provider could not answer; the message is safe to show to the agent."""


class LLMProvider(Protocol):
    """What `LLMService` needs from a provider."""

    @property
    def name(self) -> str:
        """The provider's name (``echo``, ``openai``)."""
        ...

    @property
    def calls(self) -> Sequence[ProviderCall]:
        """The last calls served, oldest first (bounded)."""
        ...

    async def complete(self, request: CompletionRequest) -> Completion:
        """One complete answer, or ProviderError."""
        ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[CompletionChunk]:
        """The answer in chunks, or ProviderError while iterating."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def _prompt_tokens(messages: Sequence[ChatTurn]) -> int:
    return sum(count_tokens(message.content) for message in messages)


class _Recorder:
    def __init__(self) -> None:
        self._calls: deque[ProviderCall] = deque(maxlen=CALL_HISTORY)

    @property
    def calls(self) -> Sequence[ProviderCall]:
        """The last calls served, oldest first (at most CALL_HISTORY)."""
        return tuple(self._calls)

    def _record(self, call: ProviderCall) -> None:
        self._calls.append(call)


class EchoProvider(_Recorder):
    """Offline, deterministic answers: ``echo: <last user message>``."""

    name = "echo"

    def __repr__(self) -> str:
        return "EchoProvider()"

    @staticmethod
    def _answer(request: CompletionRequest) -> tuple[list[str], str, TokenUsage]:
        users = [m.content for m in request.messages if m.role == "user"]
        text = "echo: " + (users[-1] if users else request.messages[-1].content)
        spans = [match.span() for match in _TOKEN.finditer(text)]
        finish_reason = "stop"
        if request.max_tokens is not None and len(spans) > request.max_tokens:
            spans = spans[: request.max_tokens]
            finish_reason = "length"
        pieces: list[str] = []
        start = 0
        for _, end in spans:
            pieces.append(text[start:end])
            start = end
        if finish_reason == "stop":
            pieces[-1] += text[start:]  # trailing whitespace belongs to the answer
        usage = TokenUsage(_prompt_tokens(request.messages), len(spans))
        return pieces, finish_reason, usage

    async def complete(self, request: CompletionRequest) -> Completion:
        """The echo answer, truncated to max_tokens."""
        pieces, finish_reason, usage = self._answer(request)
        completion = Completion("".join(pieces), request.model or "echo", finish_reason, usage)
        self._record(ProviderCall(request, streamed=False, completion=completion))
        return completion

    async def stream(self, request: CompletionRequest) -> AsyncIterator[CompletionChunk]:
        """The echo answer one token at a time, then finish_reason and usage."""
        pieces, finish_reason, usage = self._answer(request)
        model = request.model or "echo"
        for piece in pieces:
            yield CompletionChunk(piece, model)
            await asyncio.sleep(0)  # let other calls run between chunks
        yield CompletionChunk("", model, finish_reason, usage)
        completion = Completion("".join(pieces), model, finish_reason, usage)
        self._record(ProviderCall(request, streamed=True, completion=completion))

    async def aclose(self) -> None:
        """Nothing to release."""


def _safe_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    host, at, path = rest.partition("/")
    if "@" in host:
        host = host.split("@", 1)[1]
    return f"{scheme}{sep}{host}{at and '/'}{path}"


class OpenAIProvider(_Recorder):
    """The OpenAI-compatible chat completions API at `base_url`, over httpx."""

    name = "openai"

    def __init__(
        self,
        base_url: str = "https://api.openai.com/v1",
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__()
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise ProviderError(
                "the openai provider needs httpx: pip install 'aether-agent-sdk[hub]'"
            ) from exc
        self._httpx = httpx
        self._base_url = base_url.rstrip("/")
        self._shown_url = _safe_url(self._base_url)
        self._api_key_env = api_key_env
        # Read once; kept out of reprs, logs and error messages.
        self.__api_key = os.environ.get(api_key_env, "")
        if not self.__api_key:
            # Local OpenAI-compatible servers (vLLM, Ollama) need no key, so this is not an
            # error; but a misspelt variable should not go unnoticed until the first 401.
            _log.warning(
                "LLM provider openai: $%s is not set; requests go to %s without an API key",
                api_key_env,
                self._shown_url,
            )
        self._timeout = timeout
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"OpenAIProvider(base_url={self._shown_url!r}, api_key_env={self._api_key_env!r})"

    # -- helpers ---------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.__api_key:
            headers["authorization"] = f"Bearer {self.__api_key}"
        return headers

    def _redact(self, text: str) -> str:
        if self.__api_key:
            text = text.replace(self.__api_key, "***")
        return text

    def _body(self, request: CompletionRequest, *, stream: bool) -> dict[str, object]:
        body: dict[str, object] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _transport_error(self, exc: Exception) -> ProviderError:
        httpx = self._httpx
        if isinstance(exc, httpx.TimeoutException):
            message = (
                f"the LLM provider at {self._shown_url} did not answer within {self._timeout:g} s"
            )
        elif isinstance(exc, httpx.ConnectError):
            message = f"cannot connect to the LLM provider at {self._shown_url}: {exc}"
        else:
            message = (
                f"the request to the LLM provider at {self._shown_url} failed:"
                f" {type(exc).__name__}: {exc}"
            )
        return ProviderError(self._redact(message))

    def _status_error(self, status: int, body: bytes) -> ProviderError:
        detail = ""
        with contextlib.suppress(ValueError, RecursionError):
            detail = _error_detail(json.loads(body))
        if not detail:
            detail = body.decode("utf-8", errors="replace").strip()
        detail = " ".join(detail.split())[:300]
        message = f"the LLM provider at {self._shown_url} answered HTTP {status}"
        if detail:
            message += f": {detail}"
        return ProviderError(self._redact(message))

    def _fail(self, request: CompletionRequest, error: ProviderError, *, streamed: bool) -> None:
        _log.warning("LLM call to %s failed: %s", self._shown_url, error)
        self._record(ProviderCall(request, streamed=streamed, error=str(error)))

    # -- calls -----------------------------------------------------------------------

    async def complete(self, request: CompletionRequest) -> Completion:
        """POST /chat/completions and parse the answer."""
        try:
            completion = await self._complete(request)
        except ProviderError as exc:
            self._fail(request, exc, streamed=False)
            raise
        self._record(ProviderCall(request, streamed=False, completion=completion))
        return completion

    async def _complete(self, request: CompletionRequest) -> Completion:
        try:
            response = await self._client.post(
                f"{self._base_url}/chat/completions",
                json=self._body(request, stream=False),
                headers=self._headers(),
            )
        except self._httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise self._status_error(response.status_code, response.content)
        try:
            data = json.loads(response.content)
        except (ValueError, RecursionError):
            raise ProviderError(
                f"the LLM provider at {self._shown_url} answered with invalid JSON"
            ) from None
        upstream_error = _error_detail(data)
        if upstream_error:
            raise ProviderError(
                self._redact(f"the LLM provider at {self._shown_url} reported: {upstream_error}")
            )
        try:
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
            if not isinstance(content, str):
                raise TypeError("content is not a string")
            finish_reason = str(choice.get("finish_reason") or "stop")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ProviderError(
                f"the LLM provider at {self._shown_url} answered without choices[0].message.content"
            ) from None
        usage = _usage(data.get("usage")) or TokenUsage(
            _prompt_tokens(request.messages), count_tokens(content)
        )
        model = data.get("model")
        return Completion(
            content=content,
            model=model if isinstance(model, str) and model else request.model,
            finish_reason=finish_reason,
            usage=usage,
        )

    async def stream(self, request: CompletionRequest) -> AsyncIterator[CompletionChunk]:
        """POST /chat/completions with ``stream: true`` and relay the SSE deltas."""
        parts: list[str] = []
        model = request.model
        finish_reason = ""
        usage: TokenUsage | None = None
        try:
            async with self._client.stream(
                "POST",
                f"{self._base_url}/chat/completions",
                json=self._body(request, stream=True),
                headers=self._headers(),
            ) as response:
                if response.status_code >= 400:
                    raise self._status_error(response.status_code, await response.aread())
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # comments, event names, keep-alives, blank separators
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    try:
                        event = json.loads(payload)
                    except (ValueError, RecursionError):
                        raise ProviderError(
                            f"the LLM provider at {self._shown_url} streamed invalid JSON"
                        ) from None
                    if not isinstance(event, dict):
                        continue
                    upstream_error = _error_detail(event)
                    if upstream_error:
                        raise ProviderError(
                            self._redact(
                                f"the LLM provider at {self._shown_url} reported: {upstream_error}"
                            )
                        )
                    if isinstance(event.get("model"), str) and event["model"]:
                        model = event["model"]
                    usage = _usage(event.get("usage")) or usage
                    delta, reason = _stream_choice(event)
                    finish_reason = reason or finish_reason
                    if delta:
                        parts.append(delta)
                        yield CompletionChunk(delta, model)
        except self._httpx.HTTPError as exc:
            error = self._transport_error(exc)
            self._fail(request, error, streamed=True)
            raise error from None
        except ProviderError as exc:
            self._fail(request, exc, streamed=True)
            raise
        content = "".join(parts)
        usage = usage or TokenUsage(_prompt_tokens(request.messages), count_tokens(content))
        finish_reason = finish_reason or "stop"
        yield CompletionChunk("", model, finish_reason, usage)
        self._record(
            ProviderCall(
                request,
                streamed=True,
                completion=Completion(content, model, finish_reason, usage),
            )
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()


def _error_detail(body: object) -> str:
    """The message of an OpenAI-style ``{"error": {...}}`` body, or ""."""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict):
        return " ".join(str(error.get("message") or error.get("type") or "error").split())[:300]
    if isinstance(error, str) and error:
        return " ".join(error.split())[:300]
    return ""


def _usage(raw: object) -> TokenUsage | None:
    if not isinstance(raw, Mapping):
        return None
    prompt = raw.get("prompt_tokens")
    completion = raw.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return TokenUsage(prompt, completion)


def _stream_choice(event: Mapping[str, object]) -> tuple[str, str]:
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "", ""
    choice = choices[0]
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else None
    reason = choice.get("finish_reason")
    return (
        text if isinstance(text, str) else "",
        reason if isinstance(reason, str) else "",
    )


def make_llm_provider(
    name: str = "echo",
    *,
    base_url: str | None = None,
    api_key_env: str | None = None,
    timeout: float = 60.0,
) -> LLMProvider:
    """The provider called `name` (``echo`` or ``openai``); ValueError for others."""
    if name == "echo":
        return EchoProvider()
    if name == "openai":
        return OpenAIProvider(
            base_url or "https://api.openai.com/v1",
            api_key_env=api_key_env or "OPENAI_API_KEY",
            timeout=timeout,
        )
    raise ValueError(f"unknown LLM provider {name!r}; use 'echo' or 'openai'")
