"""gRPC server reflection (v1 and v1alpha) for the dev Hub, from `aether._wire.descriptors`.

grpcurl, Postman and grpcio reflection clients ask for the services a server offers and
for the descriptors of their files; the generated package carries those descriptors, so
the Hub answers without protobuf or grpcio installed. A file is sent together with every
file it imports (transitively), the asked-for file first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

from aether_hub._wire import (
    descriptors,
    reflection_v1_pb,
    reflection_v1_server,
    reflection_v1alpha_pb,
    reflection_v1alpha_server,
    runtime,
)

__all__ = ("ReflectionIndex", "ReflectionV1", "ReflectionV1Alpha", "file_dependencies")

# gRPC status codes used in ErrorResponse.error_code.
_NOT_FOUND = 5
_INVALID_ARGUMENT = 3


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def file_dependencies(serialized: bytes) -> list[str]:
    """The `dependency` names (field 3) of a serialized FileDescriptorProto."""
    deps: list[str] = []
    pos = 0
    while pos < len(serialized):
        key, pos = _varint(serialized, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _varint(serialized, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _varint(serialized, pos)
            if number == 3:
                deps.append(serialized[pos : pos + length].decode("utf-8"))
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
    return deps


@dataclass(frozen=True, slots=True)
class _Files:
    files: list[bytes]


@dataclass(frozen=True, slots=True)
class _Services:
    names: list[str]


@dataclass(frozen=True, slots=True)
class _Extensions:
    base_type: str


@dataclass(frozen=True, slots=True)
class _Error:
    code: int
    message: str


_Answer = _Files | _Services | _Extensions | _Error


class ReflectionIndex:
    """What reflection answers: the served services and the descriptor files."""

    def __init__(
        self,
        services: Iterable[str],
        files: Mapping[str, bytes] | None = None,
        symbols: Mapping[str, str] | None = None,
    ) -> None:
        self.services: tuple[str, ...] = tuple(sorted(set(services)))
        self._files = dict(descriptors.FILE_DESCRIPTORS if files is None else files)
        self._symbols = dict(descriptors.SYMBOL_FILES if symbols is None else symbols)
        self._deps = {name: file_dependencies(data) for name, data in self._files.items()}

    def closure(self, filename: str) -> list[bytes]:
        """`filename` and every file it imports, transitively; the file itself first."""
        order: list[str] = []
        seen: set[str] = set()
        stack = [filename]
        while stack:
            name = stack.pop()
            if name in seen or name not in self._files:
                continue
            seen.add(name)
            order.append(name)
            stack.extend(reversed(self._deps.get(name, [])))
        return [self._files[name] for name in order]

    def file_of_symbol(self, symbol: str) -> str | None:
        """The file defining a fully qualified symbol (or its enclosing one: a field)."""
        name = symbol.lstrip(".")
        while name:
            found = self._symbols.get(name)
            if found is not None:
                return found
            name = name.rpartition(".")[0]
        return None

    def answer(
        self,
        *,
        file_by_filename: str | None,
        file_containing_symbol: str | None,
        has_extension_request: bool,
        extension_type: str,
        all_extension_numbers_of_type: str | None,
        list_services: str | None,
    ) -> _Answer:
        """The answer to one reflection request, whatever its version."""
        if list_services is not None:
            return _Services(list(self.services))
        if file_by_filename is not None:
            if file_by_filename not in self._files:
                return _Error(_NOT_FOUND, f"unknown file {file_by_filename!r}")
            return _Files(self.closure(file_by_filename))
        if file_containing_symbol is not None:
            found = self.file_of_symbol(file_containing_symbol)
            if found is None:
                return _Error(_NOT_FOUND, f"unknown symbol {file_containing_symbol!r}")
            return _Files(self.closure(found))
        if has_extension_request:
            return _Error(_NOT_FOUND, f"no extensions of {extension_type!r} are known")
        if all_extension_numbers_of_type is not None:
            if self.file_of_symbol(all_extension_numbers_of_type) is None:
                return _Error(_NOT_FOUND, f"unknown type {all_extension_numbers_of_type!r}")
            return _Extensions(all_extension_numbers_of_type.lstrip("."))
        return _Error(_INVALID_ARGUMENT, "empty reflection request: set one message_request")


def _respond(
    index: ReflectionIndex, request: reflection_v1_pb.ServerReflectionRequest
) -> reflection_v1_pb.ServerReflectionResponse:
    m = reflection_v1_pb
    ext = request.file_containing_extension
    answer = index.answer(
        file_by_filename=request.file_by_filename,
        file_containing_symbol=request.file_containing_symbol,
        has_extension_request=ext is not None,
        extension_type=ext.containing_type if ext is not None else "",
        all_extension_numbers_of_type=request.all_extension_numbers_of_type,
        list_services=request.list_services,
    )
    response = m.ServerReflectionResponse(valid_host=request.host, original_request=request)
    if isinstance(answer, _Files):
        response.file_descriptor_response = m.FileDescriptorResponse(
            file_descriptor_proto=answer.files
        )
    elif isinstance(answer, _Services):
        response.list_services_response = m.ListServiceResponse(
            service=[m.ServiceResponse(name=name) for name in answer.names]
        )
    elif isinstance(answer, _Extensions):
        response.all_extension_numbers_response = m.ExtensionNumberResponse(
            base_type_name=answer.base_type
        )
    else:
        response.error_response = m.ErrorResponse(
            error_code=answer.code, error_message=answer.message
        )
    return response


class ReflectionV1(reflection_v1_server.ServerReflectionBase):
    """`grpc.reflection.v1.ServerReflection`."""

    def __init__(self, index: ReflectionIndex) -> None:
        self._index = index

    async def server_reflection_info(
        self,
        requests: AsyncIterator[reflection_v1_pb.ServerReflectionRequest],
        context: runtime.ServerContext,
    ) -> AsyncIterator[reflection_v1_pb.ServerReflectionResponse]:
        """One response per request, in order."""
        async for request in requests:
            yield _respond(self._index, request)


class ReflectionV1Alpha(reflection_v1alpha_server.ServerReflectionBase):
    """`grpc.reflection.v1alpha.ServerReflection` (what older grpcurl versions use)."""

    def __init__(self, index: ReflectionIndex) -> None:
        self._index = index

    async def server_reflection_info(
        self,
        requests: AsyncIterator[reflection_v1alpha_pb.ServerReflectionRequest],
        context: runtime.ServerContext,
    ) -> AsyncIterator[reflection_v1alpha_pb.ServerReflectionResponse]:
        """One response per request, in order."""
        # v1alpha and v1 are the same messages under two package names, so the wire bytes
        # of one parse as the other: one answering path serves both.
        async for request in requests:
            v1_request = reflection_v1_pb.ServerReflectionRequest.parse(bytes(request))
            v1_response = _respond(self._index, v1_request)
            yield reflection_v1alpha_pb.ServerReflectionResponse.parse(bytes(v1_response))
