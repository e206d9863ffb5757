"""Our generated grpclib client and server against stock grpcio, over real sockets on 127.0.0.1.

- A grpcio client (stubs from stock `grpc_tools.protoc --grpc_python_out`) calls a
  grpclib server built on our generated server base: every call shape of the
  kitchen sink, and AgentService.Register of the real API.
- Our generated stub calls a `grpc.aio` server: every call shape, and Register.
- The server guards: an over-size request is RESOURCE_EXHAUSTED, a malformed or
  missing one INVALID_ARGUMENT, and the server keeps serving afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
import pytest
from aether_api.runtime import ServerContext
from aether_api.v1 import client as api_client
from aether_api.v1 import messages as pb
from aether_api.v1 import server as api_server
from google.protobuf.message import Message
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from tests.generated import genpkgs, protoplan
from tests.generated.protoplan import Ours

# grpcio follows http_proxy variables unless told not to; these calls stay on loopback.
_GRPCIO_OPTIONS = [("grpc.enable_http_proxy", 0)]
_ECHO = "/kitchen.v1.KitchenService/Echo"
_SUM = "/kitchen.v1.KitchenService/Sum"


@dataclass(frozen=True)
class Kitchen:
    """The kitchen sink's generated modules, ours and stock."""

    ours: Ours
    pb: ModuleType  # our messages
    server: ModuleType  # our server bases
    client: ModuleType  # our stubs
    pb2: ModuleType  # Google's classes
    pb2_grpc: ModuleType  # grpcio's stubs and servicer helpers


@pytest.fixture(scope="module")
def kitchen(kitchen_ours: Ours) -> Kitchen:
    return Kitchen(
        ours=kitchen_ours,
        pb=genpkgs.kitchen_ours_module("messages"),
        server=genpkgs.kitchen_ours_module("server"),
        client=genpkgs.kitchen_ours_module("client"),
        pb2=genpkgs.kitchen_pb2(),
        pb2_grpc=genpkgs.kitchen_pb2_grpc(),
    )


@dataclass(frozen=True)
class SeenCall:
    """What our server's GetHTTPStatus handler saw of its call."""

    method: str
    metadata: dict[str, str | bytes]
    has_deadline: bool
    bearer_token: str | None


def _kitchen_service(
    kitchen: Kitchen, max_message_bytes: int | None = None, seen: list[SeenCall] | None = None
) -> Any:
    """Our KitchenService implementation, on our generated base."""
    ticks = kitchen.pb
    calls = [] if seen is None else seen

    async def echo(self: Any, request: Any, context: ServerContext) -> Any:
        return request

    async def countdown(self: Any, request: Any, context: ServerContext) -> AsyncIterator[Any]:
        if request.start <= 0:
            raise GRPCError(Status.INVALID_ARGUMENT, "start must be above 0")
        for value in range(request.start, 0, -1):
            yield ticks.Tick(value=value)

    async def sum_(self: Any, requests: AsyncIterator[Any], context: ServerContext) -> Any:
        values = [tick.value async for tick in requests]
        return ticks.SumResponse(total=sum(values), count=len(values))

    async def double(
        self: Any, requests: AsyncIterator[Any], context: ServerContext
    ) -> AsyncIterator[Any]:
        async for tick in requests:
            yield ticks.Tick(value=tick.value * 2)

    async def get_http_status(self: Any, request: Any, context: ServerContext) -> Any:
        calls.append(
            SeenCall(
                method=context.method,
                metadata=dict(context.metadata),
                has_deadline=context.deadline is not None,
                bearer_token=context.bearer_token,
            )
        )
        return ticks.SumResponse(total=200, count=request.start)

    # Built with type(): the base class is generated at test time, invisible to mypy.
    impl = type(
        "KitchenImpl",
        (kitchen.server.KitchenServiceBase,),
        {
            "echo": echo,
            "countdown": countdown,
            "sum": sum_,
            "double": double,
            "get_http_status": get_http_status,
        },
    )
    service = impl()
    if max_message_bytes is not None:
        service.max_message_bytes = max_message_bytes
    return service


async def _unimplemented_stream() -> AsyncIterator[Any]:
    """An async generator that fails at once (for handlers these tests never call)."""
    nothing: list[Any] = []
    for item in nothing:
        yield item
    raise GRPCError(Status.UNIMPLEMENTED)


class _Registrar(api_server.AgentServiceBase):
    """Answers Register; the other methods are not part of these tests."""

    async def register(
        self, request: pb.RegisterRequest, context: ServerContext
    ) -> pb.AgentRegistration:
        return pb.AgentRegistration(
            success=True,
            session_token=f"token-for-{request.agent_id}",
            heartbeat_interval_seconds=request.max_concurrent_tasks,
            trust_level=pb.TrustLevel.HIGH,
            message=context.bearer_token or "no bearer token",
            session_id=request.capabilities.get("task_types", ""),
        )

    async def unregister(
        self, request: pb.UnregisterRequest, context: ServerContext
    ) -> pb.UnregisterResponse:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def heartbeat(
        self, request: pb.HeartbeatRequest, context: ServerContext
    ) -> pb.HeartbeatResponse:
        raise GRPCError(Status.UNIMPLEMENTED)

    def stream_tasks(
        self, request: pb.StreamTasksRequest, context: ServerContext
    ) -> AsyncIterator[pb.TaskStreamEvent]:
        return _unimplemented_stream()

    async def report_status(
        self, request: pb.TaskStatus, context: ServerContext
    ) -> pb.ReportStatusResponse:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def submit_result(
        self, request: pb.TaskResult, context: ServerContext
    ) -> pb.SubmitResultResponse:
        raise GRPCError(Status.UNIMPLEMENTED)

    def submit_results(
        self, requests: AsyncIterator[pb.TaskResult], context: ServerContext
    ) -> AsyncIterator[pb.SubmitResultResponse]:
        return _unimplemented_stream()

    def submit_result_batches(
        self, requests: AsyncIterator[pb.TaskResultBatch], context: ServerContext
    ) -> AsyncIterator[pb.SubmitResultBatchResponse]:
        return _unimplemented_stream()


@asynccontextmanager
async def _grpclib_server(*services: Any) -> AsyncIterator[int]:
    """A grpclib server on a free loopback port; yields the port."""
    server = Server(list(services))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    await server.start(sock=sock)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def _grpcio_channel(port: int) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_GRPCIO_OPTIONS) as channel:
        yield channel


@asynccontextmanager
async def _grpcio_server(register: Any) -> AsyncIterator[int]:
    """A grpc.aio server on a free loopback port; `register(server)` adds its services."""
    server = grpc.aio.server(options=_GRPCIO_OPTIONS)
    register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


@asynccontextmanager
async def _grpclib_channel(port: int) -> AsyncIterator[Channel]:
    channel = Channel("127.0.0.1", port)
    try:
        yield channel
    finally:
        channel.close()


def _everything_plan(kitchen: Kitchen) -> protoplan.Plan:
    return protoplan.populated(protoplan.descriptor_of(kitchen.pb2.Everything), variant=1)


# -- grpcio client → our grpclib server ------------------------------------------------------


async def test_grpcio_client_calls_every_shape_of_our_server(kitchen: Kitchen) -> None:
    pb2 = kitchen.pb2
    plan = _everything_plan(kitchen)
    async with (
        _grpclib_server(_kitchen_service(kitchen)) as port,
        _grpcio_channel(port) as channel,
    ):
        stub = kitchen.pb2_grpc.KitchenServiceStub(channel)

        echoed = await stub.Echo(protoplan.build_google(pb2.Everything, plan))
        protoplan.assert_same(plan, protoplan.google_plan(echoed), "Echo through our server")

        ticks = [tick.value async for tick in stub.Countdown(pb2.CountdownRequest(start=3))]
        assert ticks == [3, 2, 1]

        total = await stub.Sum(iter([pb2.Tick(value=v) for v in (5, -2, 2**40)]))
        assert (total.total, total.count) == (3 + 2**40, 3)

        async def outgoing() -> AsyncIterator[Message]:
            for value in (1, -7, 21):
                yield pb2.Tick(value=value)

        doubled = [tick.value async for tick in stub.Double(outgoing())]
        assert doubled == [2, -14, 42]

        status = await stub.GetHTTPStatus(pb2.CountdownRequest(start=9))
        assert (status.total, status.count) == (200, 9)

        with pytest.raises(grpc.aio.AioRpcError) as failed:
            async for _ in stub.Countdown(pb2.CountdownRequest(start=0)):
                pass
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert failed.value.details() == "start must be above 0"


async def test_grpcio_metadata_and_deadline_reach_our_handler(kitchen: Kitchen) -> None:
    seen: list[SeenCall] = []
    async with (
        _grpclib_server(_kitchen_service(kitchen, seen=seen)) as port,
        _grpcio_channel(port) as channel,
    ):
        stub = kitchen.pb2_grpc.KitchenServiceStub(channel)
        request = kitchen.pb2.CountdownRequest(start=1)
        await stub.GetHTTPStatus(
            request,
            timeout=30,
            metadata=(("authorization", "Bearer tok-7"), ("x-trace-bin", b"\x00\xff")),
        )
        await stub.GetHTTPStatus(request)
    with_metadata, bare = seen
    assert with_metadata.method == "/kitchen.v1.KitchenService/GetHTTPStatus"
    assert with_metadata.bearer_token == "tok-7"
    assert with_metadata.metadata["x-trace-bin"] == b"\x00\xff"
    assert with_metadata.has_deadline
    assert (bare.bearer_token, bare.has_deadline) == (None, False)


async def test_compressed_request_is_refused_clearly(kitchen: Kitchen) -> None:
    """Our server speaks no compression: a gzip request fails with UNIMPLEMENTED, not garbage."""
    async with (
        _grpclib_server(_kitchen_service(kitchen)) as port,
        _grpcio_channel(port) as channel,
    ):
        stub = kitchen.pb2_grpc.KitchenServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Echo(
                kitchen.pb2.Everything(far_away="x" * 100), compression=grpc.Compression.Gzip
            )
        assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert (await stub.Echo(kitchen.pb2.Everything(far_away="ok"))).far_away == "ok"


async def test_oversize_request_is_resource_exhausted(kitchen: Kitchen) -> None:
    pb2 = kitchen.pb2
    service = _kitchen_service(kitchen, max_message_bytes=1024)
    async with _grpclib_server(service) as port, _grpcio_channel(port) as channel:
        stub = kitchen.pb2_grpc.KitchenServiceStub(channel)
        big = pb2.Everything(far_away="x" * 2000)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Echo(big)
        assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "1024" in (failed.value.details() or "")

        # Exactly at the limit is fine, and the server keeps serving.
        small = pb2.Everything(far_away="y" * 10)
        at_limit = next(
            m
            for m in (pb2.Everything(far_away="z" * n) for n in range(1000, 1024))
            if m.ByteSize() == 1024
        )
        assert (await stub.Echo(at_limit)).far_away == at_limit.far_away
        assert (await stub.Echo(small)).far_away == "y" * 10


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\x0a\x05ab", id="length-past-end"),
        pytest.param(b"\x08\xff", id="truncated-varint"),
        pytest.param(b"\x0f", id="wire-type-7"),
    ],
)
async def test_malformed_request_is_invalid_argument(kitchen: Kitchen, body: bytes) -> None:
    async with (
        _grpclib_server(_kitchen_service(kitchen)) as port,
        _grpcio_channel(port) as channel,
    ):
        # No serializers: raw bytes both ways.
        echo_raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(_ECHO)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await echo_raw(body)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        sum_raw: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(_SUM)
        with pytest.raises(grpc.aio.AioRpcError) as failed_stream:
            await sum_raw(iter([b"\x08\x01", body]))
        assert failed_stream.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # The server is still up and answers a well-formed request.
        assert await echo_raw(b"\xfa\xff\xff\xff\x0f\x02ok") == b"\xfa\xff\xff\xff\x0f\x02ok"


async def test_missing_request_is_invalid_argument(kitchen: Kitchen) -> None:
    async with (
        _grpclib_server(_kitchen_service(kitchen)) as port,
        _grpcio_channel(port) as channel,
    ):
        # A unary method called with zero request messages.
        echo_as_stream: grpc.aio.StreamUnaryMultiCallable[bytes, bytes]
        echo_as_stream = channel.stream_unary(_ECHO)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await echo_as_stream(iter([]))
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        sum_raw: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(_SUM)
        assert await sum_raw(iter([])) == b""  # zero requests is a valid client stream


# -- our stub → grpcio server --------------------------------------------------------------


class _GrpcioKitchen:
    """A stock grpcio servicer of KitchenService (grpcio calls these by name)."""

    def __init__(self, pb2: ModuleType) -> None:
        self._pb2 = pb2

    async def Echo(self, request: Any, context: Any) -> Any:
        return request

    async def Countdown(self, request: Any, context: Any) -> AsyncIterator[Any]:
        if request.start <= 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "start must be above 0")
        for value in range(request.start, 0, -1):
            if value == 100:
                await context.abort(grpc.StatusCode.OUT_OF_RANGE, "too far to count")
            yield self._pb2.Tick(value=value)

    async def Sum(self, requests: AsyncIterator[Any], context: Any) -> Any:
        values = [tick.value async for tick in requests]
        return self._pb2.SumResponse(total=sum(values), count=len(values))

    async def Double(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for tick in requests:
            yield self._pb2.Tick(value=tick.value * 2)

    async def GetHTTPStatus(self, request: Any, context: Any) -> Any:
        return self._pb2.SumResponse(total=404, count=request.start)


def _add_kitchen(kitchen: Kitchen) -> Any:
    def register(server: grpc.aio.Server) -> None:
        servicer = _GrpcioKitchen(kitchen.pb2)
        kitchen.pb2_grpc.add_KitchenServiceServicer_to_server(servicer, server)

    return register


async def test_our_stub_calls_every_shape_of_grpcio_server(kitchen: Kitchen) -> None:
    ours = kitchen.pb
    desc = protoplan.descriptor_of(kitchen.pb2.Everything)
    plan = _everything_plan(kitchen)
    async with _grpcio_server(_add_kitchen(kitchen)) as port, _grpclib_channel(port) as channel:
        stub = kitchen.client.KitchenServiceStub(channel, timeout=30)

        echoed = await stub.echo(kitchen.ours.build(desc, plan))
        protoplan.assert_same(plan, kitchen.ours.plan(desc, echoed), "Echo through grpcio")

        ticks = [tick.value async for tick in stub.countdown(ours.CountdownRequest(start=4))]
        assert ticks == [4, 3, 2, 1]

        total = await stub.sum([ours.Tick(value=v) for v in (1, 2, -(2**50))])
        assert (total.total, total.count) == (3 - 2**50, 3)

        async def outgoing() -> AsyncIterator[Any]:
            for value in (3, 0, -4):
                yield ours.Tick(value=value)

        assert [tick.value async for tick in stub.double(outgoing())] == [6, 0, -8]

        status = await stub.get_http_status(ours.CountdownRequest(start=2))
        assert (status.total, status.count) == (404, 2)


async def test_our_stub_sees_grpcio_errors(kitchen: Kitchen) -> None:
    ours = kitchen.pb
    async with _grpcio_server(_add_kitchen(kitchen)) as port, _grpclib_channel(port) as channel:
        stub = kitchen.client.KitchenServiceStub(channel, timeout=30)
        with pytest.raises(GRPCError) as at_once:
            async for _ in stub.countdown(ours.CountdownRequest(start=0)):
                pass
        assert at_once.value.status == Status.INVALID_ARGUMENT
        assert at_once.value.message == "start must be above 0"

        received: list[int] = []
        with pytest.raises(GRPCError) as midway:
            async for tick in stub.countdown(ours.CountdownRequest(start=102)):
                received.append(tick.value)
        assert received == [102, 101]
        assert midway.value.status == Status.OUT_OF_RANGE
        assert midway.value.message == "too far to count"


async def test_our_stub_refuses_oversize_reply(kitchen: Kitchen) -> None:
    ours = kitchen.pb
    async with _grpcio_server(_add_kitchen(kitchen)) as port, _grpclib_channel(port) as channel:
        stub = kitchen.client.KitchenServiceStub(channel, timeout=30, max_message_bytes=512)
        with pytest.raises(GRPCError) as failed:
            await stub.echo(ours.Everything(far_away="x" * 600))
        assert failed.value.status == Status.RESOURCE_EXHAUSTED
        # Below the limit the same stub works.
        assert (await stub.echo(ours.Everything(far_away="ok"))).far_away == "ok"


# -- the real API: AgentService.Register -------------------------------------------------------


async def test_our_stub_registers_with_grpcio_server() -> None:
    request_class = genpkgs.api_google_class("aether.v1.RegisterRequest")
    reply_class = genpkgs.api_google_class("aether.v1.AgentRegistration")
    seen: list[tuple[Message, dict[str, str]]] = []

    async def register(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        metadata = context.invocation_metadata() or ()
        seen.append((request, {key: str(value) for key, value in metadata}))
        fields: Any = request
        make_reply: Callable[..., object] = reply_class
        reply = make_reply(
            success=True, session_token="t-" + fields.agent_id, trust_level=3, session_id="s"
        )
        assert isinstance(reply, Message)
        return reply

    handler = grpc.method_handlers_generic_handler(
        "aether.v1.AgentService",
        {
            "Register": grpc.unary_unary_rpc_method_handler(
                register,
                request_deserializer=request_class.FromString,
                response_serializer=reply_class.SerializeToString,
            )
        },
    )

    def add(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((handler,))

    async with _grpcio_server(add) as port, _grpclib_channel(port) as channel:
        stub = api_client.AgentServiceStub(channel, metadata={"x-client": "sdk"}, timeout=30)
        reply = await stub.register(
            pb.RegisterRequest(
                agent_id="pm_sarah",
                agent_name="Sarah",
                capabilities={"task_types": "a,b"},
                secret="s3cret",
                max_concurrent_tasks=4,
            )
        )
    assert reply == pb.AgentRegistration(
        success=True, session_token="t-pm_sarah", trust_level=pb.TrustLevel.HIGH, session_id="s"
    )
    ((request, metadata),) = seen
    plan = protoplan.google_plan(request)
    assert plan["agent_id"] == "pm_sarah"
    assert plan["capabilities"] == {"task_types": "a,b"}
    assert plan["secret"] == "s3cret"
    assert plan["max_concurrent_tasks"] == 4
    assert metadata.get("x-client") == "sdk"


def _stock_api_stubs() -> Path:
    """Stock protoc + grpcio stubs for proto/aether/v1, importable as `aether.v1.*_pb2(_grpc)`.

    Only in a subprocess: in this process `aether` is our SDK.
    """
    out = genpkgs.scratch_dir("api-stock-")
    files = [f for f in genpkgs.proto_files(genpkgs.API_PROTO_ROOT) if f.startswith("aether/")]
    genpkgs.run_protoc(genpkgs.API_PROTO_ROOT, files, out=out, grpc=True)
    for package in (out / "aether", out / "aether" / "v1"):
        (package / "__init__.py").touch()  # a regular package beats our namespace-free `aether`
    return out


_STOCK_CLIENT = """
import json, sys
import grpc
from aether.v1 import agent_pb2, agent_pb2_grpc
assert agent_pb2.__file__.startswith(sys.argv[2]), agent_pb2.__file__

channel = grpc.insecure_channel("127.0.0.1:" + sys.argv[1], options=[("grpc.enable_http_proxy", 0)])
stub = agent_pb2_grpc.AgentServiceStub(channel)
reply = stub.Register(
    agent_pb2.RegisterRequest(agent_id="pm_sarah", max_concurrent_tasks=7,
                              capabilities={"task_types": "review"}),
    metadata=[("authorization", "Bearer abc")],
    timeout=30,
)
try:
    stub.Heartbeat(agent_pb2.HeartbeatRequest(agent_id="pm_sarah"), timeout=30)
    unimplemented = None
except grpc.RpcError as error:
    unimplemented = error.code().name
print(json.dumps({
    "success": reply.success, "session_token": reply.session_token,
    "heartbeat_interval_seconds": reply.heartbeat_interval_seconds,
    "trust_level": reply.trust_level, "message": reply.message, "session_id": reply.session_id,
    "heartbeat": unimplemented,
}))
"""


async def test_stock_grpcio_client_registers_with_our_server() -> None:
    stubs = await asyncio.to_thread(_stock_api_stubs)
    try:
        env = {**os.environ, "PYTHONPATH": str(stubs)}
        async with _grpclib_server(_Registrar()) as port:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _STOCK_CLIENT,
                str(port),
                str(stubs),
                cwd=str(stubs),
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
        assert process.returncode == 0, stderr.decode()
        assert json.loads(stdout) == {
            "success": True,
            "session_token": "token-for-pm_sarah",
            "heartbeat_interval_seconds": 7,
            "trust_level": int(pb.TrustLevel.HIGH),
            "message": "abc",
            "session_id": "review",
            "heartbeat": "UNIMPLEMENTED",
        }
    finally:
        shutil.rmtree(stubs, ignore_errors=True)
