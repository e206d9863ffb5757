# The SDK guide's Quickstart agent ("Create Your Agent"), verbatim below `fmt: off`: it must
# pass `mypy --strict` as users write it. The guide's `async def main():` has no annotation,
# so only that is relaxed here; the agent code is checked strictly.
# mypy: allow-untyped-defs, allow-untyped-calls
# ruff: noqa: I001
# fmt: off
import asyncio
from aether_sdk import AetherAgent, AgentConfig, TaskAssignment, TaskResult


class MyAgent(AetherAgent):
    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        print(f"Processing task {task.task_id}: {task.description}")

        try:
            result_data = f"Processed: {task.description}".encode()
            return TaskResult(
                task_id=task.task_id,
                success=True,
                result=result_data,
                metrics={"processing_time": "0.5s"},
            )
        except Exception as e:
            return TaskResult(
                task_id=task.task_id,
                success=False,
                error_message=str(e),
            )


async def main():
    config = AgentConfig(
        agent_id="my-agent-001",
        agent_name="My Example Agent",
        version="1.0.0",
        hub_url="localhost:50051",
        capabilities={"task_types": "analysis,processing"},
    )
    agent = MyAgent(config)
    await agent.run()


if __name__ == "__main__":
    asyncio.run(main())
