"""Log output for `aether run`, `aether hub` and programs that use the SDK: plain text (the
default) or one JSON object per line, with the agent and task a record is about.

`configure_logging()` is the one place that sets up the root logger's output. The agent
runtime binds `agent_id` (around everything an agent does) and `task_id` (around each
`handle_task`) in context variables, so every record logged there — by the SDK or by the
handler's own loggers — carries them, without any formatting of messages. Records can
also carry them as attributes (`log.info(..., extra={"task_id": ...})`, or a filter that
sets them, as the Hub's does); those win over the context.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TextIO

__all__ = (
    "LOG_FORMATS",
    "LOG_FORMAT_ENV",
    "ContextFilter",
    "JsonFormatter",
    "bind_agent",
    "bind_task",
    "configure_logging",
    "log_context",
)

#: The environment variable naming the log format when no flag does.
LOG_FORMAT_ENV = "AETHER_LOG_FORMAT"
#: The formats `configure_logging` knows.
LOG_FORMATS = ("plain", "json")

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The record attributes copied into a JSON line when a record has them.
_CONTEXT_FIELDS = ("agent_id", "task_id")

_agent_id: ContextVar[str | None] = ContextVar("aether_log_agent_id", default=None)
_task_id: ContextVar[str | None] = ContextVar("aether_log_task_id", default=None)


def bind_agent(agent_id: str) -> None:
    """Name `agent_id` on the records of this context (and of tasks started from it)."""
    _agent_id.set(agent_id)


def bind_task(task_id: str) -> None:
    """Name `task_id` on the records of this context (and of tasks started from it)."""
    _task_id.set(task_id)


@contextlib.contextmanager
def log_context(*, agent_id: str | None = None, task_id: str | None = None) -> Iterator[None]:
    """Name `agent_id` / `task_id` (those given) on the records logged inside the block."""
    agent_token = _agent_id.set(agent_id) if agent_id is not None else None
    task_token = _task_id.set(task_id) if task_id is not None else None
    try:
        yield
    finally:
        if task_token is not None:
            _task_id.reset(task_token)
        if agent_token is not None:
            _agent_id.reset(agent_token)


class ContextFilter(logging.Filter):
    """Sets `record.agent_id` / `record.task_id` from the context, unless the record has
    them already; never drops a record."""

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


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: `time` (ISO 8601, UTC), `level`, `logger`,
    `message`, then `agent_id` and `task_id` when the record has them, and `exception` /
    `stack` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        entry: dict[str, object] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]  # typeshed: generic in the stream
    """The handler `configure_logging` installs (found again to be replaced)."""


def _resolve_format(fmt: str | None) -> str:
    chosen = (fmt or os.environ.get(LOG_FORMAT_ENV, "") or "plain").strip().lower()
    if chosen not in LOG_FORMATS:
        where = "log format" if fmt else LOG_FORMAT_ENV
        raise ValueError(f"{where} must be one of {', '.join(LOG_FORMATS)}, not {chosen!r}")
    return chosen


def configure_logging(
    level: str | int = "INFO",
    *,
    fmt: str | None = None,
    stream: TextIO | None = None,
    force: bool = False,
) -> logging.Handler | None:
    """Send log records to `stream` (default: stderr) as `fmt`: "plain" (`time LEVEL
    logger: message`) or "json" (one object per line, with agent_id / task_id); None reads
    `AETHER_LOG_FORMAT`, else plain. Sets the root logger's `level`.

    Like `logging.basicConfig`, it leaves a root logger that already has handlers (set up
    by the application, or by pytest) alone, unless `force`: then its handler is added
    beside them. Calling it again replaces the handler it installed before. Returns the
    handler it installed, or None. Raises `ValueError` for an unknown format.
    """
    chosen = _resolve_format(fmt)
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _Handler)]
    if not force and len(root.handlers) > len(ours):
        return None
    for handler in ours:
        root.removeHandler(handler)
        handler.close()
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(PLAIN_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
