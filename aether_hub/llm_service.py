"""`LLMService`: chat completions through the Hub's provider, models picked by trust level.

The :class:`ModelPolicy` decides which model answers: an agent of trust level LOW (or
unspecified) always gets the default (cheap) model, STANDARD may pick from a list, HIGH
may ask for any model. A model the agent may not use, or none at all, is replaced by
the default; the response's ``model`` says which model answered.

Rules:

- Every call needs a live agent session (UNAUTHENTICATED otherwise).
- A malformed request is INVALID_ARGUMENT naming the field: ``messages`` (none),
  ``messages[i].role`` (not one of system, user, assistant, tool), ``temperature`` (not
  within 0.0..2.0), ``max_tokens`` (below 1).
- A provider that fails (timeout, refused connection, HTTP error, malformed answer)
  gives ``success=false`` with ``error_message`` (for ``ChatStream``: a last chunk with
  ``error_message``), never a failed call and never a secret.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether_hub._wire import pb, runtime, server
from aether_hub.llm_providers import (
    ROLES,
    ChatTurn,
    CompletionRequest,
    LLMProvider,
    ProviderError,
    TokenUsage,
)
from aether_hub.metrics import HubMetrics
from aether_hub.sessions import SessionRegistry

__all__ = ("DEFAULT_MODEL", "DEFAULT_STANDARD_MODELS", "LLMService", "ModelPolicy")

_log = logging.getLogger(__name__)

#: The model every agent may use, and the one LOW-trust agents always get.
DEFAULT_MODEL = "gpt-4o-mini"
#: The models STANDARD-trust agents may pick besides the default.
DEFAULT_STANDARD_MODELS = ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o")

#: Environment variables that override :meth:`ModelPolicy.default` (e.g. for Ollama).
ENV_DEFAULT_MODEL = "AETHER_HUB_LLM_DEFAULT_MODEL"
ENV_STANDARD_MODELS = "AETHER_HUB_LLM_MODELS"


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """Which models each trust level may use."""

    default_model: str = DEFAULT_MODEL
    #: Models STANDARD agents may ask for (the default model is always allowed).
    standard_models: frozenset[str] = field(default_factory=frozenset)
    #: Models LOW agents may ask for besides the default (normally none).
    low_models: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def default(cls, environ: Mapping[str, str] | None = None) -> ModelPolicy:
        """The built-in policy, or the models named by the environment.

        ``AETHER_HUB_LLM_DEFAULT_MODEL`` sets the default model and
        ``AETHER_HUB_LLM_MODELS`` (comma-separated) the STANDARD list.
        """
        env = os.environ if environ is None else environ
        default_model = env.get(ENV_DEFAULT_MODEL, "").strip() or DEFAULT_MODEL
        listed = env.get(ENV_STANDARD_MODELS, "")
        models: Iterable[str] = (
            (m.strip() for m in listed.split(",")) if listed.strip() else DEFAULT_STANDARD_MODELS
        )
        return cls(default_model=default_model, standard_models=frozenset(m for m in models if m))

    def allowed(self, trust_level: pb.TrustLevel) -> frozenset[str] | None:
        """The models `trust_level` may use; None means any model."""
        if trust_level == pb.TrustLevel.HIGH:
            return None
        if trust_level == pb.TrustLevel.STANDARD:
            return self.standard_models | {self.default_model}
        return self.low_models | {self.default_model}

    def resolve(self, requested: str, trust_level: pb.TrustLevel) -> str:
        """The model that answers a request for `requested` from `trust_level`."""
        if not requested:
            return self.default_model
        allowed = self.allowed(trust_level)
        if allowed is None or requested in allowed:
            return requested
        return self.default_model


def _invalid(message: str) -> GRPCError:
    return GRPCError(Status.INVALID_ARGUMENT, message)


def _validate(request: pb.ChatRequest) -> None:
    if not request.messages:
        raise _invalid("messages: at least one message is required")
    for index, message in enumerate(request.messages):
        if message.role not in ROLES:
            raise _invalid(
                f"messages[{index}].role: {message.role!r} is not one of {', '.join(sorted(ROLES))}"
            )
    temperature = request.temperature
    if temperature is not None and not (math.isfinite(temperature) and 0.0 <= temperature <= 2.0):
        raise _invalid(f"temperature: must be between 0.0 and 2.0, not {temperature:g}")
    if request.max_tokens is not None and request.max_tokens < 1:
        raise _invalid(f"max_tokens: must be at least 1, not {request.max_tokens}")


def _usage(usage: TokenUsage) -> pb.Usage:
    return pb.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


class LLMService(server.LLMServiceBase):
    """`aether.v1.LLMService` over an :class:`LLMProvider` and a :class:`ModelPolicy`."""

    def __init__(
        self,
        sessions: SessionRegistry,
        provider: LLMProvider,
        policy: ModelPolicy | None = None,
    ) -> None:
        self._sessions = sessions
        self.provider = provider
        self.policy = policy or ModelPolicy.default()
        #: Where tokens used are counted (`HubServer` sets it).
        self.metrics: HubMetrics | None = None

    def _count(self, model: str, agent_id: str, usage: TokenUsage) -> None:
        if self.metrics is not None:
            self.metrics.llm_tokens(model, agent_id, usage.prompt_tokens, usage.completion_tokens)

    def _prepare(
        self, request: pb.ChatRequest, context: runtime.ServerContext
    ) -> tuple[CompletionRequest, str]:
        """The provider's request, and the calling agent's id."""
        session = self._sessions.require(context)
        _validate(request)
        model = self.policy.resolve(request.model, session.trust_level)
        if request.model and model != request.model:
            _log.info(
                "agent %s may not use %r; answering with %r",
                session.agent_id,
                request.model,
                model,
            )
        prepared = CompletionRequest(
            messages=tuple(ChatTurn(m.role, m.content) for m in request.messages),
            model=model,
            # float32 on the wire: 0.3 arrives as 0.30000001192...; send what was meant.
            temperature=None if request.temperature is None else round(request.temperature, 6),
            max_tokens=request.max_tokens,
        )
        return prepared, session.agent_id

    async def chat(
        self, request: pb.ChatRequest, context: runtime.ServerContext
    ) -> pb.ChatResponse:
        """One complete answer."""
        prepared, agent_id = self._prepare(request, context)
        try:
            completion = await self.provider.complete(prepared)
        except ProviderError as exc:
            return pb.ChatResponse(success=False, model=prepared.model, error_message=str(exc))
        except Exception:
            # A provider bug must not fail the call with an opaque INTERNAL error.
            _log.exception("LLM provider %s crashed", self.provider.name)
            return pb.ChatResponse(
                success=False,
                model=prepared.model,
                error_message=f"the {self.provider.name} provider failed unexpectedly",
            )
        self._count(completion.model, agent_id, completion.usage)
        return pb.ChatResponse(
            success=True,
            content=completion.content,
            model=completion.model,
            usage=_usage(completion.usage),
            finish_reason=completion.finish_reason,
        )

    async def chat_stream(
        self, request: pb.ChatRequest, context: runtime.ServerContext
    ) -> AsyncIterator[pb.ChatChunk]:
        """The answer in pieces; the last chunk carries finish_reason and usage."""
        prepared, agent_id = self._prepare(request, context)
        model = prepared.model
        try:
            async for chunk in self.provider.stream(prepared):
                model = chunk.model or model
                if chunk.usage is not None:
                    self._count(model, agent_id, chunk.usage)
                yield pb.ChatChunk(
                    delta=chunk.delta,
                    model=model,
                    finish_reason=chunk.finish_reason,
                    usage=_usage(chunk.usage) if chunk.usage is not None else None,
                )
        except ProviderError as exc:
            yield pb.ChatChunk(model=model, error_message=str(exc))
        except Exception:
            _log.exception("LLM provider %s crashed while streaming", self.provider.name)
            yield pb.ChatChunk(
                model=model,
                error_message=f"the {self.provider.name} provider failed unexpectedly",
            )
