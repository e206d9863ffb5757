"""OpenTelemetry traces of the Hub: a SERVER span per gRPC call (started by the guard
around every handler), and, per task, a span for each dispatch (lease) and for its result.

A task's trace context is kept with it: SubmitTask stores the W3C ``traceparent`` of its
own server span (or, when the Hub does not trace, the caller's header) in the task's
metadata under the reserved key ``traceparent``. Every dispatch is a child of that context
and sends its own ``traceparent`` to the agent in `TaskAssignment.metadata`, so each
attempt, on whichever agent, joins the submitter's trace.

Costs nothing unless OpenTelemetry is in use: when the process has not imported
`opentelemetry.trace` (configuring a tracer provider, or ``opentelemetry-instrument``,
does), nothing here imports it or starts a span; with the API's no-op provider spans do
not record and no attributes are built.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING

from aether_hub._wire import pb
from aether_hub.taskrecord import TaskRecord

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

__all__ = (
    "TRACEPARENT",
    "ResultSpan",
    "ServerSpan",
    "dispatch_assignment",
    "result_span",
    "server_span",
    "stamp_submission",
)

#: The reserved task metadata key (and gRPC metadata key) of the W3C trace context.
TRACEPARENT = "traceparent"

# Per-session plumbing, not work of anyone's trace: a span each would only be noise
# (a heartbeat every few seconds, streams as long as a session).
_UNTRACED: frozenset[str] = frozenset(
    {
        "/aether.v1.AgentService/Heartbeat",
        "/aether.v1.AgentService/StreamTasks",
        "/aether.v1.AgentService/SubmitResults",
        "/aether.v1.AgentService/SubmitResultBatches",
    }
)
_UNTRACED_PREFIXES = ("/grpc.",)

_TRACEPARENT_RE = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")

_cached: tuple[object, Tracer] | None = None


def _tracer() -> Tracer | None:
    """The Hub's tracer, or None when OpenTelemetry is not in use in this process."""
    global _cached
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    cached = _cached
    if cached is not None and cached[0] is provider:
        return cached[1]
    from aether import __version__

    tracer = provider.get_tracer("aether_hub", __version__)
    _cached = (provider, tracer)
    return tracer


def _traceparent_of(span: Span) -> str | None:
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _parent(traceparent: str | None) -> Context | None:
    if not traceparent or not _TRACEPARENT_RE.match(traceparent):
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent})


def _header(metadata: Mapping[str, str | bytes] | None) -> str | None:
    if metadata is None:
        return None
    value = metadata.get(TRACEPARENT)
    return value if isinstance(value, str) else None


class ServerSpan:
    """The SERVER span of one gRPC call, current while the handler runs."""

    __slots__ = ("_metadata", "_method", "_span", "_token")

    def __init__(self, method: str, metadata: Mapping[str, str | bytes] | None) -> None:
        self._method = method
        self._metadata = metadata
        self._span: Span | None = None
        self._token: Token[Context] | None = None

    def __enter__(self) -> ServerSpan:
        method = self._method
        if method in _UNTRACED or method.startswith(_UNTRACED_PREFIXES):
            return self
        tracer = _tracer()
        if tracer is None:
            return self
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind

        name = method.lstrip("/")
        span = tracer.start_span(
            name, context=_parent(_header(self._metadata)), kind=SpanKind.SERVER
        )
        if span.is_recording():
            service, _, rpc_method = name.partition("/")
            span.set_attribute("rpc.system", "grpc")
            span.set_attribute("rpc.service", service)
            span.set_attribute("rpc.method", rpc_method)
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
        if span.is_recording():
            status = getattr(exc, "status", None) if exc is not None else None
            code = getattr(status, "value", None)
            if exc is None:
                span.set_attribute("rpc.grpc.status_code", 0)
            elif isinstance(code, int):
                span.set_attribute("rpc.grpc.status_code", code)
                # Server-side errors only (OpenTelemetry's RPC conventions): a refused
                # request (NOT_FOUND, INVALID_ARGUMENT...) is the caller's error.
                if code in _SERVER_ERRORS:
                    _mark_error(span, exc)
            elif not isinstance(exc, GeneratorExit):
                span.set_attribute("rpc.grpc.status_code", 2)  # UNKNOWN
                _mark_error(span, exc)
        span.end()


# UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS
_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})


def _mark_error(span: Span, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def server_span(method: str, metadata: Mapping[str, str | bytes] | None) -> ServerSpan:
    """The SERVER span of a call of `method` (``/aether.v1.TaskService/SubmitTask``), a
    child of the caller's ``traceparent`` header when it sent one."""
    return ServerSpan(method, metadata)


def stamp_submission(
    task_metadata: dict[str, str], call_metadata: Mapping[str, str | bytes] | None
) -> None:
    """Keep the trace context of a SubmitTask call with the task (in `task_metadata`):
    the current (server) span's, else the caller's own ``traceparent`` header; nothing
    when there is neither."""
    traceparent: str | None = None
    if "opentelemetry.trace" in sys.modules:
        from opentelemetry import trace

        traceparent = _traceparent_of(trace.get_current_span())
    if traceparent is None:
        header = _header(call_metadata)
        if header is not None and _TRACEPARENT_RE.match(header):
            traceparent = header
    if traceparent is not None:
        task_metadata[TRACEPARENT] = traceparent


def dispatch_assignment(rec: TaskRecord, agent_id: str) -> pb.TaskAssignment:
    """The assignment leasing `rec` to an agent, with a ``dispatch`` span (a child of the
    task's trace context) whose ``traceparent`` the assignment carries."""
    assignment = rec.assignment()
    traceparent = rec.metadata.get(TRACEPARENT)
    if traceparent is None:
        return assignment
    tracer = _tracer()
    if tracer is None:
        return assignment
    from opentelemetry.trace import SpanKind

    span = tracer.start_span("dispatch", context=_parent(traceparent), kind=SpanKind.PRODUCER)
    if span.is_recording():
        span.set_attribute("aether.task.id", rec.task_id)
        span.set_attribute("aether.task.attempt", rec.attempt)
        span.set_attribute("aether.agent.id", agent_id)
        if rec.task_type:
            span.set_attribute("aether.task.type", rec.task_type)
    mine = _traceparent_of(span)
    span.end()
    if mine is not None and mine != traceparent:
        assignment.metadata = {**rec.metadata, TRACEPARENT: mine}
    return assignment


class ResultSpan:
    """A ``result`` span around recording one result (see `result_span`)."""

    __slots__ = ("_lookup", "_result", "_span")

    def __init__(self, lookup: Callable[[str], TaskRecord | None], result: pb.TaskResult) -> None:
        self._lookup = lookup
        self._result = result
        self._span: Span | None = None

    def __enter__(self) -> ResultSpan:
        tracer = _tracer()
        if tracer is None:
            return self
        rec = self._lookup(self._result.task_id)
        traceparent = None if rec is None else rec.metadata.get(TRACEPARENT)
        if rec is None or traceparent is None:
            return self
        from opentelemetry.trace import SpanKind

        span = tracer.start_span("result", context=_parent(traceparent), kind=SpanKind.CONSUMER)
        if span.is_recording():
            result = self._result
            span.set_attribute("aether.task.id", rec.task_id)
            span.set_attribute("aether.task.attempt", rec.attempt)
            span.set_attribute("aether.task.success", result.success)
            if result.released:
                span.set_attribute("aether.task.released", True)
            if result.cancelled:
                span.set_attribute("aether.task.cancelled", True)
        self._span = span
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
        if exc is not None and span.is_recording():
            _mark_error(span, exc)
        span.end()


def result_span(lookup: Callable[[str], TaskRecord | None], result: pb.TaskResult) -> ResultSpan:
    """A ``result`` span around recording `result`, a child of the trace context of its
    task (found with `lookup`, only when tracing); none when the task has none."""
    return ResultSpan(lookup, result)
