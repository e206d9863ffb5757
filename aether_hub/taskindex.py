"""Indexes of the tasks the dev Hub holds in memory, for `ListTasks` filters.

One sorted list of task seqs per state, task type, workflow, agent (target or assigned)
and visible-to agent (submitter or assignee), plus one of every task. A filtered listing
walks the shortest list that applies, newest first, from the page token's position
(found by bisection), so its cost is the records it returns plus those of that one list
that fail the other filters, not the number of tasks held.

The queue calls `note` after every change of a task (`TaskQueue._changed`) and `drop`
when a task leaves memory. Seqs only grow, so adding a new task is an append; a task that
changes state or gets an assignee is moved with one bisection per list.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from aether_hub._wire import pb
from aether_hub.taskrecord import TaskRecord

__all__ = ("TaskIndex",)

_Index = dict[object, list[int]]


def _add(index: _Index, key: object, seq: int) -> None:
    seqs = index.get(key)
    if seqs is None:
        index[key] = [seq]
    elif seqs[-1] < seq:
        seqs.append(seq)
    else:
        i = bisect.bisect_left(seqs, seq)
        if i == len(seqs) or seqs[i] != seq:
            seqs.insert(i, seq)


def _remove(index: _Index, key: object, seq: int) -> None:
    seqs = index.get(key)
    if seqs is None:
        return
    i = bisect.bisect_left(seqs, seq)
    if i < len(seqs) and seqs[i] == seq:
        del seqs[i]
        if not seqs:
            del index[key]


def _parties(*agents: str) -> set[str]:
    return {a for a in agents if a}


class TaskIndex:
    """Per-filter sorted seq lists over the tasks held in memory."""

    def __init__(self) -> None:
        self._records: dict[int, TaskRecord] = {}
        # What each task is indexed under now: (state, assigned agent).
        self._noted: dict[int, tuple[int, str]] = {}
        self._all: _Index = {}
        self._state: _Index = {}
        self._type: _Index = {}
        self._workflow: _Index = {}
        self._agent: _Index = {}
        self._visible: _Index = {}
        # Tasks per (state, task type, target agent): queue statistics in O(types).
        self._counts: dict[tuple[int, str, str], int] = {}
        #: Records looked at by `query` so far (a hook for tests: cost, not time).
        self.examined = 0

    def __len__(self) -> int:
        return len(self._records)

    def note(self, rec: TaskRecord) -> None:
        """Index `rec` (new, or changed since it was last noted)."""
        seq = rec.seq
        state = int(rec.state)
        was = self._noted.get(seq)
        if was is None:
            self._records[seq] = rec
            _add(self._all, None, seq)
            _add(self._state, state, seq)
            if rec.task_type:
                _add(self._type, rec.task_type, seq)
            if rec.workflow_id:
                _add(self._workflow, rec.workflow_id, seq)
            for agent in _parties(rec.target_agent_id, rec.assigned_agent_id):
                _add(self._agent, agent, seq)
            for agent in _parties(rec.submitted_by, rec.assigned_agent_id):
                _add(self._visible, agent, seq)
            self._noted[seq] = (state, rec.assigned_agent_id)
            self._count(state, rec, 1)
            return
        old_state, old_assigned = was
        if old_state == state and old_assigned == rec.assigned_agent_id:
            return
        if old_state != state:
            _remove(self._state, old_state, seq)
            _add(self._state, state, seq)
            self._count(old_state, rec, -1)
            self._count(state, rec, 1)
        if old_assigned != rec.assigned_agent_id:
            self._move(self._agent, rec.target_agent_id, old_assigned, rec.assigned_agent_id, seq)
            self._move(self._visible, rec.submitted_by, old_assigned, rec.assigned_agent_id, seq)
        self._noted[seq] = (state, rec.assigned_agent_id)

    @staticmethod
    def _move(index: _Index, fixed: str, old: str, new: str, seq: int) -> None:
        before = _parties(fixed, old)
        after = _parties(fixed, new)
        for agent in before - after:
            _remove(index, agent, seq)
        for agent in after - before:
            _add(index, agent, seq)

    def drop(self, rec: TaskRecord) -> None:
        """Forget `rec` (it left memory)."""
        seq = rec.seq
        was = self._noted.pop(seq, None)
        if was is None:
            return
        state, assigned = was
        self._count(state, rec, -1)
        del self._records[seq]
        _remove(self._all, None, seq)
        _remove(self._state, state, seq)
        if rec.task_type:
            _remove(self._type, rec.task_type, seq)
        if rec.workflow_id:
            _remove(self._workflow, rec.workflow_id, seq)
        for agent in _parties(rec.target_agent_id, assigned):
            _remove(self._agent, agent, seq)
        for agent in _parties(rec.submitted_by, assigned):
            _remove(self._visible, agent, seq)

    def _count(self, state: int, rec: TaskRecord, delta: int) -> None:
        key = (state, rec.task_type, rec.target_agent_id)
        n = self._counts.get(key, 0) + delta
        if n:
            self._counts[key] = n
        else:
            self._counts.pop(key, None)

    def counts(self) -> dict[tuple[int, str, str], int]:
        """How many tasks are held per (state, task type, target agent id)."""
        return dict(self._counts)

    def query(
        self,
        *,
        state: pb.TaskState,
        agent_id: str,
        task_type: str,
        workflow_id: str,
        visible_to: str,
        before: int | None,
    ) -> Iterator[TaskRecord]:
        """Tasks matching every given filter with seq < `before`, newest first."""
        lists = [self._all.get(None, [])]
        if state != pb.TaskState.UNSPECIFIED:
            lists.append(self._state.get(int(state), []))
        if agent_id:
            lists.append(self._agent.get(agent_id, []))
        if task_type:
            lists.append(self._type.get(task_type, []))
        if workflow_id:
            lists.append(self._workflow.get(workflow_id, []))
        if visible_to:
            lists.append(self._visible.get(visible_to, []))
        seqs = min(lists, key=len)
        end = len(seqs) if before is None else bisect.bisect_left(seqs, before)
        records = self._records
        for i in range(end - 1, -1, -1):
            if i >= len(seqs):
                continue  # the list shrank while the caller held the iterator
            rec = records.get(seqs[i])
            if rec is None:
                continue
            self.examined += 1
            if state != pb.TaskState.UNSPECIFIED and rec.state != state:
                continue
            if agent_id and agent_id not in (rec.assigned_agent_id, rec.target_agent_id):
                continue
            if task_type and rec.task_type != task_type:
                continue
            if workflow_id and rec.workflow_id != workflow_id:
                continue
            if visible_to and visible_to not in (rec.submitted_by, rec.assigned_agent_id):
                continue
            yield rec
