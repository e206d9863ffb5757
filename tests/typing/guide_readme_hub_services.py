"""The README's "Hub services: `self.hub`" snippet, verbatim (type-checked with the guide's
code; `test_readme_snippet_is_verbatim` keeps it in step with the README)."""

from __future__ import annotations

from aether_sdk import AetherAgent, TaskAssignment, TaskResult, json_payload


class Triage(AetherAgent):
    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        answer = await self.hub.llm.chat(messages=[{"role": "user", "content": task.description}])
        tokens = answer.usage.total_tokens  # Usage is never None: 0 when the Hub sent none

        seen = await self.hub.memory.retrieve(key="seen", scope="agent")
        count = seen.value() if seen.found else 0  # value_json parsed (None when not found)

        schemas = {tool.tool_id: tool.input_schema() for tool in await self.hub.tools.list()}
        listed = await self.hub.tools.execute(tool_id="list_comments", input={"issue_id": "7"})
        comments = listed.result()  # result_json parsed

        reply = await self.hub.messaging.request("pricing.quote", {"item": "widget"}, timeout=5)
        quote = json_payload(reply) if reply.success else None  # the payload parsed
        summary = f"{tokens} tokens, {count} seen, {len(schemas)} tools, {comments}, {quote}"
        return TaskResult(task_id=task.task_id, success=True, result=summary.encode())
