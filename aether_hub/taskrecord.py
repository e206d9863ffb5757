"""A task as the dev Hub keeps it in memory, and its wire forms.

`TaskRecord` is mutable on purpose: the queue changes a task in place on every step of
its life (lease, status, result), and watchers hold the same object.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from aether import TERMINAL_TASK_STATES
from aether_hub._wire import pb

__all__ = (
    "ANY_KEY",
    "TERMINAL_STATES",
    "RoutingKey",
    "TaskRecord",
    "routing_key",
    "state_name",
    "to_datetime",
)

# ("agent", id) for addressed tasks, ("type", t) for typed tasks, ANY_KEY for the rest.
RoutingKey = tuple[str, str]
ANY_KEY: RoutingKey = ("any", "")

#: The states a task never leaves (the SDK's one definition).
TERMINAL_STATES = TERMINAL_TASK_STATES


def routing_key(target_agent_id: str, task_type: str) -> RoutingKey:
    """Which queue a task waits in: its target agent, else its type, else `any`."""
    if target_agent_id:
        return ("agent", target_agent_id)
    if task_type:
        return ("type", task_type)
    return ANY_KEY


def to_datetime(epoch: float | None) -> datetime.datetime | None:
    """An aware UTC datetime for an epoch reading (None stays None)."""
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)


def state_name(state: pb.TaskState) -> str:
    """`SUCCEEDED` for `TaskState.SUCCEEDED`, for messages."""
    name = getattr(state, "name", None)
    return str(name) if name else str(int(state))


@dataclass(slots=True, eq=False)
class TaskRecord:
    """One task: what was submitted plus where it is in its life."""

    task_id: str
    seq: int
    description: str
    payload: bytes
    task_type: str
    target_agent_id: str
    priority: int
    metadata: dict[str, str]
    workflow_id: str
    max_attempts: int
    created_at: float
    deadline: float | None = None
    idempotency_key: str = ""
    state: pb.TaskState = pb.TaskState.PENDING
    attempt: int = 0
    assigned_agent_id: str = ""
    # The session holding the lease; empty while pending or finished.
    session_id: str = ""
    progress: float = 0.0
    status_message: str = ""
    result: bytes = b""
    error_message: str = ""
    metrics: dict[str, str] = field(default_factory=dict)
    updated_at: float = 0.0
    completed_at: float | None = None
    # When the current lease began (in memory only: the run-time metric reads it).
    leased_at: float | None = None
    # The agent id of an agent that submitted the task (a sub-task); '' for a client.
    submitted_by: str = ""
    # With `--db`: the result the task's row in the table holds, None while there is no
    # row yet (in memory only; the store reads and sets it, taskstore.py).
    stored_result: bytes | None = None
    # With `--store jetstream`: the revision of the task's key in the task bucket this
    # replica last saw or wrote (0: not stored yet), and the Hub replica whose session
    # holds the lease ('' while pending or finished, and always with one Hub).
    rev: int = 0
    hub_id: str = ""
    _created_dt: datetime.datetime | None = None
    _deadline_dt: datetime.datetime | None = None

    @property
    def key(self) -> RoutingKey:
        """The routing key of the task."""
        return routing_key(self.target_agent_id, self.task_type)

    @property
    def terminal(self) -> bool:
        """Whether the task is finished (succeeded, failed, cancelled, timed out)."""
        return self.state in TERMINAL_STATES

    def created_dt(self) -> datetime.datetime | None:
        """`created_at` as a datetime, computed once (every assignment carries it)."""
        if self._created_dt is None:
            self._created_dt = to_datetime(self.created_at)
        return self._created_dt

    def deadline_dt(self) -> datetime.datetime | None:
        """`deadline` as a datetime, computed once."""
        if self._deadline_dt is None and self.deadline is not None:
            self._deadline_dt = to_datetime(self.deadline)
        return self._deadline_dt

    def assignment(self) -> pb.TaskAssignment:
        """The TaskAssignment the leasing session receives."""
        return pb.TaskAssignment(
            task_id=self.task_id,
            description=self.description,
            payload=self.payload,
            task_type=self.task_type,
            attempt=self.attempt,
            priority=self.priority,
            metadata=self.metadata,
            workflow_id=self.workflow_id,
            created_at=self.created_dt(),
            deadline=self.deadline_dt(),
        )

    def to_pb(self, *, payloads: bool = True) -> pb.Task:
        """The task as `TaskService` shows it (without payload and result unless
        `payloads`)."""
        return pb.Task(
            task_id=self.task_id,
            description=self.description,
            payload=self.payload if payloads else b"",
            task_type=self.task_type,
            target_agent_id=self.target_agent_id,
            priority=self.priority,
            metadata=dict(self.metadata),
            workflow_id=self.workflow_id,
            state=self.state,
            attempt=self.attempt,
            max_attempts=self.max_attempts,
            assigned_agent_id=self.assigned_agent_id,
            progress=self.progress,
            status_message=self.status_message,
            result=self.result if payloads else b"",
            error_message=self.error_message,
            metrics=dict(self.metrics),
            created_at=self.created_dt(),
            updated_at=to_datetime(self.updated_at or self.created_at),
            completed_at=to_datetime(self.completed_at),
            deadline=self.deadline_dt(),
        )
