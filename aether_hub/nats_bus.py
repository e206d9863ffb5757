"""A :class:`~aether_hub.bus.MessageBus` bridged to a real NATS server (nats-py).

Used when the Hub runs with ``--nats-url``. nats-py is imported lazily, so the
Hub without that flag does not need the ``[hub]`` extra's NATS client.

``--nats-url`` names one server or several, comma-separated
(``nats://a:4222,nats://b:4222``), usually the nodes of one NATS cluster. The Hub
connects to the first one that answers, in the order given, and when it loses that
server it moves on to the next one (and to the servers the cluster advertises),
retrying for as long as it runs. Credentials in the URLs (``nats://user:pass@host``,
``nats://token@host``) are never logged or shown: every URL in a message, a log line or
a ``repr`` has them cut out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import ParseResult, urlsplit

from aether_hub.bus import (
    DEFAULT_PENDING_BYTES_LIMIT,
    DEFAULT_PENDING_LIMIT,
    BusClosedError,
    BusError,
    BusMessageData,
    InProcessBus,
    MessageBus,
    NoRespondersError,
    RequestTimeoutError,
    Subscription,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ("NatsBus", "NatsServers", "NatsUrlError", "create_bus", "parse_nats_urls")

_log = logging.getLogger(__name__)

_SCHEMES = ("nats", "tls", "ws", "wss")
#: Seconds between two attempts at the same server while reconnecting (the next server
#: of the list is tried at once).
RECONNECT_TIME_WAIT = 1
#: A server that leaves more than MAX_OUTSTANDING_PINGS pings, sent every PING_INTERVAL
#: seconds, unanswered is given up (a silent network, not a closed connection): noticed
#: within 40-60 s (nats-py's defaults would take 4-6 minutes).
PING_INTERVAL = 20
MAX_OUTSTANDING_PINGS = 2


class NatsUrlError(BusError, ValueError):
    """`--nats-url` (or `nats_url`) has a part that is not a NATS server URL.

    `part` is the bad part with any credentials cut out, `index` its 1-based position.
    """

    def __init__(self, index: int, part: str, reason: str) -> None:
        shown = f" {part!r}" if part else ""
        super().__init__(f"--nats-url: part {index}{shown} is not a NATS server URL: {reason}")
        self.index = index
        self.part = part


def _redact_url(url: str) -> str:
    """The URL without user:password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


@dataclass(frozen=True, slots=True)
class NatsServers:
    """The servers of a `--nats-url` list, checked, with their credentials apart.

    `urls` are what nats-py connects to; `shown` the same without credentials. When
    every part that carries credentials carries the same ones, they are taken out of
    the URLs into `user` / `password` (or `token`), so that nats-py also presents them
    to the servers the cluster advertises (which come without credentials).
    """

    urls: tuple[str, ...]
    shown: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    token: str | None = None

    def __repr__(self) -> str:
        return f"NatsServers({', '.join(self.shown)})"

    @property
    def display(self) -> str:
        """The servers for a message: ``nats://a:4222, nats://b:4222``."""
        return ", ".join(self.shown)

    def scrub(self, text: str) -> str:
        """`text` with every credential of these servers replaced by ``***``."""
        for secret in (self.user, self.password, self.token):
            if secret:
                text = text.replace(secret, "***")
        for url in self.urls:
            userinfo = _userinfo(url)
            if userinfo:
                user, colon, password = userinfo.partition(":")
                text = text.replace(userinfo, "***").replace(password if colon else user, "***")
        return text


def _userinfo(url: str) -> str:
    rest = url.partition("://")[2] or url
    netloc = rest.split("/", 1)[0]
    return netloc.rpartition("@")[0]


def parse_nats_urls(value: str | Sequence[str]) -> NatsServers:
    """Check every server of `value` (comma-separated, or a list); raise NatsUrlError
    naming the first bad part (by position, without its credentials)."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    urls: list[str] = []
    for index, raw in enumerate(parts, start=1):
        part = raw.strip()
        shown = _redact_url(part)
        if not part:
            raise NatsUrlError(index, "", "it is empty (a stray comma?)")
        if any(ch.isspace() for ch in part):
            raise NatsUrlError(index, shown, "it contains whitespace")
        scheme, sep, _ = part.partition("://")
        if sep and scheme.lower() not in _SCHEMES:
            raise NatsUrlError(
                index, shown, f"unknown scheme {scheme!r} (use {', '.join(_SCHEMES)})"
            )
        full = part if sep else f"nats://{part}"
        try:
            split = urlsplit(full)
            port = split.port
        except ValueError as exc:
            raise NatsUrlError(index, shown, f"bad port ({exc})") from None
        if not split.hostname:
            raise NatsUrlError(index, shown, "no host")
        if port == 0:
            raise NatsUrlError(index, shown, "port 0")
        if split.path not in ("", "/") or split.query or split.fragment:
            raise NatsUrlError(index, shown, "a server URL has no path or query")
        urls.append(full)
    websocket = [urlsplit(url).scheme.lower() in ("ws", "wss") for url in urls]
    if any(websocket) and not all(websocket):
        index = websocket.index(not websocket[0]) + 1
        raise NatsUrlError(
            index, _redact_url(urls[index - 1]), "websocket and plain NATS URLs cannot be mixed"
        )
    return _split_credentials(tuple(urls))


def _split_credentials(urls: tuple[str, ...]) -> NatsServers:
    shown = tuple(_redact_url(url) for url in urls)
    infos = {_userinfo(url) for url in urls} - {""}
    if len(infos) != 1:
        # None, or different ones per server: nats-py uses each URL's own.
        return NatsServers(urls=urls, shown=shown)
    (info,) = infos
    bare = tuple(url.replace(f"{info}@", "", 1) if _userinfo(url) == info else url for url in urls)
    user, colon, password = info.partition(":")
    if colon:
        return NatsServers(urls=bare, shown=shown, user=user, password=password)
    return NatsServers(urls=bare, shown=shown, token=user)


class NatsBus:
    """Publish, request and subscribe through a NATS connection (one server or a cluster)."""

    def __init__(
        self,
        client: Client,
        servers: NatsServers | str,
        *,
        pending_limit: int,
        pending_bytes_limit: int = DEFAULT_PENDING_BYTES_LIMIT,
    ) -> None:
        self._nc = client
        self._servers = servers if isinstance(servers, NatsServers) else parse_nats_urls(servers)
        self._url = self._servers.display
        self._pending_limit = pending_limit
        self._pending_bytes_limit = pending_bytes_limit
        self._queues: set[Subscription] = set()

    def __repr__(self) -> str:
        return f"NatsBus(url={self._url!r})"

    @property
    def servers(self) -> tuple[str, ...]:
        """The configured servers, in order, without credentials."""
        return self._servers.shown

    @property
    def client(self) -> Client:
        """The nats-py connection (for JetStream, aether_hub/taskreplica.py)."""
        return self._nc

    @property
    def connected_url(self) -> str | None:
        """The server the bus is connected to now (without credentials), or None while
        it is reconnecting or closed."""
        return _shown(self._nc.connected_url)

    @classmethod
    async def connect(
        cls,
        url: str | Sequence[str],
        *,
        connect_timeout: float = 5.0,
        pending_limit: int = DEFAULT_PENDING_LIMIT,
        pending_bytes_limit: int = DEFAULT_PENDING_BYTES_LIMIT,
    ) -> NatsBus:
        """Connect to the first NATS server of `url` (one URL, several comma-separated,
        or a list) that answers, in order; each gets `connect_timeout` seconds. Raises
        NatsUrlError for a bad part, BusError naming the servers when none answers."""
        servers = parse_nats_urls(url)
        try:
            from nats.aio.client import Client as NatsClient
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise BusError(
                "--nats-url needs the NATS client: pip install 'aether-agent-sdk[hub]'"
            ) from exc

        connected = False
        last_error: list[str] = []
        # The server the connection is (or was last) on, for the disconnect line: nats-py
        # no longer says once the connection is lost.
        current: list[str] = [servers.display]

        async def _on_error(exc: Exception) -> None:
            # Errors repeat once per reconnect attempt: keep them out of the warning log.
            reason = servers.scrub(str(exc) or type(exc).__name__)
            if not connected:
                last_error[:] = [reason]
            _log.debug("NATS connection error: %s", reason)

        async def _on_disconnected() -> None:
            if client.is_closed or client.is_draining:
                return
            _log.warning("lost the connection to NATS at %s; reconnecting", current[0])

        async def _on_reconnected() -> None:
            current[0] = _shown(client.connected_url) or servers.display
            _log.info("reconnected to NATS at %s", current[0])

        async def _on_discovered() -> None:
            known = ", ".join(_shown(uri) or "?" for uri in client.discovered_servers)
            _log.debug("the NATS cluster advertised servers: %s", known)

        client = NatsClient()
        try:
            # nats-py retries the first connection forever when reconnects are
            # unlimited, so bound the whole attempt ourselves: each server gets
            # connect_timeout, in the order given.
            await asyncio.wait_for(
                client.connect(
                    list(servers.urls),
                    connect_timeout=max(1, math.ceil(connect_timeout)),
                    allow_reconnect=True,
                    # Never give up a server: a cluster node that restarts is used again.
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=RECONNECT_TIME_WAIT,
                    # The order given is the order of preference (give each Hub its
                    # nearest node first); nats-py would shuffle it otherwise.
                    dont_randomize=True,
                    ping_interval=PING_INTERVAL,
                    max_outstanding_pings=MAX_OUTSTANDING_PINGS,
                    # A Hub that stops should not wait long for a lost server to drain.
                    drain_timeout=2,
                    error_cb=_on_error,
                    disconnected_cb=_on_disconnected,
                    reconnected_cb=_on_reconnected,
                    discovered_server_cb=_on_discovered,
                    # Credentials shared by every URL, so that servers the cluster advertises
                    # get them too (None: each URL's own, or none).
                    user=servers.user,
                    password=servers.password,
                    token=servers.token,
                ),
                timeout=connect_timeout * len(servers.urls),
            )
        except Exception as exc:
            with contextlib.suppress(Exception):
                await client.close()
            reason = last_error[0] if last_error else servers.scrub(str(exc) or type(exc).__name__)
            raise BusError(f"cannot connect to NATS at {servers.display}: {reason}") from None
        connected = True
        current[0] = _shown(client.connected_url) or servers.display
        _log.info("connected to NATS at %s", current[0])
        return cls(
            client, servers, pending_limit=pending_limit, pending_bytes_limit=pending_bytes_limit
        )

    def _failed(self, what: str, subject: str, exc: BaseException) -> str:
        return self._servers.scrub(f"NATS {what} {subject} failed: {exc}")

    async def publish(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str],
        reply_to: str = "",
    ) -> None:
        """Publish on NATS (headers only when there are some)."""
        from nats.errors import Error as NatsError

        if self._nc.is_closed:
            raise BusClosedError()
        try:
            await self._nc.publish(subject, payload, reply=reply_to, headers=dict(headers) or None)
        except (NatsError, OSError) as exc:
            raise BusError(self._failed("publish on", subject, exc)) from None

    async def request(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str],
        timeout: float,
    ) -> BusMessageData:
        """NATS request-reply; no responders and timeouts become the bus errors."""
        from nats.errors import Error as NatsError
        from nats.errors import NoRespondersError as NatsNoResponders
        from nats.errors import TimeoutError as NatsTimeout

        if self._nc.is_closed:
            raise BusClosedError()
        try:
            reply = await self._nc.request(
                subject, payload, timeout=timeout, headers=dict(headers) or None
            )
        except NatsNoResponders:
            raise NoRespondersError(subject) from None
        except (NatsTimeout, asyncio.TimeoutError):
            raise RequestTimeoutError(subject, timeout) from None
        except (NatsError, OSError) as exc:
            raise BusError(self._failed("request on", subject, exc)) from None
        return _to_data(reply)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, subject: str, queue_group: str = ""
    ) -> AsyncIterator[AsyncIterator[BusMessageData]]:
        """A NATS subscription for the lifetime of the context."""
        if self._nc.is_closed:
            raise BusClosedError()
        queue = Subscription(subject, queue_group, self._pending_limit, self._pending_bytes_limit)

        async def _on_message(msg: Msg) -> None:
            queue.offer(_to_data(msg))

        from nats.errors import Error as NatsError

        try:
            sub = await self._nc.subscribe(subject, queue=queue_group, cb=_on_message)
        except (NatsError, OSError) as exc:
            raise BusError(self._failed("subscribe to", subject, exc)) from None
        # Make sure the server knows the subscription before the caller publishes; while
        # reconnecting nats-py re-sends it after the reconnect instead.
        with contextlib.suppress(NatsError, OSError, asyncio.TimeoutError):
            await self._nc.flush(timeout=5)

        self._queues.add(queue)
        try:
            yield queue
        finally:
            if queue in self._queues:
                self._queues.discard(queue)
                queue.end()
            if not self._nc.is_closed:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def close(self) -> None:
        """End the subscriptions, then drain and close the NATS connection."""
        for queue in self._queues:
            queue.end()
        self._queues.clear()
        if self._nc.is_closed:
            return
        if not self._nc.is_connected:
            # Nothing to drain while reconnecting (and drain would wait for its timeout).
            with contextlib.suppress(Exception):
                await self._nc.close()
            return
        try:
            await self._nc.drain()
        except Exception as exc:
            # Draining needs a live connection; while reconnecting just close.
            _log.debug("NATS drain failed (%s); closing", exc)
            try:
                await self._nc.close()
            except Exception as close_exc:
                _log.debug("closing the NATS connection failed: %s", close_exc)


def _shown(uri: ParseResult | None) -> str | None:
    """A server URL nats-py holds, without credentials."""
    if uri is None:
        return None
    return _redact_url(uri.geturl())


def _to_data(msg: Msg) -> BusMessageData:
    return BusMessageData(
        subject=msg.subject,
        payload=msg.data,
        headers=dict(msg.headers or {}),
        reply_to=msg.reply or "",
    )


async def create_bus(
    nats_url: str | None, *, pending_bytes_limit: int = DEFAULT_PENDING_BYTES_LIMIT
) -> MessageBus:
    """The in-process bus, or a bus bridged to the NATS server(s) of `nats_url` (one URL
    or several, comma-separated); a subscriber with more than `pending_bytes_limit`
    bytes waiting is cut off."""
    if not nats_url:
        return InProcessBus(pending_bytes_limit=pending_bytes_limit)
    return await NatsBus.connect(nats_url, pending_bytes_limit=pending_bytes_limit)
