"""The guide's models: the generated Pydantic models of the wire messages, under public names.

Each has `to_wire()` and `from_wire()`; the SDK converts once per message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from aether._wire import models as _models
from aether._wire import pb as _pb

__all__ = (
    "TERMINAL_TASK_STATES",
    "AgentInfo",
    "AgentRegistration",
    "AgentState",
    "CancelTaskResponse",
    "HeartbeatResponse",
    "QueueStats",
    "SubmitResultResponse",
    "SubmitTaskRequest",
    "Task",
    "TaskAssignment",
    "TaskCancellation",
    "TaskResult",
    "TaskState",
    "TaskStatus",
    "TaskTypeStats",
    "TrustLevel",
    "UnregisterResponse",
    "redacted_registration",
)

AgentInfo = _models.AgentInfo
AgentRegistration = _models.AgentRegistration
CancelTaskResponse = _models.CancelTaskResponse
HeartbeatResponse = _models.HeartbeatResponse
QueueStats = _models.QueueStats
SubmitResultResponse = _models.SubmitResultResponse
SubmitTaskRequest = _models.SubmitTaskRequest
Task = _models.Task
TaskAssignment = _models.TaskAssignment
TaskCancellation = _models.TaskCancellation
TaskResult = _models.TaskResult
TaskStatus = _models.TaskStatus
TaskTypeStats = _models.TaskTypeStats
UnregisterResponse = _models.UnregisterResponse
TaskState = _pb.TaskState
AgentState = _pb.AgentState
TrustLevel = _pb.TrustLevel

#: The states a task never leaves: the Hub, `TaskClient` and the CLI all stop here.
TERMINAL_TASK_STATES: Final[frozenset[_pb.TaskState]] = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT}
)


class _RedactedAgentRegistration(_models.AgentRegistration):
    """An `AgentRegistration` whose repr and str hide the session token.

    The token is a bearer credential: whoever holds it acts as the agent. Reading
    `.session_token` still gives it; only the text forms mask it.
    """

    def __repr_name__(self) -> str:
        return "AgentRegistration"

    def __repr_args__(self) -> Iterator[tuple[str | None, object]]:
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "session_token" and value else value)


def redacted_registration(registration: AgentRegistration) -> AgentRegistration:
    """The same registration, as an `AgentRegistration` whose repr masks the session token."""
    if isinstance(registration, _RedactedAgentRegistration):
        return registration
    return _RedactedAgentRegistration.from_wire(registration.to_wire())
