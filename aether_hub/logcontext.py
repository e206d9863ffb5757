"""The agent and task a Hub log record is about, from context variables.

Each gRPC call runs in its own asyncio task, so what a handler binds lasts until the call
ends and never reaches another call: `SessionRegistry.require` binds the calling agent,
`Register` the registering one, and the handlers about one task bind its id.
`HubLogContext` (installed by `aether hub` on its log handler) copies them onto every
record, where the JSON log format (`--log-format json`) shows them as `agent_id` and
`task_id`.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

__all__ = ("HubLogContext", "bind_agent", "bind_task")

_agent_id: ContextVar[str | None] = ContextVar("aether_hub_log_agent_id", default=None)
_task_id: ContextVar[str | None] = ContextVar("aether_hub_log_task_id", default=None)


def bind_agent(agent_id: str) -> None:
    """Name `agent_id` on the records of the current call."""
    _agent_id.set(agent_id)


def bind_task(task_id: str) -> None:
    """Name `task_id` on the records of the current call (from here on)."""
    _task_id.set(task_id)


class HubLogContext(logging.Filter):
    """Sets `record.agent_id` / `record.task_id` from the call's context, unless the
    record has them already; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "agent_id", None) is None:
            agent_id = _agent_id.get()
            if agent_id is not None:
                record.agent_id = agent_id
        if getattr(record, "task_id", None) is None:
            task_id = _task_id.get()
            if task_id is not None:
                record.task_id = task_id
        return True
