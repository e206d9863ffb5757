"""`self.hub.llm`: Hub-proxied chat completions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

from aether._wire import pb
from aether.hub._base import Facade, HubResponse

__all__ = ("LLM", "ChatChunk", "ChatResponse", "Usage")


class Usage(HubResponse):
    """Token counts of one completion."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatResponse(HubResponse):
    """A complete chat answer; check `success` before using `content`."""

    success: bool = False
    content: str = ""
    model: str = ""
    usage: Usage = Usage()
    error_message: str = ""
    finish_reason: str = ""

    @classmethod
    def from_wire(cls, msg: pb.ChatResponse) -> ChatResponse:
        """Build from the wire message without re-validating it."""
        return cls.model_construct(
            success=msg.success,
            content=msg.content,
            model=msg.model,
            usage=_usage(msg.usage) or Usage(),
            error_message=msg.error_message,
            finish_reason=msg.finish_reason,
        )


class ChatChunk(HubResponse):
    """A piece of a streamed answer; the last one carries `finish_reason` and `usage`."""

    delta: str = ""
    model: str = ""
    finish_reason: str = ""
    usage: Usage | None = None
    error_message: str = ""


def _usage(usage: pb.Usage | None) -> Usage | None:
    if usage is None:
        return None
    return Usage.model_construct(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


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
            reply = await self._client.llm_stub().chat(request, timeout=timeout)
        except Exception as exc:
            raise self._client.map_error(exc, "LLM chat") from None
        return ChatResponse.from_wire(reply)

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
            async for chunk in self._client.llm_stub().chat_stream(request):
                yield ChatChunk.model_construct(
                    delta=chunk.delta,
                    model=chunk.model,
                    finish_reason=chunk.finish_reason,
                    usage=_usage(chunk.usage),
                    error_message=chunk.error_message,
                )
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
