"""`make demo`: an embedded dev Hub, the guide's Quickstart and code reviewer agents, a few
tasks, their results and token usage, then a clean shutdown.

Runs offline: the Hub's LLM provider is `echo` (deterministic answers, real token counts).
Run it with `make demo` or `python examples/demo.py`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# `python examples/demo.py` puts examples/ first on sys.path; the repository root is
# needed for `examples.*` (an editable install adds it too).
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from aether import AetherAgent, AgentConfig, TaskState
from aether_hub.testing import TestHub
from examples.code_reviewer import CodeReviewerAgent
from examples.quickstart import MyAgent


@dataclass(frozen=True)
class DemoTask:
    """A task the demo submits, and how it is routed."""

    label: str
    description: str
    payload: bytes = b""
    task_type: str = ""
    target_agent_id: str = ""


TASKS = (
    DemoTask("analysis", "Summarize last quarter's sign-ups", task_type="analysis"),
    DemoTask("processing", "Normalize the customer CSV", task_type="processing"),
    DemoTask(
        "code review",
        "Review a small diff",
        payload=b"--- a/app.py\n+++ b/app.py\n-    return x+1\n+    return x + 1\n",
        target_agent_id="dev_py_reviewer",
    ),
    DemoTask(
        "code review",
        "Review another diff",
        payload=b"+def add(a, b):\n+    return a + b\n",
        target_agent_id="dev_py_reviewer",
    ),
)


def _short(data: bytes, limit: int = 70) -> str:
    text = " ".join(data.decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def main() -> int:
    """Run the demo; returns the process exit code (0 when every task succeeded)."""
    began = time.perf_counter()
    print("Aether demo: an embedded dev Hub, the guide's Quickstart and code reviewer agents\n")
    async with TestHub() as hub:
        print(f"Hub      listening on {hub.url} (dev mode, LLM provider: echo, offline)")
        # The guide's two agents with the guide's own configuration; only hub_url differs,
        # because the embedded Hub listens on a free port.
        quickstart = MyAgent(
            AgentConfig(
                agent_id="my-agent-001",
                agent_name="My Example Agent",
                version="1.0.0",
                hub_url=hub.url,
                capabilities={"task_types": "analysis,processing"},
            )
        )
        reviewer = CodeReviewerAgent(
            AgentConfig(
                agent_id="dev_py_reviewer",
                agent_name="Python Code Reviewer",
                version="1.0.0",
                hub_url=hub.url,
                capabilities={"code_review": "true", "python": "true"},
            )
        )
        agents: tuple[AetherAgent, ...] = (quickstart, reviewer)
        async with hub.running(*agents):
            for agent in agents:
                caps = ", ".join(f"{k}={v}" for k, v in agent.config.capabilities.items())
                print(f"Agent    {agent.config.agent_id:<16} registered ({caps})")
            print(f"\nSubmitting {len(TASKS)} tasks (by task type, or to a target agent)...")
            ids = [
                await hub.submit(
                    t.description,
                    payload=t.payload,
                    task_type=t.task_type,
                    target_agent_id=t.target_agent_id,
                )
                for t in TASKS
            ]
            results = await asyncio.gather(*(hub.wait_for_task(task_id) for task_id in ids))
            print()
            failed = 0
            for n, (spec, task) in enumerate(zip(TASKS, results, strict=True), start=1):
                ok = task.state is TaskState.SUCCEEDED
                failed += not ok
                print(f"[{n}] {spec.label:<11} -> {task.assigned_agent_id:<16} {task.state.name}")
                print(f"    result:  {_short(task.result) if ok else task.error_message}")
                if task.metrics:
                    metrics = ", ".join(f"{k}={v}" for k, v in sorted(task.metrics.items()))
                    print(f"    metrics: {metrics}")
            calls = hub.llm_calls
            print(
                f"\nToken usage (Hub LLM provider): {len(calls)} chat call(s), "
                f"{sum(c.prompt_tokens for c in calls)} prompt + "
                f"{sum(c.completion_tokens for c in calls)} completion = "
                f"{sum(c.total_tokens for c in calls)} tokens"
            )
            subjects = sorted({m.subject for m in hub.messages})
            counts = ", ".join(
                f"{s} x{sum(m.subject == s for m in hub.messages)}" for s in subjects
            )
            print(f"Messages published on the Hub: {counts or 'none'}")
            print("\nShutting down: agents drain, unregister and disconnect; then the Hub stops.")
    print(f"Done in {time.perf_counter() - began:.2f} s. {len(TASKS) - failed}/{len(TASKS)} ok.")
    return 1 if failed else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(asyncio.run(main()))
