# The SDK guide's "Example: Code Reviewer Agent", verbatim below the `fmt: off` line: it must
# pass `mypy --strict` as users write it. The guide's `async def main():` has no annotation,
# so only that is relaxed here; the agent code is checked strictly.
# mypy: allow-untyped-defs, allow-untyped-calls
# ruff: noqa: I001
# fmt: off
import asyncio
import os
from aether_sdk import AetherAgent, AgentConfig, TaskAssignment, TaskResult


class CodeReviewerAgent(AetherAgent):
    """Reviews code diffs using an LLM."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        diff = task.payload.decode() if task.payload else task.description

        response = await self.hub.llm.chat(
            messages=[
                {
                    "role": "system",
                    "content": (
                        "You are an expert code reviewer. "
                        "Provide concise, constructive feedback."
                    ),
                },
                {"role": "user", "content": f"Review this diff:\n\n{diff}"},
            ],
            temperature=0.2,
        )

        if not response.success:
            return TaskResult(
                task_id=task.task_id,
                success=False,
                error_message=f"LLM call failed: {response.error_message}",
            )

        # Notify other agents
        await self.hub.messaging.publish(
            subject="review.completed",
            payload={"task_id": task.task_id, "agent": self.config.agent_id},
        )

        return TaskResult(
            task_id=task.task_id,
            success=True,
            result=response.content.encode(),
            metrics={"model": response.model, "tokens": str(response.usage.total_tokens)},
        )


async def main():
    config = AgentConfig(
        agent_id="dev_py_reviewer",
        agent_name="Python Code Reviewer",
        version="1.0.0",
        hub_url=os.getenv("HUB_URL", "localhost:50051"),
        capabilities={"code_review": "true", "python": "true"},
        metadata={"secret": os.getenv("AGENT_SECRET", "")},
    )
    agent = CodeReviewerAgent(config)
    await agent.run()


if __name__ == "__main__":
    asyncio.run(main())
