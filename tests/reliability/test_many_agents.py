"""Scenario 6: many agents come back by themselves after the Hub restarts.

Agent fleets (many `AetherAgent`s per process, one connection each) on a Hub with `--db`;
the Hub is restarted (kill -9, and SIGTERM in the long run) on the same port. Every agent
must register again and stream (`TaskClient.list_agents()`), and the restarted Hub's open
descriptors (/proc/PID/fd) and resident memory (VmRSS) must stay within generous factors of
the first Hub's with the same agents: the reconnect storm leaves no leaked connections.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from aether import AgentState, TaskClient, TaskState
from tests.reliability.hubproc import Processes, eventually, fd_count, rss_kib, wait_agents

SLOW = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.mark.parametrize(
    ("agents", "fleets", "restarts"),
    [pytest.param(50, 1, 1, id="short"), pytest.param(240, 2, 3, id="long", marks=SLOW)],
)
async def test_many_agents_register_again_after_hub_restart(
    tmp_path: Path, processes: Processes, agents: int, fleets: int, restarts: int
) -> None:
    hub = processes.hub("--db", str(tmp_path / "hub.sqlite3"), "--heartbeat-interval", "5")
    await hub.start()
    procs = [
        processes.fleet(hub.address, f"fleet{i}", count=agents // fleets) for i in range(fleets)
    ]
    ids = [agent_id for proc in procs for agent_id in proc.agent_ids]
    assert len(ids) == agents
    came_back: list[float] = []
    usage: list[tuple[int, int]] = []  # (fds, RSS KiB) of each Hub process with every agent

    async with TaskClient(hub.address, timeout=10) as client:

        async def all_streaming() -> bool:
            listed = await client.list_agents()
            streaming = {a.agent_id for a in listed if a.state is AgentState.STREAMING}
            return streaming >= set(ids)

        async def settled_usage() -> None:
            await eventually(all_streaming, timeout=60, what="every agent streaming")
            await asyncio.sleep(1.0)  # let the storm's stragglers finish
            usage.append((fd_count(hub.pid), rss_kib(hub.pid)))

        await wait_agents(client, ids, procs, timeout=120)
        await settled_usage()
        for r in range(restarts):
            if r % 2 == 0:
                hub.kill()
            else:
                assert await hub.terminate() == 0, hub.text()[-4000:]
            await hub.start()
            restarted = time.monotonic()
            await wait_agents(client, ids, procs, timeout=120)
            came_back.append(time.monotonic() - restarted)
            await settled_usage()
        # And they work: a task for each agent, all done.
        submitted = [
            await client.submit("ping", target_agent_id=agent_id)
            for agent_id in ids[:: max(1, agents // 50)]
        ]
        done = [await task.wait(timeout=60) for task in submitted]
    (fds0, rss0), *after = usage
    print(
        f"\n{agents} agents, {restarts} Hub restart(s): all back after"
        f" {[round(t, 2) for t in came_back]}s; Hub fds/RSS(KiB) first={usage[0]}"
        f" after restarts={after}"
    )
    assert all(task.state is TaskState.SUCCEEDED for task in done)
    for fds, rss in after:
        assert fds <= fds0 * 1.5 + 20, usage
        assert rss <= rss0 * 2 + 32 * 1024, usage
    assert all(proc.alive for proc in procs), processes.outputs(procs)
