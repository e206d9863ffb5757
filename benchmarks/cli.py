"""Command line of the benchmarks: run them, print a table, write JSON.

    python -m benchmarks [--tasks N] [--latency-samples N] [--codec-iterations N]
                         [--agent-concurrency N] [--e2e-mode subprocess|in-process]
                         [--json PATH|-] [--strict]

Exit status 0 even when a target is missed (the benchmarks report, they do not gate),
unless `--strict`: then 1 when any target is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from benchmarks import api_e2e, codec, e2e

# docs/architecture.md#performance-budget.
CODEC_MAX_RATIO_TO_UPB = 10.0
MIN_TASKS_PER_S = 10_000.0
MAX_DISPATCH_P50_MS = 1.0
# With --db every acknowledgement waits for its commit; throughput stays within 20 %.
MIN_DB_TO_MEMORY_RATIO = 0.8


@dataclass(frozen=True)
class Check:
    """One line of the table: a figure, its target (if any) and whether it was met."""

    name: str
    target: str
    measured: str
    passed: bool | None  # None: reported only, no target

    @property
    def verdict(self) -> str:
        """PASS, FAIL or "info"."""
        return "info" if self.passed is None else ("PASS" if self.passed else "FAIL")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m benchmarks`."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure the codec, end-to-end throughput, dispatch latency and memory"
        " against the performance budget (docs/architecture.md#performance-budget).",
    )
    parser.add_argument("--tasks", type=_positive_int, default=20_000, help="end-to-end tasks")
    parser.add_argument(
        "--latency-samples", type=_positive_int, default=1000, help="dispatch latency samples"
    )
    parser.add_argument(
        "--codec-iterations",
        type=_positive_int,
        default=20_000,
        help="encode+decode operations per round (best of 3; the generic codec does 1/20)",
    )
    parser.add_argument(
        "--agent-concurrency", type=_positive_int, default=64, help="the agent's task slots"
    )
    parser.add_argument(
        "--api-tasks",
        type=_positive_int,
        default=10_000,
        help="tasks of each public-API run (memory and --db)",
    )
    parser.add_argument("--e2e-mode", choices=sorted(e2e.MODES), default="subprocess")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON (- = stdout)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser


def checks(c: codec.CodecResult, r: e2e.E2EResult) -> list[Check]:
    """The table's lines."""
    generic = (
        f"{c.betterproto2_ops_per_s:,.0f} ops/s ({c.upb_ops_per_s / c.betterproto2_ops_per_s:.0f}×"
        " slower than upb)"
        if c.betterproto2_ops_per_s
        else f"skipped: {c.betterproto2_skipped_reason}"
    )
    lines = [
        Check(
            f"codec: ours vs upb, {c.message_bytes} B TaskAssignment",
            f"≤ {CODEC_MAX_RATIO_TO_UPB:g}× upb",
            f"{c.ratio_to_upb:.1f}× ({c.ours_ops_per_s:,.0f} vs {c.upb_ops_per_s:,.0f} ops/s)",
            c.ratio_to_upb <= CODEC_MAX_RATIO_TO_UPB,
        ),
        Check("codec: betterproto2 generic", "-", generic, None),
        Check(
            f"e2e: tasks/s, {r.tasks} tasks, {r.mode}",
            f"≥ {MIN_TASKS_PER_S:,.0f}/s",
            f"{r.tasks_per_s:,.0f}/s ({r.seconds:.2f} s)",
            r.tasks_per_s >= MIN_TASKS_PER_S,
        ),
        Check(
            f"e2e: dispatch p50, {r.latency_samples} samples",
            f"≤ {MAX_DISPATCH_P50_MS:g} ms",
            f"{r.dispatch_p50_ms:.3f} ms",
            r.dispatch_p50_ms <= MAX_DISPATCH_P50_MS,
        ),
        Check("e2e: dispatch p99", "-", f"{r.dispatch_p99_ms:.3f} ms", None),
    ]
    if r.mode == "in-process":  # one process: one figure
        return [*lines, _memory("Hub+agent process", r.hub_rss_growth_kib_per_10k_tasks)]
    return [
        *lines,
        _memory("Hub", r.hub_rss_growth_kib_per_10k_tasks),
        _memory("agent", r.agent_rss_growth_kib_per_10k_tasks),
    ]


def api_checks(runs: Sequence[api_e2e.ApiRun]) -> list[Check]:
    """The public-API runs: tasks/s per store, --db against memory, latency at low load."""
    lines = [
        Check(
            f"api e2e: tasks/s, {r.store}, {r.agents} agent, {r.tasks} tasks",
            "-",
            f"{r.tasks_per_s:,.0f}/s",
            None,
        )
        for r in runs
    ]
    by_store = {r.store: r for r in runs}
    memory, db = by_store.get("memory"), by_store.get("sqlite (--db)")
    if memory is not None and db is not None and memory.tasks_per_s > 0:
        ratio = db.tasks_per_s / memory.tasks_per_s
        lines.append(
            Check(
                "api e2e: --db / memory tasks/s",
                f">= {MIN_DB_TO_MEMORY_RATIO:.0%}",
                f"{ratio:.0%}",
                ratio >= MIN_DB_TO_MEMORY_RATIO,
            )
        )
    for r in runs:
        lines.append(
            Check(
                f"api e2e: submit -> result stored, {r.store}, p50/p99",
                "-",
                f"{r.latency_p50_ms:.2f} / {r.latency_p99_ms:.2f} ms",
                None,
            )
        )
    return lines


def _memory(what: str, kib: float) -> Check:
    return Check(f"memory: {what} RSS growth per 10k tasks", "-", f"{kib:,.0f} KiB", None)


def format_table(lines: Sequence[Check]) -> str:
    """A compact fixed-width table."""
    rows = [("benchmark", "target", "measured", "result")]
    rows += [(c.name, c.target, c.measured, c.verdict) for c in lines]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows
    )


def results_json(
    c: codec.CodecResult,
    r: e2e.E2EResult,
    lines: Sequence[Check],
    runs: Sequence[api_e2e.ApiRun] = (),
) -> str:
    """Every figure, the mode notes and the verdicts, as one JSON document."""
    codec_part = {**dataclasses.asdict(c), "ratio_to_upb": c.ratio_to_upb}
    codec_part["target_max_ratio_to_upb"] = CODEC_MAX_RATIO_TO_UPB
    memory_keys = [f.name for f in dataclasses.fields(r) if "rss" in f.name]
    e2e_part = {k: v for k, v in dataclasses.asdict(r).items() if k not in memory_keys}
    e2e_part["target_min_tasks_per_s"] = MIN_TASKS_PER_S
    e2e_part["target_max_dispatch_p50_ms"] = MAX_DISPATCH_P50_MS
    memory = {k: getattr(r, k) for k in memory_keys}
    memory["tasks"] = r.tasks
    memory["method"] = "RSS from /proc/self/statm after gc.collect(), before and after the run"
    doc = {
        "codec": codec_part,
        "e2e": e2e_part,
        "memory": memory,
        "api_e2e": [{**dataclasses.asdict(x), "tasks_per_s": x.tasks_per_s} for x in runs],
        "checks": [{**dataclasses.asdict(x), "verdict": x.verdict} for x in lines],
        "all_targets_met": all(x.passed is not False for x in lines),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every benchmark; 0 unless `--strict` and a target was missed."""
    args = build_parser().parse_args(argv)
    table_out: TextIO = sys.stderr if args.json == "-" else sys.stdout
    print("codec ...", file=sys.stderr, flush=True)
    c = codec.measure(args.codec_iterations)
    print(f"end to end ({args.e2e_mode}) ...", file=sys.stderr, flush=True)
    r = e2e.measure(args.e2e_mode, args.tasks, args.latency_samples, args.agent_concurrency)
    print(
        "end to end through the public API (Hub, agents, client: 3 processes) ...",
        file=sys.stderr,
        flush=True,
    )
    runs = api_e2e.measure(args.api_tasks, args.latency_samples)
    lines = checks(c, r) + api_checks(runs)
    print(format_table(lines), file=table_out)
    print(f"e2e mode: {r.mode_description}; tasks {r.submission}.", file=table_out)
    print(
        "api e2e: each task submitted by TaskClient (SubmitTask RPC) in a client process, run"
        " by an AetherAgent process, through a Hub process; throughput until every task is"
        " final, latency one task at a time.",
        file=table_out,
    )
    document = results_json(c, r, lines, runs)
    if args.json == "-":
        print(document)
    elif args.json:
        Path(args.json).write_text(document + "\n", encoding="utf-8")
    missed = any(x.passed is False for x in lines)
    return 1 if args.strict and missed else 0
