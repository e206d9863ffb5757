"""The Aether Agent SDK under the name the SDK guide imports: `from aether_sdk import ...`.

Re-exports the public API of `aether` (see `aether.__all__`).
Names are resolved from `aether` on first use (module `__getattr__`), so importing this
package loads only what a program uses; type checkers see the explicit re-exports.
"""

from aether import __version__ as __version__

TYPE_CHECKING = False  # True for type checkers (mypy treats the name so); no typing import
if TYPE_CHECKING:
    from aether import TERMINAL_TASK_STATES as TERMINAL_TASK_STATES
    from aether import AetherAgent as AetherAgent
    from aether import AetherConfigError as AetherConfigError
    from aether import AetherConnectionError as AetherConnectionError
    from aether import AetherError as AetherError
    from aether import AgentClient as AgentClient
    from aether import AgentConfig as AgentConfig
    from aether import AgentInfo as AgentInfo
    from aether import AgentRegistration as AgentRegistration
    from aether import AgentState as AgentState
    from aether import AgentStateError as AgentStateError
    from aether import AuthenticationError as AuthenticationError
    from aether import BusMessage as BusMessage
    from aether import CancelTaskResponse as CancelTaskResponse
    from aether import ChatChunk as ChatChunk
    from aether import ChatResponse as ChatResponse
    from aether import ConnectionState as ConnectionState
    from aether import DeleteResponse as DeleteResponse
    from aether import HeartbeatResponse as HeartbeatResponse
    from aether import Hub as Hub
    from aether import HubAddress as HubAddress
    from aether import HubError as HubError
    from aether import JsonFieldError as JsonFieldError
    from aether import JsonValue as JsonValue
    from aether import ListKeysResponse as ListKeysResponse
    from aether import MemoryScopeName as MemoryScopeName
    from aether import MessageTooLargeError as MessageTooLargeError
    from aether import PermissionDeniedError as PermissionDeniedError
    from aether import PublishResponse as PublishResponse
    from aether import QueueStats as QueueStats
    from aether import RegistrationError as RegistrationError
    from aether import RequestResponse as RequestResponse
    from aether import RetrieveResponse as RetrieveResponse
    from aether import StoreResponse as StoreResponse
    from aether import SubmitResultResponse as SubmitResultResponse
    from aether import SubmitTaskRequest as SubmitTaskRequest
    from aether import SubmittedTask as SubmittedTask
    from aether import Task as Task
    from aether import TaskAssignment as TaskAssignment
    from aether import TaskCancellation as TaskCancellation
    from aether import TaskClient as TaskClient
    from aether import TaskContextError as TaskContextError
    from aether import TaskNotFoundError as TaskNotFoundError
    from aether import TaskResult as TaskResult
    from aether import TaskState as TaskState
    from aether import TaskStatus as TaskStatus
    from aether import TaskTypeStats as TaskTypeStats
    from aether import TaskWaitTimeoutError as TaskWaitTimeoutError
    from aether import ToolInfo as ToolInfo
    from aether import ToolResult as ToolResult
    from aether import TrustLevel as TrustLevel
    from aether import UnregisterResponse as UnregisterResponse
    from aether import Usage as Usage
    from aether import configure_logging as configure_logging
    from aether import current_task as current_task
    from aether import install_log_redaction as install_log_redaction
    from aether import json_payload as json_payload


# Hidden from type checkers: a module `__getattr__` would make every misspelt import
# type-check; they see the explicit re-exports above instead.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        """The `aether` object of a public name, on first use."""
        if name not in __all__:
            raise AttributeError(f"module 'aether_sdk' has no attribute {name!r}")
        import aether

        value: object = getattr(aether, name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = (
    "TERMINAL_TASK_STATES",
    "AetherAgent",
    "AetherConfigError",
    "AetherConnectionError",
    "AetherError",
    "AgentClient",
    "AgentConfig",
    "AgentInfo",
    "AgentRegistration",
    "AgentState",
    "AgentStateError",
    "AuthenticationError",
    "BusMessage",
    "CancelTaskResponse",
    "ChatChunk",
    "ChatResponse",
    "ConnectionState",
    "DeleteResponse",
    "HeartbeatResponse",
    "Hub",
    "HubAddress",
    "HubError",
    "JsonFieldError",
    "JsonValue",
    "ListKeysResponse",
    "MemoryScopeName",
    "MessageTooLargeError",
    "PermissionDeniedError",
    "PublishResponse",
    "QueueStats",
    "RegistrationError",
    "RequestResponse",
    "RetrieveResponse",
    "StoreResponse",
    "SubmitResultResponse",
    "SubmitTaskRequest",
    "SubmittedTask",
    "Task",
    "TaskAssignment",
    "TaskCancellation",
    "TaskClient",
    "TaskContextError",
    "TaskNotFoundError",
    "TaskResult",
    "TaskState",
    "TaskStatus",
    "TaskTypeStats",
    "TaskWaitTimeoutError",
    "ToolInfo",
    "ToolResult",
    "TrustLevel",
    "UnregisterResponse",
    "Usage",
    "__version__",
    "configure_logging",
    "current_task",
    "install_log_redaction",
    "json_payload",
)
