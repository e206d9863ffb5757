"""Stock grpcio clients against the dev Hub: health checking and server reflection.

The grpcio stubs are compiled with grpc_tools from the repository's own copies of the
standard protos, in a temporary directory (under file names that do not collide with
the `grpc` package), exactly as a third-party tool would.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_tools import protoc

from aether_hub.server import HubServer

PROTO = Path(__file__).resolve().parents[2] / "proto" / "grpc"

AETHER_SERVICES = {
    "aether.v1.AgentService",
    "aether.v1.TaskService",
    "aether.v1.LLMService",
    "aether.v1.ToolService",
    "aether.v1.MemoryService",
    "aether.v1.MessagingService",
}


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    """grpcio modules for health and reflection (v1, v1alpha), compiled with grpc_tools."""
    out = tmp_path_factory.mktemp("stock_grpc")
    sources = {
        "hc_health.proto": PROTO / "health" / "v1" / "health.proto",
        "refl_v1.proto": PROTO / "reflection" / "v1" / "reflection.proto",
        "refl_v1alpha.proto": PROTO / "reflection" / "v1alpha" / "reflection.proto",
    }
    for name, source in sources.items():
        shutil.copy(source, out / name)
        code = protoc.main(
            ["protoc", f"-I{out}", f"--python_out={out}", f"--grpc_python_out={out}", name]
        )
        assert code == 0, f"protoc failed for {name}"
    sys.path.insert(0, str(out))
    try:
        modules = {
            stem: importlib.import_module(stem)
            for stem in (
                "hc_health_pb2",
                "hc_health_pb2_grpc",
                "refl_v1_pb2",
                "refl_v1_pb2_grpc",
                "refl_v1alpha_pb2",
                "refl_v1alpha_pb2_grpc",
            )
        }
        yield modules
    finally:
        sys.path.remove(str(out))


def _health_check(port: int, stock: dict[str, ModuleType], service: str) -> tuple[str, int]:
    pb2, pb2_grpc = stock["hc_health_pb2"], stock["hc_health_pb2_grpc"]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(pb2.HealthCheckRequest(service=service), timeout=10)
        except grpc.RpcError as exc:
            return str(exc.code().name), -1
        return "OK", int(response.status)


async def test_stock_grpcio_health_check_is_serving(
    hub: HubServer, stock: dict[str, ModuleType]
) -> None:
    serving = stock["hc_health_pb2"].HealthCheckResponse.SERVING
    for service in ["", *sorted(AETHER_SERVICES), "grpc.health.v1.Health"]:
        if service and hub.health.status(service) is None:
            pytest.fail(f"{service} is not served by the Hub")
        outcome = await asyncio.to_thread(_health_check, hub.port, stock, service)
        assert outcome == ("OK", serving), service
    outcome = await asyncio.to_thread(_health_check, hub.port, stock, "no.such.Service")
    assert outcome[0] == "NOT_FOUND"


def _watch_two(port: int, stock: dict[str, ModuleType], seen: list[int]) -> None:
    pb2, pb2_grpc = stock["hc_health_pb2"], stock["hc_health_pb2_grpc"]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb2_grpc.HealthStub(channel)
        for response in stub.Watch(pb2.HealthCheckRequest(service=""), timeout=20):
            seen.append(int(response.status))
            if len(seen) == 2:
                return


async def test_health_watch_sees_changes(hub: HubServer, stock: dict[str, ModuleType]) -> None:
    from aether_hub._wire import health_pb

    seen: list[int] = []
    watcher = asyncio.create_task(asyncio.to_thread(_watch_two, hub.port, stock, seen))
    for _ in range(500):
        if seen:
            break
        await asyncio.sleep(0.01)
    hub.health.set_status("", health_pb.HealthCheckResponseServingStatus.NOT_SERVING)
    await asyncio.wait_for(watcher, 20)
    pb2 = stock["hc_health_pb2"].HealthCheckResponse
    assert seen == [pb2.SERVING, pb2.NOT_SERVING]


def _reflect(
    port: int, stock: dict[str, ModuleType], version: str, requests: list[object]
) -> list[Any]:
    pb2_grpc = stock[f"refl_{version}_pb2_grpc"]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb2_grpc.ServerReflectionStub(channel)
        return list(stub.ServerReflectionInfo(iter(requests), timeout=10))


def _load(pool: descriptor_pool.DescriptorPool, blobs: list[bytes]) -> None:
    """Add serialized files to `pool`, dependencies first (the server sends them after)."""
    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in blobs]
    remaining = {f.name: f for f in files}
    while remaining:
        progressed = False
        for name, proto in list(remaining.items()):
            if all(dep not in remaining for dep in proto.dependency):
                with contextlib.suppress(TypeError):  # already added from an earlier answer
                    pool.Add(proto)
                del remaining[name]
                progressed = True
        assert progressed, f"unresolvable dependencies among {sorted(remaining)}"


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_stock_grpcio_reflection(
    hub: HubServer, stock: dict[str, ModuleType], version: str
) -> None:
    pb2 = stock[f"refl_{version}_pb2"]
    requests = [
        pb2.ServerReflectionRequest(list_services=""),
        pb2.ServerReflectionRequest(file_containing_symbol="aether.v1.AgentService"),
        pb2.ServerReflectionRequest(file_by_filename="aether/v1/tasks.proto"),
        pb2.ServerReflectionRequest(file_containing_symbol="aether.v1.TaskService.SubmitTask"),
        pb2.ServerReflectionRequest(file_containing_symbol="no.such.Thing"),
        pb2.ServerReflectionRequest(file_by_filename="missing.proto"),
    ]
    responses = await asyncio.to_thread(_reflect, hub.port, stock, version, requests)
    assert len(responses) == len(requests)
    listed, by_symbol, by_file, by_method, bad_symbol, bad_file = responses

    names = {s.name for s in listed.list_services_response.service}
    assert names >= AETHER_SERVICES
    assert {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names

    pool = descriptor_pool.DescriptorPool()
    blobs = list(by_symbol.file_descriptor_response.file_descriptor_proto)
    first = descriptor_pb2.FileDescriptorProto.FromString(blobs[0])
    assert first.name == "aether/v1/agent.proto"
    _load(pool, blobs)
    service = pool.FindServiceByName("aether.v1.AgentService")
    assert {m.name for m in service.methods} == {
        "Register",
        "Unregister",
        "Heartbeat",
        "StreamTasks",
        "ReportStatus",
        "SubmitResult",
        "SubmitResults",
        "SubmitResultBatches",
    }
    assert (
        service.FindMethodByName("StreamTasks").output_type.full_name == "aether.v1.TaskStreamEvent"
    )

    file_blobs = list(by_file.file_descriptor_response.file_descriptor_proto)
    file_names = [descriptor_pb2.FileDescriptorProto.FromString(b).name for b in file_blobs]
    assert file_names[0] == "aether/v1/tasks.proto"
    assert {"aether/v1/common.proto", "google/protobuf/timestamp.proto"} <= set(file_names)
    _load(pool, file_blobs)
    task = pool.FindMessageTypeByName("aether.v1.Task")
    created_at = task.fields_by_name["created_at"].message_type
    assert created_at is not None and created_at.full_name == "google.protobuf.Timestamp"

    method_blobs = by_method.file_descriptor_response.file_descriptor_proto
    assert (
        descriptor_pb2.FileDescriptorProto.FromString(method_blobs[0]).name
        == "aether/v1/tasks.proto"
    )
    assert bad_symbol.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert bad_file.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
