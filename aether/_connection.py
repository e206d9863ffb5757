"""Channel construction (TLS, keepalive) and the observable connection state."""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from grpclib.client import Channel
from grpclib.config import Configuration

from aether._connlog import failure_kind
from aether.address import HubAddress, describe_hub_addresses
from aether.config import AgentConfig
from aether.errors import AetherConnectionError, AetherError, map_exception

__all__ = (
    "ChannelFactory",
    "ConnectionState",
    "ConnectionStateTracker",
    "HubDialer",
    "StateCallback",
    "TlsFiles",
    "failover_error",
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


class HubDialer:
    """Connects to one of a Hub's addresses: each in turn, starting after the one it
    connected to last, each attempt bounded by `connect_timeout`.

    So after a lost connection (or a Hub that would not register the agent) the next
    `connect()` tries the next address first: fail-over between the addresses of a
    comma-separated `hub_url`. With one address it connects exactly as `open_channel` and
    a bounded `__connect__` do. A host name with several IPs is resolved by asyncio, which
    tries each IP in turn within the attempt (docs/architecture.md#connection-policy).
    """

    def __init__(
        self,
        addresses: Sequence[HubAddress],
        *,
        tls: TlsFiles | None = None,
        connect_timeout: float = 10.0,
        keepalive_interval: float = 20.0,
        keepalive_timeout: float = 10.0,
        secret: str = "",
    ) -> None:
        if not addresses:
            raise ValueError("HubDialer needs at least one address")
        self._addresses = tuple(addresses)
        self._tls = tls or TlsFiles()
        self._connect_timeout = connect_timeout
        self._keepalive = (keepalive_interval, keepalive_timeout)
        self._secret = secret
        #: Index of the address connected to last (None: never connected).
        self._last: int | None = None

    @classmethod
    def of(cls, config: AgentConfig) -> HubDialer:
        """The dialer of an agent's config: its addresses, TLS and timing settings."""
        return cls(
            config.hub_addresses,
            tls=TlsFiles.of(config),
            connect_timeout=config.connect_timeout,
            keepalive_interval=config.keepalive_interval,
            keepalive_timeout=config.keepalive_timeout,
            secret=config.secret_value(),
        )

    def __repr__(self) -> str:
        return f"<HubDialer {describe_hub_addresses(self._addresses)}>"

    @property
    def addresses(self) -> tuple[HubAddress, ...]:
        """Every address, in the configured order."""
        return self._addresses

    @property
    def current(self) -> HubAddress:
        """The address connected to last (the first one before any connection)."""
        return self._addresses[self._last or 0]

    def _order(self) -> list[int]:
        count = len(self._addresses)
        start = 0 if self._last is None else (self._last + 1) % count
        return [(start + step) % count for step in range(count)]

    async def connect(self) -> Channel:
        """A connected channel to the first address that answers, in turn from the one
        after the address used last.

        Raises `AetherConnectionError` naming every address tried and why each failed
        (retryable when any of the failures is), and `OSError` / `ssl.SSLError` when the
        TLS files cannot be loaded.
        """
        context = ssl_context(self._tls) if self._addresses[0].tls else None
        interval, timeout = self._keepalive
        failures: list[tuple[HubAddress, AetherError]] = []
        for index in self._order():
            address = self._addresses[index]
            channel = open_hub_channel(
                address,
                context=context,
                server_name=self._tls.server_name,
                keepalive_interval=interval,
                keepalive_timeout=timeout,
            )
            try:
                # Bounded: after a network partition heals, an attempt must not wait out
                # the kernel's SYN retries (minutes) before the next one can start.
                await asyncio.wait_for(channel.__connect__(), self._connect_timeout)
            except BaseException as exc:
                channel.close()
                if not isinstance(exc, Exception):
                    raise
                error = map_exception(
                    exc,
                    hub_url=str(address),
                    operation="Connect",
                    secret=self._secret,
                    fresh_connection=True,
                    client_certificate=bool(self._tls.cert_file),
                )
                # What the log calls the failure (a DNS failure, ...) is read from it.
                error.__context__ = exc
                failures.append((address, error))
                if len(self._addresses) > 1:
                    log.debug("connecting to %s failed: %s", address, failure_kind(error))
                continue
            if len(self._addresses) > 1 and index != self._last:
                log.info(
                    "connected to the Aether Hub at %s (address %d of %d)",
                    address,
                    index + 1,
                    len(self._addresses),
                )
            self._last = index
            return channel
        raise failover_error("Connect", failures)


def failover_error(
    operation: str, failures: Sequence[tuple[HubAddress, AetherError]]
) -> AetherError:
    """The error of `operation` failing at every address of `failures` (address, error).

    One failure is returned as it is. Several make one `AetherConnectionError` naming each
    address and why it failed: retryable when any of them is, with their common `reason`
    ("unreachable" when they differ) and the addresses as `hub_url`.
    """
    if not failures:
        raise ValueError("failover_error needs at least one failure")
    if len(failures) == 1:
        return failures[0][1]
    addresses = tuple(address for address, _ in failures)
    errors = [error for _, error in failures]
    parts = [
        f"{address} ({failure_kind(error)}{': ' + error.detail if error.detail else ''})"
        for address, error in failures
    ]
    reasons = {error.reason if isinstance(error, AetherConnectionError) else "" for error in errors}
    combined = AetherConnectionError(
        f"{operation} failed at every address of the Aether Hub ({len(failures)} tried): "
        f"{'; '.join(parts)}. Check that a Hub is running at one of them, that hub_url / "
        "AETHER_HUB_URL lists the right hosts and ports, and that firewalls allow the "
        "connections.",
        hub_url=describe_hub_addresses(addresses),
        retryable=any(error.retryable for error in errors),
        reason=reasons.pop() if len(reasons) == 1 else "unreachable",
        detail="; ".join(parts),
    )
    combined.__context__ = errors[-1].__context__ or errors[-1]
    return combined
