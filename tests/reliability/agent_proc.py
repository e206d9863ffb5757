"""An agent process for signal tests: `python -m tests.reliability.agent_proc`.

Configured from AETHER_* variables. Its handler reports progress 0.1, then sleeps
`AGENT_TASK_SECONDS` (default 0.5) and succeeds; a task whose description is "forever"
never finishes.
"""

from __future__ import annotations

import asyncio
import logging
import os

from aether import AetherAgent, AgentConfig, TaskAssignment, TaskResult


class SleepyAgent(AetherAgent):
    """Sleeps, then succeeds."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        await self.report_progress(0.1, "started")
        if task.description == "forever":
            await asyncio.Event().wait()
        await asyncio.sleep(float(os.environ.get("AGENT_TASK_SECONDS", "0.5")))
        return TaskResult(task_id=task.task_id, success=True, result=b"finished")


def main() -> None:
    """Run the agent until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.DEBUG)
    asyncio.run(SleepyAgent(AgentConfig.from_env()).run())


if __name__ == "__main__":
    main()
