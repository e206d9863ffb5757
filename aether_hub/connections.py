"""Bounds on the Hub's client connections: how many may be open, and how long one may sit
idle.

`ConnectionLimits.wrap(protocol)` puts a grpclib `H2Protocol` inside a `BoundedProtocol`:

- past `max_connections` open connections a new one is closed as soon as it is made
  (the client sees the connection closed; a warning is logged, at most once a minute);
- a connection with no call in progress (no open HTTP/2 stream) for `idle_timeout`
  seconds is closed. Long calls (an agent's task stream, a Subscribe, a WatchTask) keep
  their connection busy, so live agents are never cut; HTTP/2 pings do not count as use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from grpclib.protocol import H2Protocol

__all__ = ("BoundedProtocol", "ConnectionLimits")

log = logging.getLogger("aether_hub.connections")

_WARN_EVERY = 60.0


class ConnectionLimits:
    """The connection bounds of one Hub, and its count of open connections."""

    def __init__(
        self,
        *,
        max_connections: int,
        idle_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._clock = clock
        self.open = 0
        self.refused = 0
        self.idle_closed = 0
        self._last_warning = -_WARN_EVERY

    def wrap(self, inner: H2Protocol) -> BoundedProtocol:
        """`inner` under these bounds."""
        return BoundedProtocol(inner, self)

    def _admit(self) -> bool:
        if self.open >= self.max_connections:
            self.refused += 1
            now = self._clock()
            if now - self._last_warning >= _WARN_EVERY:
                self._last_warning = now
                log.warning(
                    "refusing a connection: %d are open, the limit (--max-connections) is %d",
                    self.open,
                    self.max_connections,
                )
            return False
        self.open += 1
        return True


class BoundedProtocol(H2Protocol):
    """grpclib's server protocol, counted against and closed by `ConnectionLimits`."""

    def __init__(self, inner: H2Protocol, limits: ConnectionLimits) -> None:
        super().__init__(inner.handler, inner.config, inner.h2_config)
        self._limits = limits
        self._transport: asyncio.BaseTransport | None = None
        self._admitted = False
        self._last_busy = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if not self._limits._admit():
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._last_busy = self._limits._clock()
        if self._limits.idle_timeout > 0:
            self._schedule(self._limits.idle_timeout)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        super().data_received(data)
        if self._busy():
            self._last_busy = self._limits._clock()

    def pause_writing(self) -> None:
        if self._admitted:
            super().pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            super().resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._admitted:
            return
        self._admitted = False
        self._limits.open -= 1
        super().connection_lost(exc)

    def _busy(self) -> bool:
        return bool(self.processor.streams)

    def _schedule(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(delay, 0.01), self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        if not self._admitted or self._transport is None:
            return
        now = self._limits._clock()
        if self._busy():
            self._last_busy = now
        idle_for = now - self._last_busy
        timeout = self._limits.idle_timeout
        if idle_for >= timeout:
            self._limits.idle_closed += 1
            log.debug("closing a connection idle for %.0f s (--idle-timeout)", idle_for)
            self._transport.close()
            return
        self._schedule(timeout - idle_for)
