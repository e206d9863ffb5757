"""The guide's smaller snippets, each verbatim inside a typed function or method.

(The guide shows them as fragments; the surrounding `def` lines are ours.)
"""

from __future__ import annotations

from aether_sdk import AetherAgent, AgentConfig, TaskAssignment, TaskResult


async def register_start_stop(agent: AetherAgent) -> None:
    """Register, Start, Stop."""
    # Start: connect + register (non-blocking)
    await agent.start()

    # Stop: unregister + disconnect
    await agent.stop()

    # Run: start + block until interrupted (handles SIGINT/SIGTERM)
    await agent.run()


class SnippetAgent(AetherAgent):
    """Hub Services, one method per snippet."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        try:
            # ... your logic
            return TaskResult(task_id=task.task_id, success=True, result=b"done")
        except Exception as e:
            return TaskResult(
                task_id=task.task_id,
                success=False,
                error_message=str(e),
            )

    async def llm(self, task: TaskAssignment) -> None:
        response = await self.hub.llm.chat(
            messages=[
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": task.description},
            ],
            model="gpt-4o-mini",  # Hub may override based on trust level
            temperature=0.3,
            max_tokens=1000,
        )

        print(response.content)
        print(f"Model: {response.model}, Tokens: {response.usage.total_tokens}")

    async def tools(self) -> str:
        # List available tools
        tools = await self.hub.tools.list()

        # Execute a tool
        result = await self.hub.tools.execute(
            tool_id="add_comment",
            input={"issue_id": "123", "comment": "Review complete"},
        )
        output = result.result_json  # JSON string
        return f"{len(tools)} {output}"

    async def memory(self) -> str:
        # Store a value
        await self.hub.memory.store(
            key="my-config",
            value={"theme": "dark"},
            scope="agent",
            ttl=3600,  # seconds; 0 = no expiry
        )

        # Retrieve a value
        response = await self.hub.memory.retrieve(key="my-config", scope="agent")
        if response.success:
            config = response.value_json  # JSON string
            return config
        return ""

    async def messaging(self) -> bool:
        # Publish to a NATS subject
        await self.hub.messaging.publish(
            subject="agent.status",
            payload={"agent_id": self.config.agent_id, "status": "processing"},
        )

        # Request-reply
        response = await self.hub.messaging.request(
            subject="workflow.status",
            payload={"workflow_id": "123"},
            timeout=10,
        )
        return response.success


def reconnection_limit() -> AgentConfig:
    """Troubleshooting: "Reconnection loop not stopping" (the guide's `...` filled in)."""
    config = AgentConfig(
        agent_id="a",
        agent_name="A",
        max_reconnect_attempts=10,
    )
    return config
