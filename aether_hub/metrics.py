"""The Hub's Prometheus metrics (docs/observability.md) and the HTTP endpoint serving them.

Every `HubServer` has its own `HubMetrics`, on its own `CollectorRegistry`, so several Hubs
in one process (tests) never share a counter. The parts of the Hub update it through small
O(1) hooks: the task queue (submitted, leased, requeued, finished), the handler guard (one
count and one duration per RPC) and the LLM service (tokens). Gauges of the live state
(queue depth, running tasks, connected agents) are read when scraped, by a collector, so
nothing has to keep them in sync.

`aether hub --metrics-port N` serves them at `http://<host>:N/metrics`
(`MetricsServer`): a tiny asyncio HTTP responder on the Hub's own event loop, so a scrape
reads the queue from the thread that changes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from aether_hub._wire import pb

__all__ = ("HubMetrics", "LiveState", "MetricsServer", "PageHandler")

log = logging.getLogger("aether_hub.metrics")

#: Seconds: from milliseconds (a free agent takes a task at once) to an hour (a long task,
#: or a task waiting for an agent of its type).
_TASK_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
#: Seconds of one RPC (a streaming RPC lasts as long as its stream).
_RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

_OUTCOMES = {
    pb.TaskState.SUCCEEDED: "succeeded",
    pb.TaskState.FAILED: "failed",
    pb.TaskState.CANCELLED: "cancelled",
    pb.TaskState.TIMED_OUT: "timed_out",
}

_HandlerFunc = Callable[["grpclib.server.Stream[Any, Any]"], Coroutine[Any, Any, None]]


class LiveState:
    """How the scrape-time gauges read the Hub: each a function returning current values."""

    def __init__(
        self,
        *,
        pending_by_type: Callable[[], Mapping[str, int]],
        running_by_type: Callable[[], Mapping[str, int]],
        agents_connected: Callable[[], int],
    ) -> None:
        self.pending_by_type = pending_by_type
        self.running_by_type = running_by_type
        self.agents_connected = agents_connected


class _Histogram:
    """Bucket counts and a sum, updated in O(log buckets) without a lock.

    Every update happens on the Hub's event loop, and so does a scrape of `/metrics`:
    prometheus-client's own metric types lock on every update, which the Hub's per-task
    path does not need to pay for.
    """

    __slots__ = ("bounds", "counts", "labels", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        #: The buckets' "le" labels, as prometheus-client writes them.
        self.labels = (*(repr(float(b)) for b in bounds), "+Inf")

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, i.e. the bucket "le" that bound.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs, as the exposition format has them."""
        out: list[tuple[str, float]] = []
        running = 0
        for label, count in zip(self.labels, self.counts, strict=True):
            running += count
            out.append((label, running))
        return out


class _Rpc:
    """One method's calls: a duration histogram per final status code."""

    __slots__ = ("by_code", "ok")

    def __init__(self) -> None:
        self.ok = _Histogram(_RPC_BUCKETS)
        self.by_code: dict[str, _Histogram] = {"OK": self.ok}

    def failed(self, code: str, seconds: float) -> None:
        histogram = self.by_code.get(code)
        if histogram is None:
            histogram = self.by_code[code] = _Histogram(_RPC_BUCKETS)
        histogram.observe(seconds)


class HubMetrics:
    """One Hub's metrics on its own registry (`registry`); the Hub's parts call the hooks.

    The values are plain numbers updated on the Hub's event loop; the registry's collector
    turns them into metric families when scraped (`exposition()`).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._submitted = 0
        self._finished = dict.fromkeys(_OUTCOMES, 0)
        self._dispatch = _Histogram(_TASK_BUCKETS)
        self._run = {state: _Histogram(_TASK_BUCKETS) for state in _OUTCOMES}
        self._requeued = 0
        self._rpcs: dict[str, _Rpc] = {}
        self._tokens: dict[tuple[str, str, str], int] = {}
        self._live: LiveState | None = None
        self.registry.register(_Collector(self))

    # -- scrape-time state ------------------------------------------------------------

    def watch(self, state: LiveState) -> None:
        """Read the live gauges from `state` at every scrape (once per Hub)."""
        if self._live is not None:
            raise RuntimeError("HubMetrics already watches a Hub")
        self._live = state

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format (what /metrics answers)."""
        return generate_latest(self.registry)

    # -- task hooks (TaskQueue) -------------------------------------------------------

    def task_submitted(self) -> None:
        """A task was accepted."""
        self._submitted += 1

    def task_leased(self, waited: float) -> None:
        """A task was leased after `waited` seconds in the queue."""
        self._dispatch.observe(max(0.0, waited))

    def task_requeued(self) -> None:
        """A lease ended without a result and its task went back to the queue."""
        self._requeued += 1

    def task_finished(self, state: pb.TaskState, ran: float | None) -> None:
        """A task reached the final `state`; `ran` seconds since its lease (None: not
        leased when it ended, e.g. cancelled while pending)."""
        if state not in self._finished:
            return
        self._finished[state] += 1
        if ran is not None:
            self._run[state].observe(max(0.0, ran))

    # -- LLM hook (LLMService) --------------------------------------------------------

    def llm_tokens(self, model: str, agent_id: str, prompt: int, completion: int) -> None:
        """Tokens one chat completion used."""
        tokens = self._tokens
        if prompt > 0:
            key = (model, agent_id, "prompt")
            tokens[key] = tokens.get(key, 0) + prompt
        if completion > 0:
            key = (model, agent_id, "completion")
            tokens[key] = tokens.get(key, 0) + completion

    # -- RPC hook (guard) -------------------------------------------------------------

    def instrument(self, method: str, func: _HandlerFunc) -> _HandlerFunc:
        """`func` counting and timing each call of `method` by its final status."""
        rpc = self._rpcs.setdefault(method, _Rpc())
        ok = rpc.ok
        clock = time.perf_counter

        async def handle(stream: grpclib.server.Stream[Any, Any]) -> None:
            start = clock()
            try:
                await func(stream)
            except GRPCError as exc:
                rpc.failed(exc.status.name, clock() - start)
                raise
            except asyncio.CancelledError:
                rpc.failed(Status.CANCELLED.name, clock() - start)
                raise
            except BaseException:
                rpc.failed(Status.UNKNOWN.name, clock() - start)
                raise
            ok.observe(clock() - start)

        return handle

    # -- exposition -------------------------------------------------------------------

    def _collect(self) -> list[Metric]:
        submitted = CounterMetricFamily(
            "aether_hub_tasks_submitted", "Tasks accepted by SubmitTask.", value=self._submitted
        )
        finished = CounterMetricFamily(
            "aether_hub_tasks_finished",
            "Tasks that reached a final state, by outcome.",
            labels=["outcome"],
        )
        run = HistogramMetricFamily(
            "aether_hub_task_run_seconds",
            "Time from a task's lease to its final state, by outcome.",
            labels=["outcome"],
        )
        for state, name in _OUTCOMES.items():
            finished.add_metric([name], self._finished[state])
            histogram = self._run[state]
            run.add_metric([name], histogram.buckets(), histogram.total)
        dispatch = HistogramMetricFamily(
            "aether_hub_task_dispatch_seconds",
            "Time from a task entering the queue (submitted, or requeued) to its lease.",
            buckets=self._dispatch.buckets(),
            sum_value=self._dispatch.total,
        )
        requeued = CounterMetricFamily(
            "aether_hub_leases_requeued",
            "Leases that ended without a result and put their task back in the queue.",
            value=self._requeued,
        )
        rpcs = CounterMetricFamily(
            "aether_hub_rpcs",
            "RPCs handled, by method and final gRPC status code.",
            labels=["method", "code"],
        )
        rpc_seconds = HistogramMetricFamily(
            "aether_hub_rpc_duration_seconds",
            "Time handling an RPC (a streaming one: its whole stream), by method and code.",
            labels=["method", "code"],
        )
        for method in sorted(self._rpcs):
            for code, histogram in sorted(self._rpcs[method].by_code.items()):
                rpcs.add_metric([method, code], histogram.count)
                rpc_seconds.add_metric([method, code], histogram.buckets(), histogram.total)
        tokens = CounterMetricFamily(
            "aether_hub_llm_tokens",
            "LLM tokens used through LLMService, by model, agent and kind (prompt|completion).",
            labels=["model", "agent_id", "kind"],
        )
        for key in sorted(self._tokens):
            tokens.add_metric(list(key), self._tokens[key])
        families: list[Metric] = [
            submitted,
            finished,
            dispatch,
            run,
            requeued,
            rpcs,
            rpc_seconds,
            tokens,
        ]
        if self._live is not None:
            families += _live_families(self._live)
        return families


def _live_families(state: LiveState) -> list[Metric]:
    """Gauges computed when scraped: nothing to keep in sync on the hot path."""
    depth = GaugeMetricFamily(
        "aether_hub_queue_depth",
        "Tasks waiting in the queue (pending), by task type ('' = untyped).",
        labels=["task_type"],
    )
    for task_type, count in sorted(state.pending_by_type().items()):
        depth.add_metric([task_type], count)
    running = GaugeMetricFamily(
        "aether_hub_tasks_running",
        "Tasks leased to an agent and not finished, by task type ('' = untyped).",
        labels=["task_type"],
    )
    for task_type, count in sorted(state.running_by_type().items()):
        running.add_metric([task_type], count)
    agents = GaugeMetricFamily(
        "aether_hub_agents_connected",
        "Agents with a live session.",
        value=state.agents_connected(),
    )
    return [depth, running, agents]


class _Collector:
    """What the registry asks for the Hub's metric families at each scrape."""

    def __init__(self, metrics: HubMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics._collect()


# -- the HTTP endpoint --------------------------------------------------------------------

_MAX_REQUEST_BYTES = 8192
_READ_TIMEOUT_SECONDS = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_HTML = "text/html; charset=utf-8"


#: The other pages served next to /metrics: (HTTP status, HTML) for a path, None if unknown.
PageHandler = Callable[[str], "tuple[int, bytes] | None"]


class MetricsServer:
    """Serves `GET /metrics` from a `HubMetrics` on `host:port` (0 picks a free port), and
    with `pages` the HTML pages it answers (the status page, `aether_hub.statuspage`).

    One request per connection, answered on the event loop it was started from.
    """

    def __init__(
        self, metrics: HubMetrics, *, host: str, port: int, pages: PageHandler | None = None
    ) -> None:
        self._metrics = metrics
        self._pages = pages
        self._host = host
        self._port = port
        self._server: asyncio.base_events.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (after `start()`), or the configured one before."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        """Bind and serve (raises `OSError` when the port is taken)."""
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, limit=_MAX_REQUEST_BYTES
        )
        log.info("metrics on http://%s:%d/metrics", _url_host(self._host), self.port)

    async def stop(self) -> None:
        """Stop serving; safe to call twice or before `start()`."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(
                    reader.readuntil(b"\r\n\r\n"), timeout=_READ_TIMEOUT_SECONDS
                )
            except asyncio.LimitOverrunError:
                await _respond(writer, 400, b"request too large\n", head=False)
                return
            except (asyncio.IncompleteReadError, asyncio.TimeoutError):
                return
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                await _respond(writer, 400, b"malformed request line\n", head=False)
                return
            method, target, _ = parts
            path = target.split("?", 1)[0]
            page = None
            if path != "/metrics" and self._pages is not None and method in ("GET", "HEAD"):
                page = self._pages(path)
            if page is not None:
                status, body = page
                await _respond(writer, status, body, head=method == "HEAD", content_type=_HTML)
            elif path != "/metrics" and (self._pages is None or method in ("GET", "HEAD")):
                await _respond(writer, 404, b"not found; try /metrics\n", head=False)
            elif method not in ("GET", "HEAD"):
                await _respond(writer, 405, b"use GET\n", head=False)
            else:
                body = self._metrics.exposition()
                await _respond(
                    writer, 200, body, head=method == "HEAD", content_type=CONTENT_TYPE_LATEST
                )
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    *,
    head: bool,
    content_type: str = "text/plain; charset=utf-8",
) -> None:
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        "",
        "",
    ]
    writer.write("\r\n".join(lines).encode("latin-1"))
    if not head:
        writer.write(body)
    await writer.drain()
