"""Hub replicas sharing one task table through NATS JetStream (`--store jetstream`).

Real parts only: a nats-server with JetStream (`nats_jetstream`), two or three
in-process `HubServer`s on it, one `python -m aether_hub` process for the replica that
dies (an in-process Hub cannot be SIGKILLed), raw agent sessions (`AgentConn`) and the
generated TaskService stubs. No timed assertions: every wait is for an event, or a poll
under a generous timeout. The codec of aether_hub/taskreplica.py is tested on its own.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import itertools
import json
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether._wire import client, pb
from aether_hub.server import HubServer
from aether_hub.settings import HubConfig
from aether_hub.taskrecord import TaskRecord
from aether_hub.taskreplica import decode_record, encode_record, replica_sequence
from tests.hubserver.hubkit import AgentConn, grpc_status, running_hub
from tests.hubserver.nats_fixture import NatsServer, nats_jetstream
from tests.reliability.hubproc import HubProc, eventually

__all__ = ("nats_jetstream",)

WAIT = 20.0  # generous: never a timing assertion
# replica_timeout_seconds of the in-process replicas: they announce themselves (and
# their agents) every TIMEOUT / 4 s.
TIMEOUT = 2.0

PENDING = pb.TaskState.PENDING
LEASED = pb.TaskState.LEASED
RUNNING = pb.TaskState.RUNNING
SUCCEEDED = pb.TaskState.SUCCEEDED
FAILED = pb.TaskState.FAILED
CANCELLED = pb.TaskState.CANCELLED


# --- the codec ------------------------------------------------------------------------

# Fields a replica keeps for itself (not stored): `rev` is the key's revision.
_LOCAL_FIELDS = {"leased_at", "stored_result", "rev", "_created_dt", "_deadline_dt"}


def _every_field_set() -> TaskRecord:
    """A task with every stored field away from its default."""
    return TaskRecord(
        task_id="0123456789abcdef01234567",
        seq=(1_700_000_000_123_456 << 12) | 4095,
        description='résumé ✓ "quoted" \n newline',
        payload=bytes(range(256)),
        task_type="image",
        target_agent_id="agent-x",
        priority=-7,
        metadata={"k": "v", "ünï": "çødé", "empty": ""},
        workflow_id="wf-1",
        max_attempts=5,
        created_at=1_700_000_000.123456,
        deadline=1_700_000_060.5,
        idempotency_key="order-42",
        state=pb.TaskState.RUNNING,
        attempt=2,
        assigned_agent_id="agent-x",
        session_id="session-1",
        hub_id="hub-a",
        progress=0.25,
        status_message="half way",
        result=b"\x00\xff\x80 result",
        error_message="an error",
        metrics={"tokens": "12", "ms": "3.5"},
        updated_at=1_700_000_001.5,
        completed_at=1_700_000_002.25,
        submitted_by="parent-agent",
    )


def _stored_fields() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(TaskRecord) if f.name not in _LOCAL_FIELDS]


def test_codec_round_trips_every_stored_field() -> None:
    rec = _every_field_set()
    for f in _stored_fields():
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert getattr(rec, f.name) != default, f"the sample leaves {f.name} at its default"
    back = decode_record(encode_record(rec), 42)
    assert back.rev == 42
    for f in _stored_fields():
        assert getattr(back, f.name) == getattr(rec, f.name), f.name
    assert isinstance(back.state, pb.TaskState)
    assert type(back.payload) is bytes and type(back.result) is bytes


def test_codec_round_trips_none_and_empty_values() -> None:
    rec = dataclasses.replace(
        _every_field_set(),
        deadline=None,
        completed_at=None,
        payload=b"",
        result=b"",
        metadata={},
        metrics={},
        state=pb.TaskState.PENDING,
        hub_id="",
    )
    back = decode_record(encode_record(rec), 1)
    for f in _stored_fields():
        assert getattr(back, f.name) == getattr(rec, f.name), f.name
    assert back.deadline is None and back.completed_at is None


def _damaged() -> Iterator[tuple[str, bytes]]:
    good = encode_record(_every_field_set())
    yield "empty", b""
    yield "not JSON", b"not json at all"
    yield "not UTF-8", b"\xff\xfe\x00"
    yield "truncated", good[: len(good) // 2]
    yield "null", b"null"
    yield "a list", b"[1, 2]"
    yield "an empty object", b"{}"
    for key, value in (
        ("p", "abc"),  # not base64 (bad padding)
        ("r", "abc"),
        ("s", "RUNNING"),
        ("meta", [1, 2]),
        ("m", "x"),
        ("dl", "soon"),
        ("seq", None),
        ("a", {"n": 1}),
    ):
        d = json.loads(good)
        d[key] = value
        yield f"{key}={value!r}", json.dumps(d).encode()
    for key in json.loads(good):
        d = json.loads(good)
        del d[key]
        yield f"without {key}", json.dumps(d).encode()


@pytest.mark.parametrize(("what", "data"), list(_damaged()), ids=[w for w, _ in _damaged()])
def test_codec_refuses_a_damaged_value(what: str, data: bytes) -> None:
    with pytest.raises(ValueError, match="not a stored task"):
        decode_record(data, 1)


def test_codec_stores_bytes_as_base64() -> None:
    d = json.loads(encode_record(_every_field_set()))
    assert base64.b64decode(d["p"]) == bytes(range(256))


def test_replica_sequence_increases_when_the_clock_stands_still_or_goes_back() -> None:
    readings = iter([5.0, 5.0, 5.0, 4.0, 3.0, 6.0, 6.0])
    numbers = replica_sequence(lambda: next(readings))
    got = [next(numbers) for _ in range(7)]
    assert all(x < y for x, y in itertools.pairwise(got)), got
    assert len({n & 0xFFF for n in got}) == 1  # one replica: one slot


def test_replica_sequence_is_unique_across_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    slots = iter([1, 2])
    monkeypatch.setattr(secrets, "randbelow", lambda _n: next(slots))
    a = replica_sequence(lambda: 10.0)
    b = replica_sequence(lambda: 10.0)  # the same clock: the same microseconds
    from_a = [next(a) for _ in range(1000)]
    from_b = [next(b) for _ in range(1000)]
    assert len(set(from_a)) == len(set(from_b)) == 1000
    assert not set(from_a) & set(from_b)


def test_replica_sequence_follows_the_clocks_across_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slots = iter([4095, 0])
    monkeypatch.setattr(secrets, "randbelow", lambda _n: next(slots))
    early = next(replica_sequence(lambda: 1.0))  # the highest slot
    late = next(replica_sequence(lambda: 1.25))  # the lowest slot, later clock
    assert early < late


def test_replica_sequence_with_the_real_clock() -> None:
    numbers = replica_sequence()
    got = [next(numbers) for _ in range(20_000)]
    assert got == sorted(got) and len(set(got)) == len(got)


# --- helpers for the replication tests ---------------------------------------------------


@dataclass
class Replica:
    """An in-process Hub replica and a client of it."""

    hub: HubServer
    channel: Channel
    tasks: client.TaskServiceStub


def replica_config(nats: NatsServer, **overrides: Any) -> HubConfig:
    settings: dict[str, Any] = {"replica_timeout_seconds": TIMEOUT, **overrides}
    return HubConfig(port=0, dev=True, nats_url=nats.url, store="jetstream", **settings)


@contextlib.asynccontextmanager
async def replica(nats: NatsServer, **overrides: Any) -> AsyncIterator[Replica]:
    """One started replica on `nats`, stopped afterwards."""
    async with running_hub(replica_config(nats, **overrides)) as hub:
        channel = Channel("127.0.0.1", hub.port)
        try:
            yield Replica(hub, channel, client.TaskServiceStub(channel))
        finally:
            channel.close()


@contextlib.asynccontextmanager
async def replicas(
    nats: NatsServer, count: int = 2, **overrides: Any
) -> AsyncIterator[list[Replica]]:
    """`count` replicas on `nats` (started in order, stopped in reverse order)."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(replica(nats, **overrides)) for _ in range(count)]


def assignments_of(event: pb.TaskStreamEvent) -> list[pb.TaskAssignment]:
    """The assignments an event carries (one, or a batch)."""
    return ([event.assignment] if event.assignment is not None else []) + list(event.assignments)


@dataclass
class Worker:
    """Answers every assignment of `agent` (unless `hold`), recording the assignments."""

    agent: AgentConn
    hold: bool = False
    assigned: list[pb.TaskAssignment] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            event = await self.agent.events.get()
            for asg in assignments_of(event):
                self.assigned.append(asg)
                if not self.hold:
                    await self.agent.result(asg.task_id, result=b"done:" + asg.payload)

    def got(self, task_id: str) -> bool:
        return any(asg.task_id == task_id for asg in self.assigned)


@contextlib.asynccontextmanager
async def working(*workers: Worker) -> AsyncIterator[Sequence[Worker]]:
    """Run `workers` in the background for the block."""
    runs = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield workers
    finally:
        for run in runs:
            run.cancel()
        for run in runs:
            with contextlib.suppress(asyncio.CancelledError):
                await run
        for run in runs:
            if not run.cancelled() and run.exception() is not None:
                raise AssertionError(f"a worker failed: {run.exception()!r}")


async def agent(
    r: Replica | Channel, agent_id: str, *, capacity: int = 1, task_types: str = ""
) -> AgentConn:
    """A registered agent with its task stream open (`capacity` tasks at a time)."""
    channel = r.channel if isinstance(r, Replica) else r
    conn = await AgentConn.register(
        channel, agent_id, task_types=task_types, max_concurrent_tasks=capacity
    )
    conn.open_stream(max_concurrent_tasks=capacity)
    return conn


async def submit(r: Replica, **fields: Any) -> str:
    """Submit one task through replica `r`; its id."""
    fields.setdefault("description", "a task")
    return (await r.tasks.submit_task(pb.SubmitTaskRequest(**fields))).task_id


async def settled(r: Replica, task_id: str, state: pb.TaskState) -> pb.Task:
    """The task as `r` shows it, once it is in `state` there (polled)."""

    async def probe() -> pb.Task | None:
        task = await r.tasks.get_task(pb.GetTaskRequest(task_id=task_id))
        return task if task.state == state else None

    task = await eventually(
        probe, timeout=WAIT, interval=0.02, what=f"task {task_id} {state.name} on a replica"
    )
    assert task is not None
    return task


async def all_tasks(r: Replica, **filters: Any) -> dict[str, pb.Task]:
    """Every task replica `r` lists (all pages), by id."""
    out: dict[str, pb.Task] = {}
    token = ""
    while True:
        page = await r.tasks.list_tasks(
            pb.ListTasksRequest(limit=1000, page_token=token, **filters)
        )
        out.update((t.task_id, t) for t in page.tasks)
        token = page.next_page_token
        if not token:
            return out


async def all_in(r: Replica, ids: Sequence[str], state: pb.TaskState) -> dict[str, pb.Task]:
    """Every task of `ids` as `r` lists it, once all of them are in `state` there."""

    async def probe() -> dict[str, pb.Task] | None:
        listed = await all_tasks(r)
        if all(i in listed and listed[i].state == state for i in ids):
            return listed
        return None

    try:
        listed = await eventually(
            probe, timeout=WAIT, interval=0.05, what=f"{len(ids)} tasks {state.name} on a replica"
        )
    except AssertionError as exc:
        now = await all_tasks(r)
        stuck = {i: now.get(i, "not listed") for i in ids if i not in now or now[i].state != state}
        raise AssertionError(f"{exc}; {len(stuck)} are not: {list(stuck.items())[:3]}") from None
    assert listed is not None
    return listed


async def watch(r: Replica, task_id: str) -> list[pb.Task]:
    """Every update WatchTask on `r` sends for the task, until it ends."""
    updates = [u async for u in r.tasks.watch_task(pb.WatchTaskRequest(task_id=task_id))]
    return [u.task for u in updates if u.task is not None]


async def listed_agents(r: Replica, **filters: Any) -> list[str]:
    reply = await r.tasks.list_agents(pb.ListAgentsRequest(**filters))
    return [info.agent_id for info in reply.agents]


async def barrier(r: Replica, worker: Worker) -> None:
    """Wait until `worker` received a task addressed to it through `r`: every event its
    stream carried before is recorded by then (a stream is ordered)."""
    marker = await submit(r, description="barrier", target_agent_id=worker.agent.agent_id)
    await eventually(lambda: worker.got(marker), timeout=WAIT, interval=0.02, what="barrier")
    worker.assigned = [a for a in worker.assigned if a.task_id != marker]


# --- one task table across replicas ----------------------------------------------------


async def test_task_submitted_on_one_replica_runs_on_an_agent_of_another(
    nats_jetstream: NatsServer,
) -> None:
    async with replicas(nats_jetstream) as (a, b):
        worker = await agent(b, "worker-b")
        task_id = await submit(a, description="cross", payload=b"\x00in")
        watching = asyncio.create_task(watch(a, task_id))
        asg = await worker.next_assignment()
        assert (asg.task_id, asg.payload, asg.description, asg.attempt) == (
            task_id,
            b"\x00in",
            "cross",
            1,
        )
        ack = await worker.result(task_id, result=b"\x01out")
        assert ack.accepted and not ack.duplicate

        updates = await asyncio.wait_for(watching, WAIT)
        final = updates[-1]
        assert (final.state, final.result, final.assigned_agent_id) == (
            SUCCEEDED,
            b"\x01out",
            "worker-b",
        )
        assert [u.state for u in updates].count(SUCCEEDED) == 1
        for r in (a, b):
            task = await settled(r, task_id, SUCCEEDED)
            assert (task.result, task.assigned_agent_id, task.attempt, task.payload) == (
                b"\x01out",
                "worker-b",
                1,
                b"\x00in",
            )
            assert task.progress == 1.0
        listing = await a.tasks.list_tasks(
            pb.ListTasksRequest(state=SUCCEEDED, include_payloads=True)
        )
        assert [(t.task_id, t.result) for t in listing.tasks] == [(task_id, b"\x01out")]
        by_agent = await a.tasks.list_tasks(pb.ListTasksRequest(agent_id="worker-b"))
        assert [t.task_id for t in by_agent.tasks] == [task_id]


async def test_a_replica_answers_reads_only_once_it_holds_every_stored_change(
    nats_jetstream: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with replicas(nats_jetstream) as (a, b):
        # B's watch of the bucket stalls (held here): B must not answer from a view that
        # lacks a change already acknowledged through A (a read barrier).
        link = b.hub.queue.replica
        assert link is not None
        follow = link._take
        held: list[tuple[Any, ...]] = []
        monkeypatch.setattr(link, "_take", lambda *entry: held.append(entry))
        task_id = await submit(a, description="fresh", payload=b"p")
        cancelled = await submit(a, description="cancelled")
        getting = asyncio.create_task(b.tasks.get_task(pb.GetTaskRequest(task_id=task_id)))
        watching = asyncio.create_task(watch(b, cancelled))
        listing = asyncio.create_task(b.tasks.list_tasks(pb.ListTasksRequest()))
        await asyncio.sleep(0.3)
        reads: list[asyncio.Task[Any]] = [getting, watching, listing]
        assert not any(read.done() for read in reads), "B answered from a stale view"
        # The watch catches up: the reads answer with what A stored.
        monkeypatch.undo()
        for entry in held:
            follow(*entry)
        task = await asyncio.wait_for(getting, WAIT)
        assert (task.task_id, task.state, task.payload) == (task_id, PENDING, b"p")
        listed = await asyncio.wait_for(listing, WAIT)
        assert {t.task_id for t in listed.tasks} >= {task_id, cancelled}
        reply = await b.tasks.cancel_task(pb.CancelTaskRequest(task_id=cancelled, reason="nope"))
        assert (reply.success, reply.state) == (True, CANCELLED)
        assert (await settled(a, cancelled, CANCELLED)).error_message == "nope"
        updates = await asyncio.wait_for(watching, WAIT)
        assert [updates[0].state, updates[-1].state] == [PENDING, CANCELLED]
        status, _ = await grpc_status(b.tasks.get_task(pb.GetTaskRequest(task_id="f" * 24)))
        assert status == Status.NOT_FOUND


async def test_a_result_for_a_task_this_replica_has_not_seen_yet_counts(
    nats_jetstream: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with replicas(nats_jetstream) as (a, b):
        worker = await agent(a, "mover", capacity=1)
        task_id = await submit(a, description="moves")
        assert (await worker.next_assignment()).task_id == task_id
        # The agent moves to B before B's watch brought the task (held here); its
        # result names a task B looks up in the bucket.
        link = b.hub.queue.replica
        assert link is not None
        monkeypatch.setattr(link, "_take", lambda *entry: None)
        moved = await AgentConn.register(b.channel, "mover")
        ack = await moved.result(task_id, result=b"done")
        assert ack.accepted and not ack.duplicate, ack
        monkeypatch.undo()
        assert (await settled(a, task_id, SUCCEEDED)).result == b"done"


async def test_list_agents_includes_the_agents_of_the_other_replicas(
    nats_jetstream: NatsServer,
) -> None:
    async with replica(nats_jetstream) as a:
        await agent(a, "plain-a")
        async with replica(nats_jetstream) as b:
            await agent(b, "typed-b", task_types="image,audio", capacity=3)

            async def both_listed_on(r: Replica) -> bool:
                return await listed_agents(r) == ["plain-a", "typed-b"]

            for r in (a, b):
                await eventually(
                    lambda r=r: both_listed_on(r),  # type: ignore[misc]
                    timeout=WAIT,
                    what="the agents of both replicas listed",
                )
            reply = await a.tasks.list_agents(pb.ListAgentsRequest(agent_id="typed-b"))
            [info] = reply.agents
            assert (info.max_concurrent_tasks, sorted(info.task_types)) == (3, ["audio", "image"])
            assert await listed_agents(a, task_type="image") == ["typed-b"]
            assert await listed_agents(b, agent_id="plain-a") == ["plain-a"]
            assert await listed_agents(a, agent_id="nobody") == []

        # B stopped (in order): its agents leave A's listing.
        async def only_a() -> bool:
            return await listed_agents(a) == ["plain-a"]

        await eventually(only_a, timeout=WAIT, what="B's agents gone from A's listing")


async def test_every_task_is_assigned_once_with_free_agents_on_both_replicas(
    nats_jetstream: NatsServer,
) -> None:
    async with replicas(nats_jetstream) as (a, b):
        workers = [
            Worker(await agent(a, "worker-a", capacity=8)),
            Worker(await agent(b, "worker-b", capacity=8)),
        ]
        ids: list[str] = []
        async with working(*workers):
            for start in range(0, 200, 20):
                # One task per call, 20 calls at a time, half through each replica.
                ids += await asyncio.gather(
                    *(
                        submit(a if i % 2 else b, description=f"t{i}", payload=b"%d" % i)
                        for i in range(start, start + 20)
                    )
                )
            listed = [await all_in(r, ids, SUCCEEDED) for r in (a, b)]
            for r, w in zip((a, b), workers, strict=True):
                await barrier(r, w)
        counts = collections.Counter(asg.task_id for w in workers for asg in w.assigned)
        assert len(ids) == len(set(ids)) == 200
        assert set(counts) == set(ids)
        assert [i for i, n in counts.items() if n != 1] == []
        assert {asg.attempt for w in workers for asg in w.assigned} == {1}
        for view in listed:
            for i in ids:
                runner = next(w.agent.agent_id for w in workers if w.got(i))
                assert view[i].assigned_agent_id == runner


async def test_cancel_on_one_replica_stops_the_agent_on_another(
    nats_jetstream: NatsServer,
) -> None:
    async with replicas(nats_jetstream) as (a, b):
        worker = await agent(b, "worker-b", capacity=1)
        task_id = await submit(a, description="long")
        assert (await worker.next_assignment()).task_id == task_id
        reply = await a.tasks.cancel_task(pb.CancelTaskRequest(task_id=task_id, reason="stop it"))
        assert (reply.success, reply.state) == (True, CANCELLED)
        cancel = await worker.next_cancel()
        assert cancel.task_id == task_id and "stop it" in cancel.reason
        for r in (a, b):
            task = await settled(r, task_id, CANCELLED)
            assert task.error_message == "stop it"
        ack = await worker.result(task_id, result=b"too late")
        assert ack.accepted and ack.duplicate
        # The cancelled task's slot is free again once the agent reported back.
        follow_up = await submit(a, description="next")
        assert (await worker.next_assignment()).task_id == follow_up
        for r in (a, b):
            task = await r.tasks.get_task(pb.GetTaskRequest(task_id=task_id))
            assert (task.state, task.result) == (CANCELLED, b"")
            again = await r.tasks.cancel_task(pb.CancelTaskRequest(task_id=task_id))
            assert (again.success, again.state) == (False, CANCELLED)


async def test_an_idempotency_key_names_one_task_across_replicas(
    nats_jetstream: NatsServer,
) -> None:
    async with replicas(nats_jetstream) as (a, b):
        first = await submit(a, description="one", payload=b"first", idempotency_key="order-1")
        second = await submit(b, description="one", payload=b"first", idempotency_key="order-1")
        assert first == second
        # The same request through both at once (a client retrying elsewhere): one task.
        pairs = await asyncio.gather(
            *(
                asyncio.gather(
                    *(
                        submit(r, description=f"retried {k}", idempotency_key=f"retry-{k}")
                        for r in (a, b)
                    )
                )
                for k in range(10)
            )
        )
        assert all(x == y for x, y in pairs)
        ids = [first] + [x for x, _ in pairs]
        assert len(set(ids)) == 11
        worker = Worker(await agent(b, "worker-b", capacity=4))
        async with working(worker):
            for r in (a, b):
                await all_in(r, ids, SUCCEEDED)
            await barrier(b, worker)
        assert sorted(asg.task_id for asg in worker.assigned) == sorted(ids)
        for r in (a, b):
            listed = await all_tasks(r)
            assert sorted(i for i, t in listed.items() if t.description != "barrier") == sorted(ids)


_SUBMITTED_FIELDS = (
    "description",
    "payload",
    "task_type",
    "target_agent_id",
    "priority",
    "metadata",
    "workflow_id",
    "max_attempts",
    "created_at",
    "deadline",
)


async def test_replicas_agree_on_the_task_of_a_key_submitted_through_both_at_once(
    nats_jetstream: NatsServer,
) -> None:
    async with replicas(nats_jetstream) as (a, b):
        # Two different submissions with one key, through both replicas at once: one of
        # them is the task (as with one Hub, the other caller gets the first's task), and
        # every replica shows that one.
        pairs = await asyncio.gather(
            *(
                asyncio.gather(
                    submit(
                        a, description="from a", payload=b"a", priority=1, idempotency_key=f"k{k}"
                    ),
                    submit(
                        b, description="from b", payload=b"b", priority=2, idempotency_key=f"k{k}"
                    ),
                )
                for k in range(10)
            )
        )
        assert all(x == y for x, y in pairs)
        for task_id, _ in pairs:
            seen = [await r.tasks.get_task(pb.GetTaskRequest(task_id=task_id)) for r in (a, b)]
            views = [tuple(getattr(t, name) for name in _SUBMITTED_FIELDS) for t in seen]
            assert views[0] == views[1], f"the replicas disagree on task {task_id}: {views}"


async def test_a_key_dropped_by_retention_names_a_new_stored_task(
    nats_jetstream: NatsServer,
) -> None:
    async with (
        replica(nats_jetstream, terminal_task_retention=1) as a,
        replica(nats_jetstream) as b,
    ):
        worker = await agent(b, "worker-b", capacity=1)
        old = await submit(a, description="old", idempotency_key="nightly")
        assert (await worker.next_assignment()).task_id == old
        await worker.result(old)
        other = await submit(a, description="other")
        assert (await worker.next_assignment()).task_id == other
        await worker.result(other)
        for r in (a, b):
            await eventually(
                lambda r=r: _missing(r.tasks, old),  # type: ignore[misc]
                timeout=WAIT,
                what="the old task dropped by retention",
            )
        # As with one Hub: the key is free again and names a new task, stored like any.
        new = await submit(a, description="new", payload=b"again", idempotency_key="nightly")
        task = await b.tasks.get_task(pb.GetTaskRequest(task_id=new))
        # B's free worker may have taken it already.
        assert task.description == "new" and task.state in (PENDING, pb.TaskState.LEASED)
        asg = await worker.next_assignment()
        assert (asg.task_id, asg.payload) == (new, b"again")


async def _missing(tasks: client.TaskServiceStub, task_id: str) -> bool:
    try:
        await tasks.get_task(pb.GetTaskRequest(task_id=task_id), timeout=WAIT)
    except GRPCError as exc:
        return exc.status == Status.NOT_FOUND
    return False


async def test_a_replica_keeps_serving_after_a_key_dropped_by_retention_is_reused(
    nats_jetstream: NatsServer, tmp_path: Path
) -> None:
    # The replica runs as a process of its own: a Hub that stops answering is seen as
    # a call that times out, not as a test that hangs.
    hub = HubProc(
        tmp_path, "--store", "jetstream", "--nats-url", nats_jetstream.url,
        "--retain-tasks", "1", name="reuse",
    )  # fmt: skip
    await hub.start()
    channel = Channel("127.0.0.1", hub.port)
    try:
        tasks = client.TaskServiceStub(channel)
        worker = await agent(channel, "worker", capacity=1)
        ran = []
        for description, key in (("old", "nightly"), ("other", ""), ("new", "nightly")):
            reply = await tasks.submit_task(
                pb.SubmitTaskRequest(description=description, idempotency_key=key), timeout=WAIT
            )
            asg = await worker.next_assignment()
            assert (asg.task_id, asg.description) == (reply.task_id, description)
            await asyncio.wait_for(worker.result(asg.task_id), WAIT)
            ran.append(asg.task_id)
            if description == "other":  # retention keeps 1 finished task: not "old"
                await eventually(
                    lambda: _missing(tasks, ran[0]), timeout=WAIT, what="the old task dropped"
                )
        task = await tasks.get_task(pb.GetTaskRequest(task_id=ran[-1]), timeout=WAIT)
        assert (task.state, task.description) == (SUCCEEDED, "new")
    finally:
        channel.close()
        hub.kill()


async def test_routing_is_the_same_as_with_one_hub(nats_jetstream: NatsServer) -> None:
    async with replicas(nats_jetstream) as (a, b):
        plain = Worker(await agent(a, "plain-a", capacity=4))
        target = await agent(b, "agent-x", capacity=1)
        imager = await agent(b, "imager", capacity=1, task_types="image")
        async with working(plain):
            # A task for agent-x, submitted on A (which has a free agent): runs on agent-x.
            for_x = await submit(a, description="for x", target_agent_id="agent-x")
            assert (await target.next_assignment()).task_id == for_x
            # A typed task submitted on A runs on the typed agent of B.
            image = await submit(a, description="img", task_type="image")
            assert (await imager.next_assignment()).task_id == image
            # Both busy: their tasks wait, and the free agent of A takes none of them.
            later_x = [
                await submit(a, description=f"x{p}", target_agent_id="agent-x", priority=p)
                for p in (1, 9, 5)
            ]
            later_image = [
                await submit(a, description=f"i{p}", task_type="image", priority=p)
                for p in (2, 8, 4)
            ]

            async def queued_on_b() -> bool:
                pending = await all_tasks(b, state=PENDING)
                return set(later_x + later_image) <= set(pending)

            await eventually(queued_on_b, timeout=WAIT, what="B holding the waiting tasks")
            await barrier(a, plain)
            assert plain.assigned == []
            # Highest priority first, as with one Hub.
            got_x = []
            await target.result(for_x)
            for _ in later_x:
                asg = await target.next_assignment()
                got_x.append(asg.description)
                await target.result(asg.task_id)
            assert got_x == ["x9", "x5", "x1"]
            got_image = []
            await imager.result(image)
            for _ in later_image:
                asg = await imager.next_assignment()
                got_image.append(asg.description)
                await imager.result(asg.task_id)
            assert got_image == ["i8", "i4", "i2"]
            await barrier(a, plain)
            assert plain.assigned == []
            for r in (a, b):
                done = await all_in(r, [for_x, image, *later_x, *later_image], SUCCEEDED)
                assert {done[i].assigned_agent_id for i in [for_x, *later_x]} == {"agent-x"}
                assert {done[i].assigned_agent_id for i in [image, *later_image]} == {"imager"}


async def test_the_leases_of_a_dead_replica_go_back_to_the_queue(
    nats_jetstream: NatsServer, tmp_path: Path
) -> None:
    async with replicas(nats_jetstream, replica_timeout_seconds=1.0) as (a, b):
        dying = HubProc(
            tmp_path, "--store", "jetstream", "--nats-url", nats_jetstream.url,
            "--replica-timeout", "1", name="dying",
        )  # fmt: skip
        channel: Channel | None = None
        try:
            await dying.start()
            channel = Channel("127.0.0.1", dying.port)
            doomed = await agent(channel, "doomed", capacity=1)

            async def doomed_listed() -> bool:
                return "doomed" in await listed_agents(a)

            await eventually(doomed_listed, timeout=WAIT, what="A listing the dying Hub's agent")
            task_id = await submit(a, description="orphan", max_attempts=3)
            asg = await doomed.next_assignment()
            assert (asg.task_id, asg.attempt) == (task_id, 1)
            for r in (a, b):
                leased = await settled(r, task_id, LEASED)
                assert leased.assigned_agent_id == "doomed"
            dying.kill()
            survivors = [
                Worker(await agent(a, "survivor-a", capacity=1), hold=True),
                Worker(await agent(b, "survivor-b", capacity=1), hold=True),
            ]
            async with working(*survivors):
                await eventually(
                    lambda: any(w.got(task_id) for w in survivors),
                    timeout=WAIT,
                    what="the orphaned task running on a surviving replica",
                )
                [runner] = [w for w in survivors if w.got(task_id)]
                [again] = runner.assigned
                assert again.attempt == 2  # the lost lease counted
                await runner.agent.result(task_id, result=b"rescued")
                for r, w in zip((a, b), survivors, strict=True):
                    await barrier(r, w)
                assert sum(len(w.assigned) for w in survivors) == 1
            for r in (a, b):
                task = await settled(r, task_id, SUCCEEDED)
                assert (task.attempt, task.result) == (2, b"rescued")
                assert task.assigned_agent_id == runner.agent.agent_id

            async def doomed_gone() -> bool:
                return "doomed" not in await listed_agents(a)

            await eventually(doomed_gone, timeout=WAIT, what="the dead Hub's agent unlisted")
        finally:
            if channel is not None:
                channel.close()
            dying.kill()


async def test_tasks_outlive_every_replica(nats_jetstream: NatsServer) -> None:
    async with replicas(nats_jetstream) as (a, b):
        worker = await agent(b, "worker-b", capacity=2)
        holder = await agent(a, "holder-a", capacity=1, task_types="held")
        # (holder-a takes untyped tasks too: these are addressed to worker-b)
        done = await submit(a, description="done", payload=b"in", target_agent_id="worker-b")
        asg = await worker.next_assignment()
        await worker.result(asg.task_id, result=b"out")
        failed = await submit(b, description="failed", target_agent_id="worker-b")
        asg = await worker.next_assignment()
        await worker.result(asg.task_id, success=False, error_message="boom")
        cancelled = await submit(a, description="cancelled", task_type="never")
        await b.tasks.cancel_task(pb.CancelTaskRequest(task_id=cancelled, reason="no"))
        waiting = await submit(
            b,
            description="waiting",
            payload=b"wait",
            task_type="later",
            priority=7,
            metadata={"k": "v"},
            workflow_id="wf",
        )
        held = await submit(b, description="held", task_type="held")
        assert (await holder.next_assignment()).task_id == held
        for r in (a, b):
            await settled(r, done, SUCCEEDED)
            await settled(r, failed, FAILED)
            await settled(r, cancelled, CANCELLED)
            await settled(r, held, LEASED)
    # Both stopped; a new replica on the same JetStream has every task.
    async with replica(nats_jetstream) as c:
        task = await c.tasks.get_task(pb.GetTaskRequest(task_id=done))
        assert (task.state, task.result, task.payload, task.assigned_agent_id) == (
            SUCCEEDED,
            b"out",
            b"in",
            "worker-b",
        )
        task = await c.tasks.get_task(pb.GetTaskRequest(task_id=failed))
        assert (task.state, task.error_message) == (FAILED, "boom")
        task = await c.tasks.get_task(pb.GetTaskRequest(task_id=cancelled))
        assert (task.state, task.error_message) == (CANCELLED, "no")
        task = await c.tasks.get_task(pb.GetTaskRequest(task_id=waiting))
        assert (task.state, task.payload, task.priority, task.metadata, task.workflow_id) == (
            PENDING,
            b"wait",
            7,
            {"k": "v"},
            "wf",
        )
        # Leased when its replica stopped: handed back, the attempt not counted.
        task = await c.tasks.get_task(pb.GetTaskRequest(task_id=held))
        assert (task.state, task.attempt) == (PENDING, 0)
        assert set(await all_tasks(c)) == {done, failed, cancelled, waiting, held}
        newcomer = await agent(c, "newcomer", capacity=2, task_types="later,held")
        got = {(await newcomer.next_assignment()).task_id for _ in range(2)}
        assert got == {waiting, held}


async def test_tasks_dropped_by_retention_leave_the_other_replica_too(
    nats_jetstream: NatsServer,
) -> None:
    async with (
        replica(nats_jetstream, terminal_task_retention=3) as a,
        replica(nats_jetstream) as b,  # keeps every finished task itself
    ):
        worker = await agent(b, "worker-b", capacity=1)
        ids = []
        for i in range(8):
            ids.append(await submit(b, description=f"t{i}"))
            assert (await worker.next_assignment()).task_id == ids[-1]
            await worker.result(ids[-1])
            await settled(a, ids[-1], SUCCEEDED)

        async def kept(r: Replica) -> bool:
            return set(await all_tasks(r)) == set(ids[-3:])

        for r in (a, b):
            await eventually(
                lambda r=r: kept(r),  # type: ignore[misc]
                timeout=WAIT,
                what="only the newest 3 finished tasks kept",
            )
            for task_id in ids[:-3]:
                status, _ = await grpc_status(r.tasks.get_task(pb.GetTaskRequest(task_id=task_id)))
                assert status == Status.NOT_FOUND


async def test_three_replicas_agree_after_lease_races(nats_jetstream: NatsServer) -> None:
    async with replicas(nats_jetstream, 3) as hubs:
        workers = [Worker(await agent(r, f"worker-{i}", capacity=5)) for i, r in enumerate(hubs)]
        ids: list[str] = []
        async with working(*workers):
            # Batches: every replica sees many pending tasks at once and leases them to
            # its own agents, racing the others for each.
            for round_ in range(3):
                batches = await asyncio.gather(
                    *(
                        r.tasks.submit_tasks(
                            pb.SubmitTasksRequest(
                                tasks=[
                                    pb.SubmitTaskRequest(description=f"{round_}-{i}-{j}")
                                    for j in range(25)
                                ]
                            )
                        )
                        for i, r in enumerate(hubs)
                    )
                )
                ids += [
                    res.submitted.task_id for b in batches for res in b.results if res.submitted
                ]
            views = [await all_in(r, ids, SUCCEEDED) for r in hubs]
            for r, w in zip(hubs, workers, strict=True):
                await barrier(r, w)
        assert len(ids) == 225
        counts = collections.Counter(asg.task_id for w in workers for asg in w.assigned)
        assert set(counts) == set(ids)
        assert [i for i, n in counts.items() if n != 1] == []
        for view in views:
            assert {view[i].assigned_agent_id for i in ids} <= {w.agent.agent_id for w in workers}
            assert [
                i for i in ids if view[i].assigned_agent_id != views[0][i].assigned_agent_id
            ] == []
        for r in hubs:
            assert await all_tasks(r, state=LEASED) == {}
            assert await all_tasks(r, state=PENDING) == {}

            async def idle(r: Replica = r) -> bool:
                reply = await r.tasks.list_agents(pb.ListAgentsRequest())
                running = {info.agent_id: info.running_tasks for info in reply.agents}
                return running == {w.agent.agent_id: 0 for w in workers}

            await eventually(idle, timeout=WAIT, what="no agent holding a lease")
