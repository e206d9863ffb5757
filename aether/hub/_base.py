"""What every Hub service facade shares."""

from __future__ import annotations

from aether.client import AgentClient

__all__ = ("Facade",)


class Facade:
    """A Hub service bound to an agent's client (and so to its current session).

    Facades build the wire request from their keyword arguments, call the session's stub
    and return the reply as its generated model (`Model.from_wire`, one conversion per
    reply): the public API has one kind of model.
    """

    def __init__(self, client: AgentClient) -> None:
        self._client = client
