"""`self.hub.tools`: the Hub's tools."""

from __future__ import annotations

from collections.abc import Mapping

from aether._json import JsonValue, dumps
from aether._tracing import client_span
from aether._wire import models, pb
from aether.hub._base import Facade

__all__ = ("ToolInfo", "ToolResult", "Tools")


#: A tool and how to call it (the generated model); `.input_schema()` is the parsed JSON
#: schema of its input (None when the tool has none).
ToolInfo = models.ToolInfo
#: What a tool returned: the generated `ExecuteToolResponse` under its public name;
#: `result_json` is the JSON text, `.result()` the parsed value (None when empty).
ToolResult = models.ExecuteToolResponse


class Tools(Facade):
    """List and run the Hub's tools."""

    async def list(self, *, timeout: float | None = None) -> list[ToolInfo]:
        """Every tool the agent may use, sorted by tool_id."""
        timeout = await self._client.wait_for_session(timeout)
        with client_span("/aether.v1.ToolService/ListTools") as call:
            try:
                reply = await self._client._tool_stub().list_tools(
                    pb.ListToolsRequest(), timeout=timeout, metadata=call.metadata
                )
            except Exception as exc:
                raise self._client.map_error(exc, "ListTools") from None
        return [models.ToolInfo.from_wire(t) for t in reply.tools]

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
        with client_span("/aether.v1.ToolService/ExecuteTool") as call:
            call.set("gen_ai.tool.name", tool_id)
            try:
                reply = await self._client._tool_stub().execute_tool(
                    request, timeout=timeout, metadata=call.metadata
                )
            except Exception as exc:
                raise self._client.map_error(exc, f"ExecuteTool {tool_id!r}") from None
        return models.ExecuteToolResponse.from_wire(reply)
