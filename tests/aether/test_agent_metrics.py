"""An agent's own Prometheus metrics (aether/_metrics.py) and `/metrics` on its health
port, scraped over real HTTP and parsed with prometheus-client's parser."""

from __future__ import annotations

import asyncio

from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from aether import AgentConfig
from aether.health_http import HealthServer, agent_probe
from tests.aether.conftest import SECRET, make_config
from tests.aether.fake_hub import FakeHub, HubState
from tests.aether.test_agent import BlockingAgent, EchoAgent, until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _raw(port: int, request: bytes) -> tuple[int, str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return int(lines[0].split(" ")[1]), headers["content-type"], body.decode()


async def scrape(port: int) -> Samples:
    status, content_type, text = await _raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200, text
    assert content_type.startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_running_handlers_and_outcomes(hub: FakeHub) -> None:
    agent = BlockingAgent(make_config(hub, max_concurrent_tasks=2))
    health = HealthServer(
        agent_probe(agent), host="127.0.0.1", port=0, metrics=agent.metrics_registry
    )
    async with health, agent:
        await hub.state.submit("a")
        await hub.state.submit("b")
        await until(lambda: sorted(agent.started) == ["a", "b"])
        running = await scrape(health.port)
        assert value(running, "aether_agent_tasks_running") == 2
        assert value(running, "aether_agent_handler_duration_seconds_count") == 0
        agent.release.set()
        await hub.state.wait_for(lambda: {"a", "b"} <= set(hub.state.results))
        await until(lambda: len(agent._outbox) == 0)
        done = await scrape(health.port)
    assert value(done, "aether_agent_tasks_running") == 0
    assert value(done, "aether_agent_tasks_finished_total", outcome="succeeded") == 2
    assert value(done, "aether_agent_handler_duration_seconds_count") == 2
    assert value(done, "aether_agent_result_outbox_depth") == 0


async def test_reconnects_are_counted(hub: FakeHub) -> None:
    agent = EchoAgent(make_config(hub, heartbeat_interval=0.1, reconnect_delay=0.01))
    second: FakeHub | None = None
    try:
        await agent.start()
        port = hub.port
        await hub.close()
        second = FakeHub(HubState(secret=SECRET))
        await second.start(port)
        await second.state.wait_for(lambda: bool(second.state.registrations))
        await until(lambda: agent.connection_state.value == "connected")
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(agent._metrics.exposition().decode())
            for s in family.samples
        }
    finally:
        await agent.stop()
        if second is not None:
            await second.close()
    assert value(samples, "aether_agent_reconnects_total") == 1


async def test_two_agents_count_apart_and_own_metrics_are_served(hub: FakeHub) -> None:
    first = EchoAgent(make_config(hub, agent_id="one"))
    second = EchoAgent(make_config(hub, agent_id="two"))
    mine = Counter("my_things", "Things my handler did.", registry=first.metrics_registry)
    mine.inc(3)
    async with HealthServer(
        agent_probe(first), host="127.0.0.1", port=0, metrics=first.metrics_registry
    ) as health:
        async with first:
            await hub.state.submit("t")
            await hub.state.wait_for(lambda: "t" in hub.state.results)
        samples = await scrape(health.port)
    assert value(samples, "aether_agent_tasks_finished_total", outcome="succeeded") == 1
    assert value(samples, "my_things_total") == 3
    assert b'outcome="succeeded"} 0.0' in second._metrics.exposition()


async def test_metrics_path_only_with_a_registry() -> None:
    async with HealthServer(
        agent_probe(EchoAgent(make_config_free())), host="127.0.0.1", port=0
    ) as health:
        status, _, body = await _raw(health.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 404 and "/healthz or /readyz" in body
    agent = EchoAgent(make_config_free())
    async with HealthServer(
        agent_probe(agent), host="127.0.0.1", port=0, metrics=agent.metrics_registry
    ) as health:
        status, _, _ = await _raw(health.port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 405
        status, content_type, body = await _raw(
            health.port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert (status, body) == (200, "")
        assert content_type.startswith("text/plain")


def make_config_free() -> AgentConfig:
    """A config for an agent that is never started."""
    return AgentConfig(agent_id="idle", agent_name="idle", hub_url="127.0.0.1:1")
