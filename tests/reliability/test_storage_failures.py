"""Scenario 4: the Hub's database runs out of room, or is read-only, under load; recovery.

The `--db` file lives on a small tmpfs this test mounts (root only: skipped otherwise).

Disk full: a filler file takes the last byte while tasks are submitted and run. Submissions
must then be answered UNAVAILABLE (an OK only for what is stored: after the run the Hub is
killed -9 and restarted, and every acknowledged task must be there), the agent process
goes on, the failure is logged once (not once per flush) and, when the filler is deleted,
the Hub recovers by itself: submissions are acknowledged again and every task finishes
(none stays LEASED).

Read-only: Linux refuses `mount -o remount,ro` while a process has a file open for writing
on the filesystem (EBUSY), and SQLite keeps the database open read-write, so a running Hub
cannot be put on a read-only filesystem. The test does what can happen: the Hub crashes
(kill -9) under load, the filesystem is remounted read-only, and the Hub started again on
it must refuse to start with a clear message (never serve, so never acknowledge what it
cannot store); remounted read-write, it starts, the agents come back by themselves, and
every acknowledged task is there and finishes.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aether import TERMINAL_TASK_STATES, TaskClient, TaskState
from tests.reliability.hubproc import HubProc, Processes, wait_agents
from tests.reliability.ledger import Ledger, LedgerReport, Submitter

SLOW = [pytest.mark.slow, pytest.mark.timeout(900)]

STORE_FAILING = "the task database cannot be written"
STORE_RECOVERED = "the task database accepts writes again"


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return subprocess.CompletedProcess(["mount", *args], 127, "", "no mount command")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs mounted for this test (skipped where mounting is not permitted)."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = _mount("-t", "tmpfs", "-o", "size=32m,mode=0755", "tmpfs", str(where))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        _mount("-o", "remount,rw", str(where))
        # Lazily: a process still holding a file there must not fail the teardown.
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(path: Path) -> int:
    """Write `path` until the filesystem has no byte left; how many bytes it took."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    written = 0
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * size
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written


async def _unfinished(client: TaskClient) -> list[str]:
    """The tasks the Hub holds that are not final, as `id:STATE`."""
    return [
        f"{task.task_id}:{task.state.name}"
        async for task in client.list(page_size=1000)
        if task.state not in TERMINAL_TASK_STATES
    ]


async def _settled(
    client: TaskClient, ledger: Ledger, exec_log: Path, timeout: float = 60
) -> LedgerReport:
    """The ledger's report once every acknowledged task is final (checked), and no task
    at all is left PENDING, LEASED or RUNNING (none stranded by the outage)."""
    report = await ledger.settle(client, timeout=timeout, exec_log=exec_log)
    report.check()
    deadline = time.monotonic() + 30
    while left := await _unfinished(client):
        assert time.monotonic() < deadline, f"{len(left)} tasks never finished: {left[:10]}"
        await asyncio.sleep(0.2)
    return report


async def _restart_and_check(hub: HubProc, ledger: Ledger, exec_log: Path) -> LedgerReport:
    """Kill -9 the Hub, start it again on the same file: every acknowledged task is there,
    final, with the final state seen before."""
    hub.kill()
    await hub.start()
    async with TaskClient(hub.address, timeout=5) as client:
        return await _settled(client, ledger, exec_log, timeout=30)


@pytest.mark.parametrize(
    ("cycles", "full_seconds"),
    [pytest.param(1, 2.0, id="short"), pytest.param(3, 8.0, id="long", marks=SLOW)],
)
async def test_disk_full_answers_unavailable_then_recovers_by_itself(
    tmp_path: Path, tmpfs: Path, processes: Processes, cycles: int, full_seconds: float
) -> None:
    hub = processes.hub("--db", str(tmpfs / "hub.sqlite3"), "--heartbeat-interval", "2")
    await hub.start()
    exec_log, state_log = tmp_path / "executions.jsonl", tmp_path / "states.jsonl"
    # Tasks of 1 s: results keep arriving while the disk is full, tasks keep running.
    agent = processes.fleet(
        hub.address, "worker", exec_log=exec_log, state_log=state_log, task_seconds=1.0,
        env={"AETHER_MAX_CONCURRENT_TASKS": "100"},
    )  # fmt: skip
    ledger = Ledger()
    filler = tmpfs / "filler"
    failing_after: list[float] = []
    recovered_after: list[float] = []
    acked_while_full = 0
    async with TaskClient(hub.address, timeout=5) as client:
        await wait_agents(client, agent.agent_ids, [agent])
        async with Submitter(client, ledger, rate=50, workers=2).running():
            await asyncio.sleep(1.0)
            for _ in range(cycles):
                refused = ledger.refused["UNAVAILABLE"]
                full = time.monotonic()
                fill(filler)
                await ledger.wait_refused("UNAVAILABLE", refused + 5, timeout=60)
                failing_after.append(time.monotonic() - full)
                acked_before = len(ledger.acked)
                await asyncio.sleep(full_seconds)
                acked_while_full += len(ledger.acked) - acked_before
                assert hub.alive and agent.alive, processes.outputs([hub, agent])
                filler.unlink()
                room = time.monotonic()
                recovered_after.append(await ledger.wait_acked_since(room, 10, timeout=60))
                await asyncio.sleep(1.0)
        report = await _settled(client, ledger, exec_log)
    assert agent.alive, processes.outputs([agent])
    states = [json.loads(line)["state"] for line in state_log.read_text().splitlines()]
    log = hub.text()
    failing_lines, recovered_lines = hub.count(STORE_FAILING), hub.count(STORE_RECOVERED)
    after_restart = await _restart_and_check(hub, ledger, exec_log)
    print(
        f"\ndisk full x{cycles}: {report.summary()}"
        f" unavailable_after={[round(t, 2) for t in failing_after]}s"
        f" acked_while_full={acked_while_full}"
        f" recovered_after={[round(t, 2) for t in recovered_after]}s"
        f" log_lines(failing={failing_lines}, recovered={recovered_lines},"
        f" sessions={log.count('sessions table cannot be written')},"
        f" guard={log.count('database refused the call')})"
        f"\n  after kill -9 + restart: {after_restart.summary()}"
    )
    assert ledger.refused["UNAVAILABLE"] > 0
    # The agent kept its session through the outage: a Hub that cannot store results now
    # has not lost the connection (re-registering would hand the agent's running tasks
    # back to the queue, counting an attempt against each, again and again).
    assert "reconnecting" not in states, states
    # Logged once when writes start failing and once when they work again, per episode.
    assert failing_lines == cycles, log[-6000:]
    assert recovered_lines == cycles, log[-6000:]
    assert "Traceback" not in log, log[-6000:]
    assert set(report.states) == {TaskState.SUCCEEDED}, report.summary()


@pytest.mark.parametrize(
    "rounds", [pytest.param(1, id="short"), pytest.param(3, id="long", marks=SLOW)]
)
async def test_read_only_database_is_refused_clearly_then_recovers(
    tmp_path: Path, tmpfs: Path, processes: Processes, rounds: int
) -> None:
    hub = processes.hub("--db", str(tmpfs / "hub.sqlite3"), "--heartbeat-interval", "2")
    await hub.start()
    exec_log = tmp_path / "executions.jsonl"
    agent = processes.fleet(hub.address, "worker", exec_log=exec_log, task_seconds=0.02)
    ledger = Ledger()
    async with TaskClient(hub.address, timeout=5) as client:
        await wait_agents(client, agent.agent_ids, [agent])
        async with Submitter(client, ledger, rate=50, workers=2).running():
            for _ in range(rounds):
                await asyncio.sleep(1.5)
                await ledger.observe(client)
                hub.kill()
                remount = _mount("-o", "remount,ro", str(tmpfs))
                assert remount.returncode == 0, remount.stderr
                try:
                    acked = len(ledger.acked)
                    hub.launch()
                    code = await hub.exit_code(timeout=60)
                    assert code != 0, hub.text()
                    refusal = [
                        line
                        for line in hub.text().splitlines()
                        if "readonly" in line.lower() or "read-only" in line.lower()
                    ]
                    assert len(refusal) == 1, hub.text()  # one clear line, no traceback
                    assert "Traceback" not in hub.text(), hub.text()
                    assert len(ledger.acked) == acked  # nothing acknowledged meanwhile
                    assert agent.alive, processes.outputs([agent])
                finally:
                    rw = _mount("-o", "remount,rw", str(tmpfs))
                    assert rw.returncode == 0, rw.stderr
                await hub.start()
                restarted = time.monotonic()
                await ledger.wait_acked_since(restarted, 10, timeout=60)
                await asyncio.sleep(1.0)
        report = await _settled(client, ledger, exec_log)
    print(f"\nread-only restart x{rounds}: {report.summary()} refusal={refusal[0].strip()!r}")
    assert agent.alive, processes.outputs([agent])
    assert set(report.states) == {TaskState.SUCCEEDED}, report.summary()
    assert "Traceback" not in hub.logs(), hub.logs()[-6000:]
