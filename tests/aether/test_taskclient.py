"""`aether.TaskClient` against a real Hub (`aether_hub.testing.TestHub` on 127.0.0.1, real
SQLite), with a real SDK agent where a task has to run; and the one Hub address grammar."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.server import Server

from aether import (
    TERMINAL_TASK_STATES,
    AetherAgent,
    AetherConfigError,
    AetherConnectionError,
    AetherError,
    AgentConfig,
    AgentStateError,
    AuthenticationError,
    HubAddress,
    HubError,
    MessageTooLargeError,
    SubmittedTask,
    Task,
    TaskAssignment,
    TaskClient,
    TaskNotFoundError,
    TaskResult,
    TaskState,
    TaskWaitTimeoutError,
)
from aether.address import parse_hub_url
from aether_hub.server import HubServer
from aether_hub.settings import HubConfig
from aether_hub.testing import TestHub

TOKEN = "client-token-7c1e5b9a"
WAIT = 30.0


class ProgressAgent(AetherAgent):
    """Reports 50 % ("halfway"), waits for `release`, then echoes the payload."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__(config)
        self.release = asyncio.Event()

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        await self.report_progress(0.5, "halfway")
        await self.release.wait()
        return TaskResult(task_id=task.task_id, success=True, result=b"echo: " + task.payload)


def agent_config(hub: TestHub, agent_id: str = "tc-agent") -> AgentConfig:
    return AgentConfig(
        agent_id=agent_id,
        agent_name=agent_id,
        hub_url=hub.url,
        capabilities={"task_types": "echo"},
        shutdown_grace_seconds=1,
    )


@pytest.fixture
async def test_hub() -> AsyncIterator[TestHub]:
    async with TestHub() as hub:
        yield hub


@pytest.fixture
async def client(test_hub: TestHub) -> AsyncIterator[TaskClient]:
    async with TaskClient(test_hub.url) as made:
        yield made


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- submit / get / cancel --------------------------------------------------------------


async def test_submit_with_every_field_round_trips_via_get(client: TaskClient) -> None:
    submitted = await client.submit(
        "Analyze the logs",
        payload=b"\x00binary\xff",
        task_type="analysis",
        target_agent_id="nobody-runs-this",
        priority=7,
        metadata={"repo": "aether", "pr": "42"},
        workflow_id="wf-1",
        max_attempts=4,
        timeout_seconds=3600,
        idempotency_key="key-1",
    )
    assert isinstance(submitted, SubmittedTask)
    assert str(submitted) == submitted.task_id

    task = await client.get(submitted.task_id)
    assert isinstance(task, Task)
    assert task.task_id == submitted.task_id
    assert task.description == "Analyze the logs"
    assert task.payload == b"\x00binary\xff"
    assert task.task_type == "analysis"
    assert task.target_agent_id == "nobody-runs-this"
    assert task.priority == 7
    assert task.metadata == {"repo": "aether", "pr": "42"}
    assert task.workflow_id == "wf-1"
    assert task.max_attempts == 4
    assert task.state is TaskState.PENDING
    assert task.created_at is not None and task.deadline is not None
    assert task.deadline - task.created_at == datetime.timedelta(seconds=3600)
    assert await submitted.get() == task

    again = await client.submit("a second time", idempotency_key="key-1")
    assert again.task_id == submitted.task_id  # the idempotency key returns the first task


async def test_a_str_payload_is_sent_as_utf8(client: TaskClient) -> None:
    submitted = await client.submit("text", payload="héllo", target_agent_id="nobody")
    assert (await submitted.get()).payload == "héllo".encode()


async def test_cancel(client: TaskClient) -> None:
    submitted = await client.submit("doomed", target_agent_id="nobody")
    reply = await submitted.cancel(reason="changed my mind")
    assert reply.success and reply.state is TaskState.CANCELLED
    again = await client.cancel(submitted.task_id)
    assert not again.success and again.state is TaskState.CANCELLED
    assert (await client.wait(submitted.task_id)).state is TaskState.CANCELLED


async def test_unknown_task_is_task_not_found(client: TaskClient) -> None:
    async def watch_it() -> None:
        async for _ in client.watch("no-such-task"):
            pass

    calls = {
        "get": client.get("no-such-task"),
        "cancel": client.cancel("no-such-task"),
        "wait": client.wait("no-such-task", timeout=WAIT),
        "watch": watch_it(),
    }
    for name, call in calls.items():
        with pytest.raises(TaskNotFoundError) as info:
            await call
        error = info.value
        assert isinstance(error, HubError), name
        assert error.task_id == "no-such-task", name
        assert "'no-such-task'" in str(error), name
        assert not error.retryable


async def test_a_task_over_max_message_bytes_is_refused_before_sending(
    test_hub: TestHub,
) -> None:
    async with TaskClient(test_hub.url, max_message_bytes=2048) as small:
        with pytest.raises(MessageTooLargeError, match="max_message_bytes=2048"):
            await small.submit("big", payload=b"x" * 4096)
        assert [t async for t in small.list()] == []  # nothing reached the Hub


async def test_numbers_beyond_int32_are_refused_before_sending(client: TaskClient) -> None:
    with pytest.raises(ValueError, match=r"priority: .*2147483647"):
        await client.submit("wraps", priority=2**31)
    assert [t async for t in client.list()] == []


async def test_a_field_the_hub_refuses_is_invalid_argument(client: TaskClient) -> None:
    with pytest.raises(HubError) as info:
        await client.submit("bad", max_attempts=-1)
    assert info.value.status is not None and info.value.status.name == "INVALID_ARGUMENT"
    assert "max_attempts" in info.value.detail


# -- list -------------------------------------------------------------------------------


async def test_list_pages_through_more_than_page_size(client: TaskClient) -> None:
    ids = [
        (await client.submit(f"task {i}", target_agent_id="nobody", workflow_id="wf")).task_id
        for i in range(23)
    ]
    await client.submit("another workflow", target_agent_id="nobody", workflow_id="other")

    listed = [t.task_id async for t in client.list(workflow_id="wf", page_size=5)]
    assert listed == list(reversed(ids))  # every page, newest first, no repeats

    limited = [t.task_id async for t in client.list(workflow_id="wf", page_size=5, limit=12)]
    assert limited == list(reversed(ids))[:12]

    await client.cancel(ids[0])
    cancelled = [t async for t in client.list(state=TaskState.CANCELLED, page_size=1)]
    assert [t.task_id for t in cancelled] == [ids[0]]
    assert [t async for t in client.list(task_type="no-such-type")] == []

    with pytest.raises(ValueError, match="page_size"):
        [t async for t in client.list(page_size=0)]


# -- watch and wait ---------------------------------------------------------------------


async def test_watch_ends_at_the_final_state(test_hub: TestHub, client: TaskClient) -> None:
    agent = ProgressAgent(agent_config(test_hub))
    async with test_hub.running(agent):
        submitted = await client.submit("follow me", payload=b"hi", task_type="echo")
        seen: list[Task] = []
        async for task in submitted.watch():
            seen.append(task)
            if task.status_message == "halfway":
                agent.release.set()
        final = await submitted.wait(timeout=WAIT)
    assert seen[-1].state is TaskState.SUCCEEDED  # the iteration stopped at the final state
    assert all(t.state not in TERMINAL_TASK_STATES for t in seen[:-1])
    assert any(t.progress == 0.5 and t.state is TaskState.RUNNING for t in seen)
    assert final.result == b"echo: hi"
    assert final.assigned_agent_id == "tc-agent"


async def test_many_concurrent_waits_share_the_client(test_hub: TestHub) -> None:
    agent = ProgressAgent(agent_config(test_hub))
    agent.release.set()
    async with TaskClient(test_hub.url) as client, test_hub.running(agent):
        submitted = await asyncio.gather(
            *(client.submit(f"n{i}", payload=str(i).encode(), task_type="echo") for i in range(30))
        )
        done = await asyncio.gather(*(s.wait(timeout=WAIT) for s in submitted))
    assert [t.result for t in done] == [f"echo: {i}".encode() for i in range(30)]


async def test_wait_timeout_raises_the_typed_error(client: TaskClient) -> None:
    submitted = await client.submit("nobody takes this", target_agent_id="nobody")
    with pytest.raises(TaskWaitTimeoutError) as info:
        await client.wait(submitted.task_id, timeout=0.2)
    error = info.value
    assert isinstance(error, AetherError) and isinstance(error, TimeoutError)
    assert error.task_id == submitted.task_id
    assert error.state is TaskState.PENDING
    assert error.task is not None and error.task.task_id == submitted.task_id
    assert str(error) == (
        f"task {submitted.task_id!r} did not finish within 0.2 s (state: PENDING)"
    )
    # The task goes on.
    assert (await submitted.get()).state is TaskState.PENDING


# -- credentials, connection, addresses -------------------------------------------------


async def test_client_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TC_HUB_TOKEN", TOKEN)
    config = HubConfig(host="127.0.0.1", port=0, dev=True, client_token_env="TC_HUB_TOKEN")
    async with TestHub(config) as hub:
        async with TaskClient(hub.url) as anonymous:
            with pytest.raises(AuthenticationError) as missing:
                await anonymous.submit("x")
        assert "none was sent" in str(missing.value)
        assert "AETHER_CLIENT_TOKEN" in str(missing.value)

        wrong = "wrong-token-3f9d"
        async with TaskClient(hub.url, token=wrong) as client:
            assert wrong not in repr(client) and TOKEN not in repr(client)
            with pytest.raises(AuthenticationError) as refused:
                await client.get("whatever")
        message = str(refused.value)
        assert "rejected the client token" in message
        assert wrong not in message and TOKEN not in message
        assert not refused.value.retryable

        async with TaskClient(hub.url, token=TOKEN) as client:
            submitted = await client.submit("with the right token")
            assert (await submitted.get()).state is TaskState.PENDING
        # The test Hub's own handles carry the Hub's token too.
        assert (await hub.get_task(submitted.task_id)).task_id == submitted.task_id


async def test_unreachable_port_names_the_address() -> None:
    port = _free_port()
    async with TaskClient(f"127.0.0.1:{port}", timeout=WAIT) as client:
        with pytest.raises(AetherConnectionError) as info:
            await client.submit("nowhere")
        error = info.value
        assert f"127.0.0.1:{port}" in str(error)
        assert error.reason == "refused"
        assert error.retryable
        with pytest.raises(AetherConnectionError, match=f"127.0.0.1:{port}"):
            await client.connect()


async def test_tls_to_a_plaintext_hub_says_so(test_hub: TestHub) -> None:
    async with TaskClient(f"grpcs://{test_hub.url}") as client:
        with pytest.raises(AetherConnectionError) as info:
            await client.get("x")
    message = str(info.value)
    assert "does not speak TLS" in message
    assert f"use grpc://{test_hub.url}" in message
    assert info.value.reason == "not-tls" and not info.value.retryable


async def test_closed_client_refuses_calls(test_hub: TestHub) -> None:
    client = TaskClient(test_hub.url)
    await client.close()
    with pytest.raises(AgentStateError, match="closed"):
        await client.get("x")


async def test_from_env(test_hub: TestHub) -> None:
    env = {"AETHER_HUB_URL": f"http://{test_hub.url}/", "AETHER_CLIENT_TOKEN": TOKEN}
    async with TaskClient.from_env(env=env) as client:
        assert client.address == parse_hub_url(test_hub.url)
        assert TOKEN not in repr(client) and "token=***" in repr(client)
        assert (await client.submit("from env", target_agent_id="x")).task_id
    with pytest.raises(AetherConfigError, match="AETHER_HUB_URL") as info:
        TaskClient.from_env(env={"AETHER_HUB_URL": "hub:notaport"})
    assert info.value.variable == "AETHER_HUB_URL"
    tls = TaskClient.from_env(env={"AETHER_TLS_SERVER_NAME": "hub.internal"})
    assert tls.address == HubAddress("localhost", 50051, tls=True)  # any tls_* means TLS


def test_missing_tls_files_fail_at_construction() -> None:
    with pytest.raises(AetherConfigError) as info:
        TaskClient("grpcs://hub:443", tls_ca_file="/no/such/ca.pem")
    assert "cannot load the TLS files (tls_ca_file=/no/such/ca.pem)" in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("localhost:50051", HubAddress("localhost", 50051, tls=False)),
        ("localhost", HubAddress("localhost", 50051, tls=False)),
        ("hub.example.com:7000", HubAddress("hub.example.com", 7000, tls=False)),
        ("  10.0.0.5:81  ", HubAddress("10.0.0.5", 81, tls=False)),
        ("[::1]:7000", HubAddress("::1", 7000, tls=False)),
        ("[::1]", HubAddress("::1", 50051, tls=False)),
        ("grpc://hub:1", HubAddress("hub", 1, tls=False)),
        ("http://hub:1/", HubAddress("hub", 1, tls=False)),
        ("grpcs://hub:443", HubAddress("hub", 443, tls=True)),
        ("https://hub", HubAddress("hub", 50051, tls=True)),
        ("GRPCS://[2001:db8::2]:443/", HubAddress("2001:db8::2", 443, tls=True)),
    ],
)
def test_address_grammar_accepts(url: str, expected: HubAddress) -> None:
    assert parse_hub_url(url) == expected
    AgentConfig(agent_id="a", agent_name="A", hub_url=url)  # agents take the same forms
    assert TaskClient(url).address == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("ftp://hub:1", "unknown scheme 'ftp://'"),
        ("hub:notaport", "the port must be a number from 1 to 65535, got 'notaport'"),
        ("hub:0", "the port must be a number from 1 to 65535, got '0'"),
        ("hub:65536", "got '65536'"),
        ("hub:", "got ''"),
        (":50051", "the host is empty"),
        ("grpc://", "the host is empty"),
        ("::1:7000", "put an IPv6 address in brackets"),
        ("[::1:7000", "missing ']'"),
        ("[hub]:1", "is not an IPv6 address"),
        ("hub:1/api", "it has a path"),
        ("my hub:1", "the host contains whitespace"),
    ],
)
def test_address_grammar_rejects(url: str, problem: str) -> None:
    with pytest.raises(AetherConfigError) as info:
        parse_hub_url(url)
    assert isinstance(info.value, ValueError)
    assert problem in str(info.value)
    with pytest.raises(AetherConfigError, match="invalid Hub address"):
        TaskClient(url)


def test_one_address_grammar_refuses_a_list_which_parse_hub_urls_reads() -> None:
    with pytest.raises(AetherConfigError, match="a list of Hub addresses is not supported here"):
        parse_hub_url("a:1,b:2")
    assert len(TaskClient("a:1,b:2").addresses) == 2  # clients take lists (test_failover.py)


def test_an_address_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(AetherConfigError) as info:
        parse_hub_url("grpcs://user:hunter2@hub:443")
    assert "credentials" in str(info.value) and "hunter2" not in str(info.value)


def test_address_text_forms() -> None:
    address = parse_hub_url("grpcs://[::1]:443")
    assert (address.authority, address.url, str(address)) == (
        "[::1]:443",
        "grpcs://[::1]:443",
        "grpcs://[::1]:443",
    )


# -- TLS to a real TaskService ----------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate for hub.test, server key)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    cwd = tmp_path_factory.mktemp("tls")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=TaskClient Test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=hub.test", cwd=cwd,
    )  # fmt: skip
    (cwd / "server.ext").write_text("subjectAltName=DNS:hub.test\nextendedKeyUsage=serverAuth\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "server.ext",
        cwd=cwd,
    )  # fmt: skip
    return cwd / "ca.pem", cwd / "server.pem", cwd / "server.key"


@contextlib.asynccontextmanager
async def tls_hub(cert: Path, key: Path) -> AsyncIterator[int]:
    """A dev Hub's real services served over TLS on 127.0.0.1 (the Hub itself serves
    plaintext only); yields the port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(["h2"])
    hub = HubServer(HubConfig(host="127.0.0.1", port=0, dev=True))
    server = Server(list(await hub.build_services()))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        await server.start(sock=sock, ssl=context)
        yield int(sock.getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()
        await hub.stop()


async def test_tls_settings_reach_a_tls_hub(tls_files: tuple[Path, Path, Path]) -> None:
    ca, cert, key = tls_files
    async with tls_hub(cert, key) as port:
        async with TaskClient(
            f"grpcs://127.0.0.1:{port}", tls_ca_file=str(ca), tls_server_name="hub.test"
        ) as client:
            submitted = await client.submit("over TLS", target_agent_id="nobody")
            assert (await submitted.get()).description == "over TLS"
        # Any tls_* setting means TLS, without a scheme.
        async with TaskClient(
            f"127.0.0.1:{port}", tls_ca_file=str(ca), tls_server_name="hub.test"
        ) as client:
            assert client.address.tls
            assert (await client.get(submitted.task_id)).task_id == submitted.task_id


async def test_plaintext_to_a_tls_hub_names_the_likely_cause(
    tls_files: tuple[Path, Path, Path],
) -> None:
    _, cert, key = tls_files
    async with tls_hub(cert, key) as port, TaskClient(f"127.0.0.1:{port}") as client:
        with pytest.raises(AetherConnectionError) as info:
            await client.get("x")
    message = str(info.value)
    assert f"the Hub at grpc://127.0.0.1:{port} closed the connection" in message
    assert f"use grpcs://127.0.0.1:{port}" in message
