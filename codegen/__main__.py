"""``python -m codegen [--check] [--package NAME] [--out DIR] [--proto-root DIR ...]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from codegen import build, descriptors, render, toolchain, writer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m codegen",
        description="Generate the typed Aether API package from the protos.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the output dir differs from what would be generated",
    )
    parser.add_argument("--package", default="aether_api", help="output package name")
    parser.add_argument("--out", default="generated", type=Path, help="output directory")
    parser.add_argument(
        "--proto-root",
        action="append",
        type=Path,
        dest="proto_roots",
        help="folder of .proto files (repeatable; default: proto)",
    )
    return parser


def generate(package: str, proto_roots: Sequence[Path]) -> dict[str, bytes]:
    """Every output file (path relative to the out dir → formatted bytes)."""
    toolchain.check_toolchain()
    if not package.isidentifier():
        raise ValueError(f"--package {package!r} is not a valid Python package name")
    fds = descriptors.build_descriptor_set(proto_roots)
    packages = build.build(fds)
    texts = render.Renderer(package).render(packages, fds)
    py = {rel: text for rel, text in texts.items() if rel.endswith(".py")}
    formatted = writer.format_files(py)
    return {rel: formatted.get(rel, text.encode()) for rel, text in texts.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the generator; the exit status is 0 on success, 1 on drift or error."""
    args = _parser().parse_args(argv)
    roots: list[Path] = args.proto_roots or [Path("proto")]
    out: Path = args.out
    try:
        files = generate(args.package, roots)
    except (
        toolchain.ToolchainError,
        descriptors.ProtocError,
        build.BuildError,
        writer.FormatError,
        ValueError,
    ) as exc:
        print(f"codegen: error: {exc}", file=sys.stderr)
        return 1
    if args.check:
        drift = writer.diff(out, files)
        for rel in drift.stale:
            print(f"{out / rel} is stale: run `make codegen`", file=sys.stderr)
        for rel in drift.missing:
            print(f"{out / rel} is stale (missing): run `make codegen`", file=sys.stderr)
        for rel in drift.extra:
            print(
                f"{out / rel} is stale (an extra file codegen does not generate): "
                "run `make codegen`",
                file=sys.stderr,
            )
        if drift.clean:
            print(f"codegen: {out / args.package} is up to date ({len(files)} files)")
            return 0
        return 1
    drift = writer.write(out, files)
    changed = len(drift.stale) + len(drift.missing) + len(drift.extra)
    print(f"codegen: {out / args.package}: {changed} of {len(files)} files changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
