"""The Hub's status page (aether_hub/statuspage.py), fetched over real HTTP from a real Hub
with a real agent, and parsed with the standard library's `html.parser`; and, where
Debian's chromium is installed, rendered by a real headless browser."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import grpclib.client
import pytest

from aether import AetherAgent, AgentConfig, TaskAssignment, TaskResult, TaskState
from aether_hub.settings import HubConfig
from aether_hub.testing import TestHub
from tests.hubserver.hubkit import AgentConn
from tests.hubserver.test_metrics import free_port

CHROMIUM = "/usr/bin/chromium"


@dataclass
class Page:
    """What a page holds: its tags, its text, its tables (by id) and its links."""

    status: int
    content_type: str
    raw: str
    tags: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    tables: dict[str, list[list[str]]] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)
    meta: list[dict[str, str]] = field(default_factory=list)

    def rows(self, table_id: str) -> list[list[str]]:
        """The data rows (not the header) of table `table_id`, each cell's text."""
        assert table_id in self.tables, f"no table {table_id!r} on the page"
        return [row for row in self.tables[table_id] if row][1:]

    def row(self, table_id: str, first_cell: str) -> list[str]:
        """The row of `table_id` whose first cell is `first_cell`."""
        found = [r for r in self.rows(table_id) if r[0] == first_cell]
        assert len(found) == 1, (first_cell, self.rows(table_id))
        return found[0]

    def fields(self) -> dict[str, str]:
        """The task page's field table: header cell -> value cell."""
        return {r[0]: r[1] for r in self.tables["task"] if len(r) == 2}

    @property
    def all_text(self) -> str:
        return " ".join(self.text)


class _Parser(HTMLParser):
    def __init__(self, page: Page) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.table: list[list[str]] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.page.tags.append(tag)
        if tag == "table":
            self.table = self.page.tables.setdefault(values.get("id", ""), [])
        elif tag == "tr" and self.table is not None:
            self.table.append([])
        elif tag in ("td", "th") and self.table is not None:
            self.cell = []
        elif tag == "a":
            self.page.links.append(values.get("href", ""))
        elif tag == "meta":
            self.page.meta.append(values)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.table is not None and self.cell is not None:
            self.table[-1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data: str) -> None:
        self.page.text.append(data)
        if self.cell is not None:
            self.cell.append(data)


def parse(status: int, content_type: str, raw: str) -> Page:
    page = Page(status, content_type, raw)
    parser = _Parser(page)
    parser.feed(raw)
    parser.close()
    return page


def _fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def get(hub: TestHub, path: str) -> Page:
    """GET `path` from the Hub's metrics port, parsed."""
    port = hub.server.metrics_port
    assert port is not None
    return parse(*await asyncio.to_thread(_fetch, f"http://127.0.0.1:{port}{path}"))


def task_path(task_id: str) -> str:
    return "/tasks/" + urllib.parse.quote(task_id, safe="")


class _Worker(AetherAgent):
    """Succeeds on "ok", raises on "fail"; on "hold" reports progress, waits for `release`."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__(config)
        self.release = asyncio.Event()

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        if task.description == "fail":
            raise RuntimeError("asked to fail")
        if task.description == "hold":
            await self.report_progress(0.5, "halfway <b>there</b>")
            await self.release.wait()
        return TaskResult(task_id=task.task_id, success=True, result=b"done")


def worker(hub: TestHub, agent_id: str = "w1") -> _Worker:
    return _Worker(
        AgentConfig(
            agent_id=agent_id,
            agent_name="Worker One",
            hub_url=hub.url,
            max_concurrent_tasks=2,
            capabilities={"task_types": "summarize"},
        )
    )


@contextlib.asynccontextmanager
async def status_hub() -> AsyncIterator[TestHub]:
    config = HubConfig(host="127.0.0.1", port=0, dev=True, metrics_port=free_port())
    async with TestHub(config) as hub:
        yield hub


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` until it holds; fails after 10 s (no assertion on timing otherwise)."""
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not hold within 10 s")


async def test_the_page_lists_agents_queue_and_recent_tasks() -> None:
    async with status_hub() as hub:
        agent = worker(hub)
        async with hub.running(agent):
            ok = await hub.run_task("ok", task_type="summarize")
            failed = await hub.run_task("fail", task_type="summarize")
            held = await hub.submit("hold", task_type="summarize")

            async def reported() -> bool:
                task = await hub.get_task(held)
                return task.state == TaskState.RUNNING and task.progress == 0.5

            await eventually(reported)
            # Nobody serves "translate": these two wait.
            waiting = [await hub.submit(f"t{i}", task_type="translate") for i in range(2)]

            page = await get(hub, "/")
            assert page.status == 200
            assert page.content_type.startswith("text/html")
            assert {"http-equiv": "refresh", "content": "5"} in page.meta
            assert page.row("agents", "w1") == [
                "w1",
                "Worker One",
                "STREAMING",
                "summarize",
                "1 / 2",
                page.row("agents", "w1")[5],
            ]
            assert page.row("agents", "w1")[5].endswith("UTC")
            # task type, pending, running, agents, free slots, waiting for target
            assert page.row("queue", "summarize") == ["summarize", "0", "1", "1", "1", "0"]
            assert page.row("queue", "translate") == ["translate", "2", "0", "0", "0", "0"]

            recent = page.rows("tasks")
            newest_first = [waiting[1], waiting[0], held, failed.task_id, ok.task_id]
            assert [r[0] for r in recent] == newest_first
            by_id = {r[0]: r for r in recent}
            # id, description, type, state, attempt, progress, message, agent, updated
            assert by_id[held][1:8] == [
                "hold",
                "summarize",
                "RUNNING",
                "1 / 3",
                "50%",
                "halfway <b>there</b>",
                "w1",
            ]
            assert by_id[ok.task_id][3:6] == ["SUCCEEDED", "1 / 3", "100%"]
            assert by_id[failed.task_id][3] == "FAILED"
            assert "asked to fail" in by_id[failed.task_id][6]
            assert by_id[waiting[0]][3] == "PENDING"
            assert by_id[waiting[0]][7] == ""
            # Every listed task links to its own page.
            assert all(task_path(t) in page.links for t in newest_first)
            # The status message's markup is shown as text, never as a tag.
            assert "b" not in page.tags

            assert (await get(hub, "/status")).rows("tasks")[0][0] == waiting[1]
            agent.release.set()
            await hub.wait_for_task(held)


async def test_the_page_bounds_its_recent_tasks() -> None:
    async with status_hub() as hub:
        ids = [await hub.submit(f"task {i}") for i in range(60)]
        page = await get(hub, "/")
        assert [r[0] for r in page.rows("tasks")] == ids[::-1][:50]
        assert page.row("queue", "(untyped)")[1] == "60"
        assert "agents" not in page.tables
        assert "No agent is connected." in page.all_text


async def test_the_task_page_shows_its_attempts() -> None:
    async with status_hub() as hub:
        channel = grpclib.client.Channel("127.0.0.1", hub.port)
        stream_channel = grpclib.client.Channel("127.0.0.1", hub.port)
        try:
            task_id = await hub.submit("ok", metadata={"team": "docs"})
            # A first agent takes the task and its connection dies: attempt 1 is lost.
            flaky = await AgentConn.register(channel, "flaky")
            flaky.open_stream(channel=stream_channel)
            assert (await flaky.next_assignment()).task_id == task_id
            stream_channel.close()
            await flaky.stream_ended.wait()

            async def requeued() -> bool:
                return (await hub.get_task(task_id)).state == TaskState.PENDING

            await eventually(requeued)
            pending = await get(hub, task_path(task_id))
            assert pending.fields()["State"] == "PENDING"
            assert pending.fields()["Attempt"] == "1 of 3"

            async with hub.running(worker(hub)):
                done = await hub.wait_for_task(task_id)
            assert done.state == TaskState.SUCCEEDED

            page = await get(hub, task_path(task_id))
            assert page.status == 200
            fields = page.fields()
            assert fields["State"] == "SUCCEEDED"
            assert fields["Attempt"] == "2 of 3"
            assert fields["Assigned agent"] == "w1"
            assert fields["Description"] == "ok"
            assert fields["Error message"] == "—"
            history = [r[1] for r in page.rows("history")]
            assert history[0] == "submitted by a client"
            assert "attempt 1 ended without a result; the task went back to the queue" in history
            assert "attempt 2 of 3 leased to w1" in history
            assert history[-1] == "SUCCEEDED"
            assert page.rows("metadata") == [["team", "docs"]]
            assert "/" in page.links  # back to the overview
        finally:
            channel.close()
            stream_channel.close()


async def test_a_failed_task_page_shows_its_error() -> None:
    async with status_hub() as hub, hub.running(worker(hub)):
        failed = await hub.run_task("fail")
        page = await get(hub, task_path(failed.task_id))
        assert page.fields()["State"] == "FAILED"
        assert "asked to fail" in page.fields()["Error message"]
        assert page.rows("history")[-1][1].startswith("FAILED: ")


async def test_markup_from_clients_is_escaped() -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    async with status_hub() as hub:
        task_id = await hub.submit(
            evil, task_type="<i>t</i>", metadata={"<b>key</b>": evil}, workflow_id="<u>w</u>"
        )
        overview = await get(hub, "/")
        detail = await get(hub, task_path(task_id))
        for page in (overview, detail):
            assert page.status == 200
            assert not {"script", "img", "i", "b", "u"} & set(page.tags), page.tags
            assert "<script>" not in page.raw
            assert "&lt;script&gt;" in page.raw
        row = overview.row("tasks", task_id)
        assert row[1:3] == [evil, "<i>t</i>"]
        assert overview.row("queue", "<i>t</i>")[1] == "1"
        assert detail.fields()["Description"] == evil
        assert detail.fields()["Workflow"] == "<u>w</u>"
        assert detail.rows("metadata") == [["<b>key</b>", evil]]


async def test_unknown_tasks_and_paths_are_404() -> None:
    async with status_hub() as hub:
        missing = await get(hub, "/tasks/no-such-task")
        assert missing.status == 404
        assert missing.content_type.startswith("text/html")
        assert "No task no-such-task is known to this Hub." in missing.all_text
        injected = await get(hub, "/tasks/" + urllib.parse.quote("<script>x</script>"))
        assert injected.status == 404
        assert "script" not in injected.tags
        assert "<script>x</script>" in injected.all_text
        assert (await get(hub, "/tasks/")).status == 404
        assert (await get(hub, "/nope")).status == 404
        # /metrics is still there, next to the pages.
        assert "aether_hub_tasks_submitted_total" in (await get(hub, "/metrics")).raw


def _dump_dom(url: str, profile: Path) -> str:
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_a_headless_browser_renders_the_page(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    async with status_hub() as hub, hub.running(worker(hub)):
        done = await hub.run_task("ok", task_type="summarize")
        port = hub.server.metrics_port
        assert port is not None
        base = f"http://127.0.0.1:{port}"
        dom = await asyncio.to_thread(_dump_dom, f"{base}/", tmp_path / "profile")
        page = parse(200, "text/html", dom)
        assert page.row("agents", "w1")[1:3] == ["Worker One", "STREAMING"]
        assert page.row("tasks", done.task_id)[3] == "SUCCEEDED"
        detail_dom = await asyncio.to_thread(
            _dump_dom, base + task_path(done.task_id), tmp_path / "profile"
        )
        assert parse(200, "text/html", detail_dom).fields()["Attempt"] == "1 of 3"


def _request(url: str, method: str) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_only_get_and_head_are_served() -> None:
    async with status_hub() as hub:
        url = f"http://127.0.0.1:{hub.server.metrics_port}/"
        assert await asyncio.to_thread(_request, url, "HEAD") == (200, "")
        status, body = await asyncio.to_thread(_request, url, "POST")
        assert status == 405 and "GET" in body
