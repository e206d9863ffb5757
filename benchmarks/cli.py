"""Command line of the benchmarks: run them, print a table, write JSON.

    python -m benchmarks [--tasks N] [--latency-samples N] [--codec-iterations N]
                         [--codec-rounds N] [--agent-concurrency N] [--api-tasks N]
                         [--retention-tasks N] [--steady-tasks N] [--backlog-tasks N]
                         [--connected-agents N] [--agent-processes N] [--import-runs N]
                         [--e2e-mode subprocess|in-process] [--json PATH|-] [--strict]

Every row of the table names whose figure it is: "ours" (the SDK and the dev Hub) or
"baseline" (benchmarks/baseline.py: a bare grpclib broker, agents and client with the
same message classes and none of the Hub's logic; or, for the codec, Google's upb).
README.md ("Benchmarks: make bench") says what each row measures.

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

from benchmarks import api_e2e, codec, e2e, footprint, tracing

# docs/architecture.md#performance-budget.
CODEC_MAX_RATIO_TO_UPB = 4.0
# The in-process run (no client, no SubmitTask): reported, with no target of its own.
MAX_DISPATCH_P50_MS = 1.0
# Through the public API (separate processes), 1 agent, tiny tasks, submit_many.
MIN_API_TASKS_PER_S = 10_000.0
MIN_API_DB_TASKS_PER_S = 8_000.0
MAX_API_STORED_P50_MS = 2.0
MAX_API_STORED_P99_MS = 5.0
# With --db every acknowledgement waits for its commit; throughput stays within 20 %.
MIN_DB_TO_MEMORY_RATIO = 0.8
# Issue 12: growth that does not depend on history, and a quick start.
MAX_STEADY_GROWTH_KIB_PER_10K = 1024.0
MAX_BACKLOG_START_S = 1.0
MAX_IMPORT_MS = 200.0


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
        help="encode+decode operations per round (the generic codec does 1/20)",
    )
    parser.add_argument(
        "--codec-rounds",
        type=_positive_int,
        default=codec.ROUNDS,
        help="interleaved rounds of ours and upb (the ratio is their median)",
    )
    parser.add_argument(
        "--agent-concurrency", type=_positive_int, default=64, help="the agent's task slots"
    )
    parser.add_argument(
        "--api-tasks",
        type=_positive_int,
        default=10_000,
        help="tiny-payload tasks of each public-API run (64 KiB runs: a fifth)",
    )
    parser.add_argument(
        "--retention-tasks",
        type=_positive_int,
        default=100_000,
        help="finished tasks before the Hub's RSS is read (default retention: 100,000)",
    )
    parser.add_argument(
        "--steady-tasks",
        type=_positive_int,
        default=50_000,
        help="finished tasks after retention turned over once, for the steady-state growth",
    )
    parser.add_argument(
        "--backlog-tasks",
        type=_positive_int,
        default=100_000,
        help="pending tasks in the --db file of the start benchmark",
    )
    parser.add_argument(
        "--connected-agents", type=_positive_int, default=1000, help="agents for the RSS figure"
    )
    parser.add_argument(
        "--agent-processes", type=_positive_int, default=4, help="processes running them"
    )
    parser.add_argument(
        "--import-runs", type=_positive_int, default=5, help="fresh interpreters importing"
    )
    parser.add_argument(
        "--tracing-tasks",
        type=_positive_int,
        default=5000,
        help="tasks of each tracing run (ours, memory, 1 agent, submit_many)",
    )
    parser.add_argument(
        "--tracing-rounds",
        type=_positive_int,
        default=3,
        help="interleaved rounds of the three tracing modes (figures are medians)",
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
            f"codec: upb (baseline) / ours, {c.message_bytes} B TaskAssignment, median of"
            f" {len(c.round_ratios) or 1} interleaved rounds",
            f"≤ {CODEC_MAX_RATIO_TO_UPB:g}×",
            f"{c.ratio_to_upb:.1f}× (ours {c.ours_ops_per_s:,.0f}, upb {c.upb_ops_per_s:,.0f}"
            " ops/s)",
            c.ratio_to_upb <= CODEC_MAX_RATIO_TO_UPB,
        ),
        Check("codec: betterproto2 generic (reference)", "-", generic, None),
        Check(
            f"e2e (not the public API: tasks injected in the Hub): tasks/s, {r.tasks} tasks,"
            f" {r.mode}",
            "-",
            f"{r.tasks_per_s:,.0f}/s ({r.seconds:.2f} s)",
            None,
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
        lines.append(_memory("Hub+agent process", r.hub_rss_growth_kib_per_10k_tasks))
    else:
        lines += [
            _memory("Hub", r.hub_rss_growth_kib_per_10k_tasks),
            _memory("agent", r.agent_rss_growth_kib_per_10k_tasks),
        ]
    if r.retention_tasks:
        growth = r.hub_rss_steady_growth_kib_per_10k
        lines += [
            Check(
                f"memory: ours, Hub RSS after {r.retention_tasks:,} finished tasks"
                " (default retention)",
                "-",
                f"{r.hub_rss_at_retention_kib / 1024:,.1f} MiB",
                None,
            ),
            Check(
                f"memory: ours, Hub RSS growth per 10k finished while retention turns over"
                f" (next {r.retention_tasks:,})",
                "-",
                f"{r.hub_rss_turnover_growth_kib_per_10k:,.0f} KiB",
                None,
            ),
            Check(
                f"memory: ours, Hub RSS growth per 10k finished at steady state"
                f" (then {r.steady_tasks:,})",
                f"≤ {MAX_STEADY_GROWTH_KIB_PER_10K:,.0f} KiB",
                f"{growth:,.0f} KiB",
                growth <= MAX_STEADY_GROWTH_KIB_PER_10K,
            ),
        ]
    return lines


def api_checks(runs: Sequence[api_e2e.ApiRun]) -> list[Check]:
    """The public-API runs: tasks/s of ours and the baseline, the ratios, --db against
    memory, latency at low load."""

    def target(r: api_e2e.ApiRun) -> float | None:
        if r.system != api_e2e.OURS or not r.batched or r.agents != 1 or r.payload != "tiny":
            return None
        if r.jetstream:  # the issue sets no target for the JetStream store
            return None
        return MIN_API_TASKS_PER_S if r.store == "memory" else MIN_API_DB_TASKS_PER_S

    lines = []
    for r in runs:
        goal = target(r)
        if r.error:  # did not finish: no figures, and a FAIL even without a target
            what = f"api e2e tasks/s: {r.label}, {r.tasks:,} tasks"
            # The whole story is in the JSON (and was printed to stderr).
            lines.append(Check(what, "-", r.error.partition(";")[0], False))
            continue
        lines.append(
            Check(
                f"api e2e tasks/s: {r.label}, {r.tasks:,} tasks",
                "-" if goal is None else f"≥ {goal:,.0f}/s",
                f"{r.tasks_per_s:,.0f}/s",
                None if goal is None else r.tasks_per_s >= goal,
            )
        )
    by_key = {(r.system, r.store, r.agents, r.payload, r.batched): r for r in runs}
    for r in runs:
        if r.system != api_e2e.OURS or r.error:
            continue
        how = "submit_many" if r.batched else "submit per task"
        base = by_key.get((api_e2e.BASELINE, "-", r.agents, r.payload, False))
        if base is not None and base.tasks_per_s > 0:
            plural = "" if r.agents == 1 else "s"
            lines.append(
                Check(
                    f"api e2e tasks/s, ours ({how}) / baseline: {r.where},"
                    f" {r.agents} agent{plural}, {r.payload}",
                    "-",
                    f"{r.tasks_per_s / base.tasks_per_s:.2f}×",
                    None,
                )
            )
        if r.store != "memory" or not r.batched:
            continue
        db = by_key.get((api_e2e.OURS, "sqlite (--db)", r.agents, r.payload, True))
        if db is not None and r.tasks_per_s > 0:
            ratio = db.tasks_per_s / r.tasks_per_s
            plural = "" if r.agents == 1 else "s"
            lines.append(
                Check(
                    f"api e2e tasks/s, ours: --db / memory, {r.agents} agent{plural}, {r.payload}",
                    f">= {MIN_DB_TO_MEMORY_RATIO:.0%}",
                    f"{ratio:.0%}",
                    ratio >= MIN_DB_TO_MEMORY_RATIO,
                )
            )
    lines += _jetstream_ratios(runs)
    for r in runs:
        if r.latency_samples == 0:
            continue
        where = f"{r.where}, " if r.system == api_e2e.OURS else ""
        who = f"{r.system}, {where}{r.payload}, one task at a time (submit, wait)"
        lines.append(
            Check(
                f"api e2e latency p50/p99, submit -> assigned: {who}",
                "-",
                f"{_f(r.assigned_p50_ms)} / {_f(r.assigned_p99_ms)} ms",
                None,
            )
        )
        goal = r.system == api_e2e.OURS and r.store == "memory"
        met = (
            r.latency_p50_ms is not None
            and r.latency_p99_ms is not None
            and r.latency_p50_ms <= MAX_API_STORED_P50_MS
            and r.latency_p99_ms <= MAX_API_STORED_P99_MS
        )
        lines.append(
            Check(
                f"api e2e latency p50/p99, submit -> result stored: {who}",
                f"≤ {MAX_API_STORED_P50_MS:g} / {MAX_API_STORED_P99_MS:g} ms" if goal else "-",
                f"{_f(r.latency_p50_ms)} / {_f(r.latency_p99_ms)} ms",
                met if goal else None,
            )
        )
    base = next((r for r in runs if r.system == api_e2e.BASELINE and r.latency_samples), None)
    for r in runs:
        if r.system != api_e2e.OURS or not r.latency_samples or base is None:
            continue
        if r.latency_p50_ms and base.latency_p50_ms:
            lines.append(
                Check(
                    f"api e2e latency p50, submit -> result stored, ours / baseline: {r.where}",
                    "-",
                    f"{r.latency_p50_ms / base.latency_p50_ms:.2f}×",
                    None,
                )
            )
    return lines


def _jetstream_ratios(runs: Sequence[api_e2e.ApiRun]) -> list[Check]:
    """Each `--store jetstream` run against ours in memory and with `--db` in the same
    run (1 agent, tiny, submit_many): tasks/s, and latency p50 submit -> result stored."""
    ours = {
        r.store: r
        for r in runs
        if r.system == api_e2e.OURS and r.batched and r.agents == 1 and r.payload == "tiny"
        and not r.jetstream and not r.error
    }  # fmt: skip
    others = [ours[s] for s in ("memory", "sqlite (--db)") if s in ours]
    lines = []
    for r in runs:
        if not r.jetstream or r.error or not others:
            continue
        plural = "" if r.agents == 1 else "s"
        what = f"{r.where}, {r.agents} agent{plural}, {r.payload} / {{}}, 1 agent"
        if all(o.tasks_per_s > 0 for o in others):
            lines.append(
                Check(
                    f"api e2e tasks/s, ours: {what.format(' and '.join(o.store for o in others))}",
                    "-",
                    ", ".join(f"{r.tasks_per_s / o.tasks_per_s:.2f}× {o.store}" for o in others),
                    None,
                )
            )
        if r.latency_p50_ms and all(o.latency_p50_ms for o in others):
            lines.append(
                Check(
                    "api e2e latency p50, submit -> result stored, ours:"
                    f" {r.where} / {' and '.join(o.store for o in others)}",
                    "-",
                    ", ".join(
                        f"{r.latency_p50_ms / (o.latency_p50_ms or 1):.2f}× {o.store}"
                        for o in others
                    ),
                    None,
                )
            )
    return lines


def tracing_checks(t: tracing.TracingResult) -> list[Check]:
    """Tasks/s with OpenTelemetry never imported (the default), with the API and no SDK,
    and with every span recorded; each against the first, in the same run."""
    what = f"ours, memory, 1 agent, tiny, {t.tasks:,} tasks, median of {t.rounds} rounds"
    described = {
        "off": "OpenTelemetry not imported (default)",
        "noop": "API imported, no SDK",
        "sdk": "SDK, in-memory exporter",
    }
    lines = [
        Check(f"tracing: tasks/s, {described[m]}: {what}", "-", f"{v:,.0f}/s", None)
        for m, v in t.tasks_per_s.items()
    ]
    lines += [
        Check(f"tracing: tasks/s, {described[m]} / not imported", "-", f"{t.ratio(m):.0%}", None)
        for m in ("noop", "sdk")
    ]
    return lines


def footprint_checks(f: footprint.Footprint) -> list[Check]:
    """Start with a backlog, memory with many agents, import time."""
    return [
        Check(
            f"start: ours, Hub with {f.backlog_tasks:,} pending tasks in --db, spawn -> listening",
            f"≤ {MAX_BACKLOG_START_S:g} s",
            f"{f.start_with_backlog_s:.2f} s (empty --db: {f.start_empty_s:.2f} s)",
            f.start_with_backlog_s <= MAX_BACKLOG_START_S,
        ),
        Check(
            f"memory: ours, Hub RSS after start with {f.backlog_tasks:,} pending",
            "-",
            f"{f.hub_rss_with_backlog_kib / 1024:,.1f} MiB (empty --db:"
            f" {f.hub_rss_empty_kib / 1024:,.1f} MiB)",
            None,
        ),
        Check(
            f"memory: ours, Hub RSS with {f.agents:,} connected agents"
            f" ({f.agent_processes} processes)",
            "-",
            f"{f.hub_rss_with_agents_kib / 1024:,.1f} MiB (none:"
            f" {f.hub_rss_before_agents_kib / 1024:,.1f} MiB; {f.hub_kib_per_agent:,.1f}"
            " KiB/agent)",
            None,
        ),
        Check(
            f"import aether_sdk, fresh interpreter, median of {f.import_runs}",
            f"≤ {MAX_IMPORT_MS:g} ms",
            f"{f.import_aether_sdk_ms:.1f} ms",
            f.import_aether_sdk_ms <= MAX_IMPORT_MS,
        ),
    ]


def _f(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.2f}"


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
    foot: footprint.Footprint | None = None,
    traced: tracing.TracingResult | None = None,
) -> str:
    """Every figure, the mode notes and the verdicts, as one JSON document."""
    codec_part = {**dataclasses.asdict(c), "ratio_to_upb": c.ratio_to_upb}
    codec_part["round_ratios"] = list(c.round_ratios)
    codec_part["target_max_ratio_to_upb"] = CODEC_MAX_RATIO_TO_UPB
    memory_keys = [f.name for f in dataclasses.fields(r) if "rss" in f.name]
    e2e_part = {k: v for k, v in dataclasses.asdict(r).items() if k not in memory_keys}
    e2e_part["target_max_dispatch_p50_ms"] = MAX_DISPATCH_P50_MS
    memory = {k: getattr(r, k) for k in memory_keys}
    memory["tasks"] = r.tasks
    memory["method"] = "RSS from /proc/self/statm after gc.collect(), before and after the run"
    memory["hub_rss_steady_growth_kib_per_10k"] = r.hub_rss_steady_growth_kib_per_10k
    memory["hub_rss_turnover_growth_kib_per_10k"] = r.hub_rss_turnover_growth_kib_per_10k
    memory["target_max_steady_growth_kib_per_10k"] = MAX_STEADY_GROWTH_KIB_PER_10K
    doc = {
        "codec": codec_part,
        "e2e": e2e_part,
        "memory": memory,
        "api_e2e": [
            {**dataclasses.asdict(x), "label": x.label, "tasks_per_s": x.tasks_per_s} for x in runs
        ],
        "footprint": None
        if foot is None
        else {
            **dataclasses.asdict(foot),
            "hub_kib_per_agent": foot.hub_kib_per_agent,
            "target_max_start_with_backlog_s": MAX_BACKLOG_START_S,
            "target_max_import_ms": MAX_IMPORT_MS,
        },
        "tracing": None if traced is None else dataclasses.asdict(traced),
        "checks": [{**dataclasses.asdict(x), "verdict": x.verdict} for x in lines],
        "all_targets_met": all(x.passed is not False for x in lines),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every benchmark; 0 unless `--strict` and a target was missed."""
    args = build_parser().parse_args(argv)
    table_out: TextIO = sys.stderr if args.json == "-" else sys.stdout
    print("codec ...", file=sys.stderr, flush=True)
    c = codec.measure(args.codec_iterations, args.codec_rounds)
    print(f"end to end ({args.e2e_mode}) ...", file=sys.stderr, flush=True)
    r = e2e.measure(
        args.e2e_mode,
        args.tasks,
        args.latency_samples,
        args.agent_concurrency,
        args.retention_tasks,
        args.steady_tasks,
    )
    print(
        "end to end through the public API (Hub, agents, client: 3 processes) ...",
        file=sys.stderr,
        flush=True,
    )
    runs = api_e2e.measure(args.api_tasks, args.latency_samples)
    print("footprint: start with a backlog, many agents, import ...", file=sys.stderr, flush=True)
    foot = footprint.measure(
        import_runs=args.import_runs,
        backlog=args.backlog_tasks,
        agents=args.connected_agents,
        agent_processes=args.agent_processes,
    )
    print("tracing off / no-op / recorded ...", file=sys.stderr, flush=True)
    traced = tracing.measure(args.tracing_tasks, args.tracing_rounds)
    lines = checks(c, r) + api_checks(runs) + footprint_checks(foot) + tracing_checks(traced)
    print(format_table(lines), file=table_out)
    print(f"e2e mode: {r.mode_description}; tasks {r.submission}.", file=table_out)
    print(
        "api e2e: ours = each task submitted by TaskClient (SubmitTask RPC) in a client"
        " process, run by AetherAgents in an agent process, through a Hub process; baseline ="
        " the same shape with a bare grpclib broker, agents and client (benchmarks/baseline.py);"
        " throughput until every task is final, latency one task at a time.",
        file=table_out,
    )
    document = results_json(c, r, lines, runs, foot, traced)
    if args.json == "-":
        print(document)
    elif args.json:
        Path(args.json).write_text(document + "\n", encoding="utf-8")
    missed = any(x.passed is False for x in lines)
    return 1 if args.strict and missed else 0
