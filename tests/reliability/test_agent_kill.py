"""Scenario 2: an agent process is killed with SIGKILL while it runs a task.

The Hub (with --db, `--heartbeat-interval 1 --session-grace 1`) requeues the task within
its failure-detection bound (a session silent for 2 heartbeat intervals + grace expires;
here the kernel also closes the dead agent's connection, which the Hub notices at once) and
another agent finishes it. The ledger shows every acknowledged task final once; the killed
run and the rescuing run are the two executions at-least-once delivery allows.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aether import Task, TaskClient, TaskState
from tests.reliability.hubproc import FleetProc, Processes, eventually, wait_agents
from tests.reliability.ledger import Ledger, Submitter, executions, hold_on

HEARTBEAT = 1
GRACE = 1
#: The Hub's bound: a silent session expires after 2 intervals + grace, swept every 0.5 s.
EXPIRY_BOUND = 2 * HEARTBEAT + GRACE + 0.5
#: Slack for a busy 2-core machine; the measured times are printed.
MARGIN = 10.0

SLOW = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.mark.parametrize(
    "rounds", [pytest.param(1, id="short"), pytest.param(5, id="long", marks=SLOW)]
)
async def test_agent_killed_mid_task_is_requeued_and_finished_by_another(
    tmp_path: Path, processes: Processes, rounds: int
) -> None:
    hub = processes.hub(
        "--db", str(tmp_path / "hub.sqlite3"),
        "--heartbeat-interval", str(HEARTBEAT), "--session-grace", str(GRACE),
    )  # fmt: skip
    await hub.start()
    exec_log = tmp_path / "executions.jsonl"
    rescuer = processes.fleet(hub.address, "rescuer", exec_log=exec_log)
    ledger = Ledger()
    held: list[Task] = []
    requeue_times: list[float] = []
    async with TaskClient(hub.address, timeout=5) as client:
        async with Submitter(client, ledger, rate=20, workers=2).running():
            for r in range(rounds):
                victim = processes.fleet(hub.address, f"victim{r}", exec_log=exec_log, hold=True)
                await wait_agents(client, ["rescuer-0", victim.agent_ids[0]], [rescuer, victim])
                task = await hold_on(client, ledger, victim.agent_ids[0])
                held.append(task)
                victim.kill()
                killed = time.monotonic()

                async def requeued(task_id: str = task.task_id, victim: FleetProc = victim) -> bool:
                    now = await client.get(task_id)
                    return now.assigned_agent_id != victim.agent_ids[0] or now.attempt > 1

                await eventually(requeued, timeout=EXPIRY_BOUND + MARGIN, interval=0.05,
                                 what="the killed agent's task requeued")  # fmt: skip
                requeue_times.append(time.monotonic() - killed)
        report = await ledger.settle(client, timeout=60, exec_log=exec_log)
        finals = {t.task_id: await client.get(t.task_id) for t in held}
    print(
        f"\nagent kill -9 x{rounds}: {report.summary()}"
        f" requeued_after={[round(t, 2) for t in requeue_times]}s (bound {EXPIRY_BOUND:g}s)"
    )
    report.check()
    assert rescuer.alive, processes.outputs([rescuer, hub])
    runs = executions(exec_log)
    for task in held:
        final = finals[task.task_id]
        assert final.state is TaskState.SUCCEEDED, final
        assert final.result == b"rescuer-0", final  # finished by the other agent
        assert final.attempt == 2, final  # the lost lease counted as an attempt
        assert runs[task.task_id] == 2, runs[task.task_id]  # killed run + rescue
    assert set(report.states) == {TaskState.SUCCEEDED}, report.summary()
    assert report.duplicates >= len(held)
