"""Scenario 3: a silent partition, both ways, between an agent process and the Hub process.

The agent reaches the Hub through a TCP proxy that stops forwarding without closing
anything (tests/reliability/proxy.py). The Hub (`--heartbeat-interval 1 --session-grace 1`)
must end the silent session and requeue its lease within 2 x heartbeat + grace + the 0.5 s
sweep; the agent must notice by itself (keepalive) and, once the partition heals, be
registered again within its backoff delay + connect_timeout (+ the keepalive that
abandons an attempt lost in the partition). The bounds are checked with generous margins;
the measured times are printed.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from aether import TaskClient, TaskState
from tests.reliability.hubproc import Processes, eventually, wait_agents
from tests.reliability.ledger import Ledger, Submitter, hold_on
from tests.reliability.proxy import FreezableProxy

HEARTBEAT = 1
GRACE = 1
EXPIRY_BOUND = 2 * HEARTBEAT + GRACE + 0.5
# The partitioned agent's settings (AETHER_* variables of its process).
KEEPALIVE_INTERVAL = 0.5
KEEPALIVE_TIMEOUT = 1.0
MAX_RECONNECT_DELAY = 1.0
CONNECT_TIMEOUT = 1.0
VICTIM_ENV = {
    "AETHER_KEEPALIVE_INTERVAL": str(KEEPALIVE_INTERVAL),
    "AETHER_KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT),
    "AETHER_RECONNECT_DELAY": "0.2",
    "AETHER_MAX_RECONNECT_DELAY": str(MAX_RECONNECT_DELAY),
    "AETHER_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
}
#: The agent notices a dead link within a keepalive interval + timeout.
AGENT_DETECT_BOUND = KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT
#: Back after a heal: the longest backoff (+20 % jitter) + connect_timeout, plus the
#: keepalive that gives up an attempt made into the partition.
HEAL_BOUND = MAX_RECONNECT_DELAY * 1.2 + CONNECT_TIMEOUT + AGENT_DETECT_BOUND
#: Slack for a busy 2-core machine.
MARGIN = 10.0

SLOW = [pytest.mark.slow, pytest.mark.timeout(900)]


def _reconnecting_since(state_log: Path, agent_id: str, since: float) -> float | None:
    """When (time.time()) the agent last went RECONNECTING after `since`, if it did."""
    if not state_log.exists():
        return None
    for line in state_log.read_text().splitlines():
        entry = json.loads(line)
        if (entry["agent_id"], entry["state"]) == (agent_id, "reconnecting") and (
            entry["t"] >= since
        ):
            return float(entry["t"])
    return None


@pytest.mark.parametrize(
    "partitions", [pytest.param(1, id="short"), pytest.param(4, id="long", marks=SLOW)]
)
async def test_silent_partition_is_detected_by_both_sides_and_heals(
    tmp_path: Path, processes: Processes, partitions: int
) -> None:
    hub = processes.hub(
        "--db", str(tmp_path / "hub.sqlite3"),
        "--heartbeat-interval", str(HEARTBEAT), "--session-grace", str(GRACE),
    )  # fmt: skip
    await hub.start()
    proxy = FreezableProxy(hub.port)
    await proxy.start()
    exec_log, state_log = tmp_path / "executions.jsonl", tmp_path / "states.jsonl"
    rescuer = processes.fleet(hub.address, "rescuer", exec_log=exec_log)
    victim = processes.fleet(
        proxy.address, "victim", exec_log=exec_log, state_log=state_log, hold=True,
        env=VICTIM_ENV,
    )  # fmt: skip
    victim_id = victim.agent_ids[0]
    ledger = Ledger()
    hub_detect: list[float] = []
    agent_detect: list[float] = []
    heal: list[float] = []
    held = []
    try:
        async with TaskClient(hub.address, timeout=5) as client:
            await wait_agents(client, ["rescuer-0", victim_id], [rescuer, victim])
            async with Submitter(client, ledger, rate=20, workers=2).running():
                for _ in range(partitions):
                    task = await hold_on(client, ledger, victim_id)
                    held.append(task.task_id)
                    cut, cut_wall = time.monotonic(), time.time()
                    proxy.freeze()

                    async def requeued(task_id: str = task.task_id) -> bool:
                        now = await client.get(task_id)
                        return now.assigned_agent_id != victim_id or now.attempt > 1

                    await eventually(requeued, timeout=EXPIRY_BOUND + MARGIN, interval=0.05,
                                     what="the Hub requeuing the partitioned lease")  # fmt: skip
                    hub_detect.append(time.monotonic() - cut)

                    def noticed_at(since: float = cut_wall) -> float | None:
                        return _reconnecting_since(state_log, victim_id, since)

                    noticed = await eventually(
                        noticed_at,
                        timeout=AGENT_DETECT_BOUND + MARGIN,
                        what="the agent noticing the partition",
                    )
                    assert noticed is not None
                    agent_detect.append(noticed - cut_wall)
                    agents = {a.agent_id for a in await client.list_agents()}
                    assert victim_id not in agents  # its session ended
                    await asyncio.sleep(1.0)  # attempts into the partition go unanswered
                    healed = time.monotonic()
                    proxy.heal()

                    async def back() -> bool:
                        return any(a.agent_id == victim_id for a in await client.list_agents())

                    await eventually(back, timeout=HEAL_BOUND + MARGIN, interval=0.05,
                                     what="the agent registered again after the heal")  # fmt: skip
                    heal.append(time.monotonic() - healed)
                    # It works again: a task addressed to it is done by it.
                    again = await client.submit("after the heal", target_agent_id=victim_id)
                    ledger.ok(again.task_id)
                    done = await again.wait(timeout=30)
                    assert done.state is TaskState.SUCCEEDED and done.result == victim_id.encode()
            report = await ledger.settle(client, timeout=60, exec_log=exec_log)
            finals = [await client.get(task_id) for task_id in held]
    finally:
        await proxy.close()
    print(
        f"\npartition x{partitions}: {report.summary()}"
        f" hub_requeued_after={[round(t, 2) for t in hub_detect]}s (bound {EXPIRY_BOUND:g}s)"
        f" agent_noticed_after={[round(t, 2) for t in agent_detect]}s"
        f" (bound {AGENT_DETECT_BOUND:g}s)"
        f" back_after_heal={[round(t, 2) for t in heal]}s (bound {HEAL_BOUND:g}s)"
    )
    report.check()
    assert set(report.states) == {TaskState.SUCCEEDED}, report.summary()
    for final in finals:  # the partitioned agent's task, finished once, by the rescuer
        assert final.state is TaskState.SUCCEEDED and final.result == b"rescuer-0", final
    # The Hub ended the session because it fell silent (not because a connection closed).
    assert hub.count("missed heartbeats") >= partitions, hub.logs()[-4000:]
    assert victim.alive, processes.outputs([victim])
