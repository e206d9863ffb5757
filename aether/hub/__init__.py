"""Hub services reached through `self.hub`: LLM, tools, memory and messaging."""

from __future__ import annotations

from aether.client import AgentClient
from aether.hub.llm import LLM as LLM
from aether.hub.llm import ChatChunk as ChatChunk
from aether.hub.llm import ChatResponse as ChatResponse
from aether.hub.llm import Usage as Usage
from aether.hub.memory import DeleteResponse as DeleteResponse
from aether.hub.memory import ListKeysResponse as ListKeysResponse
from aether.hub.memory import Memory as Memory
from aether.hub.memory import MemoryScopeName as MemoryScopeName
from aether.hub.memory import RetrieveResponse as RetrieveResponse
from aether.hub.memory import StoreResponse as StoreResponse
from aether.hub.messaging import BusMessage as BusMessage
from aether.hub.messaging import Messaging as Messaging
from aether.hub.messaging import PublishResponse as PublishResponse
from aether.hub.messaging import RequestResponse as RequestResponse
from aether.hub.tools import ToolInfo as ToolInfo
from aether.hub.tools import ToolResult as ToolResult
from aether.hub.tools import Tools as Tools

__all__ = (
    "LLM",
    "BusMessage",
    "ChatChunk",
    "ChatResponse",
    "DeleteResponse",
    "Hub",
    "ListKeysResponse",
    "Memory",
    "MemoryScopeName",
    "Messaging",
    "PublishResponse",
    "RequestResponse",
    "RetrieveResponse",
    "StoreResponse",
    "ToolInfo",
    "ToolResult",
    "Tools",
    "Usage",
)


class Hub:
    """The Hub's services, bound to one agent's session (`self.hub` of an agent).

    A call made while the agent is reconnecting waits for the new session, up to the
    call's `timeout` or else `AgentConfig.call_reconnect_wait` seconds, then raises the
    retryable `AetherConnectionError`. A call already in flight when the connection
    breaks fails at once with that error (it may or may not have reached the Hub).
    """

    def __init__(self, client: AgentClient) -> None:
        #: Chat completions.
        self.llm = LLM(client)
        #: Tool listing and execution.
        self.tools = Tools(client)
        #: Scoped key-value memory.
        self.memory = Memory(client)
        #: Publish / request / subscribe.
        self.messaging = Messaging(client)
