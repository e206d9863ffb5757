"""`TaskHarness`: unit-test an agent's `handle_task` with in-memory Hub services.

The agent runs for real (register, task stream, results), but against the dev Hub's
services over grpclib's in-memory transport: no socket, no port, no network. Its
`self.hub.llm`, `.tools`, `.memory` and `.messaging` behave as on `aether hub --dev`
(echo LLM, built-in tools, SQLite memory, in-process bus).

```python
async def test_my_agent() -> None:
    async with TaskHarness(MyAgent(AgentConfig(agent_id="a1", agent_name="A"))) as harness:
        run = await harness.run("hello")
    assert run.success and run.text == "Processed: hello"
```
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType

from aether import AetherAgent
from aether_hub._wire import models, pb
from aether_hub.settings import HubConfig
from aether_hub.testing.testhub import DEFAULT_TIMEOUT, LLMCall, RecordedMessage, TestHub

__all__ = ("HarnessRun", "ProgressReport", "TaskHarness")


@dataclass(frozen=True, slots=True)
class ProgressReport:
    """A progress report of the task, as the Hub recorded it."""

    progress: float
    message: str


@dataclass(frozen=True, slots=True)
class HarnessRun:
    """The outcome of one task run by `TaskHarness.run`."""

    #: The task in its terminal state (state, result, error_message, metrics, attempt...).
    task: models.Task
    #: Every progress report the agent sent while it ran, in order.
    progress: tuple[ProgressReport, ...]
    #: Messages published on the Hub while it ran.
    messages: tuple[RecordedMessage, ...]
    #: LLM calls the agent made while it ran.
    llm_calls: tuple[LLMCall, ...]

    @property
    def success(self) -> bool:
        """Whether the task succeeded."""
        return self.task.state is pb.TaskState.SUCCEEDED

    @property
    def result(self) -> bytes:
        """The result bytes the agent returned."""
        return self.task.result

    @property
    def text(self) -> str:
        """The result decoded as UTF-8."""
        return self.task.result.decode("utf-8", "replace")

    @property
    def error_message(self) -> str:
        """The failure message, when the task failed."""
        return self.task.error_message

    @property
    def metrics(self) -> dict[str, str]:
        """The metrics the agent reported."""
        return dict(self.task.metrics)


class TaskHarness:
    """Runs tasks through one agent against an in-memory dev Hub. See the module docs.

    The agent's `hub_url` is ignored. `hub_config` tunes the Hub (e.g. `tools=(...)` for
    tool plugins, `llm_provider`). Use `async with TaskHarness(agent) as harness:`.
    """

    def __init__(self, agent: AetherAgent, *, hub_config: HubConfig | None = None) -> None:
        self._agent = agent
        self._hub = TestHub(hub_config or HubConfig(dev=True), in_memory=True)
        self._stack: AsyncExitStack | None = None

    @property
    def agent(self) -> AetherAgent:
        """The agent under test."""
        return self._agent

    @property
    def hub(self) -> TestHub:
        """The in-memory Hub (memory, messages, LLM calls, publish, submit...)."""
        return self._hub

    async def __aenter__(self) -> TaskHarness:
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(self._hub)
            await stack.enter_async_context(self._hub.running(self._agent))
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def run(
        self,
        description: str = "",
        *,
        payload: bytes = b"",
        task_type: str = "",
        metadata: Mapping[str, str] | None = None,
        workflow_id: str = "",
        deadline_seconds: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> HarnessRun:
        """Send one task to the agent and wait for its outcome.

        `deadline_seconds` is the task's own deadline on the Hub (0 = none): past it the
        task is TIMED_OUT and the handler cancelled. `timeout` bounds the test's wait.
        """
        if self._stack is None:
            raise RuntimeError("use `async with TaskHarness(agent) as harness:` first")
        hub = self._hub
        first_message, first_call = len(hub.messages), len(hub.llm_calls)
        task_id = await hub.submit(
            description,
            payload=payload,
            task_type=task_type,
            target_agent_id=self._agent.config.agent_id,
            metadata=metadata,
            workflow_id=workflow_id,
            timeout_seconds=deadline_seconds,
        )
        task = await hub.wait_for_task(task_id, timeout=timeout)
        reports = tuple(
            ProgressReport(status.progress, status.message)
            for status in hub.status_reports
            if status.task_id == task_id
        )
        return HarnessRun(
            task=task,
            progress=reports,
            messages=tuple(hub.messages[first_message:]),
            llm_calls=tuple(hub.llm_calls[first_call:]),
        )

    def memory(self, scope: str = "agent", scope_id: str = "") -> dict[str, object]:
        """The live values of a memory scope; `agent` defaults to the agent under test."""
        if scope == "agent" and not scope_id:
            scope_id = self._agent.config.agent_id
        return self._hub.memory(scope, scope_id)
