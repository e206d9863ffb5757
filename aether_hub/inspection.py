"""What operators ask a running Hub: who is connected (`ListAgents`) and how full the queue
is per task type (`GetQueueStats`). Both read the live state; neither changes it.

An agent serves a task type when it lists it in `capabilities["task_types"]`; every agent
also takes tasks without a type and tasks addressed to it (docs/architecture.md, "Routing").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aether_hub._wire import pb
from aether_hub.sessions import Session, StreamState
from aether_hub.taskrecord import to_datetime

__all__ = ("agent_infos", "queue_stats", "serves")

_AGENT_STATES = {
    StreamState.NONE: pb.AgentState.REGISTERED,
    StreamState.OPEN: pb.AgentState.STREAMING,
    StreamState.DRAINING: pb.AgentState.DRAINING,
}


def serves(session: Session, task_type: str) -> bool:
    """Whether the session is sent tasks of `task_type` ("" = tasks without a type)."""
    return not task_type or task_type in session.task_types


def _info(session: Session) -> pb.AgentInfo:
    return pb.AgentInfo(
        agent_id=session.agent_id,
        agent_name=session.agent_name,
        version=session.version,
        task_types=sorted(session.task_types),
        state=_AGENT_STATES[session.stream],
        running_tasks=session.running_tasks,
        max_concurrent_tasks=session.capacity,
        last_heartbeat=to_datetime(session.last_heartbeat),
        connected_at=to_datetime(session.connected_at),
        capabilities=dict(session.capabilities),
        trust_level=session.trust_level,
    )


def agent_infos(
    sessions: Iterable[Session], request: pb.ListAgentsRequest
) -> pb.ListAgentsResponse:
    """The live sessions that match the request's filters, ordered by agent id."""
    chosen = [
        s
        for s in sessions
        if s.live
        and (not request.agent_id or s.agent_id == request.agent_id)
        and (not request.task_type or serves(s, request.task_type))
    ]
    chosen.sort(key=lambda s: (s.agent_id, s.connected_at))
    return pb.ListAgentsResponse(agents=[_info(s) for s in chosen])


@dataclass
class _Tally:
    pending: int = 0
    running: int = 0
    waiting_for_target: int = 0


def queue_stats(
    sessions: Iterable[Session],
    counts: Mapping[tuple[int, str, str], int],
    unread: Mapping[tuple[str, str], int] | None = None,
) -> pb.QueueStats:
    """Pending and running tasks per type, with the connected agents that serve each.

    `counts`: tasks held per (state, task type, target agent id) (`TaskQueue.state_counts`),
    so the cost is the number of kinds, not of tasks.

    `unread`: pending tasks a restarted Hub has not read from its database yet, per
    (task type, target agent id) (`TaskQueue.backlog_counts`).
    """
    live = [s for s in sessions if s.live]
    connected = {s.agent_id for s in live}
    tallies: dict[str, _Tally] = {}
    for (task_type, target), n in (unread or {}).items():
        tally = tallies.setdefault(task_type, _Tally())
        tally.pending += n
        if target and target not in connected:
            tally.waiting_for_target += n
    for (state, task_type, target), n in counts.items():
        if state == pb.TaskState.PENDING:
            tally = tallies.setdefault(task_type, _Tally())
            tally.pending += n
            if target and target not in connected:
                tally.waiting_for_target += n
        elif state in (pb.TaskState.LEASED, pb.TaskState.RUNNING):
            tallies.setdefault(task_type, _Tally()).running += n
    rows = []
    for task_type in sorted(tallies):
        tally = tallies[task_type]
        serving = [s for s in live if serves(s, task_type)]
        rows.append(
            pb.TaskTypeStats(
                task_type=task_type,
                pending=tally.pending,
                running=tally.running,
                agents=len(serving),
                free_slots=sum(s.free_slots for s in serving),
                waiting_for_target=tally.waiting_for_target,
            )
        )
    return pb.QueueStats(
        task_types=rows,
        connected_agents=len(live),
        pending=sum(t.pending for t in tallies.values()),
        running=sum(t.running for t in tallies.values()),
    )
