"""SIGTERM to an agent process drains in-flight tasks, hands back the rest, exits cleanly."""

from __future__ import annotations

import asyncio
import signal
import subprocess

from tests.aether.conftest import SECRET
from tests.aether.fake_hub import FakeHub
from tests.reliability.procs import spawn, stop


def agent_env(fake_hub: FakeHub, **extra: str) -> dict[str, str]:
    return {
        "AETHER_AGENT_ID": "sigterm-agent",
        "AETHER_AGENT_NAME": "Sigterm",
        "AETHER_HUB_URL": fake_hub.url,
        "AETHER_AGENT_SECRET": SECRET,
        "AETHER_MAX_RECONNECT_ATTEMPTS": "0",
        **extra,
    }


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    async def poll() -> int:
        while proc.poll() is None:
            await asyncio.sleep(0.05)
        return proc.returncode

    return await asyncio.wait_for(poll(), timeout)


async def test_sigterm_drains_in_flight_task(fake_hub: FakeHub) -> None:
    proc = spawn("tests.reliability.agent_proc", env=agent_env(fake_hub, AGENT_TASK_SECONDS="1.0"))
    try:
        await fake_hub.state.submit("inflight", description="work")
        await fake_hub.state.wait_for(lambda: bool(fake_hub.state.statuses), timeout=60)
        proc.send_signal(signal.SIGTERM)
        code = await wait_exit(proc)
    finally:
        output = stop(proc)
    assert code == 0, output
    result = fake_hub.state.results["inflight"]
    assert result.success and result.result == b"finished", output
    assert [u.agent_id for u in fake_hub.state.unregistered] == ["sigterm-agent"]
    assert SECRET not in output  # DEBUG logging on, still no secret


async def test_sigterm_releases_task_past_grace(fake_hub: FakeHub) -> None:
    env = agent_env(fake_hub, AETHER_SHUTDOWN_GRACE_SECONDS="0.2")
    proc = spawn("tests.reliability.agent_proc", env=env)
    try:
        await fake_hub.state.submit("stuck", description="forever")
        await fake_hub.state.wait_for(lambda: bool(fake_hub.state.statuses), timeout=60)
        proc.send_signal(signal.SIGTERM)
        code = await wait_exit(proc)
    finally:
        output = stop(proc)
    assert code == 0, output
    result = fake_hub.state.results["stuck"]
    assert result.released and not result.success, output
    assert len(fake_hub.state.unregistered) == 1


async def test_second_sigterm_releases_at_once(fake_hub: FakeHub) -> None:
    env = agent_env(fake_hub, AETHER_SHUTDOWN_GRACE_SECONDS="600")
    proc = spawn("tests.reliability.agent_proc", env=env)
    try:
        await fake_hub.state.submit("stuck", description="forever")
        await fake_hub.state.wait_for(lambda: bool(fake_hub.state.statuses), timeout=60)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert proc.poll() is None  # draining: it would wait up to 600 s
        proc.send_signal(signal.SIGTERM)
        code = await wait_exit(proc)
    finally:
        output = stop(proc)
    assert code == 0, output
    assert fake_hub.state.results["stuck"].released, output
