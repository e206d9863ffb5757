"""An agent that uses the Hub's tools and memory: an issue triager.

For each task it comments on an issue with the Hub's `add_comment` tool, reads the
issue's comments back with `list_comments`, and keeps a running count of the issues it
triaged in its agent-scoped memory (which outlives tasks and reconnects).

Run against `aether hub --dev` (its built-in tools include add_comment/list_comments):

    HUB_URL=localhost:50051 python examples/tools_and_memory.py

and send it a task whose payload is JSON `{"issue_id": "123", "comment": "Looks good"}`.
"""

from __future__ import annotations

import asyncio
import json
import os

from aether_sdk import AetherAgent, AgentConfig, TaskAssignment, TaskResult

COUNTER_KEY = "triaged-count"


class IssueTriager(AetherAgent):
    """Comments on issues through Hub tools and counts them in Hub memory."""

    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        try:
            request = json.loads(task.payload)
            issue_id, comment = str(request["issue_id"]), str(request["comment"])
        except (ValueError, KeyError, TypeError) as exc:
            return self._fail(task, f"payload must be JSON with issue_id and comment: {exc}")

        tools = {tool.tool_id for tool in await self.hub.tools.list()}
        missing = {"add_comment", "list_comments"} - tools
        if missing:
            return self._fail(task, f"the Hub lacks the tools {sorted(missing)}")

        added = await self.hub.tools.execute(
            tool_id="add_comment", input={"issue_id": issue_id, "comment": comment}
        )
        if not added.success:
            return self._fail(task, f"add_comment failed: {added.error_message}")
        listed = await self.hub.tools.execute(tool_id="list_comments", input={"issue_id": issue_id})
        if not listed.success:
            return self._fail(task, f"list_comments failed: {listed.error_message}")
        comments = listed.result()
        comment_count = len(comments) if isinstance(comments, list) else 0

        # Agent-scoped memory: private to this agent, kept across tasks.
        previous = await self.hub.memory.retrieve(key=COUNTER_KEY, scope="agent")
        count = previous.value() if previous.found else 0
        count = (count if isinstance(count, int) else 0) + 1
        await self.hub.memory.store(key=COUNTER_KEY, value=count, scope="agent")

        summary = {"issue_id": issue_id, "comments_on_issue": comment_count, "triaged": count}
        return TaskResult(task_id=task.task_id, success=True, result=json.dumps(summary).encode())

    @staticmethod
    def _fail(task: TaskAssignment, message: str) -> TaskResult:
        return TaskResult(task_id=task.task_id, success=False, error_message=message)


async def main() -> None:
    config = AgentConfig(
        agent_id="issue_triager",
        agent_name="Issue Triager",
        hub_url=os.getenv("HUB_URL", "localhost:50051"),
        capabilities={"task_types": "triage"},
        metadata={"secret": os.getenv("AGENT_SECRET", "")},  # as in the guide
    )
    await IssueTriager(config).run()


if __name__ == "__main__":
    asyncio.run(main())
