"""The agent health endpoint answers probes from a live probe function over real HTTP."""

from __future__ import annotations

import asyncio
import json

import pytest

from aether import AetherAgent, AgentConfig, TaskAssignment, TaskResult
from aether.errors import AetherConnectionError
from aether.health_http import HealthReport, HealthServer, agent_probe
from aether_hub.testing import TestHub


class _Probe:
    def __init__(self) -> None:
        self.report = HealthReport(live=True, ready=False, state="connecting")
        self.raise_next = False

    def __call__(self) -> HealthReport:
        if self.raise_next:
            raise RuntimeError("boom")
        return self.report


async def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return status, headers, body


async def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, object]]:
    status, headers, body = await _raw(
        port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    assert int(headers["content-length"]) > 0
    return status, (json.loads(body) if body else {})


async def test_liveness_and_readiness_follow_the_probe() -> None:
    probe = _Probe()
    async with HealthServer(probe, host="127.0.0.1", port=0) as server:
        assert server.port != 0
        assert await _get(server.port, "/healthz") == (200, {"status": "ok", "state": "connecting"})
        status, body = await _get(server.port, "/readyz")
        assert (status, body["status"]) == (503, "unavailable")

        probe.report = HealthReport(live=True, ready=True, state="connected")
        assert await _get(server.port, "/readyz") == (200, {"status": "ok", "state": "connected"})
        assert (await _get(server.port, "/readyz?verbose=1"))[0] == 200

        probe.report = HealthReport(live=False, ready=True, state="closed")
        assert (await _get(server.port, "/healthz"))[0] == 503
        assert (await _get(server.port, "/readyz"))[0] == 503


async def test_head_has_no_body_and_bad_requests_get_clear_errors() -> None:
    probe = _Probe()
    async with HealthServer(probe, host="127.0.0.1", port=0) as server:
        status, headers, body = await _raw(server.port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
        assert (status, body) == (200, b"")
        assert headers["connection"] == "close"

        status, body_json = await _get(server.port, "/metrics")
        assert status == 404 and "/healthz" in str(body_json["error"])
        assert (await _get(server.port, "/healthz", method="POST"))[0] == 405

        status, _, _ = await _raw(server.port, b"garbage\r\n\r\n")
        assert status == 400
        status, _, body = await _raw(server.port, b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20000)
        assert status == 400 and b"too large" in body

        # A probe that raises answers 503 and the server keeps serving.
        probe.raise_next = True
        assert (await _get(server.port, "/healthz"))[0] == 503
        probe.raise_next = False
        assert (await _get(server.port, "/healthz"))[0] == 200


async def test_stop_is_idempotent_and_start_twice_is_refused() -> None:
    server = HealthServer(_Probe(), host="127.0.0.1", port=0)
    await server.stop()  # before start: a no-op
    await server.start()
    serving_while_started = server.is_serving
    assert serving_while_started
    with pytest.raises(RuntimeError, match="already started"):
        await server.start()
    port = server.port
    await server.stop()
    await server.stop()
    assert not server.is_serving
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def test_invalid_port_is_rejected() -> None:
    with pytest.raises(ValueError, match="between 0 and 65535"):
        HealthServer(_Probe(), port=70000)


async def test_agent_probe_follows_a_real_agent(hub: TestHub) -> None:
    agent = _Echo(AgentConfig(agent_id="probed", agent_name="P", hub_url=hub.url))
    async with HealthServer(agent_probe(agent), host="127.0.0.1", port=0) as server:
        # Not started: alive (the process serves) but not ready.
        assert (await _get(server.port, "/healthz"))[0] == 200
        assert await _get(server.port, "/readyz") == (
            503,
            {"status": "unavailable", "state": "closed"},
        )
        async with hub.running(agent):
            assert await _get(server.port, "/readyz") == (
                200,
                {"status": "ok", "state": "connected"},
            )
        assert (await _get(server.port, "/readyz"))[0] == 503
        assert (await _get(server.port, "/healthz"))[0] == 200  # stopped cleanly


async def test_agent_probe_reports_an_agent_that_gave_up_as_dead() -> None:
    config = AgentConfig(
        agent_id="lost",
        agent_name="L",
        hub_url="127.0.0.1:1",
        max_reconnect_attempts=0,
        reconnect_delay=0.01,
    )
    agent = _Echo(config)
    with pytest.raises(AetherConnectionError):
        await agent.start()
    report = agent_probe(agent)()
    assert not report.live and not report.ready
    assert report.state == "closed: AetherConnectionError"


class _Echo(AetherAgent):
    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        return TaskResult(task_id=task.task_id, success=True, result=task.payload)
