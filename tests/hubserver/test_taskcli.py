"""`aether task` against a real dev Hub (HubServer on 127.0.0.1, port 0), with a small
agent made of the generated AgentService stubs."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpclib.client
import pytest

from aether._wire import client, pb
from aether.address import parse_hub_url
from aether_cli.tasks import amain, main
from aether_hub.server import HubServer
from aether_hub.settings import HubConfig

WAIT = 10.0


class Stream(io.StringIO):
    """A captured stdout/stderr that can pretend to be a terminal and report writes."""

    def __init__(self, *, tty: bool = False) -> None:
        super().__init__()
        self._tty = tty
        self.watchers: list[tuple[str, asyncio.Event]] = []

    def isatty(self) -> bool:
        return self._tty

    def write(self, text: str) -> int:
        written = super().write(text)
        for marker, event in self.watchers:
            if marker in self.getvalue():
                event.set()
        return written

    def when(self, marker: str) -> asyncio.Event:
        event = asyncio.Event()
        self.watchers.append((marker, event))
        return event


def plain(text: str) -> str:
    """`text` without terminal control sequences (colours, cursor moves), frames on lines."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # colours and styles
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", text.replace("\r", "\n"))  # moves
    return "\n".join(line for line in text.splitlines() if line.strip())


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@dataclass
class Cli:
    hub: HubServer
    monkeypatch: pytest.MonkeyPatch
    stdout: Stream = field(default_factory=Stream)
    stderr: Stream = field(default_factory=Stream)

    async def __call__(self, *argv: str, hub: bool = True) -> Result:
        self.stdout, self.stderr = Stream(), Stream(tty=self.stderr.isatty())
        return await self.run(list(argv), hub=hub)

    async def run(self, argv: list[str], *, hub: bool = True) -> Result:
        self.monkeypatch.setattr(sys, "stdout", self.stdout)
        self.monkeypatch.setattr(sys, "stderr", self.stderr)
        if hub:
            argv = [*argv, "--hub-url", self.hub.address]
        code = await amain(argv)
        return Result(code, self.stdout.getvalue(), self.stderr.getvalue())


@pytest.fixture
async def hub() -> AsyncIterator[HubServer]:
    async with HubServer(HubConfig(host="127.0.0.1", port=0, dev=True)) as server:
        yield server


@pytest.fixture
def cli(hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.delenv("AETHER_HUB_URL", raising=False)
    monkeypatch.delenv("AETHER_CLIENT_TOKEN", raising=False)
    return Cli(hub, monkeypatch)


class Agent:
    """A minimal agent: takes one task, reports progress, then answers when released."""

    def __init__(self, hub: HubServer, agent_id: str = "cli-test-agent") -> None:
        self.channel = grpclib.client.Channel("127.0.0.1", hub.port)
        self.agent_id = agent_id
        self.stub = client.AgentServiceStub(self.channel)
        self.progressed = asyncio.Event()
        self.release = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(
        self, answer: Callable[[pb.TaskAssignment], pb.TaskResult], progress: float = 0.5
    ) -> None:
        reg = await self.stub.register(pb.RegisterRequest(agent_id=self.agent_id))
        auth = {"authorization": f"Bearer {reg.session_token}"}

        async def work() -> None:
            stream = self.stub.stream_tasks(
                pb.StreamTasksRequest(agent_id=self.agent_id), metadata=auth
            )
            async for event in stream:
                if event.assignment is None:
                    continue
                task = event.assignment
                await self.stub.report_status(
                    pb.TaskStatus(
                        task_id=task.task_id,
                        state=pb.TaskState.RUNNING,
                        progress=progress,
                        message="halfway there",
                    ),
                    metadata=auth,
                )
                self.progressed.set()
                await self.release.wait()
                await self.stub.submit_result(answer(task), metadata=auth)
                return

        self.task = asyncio.create_task(work())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.channel.close()


@pytest.fixture
async def agent(hub: HubServer) -> AsyncIterator[Agent]:
    made = Agent(hub)
    yield made
    await made.close()


def succeed(task: pb.TaskAssignment) -> pb.TaskResult:
    return pb.TaskResult(
        task_id=task.task_id, success=True, result=f"Processed: {task.description}".encode()
    )


def fail(task: pb.TaskAssignment) -> pb.TaskResult:
    return pb.TaskResult(task_id=task.task_id, success=False, error_message="disk on fire")


# -- submit / get / list / cancel -------------------------------------------------------


async def test_submit_prints_the_id_and_get_shows_the_task(cli: Cli, tmp_path: Path) -> None:
    payload = tmp_path / "diff.txt"
    payload.write_text("--- a\n+++ b\n")
    submitted = await cli(
        "submit",
        "Review this diff",
        "--payload",
        f"@{payload}",
        "--type",
        "code_review",
        "--priority",
        "5",
        "--metadata",
        "repo=aether",
        "pr=42",
    )
    assert submitted.code == 0, submitted.err
    task_id = submitted.out.strip()
    assert task_id and "\n" not in task_id

    shown = await cli("get", task_id, "--json")
    assert shown.code == 0
    task = shown.json()
    assert isinstance(task, dict)
    assert task["task_id"] == task_id
    assert task["state"] == "pending"
    assert task["description"] == "Review this diff"
    assert task["payload"] == "--- a\n+++ b\n"
    assert task["task_type"] == "code_review"
    assert task["priority"] == 5
    assert task["metadata"] == {"repo": "aether", "pr": "42"}

    human = await cli("get", task_id)
    assert human.code == 0
    lines = dict(line.split(":", 1) for line in human.out.splitlines())
    assert lines["task"].strip() == task_id
    assert lines["state"].strip() == "pending"
    assert lines["metadata"].strip() == "pr=42, repo=aether"


async def test_submit_json_and_payload_from_stdin(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Stdin(io.StringIO):
        buffer = io.BytesIO(b"\xff\xfebinary")  # not UTF-8

    monkeypatch.setattr(sys, "stdin", Stdin())
    submitted = await cli("submit", "binary input", "--payload", "-", "--json")
    data = submitted.json()
    assert isinstance(data, dict)
    task = (await cli("get", str(data["task_id"]), "--json")).json()
    assert isinstance(task, dict)
    assert task["payload_base64"] == "//5iaW5hcnk="


async def test_list_filters_and_formats(cli: Cli) -> None:
    ids = [(await cli("submit", f"task number {i}", "--type", "t")).out.strip() for i in range(3)]
    cancelled = await cli("cancel", ids[0])
    assert cancelled.code == 0
    assert cancelled.out.strip() == f"cancelled task {ids[0]}"

    table = await cli("list")
    header, *rows = table.out.splitlines()
    assert header.split() == (
        ["TASK", "ID", "STATE", "TYPE", "AGENT", "PRIO", "TRY", "DONE", "UPDATED", "DESCRIPTION"]
    )
    assert [row.split()[0] for row in rows] == list(reversed(ids))  # newest first

    pending = await cli("list", "--state", "pending", "--json")
    listed = pending.json()
    assert isinstance(listed, list)
    assert sorted(t["task_id"] for t in listed) == sorted(ids[1:])
    assert {t["state"] for t in listed} == {"pending"}

    limited = (await cli("list", "--limit", "1", "--json")).json()
    assert isinstance(limited, list) and len(limited) == 1
    # A listing leaves payloads out (not shown as empty); --payloads asks for them.
    assert "payload" not in limited[0] and "result" not in limited[0]
    whole = (await cli("list", "--limit", "1", "--json", "--payloads")).json()
    assert isinstance(whole, list) and whole[0]["payload"] == ""  # submitted without one


async def test_cancel_twice_and_unknown_tasks(cli: Cli) -> None:
    task_id = (await cli("submit", "short-lived")).out.strip()
    assert (await cli("cancel", task_id)).code == 0
    again = await cli("cancel", task_id)
    assert again.code == 1
    assert f"task {task_id} was not cancelled (it is cancelled)" in again.err
    missing = await cli("get", "no-such-task")
    assert missing.code == 1
    assert missing.err.strip() == "aether task: unknown task 'no-such-task'"
    assert missing.out == ""


# -- waiting and watching ---------------------------------------------------------------


async def test_submit_wait_prints_progress_lines_then_the_result(cli: Cli, agent: Agent) -> None:
    await agent.start(succeed)
    seen_progress = cli.stderr.when("halfway there")
    cli.stdout, cli.stderr = Stream(), cli.stderr
    run = asyncio.create_task(cli.run(["submit", "Summarise the report", "--wait"]))
    await asyncio.wait_for(seen_progress.wait(), WAIT)
    agent.release.set()
    result = await asyncio.wait_for(run, WAIT)
    assert result.code == 0, result.err
    assert result.out == "Processed: Summarise the report\n"
    lines = result.err.splitlines()
    assert lines[0].startswith("submitted task ")
    task_id = lines[0].removeprefix("submitted task ")
    assert f"task {task_id}: running 50% halfway there" in lines
    assert lines[-1].startswith(f"task {task_id}: succeeded")
    assert "\r" not in result.err  # not a terminal: plain lines


async def test_submit_wait_draws_a_live_progress_bar_on_a_terminal(cli: Cli, agent: Agent) -> None:
    await agent.start(succeed)
    cli.stderr = Stream(tty=True)
    seen_progress = cli.stderr.when("halfway there")
    run = asyncio.create_task(cli.run(["submit", "draw me", "--wait"]))
    await asyncio.wait_for(seen_progress.wait(), WAIT)
    running_frame = plain(cli.stderr.getvalue()).splitlines()[-1]
    agent.release.set()
    result = await asyncio.wait_for(run, WAIT)
    assert result.code == 0
    assert result.out == "Processed: draw me\n"  # the result alone on stdout
    # A live rich display: the cursor is hidden while it runs and shown again after.
    assert "\x1b[?25l" in result.err and result.err.rstrip().endswith("\x1b[?25h")
    assert "━" in result.err  # the bar
    # While the agent works: state, the bar at 50 %, elapsed time and the status message.
    assert re.search(r"running\s+[━╺╸]+\s+50%\s+\d:\d\d:\d\d\s+halfway there$", running_frame)
    # The last frame stays on screen: the outcome's mark, the final state, 100 %.
    final_frame = plain(result.err).rstrip().splitlines()[-1]
    assert re.search(r"✓ succeeded\s+[━╺╸]+\s+100%", final_frame), final_frame
    assert plain(result.err).startswith("submitted task ")


async def test_submit_wait_on_a_failing_task(cli: Cli, agent: Agent) -> None:
    await agent.start(fail)
    agent.release.set()
    result = await cli("submit", "doomed", "--wait")
    assert result.code == 1
    assert result.out == ""
    assert result.err.rstrip().endswith("failed: disk on fire")


async def test_watch_json_streams_every_change(cli: Cli, agent: Agent) -> None:
    task_id = (await cli("submit", "watch me")).out.strip()
    await agent.start(succeed, progress=0.25)
    await asyncio.wait_for(agent.progressed.wait(), WAIT)
    stdout = Stream()
    seen_running = stdout.when('"state":"running"')
    cli.stdout = stdout
    cli.stderr = Stream()
    run = asyncio.create_task(cli.run(["watch", task_id, "--json"]))
    await asyncio.wait_for(seen_running.wait(), WAIT)
    agent.release.set()
    result = await asyncio.wait_for(run, WAIT)
    assert result.code == 0
    updates = [json.loads(line) for line in result.out.splitlines()]
    assert updates[0]["state"] == "running"
    assert updates[0]["progress"] == 0.25
    assert updates[-1]["state"] == "succeeded"
    assert updates[-1]["result"] == "Processed: watch me"


async def test_submit_wait_json_prints_the_final_task(cli: Cli, agent: Agent) -> None:
    await agent.start(succeed)
    agent.release.set()
    result = await cli("submit", "quiet", "--wait", "--json")
    assert result.code == 0
    task = result.json()
    assert isinstance(task, dict)
    assert task["state"] == "succeeded"
    assert task["result"] == "Processed: quiet"
    assert task["assigned_agent_id"] == "cli-test-agent"


# -- usage and connection errors --------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["submit", "x", "--metadata", "novalue"], "expected KEY=VALUE, got 'novalue'"),
        (["submit", "x", "--payload", "@/no/such/file"], "--payload @/no/such/file:"),
        (["list", "--state", "sleeping"], "unknown state 'sleeping'"),
        (["list", "--limit", "0"], "must be at least 1"),
        (["get", "x", "--hub-url", "host:notaport"], "the port must be a number"),
        (["get", "x", "--hub-url", "ftp://host:1"], "unknown scheme 'ftp://'"),
        (["frobnicate"], "invalid choice"),
    ],
)
async def test_usage_errors_exit_2(cli: Cli, argv: list[str], message: str) -> None:
    result = await cli.run(argv, hub="--hub-url" not in argv)
    assert result.code == 2
    assert message in result.err


async def test_unreachable_hub_is_one_clear_line(cli: Cli) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await cli("list", "--hub-url", f"127.0.0.1:{port}", hub=False)
    assert result.code == 3
    assert result.err == (
        f"cannot reach the Aether Hub at 127.0.0.1:{port} — is `aether hub` running?\n"
    )


async def test_hub_url_from_the_environment(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_HUB_URL", cli.hub.address)
    result = await cli("list", "--json", hub=False)
    assert result.code == 0
    assert result.json() == []


async def test_hub_url_takes_the_sdk_address_grammar(cli: Cli) -> None:
    port = cli.hub.port
    for url in (f"127.0.0.1:{port}", f"grpc://127.0.0.1:{port}", f"http://127.0.0.1:{port}/"):
        result = await cli("list", "--json", "--hub-url", url, hub=False)
        assert (result.code, result.json()) == (0, []), result.err
    assert parse_hub_url("[::1]:7000").authority == "[::1]:7000"


async def test_tls_to_a_plaintext_hub_names_the_cause(cli: Cli) -> None:
    result = await cli("list", "--hub-url", f"grpcs://{cli.hub.address}", hub=False)
    assert result.code == 3
    assert result.err.startswith("aether task: ")
    assert "does not speak TLS" in result.err
    assert f"use grpc://{cli.hub.address}" in result.err
    assert len(result.err.strip().splitlines()) == 1


async def test_unreadable_tls_files_are_usage_errors(cli: Cli) -> None:
    result = await cli("list", "--tls-ca-file", "/no/such/ca.pem")
    assert result.code == 2
    assert "cannot load the TLS files (tls_ca_file=/no/such/ca.pem)" in result.err


def test_help_shows_hub_url_and_tls_flags_not_the_old_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["list", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--hub-url", "--token-env", "--tls-ca-file", "--tls-cert-file"):
        assert flag in text
    assert "--tls-key-file" in text and "--tls-server-name" in text
    assert "--hub " not in text and "--hub\n" not in text


async def test_list_on_a_terminal_is_a_rich_table(cli: Cli) -> None:
    ids = [(await cli("submit", f"table row {i}", "--type", "t")).out.strip() for i in range(3)]
    cli.monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: no column is squeezed
    cli.stdout = Stream(tty=True)
    cli.stderr = Stream()
    result = await cli.run(["list", "--limit", "2"])
    assert result.code == 0
    assert "\x1b[" in result.out  # styled for the terminal
    lines = plain(result.out).splitlines()
    assert lines[0].split() == (
        ["TASK", "ID", "STATE", "TYPE", "AGENT", "PRIO", "TRY", "DONE", "UPDATED", "DESCRIPTION"]
    )
    assert set(lines[1]) <= {"─", " "}  # the rule under the header
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == [ids[2], ids[1]]  # newest first, --limit 2
    assert all(row[1] == "pending" for row in rows)
    assert result.err == "(more tasks: raise --limit above 2)\n"


async def test_client_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_CLIENT_TOKEN", "tok-123")
    monkeypatch.delenv("AETHER_CLIENT_TOKEN", raising=False)
    config = HubConfig(host="127.0.0.1", port=0, client_token_env="HUB_CLIENT_TOKEN")
    async with HubServer(config) as server:
        cli = Cli(server, monkeypatch)
        refused = await cli("list")
        assert refused.code == 3
        assert "the Hub wants a client token" in refused.err
        monkeypatch.setenv("MY_TOKEN", "tok-123")
        assert (await cli("list", "--token-env", "MY_TOKEN")).code == 0
        monkeypatch.setenv("AETHER_CLIENT_TOKEN", "tok-123")
        assert (await cli("list")).code == 0
        monkeypatch.setenv("AETHER_CLIENT_TOKEN", "wrong")
        assert (await cli("list")).code == 3
        unset = await cli("list", "--token-env", "NOT_SET_ANYWHERE_XYZ")
        assert unset.code == 2
        assert "--token-env NOT_SET_ANYWHERE_XYZ: the variable is unset or empty" in unset.err


# -- the console script -----------------------------------------------------------------


async def _console(*argv: str) -> tuple[int, str, str]:
    script = Path(sys.executable).parent / "aether"
    proc = await asyncio.create_subprocess_exec(
        str(script),
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_console_script_runs_task_commands(hub: HubServer) -> None:
    code, out, err = await _console("task", "submit", "from a shell", "--hub-url", hub.address)
    assert code == 0, err
    task_id = out.strip()
    code, out, _ = await _console("task", "get", task_id, "--json", "--hub-url", hub.address)
    assert code == 0
    assert json.loads(out)["description"] == "from a shell"
    code, _, err = await _console("task", "get", "missing", "--hub-url", hub.address)
    assert code == 1
    assert "Traceback" not in err


async def test_console_script_without_a_hub_has_no_traceback() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = await _console("task", "list", "--hub-url", f"127.0.0.1:{port}")
    assert code == 3
    assert out == ""
    assert err.strip() == (
        f"cannot reach the Aether Hub at 127.0.0.1:{port} — is `aether hub` running?"
    )


async def test_a_closed_stdout_is_not_blamed_on_the_hub(hub: HubServer) -> None:
    # `aether task get ID | head -1`: the reader goes away; the Hub is fine and must not be
    # reported unreachable, and no traceback or "Exception ignored" noise may follow.
    code, out, err = await _console("task", "submit", "piped", "--hub-url", hub.address)
    assert code == 0, err
    task_id = out.strip()
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "aether"),
            *("task", "get", task_id, "--hub-url", hub.address),
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    _, raw_err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert raw_err.decode() == ""


def test_sync_main_against_a_hub_in_another_thread(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AETHER_CLIENT_TOKEN", raising=False)
    ready = threading.Event()
    stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
    address: list[str] = []

    async def serve() -> None:
        async with HubServer(HubConfig(host="127.0.0.1", port=0, dev=True)) as server:
            address.append(server.address)
            stop.append((asyncio.get_running_loop(), asyncio.Event()))
            ready.set()
            await stop[0][1].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(WAIT)
        assert main(["submit", "sync path", "--hub-url", address[0]]) == 0
        task_id = capsys.readouterr().out.strip()
        assert main(["list", "--json", "--hub", address[0]]) == 0  # the old, hidden flag
        listed = json.loads(capsys.readouterr().out)
        assert [t["task_id"] for t in listed] == [task_id]
        assert main(["get", "--help"]) == 0
        assert "usage: aether task get" in capsys.readouterr().out
    finally:
        if stop:
            loop, event = stop[0]
            loop.call_soon_threadsafe(event.set)
        thread.join(WAIT)
    assert not thread.is_alive()


async def test_interrupting_a_watch_exits_130_and_leaves_the_task(cli: Cli) -> None:
    task_id = (await cli("submit", "long running")).out.strip()
    cli.stdout, cli.stderr = Stream(), Stream()
    watching = cli.stderr.when(f"task {task_id}: pending")
    run = asyncio.create_task(cli.run(["watch", task_id]))
    await asyncio.wait_for(watching.wait(), WAIT)
    run.cancel()  # what asyncio.run does on Ctrl-C
    result = await asyncio.wait_for(run, WAIT)
    assert result.code == 130
    assert result.err.endswith("interrupted\n")
    state = (await cli("get", task_id, "--json")).json()
    assert isinstance(state, dict) and state["state"] == "pending"


async def test_interrupting_a_live_display_restores_the_terminal(cli: Cli) -> None:
    task_id = (await cli("submit", "long running")).out.strip()
    cli.stdout, cli.stderr = Stream(), Stream(tty=True)
    drawn = cli.stderr.when("pending")
    run = asyncio.create_task(cli.run(["watch", task_id]))
    await asyncio.wait_for(drawn.wait(), WAIT)
    run.cancel()  # what asyncio.run does on Ctrl-C
    result = await asyncio.wait_for(run, WAIT)
    assert result.code == 130
    assert "\x1b[?25l" in result.err  # the live display hid the cursor...
    shown = result.err.rindex("\x1b[?25h")  # ...and showed it again before leaving
    assert result.err[shown:].endswith("interrupted\n")
    assert re.search(r"pending\s+[━╺╸]+\s+0%", plain(result.err))
