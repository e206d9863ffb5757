"""The Hub's Prometheus metrics (aether_hub/metrics.py), scraped over real HTTP from a real
Hub on 127.0.0.1 and parsed with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpclib.client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aether import AetherAgent, AgentConfig, TaskAssignment, TaskResult, TaskState
from aether._wire import client, pb
from aether.health_http import HealthServer, agent_probe
from aether_hub.commands import configure_hub_parser, hub_config_from_args
from aether_hub.server import HubServer
from aether_hub.settings import ConfigError, HubConfig
from aether_hub.testing import TestHub
from tests.hubserver.hubkit import AgentConn, bearer, running_hub

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    """A port nothing listens on now (for --metrics-port, where 0 means off)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def scrape(port: int) -> Samples:
    """GET /metrics on 127.0.0.1:`port`, parsed: (sample name, labels) -> value."""
    status, content_type, text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    assert content_type.startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent: a labelled child not created yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _hub_with_metrics() -> HubServer:
    hub = HubServer(HubConfig(port=0, dev=True, metrics_port=free_port()))
    await hub.start()
    return hub


async def test_metrics_are_off_by_default() -> None:
    async with running_hub(HubConfig(port=0, dev=True)) as hub:
        assert hub.metrics_port is None
        # Still counted in-process (the registry is there), just not served.
        assert b"aether_hub_tasks_submitted_total" in hub.metrics.exposition()


async def test_a_task_cycle_is_counted() -> None:
    hub = await _hub_with_metrics()
    assert hub.metrics_port is not None
    channel = grpclib.client.Channel("127.0.0.1", hub.port)
    try:
        tasks = client.TaskServiceStub(channel)
        # Three typed tasks wait while no agent serves their type.
        for _ in range(3):
            await tasks.submit_task(pb.SubmitTaskRequest(description="x", task_type="review"))
        before = await scrape(hub.metrics_port)
        assert value(before, "aether_hub_tasks_submitted_total") == 3
        assert value(before, "aether_hub_queue_depth", task_type="review") == 3
        assert value(before, "aether_hub_agents_connected") == 0
        assert (
            value(
                before,
                "aether_hub_rpcs_total",
                method="/aether.v1.TaskService/SubmitTask",
                code="OK",
            )
            == 3
        )

        agent = await AgentConn.register(channel, "m1", task_types="review")
        agent.open_stream(max_concurrent_tasks=3)
        assignments = [await agent.next_assignment() for _ in range(3)]
        leased = await scrape(hub.metrics_port)
        assert value(leased, "aether_hub_queue_depth", task_type="review") == 0
        assert value(leased, "aether_hub_tasks_running", task_type="review") == 3
        assert value(leased, "aether_hub_agents_connected") == 1
        assert value(leased, "aether_hub_task_dispatch_seconds_count") == 3

        await agent.result(assignments[0].task_id, success=True)
        await agent.result(assignments[1].task_id, success=False, error_message="no")
        await tasks.cancel_task(pb.CancelTaskRequest(task_id=assignments[2].task_id))
        # A call that fails is counted under its status.
        with pytest.raises(grpclib.exceptions.GRPCError):
            await tasks.get_task(pb.GetTaskRequest(task_id="nope"))
        after = await scrape(hub.metrics_port)
        finished = "aether_hub_tasks_finished_total"
        assert value(after, finished, outcome="succeeded") == 1
        assert value(after, finished, outcome="failed") == 1
        assert value(after, finished, outcome="cancelled") == 1
        assert value(after, finished, outcome="timed_out") == 0
        assert value(after, "aether_hub_task_run_seconds_count", outcome="succeeded") == 1
        assert value(after, "aether_hub_task_run_seconds_count", outcome="cancelled") == 1
        assert value(after, "aether_hub_tasks_running", task_type="review") == 0
        get_task = "/aether.v1.TaskService/GetTask"
        assert value(after, "aether_hub_rpcs_total", method=get_task, code="NOT_FOUND") == 1
        assert (
            value(
                after,
                "aether_hub_rpc_duration_seconds_count",
                method="/aether.v1.AgentService/Register",
                code="OK",
            )
            == 1
        )
        await agent.close_stream()
    finally:
        channel.close()
        await hub.stop()


async def test_a_broken_stream_requeues_its_leases() -> None:
    hub = await _hub_with_metrics()
    assert hub.metrics_port is not None
    channel = grpclib.client.Channel("127.0.0.1", hub.port)
    stream_channel = grpclib.client.Channel("127.0.0.1", hub.port)
    try:
        tasks = client.TaskServiceStub(channel)
        await tasks.submit_task(pb.SubmitTaskRequest(description="x"))
        agent = await AgentConn.register(channel, "m1")
        agent.open_stream(channel=stream_channel)
        await agent.next_assignment()
        stream_channel.close()  # the connection dies: the lease goes back
        await agent.stream_ended.wait()
        for _ in range(100):
            samples = await scrape(hub.metrics_port)
            if value(samples, "aether_hub_leases_requeued_total") == 1:
                break
            await asyncio.sleep(0.05)
        assert value(samples, "aether_hub_leases_requeued_total") == 1
        assert value(samples, "aether_hub_queue_depth", task_type="") == 1
    finally:
        channel.close()
        await hub.stop()


async def test_llm_tokens_by_model_and_agent() -> None:
    hub = await _hub_with_metrics()
    assert hub.metrics_port is not None
    channel = grpclib.client.Channel("127.0.0.1", hub.port)
    try:
        agent = await AgentConn.register(channel, "writer")
        llm = client.LLMServiceStub(channel, metadata=bearer(agent.token))
        request = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="one two three")])
        reply = await llm.chat(request)
        assert reply.success
        chunks = [chunk async for chunk in llm.chat_stream(request)]
        usage = chunks[-1].usage
        assert usage is not None and reply.usage is not None
        samples = await scrape(hub.metrics_port)
        tokens = "aether_hub_llm_tokens_total"
        model = reply.model
        prompt = value(samples, tokens, model=model, agent_id="writer", kind="prompt")
        completion = value(samples, tokens, model=model, agent_id="writer", kind="completion")
        assert prompt == reply.usage.prompt_tokens + usage.prompt_tokens
        assert completion == reply.usage.completion_tokens + usage.completion_tokens
        assert prompt > 0 and completion > 0
    finally:
        channel.close()
        await hub.stop()


async def test_two_hubs_in_one_process_count_apart() -> None:
    first = await _hub_with_metrics()
    second = await _hub_with_metrics()
    try:
        assert first.metrics_port is not None and second.metrics_port is not None
        channel = grpclib.client.Channel("127.0.0.1", first.port)
        try:
            await client.TaskServiceStub(channel).submit_task(pb.SubmitTaskRequest())
        finally:
            channel.close()
        assert value(await scrape(first.metrics_port), "aether_hub_tasks_submitted_total") == 1
        assert value(await scrape(second.metrics_port), "aether_hub_tasks_submitted_total") == 0
    finally:
        await first.stop()
        await second.stop()


async def test_other_paths_are_404_and_the_port_closes_with_the_hub() -> None:
    hub = await _hub_with_metrics()
    port = hub.metrics_port
    assert port is not None
    try:
        status, _, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/nope")
        assert status == 404 and "/metrics" in body
    finally:
        await hub.stop()
    with pytest.raises(OSError):
        await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")


def test_metrics_port_from_flag_and_config_file(tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    configure_hub_parser(parser)
    assert hub_config_from_args(parser.parse_args([])).metrics_port == 0
    assert hub_config_from_args(parser.parse_args(["--metrics-port", "9464"])).metrics_port == 9464
    config_file = tmp_path / "hub.toml"
    config_file.write_text("[hub]\nmetrics_port = 9100\n")
    from_file = hub_config_from_args(parser.parse_args(["--config", str(config_file)]))
    assert from_file.metrics_port == 9100
    both = parser.parse_args(["--config", str(config_file), "--metrics-port", "9200"])
    assert hub_config_from_args(both).metrics_port == 9200
    with pytest.raises(SystemExit):
        parser.parse_args(["--metrics-port", "70000"])
    with pytest.raises(ConfigError, match="metrics_port"):
        HubConfig(metrics_port=-1).validate()
    config_file.write_text('[hub]\nmetrics_port = "9100"\n')
    with pytest.raises(ConfigError, match="metrics_port"):
        hub_config_from_args(parser.parse_args(["--config", str(config_file)]))


class _Worker(AetherAgent):
    """Succeeds, except for tasks described "fail" (its handler raises)."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        if task.description == "fail":
            raise RuntimeError("asked to fail")
        return TaskResult(task_id=task.task_id, success=True, result=b"done")


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` until it holds (a result's acknowledgement reaches the agent a moment
    after the Hub recorded it); fails after 10 s, never asserts on timing otherwise."""
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not hold within 10 s")


async def test_scraping_hub_and_agent_after_ten_tasks() -> None:
    config = HubConfig(host="127.0.0.1", port=0, dev=True, metrics_port=free_port())
    async with TestHub(config) as hub:
        hub_port = hub.server.metrics_port
        assert hub_port is not None
        agent = _Worker(AgentConfig(agent_id="w1", agent_name="W", hub_url=hub.url))
        health = HealthServer(
            agent_probe(agent), host="127.0.0.1", port=0, metrics=agent.metrics_registry
        )
        async with health, hub.running(agent):
            outcomes = [await hub.run_task("ok" if i < 7 else "fail") for i in range(10)]
            assert [t.state for t in outcomes] == [TaskState.SUCCEEDED] * 7 + [TaskState.FAILED] * 3

            async def acknowledged() -> bool:
                return value(await scrape(health.port), "aether_agent_result_outbox_depth") == 0

            await _eventually(acknowledged)
            hub_samples = await scrape(hub_port)
            agent_samples = await scrape(health.port)

        assert value(hub_samples, "aether_hub_tasks_submitted_total") == 10
        finished = "aether_hub_tasks_finished_total"
        assert value(hub_samples, finished, outcome="succeeded") == 7
        assert value(hub_samples, finished, outcome="failed") == 3
        assert value(hub_samples, "aether_hub_task_dispatch_seconds_count") == 10
        run_count = "aether_hub_task_run_seconds_count"
        assert value(hub_samples, run_count, outcome="succeeded") == 7
        assert value(hub_samples, run_count, outcome="failed") == 3
        assert value(hub_samples, "aether_hub_leases_requeued_total") == 0
        assert value(hub_samples, "aether_hub_queue_depth", task_type="") == 0
        assert value(hub_samples, "aether_hub_agents_connected") == 1
        submit = "/aether.v1.TaskService/SubmitTask"
        assert value(hub_samples, "aether_hub_rpcs_total", method=submit, code="OK") == 10

        agent_finished = "aether_agent_tasks_finished_total"
        assert value(agent_samples, agent_finished, outcome="succeeded") == 7
        assert value(agent_samples, agent_finished, outcome="failed") == 3
        assert value(agent_samples, "aether_agent_handler_duration_seconds_count") == 10
        assert value(agent_samples, "aether_agent_tasks_running") == 0
        assert value(agent_samples, "aether_agent_result_outbox_depth") == 0
        assert value(agent_samples, "aether_agent_reconnects_total") == 0
        assert value(agent_samples, "aether_agent_connection_failures_total") == 0
