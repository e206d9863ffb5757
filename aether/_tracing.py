"""OpenTelemetry traces of the SDK's calls to the Hub and of `handle_task`.

Costs nothing unless tracing is set up: OpenTelemetry is never imported here. When the
process has not imported `opentelemetry.trace` (which configuring a tracer provider, or
auto-instrumentation, does), no span is started and no header is sent. With the API's
default no-op provider, spans are non-recording and attributes are not built
(`is_recording()`); a W3C `traceparent` received with a task is still passed on.

The trace context travels as a W3C ``traceparent`` gRPC metadata entry on each call and,
with a task, in `TaskAssignment.metadata["traceparent"]` (set by the Hub).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING

from aether._version import __version__

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.util.types import AttributeValue

__all__ = ("TRACEPARENT", "ClientSpan", "TaskSpan", "client_span", "task_span")

#: The metadata key of the W3C trace context (gRPC metadata and task metadata).
TRACEPARENT = "traceparent"

_TRACER_NAME = "aether"
_cached: tuple[object, Tracer] | None = None


def _tracer() -> Tracer | None:
    """The SDK's tracer, or None when OpenTelemetry is not in use in this process."""
    global _cached
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    cached = _cached
    if cached is not None and cached[0] is provider:
        return cached[1]
    tracer = provider.get_tracer(_TRACER_NAME, __version__)
    _cached = (provider, tracer)
    return tracer


def format_traceparent(span: Span) -> str | None:
    """The W3C traceparent of `span`'s context; None when it has no valid context."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parent_context(traceparent: str | None) -> Context | None:
    """The context of a W3C traceparent (a remote parent); None when absent or malformed."""
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent})
    from opentelemetry import trace

    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def _grpc_code(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    value = getattr(status, "value", None)
    return value if isinstance(value, int) else None


class ClientSpan:
    """A CLIENT span around one call to the Hub (`with client_span(...) as call:`).

    `call.metadata` is what to send with the call (the ``traceparent``; None when there is
    no trace); `call.set(key, value)` adds an attribute when the span records.
    """

    __slots__ = ("_attributes", "_method", "_span", "metadata")

    def __init__(self, method: str, attributes: Mapping[str, AttributeValue] | None) -> None:
        self._method = method
        self._attributes = attributes
        self._span: Span | None = None
        self.metadata: dict[str, str] | None = None

    @property
    def recording(self) -> bool:
        """Whether attributes set now are kept (worth building)."""
        return self._span is not None and self._span.is_recording()

    def set(self, key: str, value: AttributeValue) -> None:
        """Set an attribute on the span (ignored when it does not record)."""
        if self._span is not None and self._span.is_recording():
            self._span.set_attribute(key, value)

    def __enter__(self) -> ClientSpan:
        tracer = _tracer()
        if tracer is None:
            return self
        from opentelemetry.trace import SpanKind

        name = self._method.lstrip("/")
        span = tracer.start_span(name, kind=SpanKind.CLIENT)
        self._span = span
        if span.is_recording():
            service, _, method = name.partition("/")
            span.set_attribute("rpc.system", "grpc")
            span.set_attribute("rpc.service", service)
            span.set_attribute("rpc.method", method)
            if self._attributes:
                span.set_attributes(self._attributes)
        traceparent = format_traceparent(span)
        if traceparent is not None:
            self.metadata = {TRACEPARENT: traceparent}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        if span is None:
            return
        if span.is_recording():
            if exc is not None and not isinstance(exc, GeneratorExit):
                from opentelemetry.trace import Status, StatusCode

                code = _grpc_code(exc)
                if code is not None:
                    span.set_attribute("rpc.grpc.status_code", code)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            else:
                span.set_attribute("rpc.grpc.status_code", 0)
        span.end()


def client_span(method: str, attributes: Mapping[str, AttributeValue] | None = None) -> ClientSpan:
    """A CLIENT span named after the gRPC `method` (``/aether.v1.LLMService/Chat``)."""
    return ClientSpan(method, attributes)


class TaskSpan:
    """The span of one `handle_task` run, current while it runs (so the handler's Hub
    calls are its children); its parent is the task's ``traceparent`` metadata."""

    __slots__ = ("_attempt", "_span", "_task_id", "_task_type", "_token", "_traceparent")

    def __init__(self, traceparent: str | None, task_id: str, task_type: str, attempt: int) -> None:
        self._traceparent = traceparent
        self._task_id = task_id
        self._task_type = task_type
        self._attempt = attempt
        self._span: Span | None = None
        self._token: Token[Context] | None = None

    def set(self, key: str, value: AttributeValue) -> None:
        """Set an attribute on the span (ignored when it does not record)."""
        if self._span is not None and self._span.is_recording():
            self._span.set_attribute(key, value)

    def __enter__(self) -> TaskSpan:
        tracer = _tracer()
        if tracer is None:
            return self
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind

        parent = parent_context(self._traceparent)
        span = tracer.start_span("handle_task", context=parent, kind=SpanKind.CONSUMER)
        if span.is_recording():
            span.set_attribute("aether.task.id", self._task_id)
            span.set_attribute("aether.task.attempt", self._attempt)
            if self._task_type:
                span.set_attribute("aether.task.type", self._task_type)
        self._span = span
        self._token = context.attach(trace.set_span_in_context(span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        if span is None:
            return
        from opentelemetry import context

        if self._token is not None:
            context.detach(self._token)
        if exc is not None and span.is_recording():
            from opentelemetry.trace import Status, StatusCode

            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()


def task_span(traceparent: str | None, task_id: str, task_type: str, attempt: int) -> TaskSpan:
    """The `handle_task` span of a task whose metadata holds `traceparent`."""
    return TaskSpan(traceparent, task_id, task_type, attempt)
