"""A loopback TCP proxy that can go silent, as a network partition does."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ("FreezableProxy",)


class FreezableProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port`.

    `freeze()` stops forwarding in both directions on every connection, open or opened
    later (only the open ones with `include_new=False`), without closing anything: nothing
    arrives, nothing fails, as in a partition. `heal()` forwards again; what was held back
    is delivered then, as TCP would.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.flows: list[asyncio.Event] = []
        self.frozen = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        """`127.0.0.1:port`, what an agent's hub_url needs."""
        return f"127.0.0.1:{self.port}"

    def freeze(self, *, include_new: bool = True) -> None:
        self.frozen = include_new
        for flow in self.flows:
            flow.clear()

    def heal(self) -> None:
        self.frozen = False
        for flow in self.flows:
            flow.set()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        flow = asyncio.Event()
        if not self.frozen:
            flow.set()
        self.flows.append(flow)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, flow))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, flow: asyncio.Event
    ) -> None:
        try:
            while True:
                await flow.wait()
                data = await src.read(65536)
                await flow.wait()  # frozen while reading: hold the bytes back
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()
