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
    ],
}
FINITE = {"memory": ["hub_rss_growth_kib_per_10k_tasks", "agent_rss_growth_kib_per_10k_tasks"]}


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
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
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
    assert verdicts <= {"PASS", "FAIL", "info"} and len(doc["checks"]) == 7 + 5
    # The public-API runs: in memory and with --db, each through three processes.
    runs = {run["store"]: run for run in doc["api_e2e"]}
    assert set(runs) == {"memory", "sqlite (--db)"}
    for run in runs.values():
        assert run["tasks"] == 100 and run["tasks_per_s"] > 0
        assert 0 < run["latency_p50_ms"] <= run["latency_p99_ms"]
    # The table printed to stdout names every check with its verdict.
    for check in doc["checks"]:
        assert check["name"] in done.stdout and check["verdict"] in done.stdout
