"""The pending tasks a restarted Hub left in its database, paged in as agents have room.

A Hub started with `--db` on a file holding many pending tasks does not read them all:
it reads the tasks that were leased (they go back to the queue), the newest finished ones
(retention), and only counts the pending ones. Those stay in the table — the backlog —
and are read a page at a time, per routing key, in dispatch order (priority descending,
then submission order), when a session eligible for that key looks for work
(`TaskQueue._fill`). So the Hub starts in a time and a memory that do not depend on the
backlog, and holds in memory what is leased plus at most a page per routing key waiting.

Correctness rests on one invariant per routing key: every backlog task not yet read sorts
after the last one read (`_after[key]`, as the heap's `(-priority, seq)`). The queue's
heap for a key may hold tasks from anywhere in the order (new submissions, requeued
tasks, a backlog task `GetTask` read early): its top is the key's true best only when it
sorts before `_after[key]` or the key's backlog is exhausted; otherwise the next page is
read first (`needs_page`). Tasks submitted after the start have seqs above `max_seq` and
are never read from the table here; a task the queue holds or has a pending change for
is skipped when a page reads it again.
"""

from __future__ import annotations

from aether_hub.taskrecord import RoutingKey, TaskRecord
from aether_hub.taskstore import TaskStore

__all__ = ("PAGE_SIZE", "Backlog")

#: Tasks read from the table per page and routing key.
PAGE_SIZE = 256

_Position = tuple[int, int]  # (-priority, seq), as in the queue's heaps


class Backlog:
    """The not-yet-read pending tasks of the database, by routing key."""

    def __init__(self, store: TaskStore, max_seq: int, *, page_size: int = 0) -> None:
        self._store = store
        #: Only tasks with a seq up to this one were submitted before the start.
        self.max_seq = max_seq
        self._page_size = page_size or PAGE_SIZE
        # Not-yet-read tasks per (task type, target agent), and in all.
        self._counts = store.backlog_counts(max_seq)
        self.remaining = sum(self._counts.values())
        # The last position read per routing key; keys whose backlog is all read.
        self._after: dict[RoutingKey, _Position] = {}
        self._exhausted: set[RoutingKey] = set()
        self._next_deadline: float | None = None
        if self.remaining:
            self._next_deadline = store.backlog_next_deadline(float("-inf"), max_seq)

    def __bool__(self) -> bool:
        return self.remaining > 0

    def counts(self) -> dict[tuple[str, str], int]:
        """Not-yet-read tasks per (task type, target agent id)."""
        return {k: n for k, n in self._counts.items() if n > 0}

    def needs_page(self, key: RoutingKey, top: _Position | None) -> bool:
        """Whether the heap top `top` of `key` (None: empty) may not be the key's best."""
        if self.remaining <= 0 or key in self._exhausted:
            return False
        after = self._after.get(key)
        return top is None or after is None or top > after

    def page(self, key: RoutingKey) -> list[TaskRecord]:
        """The next page of `key`'s backlog (the queue adopts those it does not hold)."""
        records = self._store.backlog_page(key, self._after.get(key), self.max_seq, self._page_size)
        if records:
            last = records[-1]
            self._after[key] = (-last.priority, last.seq)
        if len(records) < self._page_size:
            self._exhausted.add(key)
        # A task with a change not yet written is one the queue adopted already.
        return [rec for rec in records if not self._store.is_dirty(rec.task_id)]

    def taken(self, rec: TaskRecord) -> None:
        """`rec` left the backlog: the queue holds it now."""
        key = (rec.task_type, rec.target_agent_id)
        n = self._counts.get(key, 0)
        if n > 0:
            self._counts[key] = n - 1
            self.remaining -= 1

    # -- deadlines -----------------------------------------------------------------------

    @property
    def next_deadline(self) -> float | None:
        """The earliest deadline of a not-yet-read task (it may have been read since)."""
        return self._next_deadline if self.remaining > 0 else None

    def expired(self, now: float) -> list[TaskRecord]:
        """Not-yet-read tasks past their deadline at `now` (the queue adopts and times
        them out); [] at once when none can be."""
        if self.remaining <= 0 or self._next_deadline is None or self._next_deadline > now:
            return []
        records = self._store.backlog_expired(now, self.max_seq)
        self._next_deadline = self._store.backlog_next_deadline(now, self.max_seq)
        return records

    def in_workflow(self, workflow_id: str, agent_id: str) -> bool:
        """Whether a not-yet-read task of `workflow_id` was submitted or run by `agent_id`."""
        if self.remaining <= 0:
            return False
        return self._store.backlog_in_workflow(workflow_id, agent_id, self.max_seq)

    def listing(
        self,
        before: int | None,
        limit: int,
        *,
        agent_id: str = "",
        task_type: str = "",
        workflow_id: str = "",
        visible_to: str = "",
    ) -> list[TaskRecord]:
        """Pending tasks of the table matching the ListTasks filters, newest first,
        below seq `before`."""
        if self.remaining <= 0:
            return []
        return self._store.backlog_listing(
            before,
            self.max_seq,
            limit,
            agent_id=agent_id,
            task_type=task_type,
            workflow_id=workflow_id,
            visible_to=visible_to,
        )
