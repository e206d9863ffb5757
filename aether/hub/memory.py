"""`self.hub.memory`: Hub-hosted key-value memory, scoped."""

from __future__ import annotations

from typing import Literal

from aether._context import current_task
from aether._json import JsonValue, dumps
from aether._tracing import client_span
from aether._wire import models, pb
from aether.hub._base import Facade

__all__ = (
    "DeleteResponse",
    "ListKeysResponse",
    "Memory",
    "MemoryScopeName",
    "RetrieveResponse",
    "StoreResponse",
)

#: Who can see a value: the agent only, everything on the current task, the current
#: task's workflow, or every agent of the Hub.
MemoryScopeName = Literal["agent", "task", "workflow", "global"]

_SCOPES: dict[str, pb.MemoryScope] = {
    "agent": pb.MemoryScope.AGENT,
    "task": pb.MemoryScope.TASK,
    "workflow": pb.MemoryScope.WORKFLOW,
    "global": pb.MemoryScope.GLOBAL,
}


def _scope(scope: MemoryScopeName) -> tuple[pb.MemoryScope, str]:
    wire = _SCOPES.get(scope)
    if wire is None:
        raise ValueError(f"scope must be one of {sorted(_SCOPES)}, got {scope!r}")
    if scope == "task":
        return wire, current_task().task_id
    if scope == "workflow":
        task = current_task()
        if not task.workflow_id:
            raise ValueError(f"task {task.task_id} belongs to no workflow: use another scope")
        return wire, task.workflow_id
    return wire, ""


#: The Hub's answer to store() (the generated model).
StoreResponse = models.StoreResponse
#: A looked-up value (the generated model): `found` says whether there is one,
#: `value_json` is its JSON text and `.value()` the value parsed (None when not found).
RetrieveResponse = models.RetrieveResponse
#: The Hub's answer to delete() (the generated model); `deleted` says whether there was a value.
DeleteResponse = models.DeleteResponse
#: The keys of a scope, sorted (the generated model).
ListKeysResponse = models.ListKeysResponse


class Memory(Facade):
    """Store JSON values by key within a scope ("task" and "workflow" use the current task)."""

    async def store(
        self,
        key: str,
        value: JsonValue,
        scope: MemoryScopeName = "agent",
        ttl: int = 0,
        *,
        timeout: float | None = None,
    ) -> StoreResponse:
        """Store `value` (JSON-serialisable) under `key`; `ttl` seconds, 0 = no expiry."""
        wire_scope, scope_id = _scope(scope)
        if ttl < 0:
            raise ValueError(f"ttl must be >= 0 seconds, got {ttl}")
        request = pb.StoreRequest(
            key=key,
            value_json=dumps(value),
            scope=wire_scope,
            ttl_seconds=ttl,
            scope_id=scope_id,
        )
        timeout = await self._client.wait_for_session(timeout)
        with client_span("/aether.v1.MemoryService/Store") as call:
            try:
                reply = await self._client._memory_stub().store(
                    request, timeout=timeout, metadata=call.metadata
                )
            except Exception as exc:
                raise self._client.map_error(exc, "Memory store") from None
        return models.StoreResponse.from_wire(reply)

    async def retrieve(
        self, key: str, scope: MemoryScopeName = "agent", *, timeout: float | None = None
    ) -> RetrieveResponse:
        """Look `key` up; `found` is False when there is no live value."""
        wire_scope, scope_id = _scope(scope)
        request = pb.RetrieveRequest(key=key, scope=wire_scope, scope_id=scope_id)
        timeout = await self._client.wait_for_session(timeout)
        with client_span("/aether.v1.MemoryService/Retrieve") as call:
            try:
                reply = await self._client._memory_stub().retrieve(
                    request, timeout=timeout, metadata=call.metadata
                )
            except Exception as exc:
                raise self._client.map_error(exc, "Memory retrieve") from None
        return models.RetrieveResponse.from_wire(reply)

    async def delete(
        self, key: str, scope: MemoryScopeName = "agent", *, timeout: float | None = None
    ) -> DeleteResponse:
        """Remove `key`; `deleted` says whether there was a value."""
        wire_scope, scope_id = _scope(scope)
        request = pb.DeleteRequest(key=key, scope=wire_scope, scope_id=scope_id)
        timeout = await self._client.wait_for_session(timeout)
        with client_span("/aether.v1.MemoryService/Delete") as call:
            try:
                reply = await self._client._memory_stub().delete(
                    request, timeout=timeout, metadata=call.metadata
                )
            except Exception as exc:
                raise self._client.map_error(exc, "Memory delete") from None
        return models.DeleteResponse.from_wire(reply)

    async def list(
        self,
        scope: MemoryScopeName = "agent",
        prefix: str = "",
        limit: int = 0,
        *,
        timeout: float | None = None,
    ) -> ListKeysResponse:
        """The live keys of a scope (optionally only those starting with `prefix`)."""
        wire_scope, scope_id = _scope(scope)
        request = pb.ListKeysRequest(
            scope=wire_scope, scope_id=scope_id, prefix=prefix, limit=limit
        )
        timeout = await self._client.wait_for_session(timeout)
        with client_span("/aether.v1.MemoryService/List") as call:
            try:
                reply = await self._client._memory_stub().list(
                    request, timeout=timeout, metadata=call.metadata
                )
            except Exception as exc:
                raise self._client.map_error(exc, "Memory list") from None
        return models.ListKeysResponse.from_wire(reply)
