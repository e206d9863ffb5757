"""`TestHub`: a development Hub in this process, on a free local port, for tests and demos.

It is the real `aether hub` (`HubServer`, started `--dev` so unknown agents enrol) plus
typed handles a test needs: submit a task and wait for its outcome through the real
`TaskService`, read what agents stored in memory, the messages they published and the
LLM calls they made.

```python
async with TestHub() as hub:
    async with hub.running(MyAgent(AgentConfig(agent_id="a1", agent_name="A", hub_url=hub.url))):
        task = await hub.run_task("hello", target_agent_id="a1")
        assert task.state is TaskState.SUCCEEDED
```
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, runtime_checkable

from grpclib.client import Channel

from aether import (
    TERMINAL_TASK_STATES,
    AetherAgent,
    ConnectionState,
    HubError,
    TaskClient,
    TaskWaitTimeoutError,
)
from aether_hub._wire import models, pb
from aether_hub.bus import BusMessageData
from aether_hub.llm_providers import ProviderCall
from aether_hub.server import HubServer, Servable
from aether_hub.settings import HubConfig
from aether_hub.testing.inmemory import open_in_memory_channel

__all__ = ("LLMCall", "RecordedMessage", "TestHub", "TestHubError")

#: States after which a task no longer changes (the SDK's one definition).
TERMINAL_STATES = TERMINAL_TASK_STATES

#: Default seconds a test waits for something that should happen quickly.
DEFAULT_TIMEOUT = 30.0


class TestHubError(AssertionError):
    """Something a test waited for did not happen; the message says what and for how long."""

    __test__ = False  # not a test class, despite its name


@dataclass(frozen=True, slots=True)
class RecordedMessage:
    """A message published on the Hub's bus (by an agent or by the test)."""

    subject: str
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    reply_to: str = ""


@dataclass(frozen=True, slots=True)
class LLMCall:
    """One chat completion the Hub's LLM provider served."""

    model: str
    messages: tuple[tuple[str, str], ...]
    prompt_tokens: int
    completion_tokens: int
    #: The provider's error, when the call failed.
    error: str = ""

    @property
    def total_tokens(self) -> int:
        """prompt_tokens + completion_tokens."""
        return self.prompt_tokens + self.completion_tokens


@runtime_checkable
class _RecordsCalls(Protocol):
    @property
    def calls(self) -> Sequence[object]: ...


def _llm_call(call: ProviderCall) -> LLMCall:
    completion = call.completion
    return LLMCall(
        model=completion.model if completion is not None else call.request.model,
        messages=tuple((turn.role, turn.content) for turn in call.request.messages),
        prompt_tokens=completion.usage.prompt_tokens if completion is not None else 0,
        completion_tokens=completion.usage.completion_tokens if completion is not None else 0,
        error=call.error,
    )


class TestHub:
    """A dev Hub on `127.0.0.1:<free port>` with typed test handles. See the module docs.

    `config` overrides `HubConfig` (e.g. `llm_provider`, `tools`); `dev` stays on unless
    given. Start with `async with TestHub() as hub:` or `await hub.start()`.

    With `in_memory=True` the Hub listens on no socket: agents passed to `running()` and
    the test's own client reach its services over grpclib's in-memory transport (what
    `TaskHarness` uses for unit tests without network). `url` is then unavailable.
    """

    __test__ = False  # not a test class, despite its name

    def __init__(
        self, config: HubConfig | None = None, *, port: int = 0, in_memory: bool = False
    ) -> None:
        self._config = config or HubConfig(host="127.0.0.1", port=port, dev=True)
        self._server = HubServer(self._config)
        self._in_memory = in_memory
        self._memory_channels: contextlib.AsyncExitStack | None = None
        self._services: tuple[Servable, ...] = ()
        self._client: TaskClient | None = None
        self._recorder: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._recording = asyncio.Event()
        self._messages: list[RecordedMessage] = []
        self._status_reports: list[models.TaskStatus] = []
        self._message_added = asyncio.Condition()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the Hub and the message recorder. Raises `OSError` if the port is taken."""
        # The test's own client is the SDK's TaskClient, with the Hub's client token if it
        # has one (an in-memory Hub is reached through an in-memory channel).
        if self._in_memory:
            self._services = await self._server.build_services()
            token = self._config.client_token()
            self._memory_channels = contextlib.AsyncExitStack()
            self._client = TaskClient(
                "in-memory",
                token=token,
                channel_factory=self._in_memory_channel,
                timeout=DEFAULT_TIMEOUT,
            )
            # What the listening Hub's own loop does: expire missed heartbeats and
            # overdue tasks.
            self._sweeper = asyncio.create_task(self._sweep(), name="aether-testhub-sweeper")
        else:
            await self._server.start()
            self._client = TaskClient(
                f"127.0.0.1:{self._server.port}",
                token=self._config.client_token(),
                timeout=DEFAULT_TIMEOUT,
            )
        recorder = asyncio.create_task(self._record(), name="aether-testhub-recorder")
        self._recorder = recorder
        recording = asyncio.ensure_future(self._recording.wait())
        await asyncio.wait({recording, recorder}, return_when=asyncio.FIRST_COMPLETED)
        if not recording.done():  # the recorder failed before it subscribed
            recording.cancel()
            await self.stop()
            recorder.result()

    async def stop(self) -> None:
        """Stop the recorder, the client channel and the Hub. Idempotent."""
        for task in (self._recorder, self._sweeper):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._recorder = self._sweeper = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._memory_channels is not None:
            await self._memory_channels.aclose()
            self._memory_channels = None
        await self._server.stop()

    async def _in_memory_channel(self) -> Channel:
        assert self._memory_channels is not None
        return await open_in_memory_channel(self._memory_channels, self._services, self._observe)

    async def __aenter__(self) -> TestHub:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self._server.sweep()

    async def _record(self) -> None:
        async with self._server.bus.subscribe(">") as subscription:
            self._recording.set()
            async for message in subscription:
                await self._add_message(message)

    async def _add_message(self, message: BusMessageData) -> None:
        async with self._message_added:
            self._messages.append(
                RecordedMessage(
                    subject=message.subject,
                    payload=message.payload,
                    headers=dict(message.headers),
                    reply_to=message.reply_to,
                )
            )
            self._message_added.notify_all()

    # ---------------------------------------------------------------- handles

    @property
    def server(self) -> HubServer:
        """The underlying `HubServer` (queue, sessions, memory, bus, ...)."""
        return self._server

    @property
    def url(self) -> str:
        """`host:port` to give agents as `hub_url` (or `HUB_URL` / `AETHER_HUB_URL`)."""
        if self._in_memory:
            raise RuntimeError("an in-memory TestHub has no URL; pass agents to running()")
        return self._server.address

    @property
    def port(self) -> int:
        """The port the Hub listens on."""
        return self._server.port

    @property
    def client(self) -> TaskClient:
        """The `aether.TaskClient` the handles below use (for `list()` and the rest)."""
        if self._client is None:
            raise RuntimeError("the TestHub is not started")
        return self._client

    async def submit(
        self,
        description: str = "",
        *,
        payload: bytes = b"",
        task_type: str = "",
        target_agent_id: str = "",
        metadata: Mapping[str, str] | None = None,
        workflow_id: str = "",
        priority: int = 0,
        max_attempts: int = 0,
        timeout_seconds: int = 0,
    ) -> str:
        """Submit a task through `TaskService.SubmitTask`; returns its id."""
        submitted = await self.client.submit(
            description,
            payload=payload,
            task_type=task_type,
            target_agent_id=target_agent_id,
            metadata=metadata,
            workflow_id=workflow_id,
            priority=priority,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
        )
        return submitted.task_id

    async def get_task(self, task_id: str) -> models.Task:
        """The task now (`TaskService.GetTask`)."""
        return await self.client.get(task_id)

    async def cancel_task(self, task_id: str, *, reason: str = "") -> models.CancelTaskResponse:
        """Cancel a pending or running task (`TaskService.CancelTask`)."""
        return await self.client.cancel(task_id, reason=reason)

    async def watch(self, task_id: str) -> AsyncIterator[models.Task]:
        """The task now and after every change, until it is terminal (`WatchTask`)."""
        async for task in self.client.watch(task_id):
            yield task

    async def wait_for_task(self, task_id: str, *, timeout: float = DEFAULT_TIMEOUT) -> models.Task:
        """Wait until the task is terminal (succeeded, failed, cancelled, timed out)."""
        try:
            return await self.client.wait(task_id, timeout=timeout)
        except TaskWaitTimeoutError as exc:
            task = exc.task or await self.get_task(task_id)
            raise TestHubError(
                f"task {task_id} is still {task.state.name} after {timeout} s "
                f"(assigned to {task.assigned_agent_id or 'no agent'})"
            ) from None
        except HubError as exc:
            if exc.status is not None:
                raise
            raise TestHubError(f"task {task_id}: {exc}") from None

    async def run_task(
        self,
        description: str = "",
        *,
        payload: bytes = b"",
        task_type: str = "",
        target_agent_id: str = "",
        metadata: Mapping[str, str] | None = None,
        workflow_id: str = "",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> models.Task:
        """Submit a task and wait for its outcome; returns the terminal task."""
        task_id = await self.submit(
            description,
            payload=payload,
            task_type=task_type,
            target_agent_id=target_agent_id,
            metadata=metadata,
            workflow_id=workflow_id,
        )
        return await self.wait_for_task(task_id, timeout=timeout)

    async def wait_for_agent(self, agent_id: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until `agent_id` has a live session (it registered)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._server.sessions.for_agent(agent_id):
            if loop.time() > deadline:
                raise TestHubError(f"agent {agent_id!r} did not register within {timeout} s")
            await asyncio.sleep(0.02)

    @contextlib.asynccontextmanager
    async def running(
        self, *agents: AetherAgent, timeout: float = DEFAULT_TIMEOUT
    ) -> AsyncIterator[None]:
        """Start the agents (connected to this Hub), and stop them on exit."""
        started: list[AetherAgent] = []
        try:
            for agent in agents:
                if self._in_memory:
                    self._attach(agent)
                await asyncio.wait_for(agent.start(), timeout)
                started.append(agent)
                if agent.connection_state is not ConnectionState.CONNECTED:
                    raise TestHubError(
                        f"agent {agent.config.agent_id!r} is {agent.connection_state.value}"
                    )
            yield
        finally:
            for agent in reversed(started):
                await agent.stop()

    def _observe(self, message: object) -> None:
        if isinstance(message, pb.TaskStatus):
            self._status_reports.append(models.TaskStatus.from_wire(message))

    @property
    def status_reports(self) -> list[models.TaskStatus]:
        """Every progress report (`ReportStatus`) agents sent, oldest first.

        Recorded exactly only by an in-memory Hub; otherwise follow a task with `watch()`.
        """
        return list(self._status_reports)

    def _attach(self, agent: AetherAgent) -> None:
        # Every connection of the agent (reconnects too) gets an in-memory channel of its
        # own: closing it on stop must not close anyone else's.
        agent.client.set_channel_factory(self._in_memory_channel)

    def memory(self, scope: str = "global", scope_id: str = "") -> dict[str, object]:
        """The live values of a memory scope (`agent`, `task`, `workflow`, `global`) by key.

        `scope_id` is the agent id, task id or workflow id of those scopes.
        """
        return self._server.memory.snapshot(scope, scope_id)

    @property
    def messages(self) -> list[RecordedMessage]:
        """Every message published on the Hub's bus since start, oldest first."""
        return list(self._messages)

    async def wait_for_message(
        self, subject: str, *, timeout: float = DEFAULT_TIMEOUT
    ) -> RecordedMessage:
        """The first recorded message on exactly `subject` (waits for one if none yet)."""

        async def _first() -> RecordedMessage:
            async with self._message_added:
                while True:
                    for message in self._messages:
                        if message.subject == subject:
                            return message
                    await self._message_added.wait()

        try:
            return await asyncio.wait_for(_first(), timeout)
        except asyncio.TimeoutError:
            seen = sorted({m.subject for m in self._messages})
            raise TestHubError(
                f"no message on {subject!r} within {timeout} s (seen: {seen})"
            ) from None

    async def publish(self, subject: str, payload: bytes = b"") -> None:
        """Publish a message on the Hub's bus, as an outside sender would."""
        await self._server.bus.publish(subject, payload, {})

    @property
    def llm_calls(self) -> list[LLMCall]:
        """The chat completions the Hub's LLM provider served, oldest first."""
        provider = self._server.llm_provider
        if not isinstance(provider, _RecordsCalls):
            return []
        return [_llm_call(raw) for raw in provider.calls if isinstance(raw, ProviderCall)]
