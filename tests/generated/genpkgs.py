"""Generate the packages the generated-code tests compare: ours and Google's.

Everything here runs once per test process (results are cached) and writes into
temporary folders, never into the repository:

- our generator's output for the kitchen-sink proto (`kitchen_api`) and for the
  real API under a vendored name;
- Google's classes for the kitchen sink, made by stock `grpc_tools.protoc
  --python_out --grpc_python_out` and imported as `kitchen.v1.kitchen_sink_pb2`;
- Google's classes for the real API (proto/). Those cannot be imported under
  their protoc module names (`aether.v1.agent_pb2`, `grpc.health.v1...`) because
  `aether` is our SDK package and `grpc` is grpcio. They are built the same way
  protoc's `_pb2` modules build them (descriptor → upb message class), from a
  stock `--descriptor_set_out`, in a private `DescriptorPool`.

Generators run as subprocesses (`python -m codegen`, `python -m grpc_tools.protoc`),
exactly as a user runs them.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from tests.generated import protoplan

REPO = Path(__file__).resolve().parents[2]
API_PROTO_ROOT = REPO / "proto"
KITCHEN_PROTO_ROOT = REPO / "tests" / "codegen" / "kitchen_sink"
KITCHEN_PROTO_FILE = "kitchen/v1/kitchen_sink.proto"
KITCHEN_PACKAGE = "kitchen_api"
KITCHEN_PROTO_PACKAGE = "kitchen.v1"
API_PROTO_PACKAGE = "aether.v1"

# Generous: two cores are shared by several concurrent jobs.
_SUBPROCESS_TIMEOUT = 120.0


class GenerationError(RuntimeError):
    """A generator subprocess failed; the message carries its output."""


def scratch_dir(prefix: str) -> Path:
    """A new temporary folder, removed when the test process exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


def wkt_include_dir() -> Path:
    """The folder of `google/protobuf/*.proto` that grpc_tools ships."""
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or not spec.submodule_search_locations:
        raise GenerationError("grpc_tools is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "_proto"


def proto_files(root: Path) -> list[str]:
    """Every .proto under `root`, as sorted paths relative to it."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.proto"))


def _run(args: list[str], *, cwd: Path) -> None:
    done = subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=_SUBPROCESS_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise GenerationError(
            f"{' '.join(args)} exited with {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )


def run_codegen(*, package: str, out: Path, proto_roots: list[Path] | None = None) -> Path:
    """Run `python -m codegen` and return the folder of the generated package."""
    args = [sys.executable, "-m", "codegen", "--package", package, "--out", str(out)]
    for root in proto_roots or []:
        args += ["--proto-root", str(root)]
    _run(args, cwd=REPO)
    # `--out` names the folder that receives the package folder; accept a
    # generator that writes the package straight into it as well.
    candidate = out / package
    package_dir = candidate if (candidate / "__init__.py").exists() else out
    if not (package_dir / "__init__.py").exists():
        raise GenerationError(f"codegen wrote no {package}/__init__.py under {out}")
    return package_dir


def run_protoc(root: Path, files: list[str], *, out: Path, grpc: bool) -> None:
    """Stock protoc: Google's Python classes (and grpcio stubs) for `files`."""
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{wkt_include_dir()}",
        f"--python_out={out}",
    ]
    if grpc:
        args.append(f"--grpc_python_out={out}")
    _run([*args, *files], cwd=REPO)


@functools.cache
def descriptor_set(root: Path) -> descriptor_pb2.FileDescriptorSet:
    """A FileDescriptorSet of every proto under `root` and its imports."""
    out = scratch_dir("descset-") / "set.pb"
    _run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{wkt_include_dir()}",
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *proto_files(root),
        ],
        cwd=REPO,
    )
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(out.read_bytes())
    return fds


def _prepend_sys_path(path: Path) -> None:
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
        importlib.invalidate_caches()


@functools.cache
def kitchen_generated() -> Path:
    """Generate the kitchen sink with our generator; importable as `kitchen_api`."""
    out = scratch_dir("kitchen-ours-")
    package_dir = run_codegen(package=KITCHEN_PACKAGE, out=out, proto_roots=[KITCHEN_PROTO_ROOT])
    _prepend_sys_path(package_dir.parent)
    return package_dir


@functools.cache
def kitchen_stock() -> Path:
    """Google's classes and grpcio stubs for the kitchen sink, importable as `kitchen.v1`."""
    out = scratch_dir("kitchen-stock-")
    run_protoc(KITCHEN_PROTO_ROOT, [KITCHEN_PROTO_FILE], out=out, grpc=True)
    _prepend_sys_path(out)
    return out


def kitchen_ours_module(name: str) -> ModuleType:
    """A module of our generated kitchen package: "messages", "models", "client", "server"."""
    kitchen_generated()
    return importlib.import_module(
        f"{KITCHEN_PACKAGE}.{module_folder(KITCHEN_PROTO_PACKAGE)}.{name}"
    )


def kitchen_pb2() -> ModuleType:
    """Google's `kitchen_sink_pb2`."""
    kitchen_stock()
    return importlib.import_module("kitchen.v1.kitchen_sink_pb2")


def kitchen_pb2_grpc() -> ModuleType:
    """grpcio's `kitchen_sink_pb2_grpc`."""
    kitchen_stock()
    return importlib.import_module("kitchen.v1.kitchen_sink_pb2_grpc")


def module_folder(proto_package: str) -> str:
    """The module path of a proto package inside a generated package (docs/generated-api.md)."""
    parts = proto_package.split(".")
    if parts[0] == "aether":
        parts = parts[1:]
    return ".".join(parts)


@functools.cache
def api_pool() -> descriptor_pool.DescriptorPool:
    """A private pool holding every file of the real API (and the WKTs it imports)."""
    pool = descriptor_pool.DescriptorPool()
    for file_proto in descriptor_set(API_PROTO_ROOT).file:
        pool.AddSerializedFile(file_proto.SerializeToString())
    return pool


def api_google_class(full_name: str) -> type[message.Message]:
    """Google's message class for a message of the real API, e.g. "aether.v1.TaskResult"."""
    return message_factory.GetMessageClass(api_pool().FindMessageTypeByName(full_name))


def _walk(prefix: str, messages: list[descriptor_pb2.DescriptorProto]) -> Iterator[str]:
    for msg in messages:
        full = f"{prefix}.{msg.name}"
        if msg.options.map_entry:
            continue
        yield full
        yield from _walk(full, list(msg.nested_type))


def message_names(root: Path, proto_package: str) -> list[str]:
    """Full names of every message of `proto_package` under `root` (nested too, no map entries)."""
    names: list[str] = []
    for file_proto in descriptor_set(root).file:
        if file_proto.package == proto_package:
            names.extend(_walk(proto_package, list(file_proto.message_type)))
    return sorted(names)


def flat_name(full_name: str, proto_package: str) -> str:
    """Our Python name of a proto type: nested names concatenated (docs/generated-api.md)."""
    return full_name[len(proto_package) + 1 :].replace(".", "")


def kitchen_ours() -> protoplan.Ours:
    """Our kitchen-sink wire classes (kitchen.v1 and the WKTs it uses)."""
    return protoplan.Ours(
        {
            KITCHEN_PROTO_PACKAGE: kitchen_ours_module("messages"),
            "google.protobuf": importlib.import_module(
                f"{KITCHEN_PACKAGE}.google.protobuf.messages"
            ),
        }
    )


def api_packages() -> list[str]:
    """The proto packages of proto/ (aether.v1, grpc.health.v1, ...), without imported WKTs."""
    own = set(proto_files(API_PROTO_ROOT))
    return sorted({f.package for f in descriptor_set(API_PROTO_ROOT).file if f.name in own})


def api_message_names() -> list[str]:
    """Full names of every message of every package of proto/."""
    return sorted(n for p in api_packages() for n in message_names(API_PROTO_ROOT, p))


def package_of(full_name: str, packages: list[str]) -> str:
    """The (longest) proto package a fully qualified name belongs to."""
    matches = [p for p in packages if full_name.startswith(p + ".")]
    if not matches:
        raise LookupError(f"{full_name} is in none of {packages}")
    return max(matches, key=len)


def api_ours() -> protoplan.Ours:
    """Our committed `aether_api` wire classes of every package of proto/ (and the WKTs)."""
    modules = {
        package: importlib.import_module(f"aether_api.{module_folder(package)}.messages")
        for package in api_packages()
    }
    modules["google.protobuf"] = importlib.import_module("aether_api.google.protobuf.messages")
    return protoplan.Ours(modules)


def kitchen_google_class(full_name: str) -> type[message.Message]:
    """Google's class for a kitchen-sink message, e.g. "kitchen.v1.Outer.Inner"."""
    pool = kitchen_pb2().DESCRIPTOR.pool
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))
