"""`grpc.health.v1.Health` for the dev Hub, so stock health checkers see it.

SERVING for the whole server ("") and for every service it serves; an unknown service
is NOT_FOUND for Check and SERVICE_UNKNOWN for Watch. On shutdown the Hub turns every
status to NOT_SERVING before it stops taking calls, and open watches see that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from aether_hub._wire import health_pb, health_server, runtime

__all__ = ("HealthService",)

_Serving = health_pb.HealthCheckResponseServingStatus


class HealthService(health_server.HealthBase):
    """The standard health service over a table of service statuses."""

    def __init__(self, service_names: Iterable[str]) -> None:
        self._status: dict[str, _Serving] = {"": _Serving.SERVING}
        for name in service_names:
            self._status[name] = _Serving.SERVING
        self._watchers: set[asyncio.Event] = set()

    def status(self, service: str = "") -> _Serving | None:
        """The status of `service` ("" = the whole server), or None if unknown."""
        return self._status.get(service)

    def set_status(self, service: str, status: _Serving) -> None:
        """Change one service's status ("" = the whole server); watchers are told."""
        self._status[service] = status
        self._notify()

    def set_all(self, status: _Serving) -> None:
        """Change every status at once (used on shutdown)."""
        for name in self._status:
            self._status[name] = status
        self._notify()

    def _notify(self) -> None:
        for event in self._watchers:
            event.set()

    async def check(
        self, request: health_pb.HealthCheckRequest, context: runtime.ServerContext
    ) -> health_pb.HealthCheckResponse:
        """The status now; an unknown service is NOT_FOUND."""
        status = self._status.get(request.service)
        if status is None:
            raise GRPCError(Status.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb.HealthCheckResponse(status=status)

    async def watch(
        self, request: health_pb.HealthCheckRequest, context: runtime.ServerContext
    ) -> AsyncIterator[health_pb.HealthCheckResponse]:
        """The status now, then every change, until the caller hangs up."""
        event = asyncio.Event()
        self._watchers.add(event)
        try:
            last = self._status.get(request.service, _Serving.SERVICE_UNKNOWN)
            yield health_pb.HealthCheckResponse(status=last)
            while True:
                await event.wait()
                event.clear()
                now = self._status.get(request.service, _Serving.SERVICE_UNKNOWN)
                if now != last:
                    last = now
                    yield health_pb.HealthCheckResponse(status=now)
        finally:
            self._watchers.discard(event)
