"""`self.hub.llm`: Hub-proxied chat completions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

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
        try:
            reply = await self._client._llm_stub().chat(request, timeout=timeout)
        except Exception as exc:
            raise self._client.map_error(exc, "LLM chat") from None
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
        try:
            async for chunk in self._client._llm_stub().chat_stream(request):
                yield models.ChatChunk.from_wire(chunk)
        except Exception as exc:
            raise self._client.map_error(exc, "LLM chat stream") from None


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
