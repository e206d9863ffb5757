"""Scenario 5: the NATS server behind the Hub (`--nats-url`) is killed and restarted under
messaging load.

A real nats-server process, a Hub process bridged to it and two agents (a publisher, a
subscriber of `shared.load.>`). nats-server is killed with SIGKILL while ~100 messages/s are
published, and started again on the same port. Every publish during the outage must either
fail with a clear error (the Hub's NATS client buffers what it cannot send, up to its
limit: past it, `success=false` naming NATS) or be delivered once NATS is back; after the
restart messaging works again; nothing crashes (the Hub runs on, the agents keep their
sessions). Core NATS is at-most-once: messages in flight at the moment of the crash (sent
to the dying server, or published before the Hub noticed) may be lost; they are counted,
not asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aether import AetherAgent, AetherError, AgentConfig, BusMessage, ConnectionState
from tests.aether.test_agent import EchoAgent
from tests.reliability.hubproc import HubProc, Processes, eventually

SLOW = [pytest.mark.slow, pytest.mark.timeout(900)]

LOST = "lost the connection to NATS"
BACK = "reconnected to NATS"
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def _agent(agent_id: str, hub: HubProc) -> AetherAgent:
    return EchoAgent(
        AgentConfig(
            agent_id=agent_id,
            agent_name=agent_id,
            hub_url=hub.address,
            reconnect_delay=0.1,
            max_reconnect_delay=1,
            connect_timeout=2,
        )
    )


def _logged_at(hub: HubProc, needle: str, nth: int) -> float | None:
    """time.time() of the `nth` (1-based) Hub log line containing `needle`, if logged."""
    lines = [line for line in hub.text().splitlines() if needle in line]
    if len(lines) < nth:
        return None
    match = _STAMP.match(lines[nth - 1])
    assert match, lines[nth - 1]
    stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


@dataclass
class Publication:
    n: int
    started: float  # time.time()
    ended: float
    ok: bool
    error: str = ""


@dataclass
class Traffic:
    """What the publisher sent and the subscriber got."""

    sent: list[Publication] = field(default_factory=list)
    received: set[int] = field(default_factory=set)
    duplicates: int = 0


async def _subscribe(agent: AetherAgent, traffic: Traffic, ready: asyncio.Event) -> None:
    message: BusMessage
    async for message in agent.hub.messaging.subscribe("shared.load.>"):
        ready.set()
        n = int(json.loads(message.payload)["n"])
        if n in traffic.received:
            traffic.duplicates += 1
        traffic.received.add(n)


@contextlib.asynccontextmanager
async def _publishing(
    agent: AetherAgent, traffic: Traffic, *, rate: float, payload_bytes: int
) -> AsyncIterator[None]:
    async def publish() -> None:
        filler = "x" * payload_bytes
        n = 0
        period = 1 / rate
        next_at = time.monotonic()
        while True:
            n += 1
            started = time.time()
            try:
                reply = await agent.hub.messaging.publish(
                    f"shared.load.{n % 10}", {"n": n, "filler": filler}, timeout=10
                )
            except AetherError as exc:
                traffic.sent.append(Publication(n, started, time.time(), False, str(exc)))
            else:
                traffic.sent.append(
                    Publication(n, started, time.time(), reply.success, reply.error_message)
                )
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    task = asyncio.create_task(publish())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize(
    ("outages", "outage_seconds", "payload_bytes"),
    [
        # 16 KiB messages for 2.5 s overflow the Hub's NATS buffer (2 MiB): both outcomes.
        pytest.param(1, 2.5, 16 * 1024, id="short"),
        pytest.param(3, 8.0, 8 * 1024, id="long", marks=SLOW),
    ],
)
async def test_nats_killed_and_restarted_under_messaging_load(
    tmp_path: Path, processes: Processes, outages: int, outage_seconds: float, payload_bytes: int
) -> None:
    nats = processes.nats()
    await nats.start()
    hub = processes.hub("--nats-url", nats.url)
    await hub.start()
    publisher, subscriber = _agent("publisher", hub), _agent("subscriber", hub)
    left_connected: list[ConnectionState] = []
    traffic = Traffic()
    windows: list[tuple[float, float]] = []  # (kill, noticed) per outage, time.time()
    recovered_after: list[float] = []
    ready = asyncio.Event()
    reader: asyncio.Task[None] | None = None
    try:
        await publisher.start()
        await subscriber.start()
        for agent in (publisher, subscriber):
            agent.add_connection_callback(left_connected.append)
        reader = asyncio.create_task(_subscribe(subscriber, traffic, ready))
        async with _publishing(publisher, traffic, rate=100, payload_bytes=payload_bytes):
            await asyncio.wait_for(ready.wait(), 30)  # the subscription is in place
            for k in range(1, outages + 1):
                await asyncio.sleep(1.5)
                killed = time.time()
                nats.kill()

                def lost(k: int = k) -> float | None:
                    return _logged_at(hub, LOST, k)

                def back(k: int = k) -> float | None:
                    return _logged_at(hub, BACK, k)

                noticed = await eventually(lost, timeout=30, what="the Hub noticing")
                assert noticed is not None
                windows.append((killed, noticed))
                await asyncio.sleep(outage_seconds)
                await nats.start()
                await eventually(back, timeout=30, what="the Hub reconnecting")
                restarted = time.time()

                def delivered_since(since: float = restarted) -> bool:
                    return any(p.ok and p.n in traffic.received for p in traffic.sent
                               if p.started > since)  # fmt: skip

                await eventually(delivered_since, timeout=30, what="delivery after the restart")
                recovered_after.append(time.time() - restarted)
            await asyncio.sleep(1.0)
        # What was published last is delivered within a moment.
        last_ok = max(p.n for p in traffic.sent if p.ok)
        await eventually(lambda: last_ok in traffic.received, timeout=30, what="the last one")
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await publisher.stop()
        await subscriber.stop()

    def in_crash(p: Publication) -> bool:
        # Sent to the dying server, or before the Hub noticed it was gone.
        return any(kill - 1.0 <= p.ended and p.started <= noticed for kill, noticed in windows)

    ok = [p for p in traffic.sent if p.ok]
    failed = [p for p in traffic.sent if not p.ok]
    strict_lost = [p.n for p in ok if not in_crash(p) and p.n not in traffic.received]
    crash_lost = [p.n for p in ok if in_crash(p) and p.n not in traffic.received]
    during = [p for p in traffic.sent if any(n <= p.started <= n + outage_seconds
                                             for _, n in windows)]  # fmt: skip
    print(
        f"\nnats kill -9 x{outages}: published={len(traffic.sent)} ok={len(ok)}"
        f" failed={len(failed)} delivered={len(traffic.received)}"
        f" lost_outside_crash={len(strict_lost)} lost_in_crash_window={len(crash_lost)}"
        f" during_outage(ok={sum(p.ok for p in during)}, failed={sum(not p.ok for p in during)})"
        f" hub_noticed_after={[round(n - k, 2) for k, n in windows]}s"
        f" delivering_again_after={[round(t, 2) for t in recovered_after]}s"
        f" errors={sorted({p.error[:80] for p in failed})[:3]}"
    )
    assert not strict_lost, f"{len(strict_lost)} acknowledged publishes never delivered"
    assert all("NATS" in p.error for p in failed), [p.error for p in failed[:5]]
    assert any(p.ok for p in during), "nothing was buffered during the outage"
    assert failed, "the outage never filled the Hub's NATS buffer"
    assert hub.alive, hub.text()[-6000:]
    assert "Traceback" not in hub.text(), hub.text()[-6000:]
    # The agents' sessions never broke: NATS is behind the Hub, not between agent and Hub.
    assert left_connected == [ConnectionState.DRAINING, ConnectionState.CLOSED] * 2, left_connected
    assert traffic.duplicates == 0
