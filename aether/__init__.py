"""Aether Agent SDK: write agents that connect to an Aether Hub, take tasks and use its
services (LLM, tools, memory, messaging).

Subclass `AetherAgent`, override `handle_task`, configure it with `AgentConfig` and
`await agent.run()`.
"""

from aether._connection import ConnectionState as ConnectionState
from aether._context import current_task as current_task
from aether._json import JsonValue as JsonValue
from aether._version import __version__ as __version__
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
from aether.models import AgentRegistration as AgentRegistration
from aether.models import HeartbeatResponse as HeartbeatResponse
from aether.models import SubmitResultResponse as SubmitResultResponse
from aether.models import TaskAssignment as TaskAssignment
from aether.models import TaskCancellation as TaskCancellation
from aether.models import TaskResult as TaskResult
from aether.models import TaskState as TaskState
from aether.models import TaskStatus as TaskStatus
from aether.models import TrustLevel as TrustLevel
from aether.models import UnregisterResponse as UnregisterResponse

__all__ = (
    "AetherAgent",
    "AetherConfigError",
    "AetherConnectionError",
    "AetherError",
    "AgentClient",
    "AgentConfig",
    "AgentRegistration",
    "AgentStateError",
    "AuthenticationError",
    "BusMessage",
    "ChatChunk",
    "ChatResponse",
    "ConnectionState",
    "DeleteResponse",
    "HeartbeatResponse",
    "Hub",
    "HubError",
    "JsonValue",
    "ListKeysResponse",
    "MemoryScopeName",
    "MessageTooLargeError",
    "PermissionDeniedError",
    "PublishResponse",
    "RegistrationError",
    "RequestResponse",
    "RetrieveResponse",
    "StoreResponse",
    "SubmitResultResponse",
    "TaskAssignment",
    "TaskCancellation",
    "TaskContextError",
    "TaskResult",
    "TaskState",
    "TaskStatus",
    "ToolInfo",
    "ToolResult",
    "TrustLevel",
    "UnregisterResponse",
    "Usage",
    "__version__",
    "current_task",
)
