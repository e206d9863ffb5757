"""A small, real Hub for the SDK's tests: grpclib services on the generated bases.

It records every call, checks the secret and session tokens like the real Hub, leases
tasks to one stream at a time up to the session's `max_concurrent_tasks`, and has minimal
LLM (echo), tools, memory and messaging. Run as a script (`python -m tests.aether.fake_hub
--port N --record FILE`) it serves until killed and appends JSON lines of what happened to
FILE, for tests that kill and restart the Hub process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aether_api.v1 import server
from grpclib._typing import IServable
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.protocol import H2Protocol
from grpclib.server import Server

from aether._wire import pb, runtime


@dataclass
class Session:
    """One registered agent session."""

    token: str
    request: pb.RegisterRequest
    leased: set[str] = field(default_factory=set)
    events: asyncio.Queue[pb.TaskStreamEvent] = field(default_factory=asyncio.Queue)


class HubState:
    """Everything the fake Hub knows and recorded; tests read and drive it."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        heartbeat_interval: int = 0,
        record: Path | None = None,
        accept_unleased_results: bool = False,
    ) -> None:
        self.secret = secret
        self.heartbeat_interval = heartbeat_interval
        self.record_path = record
        self.accept_unleased_results = accept_unleased_results
        self.registrations: list[pb.RegisterRequest] = []
        self.auth_failures = 0
        self.sessions: dict[str, Session] = {}
        self.heartbeats: list[pb.HeartbeatRequest] = []
        self.statuses: list[pb.TaskStatus] = []
        self.results: dict[str, pb.TaskResult] = {}
        # Each entry makes one Register call fail with UNKNOWN (a faulty server).
        self.register_faults: list[str] = []
        self.result_calls: list[pb.TaskResult] = []
        self.result_streams = 0
        self.unary_results_only = False
        # Serve SubmitResultBatches (off: UNIMPLEMENTED, as a Hub that predates it).
        self.result_batches = False
        self.result_batches_seen: list[int] = []
        self.unregistered: list[pb.UnregisterRequest] = []
        self.pending: list[pb.TaskAssignment] = []
        self.max_leased_seen = 0
        self.memory: dict[tuple[int, str, str], str] = {}
        self.published: list[pb.PublishRequest] = []
        self.subscribers: list[tuple[str, asyncio.Queue[pb.BusMessage]]] = []
        self.llm_requests: list[pb.ChatRequest] = []
        self.metadata_seen: list[dict[str, str]] = []
        self.changed = asyncio.Condition()
        self._tokens = 0

    def _record(self, kind: str, **data: object) -> None:
        if self.record_path is not None:
            with self.record_path.open("a") as fh:
                fh.write(json.dumps({"kind": kind, **data}) + "\n")

    async def notify(self) -> None:
        """Wake everything waiting in `wait_for` (and idle task streams)."""
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        """Wait until `predicate()` holds; TimeoutError after `timeout` seconds."""

        async def wait() -> None:
            # Woken by notify(), and polling too: some state changes do not notify.
            while not predicate():
                async with self.changed:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.changed.wait(), 0.05)

        await asyncio.wait_for(wait(), timeout)

    async def submit(
        self,
        task_id: str,
        *,
        description: str = "",
        payload: bytes = b"",
        workflow_id: str = "",
        task_type: str = "",
    ) -> None:
        """Queue a task (delivered to the next stream with room)."""
        self.pending.append(
            pb.TaskAssignment(
                task_id=task_id,
                attempt=1,
                description=description,
                payload=payload,
                workflow_id=workflow_id,
                task_type=task_type,
            )
        )
        await self.notify()

    async def cancel(self, task_id: str) -> None:
        """Send a cancellation to the session holding the task."""
        for session in self.sessions.values():
            if task_id in session.leased:
                session.events.put_nowait(
                    pb.TaskStreamEvent(cancel=pb.TaskCancellation(task_id=task_id, reason="test"))
                )
        await self.notify()

    def session(self, context: runtime.ServerContext) -> Session:
        """The caller's session, or UNAUTHENTICATED."""
        self.metadata_seen.append({str(k): str(v) for k, v in context.metadata.items()})
        token = context.bearer_token
        if token is None or token not in self.sessions:
            raise GRPCError(Status.UNAUTHENTICATED, "missing or stale session token")
        return self.sessions[token]


class FakeAgentService(server.AgentServiceBase):
    """AgentService over a HubState."""

    def __init__(self, state: HubState) -> None:
        self.state = state

    async def register(
        self, request: pb.RegisterRequest, context: runtime.ServerContext
    ) -> pb.AgentRegistration:
        state = self.state
        if state.register_faults:
            state.register_faults.pop(0)
            raise GRPCError(Status.UNKNOWN, "Internal Server Error")
        if state.secret is not None and request.secret != state.secret:
            state.auth_failures += 1
            await state.notify()
            raise GRPCError(Status.UNAUTHENTICATED, "invalid agent secret")
        state._tokens += 1
        token = f"token-{state._tokens}"
        state.registrations.append(request)
        # An agent registering again replaces its earlier sessions.
        for old in [t for t, s in state.sessions.items() if s.request.agent_id == request.agent_id]:
            del state.sessions[old]
        state.sessions[token] = Session(token=token, request=request)
        state._record("register", agent_id=request.agent_id, metadata=dict(request.metadata))
        await state.notify()
        return pb.AgentRegistration(
            success=True,
            session_token=token,
            heartbeat_interval_seconds=state.heartbeat_interval,
            trust_level=pb.TrustLevel.STANDARD,
            message="welcome",
            session_id=token,
        )

    async def unregister(
        self, request: pb.UnregisterRequest, context: runtime.ServerContext
    ) -> pb.UnregisterResponse:
        session = self.state.session(context)
        self.state.unregistered.append(request)
        self.state.sessions.pop(session.token, None)
        await self.state.notify()
        return pb.UnregisterResponse(success=True, requeued_tasks=len(session.leased))

    async def heartbeat(
        self, request: pb.HeartbeatRequest, context: runtime.ServerContext
    ) -> pb.HeartbeatResponse:
        self.state.session(context)
        self.state.heartbeats.append(request)
        await self.state.notify()
        return pb.HeartbeatResponse(
            success=True, heartbeat_interval_seconds=self.state.heartbeat_interval
        )

    async def stream_tasks(
        self, request: pb.StreamTasksRequest, context: runtime.ServerContext
    ) -> AsyncIterator[pb.TaskStreamEvent]:
        state = self.state
        session = state.session(context)
        limit = request.max_concurrent_tasks or session.request.max_concurrent_tasks or 10
        while True:
            while not session.events.empty():
                yield session.events.get_nowait()
            if state.pending and len(session.leased) < limit:
                task = state.pending.pop(0)
                session.leased.add(task.task_id)
                state.max_leased_seen = max(state.max_leased_seen, len(session.leased))
                state._record("leased", task_id=task.task_id)
                await state.notify()
                yield pb.TaskStreamEvent(assignment=task)
                continue
            async with state.changed:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(state.changed.wait(), 0.5)
            if session.token not in state.sessions:
                return

    async def report_status(
        self, request: pb.TaskStatus, context: runtime.ServerContext
    ) -> pb.ReportStatusResponse:
        self.state.session(context)
        self.state.statuses.append(request)
        await self.state.notify()
        return pb.ReportStatusResponse(accepted=True)

    async def submit_result(
        self, request: pb.TaskResult, context: runtime.ServerContext
    ) -> pb.SubmitResultResponse:
        state = self.state
        session = state.session(context)
        state.result_calls.append(request)
        task_id = request.task_id
        if task_id in state.results:
            return pb.SubmitResultResponse(task_id=task_id, accepted=True, duplicate=True)
        if task_id not in session.leased and not state.accept_unleased_results:
            raise GRPCError(Status.PERMISSION_DENIED, f"task {task_id} is not leased to you")
        session.leased.discard(task_id)
        state.results[task_id] = request
        state._record(
            "result",
            task_id=task_id,
            success=request.success,
            released=request.released,
            cancelled=request.cancelled,
            error_message=request.error_message,
        )
        await state.notify()
        return pb.SubmitResultResponse(task_id=task_id, accepted=True)

    async def submit_results(
        self, requests: AsyncIterator[pb.TaskResult], context: runtime.ServerContext
    ) -> AsyncIterator[pb.SubmitResultResponse]:
        if self.state.unary_results_only:
            raise GRPCError(Status.UNIMPLEMENTED, "no SubmitResults here")
        # Like the dev Hub: a refused result does not end the stream.
        self.state.session(context)
        self.state.result_streams += 1
        async for request in requests:
            yield await self._ack(request, context)

    async def _ack(
        self, request: pb.TaskResult, context: runtime.ServerContext
    ) -> pb.SubmitResultResponse:
        try:
            return await self.submit_result(request, context)
        except GRPCError as exc:
            return pb.SubmitResultResponse(
                task_id=request.task_id,
                accepted=False,
                message=f"{exc.status.name}: {exc.message or ''}",
            )

    async def submit_result_batches(
        self, requests: AsyncIterator[pb.TaskResultBatch], context: runtime.ServerContext
    ) -> AsyncIterator[pb.SubmitResultBatchResponse]:
        if self.state.unary_results_only or not self.state.result_batches:
            raise GRPCError(Status.UNIMPLEMENTED, "no SubmitResultBatches here")
        self.state.session(context)
        self.state.result_streams += 1
        async for batch in requests:
            self.state.result_batches_seen.append(len(batch.results))
            yield pb.SubmitResultBatchResponse(
                acks=[await self._ack(result, context) for result in batch.results]
            )


class FakeLLMService(server.LLMServiceBase):
    """LLM that echoes the last message and counts words as tokens."""

    def __init__(self, state: HubState) -> None:
        self.state = state

    async def chat(
        self, request: pb.ChatRequest, context: runtime.ServerContext
    ) -> pb.ChatResponse:
        self.state.session(context)
        self.state.llm_requests.append(request)
        if not request.messages:
            return pb.ChatResponse(success=False, error_message="no messages")
        prompt = sum(len(m.content.split()) for m in request.messages)
        content = f"echo: {request.messages[-1].content}"
        completion = len(content.split())
        return pb.ChatResponse(
            success=True,
            content=content,
            model=request.model or "echo-1",
            usage=pb.Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
            ),
            finish_reason="stop",
        )

    async def chat_stream(
        self, request: pb.ChatRequest, context: runtime.ServerContext
    ) -> AsyncIterator[pb.ChatChunk]:
        reply = await self.chat(request, context)
        yield pb.ChatChunk(delta=reply.content, model=reply.model, finish_reason="stop")


class FakeToolService(server.ToolServiceBase):
    """One tool, `add`, summing `a` and `b`."""

    def __init__(self, state: HubState) -> None:
        self.state = state

    async def list_tools(
        self, request: pb.ListToolsRequest, context: runtime.ServerContext
    ) -> pb.ListToolsResponse:
        self.state.session(context)
        return pb.ListToolsResponse(
            tools=[pb.ToolInfo(tool_id="add", description="a + b", input_schema_json="{}")]
        )

    async def execute_tool(
        self, request: pb.ExecuteToolRequest, context: runtime.ServerContext
    ) -> pb.ExecuteToolResponse:
        self.state.session(context)
        if request.tool_id != "add":
            return pb.ExecuteToolResponse(success=False, error_message="unknown tool")
        data = json.loads(request.input_json)
        return pb.ExecuteToolResponse(
            success=True, result_json=json.dumps({"sum": data["a"] + data["b"]})
        )


class FakeMemoryService(server.MemoryServiceBase):
    """A dict keyed by (scope, scope_id, key); the agent scope is keyed by agent id."""

    def __init__(self, state: HubState) -> None:
        self.state = state

    def _key(
        self, scope: pb.MemoryScope, scope_id: str, key: str, agent: str
    ) -> tuple[int, str, str]:
        return (int(scope), scope_id or agent, key)

    async def store(
        self, request: pb.StoreRequest, context: runtime.ServerContext
    ) -> pb.StoreResponse:
        session = self.state.session(context)
        self.state.memory[
            self._key(request.scope, request.scope_id, request.key, session.request.agent_id)
        ] = request.value_json
        return pb.StoreResponse(success=True)

    async def retrieve(
        self, request: pb.RetrieveRequest, context: runtime.ServerContext
    ) -> pb.RetrieveResponse:
        session = self.state.session(context)
        key = self._key(request.scope, request.scope_id, request.key, session.request.agent_id)
        value = self.state.memory.get(key)
        return pb.RetrieveResponse(success=True, found=value is not None, value_json=value or "")

    async def delete(
        self, request: pb.DeleteRequest, context: runtime.ServerContext
    ) -> pb.DeleteResponse:
        session = self.state.session(context)
        key = self._key(request.scope, request.scope_id, request.key, session.request.agent_id)
        return pb.DeleteResponse(success=True, deleted=self.state.memory.pop(key, None) is not None)

    async def list(
        self, request: pb.ListKeysRequest, context: runtime.ServerContext
    ) -> pb.ListKeysResponse:
        session = self.state.session(context)
        scope_id = request.scope_id or session.request.agent_id
        keys = sorted(
            k
            for (scope, sid, k) in self.state.memory
            if scope == int(request.scope) and sid == scope_id and k.startswith(request.prefix)
        )
        return pb.ListKeysResponse(success=True, keys=keys)


class FakeMessagingService(server.MessagingServiceBase):
    """Exact-subject pub/sub; requests to `echo.*` are answered with their own payload."""

    def __init__(self, state: HubState) -> None:
        self.state = state

    async def publish(
        self, request: pb.PublishRequest, context: runtime.ServerContext
    ) -> pb.PublishResponse:
        self.state.session(context)
        self.state.published.append(request)
        for subject, queue in self.state.subscribers:
            if subject == request.subject:
                queue.put_nowait(
                    pb.BusMessage(
                        subject=request.subject,
                        payload=request.payload,
                        headers=dict(request.headers),
                    )
                )
        await self.state.notify()
        return pb.PublishResponse(success=True)

    async def request(
        self, request: pb.RequestRequest, context: runtime.ServerContext
    ) -> pb.RequestResponse:
        self.state.session(context)
        if request.subject.startswith("echo."):
            return pb.RequestResponse(
                success=True,
                payload=request.payload,
                headers={"timeout_ms": str(request.timeout_ms)},
            )
        return pb.RequestResponse(success=False, error_message="no responders")

    async def subscribe(
        self, request: pb.SubscribeRequest, context: runtime.ServerContext
    ) -> AsyncIterator[pb.BusMessage]:
        self.state.session(context)
        queue: asyncio.Queue[pb.BusMessage] = asyncio.Queue()
        entry = (request.subject, queue)
        self.state.subscribers.append(entry)
        await self.state.notify()
        try:
            while True:
                yield await queue.get()
        finally:
            self.state.subscribers.remove(entry)


class _TrackingServer(Server):
    """A grpclib Server that can drop its connections, as a dying Hub process would."""

    def __init__(self, handlers: list[IServable]) -> None:
        super().__init__(handlers)
        self.protocols: list[H2Protocol] = []

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        self.protocols.append(protocol)
        return protocol

    def drop_connections(self) -> None:
        """Close every accepted connection (grpclib's close() leaves them open)."""
        for protocol in self.protocols:
            connection = getattr(protocol, "connection", None)
            if connection is not None:
                connection.close()
        self.protocols.clear()


class FakeHub:
    """A running fake Hub: its state, server and address."""

    def __init__(self, state: HubState | None = None) -> None:
        self.state = state or HubState()
        self.server = _TrackingServer(
            [
                FakeAgentService(self.state),
                FakeLLMService(self.state),
                FakeToolService(self.state),
                FakeMemoryService(self.state),
                FakeMessagingService(self.state),
            ]
        )
        self.port = 0

    @property
    def url(self) -> str:
        """The hub_url agents use."""
        return f"127.0.0.1:{self.port}"

    async def start(self, port: int = 0, *, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on 127.0.0.1 (`port` 0 picks a free one), with TLS if `ssl_context`."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        await self.server.start(sock=sock, ssl=ssl_context)

    async def close(self) -> None:
        """Stop serving and drop every connection."""
        self.server.drop_connections()
        self.server.close()
        await self.server.wait_closed()


async def _serve(args: argparse.Namespace) -> None:
    state = HubState(
        secret=args.secret,
        record=Path(args.record),
        accept_unleased_results=True,
        heartbeat_interval=args.heartbeat_interval,
    )
    for task_id in args.tasks.split(",") if args.tasks else []:
        await state.submit(task_id, description=f"task {task_id}")
    hub = FakeHub(state)
    await hub.start(args.port)
    state._record("listening", port=hub.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await hub.close()


def main() -> None:
    """Serve until SIGTERM/SIGKILL (see the module docstring)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--secret", default=None)
    parser.add_argument("--tasks", default="")
    parser.add_argument("--heartbeat-interval", type=int, default=0)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
