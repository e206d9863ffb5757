"""Agents for the public-API benchmark, in a process of their own.

    python -m benchmarks.api_agent --hub-url URL [--agents N] [--concurrency C] [--id-prefix P]

Starts N agents that answer every task at once, prints `ready` when all are connected, and
runs until its standard input closes (then stops them: drain, unregister, disconnect).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from aether import AetherAgent, AgentConfig, TaskAssignment, TaskResult

TASK_TYPE = "bench"


class EchoAgent(AetherAgent):
    """Answers every task at once with a tiny result (and when it started, in metrics)."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        # When the handler started, for the submit -> assigned latency (CLOCK_MONOTONIC:
        # the client in another process reads the same clock).
        arrived = repr(time.perf_counter())
        return TaskResult(
            task_id=task.task_id, success=True, result=b"ok", metrics={"arrived": arrived}
        )


async def serve(hub_url: str, agents: int, concurrency: int, prefix: str = "bench-") -> None:
    """Run the agents until stdin closes."""
    running = [
        EchoAgent(
            AgentConfig(
                agent_id=f"{prefix}{i}",
                agent_name=f"bench {i}",
                hub_url=hub_url,
                capabilities={"task_types": TASK_TYPE},
                max_concurrent_tasks=concurrency,
                shutdown_grace_seconds=5,
            )
        )
        for i in range(agents)
    ]
    for agent in running:
        await agent.start()
    print("ready", flush=True)
    try:
        await asyncio.to_thread(sys.stdin.read)
    finally:
        for agent in running:
            await agent.stop()


def main() -> None:
    """Parse the flags and serve."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api_agent")
    parser.add_argument("--hub-url", required=True)
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--id-prefix", default="bench-", help="agent ids: PREFIX0, PREFIX1, ...")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.hub_url, args.agents, args.concurrency, args.id_prefix))


if __name__ == "__main__":
    main()
