"""The Hub process is killed and restarted on the same port while tasks run."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from aether import AgentConfig, ConnectionState
from tests.aether.conftest import SECRET
from tests.aether.test_agent import BlockingAgent, until
from tests.reliability.procs import free_port, records, spawn, stop, wait_record


async def test_reconnect_after_hub_killed_and_restarted(tmp_path: Path) -> None:
    port = free_port()
    first_log, second_log = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    hub_args = ["--port", str(port), "--secret", SECRET]
    first = spawn(
        "tests.aether.fake_hub", *hub_args, "--record", str(first_log), "--tasks", "a,b,c"
    )
    second = None
    agent = BlockingAgent(
        AgentConfig(
            agent_id="restart-agent",
            agent_name="Restart",
            hub_url=f"127.0.0.1:{port}",
            metadata={"secret": SECRET},
            reconnect_delay=0.05,
            max_reconnect_delay=0.5,
            heartbeat_interval=0.2,
        )
    )
    states: list[ConnectionState] = []
    agent.add_connection_callback(states.append)
    try:
        await wait_record(first_log, "listening")
        await agent.start()
        await until(lambda: sorted(agent.started) == ["a", "b", "c"])
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        await until(lambda: agent.connection_state is ConnectionState.RECONNECTING)
        agent.release.set()  # results are made while no Hub runs: they wait in the outbox
        await asyncio.sleep(0.3)
        second = spawn("tests.aether.fake_hub", *hub_args, "--record", str(second_log))
        await wait_record(second_log, "result", count=3)
        await until(lambda: agent.connection_state is ConnectionState.CONNECTED)
    finally:
        await agent.stop()
        out_first = stop(first)
        out_second = stop(second) if second is not None else ""
    after = records(second_log)
    registrations = [r for r in after if r["kind"] == "register"]
    assert len(registrations) == 1 and registrations[0]["agent_id"] == "restart-agent"
    assert registrations[0]["metadata"] == {}  # the secret is never sent as metadata
    results = {r["task_id"]: r for r in after if r["kind"] == "result"}
    assert set(results) == {"a", "b", "c"}, out_first + out_second
    assert all(r["success"] for r in results.values())
    assert not any(r["kind"] == "result" for r in records(first_log))
    assert ConnectionState.RECONNECTING in states
    assert len(agent._outbox) == 0
