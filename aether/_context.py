"""The task being handled in the current asyncio context."""

from __future__ import annotations

from contextvars import ContextVar

from aether._wire import models
from aether.errors import TaskContextError

__all__ = ("current_task", "set_current_task")

_current_task: ContextVar[models.TaskAssignment | None] = ContextVar(
    "aether_current_task", default=None
)

set_current_task = _current_task.set


def current_task() -> models.TaskAssignment:
    """The task whose handler is running in this context.

    Raises `TaskContextError` outside `handle_task` (and the code it awaits).
    """
    task = _current_task.get()
    if task is None:
        raise TaskContextError(
            "no task is being handled here: task-scoped calls (memory scope 'task' or "
            "'workflow', report_progress) only work inside handle_task"
        )
    return task
