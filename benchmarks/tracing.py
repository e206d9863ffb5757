"""The cost of tracing, end to end through the public API (issue: observability).

Each round runs ours (in memory, 1 agent, tiny tasks; Hub, agents and client each in its
own process) once per OpenTelemetry mode of `benchmarks.otel_mode` — `off` (never imported:
the default), `noop` (API imported, no SDK) and `sdk` (every span recorded into an in-memory
exporter) — with the client, the Hub and the agents all in that mode. Modes are
interleaved round by round so machine noise hits them alike; the figure per mode is the
median of its rounds, and the ratios compare each with `off` in the same run.

    python -m benchmarks.tracing --client MODE --tasks N   (one measurement; prints tasks/s)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
from dataclasses import dataclass

from benchmarks.otel_mode import MODES, install


@dataclass(frozen=True)
class TracingResult:
    """Tasks/s per mode (median of `rounds`), and every round's figure."""

    tasks: int
    rounds: int
    tasks_per_s: dict[str, float]
    round_figures: dict[str, list[float]]

    def ratio(self, mode: str) -> float:
        """`mode`'s tasks/s over `off`'s."""
        off = self.tasks_per_s["off"]
        return self.tasks_per_s[mode] / off if off > 0 else 0.0


def _one(mode: str, tasks: int) -> float:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.tracing", "--client", mode, "--tasks", str(tasks)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tracing benchmark ({mode}) failed: {done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def measure(tasks: int, rounds: int) -> TracingResult:
    """Interleaved rounds of every mode; medians."""
    figures: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            figures[mode].append(_one(mode, tasks))
    return TracingResult(
        tasks=tasks,
        rounds=rounds,
        tasks_per_s={mode: statistics.median(values) for mode, values in figures.items()},
        round_figures=figures,
    )


def _client(mode: str, tasks: int) -> float:
    # The client's own process is set up first, then the Hub and agents in the same mode.
    install(mode)
    from benchmarks.api_e2e import run_one

    wrap = [sys.executable, "-m", "benchmarks.otel_mode", mode]
    run = asyncio.run(run_one(db=False, agents=1, tasks=tasks, latency_samples=0, python=wrap))
    return run.tasks_per_s


def main() -> None:
    """One measurement in this process (the client) and its Hub and agent processes."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing")
    parser.add_argument("--client", choices=MODES, required=True)
    parser.add_argument("--tasks", type=int, default=5000)
    args = parser.parse_args()
    print(f"{_client(args.client, args.tasks):.1f}")


if __name__ == "__main__":
    main()
