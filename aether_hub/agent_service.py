"""`aether.v1.AgentService` of the dev Hub: register, heartbeat, task stream, results."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether_hub import tracing
from aether_hub._wire import pb, runtime, server
from aether_hub.auth import (
    AgentRegistryUnavailableError,
    AgentStore,
    RegisterThrottle,
    hash_secret,
    verify_secret,
)
from aether_hub.clock import Clock, SystemClock
from aether_hub.logcontext import bind_agent, bind_task
from aether_hub.sessions import Session, SessionRegistry, SessionState
from aether_hub.taskrecord import to_datetime
from aether_hub.tasks import TaskQueue, invalid
from aether_hub.taskstore import StoreUnavailableError

__all__ = ("AgentService", "take_assignments")

log = logging.getLogger("aether_hub.agent_service")


def _connection_lost(context: runtime.ServerContext) -> bool:
    """Whether the call ended with its HTTP/2 connection (vs. the client cancelling it).

    grpclib closes the connection's transport before it cancels the handlers of a lost
    connection; a client's RST_STREAM leaves it open. Reads grpclib internals (pinned);
    when they are not there, assume the connection is gone (the safe, requeueing side).
    """
    h2_stream = getattr(context.stream, "_stream", None)
    connection = getattr(h2_stream, "connection", None)
    is_closing = getattr(connection, "is_closing", None)
    if not callable(is_closing):
        return True
    return bool(is_closing())


def _peer_host(context: runtime.ServerContext) -> str:
    """The caller's IP address ('' when unknown, e.g. an in-memory channel)."""
    try:
        addr = context.peer.addr()
    except Exception:  # no transport details (in-memory channels)
        return ""
    if isinstance(addr, tuple) and addr:
        return str(addr[0])
    return ""


# Bytes a TaskAssignment takes besides its payload, description and metadata (ids, type,
# numbers, timestamps, tags), rounded well up: batches are cut by an upper bound.
_ASSIGNMENT_OVERHEAD = 256


def _size_bound(assignment: pb.TaskAssignment) -> int:
    """An upper bound of the assignment's encoded size (at most 4 bytes a character)."""
    size = _ASSIGNMENT_OVERHEAD + len(assignment.payload) + 4 * len(assignment.description)
    for key, value in assignment.metadata.items():
        size += 16 + 4 * (len(key) + len(value))
    return size + 4 * (len(assignment.task_id) + len(assignment.task_type))


def take_assignments(
    unsent: deque[pb.TaskStreamEvent],
    max_bytes: int,
    ready: Callable[[str], bool] | None = None,
) -> pb.TaskStreamEvent:
    """One stream event for the assignments at the front of `unsent` (taken off it): as
    many as fit `max_bytes` together, stopping at a cancellation or at a task `ready`
    says is not (events keep their order). One alone (also one larger than `max_bytes`)
    goes as a plain `assignment`."""
    first = unsent.popleft()
    assert first.assignment is not None
    batch = [first.assignment]
    used = _size_bound(first.assignment)
    while unsent:
        nxt = unsent[0].assignment
        if nxt is None or (ready is not None and not ready(nxt.task_id)):
            break
        size = _size_bound(nxt)
        if used + size > max_bytes:
            break
        unsent.popleft()
        batch.append(nxt)
        used += size
    if len(batch) == 1:
        return first
    return pb.TaskStreamEvent(assignments=batch)


_A = TypeVar("_A")

# How long a task stream waits before it asks again for leases the store could not write.
_STORE_RETRY_SECONDS = 0.2


async def _stored(queue: TaskQueue, answers: AsyncIterator[_A]) -> AsyncIterator[_A]:
    """The answers of a result stream, each once the results it acknowledges are stored.

    `answers` records as it reads the requests, in a task of its own, so requests that
    arrive while earlier ones are being stored are recorded meanwhile and share the next
    commit. The request stream's own error, if it ends with one, is raised at its end.
    """
    ready: asyncio.Queue[_A | None] = asyncio.Queue()

    async def read() -> None:
        try:
            async for answer in answers:
                ready.put_nowait(answer)
        finally:
            ready.put_nowait(None)

    reader = asyncio.create_task(read())
    try:
        ended = False
        while not ended:
            batch = [await ready.get()]
            while not ready.empty():
                batch.append(ready.get_nowait())
            ended = batch[-1] is None
            done = [answer for answer in batch if answer is not None]
            if done:
                await queue.durable()
                for answer in done:
                    yield answer
        await reader  # the request stream's own error, if it ended with one
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


class AgentService(server.AgentServiceBase):
    """Agents register, keep their session alive, receive tasks and report back."""

    def __init__(
        self,
        *,
        agents: AgentStore,
        sessions: SessionRegistry,
        queue: TaskQueue,
        dev: bool = False,
        default_max_concurrent_tasks: int = 1,
        clock: Clock | None = None,
        throttle: RegisterThrottle | None = None,
    ) -> None:
        self._agents = agents
        self._sessions = sessions
        self._queue = queue
        self._dev = dev
        self._default_max_concurrent = default_max_concurrent_tasks
        self._clock: Clock = clock or SystemClock()
        self.throttle = throttle or RegisterThrottle(self._clock.monotonic)

    @property
    def heartbeat_interval(self) -> int:
        """Seconds between the heartbeats the Hub expects."""
        return max(1, round(self._sessions.heartbeat_interval))

    # -- sessions -------------------------------------------------------------------------

    async def register(
        self, request: pb.RegisterRequest, context: runtime.ServerContext
    ) -> pb.AgentRegistration:
        """Check the agent's secret and open a session.

        Failed registrations are throttled per agent id and per peer address
        (`RegisterThrottle`): past the free ones, Register answers UNAVAILABLE with the
        seconds to wait, without checking the secret. When the enrolments cannot be read
        (JetStream unreachable with `--store jetstream`) Register answers UNAVAILABLE too,
        and that does not count as a failure: the agent's secret was never checked.
        """
        agent_id = request.agent_id
        if not agent_id or agent_id != agent_id.strip():
            raise invalid("agent_id", "is required (a non-empty id without surrounding spaces)")
        if request.max_concurrent_tasks < 0:
            raise invalid("max_concurrent_tasks", "must not be negative (0 means the default)")
        bind_agent(agent_id)
        peer = _peer_host(context)
        locked = self.throttle.retry_after(agent_id, peer)
        if locked is not None:
            wait, what = locked
            raise GRPCError(
                Status.UNAVAILABLE,
                f"too many failed registrations for {what}; retry in {max(1, round(wait))} s",
            )
        try:
            return await self._register(agent_id, request)
        except GRPCError as exc:
            if exc.status is Status.UNAUTHENTICATED:
                lockout = self.throttle.failed(agent_id, peer)
                log.warning(
                    "register of agent %r from %s refused: %s%s",
                    agent_id,
                    peer or "?",
                    exc.message,
                    f" (locked for {lockout:g} s)" if lockout else "",
                )
            raise

    async def _register(self, agent_id: str, request: pb.RegisterRequest) -> pb.AgentRegistration:
        # The guide passes the secret in metadata["secret"]; the SDK sends `secret`.
        secret = request.secret or request.metadata.get("secret", "")
        try:
            record = await self._agents.get(agent_id)
            enrolled_now = False
            if record is None:
                if not self._dev:
                    raise GRPCError(
                        Status.UNAUTHENTICATED,
                        f"agent {agent_id!r} is not enrolled: add it with `aether hub agents"
                        f" add {agent_id} --secret-env VAR` or start the Hub with --dev",
                    )
                hashed = await asyncio.to_thread(hash_secret, secret)
                # Only if still absent: registers of a new id racing here or at another
                # replica enrol it once, and the losers are checked against the winner.
                record, enrolled_now = await self._agents.add_if_absent(
                    agent_id, hashed, pb.TrustLevel.LOW, source="dev-enrolled"
                )
        except AgentRegistryUnavailableError as exc:
            log.error(
                "register of agent %r: the agent enrolments are unavailable: %s", agent_id, exc
            )
            raise GRPCError(
                Status.UNAVAILABLE, f"the Hub cannot read the agent enrolments now: {exc}"
            ) from None
        if enrolled_now:
            log.info("enrolled agent %r on its first register (--dev, trust low)", agent_id)
        elif record.has_secret:
            if not secret:
                raise GRPCError(
                    Status.UNAUTHENTICATED,
                    f"agent {agent_id!r} needs its secret (AgentConfig.secret or"
                    " AETHER_AGENT_SECRET)",
                )
            if not await asyncio.to_thread(verify_secret, secret, record.secret_hash):
                raise GRPCError(Status.UNAUTHENTICATED, f"wrong secret for agent {agent_id!r}")
        for old in self._sessions.for_agent(agent_id):
            self._sessions.end(
                old,
                SessionState.REPLACED,
                reason=f"agent {agent_id!r} registered again",
                error="session replaced by a newer registration of the same agent",
            )
        trust = record.trust_level
        if trust == pb.TrustLevel.UNSPECIFIED:
            trust = pb.TrustLevel.LOW
        session, token = self._sessions.open(
            agent_id,
            trust_level=trust,
            capabilities=request.capabilities,
            agent_name=request.agent_name,
            version=request.version,
            max_concurrent_tasks=request.max_concurrent_tasks or self._default_max_concurrent,
        )
        self._queue.add_session(session)
        self.throttle.succeeded(agent_id)
        log.info(
            "agent %r registered (session %s, task types: %s)",
            agent_id,
            session.session_id,
            ",".join(sorted(session.task_types)) or "-",
        )
        return pb.AgentRegistration(
            success=True,
            session_token=token,
            heartbeat_interval_seconds=self.heartbeat_interval,
            trust_level=trust,
            message=f"registered {agent_id!r}",
            session_id=session.session_id,
        )

    async def unregister(
        self, request: pb.UnregisterRequest, context: runtime.ServerContext
    ) -> pb.UnregisterResponse:
        """End the session; its leased tasks go back without counting an attempt."""
        session = self._caller(context, request.agent_id)
        requeued = self._sessions.end(
            session, SessionState.CLOSED, reason=f"agent {session.agent_id!r} unregistered"
        )
        log.info(
            "agent %r unregistered (%s); %d task(s) requeued",
            session.agent_id,
            request.reason or "no reason given",
            requeued,
        )
        return pb.UnregisterResponse(success=True, requeued_tasks=requeued)

    async def heartbeat(
        self, request: pb.HeartbeatRequest, context: runtime.ServerContext
    ) -> pb.HeartbeatResponse:
        """Keep the session alive."""
        session = self._caller(context, request.agent_id)
        if request.active_tasks < 0:
            raise invalid("active_tasks", "must not be negative")
        self._sessions.touch(session, active_tasks=request.active_tasks)
        self._queue.heartbeat(session, request.running_task_ids, request.active_tasks)
        return pb.HeartbeatResponse(
            success=True,
            heartbeat_interval_seconds=self.heartbeat_interval,
            server_time=to_datetime(self._clock.time()),
        )

    # -- tasks --------------------------------------------------------------------------

    async def stream_tasks(
        self, request: pb.StreamTasksRequest, context: runtime.ServerContext
    ) -> AsyncIterator[pb.TaskStreamEvent]:
        """Assignments and cancellations of this session, as they happen."""
        session = self._caller(context, request.agent_id)
        if request.max_concurrent_tasks < 0:
            raise invalid("max_concurrent_tasks", "must not be negative (0 keeps the default)")
        if request.assignment_batch_bytes < 0:
            raise invalid("assignment_batch_bytes", "must not be negative (0: one per event)")
        batch_bytes = request.assignment_batch_bytes
        gen = self._queue.open_stream(session, request.max_concurrent_tasks)
        self._sessions.touch(session)
        unsent = session.unsent
        wake = session.wake
        queue = self._queue
        ready: Callable[[str], bool] | None = None
        if queue.leases_need_storing:
            ready = functools.partial(queue.lease_stored, session)
        try:
            while True:
                # Check ownership before taking from `unsent`: a newer stream of the same
                # session owns it once `stream_gen` moved on.
                if session.stream_gen != gen or not session.streaming:
                    if not session.live and session.end_error:
                        raise GRPCError(Status.UNAUTHENTICATED, session.end_error)
                    return
                if unsent:
                    front = unsent[0].assignment
                    if ready is not None and front is not None and not ready(front.task_id):
                        # Replicas: only a stored lease may run (aether_hub/taskreplica.py).
                        try:
                            await queue.durable()
                        except StoreUnavailableError:
                            await asyncio.sleep(_STORE_RETRY_SECONDS)
                        if not ready(front.task_id):
                            # Still not stored with nothing in flight (its write failed
                            # and waits for a retry): never spin the event loop.
                            await asyncio.sleep(_STORE_RETRY_SECONDS)
                        continue
                    if batch_bytes and len(unsent) > 1 and front is not None:
                        yield take_assignments(unsent, batch_bytes, ready)
                    else:
                        yield unsent.popleft()
                    continue
                wake.clear()
                await wake.wait()
        finally:
            self._queue.close_stream(session, gen, connection_lost=_connection_lost(context))

    async def report_status(
        self, request: pb.TaskStatus, context: runtime.ServerContext
    ) -> pb.ReportStatusResponse:
        """Record progress of a task leased to this session."""
        session = self._sessions.require(context)
        bind_task(request.task_id)
        return pb.ReportStatusResponse(accepted=self._queue.report_status(session, request))

    async def submit_result(
        self, request: pb.TaskResult, context: runtime.ServerContext
    ) -> pb.SubmitResultResponse:
        """Record the result of a task leased to this session (idempotent by task_id);
        acknowledged once stored."""
        session = self._sessions.require(context)
        bind_task(request.task_id)
        await self._queue.ensure_known(request.task_id)
        with tracing.result_span(self._queue.get, request):
            ack = self._queue.record_result(session, request)
        await self._queue.durable()
        return ack

    async def submit_results(
        self, requests: AsyncIterator[pb.TaskResult], context: runtime.ServerContext
    ) -> AsyncIterator[pb.SubmitResultResponse]:
        """SubmitResult as a stream: one acknowledgement per result, in order, each sent
        once the result is stored.

        A refused result does not end the stream: its acknowledgement has
        accepted=false and says why (the unary form would fail with that status). The
        results that arrived while the previous ones were being stored share one commit.
        A store that cannot write ends the stream with UNAVAILABLE: the agent keeps the
        unacknowledged results and sends them again.
        """
        session = self._sessions.require(context)

        async def record() -> AsyncIterator[pb.SubmitResultResponse]:
            async for result in requests:
                await self._queue.ensure_known(result.task_id)
                yield self._record(session, result)

        async for ack in _stored(self._queue, record()):
            yield ack

    async def submit_result_batches(
        self, requests: AsyncIterator[pb.TaskResultBatch], context: runtime.ServerContext
    ) -> AsyncIterator[pb.SubmitResultBatchResponse]:
        """SubmitResults with several results per message: one answer per request, with
        one acknowledgement per result in order, each sent once its results are stored
        (the batches that arrived meanwhile share one commit)."""
        session = self._sessions.require(context)

        async def record() -> AsyncIterator[pb.SubmitResultBatchResponse]:
            async for batch in requests:
                for result in batch.results:
                    await self._queue.ensure_known(result.task_id)
                acks = [self._record(session, result) for result in batch.results]
                yield pb.SubmitResultBatchResponse(acks=acks)

        async for answer in _stored(self._queue, record()):
            yield answer

    def _record(self, session: Session, result: pb.TaskResult) -> pb.SubmitResultResponse:
        bind_task(result.task_id)
        try:
            with tracing.result_span(self._queue.get, result):
                return self._queue.record_result(session, result)
        except GRPCError as exc:
            return pb.SubmitResultResponse(
                task_id=result.task_id,
                accepted=False,
                message=f"{exc.status.name}: {exc.message or ''}",
            )

    # -- helpers --------------------------------------------------------------------------

    def _caller(self, context: runtime.ServerContext, agent_id: str) -> Session:
        session = self._sessions.require(context)
        if not agent_id:
            raise invalid("agent_id", "is required")
        if agent_id != session.agent_id:
            raise GRPCError(
                Status.PERMISSION_DENIED,
                f"agent_id {agent_id!r} does not match the session's agent",
            )
        return session
