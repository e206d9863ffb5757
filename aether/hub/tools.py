"""`self.hub.tools`: the Hub's tools."""

from __future__ import annotations

from collections.abc import Mapping

from aether._json import JsonValue, dumps, loads
from aether._wire import pb
from aether.hub._base import Facade, HubResponse

__all__ = ("ToolInfo", "ToolResult", "Tools")


class ToolInfo(HubResponse):
    """A tool and how to call it."""

    tool_id: str = ""
    description: str = ""
    input_schema_json: str = ""
    output_schema_json: str = ""

    def input_schema(self) -> JsonValue:
        """The parsed JSON schema of the tool's input."""
        return loads(self.input_schema_json) if self.input_schema_json else {}


class ToolResult(HubResponse):
    """What a tool returned; `result_json` is a JSON string."""

    success: bool = False
    result_json: str = ""
    error_message: str = ""

    def result(self) -> JsonValue:
        """The parsed `result_json` (None when empty)."""
        return loads(self.result_json) if self.result_json else None


class Tools(Facade):
    """List and run the Hub's tools."""

    async def list(self, *, timeout: float | None = None) -> list[ToolInfo]:
        """Every tool the agent may use, sorted by tool_id."""
        timeout = await self._client.wait_for_session(timeout)
        try:
            reply = await self._client.tool_stub().list_tools(
                pb.ListToolsRequest(), timeout=timeout
            )
        except Exception as exc:
            raise self._client.map_error(exc, "ListTools") from None
        return [
            ToolInfo.model_construct(
                tool_id=t.tool_id,
                description=t.description,
                input_schema_json=t.input_schema_json,
                output_schema_json=t.output_schema_json,
            )
            for t in reply.tools
        ]

    async def execute(
        self,
        tool_id: str,
        input: Mapping[str, JsonValue] | None = None,
        *,
        timeout: float | None = None,
    ) -> ToolResult:
        """Run a tool with a JSON-serialisable `input` object."""
        request = pb.ExecuteToolRequest(
            tool_id=tool_id, input_json=dumps(input if input is not None else {}, what="input")
        )
        timeout = await self._client.wait_for_session(timeout)
        try:
            reply = await self._client.tool_stub().execute_tool(request, timeout=timeout)
        except Exception as exc:
            raise self._client.map_error(exc, f"ExecuteTool {tool_id!r}") from None
        return ToolResult.model_construct(
            success=reply.success, result_json=reply.result_json, error_message=reply.error_message
        )
