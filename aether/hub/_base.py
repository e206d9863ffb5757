"""What every Hub service facade shares."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from aether.client import AgentClient

__all__ = ("Facade", "HubResponse")


class HubResponse(BaseModel):
    """Base of the facades' typed responses (immutable)."""

    model_config = ConfigDict(frozen=True)


class Facade:
    """A Hub service bound to an agent's client (and so to its current session)."""

    def __init__(self, client: AgentClient) -> None:
        self._client = client
