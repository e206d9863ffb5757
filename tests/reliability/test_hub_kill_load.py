"""Scenario 1: the Hub (with --db) is killed with SIGKILL, again and again, under load.

A Hub process with `--db FILE`, two agent processes and a submitter (~100 tasks/s, in this
process). The Hub is killed -9 several times and restarted on the same port with the same
file; the agents find it again by themselves. Every task whose submission was answered OK
must exist afterwards and be final within a minute of the last restart, with the final state
it was first seen with (an OK means stored).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from aether import TaskClient, TaskState
from tests.reliability.hubproc import Processes, wait_agents
from tests.reliability.ledger import Ledger, Submitter

SLOW = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.mark.parametrize(
    ("kills", "load_seconds"),
    [pytest.param(2, 2.0, id="short"), pytest.param(6, 5.0, id="long", marks=SLOW)],
)
async def test_hub_kill9_under_load_loses_no_acknowledged_task(
    tmp_path: Path, processes: Processes, kills: int, load_seconds: float
) -> None:
    hub = processes.hub("--db", str(tmp_path / "hub.sqlite3"), "--heartbeat-interval", "2")
    await hub.start()
    exec_log = tmp_path / "executions.jsonl"
    fleets = [
        processes.fleet(hub.address, f"worker{n}", exec_log=exec_log, task_seconds=0.01)
        for n in range(2)
    ]
    ledger = Ledger()
    outages: list[float] = []
    async with TaskClient(hub.address, timeout=5) as client:
        await wait_agents(client, ["worker0-0", "worker1-0"], fleets)
        async with Submitter(client, ledger, rate=100).running():
            for _ in range(kills):
                await asyncio.sleep(load_seconds)
                await ledger.observe(client)  # final states before the kill
                hub.kill()
                killed = time.monotonic()
                await asyncio.sleep(0.3)
                await hub.start()
                last_restart = time.monotonic()
                # Back in business: submissions are acknowledged again and agents serve.
                await ledger.wait_acked_since(last_restart, 20, timeout=60)
                outages.append(time.monotonic() - killed)
            await asyncio.sleep(load_seconds)
        report = await ledger.settle(
            client, timeout=60 - (time.monotonic() - last_restart), exec_log=exec_log
        )
    print(
        f"\nhub kill -9 x{kills}: {report.summary()}"
        f" outages(kill->acks again)={[round(o, 2) for o in outages]}"
    )
    assert all(fleet.alive for fleet in fleets), processes.outputs(fleets)
    report.check()
    assert report.acked >= kills * load_seconds * 50, report.summary()  # the load was real
    # Nothing was lost and the Hub's crashes are not the tasks' fault: all succeeded.
    assert set(report.states) == {TaskState.SUCCEEDED}, report.summary()
    assert "Traceback" not in hub.logs(), hub.logs()[-6000:]
