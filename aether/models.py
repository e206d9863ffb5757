"""The guide's models: the generated Pydantic models of the wire messages, under public names.

Each has `to_wire()` and `from_wire()`; the SDK converts once per message.
"""

from aether._wire import models as _models
from aether._wire import pb as _pb

__all__ = (
    "AgentRegistration",
    "HeartbeatResponse",
    "SubmitResultResponse",
    "TaskAssignment",
    "TaskCancellation",
    "TaskResult",
    "TaskState",
    "TaskStatus",
    "TrustLevel",
    "UnregisterResponse",
)

AgentRegistration = _models.AgentRegistration
HeartbeatResponse = _models.HeartbeatResponse
SubmitResultResponse = _models.SubmitResultResponse
TaskAssignment = _models.TaskAssignment
TaskCancellation = _models.TaskCancellation
TaskResult = _models.TaskResult
TaskStatus = _models.TaskStatus
UnregisterResponse = _models.UnregisterResponse
TaskState = _pb.TaskState
TrustLevel = _pb.TrustLevel
