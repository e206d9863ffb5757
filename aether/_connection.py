"""Channel construction (TLS, keepalive) and the observable connection state."""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
from collections.abc import AsyncIterator, Callable

from grpclib.client import Channel
from grpclib.config import Configuration

from aether.config import AgentConfig

__all__ = ("ConnectionState", "ConnectionStateTracker", "StateCallback", "open_channel")

log = logging.getLogger("aether.connection")


class ConnectionState(enum.Enum):
    """Where the agent's link to the Hub is."""

    #: Not started yet, or connecting for the first time.
    CONNECTING = "connecting"
    #: Registered, streaming tasks and heartbeating.
    CONNECTED = "connected"
    #: The link broke; backing off and reconnecting.
    RECONNECTING = "reconnecting"
    #: Shutting down: no new tasks, running ones finishing.
    DRAINING = "draining"
    #: Stopped (cleanly or after giving up).
    CLOSED = "closed"


StateCallback = Callable[[ConnectionState], object]


class ConnectionStateTracker:
    """Holds the current state, logs each transition once and notifies observers.

    Observers are callbacks (exceptions they raise are logged, never propagated) and async
    iterators from `watch()`.
    """

    def __init__(self, initial: ConnectionState = ConnectionState.CLOSED) -> None:
        self._state = initial
        self._callbacks: list[StateCallback] = []
        self._watchers: set[asyncio.Queue[ConnectionState]] = set()

    @property
    def state(self) -> ConnectionState:
        """The current state."""
        return self._state

    def add_callback(self, callback: StateCallback) -> None:
        """Call `callback(state)` on every transition."""
        self._callbacks.append(callback)

    def remove_callback(self, callback: StateCallback) -> None:
        """Stop calling `callback`."""
        self._callbacks.remove(callback)

    def set(self, state: ConnectionState, reason: str = "") -> None:
        """Move to `state`; a no-op when already there."""
        if state is self._state:
            return
        previous, self._state = self._state, state
        log.info(
            "connection %s -> %s%s",
            previous.value,
            state.value,
            f" ({reason})" if reason else "",
        )
        for callback in list(self._callbacks):
            try:
                callback(state)
            except Exception:
                log.exception("connection state callback %r failed", callback)
        for queue in self._watchers:
            queue.put_nowait(state)

    async def watch(self) -> AsyncIterator[ConnectionState]:
        """Yield the current state, then every later one, until a change to CLOSED (inclusive).

        An initial CLOSED (not started yet) does not end the iteration.
        """
        queue: asyncio.Queue[ConnectionState] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            yield self._state
            while True:
                state = await queue.get()
                yield state
                if state is ConnectionState.CLOSED:
                    return
        finally:
            self._watchers.discard(queue)


def _ssl_context(config: AgentConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.tls_ca_file)
    if config.tls_cert_file:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    context.set_alpn_protocols(["h2"])
    return context


def channel_configuration(config: AgentConfig) -> Configuration:
    """grpclib configuration with keepalive on.

    grpclib only notices a silently dead peer through keepalive pings, and its private
    fields work only when set together (DESIGN.md §4): ping every `keepalive_interval`
    even without calls, with no cap on pings without data, drop the link when an ack does
    not arrive within `keepalive_timeout`.
    """
    return Configuration(
        _keepalive_time=config.keepalive_interval,
        _keepalive_timeout=config.keepalive_timeout,
        _keepalive_permit_without_calls=True,
        _http2_max_pings_without_data=0,
        _http2_min_sent_ping_interval_without_data=config.keepalive_interval,
        ssl_target_name_override=config.tls_server_name,
    )


def open_channel(config: AgentConfig) -> Channel:
    """A grpclib channel to the configured Hub (not yet connected)."""
    address = config.hub_address
    return Channel(
        address.host,
        address.port,
        ssl=_ssl_context(config) if config.uses_tls else None,
        config=channel_configuration(config),
    )
