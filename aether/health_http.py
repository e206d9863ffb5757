"""A tiny HTTP/1.1 health endpoint for agents, made for Kubernetes probes and Prometheus.

`GET /healthz` answers 200 while the process is alive (its event loop serves requests);
`GET /readyz` answers 200 only while the probe says the agent is ready (registered with
the Hub and streaming tasks), 503 otherwise. Both return a small JSON body saying why.
`GET /metrics` answers the agent's Prometheus metrics when a registry is given
(docs/observability.md), read on the event loop the agent runs on.

It is a plain asyncio server with no dependency: the only clients are probes and humans
with curl, so it reads one request per connection, answers, and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

if TYPE_CHECKING:
    from aether.agent import AetherAgent

__all__ = ("HealthReport", "HealthServer", "agent_probe")

_log = logging.getLogger("aether.health")

# A probe request is a request line and a few headers; anything bigger is not a probe.
_MAX_REQUEST_BYTES = 8192
# Slow or idle clients must not pin a connection (and a task) forever.
_READ_TIMEOUT_SECONDS = 5.0

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What a probe function returns: is the agent alive, is it ready, and in which state."""

    live: bool
    ready: bool
    state: str = ""


class HealthServer:
    """Serves `/healthz` and `/readyz` from a probe function on `host:port`, and
    `/metrics` from `metrics` (e.g. `agent.metrics_registry`) when given.

    `probe` is called on every request and must be cheap and non-blocking (it usually
    reads an attribute of the agent). Use as `async with HealthServer(probe, port=8080):`
    or call `start()` / `stop()`; `port=0` picks a free port, readable from `.port`.
    """

    def __init__(
        self,
        probe: Callable[[], HealthReport],
        *,
        host: str = "0.0.0.0",  # probes come from the kubelet, not from loopback
        port: int = 8080,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"health port must be between 0 and 65535, got {port}")
        self._probe = probe
        self._metrics = metrics
        self._host = host
        self._port = port
        self._server: asyncio.base_events.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (after `start()`), or the configured one before."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def host(self) -> str:
        """The address the server binds."""
        return self._host

    @property
    def is_serving(self) -> bool:
        """Whether the server accepts connections."""
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        """Bind and start serving. Raises `RuntimeError` if already started."""
        if self._server is not None:
            raise RuntimeError("health server already started")
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, limit=_MAX_REQUEST_BYTES
        )
        _log.info("health endpoint listening on http://%s:%d", self._host, self.port)

    async def stop(self) -> None:
        """Stop serving and close the socket. Safe to call twice or before `start()`."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(
                    reader.readuntil(b"\r\n\r\n"), timeout=_READ_TIMEOUT_SECONDS
                )
            except asyncio.LimitOverrunError:
                await self._respond(writer, 400, {"error": "request too large"}, head=False)
                return
            except (asyncio.IncompleteReadError, asyncio.TimeoutError):
                return  # closed or idle before a full request: nobody to answer
            if self._metrics is not None and _is_metrics_get(head):
                await _respond_raw(
                    writer,
                    200,
                    generate_latest(self._metrics),
                    CONTENT_TYPE_LATEST,
                    head=head.startswith(b"HEAD "),
                )
                return
            status, body, is_head = self._route(head)
            await self._respond(writer, status, body, head=is_head)
        except (ConnectionError, OSError):
            return  # the probe went away; nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _route(self, head: bytes) -> tuple[int, dict[str, object], bool]:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, {"error": "malformed request line"}, False
        method, target, _version = parts
        path = target.split("?", 1)[0]
        if path not in ("/healthz", "/readyz") and not (path == "/metrics" and self._metrics):
            paths = "/healthz, /readyz or /metrics" if self._metrics else "/healthz or /readyz"
            return 404, {"error": f"unknown path {path!r}; try {paths}"}, False
        if method not in ("GET", "HEAD"):
            return 405, {"error": f"method {method} not allowed; use GET"}, False
        try:
            report = self._probe()
        except Exception:  # a broken probe must answer "not ok", never kill the server
            _log.exception("health probe raised")
            return 503, {"status": "error", "state": "probe failed"}, method == "HEAD"
        ok = report.live if path == "/healthz" else report.live and report.ready
        body: dict[str, object] = {"status": "ok" if ok else "unavailable", "state": report.state}
        return (200 if ok else 503), body, method == "HEAD"

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter, status: int, body: dict[str, object], *, head: bool
    ) -> None:
        payload = json.dumps(body, sort_keys=True).encode() + b"\n"
        await _respond_raw(writer, status, payload, "application/json", head=head)


def _is_metrics_get(head: bytes) -> bool:
    """Whether the request is a well-formed `GET /metrics` (or HEAD, query allowed)."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    return (
        len(parts) == 3
        and parts[0] in (b"GET", b"HEAD")
        and parts[1].split(b"?", 1)[0] == b"/metrics"
        and parts[2].startswith(b"HTTP/1.")
    )


async def _respond_raw(
    writer: asyncio.StreamWriter, status: int, payload: bytes, content_type: str, *, head: bool
) -> None:
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(payload)}",
        "Cache-Control: no-store",
        "Connection: close",
        "",
        "",
    ]
    writer.write("\r\n".join(lines).encode("latin-1"))
    if not head:
        writer.write(payload)
    await writer.drain()


def agent_probe(agent: AetherAgent) -> Callable[[], HealthReport]:
    """A probe reading `agent.connection_state`.

    Alive unless the agent has stopped for good after it was started (CLOSED with an
    `error`, e.g. it gave up reconnecting); ready only while CONNECTED (registered and
    streaming tasks) — not while connecting, reconnecting or draining on shutdown.
    """
    from aether._connection import ConnectionState  # the SDK core, imported lazily

    def probe() -> HealthReport:
        state = agent.connection_state
        failed = state is ConnectionState.CLOSED and agent.error is not None
        return HealthReport(
            live=not failed,
            ready=state is ConnectionState.CONNECTED,
            state=state.value if not failed else f"{state.value}: {type(agent.error).__name__}",
        )

    return probe
