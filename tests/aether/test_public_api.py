"""The curated public API: pinned names, and `aether_sdk` re-exports exactly them."""

from __future__ import annotations

import ast
from pathlib import Path

import aether
import aether_sdk

PINNED = (
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

#: What the SDK guide imports or names in its API reference.
GUIDE_NAMES = {
    "AetherAgent",
    "AgentClient",
    "AgentConfig",
    "AgentRegistration",
    "TaskAssignment",
    "TaskResult",
    "TaskStatus",
}


def test_exported_names_are_pinned() -> None:
    assert isinstance(aether.__all__, tuple)
    assert aether.__all__ == PINNED
    for name in aether.__all__:
        assert hasattr(aether, name), name


def test_aether_sdk_reexports_the_same_objects() -> None:
    assert aether_sdk.__all__ == aether.__all__
    for name in aether.__all__:
        assert getattr(aether_sdk, name) is getattr(aether, name), name
    assert set(aether_sdk.__all__) >= GUIDE_NAMES


def test_init_files_use_explicit_reexports() -> None:
    root = Path(aether.__file__).parent.parent
    for init in (root / "aether" / "__init__.py", root / "aether_sdk" / "__init__.py"):
        tree = ast.parse(init.read_text())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    assert alias.asname == alias.name, f"{init}: {alias.name} is not `X as X`"
            assert not isinstance(node, ast.Import), f"{init}: plain import"


def test_guide_models_are_the_generated_models() -> None:
    from aether._wire import models

    assert aether.TaskAssignment is models.TaskAssignment
    assert aether.TaskResult is models.TaskResult
    assert aether.AgentRegistration is models.AgentRegistration
    assert aether.TaskStatus is models.TaskStatus
    assert aether.Task is models.Task
    assert aether.CancelTaskResponse is models.CancelTaskResponse
    assert aether.AgentInfo is models.AgentInfo
    assert aether.QueueStats is models.QueueStats


def test_hub_responses_are_the_generated_models() -> None:
    """One kind of model: the facades' response types are the generated classes."""
    from aether._wire import model_base, models

    for name in (
        "BusMessage",
        "ChatChunk",
        "ChatResponse",
        "DeleteResponse",
        "ListKeysResponse",
        "PublishResponse",
        "RequestResponse",
        "RetrieveResponse",
        "StoreResponse",
        "ToolInfo",
        "Usage",
    ):
        assert getattr(aether, name) is getattr(models, name), name
    assert aether.ToolResult is models.ExecuteToolResponse
    assert aether.JsonFieldError is model_base.JsonFieldError
