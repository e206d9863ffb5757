"""Aether Agent SDK: write agents that connect to an Aether Hub, take tasks and use its
services (LLM, tools, memory, messaging).

Subclass `AetherAgent`, override `handle_task`, configure it with `AgentConfig` and
`await agent.run()`. Hand work to agents from your own code with `TaskClient`.

Importing the package is cheap: the names below are imported from their modules the first
time they are used (module `__getattr__`), so `import aether` does not load pydantic,
grpclib or the generated models until a program uses them. Type checkers see the explicit
re-exports under `TYPE_CHECKING`.
"""

from aether._version import __version__ as __version__

TYPE_CHECKING = False  # True for type checkers (mypy treats the name so); no typing import
if TYPE_CHECKING:
    from aether._connection import ConnectionState as ConnectionState
    from aether._context import current_task as current_task
    from aether._json import JsonFieldError as JsonFieldError
    from aether._json import JsonValue as JsonValue
    from aether._json import json_payload as json_payload
    from aether._logging import configure_logging as configure_logging
    from aether.address import HubAddress as HubAddress
    from aether.agent import AetherAgent as AetherAgent
    from aether.client import AgentClient as AgentClient
    from aether.config import AgentConfig as AgentConfig
    from aether.errors import AetherConfigError as AetherConfigError
    from aether.errors import AetherConnectionError as AetherConnectionError
    from aether.errors import AetherError as AetherError
    from aether.errors import AgentStateError as AgentStateError
    from aether.errors import AuthenticationError as AuthenticationError
    from aether.errors import HubError as HubError
    from aether.errors import MessageTooLargeError as MessageTooLargeError
    from aether.errors import PermissionDeniedError as PermissionDeniedError
    from aether.errors import RegistrationError as RegistrationError
    from aether.errors import TaskContextError as TaskContextError
    from aether.errors import TaskNotFoundError as TaskNotFoundError
    from aether.errors import TaskWaitTimeoutError as TaskWaitTimeoutError
    from aether.hub import BusMessage as BusMessage
    from aether.hub import ChatChunk as ChatChunk
    from aether.hub import ChatResponse as ChatResponse
    from aether.hub import DeleteResponse as DeleteResponse
    from aether.hub import Hub as Hub
    from aether.hub import ListKeysResponse as ListKeysResponse
    from aether.hub import MemoryScopeName as MemoryScopeName
    from aether.hub import PublishResponse as PublishResponse
    from aether.hub import RequestResponse as RequestResponse
    from aether.hub import RetrieveResponse as RetrieveResponse
    from aether.hub import StoreResponse as StoreResponse
    from aether.hub import ToolInfo as ToolInfo
    from aether.hub import ToolResult as ToolResult
    from aether.hub import Usage as Usage
    from aether.logredact import install_log_redaction as install_log_redaction
    from aether.models import TERMINAL_TASK_STATES as TERMINAL_TASK_STATES
    from aether.models import AgentInfo as AgentInfo
    from aether.models import AgentRegistration as AgentRegistration
    from aether.models import AgentState as AgentState
    from aether.models import CancelTaskResponse as CancelTaskResponse
    from aether.models import HeartbeatResponse as HeartbeatResponse
    from aether.models import QueueStats as QueueStats
    from aether.models import SubmitResultResponse as SubmitResultResponse
    from aether.models import SubmitTaskRequest as SubmitTaskRequest
    from aether.models import Task as Task
    from aether.models import TaskAssignment as TaskAssignment
    from aether.models import TaskCancellation as TaskCancellation
    from aether.models import TaskResult as TaskResult
    from aether.models import TaskState as TaskState
    from aether.models import TaskStatus as TaskStatus
    from aether.models import TaskTypeStats as TaskTypeStats
    from aether.models import TrustLevel as TrustLevel
    from aether.models import UnregisterResponse as UnregisterResponse
    from aether.taskclient import SubmittedTask as SubmittedTask
    from aether.taskclient import TaskClient as TaskClient

# Public name -> the module that defines it, imported on first use.
_LAZY: dict[str, str] = {
    "ConnectionState": "aether._connection",
    "current_task": "aether._context",
    "JsonFieldError": "aether._json",
    "JsonValue": "aether._json",
    "json_payload": "aether._json",
    "configure_logging": "aether._logging",
    "HubAddress": "aether.address",
    "AetherAgent": "aether.agent",
    "AgentClient": "aether.client",
    "AgentConfig": "aether.config",
    "AetherConfigError": "aether.errors",
    "AetherConnectionError": "aether.errors",
    "AetherError": "aether.errors",
    "AgentStateError": "aether.errors",
    "AuthenticationError": "aether.errors",
    "HubError": "aether.errors",
    "MessageTooLargeError": "aether.errors",
    "PermissionDeniedError": "aether.errors",
    "RegistrationError": "aether.errors",
    "TaskContextError": "aether.errors",
    "TaskNotFoundError": "aether.errors",
    "TaskWaitTimeoutError": "aether.errors",
    "BusMessage": "aether.hub",
    "ChatChunk": "aether.hub",
    "ChatResponse": "aether.hub",
    "DeleteResponse": "aether.hub",
    "Hub": "aether.hub",
    "ListKeysResponse": "aether.hub",
    "MemoryScopeName": "aether.hub",
    "PublishResponse": "aether.hub",
    "RequestResponse": "aether.hub",
    "RetrieveResponse": "aether.hub",
    "StoreResponse": "aether.hub",
    "ToolInfo": "aether.hub",
    "ToolResult": "aether.hub",
    "Usage": "aether.hub",
    "install_log_redaction": "aether.logredact",
    "TERMINAL_TASK_STATES": "aether.models",
    "AgentInfo": "aether.models",
    "AgentRegistration": "aether.models",
    "AgentState": "aether.models",
    "CancelTaskResponse": "aether.models",
    "HeartbeatResponse": "aether.models",
    "QueueStats": "aether.models",
    "SubmitResultResponse": "aether.models",
    "SubmitTaskRequest": "aether.models",
    "Task": "aether.models",
    "TaskAssignment": "aether.models",
    "TaskCancellation": "aether.models",
    "TaskResult": "aether.models",
    "TaskState": "aether.models",
    "TaskStatus": "aether.models",
    "TaskTypeStats": "aether.models",
    "TrustLevel": "aether.models",
    "UnregisterResponse": "aether.models",
    "SubmittedTask": "aether.taskclient",
    "TaskClient": "aether.taskclient",
}


# Hidden from type checkers: a module `__getattr__` would make every misspelt import
# type-check; they see the explicit re-exports above instead.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        """Import a public name from its module the first time it is used."""
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'aether' has no attribute {name!r}")
        import importlib

        value: object = getattr(importlib.import_module(module), name)
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
