"""In-memory grpclib channels to a set of service handlers (no socket, no port).

This is the ONLY module of `aether` that touches grpclib internals. grpclib's public
`grpclib.testing.ChannelFor` builds the in-memory transport but exposes neither its server
(needed to observe request messages) nor a close that tolerates a channel its user already
closed (an agent closes its channel on stop). The two private attributes read below,
`ChannelFor._server` / `._server_protocol` and `Channel._protocol`, are set by
`ChannelFor.__aenter__` in grpclib 0.4.x; if grpclib changes them, only this file breaks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType

from grpclib.client import Channel
from grpclib.events import RecvMessage, listen
from grpclib.testing import ChannelFor

from aether_hub.server import Servable

__all__ = ("Observer", "open_in_memory_channel")

#: Called with every request message the handlers receive.
Observer = Callable[[object], None]


class _ChannelFor(ChannelFor):
    """`ChannelFor` that shows request messages to `observer` and closes idempotently."""

    def __init__(self, services: Sequence[Servable], observer: Observer | None) -> None:
        super().__init__(services)
        self._observer = observer

    async def __aenter__(self) -> Channel:
        channel = await super().__aenter__()
        observer = self._observer
        if observer is not None:

            async def _seen(event: RecvMessage) -> None:
                observer(event.message)

            listen(self._server, RecvMessage, _seen)
        return channel

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        # grpclib's own exit assumes the channel is still open.
        if self._channel._protocol is not None:
            self._channel._protocol.connection_lost(None)
            self._channel.close()
        self._server_protocol.connection_lost(None)
        self._server.close()
        await self._server.wait_closed()


async def open_in_memory_channel(
    stack: AsyncExitStack, services: Sequence[Servable], observer: Observer | None = None
) -> Channel:
    """A connected channel to `services`, served in this process; closed with `stack`.

    Each call gets a channel (and server side) of its own, so one user closing its channel
    affects nobody else.
    """
    return await stack.enter_async_context(_ChannelFor(services, observer))
