"""Channel construction (TLS, keepalive) and the observable connection state."""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from grpclib.client import Channel
from grpclib.config import Configuration

from aether.address import HubAddress
from aether.config import AgentConfig

__all__ = (
    "ChannelFactory",
    "ConnectionState",
    "ConnectionStateTracker",
    "StateCallback",
    "TlsFiles",
    "open_channel",
    "open_hub_channel",
    "ssl_context",
)

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


#: Makes a channel to the Hub (e.g. an in-memory one in tests). The channel may be returned
#: already connected.
ChannelFactory = Callable[[], Awaitable[Channel]]


@dataclass(frozen=True)
class TlsFiles:
    """The TLS settings of a connection, as `AgentConfig`'s `tls_*` fields name them."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    @classmethod
    def of(cls, config: AgentConfig) -> TlsFiles:
        """The `tls_*` settings of an agent's config."""
        return cls(
            ca_file=config.tls_ca_file,
            cert_file=config.tls_cert_file,
            key_file=config.tls_key_file,
            server_name=config.tls_server_name,
        )

    @property
    def given(self) -> bool:
        """Whether any setting is given (which alone means TLS)."""
        return any((self.ca_file, self.cert_file, self.key_file, self.server_name))


def ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    """A client TLS context: verify with `ca_file` (else the system CAs), present
    `cert_file`/`key_file` when given (mutual TLS), speak HTTP/2.

    Raises `OSError` / `ssl.SSLError` when a file is missing or unreadable.
    """
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    context.set_alpn_protocols(["h2"])
    return context


def _keepalive_configuration(
    *, interval: float, timeout: float, server_name: str | None
) -> Configuration:
    # grpclib only notices a silently dead peer through keepalive pings, and its private
    # fields work only when set together (docs/architecture.md#connection-policy): ping
    # every `interval` even without calls, with no cap on pings without data, drop the link
    # when an ack does not arrive within `timeout`.
    return Configuration(
        _keepalive_time=interval,
        _keepalive_timeout=timeout,
        _keepalive_permit_without_calls=True,
        _http2_max_pings_without_data=0,
        _http2_min_sent_ping_interval_without_data=interval,
        ssl_target_name_override=server_name,
    )


def channel_configuration(config: AgentConfig) -> Configuration:
    """grpclib configuration with keepalive on (`keepalive_interval`, `keepalive_timeout`)."""
    return _keepalive_configuration(
        interval=config.keepalive_interval,
        timeout=config.keepalive_timeout,
        server_name=config.tls_server_name,
    )


def open_hub_channel(
    address: HubAddress,
    *,
    context: ssl.SSLContext | None,
    server_name: str | None = None,
    keepalive_interval: float = 20.0,
    keepalive_timeout: float = 10.0,
) -> Channel:
    """A grpclib channel to `address` (not yet connected), with keepalive on; TLS with
    `context` (from `ssl_context`) when given."""
    return Channel(
        address.host,
        address.port,
        ssl=context,
        config=_keepalive_configuration(
            interval=keepalive_interval, timeout=keepalive_timeout, server_name=server_name
        ),
    )


def open_channel(config: AgentConfig) -> Channel:
    """A grpclib channel to the configured Hub (not yet connected)."""
    tls = TlsFiles.of(config)
    return open_hub_channel(
        config.hub_address,
        context=ssl_context(tls) if config.uses_tls else None,
        server_name=tls.server_name,
        keepalive_interval=config.keepalive_interval,
        keepalive_timeout=config.keepalive_timeout,
    )
