"""An agent's Prometheus metrics (docs/observability.md), on its own registry.

Each `AetherAgent` has one `AgentMetrics` (several agents in one process never share a
counter). The runtime updates it with O(1) hooks per task; the gauges of the live state
(running handlers, results waiting for the Hub's acknowledgement) are read at scrape time.
`aether run --health-port N` serves them at `/metrics` beside `/healthz` and `/readyz`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from aether._wire import pb

__all__ = ("AgentMetrics",)

#: Seconds a handler runs: from a millisecond to an hour.
_HANDLER_BUCKETS = (
    0.001,
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

_OUTCOMES = ("succeeded", "failed", "cancelled", "released")


class _LiveCollector:
    """Gauges read when scraped."""

    def __init__(self, running: Callable[[], int], outbox: Callable[[], int]) -> None:
        self._running = running
        self._outbox = outbox

    def collect(self) -> Iterable[Metric]:
        return [
            GaugeMetricFamily(
                "aether_agent_tasks_running",
                "Handlers running now (or waiting for a free slot).",
                value=self._running(),
            ),
            GaugeMetricFamily(
                "aether_agent_result_outbox_depth",
                "Results not yet acknowledged by the Hub (kept across reconnects).",
                value=self._outbox(),
            ),
        ]

    def describe(self) -> Iterable[Metric]:
        return [
            GaugeMetricFamily("aether_agent_tasks_running", ""),
            GaugeMetricFamily("aether_agent_result_outbox_depth", ""),
        ]


class AgentMetrics:
    """One agent's metrics; `registry` is what `/metrics` serves."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        finished = Counter(
            "aether_agent_tasks_finished",
            "Tasks whose result was handed to the Hub, by outcome (succeeded, failed, "
            "cancelled: by the Hub or a timeout, released: handed back on shutdown).",
            ["outcome"],
            registry=r,
        )
        self._succeeded = finished.labels("succeeded")
        self._failed = finished.labels("failed")
        self._cancelled = finished.labels("cancelled")
        self._released = finished.labels("released")
        self._handler_seconds = Histogram(
            "aether_agent_handler_duration_seconds",
            "Time handle_task ran, whatever its outcome.",
            buckets=_HANDLER_BUCKETS,
            registry=r,
        )
        self._reconnects = Counter(
            "aether_agent_reconnects",
            "Sessions re-established after the connection to the Hub was lost.",
            registry=r,
        )
        self._connection_failures = Counter(
            "aether_agent_connection_failures",
            "Connection attempts to the Hub that failed (and were retried).",
            registry=r,
        )
        self._watched = False

    def watch(self, *, running: Callable[[], int], outbox: Callable[[], int]) -> None:
        """Read the live gauges from these functions at every scrape (once)."""
        if self._watched:
            raise RuntimeError("AgentMetrics already watches an agent")
        self._watched = True
        self.registry.register(_LiveCollector(running, outbox))

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)

    def result(self, result: pb.TaskResult) -> None:
        """A handler's result was handed on to the Hub."""
        if result.success:
            self._succeeded.inc()
        elif result.released:
            self._released.inc()
        elif result.cancelled:
            self._cancelled.inc()
        else:
            self._failed.inc()

    def handler_ran(self, seconds: float) -> None:
        """handle_task returned (or raised) after `seconds`."""
        self._handler_seconds.observe(seconds)

    def reconnected(self) -> None:
        """A lost session was re-established."""
        self._reconnects.inc()

    def connection_failed(self) -> None:
        """A connection attempt failed and will be retried."""
        self._connection_failures.inc()
