"""An unknown enum value in any request field → INVALID_ARGUMENT naming the field
(issue 11: `MemoryScope` = 42 was `UNKNOWN: Internal Server Error` and a KeyError traceback).

The cases are generated from the API's file descriptors (`aether_api.descriptors`): every
method of every `aether.v1` service, every enum-typed field its request holds at any depth
(through singular, repeated and map message fields), each with 42 and -1. Requests are
built and sent with protobuf's own dynamic messages, as a foreign client would.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import grpclib.client
import pytest
from aether_api import descriptors
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from aether_hub.guard import invalid_enum_field
from aether_hub.server import HubServer
from aether_hub.settings import HubConfig
from tests.hubserver.hubkit import running_hub

_POOL = descriptor_pool.DescriptorPool()


def _load_pool() -> None:
    pending = dict(descriptors.FILE_DESCRIPTORS)
    while pending:
        for name, raw in list(pending.items()):
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            if all(dep not in pending for dep in proto.dependency):
                _POOL.Add(proto)
                del pending[name]


_load_pool()


@dataclass(frozen=True)
class EnumCase:
    """A request with one enum field (`path`) set to `value`."""

    method: str  # /aether.v1.Service/Method
    cardinality: Cardinality
    request: Descriptor
    reply: Descriptor
    path: tuple[FieldDescriptor, ...]
    value: int

    @property
    def field_path(self) -> str:
        return ".".join(f.name for f in self.path)

    def __str__(self) -> str:
        return f"{self.method.rsplit('/', 1)[1]}.{self.field_path}={self.value}"


def _message_type(field: FieldDescriptor) -> Descriptor:
    inner = field.message_type
    assert inner is not None, field.full_name
    return inner


def _enum_paths(
    message: Descriptor, seen: tuple[str, ...] = ()
) -> Iterator[tuple[FieldDescriptor, ...]]:
    for field in message.fields:
        if field.type == FieldDescriptor.TYPE_ENUM:
            yield (field,)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            inner = _message_type(field)
            if inner.full_name in seen or inner.full_name.startswith("google.protobuf."):
                continue
            if inner.GetOptions().map_entry:
                value_field = inner.fields_by_name["value"]
                if value_field.type == FieldDescriptor.TYPE_ENUM:
                    yield (field,)
                elif value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    value_type = _message_type(value_field)
                    for rest in _enum_paths(value_type, (*seen, inner.full_name)):
                        yield (field, *rest)
                continue
            for rest in _enum_paths(inner, (*seen, inner.full_name)):
                yield (field, *rest)


def _cases() -> list[EnumCase]:
    cases = []
    for service_name in descriptors.SERVICE_NAMES:
        if not service_name.startswith("aether.v1."):
            continue
        service = _POOL.FindServiceByName(service_name)
        for method in service.methods:
            cardinality = {
                (False, False): Cardinality.UNARY_UNARY,
                (False, True): Cardinality.UNARY_STREAM,
                (True, False): Cardinality.STREAM_UNARY,
                (True, True): Cardinality.STREAM_STREAM,
            }[(method.client_streaming, method.server_streaming)]
            for path in _enum_paths(method.input_type):
                for value in (42, -1):
                    cases.append(
                        EnumCase(
                            method=f"/{service_name}/{method.name}",
                            cardinality=cardinality,
                            request=method.input_type,
                            reply=method.output_type,
                            path=path,
                            value=value,
                        )
                    )
    return cases


CASES = _cases()


def _build(case: EnumCase) -> Message:
    cls = message_factory.GetMessageClass(case.request)
    root = cls()
    target: Message = root
    for field in case.path[:-1]:
        if _message_type(field).GetOptions().map_entry:
            target = getattr(target, field.name)["k"]
        elif field.is_repeated:
            target = getattr(target, field.name).add()
        else:
            target = getattr(target, field.name)
    last = case.path[-1]
    if last.type == FieldDescriptor.TYPE_MESSAGE:  # map<string, Enum>
        getattr(target, last.name)["k"] = case.value
    elif last.is_repeated:
        getattr(target, last.name).append(case.value)
    else:
        setattr(target, last.name, case.value)
    return root


def test_the_cases_cover_every_enum_field_of_the_api() -> None:
    covered = {(c.method.rsplit("/", 1)[1], c.field_path) for c in CASES}
    # Spot checks that the generator walks what the finding named and nested messages.
    assert ("Store", "scope") in covered
    assert ("ListTasks", "state") in covered
    assert len(covered) >= 6


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_unknown_enum_value_is_invalid_argument_naming_the_field(
    case: EnumCase, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_hub(HubConfig(port=0, dev=True)) as hub:
        status, message = await _call(hub, case)
    assert status == Status.INVALID_ARGUMENT, (status, message)
    assert message.startswith(case.path[-1].name) or case.path[0].name in message, message
    assert case.field_path.split(".")[-1] in message
    assert str(case.value) in message
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def _call(hub: HubServer, case: EnumCase) -> tuple[Status, str]:
    request = _build(case)
    reply_cls = message_factory.GetMessageClass(case.reply)
    channel = grpclib.client.Channel("127.0.0.1", hub.port)
    try:
        async with channel.request(
            case.method, case.cardinality, type(request), reply_cls, timeout=10
        ) as stream:
            await stream.send_message(request, end=True)
            try:
                while await stream.recv_message() is not None:
                    pass
                await stream.recv_trailing_metadata()
            except GRPCError as exc:
                return exc.status, exc.message or ""
    finally:
        channel.close()
    raise AssertionError(f"{case}: the call succeeded")


def test_invalid_enum_field_names_nested_paths() -> None:
    from aether._wire import pb

    ok = pb.ListTasksRequest(state=pb.TaskState.RUNNING)
    assert invalid_enum_field(ok) is None
    bad = pb.ListTasksRequest(state=pb.TaskState(42))
    problem = invalid_enum_field(bad)
    assert problem is not None and problem.startswith("state: unknown TaskState value 42")
