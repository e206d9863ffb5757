"""Helpers for tests that drive a real dev Hub over loopback with the generated stubs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpclib.client
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from aether._wire import client, pb
from aether_hub.server import HubServer
from aether_hub.settings import HubConfig

__all__ = (
    "AgentConn",
    "FakeClock",
    "bearer",
    "grpc_status",
    "running_hub",
)

WAIT = 10.0  # generous per-event timeout; tests never assert on timing


class FakeClock:
    """Both Hub clocks, moved only by `advance`."""

    def __init__(self) -> None:
        self._mono = 1000.0
        self._wall = time.time()

    def monotonic(self) -> float:
        """The fake monotonic reading."""
        return self._mono

    def time(self) -> float:
        """The fake wall-clock reading."""
        return self._wall

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self._mono += seconds
        self._wall += seconds


def bearer(token: str) -> dict[str, str]:
    """Call metadata presenting `token`."""
    return {"authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def running_hub(
    config: HubConfig | None = None, *, clock: FakeClock | None = None
) -> AsyncIterator[HubServer]:
    """A started HubServer (port 0 unless the config says otherwise), stopped afterwards."""
    hub = HubServer(config or HubConfig(port=0, dev=True), clock=clock)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


async def grpc_status(call: object) -> tuple[Status, str]:
    """Await `call` and return the GRPCError status and message it fails with."""
    assert asyncio.iscoroutine(call)
    try:
        await call
    except GRPCError as exc:
        return exc.status, exc.message or ""
    raise AssertionError("the call succeeded but was expected to fail")


@dataclass
class AgentConn:
    """One registered agent session, driven by hand through the generated stub."""

    stub: client.AgentServiceStub
    agent_id: str
    token: str
    session_id: str
    events: asyncio.Queue[pb.TaskStreamEvent] = field(default_factory=asyncio.Queue)
    stream_error: GRPCError | None = None
    stream_ended: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def register(
        cls,
        channel: grpclib.client.Channel,
        agent_id: str,
        *,
        task_types: str = "",
        max_concurrent_tasks: int = 1,
        secret: str = "",
    ) -> AgentConn:
        """Register `agent_id` and return its session."""
        stub = client.AgentServiceStub(channel)
        capabilities = {"task_types": task_types} if task_types else {}
        reg = await stub.register(
            pb.RegisterRequest(
                agent_id=agent_id,
                agent_name=f"test {agent_id}",
                capabilities=capabilities,
                max_concurrent_tasks=max_concurrent_tasks,
                secret=secret,
            )
        )
        assert reg.success, reg.message
        return cls(stub=stub, agent_id=agent_id, token=reg.session_token, session_id=reg.session_id)

    @property
    def metadata(self) -> dict[str, str]:
        """The bearer metadata of this session."""
        return bearer(self.token)

    def open_stream(
        self,
        max_concurrent_tasks: int = 0,
        *,
        channel: grpclib.client.Channel | None = None,
        assignment_batch_bytes: int = 0,
    ) -> None:
        """Start reading the session's task stream into `events`.

        With `channel`, the stream runs on that connection (close it to simulate a lost
        connection); otherwise on the registration's channel. `assignment_batch_bytes`
        above 0 lets the Hub batch assignments (`TaskStreamEvent.assignments`).
        """
        assert self._reader is None, "stream already open"
        self.stream_ended.clear()
        stub = self.stub if channel is None else client.AgentServiceStub(channel)
        request = pb.StreamTasksRequest(
            agent_id=self.agent_id,
            max_concurrent_tasks=max_concurrent_tasks,
            assignment_batch_bytes=assignment_batch_bytes,
        )
        self._reader = asyncio.create_task(self._read(stub, request))

    async def _read(self, stub: client.AgentServiceStub, request: pb.StreamTasksRequest) -> None:
        try:
            async for event in stub.stream_tasks(request, metadata=self.metadata):
                self.events.put_nowait(event)
        except GRPCError as exc:
            self.stream_error = exc
        except (StreamTerminatedError, OSError):
            pass  # the channel closed under the reader (end of a test)
        finally:
            self.stream_ended.set()

    async def close_stream(self) -> None:
        """Cancel the stream call; its connection stays open (how an agent stops taking
        tasks). To simulate a crash, open the stream on its own channel and close that."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def next_event(self) -> pb.TaskStreamEvent:
        """The next stream event (fails after a generous timeout)."""
        return await asyncio.wait_for(self.events.get(), WAIT)

    async def next_assignment(self) -> pb.TaskAssignment:
        """The next event, which must be an assignment."""
        event = await self.next_event()
        assert event.assignment is not None, f"expected an assignment, got {event}"
        return event.assignment

    async def next_cancel(self) -> pb.TaskCancellation:
        """The next event, which must be a cancellation."""
        event = await self.next_event()
        assert event.cancel is not None, f"expected a cancellation, got {event}"
        return event.cancel

    async def result(
        self,
        task_id: str,
        *,
        success: bool = True,
        result: bytes = b"",
        error_message: str = "",
        released: bool = False,
        cancelled: bool = False,
    ) -> pb.SubmitResultResponse:
        """Send a result for `task_id` with SubmitResult."""
        return await self.stub.submit_result(
            pb.TaskResult(
                task_id=task_id,
                success=success,
                result=result,
                error_message=error_message,
                released=released,
                cancelled=cancelled,
            ),
            metadata=self.metadata,
        )

    async def heartbeat(self, running: list[str] | None = None) -> pb.HeartbeatResponse:
        """Send a heartbeat listing `running` task ids."""
        ids = running or []
        return await self.stub.heartbeat(
            pb.HeartbeatRequest(
                agent_id=self.agent_id, active_tasks=len(ids), running_task_ids=ids
            ),
            metadata=self.metadata,
        )
