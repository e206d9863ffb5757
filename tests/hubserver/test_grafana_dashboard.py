"""deploy/grafana/aether-dashboard.json cannot drift from the metrics: every metric and label
its queries use exists in a real scrape of a real Hub and a real agent."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from aether import AetherAgent, AgentConfig, TaskAssignment, TaskResult, TaskState
from aether.health_http import HealthServer, agent_probe
from aether_hub.settings import HubConfig
from aether_hub.testing import TestHub
from tests.hubserver.test_metrics import _get, free_port

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "aether-dashboard.json"

#: Sample-name suffixes each metric type adds to its family name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}
#: Labels Prometheus itself adds at scrape time, and the histogram bucket label.
_SCRAPE_LABELS = {"instance", "job", "le"}

_METRIC = re.compile(r"\b(aether_[a-z0-9_]+)\b")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


class _Chatty(AetherAgent):
    """Uses the Hub's LLM (the echo provider), so token counters have samples; holds
    tasks described "hold" until `release` (so running gauges have samples)."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__(config)
        self.release = asyncio.Event()

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        await self.hub.llm.chat([{"role": "user", "content": task.description}])
        if task.description == "hold":
            await self.release.wait()
        return TaskResult(task_id=task.task_id, success=True)


def _names_and_labels(text: str) -> dict[str, set[str]]:
    """Every sample name a scrape exposes (even of a family without samples yet), with the
    labels seen on that family's samples."""
    exposed: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        labels = {label for s in family.samples for label in s.labels}
        for suffix in _SUFFIXES.get(family.type, ("",)):
            exposed[family.name + suffix] = labels
    return exposed


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append(str(target["expr"]))
    return exprs


async def _scrape_hub_and_agent() -> dict[str, set[str]]:
    config = HubConfig(host="127.0.0.1", port=0, dev=True, metrics_port=free_port())
    async with TestHub(config) as hub:
        agent = _Chatty(AgentConfig(agent_id="a1", agent_name="Chatty", hub_url=hub.url))
        health = HealthServer(
            agent_probe(agent), host="127.0.0.1", port=0, metrics=agent.metrics_registry
        )
        async with health, hub.running(agent):
            await hub.run_task("hello there")
            await hub.submit("waits", task_type="nobody-serves-this")
            held = await hub.submit("hold")
            for _ in range(500):  # until it is leased (at most 10 s)
                if (await hub.get_task(held)).state in (TaskState.LEASED, TaskState.RUNNING):
                    break
                await asyncio.sleep(0.02)
            exposed: dict[str, set[str]] = {}
            for port in (hub.server.metrics_port, health.port):
                url = f"http://127.0.0.1:{port}/metrics"
                status, _, text = await asyncio.to_thread(_get, url)
                assert status == 200, text
                exposed.update(_names_and_labels(text))
            agent.release.set()
            await hub.wait_for_task(held)
    return exposed


async def test_every_metric_the_dashboard_uses_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = _expressions(dashboard)
    assert exprs, "the dashboard has no queries"
    exposed = await _scrape_hub_and_agent()

    used: set[str] = set()
    for expr in exprs:
        names = set(_METRIC.findall(expr))
        assert names, f"no aether metric in {expr!r}"
        unknown = names - exposed.keys()
        assert not unknown, f"{expr!r} uses metrics nobody exports: {sorted(unknown)}"
        used |= names
        labels = {
            label.strip()
            for group in _BY.findall(expr)
            for label in group.split(",")
            if label.strip()
        }
        for matchers in _MATCHERS.findall(expr):
            labels |= set(_MATCHER_LABEL.findall(matchers))
        known = set().union(*(exposed[name] for name in names)) | _SCRAPE_LABELS
        assert labels <= known, f"{expr!r} uses unknown labels {sorted(labels - known)}"

    # The panels the dashboard promises (docs/observability.md#grafana).
    for name in (
        "aether_hub_tasks_submitted_total",
        "aether_hub_tasks_finished_total",
        "aether_hub_queue_depth",
        "aether_hub_task_dispatch_seconds_bucket",
        "aether_hub_agents_connected",
        "aether_hub_rpcs_total",
        "aether_hub_rpc_duration_seconds_bucket",
        "aether_hub_llm_tokens_total",
        "aether_agent_tasks_finished_total",
    ):
        assert name in used, f"the dashboard has no panel on {name}"
    joined = "\n".join(exprs)
    assert "histogram_quantile(0.5, sum by (le) (rate(aether_hub_task_dispatch" in joined
    assert "histogram_quantile(0.99, sum by (le) (rate(aether_hub_task_dispatch" in joined


def test_the_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), panel["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
