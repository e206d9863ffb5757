"""Compile the protos in-process into a FileDescriptorSet (no system protoc)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

DUMP_ENV = "AETHER_CODEGEN_DUMP"
"""If set, the FileDescriptorSet is also saved to this path (for debugging)."""


class ProtocError(RuntimeError):
    """protoc rejected the input; the message names the proto root and files."""


def find_protos(proto_roots: Sequence[Path]) -> list[tuple[Path, str]]:
    """Every ``.proto`` under the roots as (root, name relative to root), sorted by name."""
    found: dict[str, Path] = {}
    for root in proto_roots:
        if not root.is_dir():
            raise ProtocError(f"proto root {root} is not a directory")
        for path in sorted(root.rglob("*.proto")):
            name = path.relative_to(root).as_posix()
            found.setdefault(name, root)
    return [(found[name], name) for name in sorted(found)]


def wkt_include() -> Path:
    """The folder of the well-known-type protos shipped inside grpcio-tools."""
    return Path(str(resources.files("grpc_tools") / "_proto"))


def build_descriptor_set(proto_roots: Sequence[Path]) -> descriptor_pb2.FileDescriptorSet:
    """Run protoc on every proto under the roots and return the parsed descriptor set."""
    files = find_protos(proto_roots)
    if not files:
        roots = ", ".join(str(r) for r in proto_roots)
        raise ProtocError(f"no .proto files under {roots}")
    with tempfile.TemporaryDirectory(prefix="aether-codegen-") as tmp:
        out = Path(tmp) / "descriptors.pb"
        args = ["grpc_tools.protoc"]
        args += [f"--proto_path={root}" for root in proto_roots]
        args += [
            f"--proto_path={wkt_include()}",
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={out}",
        ]
        args += [name for _, name in files]
        code = protoc.main(args)
        if code != 0 or not out.exists():
            raise ProtocError(
                f"protoc failed (exit {code}) on {len(files)} files; see stderr above"
            )
        data = out.read_bytes()
    fds = descriptor_pb2.FileDescriptorSet.FromString(data)
    # Files in a stable order (protoc emits dependency order; we want sorted by name).
    ordered = sorted(fds.file, key=lambda f: f.name)
    result = descriptor_pb2.FileDescriptorSet()
    result.file.extend(ordered)
    dump = os.environ.get(DUMP_ENV)
    if dump:
        Path(dump).write_bytes(result.SerializeToString(deterministic=True))
    return result
