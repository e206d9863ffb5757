"""The Hub's status page (docs/observability.md#status-page): plain server-rendered HTML.

Served on the metrics port next to `/metrics` (`MetricsServer`): `/` (or `/status`) shows
the connected agents, the queue by task type and the most recent tasks; `/tasks/<id>`
shows one task and its attempts. No JavaScript: the overview reloads itself every few
seconds with a `<meta http-equiv="refresh">`.

Every string that comes from a client or an agent (descriptions, metadata, names, status
and error messages, ids) goes through `html.escape` before it reaches the page.

The Hub keeps a task's current state and its timestamps, not a log of every transition,
so a task's history is what those show: when it was submitted, its current attempt and
lease, its last status report and its end.
"""

from __future__ import annotations

import datetime
import html
import urllib.parse
from collections.abc import Callable, Iterable, Sequence

from aether_hub import inspection
from aether_hub._wire import pb
from aether_hub.sessions import SessionRegistry
from aether_hub.taskrecord import TaskRecord, state_name
from aether_hub.tasks import TaskQueue

__all__ = ("RECENT_TASKS", "StatusPage")

#: How many of the newest tasks the overview lists.
RECENT_TASKS = 50
_REFRESH_SECONDS = 5

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}#agents td:last-child,#tasks td:last-child{white-space:nowrap}
.SUCCEEDED{color:#1a7f37}.FAILED,.TIMED_OUT{color:#cf222e}.CANCELLED{color:#777}
.RUNNING,.LEASED,.STREAMING{color:#0969da}.PENDING,.DRAINING{color:#9a6700}
.muted{color:#777}
"""


def _e(text: object) -> str:
    """`text` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def _when(value: datetime.datetime | float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float | int):
        value = datetime.datetime.fromtimestamp(value, tz=datetime.timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _task_link(task_id: str) -> str:
    href = "/tasks/" + urllib.parse.quote(task_id, safe="")
    return f'<a href="{_e(href)}">{_e(task_id)}</a>'


def _state(name: str) -> str:
    return f'<span class="{_e(name)}">{_e(name)}</span>'


def _table(
    table_id: str, headers: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str
) -> str:
    """A table of already-escaped cells (`headers` are escaped here)."""
    body = ["<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows]
    if not body:
        return f'<p id="{table_id}" class="muted">{_e(empty)}</p>'
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"
    return f'<table id="{table_id}">\n' + head + "\n" + "\n".join(body) + "\n</table>"


def _page(title: str, body: str, *, refresh: bool) -> bytes:
    meta = f'<meta http-equiv="refresh" content="{_REFRESH_SECONDS}">\n' if refresh else ""
    text = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"{meta}<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
    return text.encode("utf-8")


def render_agents(agents: Sequence[pb.AgentInfo]) -> str:
    """The connected agents."""
    rows = [
        (
            _e(a.agent_id),
            _e(a.agent_name),
            _state(str(a.state.name)),
            _e(", ".join(a.task_types) or "(any)"),
            f"{a.running_tasks} / {a.max_concurrent_tasks}",
            _e(_when(a.last_heartbeat)),
        )
        for a in agents
    ]
    return f"<h2>Agents ({len(rows)} connected)</h2>\n" + _table(
        "agents",
        ("Agent id", "Name", "State", "Task types", "Running / max", "Last heartbeat"),
        rows,
        empty="No agent is connected.",
    )


def render_queue(stats: pb.QueueStats) -> str:
    """Pending and running tasks per task type, and the agents serving each."""
    rows = [
        (
            _e(t.task_type or "(untyped)"),
            str(t.pending),
            str(t.running),
            str(t.agents),
            str(t.free_slots),
            str(t.waiting_for_target),
        )
        for t in stats.task_types
    ]
    summary = (
        f'<p id="queue-totals">{stats.pending} pending, {stats.running} running,'
        f" {stats.connected_agents} agents connected.</p>"
    )
    return (
        "<h2>Queue by task type</h2>\n"
        + summary
        + "\n"
        + _table(
            "queue",
            ("Task type", "Pending", "Running", "Agents", "Free slots", "Waiting for target"),
            rows,
            empty="No task is pending or running.",
        )
    )


def render_recent(records: Sequence[TaskRecord]) -> str:
    """The newest tasks, newest first."""
    rows = [
        (
            _task_link(r.task_id),
            _e(r.description),
            _e(r.task_type),
            _state(state_name(r.state)),
            f"{r.attempt} / {r.max_attempts}",
            f"{r.progress:.0%}",
            _e(r.status_message or r.error_message),
            _e(r.assigned_agent_id),
            _e(_when(r.updated_at or r.created_at)),
        )
        for r in records
    ]
    return f"<h2>Recent tasks (newest {RECENT_TASKS})</h2>\n" + _table(
        "tasks",
        (
            "Task id",
            "Description",
            "Type",
            "State",
            "Attempt",
            "Progress",
            "Message",
            "Agent",
            "Updated",
        ),
        rows,
        empty="No task has been submitted yet.",
    )


def _earlier(attempt: int) -> str:
    return "attempt 1" if attempt == 2 else f"attempts 1 to {attempt - 1}"


def _history(rec: TaskRecord) -> list[tuple[str, str]]:
    """(when, what) for what the Hub knows of the task's life, oldest first."""
    who = f"agent {rec.submitted_by}" if rec.submitted_by else "a client"
    events = [(_when(rec.created_at), f"submitted by {who}")]
    if rec.attempt > 1:
        events.append(
            (
                "—",
                f"{_earlier(rec.attempt)} ended without a result; the task went back to the queue",
            )
        )
    if rec.attempt and rec.leased_at is not None:
        events.append(
            (
                _when(rec.leased_at),
                f"attempt {rec.attempt} of {rec.max_attempts} leased to"
                f" {rec.assigned_agent_id or 'an agent'}",
            )
        )
    if rec.state == pb.TaskState.PENDING and rec.attempt:
        events.append((_when(rec.updated_at), "back in the queue, waiting for an agent"))
    if rec.state == pb.TaskState.RUNNING:
        report = f"running, {rec.progress:.0%}"
        if rec.status_message:
            report += f": {rec.status_message}"
        events.append((_when(rec.updated_at), report))
    if rec.terminal:
        end = state_name(rec.state)
        if rec.error_message:
            end += f": {rec.error_message}"
        events.append((_when(rec.completed_at), end))
    return events


def render_task(rec: TaskRecord) -> str:
    """One task: its fields, attempts and history."""
    fields = [
        ("State", _state(state_name(rec.state))),
        ("Attempt", f"{rec.attempt} of {rec.max_attempts}"),
        ("Assigned agent", _e(rec.assigned_agent_id or "—")),
        ("Description", _e(rec.description)),
        ("Task type", _e(rec.task_type or "(untyped)")),
        ("Target agent", _e(rec.target_agent_id or "—")),
        ("Priority", str(rec.priority)),
        ("Workflow", _e(rec.workflow_id or "—")),
        ("Progress", f"{rec.progress:.0%}"),
        ("Status message", _e(rec.status_message or "—")),
        ("Error message", _e(rec.error_message or "—")),
        ("Created", _e(_when(rec.created_at))),
        ("Updated", _e(_when(rec.updated_at or rec.created_at))),
        ("Completed", _e(_when(rec.completed_at))),
        ("Deadline", _e(_when(rec.deadline))),
    ]
    field_rows = "\n".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in fields)
    metadata = _table(
        "metadata",
        ("Key", "Value"),
        [(_e(k), _e(v)) for k, v in sorted(rec.metadata.items())],
        empty="No metadata.",
    )
    history = _table(
        "history",
        ("When", "What"),
        [(_e(when), _e(what)) for when, what in _history(rec)],
        empty="No history.",
    )
    return (
        f"<h1>Task {_e(rec.task_id)}</h1>\n"
        '<p><a href="/">← status</a></p>\n'
        f'<table id="task">\n{field_rows}\n</table>\n'
        f"<h2>Attempts and history</h2>\n{history}\n"
        f"<h2>Metadata</h2>\n{metadata}"
    )


class StatusPage:
    """Renders the pages from a Hub's live sessions and task queue (on its event loop)."""

    def __init__(
        self,
        sessions: SessionRegistry,
        queue: TaskQueue,
        *,
        now: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self._sessions = sessions
        self._queue = queue
        self._now = now or (lambda: datetime.datetime.now(tz=datetime.timezone.utc))

    def respond(self, path: str) -> tuple[int, bytes] | None:
        """(HTTP status, HTML) for `path`, or None when it is not one of the pages."""
        if path in ("/", "/status"):
            return 200, self.overview()
        if path.startswith("/tasks/"):
            task_id = urllib.parse.unquote(path[len("/tasks/") :])
            page = self.task(task_id)
            if page is None:
                body = (
                    f"<h1>Not found</h1>\n<p>No task {_e(task_id)} is known to this Hub.</p>\n"
                    '<p><a href="/">← status</a></p>'
                )
                return 404, _page("Task not found", body, refresh=False)
            return 200, page
        return None

    def overview(self) -> bytes:
        """The status page."""
        live = self._sessions.live()
        agents = inspection.agent_infos(live, pb.ListAgentsRequest()).agents
        stats = inspection.queue_stats(
            live, self._queue.state_counts(), self._queue.backlog_counts()
        )
        recent, _ = self._queue.list_tasks(limit=RECENT_TASKS)
        body = "\n".join(
            (
                "<h1>Aether Hub</h1>",
                f'<p class="muted">{_e(_when(self._now()))} · refreshes every'
                f' {_REFRESH_SECONDS} s · <a href="/metrics">/metrics</a></p>',
                render_agents(agents),
                render_queue(stats),
                render_recent(recent),
            )
        )
        return _page("Aether Hub status", body, refresh=True)

    def task(self, task_id: str) -> bytes | None:
        """The page of task `task_id`, or None when the Hub does not know it."""
        rec = self._queue.get(task_id) if task_id else None
        if rec is None:
            return None
        return _page(f"Task {rec.task_id}", render_task(rec), refresh=False)
