# The SDK guide's "Example: Custom Data Processor", verbatim below the `fmt: off` line: it must
# pass `mypy --strict` as users write it. The guide's `async def main():` has no annotation,
# so only that is relaxed here; the agent code is checked strictly.
# mypy: allow-untyped-defs, allow-untyped-calls
# ruff: noqa: I001
# fmt: off
import asyncio
import json
import os
from aether_sdk import AetherAgent, AgentConfig, TaskAssignment, TaskResult


class DataProcessorAgent(AetherAgent):
    """Processes and classifies structured data."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        try:
            data = json.loads(task.payload.decode())
        except (json.JSONDecodeError, AttributeError):
            data = {"raw": task.description}

        response = await self.hub.llm.chat(
            messages=[
                {"role": "system", "content": "Classify and summarize this data as JSON."},
                {"role": "user", "content": json.dumps(data)},
            ],
            temperature=0.0,
        )

        # Persist the analysis
        await self.hub.memory.store(
            key=f"analysis-{task.task_id}",
            value={"result": response.content},
            scope="task",
            ttl=3600,
        )

        return TaskResult(
            task_id=task.task_id,
            success=True,
            result=response.content.encode(),
        )


async def main():
    config = AgentConfig(
        agent_id="data_processor",
        agent_name="Data Processor",
        hub_url=os.getenv("HUB_URL", "localhost:50051"),
    )
    agent = DataProcessorAgent(config)
    await agent.run()


if __name__ == "__main__":
    asyncio.run(main())
