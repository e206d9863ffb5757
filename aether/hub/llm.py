"""`self.hub.llm`: Hub-proxied chat completions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

from aether._tracing import ClientSpan, client_span
from aether._wire import models, pb
from aether.hub._base import Facade

__all__ = ("LLM", "ChatChunk", "ChatResponse", "Usage")

#: A complete chat answer (the generated model); check `success` before using `content`.
#: `usage` is never None: zero counts when the Hub sent none.
ChatResponse = models.ChatResponse
#: A piece of a streamed answer (the generated model); the last one carries
#: `finish_reason` and `usage` (None on the others).
ChatChunk = models.ChatChunk
#: Token counts of one completion (the generated model).
Usage = models.Usage


def _message(item: Mapping[str, str] | pb.ChatMessage) -> pb.ChatMessage:
    if isinstance(item, pb.ChatMessage):
        return item
    role = item.get("role")
    if not role:
        raise ValueError("every chat message needs a non-empty 'role'")
    return pb.ChatMessage(role=role, content=item.get("content", ""))


class LLM(Facade):
    """Chat completions on the model the agent's trust level allows."""

    async def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        model: str = "",
        temperature: float | None = None,
        max_tokens: int | None = None,
        *,
        timeout: float | None = None,
    ) -> ChatResponse:
        """Run one chat completion.

        `messages` are `{"role": ..., "content": ...}` mappings; `model` is a wish the Hub
        may override by trust level (the answer's `model` says which one answered).
        """
        request = _request(messages, model, temperature, max_tokens)
        timeout = await self._client.wait_for_session(timeout)
        with client_span("/aether.v1.LLMService/Chat") as call:
            if call.recording:
                _request_attributes(call, request)
            try:
                reply = await self._client._llm_stub().chat(
                    request, timeout=timeout, metadata=call.metadata
                )
            except Exception as exc:
                raise self._client.map_error(exc, "LLM chat") from None
            if call.recording:
                _response_attributes(call, reply.model, reply.usage)
        return models.ChatResponse.from_wire(reply)

    async def chat_stream(
        self,
        messages: Sequence[Mapping[str, str]],
        model: str = "",
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[ChatChunk]:
        """Like `chat()`, but yields the answer in pieces as the model produces them."""
        request = _request(messages, model, temperature, max_tokens)
        await self._client.wait_for_session()
        with client_span("/aether.v1.LLMService/ChatStream") as call:
            if call.recording:
                _request_attributes(call, request)
            try:
                async for chunk in self._client._llm_stub().chat_stream(
                    request, metadata=call.metadata
                ):
                    if call.recording and chunk.usage is not None:
                        _response_attributes(call, chunk.model, chunk.usage)
                    yield models.ChatChunk.from_wire(chunk)
            except Exception as exc:
                raise self._client.map_error(exc, "LLM chat stream") from None


def _request_attributes(call: ClientSpan, request: pb.ChatRequest) -> None:
    # OpenTelemetry's GenAI semantic conventions.
    call.set("gen_ai.operation.name", "chat")
    if request.model:
        call.set("gen_ai.request.model", request.model)
    if request.temperature is not None:
        call.set("gen_ai.request.temperature", request.temperature)
    if request.max_tokens is not None:
        call.set("gen_ai.request.max_tokens", request.max_tokens)


def _response_attributes(call: ClientSpan, model: str, usage: pb.Usage | None) -> None:
    if model:
        call.set("gen_ai.response.model", model)
    if usage is not None:
        call.set("gen_ai.usage.input_tokens", usage.prompt_tokens)
        call.set("gen_ai.usage.output_tokens", usage.completion_tokens)


def _request(
    messages: Sequence[Mapping[str, str]],
    model: str,
    temperature: float | None,
    max_tokens: int | None,
) -> pb.ChatRequest:
    if not messages:
        raise ValueError("chat() needs at least one message")
    return pb.ChatRequest(
        messages=[_message(m) for m in messages],
        model=model,
        temperature=temperature,
        max_tokens=max_tokens,
    )
