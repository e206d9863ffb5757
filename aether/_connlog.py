"""What an agent says when it cannot reach its Hub: once per kind of failure, not per try.

`ConnectionLog.failed()` is told of every failed connection attempt. The first failure,
and every failure of another kind than the one before (refused, then a DNS failure, ...),
is a WARNING naming the address tried, why it failed and when the next attempt comes;
repeats of the same kind are DEBUG only, so an agent waiting for a Hub that is down does
not fill its log. `succeeded()` then says once, at INFO, that the Hub is reachable again.
"""

from __future__ import annotations

import logging
import socket
import ssl

from aether.errors import AetherConnectionError, AetherError

__all__ = ("ConnectionLog", "failure_kind")

log = logging.getLogger("aether.connection")

# AetherConnectionError.reason -> what the log calls it.
_REASONS = {
    "refused": "connection refused",
    "timeout": "timeout",
    "lost": "connection lost",
    "tls": "TLS error",
    "not-tls": "TLS error (the Hub does not speak TLS)",
    "unavailable": "Hub unavailable",
    "unreachable": "network unreachable",
}


def failure_kind(exc: AetherError) -> str:
    """A short, stable name of why a connection attempt failed ("connection refused",
    "DNS failure", "TLS error", "timeout", ...), for logs."""
    if isinstance(exc, AetherConnectionError):
        # The transport's own exception is kept as the context of the SDK's error.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, socket.gaierror):
            return "DNS failure"
        if exc.reason in _REASONS:
            return _REASONS[exc.reason]
        if isinstance(cause, ssl.SSLError):
            return "TLS error"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, TimeoutError):
            return "timeout"
        return "connection error"
    if exc.status is not None:
        return f"the Hub answered {exc.status.name}"
    return type(exc).__name__


class ConnectionLog:
    """Logs connection failures once per change of their kind, and the recovery once."""

    def __init__(self, address: str, agent_id: str) -> None:
        self._address = address
        self._agent_id = agent_id
        #: The kind of the last failure, or None while connected (or never tried).
        self._kind: str | None = None
        #: Failed attempts since the last success.
        self._failures = 0

    @property
    def failures(self) -> int:
        """Failed attempts since the last successful connection."""
        return self._failures

    @property
    def kind(self) -> str | None:
        """Why the last attempt failed, or None when the last attempt succeeded."""
        return self._kind

    def failed(self, exc: AetherError, retry_in: float) -> None:
        """A connection attempt failed with `exc`; the next one is in `retry_in` seconds."""
        self._failures += 1
        kind = failure_kind(exc)
        if kind == self._kind:
            log.debug(
                "agent %s: connection attempt %d to %s failed again (%s); retrying in %.2fs",
                self._agent_id,
                self._failures,
                self._address,
                kind,
                retry_in,
            )
            return
        first = self._kind is None
        self._kind = kind
        log.warning(
            "agent %s cannot connect to the Aether Hub at %s: %s (%s); retrying in %.2fs%s",
            self._agent_id,
            self._address,
            kind,
            exc,
            retry_in,
            " (repeats of this failure are logged at DEBUG)" if first else "",
        )

    def succeeded(self) -> None:
        """A connection attempt succeeded (registered)."""
        if self._kind is not None:
            log.info(
                "agent %s connected to the Aether Hub at %s after %d failed attempt(s)",
                self._agent_id,
                self._address,
                self._failures,
            )
        self._kind = None
        self._failures = 0
