"""AetherAgent: the base class users subclass (override `handle_task`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType

from grpclib.const import Status
from prometheus_client import CollectorRegistry

from aether._backoff import backoff_delay
from aether._connection import ConnectionState, ConnectionStateTracker, StateCallback
from aether._connlog import ConnectionLog
from aether._context import current_task
from aether._heartbeat import Sleep, heartbeat_loop
from aether._logging import bind_agent, log_context
from aether._metrics import AgentMetrics
from aether._outbox import Outbox
from aether._tasks import TaskRunner
from aether._wire import models, pb
from aether.address import describe_hub_addresses
from aether.client import CALL_TIMEOUT, AgentClient, ChannelFactory
from aether.config import AgentConfig
from aether.errors import (
    AetherConnectionError,
    AetherError,
    AgentStateError,
    HubError,
)
from aether.hub import Hub
from aether.models import redacted_registration

__all__ = ("AetherAgent",)

log = logging.getLogger("aether.agent")

#: How long stop() waits for results still being sent after handlers finished.
_FLUSH_TIMEOUT = 10.0

#: Server faults worth another connection attempt: a Hub that fails to register an agent
#: (a full disk, a restart in progress) usually recovers; only refused credentials and the
#: attempt limit end the agent.
_TRANSIENT_STATUSES = frozenset({Status.UNKNOWN, Status.INTERNAL, Status.UNAVAILABLE})


def _worth_retrying(exc: AetherError) -> bool:
    return exc.retryable or (isinstance(exc, HubError) and exc.status in _TRANSIENT_STATUSES)


class _StopRequested(Exception):
    """stop() was requested while connecting."""


class AetherAgent:
    """Base class of every agent: subclass it and override `handle_task`.

    `await agent.start()` connects and registers and returns once registered;
    `await agent.stop()` drains, unregisters and disconnects; `await agent.run()` does both
    around waiting for SIGINT/SIGTERM. Also usable as `async with agent:`. Tasks run
    concurrently up to `config.max_concurrent_tasks`; heartbeats, keepalive and reconnects
    (with backoff) happen in the background.

    `channel_factory` replaces how connections to the Hub are made (see `AgentClient`).
    """

    def __init__(
        self, config: AgentConfig, *, channel_factory: ChannelFactory | None = None
    ) -> None:
        self._config = config
        self._client = AgentClient(config, channel_factory=channel_factory)
        self._hub = Hub(self._client)
        self._state = ConnectionStateTracker(ConnectionState.CLOSED)
        # Every address of hub_url: each attempt tries them in turn (AgentClient's dialer).
        self._hub_description = describe_hub_addresses(config.hub_addresses)
        self._connlog = ConnectionLog(self._hub_description, config.agent_id)
        self._metrics = AgentMetrics()
        self._runner = TaskRunner(
            self._handle_one,
            self._deliver,
            max_concurrent=config.max_concurrent_tasks,
            timeout=config.task_timeout_seconds,
            max_result_bytes=config.max_message_bytes,
            on_result=self._metrics.result,
        )
        self._outbox = Outbox(self._client, self._lose_session)
        self._metrics.watch(running=self._runner.__len__, outbox=self._outbox.__len__)
        self._results_task: asyncio.Task[None] | None = None
        self._registration: models.AgentRegistration | None = None
        self._started = False
        self._draining = False
        self._stop_event: asyncio.Event | None = None
        self._session_lost: asyncio.Event | None = None
        self._lost_reason = ""
        self._supervisor: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Future[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._hooks_started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: AetherError | None = None
        #: The sleep used between heartbeats and reconnects (tests inject a fake clock).
        self._sleep: Sleep = asyncio.sleep

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} agent_id={self._config.agent_id!r} "
            f"state={self._state.state.value}>"
        )

    # ----------------------------------------------------------------- public surface

    @property
    def config(self) -> AgentConfig:
        """The agent's configuration."""
        return self._config

    @property
    def hub(self) -> Hub:
        """Hub services (LLM, tools, memory, messaging); usable once started."""
        return self._hub

    @property
    def client(self) -> AgentClient:
        """The low-level client the agent uses."""
        return self._client

    @property
    def registration(self) -> models.AgentRegistration | None:
        """The current session's registration, once registered."""
        return self._registration

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """This agent's Prometheus metrics (docs/observability.md); `aether run
        --health-port` serves them at `/metrics`. Register your own metrics on it to have
        them served there too."""
        return self._metrics.registry

    @property
    def connection_state(self) -> ConnectionState:
        """Where the link to the Hub is now."""
        return self._state.state

    @property
    def is_running(self) -> bool:
        """Whether the agent was started and has not stopped."""
        return self._started and self._state.state is not ConnectionState.CLOSED

    @property
    def error(self) -> AetherError | None:
        """The error that stopped the agent, if it gave up (e.g. reconnect attempts ran out)."""
        return self._error

    def add_connection_callback(self, callback: StateCallback) -> None:
        """Call `callback(state)` on every connection state change (errors are logged)."""
        self._state.add_callback(callback)

    def watch_connection(self) -> AsyncIterator[ConnectionState]:
        """The current connection state, then each change, ending with CLOSED."""
        return self._state.watch()

    async def handle_task(self, task: models.TaskAssignment) -> models.TaskResult:
        """Handle one task and return its result. Override this."""
        raise NotImplementedError(f"{type(self).__name__} must override handle_task")

    async def on_start(self) -> None:
        """Called once after the agent registered for the first time. Override if needed."""

    async def on_stop(self) -> None:
        """Called once while stopping, after running tasks were drained. Override if needed."""

    async def report_progress(self, progress: float, message: str = "") -> bool:
        """Report progress (0.0 to 1.0) of the task being handled in this context.

        Best effort: returns whether the Hub recorded it; transport failures are logged.
        """
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be between 0.0 and 1.0, got {progress}")
        task = current_task()
        status = models.TaskStatus(
            task_id=task.task_id,
            state=pb.TaskState.RUNNING,
            progress=progress,
            message=message,
        )
        try:
            return await self._client.report_status(status)
        except AetherError as exc:
            log.warning("task %s: progress report failed: %s", task.task_id, exc)
            return False

    async def start(self) -> None:
        """Connect and register with the Hub; returns once registered.

        Retries unreachable Hubs with backoff up to `max_reconnect_attempts`, then raises
        `AetherConnectionError`; a rejected secret raises `AuthenticationError` at once.
        """
        # Every record of the agent's work names it: what start() logs, and the tasks it
        # starts (the supervisor, the stream reader, the handlers) inherit the context.
        with log_context(agent_id=self._config.agent_id):
            await self._start()

    async def _start(self) -> None:
        if self._started:
            raise AgentStateError(f"agent {self._config.agent_id!r} was already started")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._state.set(ConnectionState.CONNECTING)
        try:
            await self._establish()
        except _StopRequested:
            self._state.set(ConnectionState.CLOSED, "stopped while connecting")
            return
        except BaseException as exc:
            await self._client.disconnect()
            if isinstance(exc, AetherError):
                self._error = exc
            self._state.set(ConnectionState.CLOSED, "could not register")
            # Name the real reason once; run()'s clean-up stop() then logs nothing more.
            self._request_stop("could not register")
            raise
        if self._stop_event.is_set():  # stop() came while registering
            await self._leave()
            self._state.set(ConnectionState.CLOSED, "stopped while connecting")
            return
        self._state.set(ConnectionState.CONNECTED, "registered")
        self._supervisor = asyncio.create_task(self._supervise())
        self._hooks_started = True
        await self._call_hook(self.on_start, "on_start")

    async def stop(self) -> None:
        """Stop taking tasks, let running ones finish within `shutdown_grace_seconds`, hand
        the rest back, unregister and disconnect. Idempotent; safe before start()."""
        if not self._started:
            return
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stop_task)

    async def run(self) -> None:
        """Start, then run until SIGINT/SIGTERM, `shutdown()` or `stop()`, then stop cleanly.

        Raises `AetherConnectionError` when the Hub stays unreachable beyond
        `max_reconnect_attempts`, `AuthenticationError` when it rejects the secret.
        """
        if self._started:
            raise AgentStateError(f"agent {self._config.agent_id!r} was already started")
        with log_context(agent_id=self._config.agent_id):  # signal handlers' records too
            await self._run()

    async def _run(self) -> None:
        installed = self._install_signal_handlers()
        try:
            await self.start()
            assert self._stop_event is not None
            await self._stop_event.wait()
        finally:
            try:
                await self.stop()
            finally:
                self._remove_signal_handlers(installed)
        if self._error is not None:
            raise self._error

    def shutdown(self) -> None:
        """Synchronous graceful shutdown.

        From the agent's event loop thread (e.g. sync code or a signal handler) it requests
        the stop and returns; `run()` then stops cleanly. From another thread it waits for
        the stop to finish. A no-op when the agent is not running.
        """
        loop = self._loop
        if loop is None or not self._started or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._request_stop("shutdown() called")
            self._shutdown_task = loop.create_task(self.stop())
            return
        if not loop.is_running():
            return
        future = asyncio.run_coroutine_threadsafe(self.stop(), loop)
        future.result(timeout=self._config.shutdown_grace_seconds + 2 * _FLUSH_TIMEOUT + 30)

    async def __aenter__(self) -> AetherAgent:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ----------------------------------------------------------------- connecting

    def _request_stop(self, reason: str) -> None:
        if self._stop_event is not None and not self._stop_event.is_set():
            log.info("agent %s stopping: %s", self._config.agent_id, reason)
            self._stop_event.set()

    async def _wait_or_stop(self, delay: float) -> None:
        assert self._stop_event is not None
        stop_wait = asyncio.ensure_future(self._stop_event.wait())
        sleeper = asyncio.ensure_future(self._sleep(delay))
        try:
            await asyncio.wait({stop_wait, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            sleeper.cancel()
        if self._stop_event.is_set():
            raise _StopRequested

    async def _establish(self, *, reconnecting: bool = False) -> None:
        """Connect and register, retrying with backoff; raises when it must give up."""
        config = self._config
        attempt = 0  # attempts made so far
        delay: float | None = None  # before the next attempt, once known
        while True:
            if reconnecting or attempt > 0:
                if delay is None:
                    delay = self._retry_delay(attempt, reconnecting)
                log.debug("connection attempt %d in %.2fs", attempt + 1, delay)
                await self._wait_or_stop(delay)
                delay = None
            if self._stop_event is not None and self._stop_event.is_set():
                raise _StopRequested
            attempt += 1
            try:
                await self._client.connect()
                # Masked in repr/str: agent.registration is shown in logs and shells.
                self._registration = redacted_registration(await self._client.register())
                self._connlog.succeeded()
                return
            except AetherError as exc:
                self._client.drop_for_reconnect()
                if not _worth_retrying(exc):
                    await self._client.disconnect()
                    raise
                limit = config.max_reconnect_attempts
                # The first connection of start() is not a reconnect attempt.
                retries = attempt if reconnecting else attempt - 1
                if limit >= 0 and retries >= limit:
                    await self._client.disconnect()
                    raise AetherConnectionError(
                        f"Gave up on the Aether Hub at {self._hub_description} after "
                        f"{attempt} attempt(s) (max_reconnect_attempts={limit}). "
                        f"Last error: {exc}",
                        hub_url=self._hub_description,
                        retryable=False,
                    ) from exc
                delay = self._retry_delay(attempt, reconnecting)
                self._connlog.failed(exc, delay)
                self._metrics.connection_failed()

    def _retry_delay(self, attempt: int, reconnecting: bool) -> float:
        """Seconds to wait before the next attempt, after `attempt` attempts."""
        # The first connection of start() is not a reconnect: its retries start at 0.
        waits = attempt if reconnecting else attempt - 1
        config = self._config
        return backoff_delay(waits, config.reconnect_delay, max_delay=config.max_reconnect_delay)

    async def _supervise(self) -> None:
        """Run sessions back to back: on a lost session, reconnect and resume."""
        try:
            while True:
                await self._run_session()
                if self._draining:
                    return
                self._state.set(ConnectionState.RECONNECTING, self._lost_reason)
                self._client.drop_for_reconnect()
                self._registration = None
                try:
                    await self._establish(reconnecting=True)
                except _StopRequested:
                    return
                except AetherError as exc:
                    log.error("agent %s gives up: %s", self._config.agent_id, exc)
                    await self._client.disconnect()
                    self._error = exc
                    await self._runner.abort(_FLUSH_TIMEOUT)
                    self._state.set(ConnectionState.CLOSED, "gave up reconnecting")
                    self._request_stop("gave up reconnecting")
                    return
                if self._stopping():
                    return
                self._metrics.reconnected()
                self._state.set(ConnectionState.CONNECTED, "registered again")
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not pass silently
            log.exception("agent supervisor failed")
            self._request_stop("internal error")

    def _stopping(self) -> bool:
        # A method, not the attribute: mypy would keep a narrowing across awaits.
        return self._draining

    def _lose_session(self, reason: str) -> None:
        lost = self._session_lost
        if lost is not None and not lost.is_set():
            self._lost_reason = reason
            lost.set()

    async def _run_session(self) -> None:
        """One registered session: stream tasks, heartbeat, resend the outbox."""
        lost = self._session_lost = asyncio.Event()
        registration = self._registration
        interval = self._config.heartbeat_interval
        if registration is not None and registration.heartbeat_interval_seconds > 0:
            interval = float(registration.heartbeat_interval_seconds)
        self._reader = asyncio.create_task(self._read_stream())
        beater = asyncio.create_task(self._heartbeat(interval))
        results = self._results_task = asyncio.create_task(self._outbox.run_session())
        try:
            await lost.wait()
        finally:
            for task in (self._reader, beater, results):
                task.cancel()
            await asyncio.gather(self._reader, beater, results, return_exceptions=True)
            self._outbox.detach()
            self._reader = self._results_task = None

    async def _read_stream(self) -> None:
        runner = self._runner
        try:
            async for event in self._client._stream_events_wire(batch_assignments=True):
                if event.assignment is not None:
                    runner.accept(event.assignment)
                elif event.cancel is not None:
                    runner.cancel(event.cancel.task_id)
                # Several tasks at once (the Hub batches them when we have room).
                for assignment in event.assignments:
                    runner.accept(assignment)
        except AetherError as exc:
            self._lose_session(f"task stream failed: {exc}")
        else:
            if not self._draining:
                self._lose_session("task stream closed by the Hub")

    async def _heartbeat(self, interval: float) -> None:
        timeout = min(CALL_TIMEOUT, max(interval * 2, 5.0))
        try:
            await heartbeat_loop(
                lambda: self._client.send_heartbeat(self._runner.running_ids, timeout=timeout),
                interval,
                sleep=self._sleep,
            )
        except AetherError as exc:
            self._lose_session(f"heartbeat failed: {exc}")

    # ----------------------------------------------------------------- tasks and results

    async def _handle_one(self, task: models.TaskAssignment) -> models.TaskResult:
        started = time.perf_counter()
        try:
            return await self.handle_task(task)
        finally:
            self._metrics.handler_ran(time.perf_counter() - started)

    async def _deliver(self, result: pb.TaskResult) -> None:
        """Hand a result to the outbox, which keeps it until the Hub acknowledges it."""
        self._outbox.put(result)

    # ----------------------------------------------------------------- stopping

    async def _stop(self) -> None:
        bind_agent(self._config.agent_id)  # a task of its own: the binding ends with it
        self._request_stop("stop() called")
        self._draining = True
        if self._state.state in (ConnectionState.CLOSED, ConnectionState.CONNECTING):
            # Never connected, gave up, or start() is still connecting (it sees the stop).
            return
        self._state.set(ConnectionState.DRAINING)
        reader = self._reader
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        grace = self._config.shutdown_grace_seconds
        if not await self._runner.drain(grace, _FLUSH_TIMEOUT):
            log.warning("some handlers ignored cancellation; abandoning them")
            await self._runner.abort(_FLUSH_TIMEOUT)
        connected = self._results_task is not None
        if len(self._outbox) and not (connected and await self._outbox.wait_empty(_FLUSH_TIMEOUT)):
            log.warning(
                "%d result(s) were not acknowledged before shutdown; the Hub will requeue "
                "their tasks",
                len(self._outbox),
            )
        results = self._results_task
        self._outbox.end_session()
        if results is not None:
            await asyncio.wait({results}, timeout=2.0)
        if self._hooks_started:
            await self._call_hook(self.on_stop, "on_stop")
        if self._supervisor is not None:
            self._lose_session("stopping")
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        await self._leave()
        self._state.set(ConnectionState.CLOSED, "stopped")

    async def _leave(self) -> None:
        """Unregister (best effort) and disconnect."""
        if self._client.registration is not None:
            try:
                await self._client.unregister("agent stopped")
            except AetherError as exc:
                log.warning("unregister failed: %s", exc)
        await self._client.disconnect()

    async def _call_hook(self, hook: Callable[[], Awaitable[None]], name: str) -> None:
        try:
            await hook()
        except Exception:
            log.exception("%s() raised; continuing", name)

    # ----------------------------------------------------------------- signals

    def _install_signal_handlers(self) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or not supported (Windows)
            installed.append(sig)
        return installed

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop_event is None or not self._stop_event.is_set():
            self._request_stop(f"received {sig.name}")
            return
        # A second signal while draining: do not wait out the grace period.
        log.warning("received %s again: releasing running tasks now", sig.name)
        self._runner.release_all()

    def _remove_signal_handlers(self, installed: list[signal.Signals]) -> None:
        loop = asyncio.get_running_loop()
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
