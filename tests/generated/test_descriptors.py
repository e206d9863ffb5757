"""The generated `descriptors` module against protoc: what server reflection hands to clients.

grpcurl, Postman and grpcio-reflection clients rebuild the API from these bytes,
so they must be protoc's descriptors, closed under imports, with every symbol
findable — for the committed `aether_api` and for the kitchen sink alike.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from tests.generated import genpkgs


@dataclass(frozen=True)
class Case:
    """A generated package and the protos it was made from."""

    module: ModuleType
    root: Path


def _case(name: str) -> Case:
    if name == "aether_api":
        return Case(importlib.import_module("aether_api.descriptors"), genpkgs.API_PROTO_ROOT)
    genpkgs.kitchen_generated()
    return Case(
        importlib.import_module(f"{genpkgs.KITCHEN_PACKAGE}.descriptors"),
        genpkgs.KITCHEN_PROTO_ROOT,
    )


@pytest.fixture(params=["aether_api", "kitchen_api"])
def case(request: pytest.FixtureRequest) -> Case:
    name: str = request.param
    return _case(name)


def _files(case: Case) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for name, data in case.module.FILE_DESCRIPTORS.items():
        proto = descriptor_pb2.FileDescriptorProto()
        proto.ParseFromString(data)
        assert proto.name == name
        files[name] = proto
    return files


def _protoc_files(case: Case) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    return {f.name: f for f in genpkgs.descriptor_set(case.root).file}


def test_file_descriptors_are_protocs(case: Case) -> None:
    ours = _files(case)
    theirs = _protoc_files(case)
    own = set(genpkgs.proto_files(case.root))
    assert own <= set(ours), f"missing: {sorted(own - set(ours))}"
    for name, proto in ours.items():
        expected = descriptor_pb2.FileDescriptorProto()
        expected.CopyFrom(theirs[name])
        expected.ClearField("source_code_info")
        assert proto == expected, name


def test_file_descriptors_are_closed_under_imports(case: Case) -> None:
    files = _files(case)
    for name, proto in files.items():
        missing = [dep for dep in proto.dependency if dep not in files]
        assert not missing, f"{name} imports {missing}, which reflection cannot serve"

    # A fresh pool (what a reflection client builds) accepts them in dependency order.
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    while len(added) < len(files):
        ready = [n for n, p in files.items() if n not in added and set(p.dependency) <= added]
        assert ready, f"import cycle among {sorted(set(files) - added)}"
        for name in sorted(ready):
            pool.Add(files[name])
            added.add(name)
    services = set(case.module.SERVICE_NAMES)
    for symbol, file_name in case.module.SYMBOL_FILES.items():
        parent, _, leaf = symbol.rpartition(".")
        if parent in services:  # a method: upb's pool finds those through their service
            service = pool.FindServiceByName(parent)
            assert leaf in service.methods_by_name, symbol
            assert service.file.name == file_name, symbol
        else:
            assert pool.FindFileContainingSymbol(symbol).name == file_name, symbol


def _symbols(proto: descriptor_pb2.FileDescriptorProto) -> set[str]:
    prefix = f"{proto.package}." if proto.package else ""
    found: set[str] = set()

    def walk_messages(messages: list[descriptor_pb2.DescriptorProto], scope: str) -> None:
        for msg in messages:
            name = scope + msg.name
            if not msg.options.map_entry:
                found.add(name)
            found.update(f"{name}.{e.name}" for e in msg.enum_type)
            walk_messages(list(msg.nested_type), name + ".")

    walk_messages(list(proto.message_type), prefix)
    found.update(prefix + e.name for e in proto.enum_type)
    for service in proto.service:
        found.add(prefix + service.name)
        found.update(f"{prefix}{service.name}.{m.name}" for m in service.method)
    return found


def test_symbols_and_services(case: Case) -> None:
    theirs = _protoc_files(case)
    own = genpkgs.proto_files(case.root)
    expected_symbols = {s: f for f in own for s in _symbols(theirs[f])}
    symbol_files: dict[str, str] = case.module.SYMBOL_FILES
    missing = sorted(set(expected_symbols) - set(symbol_files))
    assert not missing, f"SYMBOL_FILES lacks {missing}"
    for symbol, file_name in expected_symbols.items():
        assert symbol_files[symbol] == file_name, symbol

    services = {f"{theirs[f].package}.{s.name}" for f in own for s in theirs[f].service}
    assert set(case.module.SERVICE_NAMES) == services
    assert list(case.module.SERVICE_NAMES) == sorted(case.module.SERVICE_NAMES)
