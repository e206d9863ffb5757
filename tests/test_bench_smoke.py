"""`python -m benchmarks` runs end to end with tiny sizes and writes complete JSON.

No timing assertions: only that every figure is there and is a positive number (memory
growth may be zero or negative, so it is only required to be a finite number).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

POSITIVE = {
    "codec": [
        "message_bytes",
        "iterations",
        "ours_ops_per_s",
        "upb_ops_per_s",
        "betterproto2_ops_per_s",
        "betterproto2_iterations",
        "ratio_to_upb",
    ],
    "e2e": [
        "tasks",
        "agent_concurrency",
        "seconds",
        "tasks_per_s",
        "latency_samples",
        "dispatch_p50_ms",
        "dispatch_p99_ms",
    ],
    "memory": [
        "hub_rss_before_kib",
        "hub_rss_after_kib",
        "agent_rss_before_kib",
        "agent_rss_after_kib",
        "hub_rss_at_retention_kib",
        "hub_rss_after_turnover_kib",
        "hub_rss_after_steady_kib",
    ],
    "footprint": [
        "import_aether_sdk_ms",
        "start_with_backlog_s",
        "start_empty_s",
        "hub_rss_with_backlog_kib",
        "hub_rss_empty_kib",
        "hub_rss_before_agents_kib",
        "hub_rss_with_agents_kib",
    ],
}
FINITE = {
    "memory": [
        "hub_rss_growth_kib_per_10k_tasks",
        "agent_rss_growth_kib_per_10k_tasks",
        "hub_rss_steady_growth_kib_per_10k",
        "hub_rss_turnover_growth_kib_per_10k",
    ],
    "footprint": ["hub_kib_per_agent"],
}


def _number(doc: dict[str, dict[str, object]], section: str, key: str) -> float:
    value = doc[section][key]
    assert isinstance(value, (int, float)) and not isinstance(value, bool), (section, key, value)
    assert math.isfinite(value), (section, key, value)
    return float(value)


def test_benchmark_entry_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--tasks",
            "200",
            "--latency-samples",
            "20",
            "--codec-iterations",
            "200",
            "--api-tasks",
            "100",
            "--codec-rounds",
            "3",
            "--retention-tasks",
            "400",
            "--steady-tasks",
            "200",
            "--backlog-tasks",
            "100",
            "--connected-agents",
            "4",
            "--agent-processes",
            "2",
            "--import-runs",
            "1",
            "--tracing-tasks",
            "50",
            "--tracing-rounds",
            "1",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    for section, keys in POSITIVE.items():
        for key in keys:
            assert _number(doc, section, key) > 0, (section, key)
    for section, keys in FINITE.items():
        for key in keys:
            _number(doc, section, key)
    assert doc["codec"]["upb_implementation"] == "upb"
    assert doc["e2e"]["tasks"] == 200 and doc["e2e"]["latency_samples"] == 20
    assert doc["e2e"]["mode"] == "subprocess"
    verdicts = {c["verdict"] for c in doc["checks"]}
    assert verdicts <= {"PASS", "FAIL", "info"}
    assert len(doc["codec"]["round_ratios"]) == 3
    # The public-API runs: ours in memory and with --db (submit_many), and the bare grpclib
    # baseline, 1 and 4 agents, tiny and 64 KiB payloads, each through three processes; and
    # ours with one submit per task (memory, 1 agent, tiny).
    per_task = [run for run in doc["api_e2e"] if run["system"] == "ours" and not run["batched"]]
    assert [(r["store"], r["agents"], r["payload"]) for r in per_task] == [("memory", 1, "tiny")]
    assert per_task[0]["tasks_per_s"] > 0
    runs = {
        (run["system"], run["store"], run["agents"], run["payload"]): run
        for run in doc["api_e2e"]
        if (run["system"] != "ours" or run["batched"]) and not run["store"].startswith("jetstream")
    }
    assert len(runs) == 12
    assert {key[0] for key in runs} == {"ours", "baseline (bare grpclib)"}
    assert {key[1] for key in runs} == {"memory", "sqlite (--db)", "-"}
    for (_, _, agents, payload), run in runs.items():
        assert run["tasks"] == (100 if payload == "tiny" else 20) and run["tasks_per_s"] > 0
        if payload == "tiny" and agents == 1:  # latency: one task at a time
            assert 0 < run["latency_p50_ms"] <= run["latency_p99_ms"]
            assert 0 < run["assigned_p50_ms"] <= run["assigned_p99_ms"]
        else:
            assert run["latency_samples"] == 0
    # Ours with --store jetstream (tiny, submit_many, half the tasks and latency samples):
    # one NATS node (R1) and one Hub, a 3-node cluster (R3) with one Hub and with two.
    jetstream = [run for run in doc["api_e2e"] if run["store"].startswith("jetstream")]
    shapes = [(r["store"], r["hubs"], r["agents"]) for r in jetstream]
    assert shapes == [("jetstream R1", 1, 1), ("jetstream R3", 1, 1), ("jetstream R3", 2, 2)]
    for run in jetstream:
        assert run["error"] == "", run["label"]
        assert run["batched"] and run["payload"] == "tiny" and run["tasks"] == 50
        assert run["tasks_per_s"] > 0 and run["latency_samples"] == 10
        assert 0 < run["latency_p50_ms"] <= run["latency_p99_ms"]
    names = " ".join(c["name"] for c in doc["checks"])
    assert "jetstream R3, 2 hubs / memory and sqlite (--db)" in names
    for needle in ("ours / baseline", "--db / memory", "submit -> assigned", "steady state"):
        assert needle in names, needle
    assert "import aether_sdk" in names and "pending tasks in --db" in names
    # Tracing: every mode measured, in the same run.
    assert set(doc["tracing"]["tasks_per_s"]) == {"off", "noop", "sdk"}
    assert all(v > 0 for v in doc["tracing"]["tasks_per_s"].values())
    assert "SDK, in-memory exporter / not imported" in names
    # The table printed to stdout names every check with its verdict.
    for check in doc["checks"]:
        assert check["name"] in done.stdout and check["verdict"] in done.stdout
