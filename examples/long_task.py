"""An agent for long tasks: it reports progress as it goes and cleans up when cancelled.

Run against `aether hub --dev`:

    HUB_URL=localhost:50051 python examples/long_task.py

A task's payload is JSON `{"steps": 5, "step_seconds": 0.2}` (both optional). Follow its
progress with the Hub's `WatchTask`; cancelling the task cancels the handler.
"""

from __future__ import annotations

import asyncio
import json
import os

from aether_sdk import AetherAgent, AgentConfig, TaskAssignment, TaskResult


class LongTaskAgent(AetherAgent):
    """Works through a task in steps, reporting progress after each."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        try:
            options = json.loads(task.payload or b"{}")
            steps = int(options.get("steps", 5))
            step_seconds = float(options.get("step_seconds", 0.2))
        except (ValueError, TypeError, AttributeError) as exc:
            return TaskResult(
                task_id=task.task_id, success=False, error_message=f"bad payload: {exc}"
            )
        if not 1 <= steps <= 1000:
            return TaskResult(
                task_id=task.task_id, success=False, error_message="steps must be 1..1000"
            )

        await self.report_progress(0.0, f"starting {steps} steps")
        done = 0
        try:
            for done in range(1, steps + 1):
                await asyncio.sleep(step_seconds)  # the real work would go here
                await self.report_progress(done / steps, f"step {done}/{steps}")
        except asyncio.CancelledError:
            # Cancellation (by a client, a timeout or shutdown) arrives here. Clean up, then
            # let it propagate: the SDK reports the task as cancelled or hands it back.
            print(f"task {task.task_id} cancelled after {done} of {steps} steps")
            raise
        return TaskResult(
            task_id=task.task_id,
            success=True,
            result=json.dumps({"steps_done": done}).encode(),
            metrics={"steps": str(steps)},
        )


async def main() -> None:
    config = AgentConfig(
        agent_id="long_task_worker",
        agent_name="Long Task Worker",
        hub_url=os.getenv("HUB_URL", "localhost:50051"),
        capabilities={"task_types": "long_job"},
        metadata={"secret": os.getenv("AGENT_SECRET", "")},  # as in the guide
    )
    await LongTaskAgent(config).run()


if __name__ == "__main__":
    asyncio.run(main())
