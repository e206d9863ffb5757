"""AgentClient: the low-level, typed client of the Hub's AgentService."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType

from grpclib.client import Channel

from aether._connection import HubDialer
from aether._version import __version__
from aether._wire import client as wire_client
from aether._wire import models, pb
from aether.config import AgentConfig
from aether.errors import (
    AetherConnectionError,
    AetherError,
    AgentStateError,
    RegistrationError,
    map_exception,
)
from aether.logredact import install_log_redaction
from aether.models import redacted_registration

__all__ = ("AgentClient", "ChannelFactory")

log = logging.getLogger("aether.client")

#: Deadline of the agent's own unary calls (register, heartbeat, results), in seconds.
CALL_TIMEOUT = 30.0

#: Makes the channel of each connection attempt (the first one and every reconnect). The
#: channel may be returned already connected; `connect()` connects it otherwise.
ChannelFactory = Callable[[], Awaitable[Channel]]

#: The largest task stream event the agent asks the Hub to batch assignments into.
_MAX_ASSIGNMENT_BATCH_BYTES = 1024 * 1024

# The calls of a new connection, before the Hub has answered anything on it.
_FIRST_CALLS = frozenset({"Connect", "Registration"})


class AgentClient:
    """Low-level client of the Hub's AgentService (used internally by `AetherAgent`).

    `connect()` opens the channel, `register()` opens a session; every later call carries
    `authorization: Bearer <session_token>`. Failures raise `aether.errors` types. Usable as
    `async with AgentClient(config) as client:` (connects on entry; unregisters if registered
    and disconnects on exit).

    `channel_factory` replaces how a connection is made (default: a TCP/TLS grpclib
    channel to `config.hub_url`); `aether_hub.testing` passes in-memory channels this way.

    Every public method takes and returns the generated Pydantic models (`aether.TaskResult`,
    `aether.AgentRegistration`, ...), the same classes as the rest of the API. The wire
    messages are one step away: `Model.to_wire()` / `Model.from_wire(msg)`. (The agent's
    own hot path uses private wire-level variants, to convert once per task.)
    """

    def __init__(
        self, config: AgentConfig, *, channel_factory: ChannelFactory | None = None
    ) -> None:
        self._config = config
        self._channel_factory = channel_factory
        self._hub_url = str(config.hub_address)
        self._dialer = HubDialer.of(config)
        # No secret or token in any log record (hpack prints headers at DEBUG).
        install_log_redaction(config.secret_value() or "")
        self._channel: Channel | None = None
        self._registration: models.AgentRegistration | None = None
        self._agent: wire_client.AgentServiceStub | None = None
        self._llm: wire_client.LLMServiceStub | None = None
        self._tools: wire_client.ToolServiceStub | None = None
        self._memory: wire_client.MemoryServiceStub | None = None
        self._messaging: wire_client.MessagingServiceStub | None = None
        self._reconnecting = False
        #: Counts successful registrations: a new value means a new session.
        self._generation = 0
        #: Set (and replaced) on every session change, to wake `wait_for_session()`.
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        state = "registered" if self._registration else "connected" if self._channel else "idle"
        return f"<AgentClient agent_id={self._config.agent_id!r} hub={self._hub_url} {state}>"

    @property
    def config(self) -> AgentConfig:
        """The configuration this client was made with."""
        return self._config

    def set_channel_factory(self, factory: ChannelFactory | None) -> None:
        """Make later connections (and reconnects) with `factory` (None: the default).

        Only while not connected; raises `AgentStateError` otherwise.
        """
        if self._channel is not None:
            raise AgentStateError("set_channel_factory() needs a disconnected AgentClient")
        self._channel_factory = factory

    async def _open_channel(self) -> Channel:
        if self._channel_factory is None:
            # Each address of hub_url in turn, from the one after the address used last
            # (fail-over); the channel comes back connected.
            channel = await self._dialer.connect()
            self._hub_url = str(self._dialer.current)
            return channel
        return await self._channel_factory()

    @property
    def is_connected(self) -> bool:
        """Whether `connect()` was called and `disconnect()` not since."""
        return self._channel is not None

    @property
    def registration(self) -> models.AgentRegistration | None:
        """The last successful registration, or None."""
        return self._registration

    def _error(self, exc: BaseException, operation: str) -> AetherError:
        return map_exception(
            exc,
            hub_url=self._hub_url,
            operation=operation,
            secret=self._config.secret_value(),
            # Before a registration answered, a connection closed at once is most likely a
            # plaintext client at a TLS port: the error then says so.
            fresh_connection=self._registration is None and operation in _FIRST_CALLS,
            client_certificate=bool(self._config.tls_cert_file),
        )

    def _make_stubs(self, channel: Channel, token: str | None) -> None:
        if token:
            install_log_redaction(token)
        metadata = {"authorization": f"Bearer {token}"} if token else None
        limit = self._config.max_message_bytes
        self._agent = wire_client.AgentServiceStub(
            channel, metadata=metadata, max_message_bytes=limit
        )
        self._llm = wire_client.LLMServiceStub(channel, metadata=metadata, max_message_bytes=limit)
        self._tools = wire_client.ToolServiceStub(
            channel, metadata=metadata, max_message_bytes=limit
        )
        self._memory = wire_client.MemoryServiceStub(
            channel, metadata=metadata, max_message_bytes=limit
        )
        self._messaging = wire_client.MessagingServiceStub(
            channel, metadata=metadata, max_message_bytes=limit
        )

    def _not_connected(self) -> AetherError:
        if self._reconnecting:
            return AetherConnectionError(
                f"the connection to the Aether Hub at {self._hub_url} is down and being "
                "re-established; try again shortly",
                hub_url=self._hub_url,
            )
        return AgentStateError("AgentClient is not connected: call connect() first")

    def _require_channel(self) -> Channel:
        if self._channel is None:
            raise self._not_connected()
        return self._channel

    def _agent_stub(self) -> wire_client.AgentServiceStub:
        if self._agent is None:
            raise self._not_connected()
        return self._agent

    def _session_changed(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def reconnecting(self) -> bool:
        """Whether the connection broke and is being re-established (`drop_for_reconnect`)."""
        return self._reconnecting

    @property
    def is_closed(self) -> bool:
        """Neither registered nor reconnecting: not started yet, stopped, or gave up."""
        return self._registration is None and not self._reconnecting

    async def wait_for_change(self, timeout: float | None = None) -> None:
        """Return at the next session change (registered, dropped for a reconnect,
        disconnected), or after `timeout` seconds (None: no limit)."""
        changed = self._changed
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)

    @property
    def session_generation(self) -> int:
        """How many times `register()` succeeded; changes with every new session."""
        return self._generation

    async def wait_for_session(self, timeout: float | None = None) -> float | None:
        """Return once registered, waiting out a reconnect in progress; for Hub calls.

        Waits at most `timeout` seconds (None: `config.call_reconnect_wait`) and returns
        what is left of `timeout` (None when it was None). Raises the retryable
        `AetherConnectionError` when the connection is still down after the wait, and
        `AgentStateError` when the client is not connected and not reconnecting (never
        started, or stopped).
        """
        if self._registered():
            return timeout
        loop = asyncio.get_running_loop()
        wait = self._config.call_reconnect_wait if timeout is None else timeout
        deadline = loop.time() + wait
        waited = False
        while not self._registered():
            if not self._reconnecting:
                if waited:  # the agent stopped, or gave up reconnecting
                    raise AetherConnectionError(
                        f"the connection to the Aether Hub at {self._hub_url} was closed "
                        "while waiting for a reconnect",
                        hub_url=self._hub_url,
                        retryable=False,
                    )
                if self._channel is not None:
                    raise AgentStateError("the agent is not registered: call register() first")
                raise self._not_connected()
            waited = True
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AetherConnectionError(
                    f"the connection to the Aether Hub at {self._hub_url} is down and was not "
                    f"re-established within {wait:g} s; try again later",
                    hub_url=self._hub_url,
                )
            await self.wait_for_change(remaining)
        return None if timeout is None else max(0.0, deadline - loop.time())

    def _registered(self) -> bool:
        # A method, not the attribute: mypy would keep a narrowing across awaits.
        return self._registration is not None

    def _require_session(self) -> models.AgentRegistration:
        if self._registration is None:
            if self._reconnecting:
                raise self._not_connected()
            raise AgentStateError("the agent is not registered: call register() first")
        return self._registration

    async def connect(self) -> None:
        """Open the connection to the Hub (raises `AetherConnectionError` when unreachable)."""
        if self._channel is not None:
            return
        try:
            channel = await self._open_channel()
        except Exception as exc:
            raise self._error(exc, "Connect") from None
        try:
            # Bounded: after a network partition heals, an attempt must not wait out the
            # kernel's SYN retries (minutes) before the next one can start.
            await asyncio.wait_for(channel.__connect__(), self._config.connect_timeout)
        except BaseException as exc:
            channel.close()
            if isinstance(exc, Exception):
                raise self._error(exc, "Connect") from None
            raise
        self._channel = channel
        self._make_stubs(channel, None)

    async def disconnect(self) -> None:
        """Close the connection (safe to call when not connected)."""
        self._reconnecting = False
        self._close_channel()
        self._session_changed()

    def drop_for_reconnect(self) -> None:
        """Close a broken connection that will be re-established (`AetherAgent` does).

        Until `connect()` succeeds again, calls fail with a retryable
        `AetherConnectionError` instead of "not connected".
        """
        self._reconnecting = self._reconnecting or self._channel is not None
        self._close_channel()
        self._session_changed()

    def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        self._registration = None
        self._agent = self._llm = self._tools = self._memory = self._messaging = None
        if channel is not None:
            channel.close()

    async def register(self) -> models.AgentRegistration:
        """Register the agent and open a session (the secret goes in RegisterRequest.secret).

        Raises `AuthenticationError` when the Hub rejects the secret and `RegistrationError`
        when it answers success=false.
        """
        channel = self._require_channel()
        config = self._config
        request = pb.RegisterRequest(
            agent_id=config.agent_id,
            agent_name=config.agent_name,
            version=config.version,
            capabilities=dict(config.capabilities),
            metadata=dict(config.metadata),
            secret=config.secret_value(),
            max_concurrent_tasks=config.max_concurrent_tasks,
            sdk_version=__version__,
        )
        try:
            reply = await self._agent_stub().register(request, timeout=CALL_TIMEOUT)
        except Exception as exc:
            raise self._error(exc, "Registration") from None
        if not reply.success:
            raise RegistrationError(
                f"Registration of agent {config.agent_id!r} refused by the Hub at "
                f"{self._hub_url}: {reply.message or 'no reason given'}"
            )
        # The repr of what users hold must not show the bearer token.
        registration = redacted_registration(models.AgentRegistration.from_wire(reply))
        self._registration = registration
        self._reconnecting = False
        self._make_stubs(channel, reply.session_token)
        self._generation += 1
        self._session_changed()
        return registration

    async def unregister(self, reason: str = "") -> models.UnregisterResponse:
        """End the session; the Hub requeues tasks still leased to it."""
        self._require_session()
        request = pb.UnregisterRequest(agent_id=self._config.agent_id, reason=reason)
        try:
            reply = await self._agent_stub().unregister(request, timeout=CALL_TIMEOUT)
        except Exception as exc:
            raise self._error(exc, "Unregister") from None
        self._registration = None
        return models.UnregisterResponse.from_wire(reply)

    async def send_heartbeat(
        self, running_task_ids: Sequence[str] = (), *, timeout: float | None = None
    ) -> models.HeartbeatResponse:
        """Tell the Hub the session is alive and which tasks it is running."""
        self._require_session()
        request = pb.HeartbeatRequest(
            agent_id=self._config.agent_id,
            active_tasks=len(running_task_ids),
            running_task_ids=list(running_task_ids),
        )
        try:
            reply = await self._agent_stub().heartbeat(
                request, timeout=timeout if timeout is not None else CALL_TIMEOUT
            )
        except Exception as exc:
            raise self._error(exc, "Heartbeat") from None
        return models.HeartbeatResponse.from_wire(reply)

    async def stream_events(
        self, *, batch_assignments: bool = False
    ) -> AsyncIterator[models.TaskStreamEvent]:
        """The session's task stream: each event carries an `assignment` (a task leased to
        this session) or a `cancel` (stop working on a task).

        With `batch_assignments` an event may instead carry several `assignments` (in
        lease order) when the agent has room for several tasks: fewer messages at high
        throughput. A Hub that predates them sends one per event regardless.
        """
        async for event in self._stream_events_wire(batch_assignments=batch_assignments):
            yield models.TaskStreamEvent.from_wire(event)

    def assignment_batch_bytes(self) -> int:
        """The `StreamTasksRequest.assignment_batch_bytes` this client asks for: half its
        message limit, at most 1 MiB (an event must stay within `max_message_bytes`)."""
        return min(self._config.max_message_bytes // 2, _MAX_ASSIGNMENT_BATCH_BYTES)

    async def _stream_events_wire(
        self, *, batch_assignments: bool = False
    ) -> AsyncIterator[pb.TaskStreamEvent]:
        """`stream_events` as wire messages (the agent's hot path converts per task)."""
        self._require_session()
        request = pb.StreamTasksRequest(
            agent_id=self._config.agent_id,
            max_concurrent_tasks=self._config.max_concurrent_tasks,
            assignment_batch_bytes=self.assignment_batch_bytes() if batch_assignments else 0,
        )
        try:
            async for event in self._agent_stub().stream_tasks(request):
                yield event
        except Exception as exc:
            raise self._error(exc, "StreamTasks") from None

    async def stream_tasks(self) -> AsyncIterator[models.TaskAssignment]:
        """Assignments leased to this session, one at a time as they arrive (cancellations
        are skipped; assignments the Hub sent together come one after another)."""
        async for event in self._stream_events_wire(batch_assignments=True):
            if event.assignment is not None:
                yield models.TaskAssignment.from_wire(event.assignment)
            for assignment in event.assignments:
                yield models.TaskAssignment.from_wire(assignment)

    async def report_status(self, status: models.TaskStatus) -> bool:
        """Report progress of a leased task; returns whether the Hub recorded it."""
        self._require_session()
        try:
            reply = await self._agent_stub().report_status(status.to_wire(), timeout=CALL_TIMEOUT)
        except Exception as exc:
            raise self._error(exc, "ReportStatus") from None
        return reply.accepted

    async def submit_result(self, result: models.TaskResult) -> models.SubmitResultResponse:
        """Send the terminal result of a task (idempotent by task_id)."""
        self._require_session()
        reply = await self._submit_result_wire(result.to_wire())
        return models.SubmitResultResponse.from_wire(reply)

    async def submit_results(
        self, results: AsyncIterable[models.TaskResult]
    ) -> AsyncIterator[models.SubmitResultResponse]:
        """The `SubmitResults` stream: send results as `results` yields them; one
        acknowledgement per result, in order (each idempotent by task_id)."""
        async for ack in self._submit_results_wire(_to_wire(results)):
            yield models.SubmitResultResponse.from_wire(ack)

    async def _submit_result_wire(self, result: pb.TaskResult) -> pb.SubmitResultResponse:
        """`submit_result` for an already-encoded wire result (the agent's hot path)."""
        try:
            return await self._agent_stub().submit_result(result, timeout=CALL_TIMEOUT)
        except Exception as exc:
            raise self._error(exc, "SubmitResult") from None

    async def _submit_results_wire(
        self, results: AsyncIterable[pb.TaskResult]
    ) -> AsyncIterator[pb.SubmitResultResponse]:
        """`submit_results` with wire messages (the agent's hot path)."""
        self._require_session()
        try:
            async for ack in self._agent_stub().submit_results(results):
                yield ack
        except Exception as exc:
            raise self._error(exc, "SubmitResults") from None

    async def _submit_result_batches_wire(
        self, batches: AsyncIterable[pb.TaskResultBatch]
    ) -> AsyncIterator[pb.SubmitResultBatchResponse]:
        """The `SubmitResultBatches` stream (several results per message; the agent's hot
        path): one answer per batch, with one acknowledgement per result, in order."""
        self._require_session()
        try:
            async for answer in self._agent_stub().submit_result_batches(batches):
                yield answer
        except Exception as exc:
            raise self._error(exc, "SubmitResultBatches") from None

    # Stubs of the Hub services, bound to the session; used by the `aether.hub` facades,
    # which return the replies as models.

    def _llm_stub(self) -> wire_client.LLMServiceStub:
        self._require_channel()
        assert self._llm is not None
        return self._llm

    def _tool_stub(self) -> wire_client.ToolServiceStub:
        self._require_channel()
        assert self._tools is not None
        return self._tools

    def _memory_stub(self) -> wire_client.MemoryServiceStub:
        self._require_channel()
        assert self._memory is not None
        return self._memory

    def _messaging_stub(self) -> wire_client.MessagingServiceStub:
        self._require_channel()
        assert self._messaging is not None
        return self._messaging

    def map_error(self, exc: BaseException, operation: str) -> AetherError:
        """Translate a transport failure of `operation` into an `aether.errors` type."""
        return self._error(exc, operation)

    async def __aenter__(self) -> AgentClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._registration is not None and self._channel is not None:
                try:
                    await self.unregister("client closed")
                except AetherError as error:
                    log.warning("unregister on close failed: %s", error)
        finally:
            await self.disconnect()


async def _to_wire(results: AsyncIterable[models.TaskResult]) -> AsyncIterator[pb.TaskResult]:
    async for result in results:
        yield result.to_wire()
