"""Run dev Hub services on a real grpclib server on 127.0.0.1 for the service tests.

A test gets a :class:`ServiceHarness`: the Hub database (a real SQLite file), a
`SessionRegistry` it fills directly (no AgentService needed), and a channel to the
server the test's services run on.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpclib.client
import grpclib.server
from grpclib._typing import IServable

from aether._wire import pb
from aether_hub.db import Database
from aether_hub.sessions import SessionRegistry

__all__ = ("ServiceHarness", "bearer", "serve_services")


def bearer(token: str) -> dict[str, str]:
    """The call metadata that presents `token`."""
    return {"authorization": f"Bearer {token}"}


@dataclass
class ServiceHarness:
    """What a service test works with."""

    db: Database
    sessions: SessionRegistry
    channel: grpclib.client.Channel
    port: int

    def login(
        self,
        agent_id: str = "agent-1",
        trust_level: pb.TrustLevel = pb.TrustLevel.STANDARD,
    ) -> dict[str, str]:
        """Open a session for `agent_id`; the metadata its calls carry."""
        _, token = self.sessions.open(agent_id, trust_level=trust_level, capabilities={})
        return bearer(token)


@contextlib.asynccontextmanager
async def serve_services(
    tmp_path: Path,
    make_services: Callable[[Database, SessionRegistry], Sequence[IServable]],
) -> AsyncIterator[ServiceHarness]:
    """Start the services `make_services` builds; stop everything afterwards."""
    db = Database(tmp_path / "hub.sqlite3")
    sessions = SessionRegistry(db)
    server = grpclib.server.Server(list(make_services(db, sessions)))
    # Bind the socket ourselves: port 0 picks a free port, and we can read which.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    await server.start(sock=sock)
    channel = grpclib.client.Channel("127.0.0.1", port)
    try:
        yield ServiceHarness(db=db, sessions=sessions, channel=channel, port=port)
    finally:
        channel.close()
        server.close()
        await server.wait_closed()
        db.close()
