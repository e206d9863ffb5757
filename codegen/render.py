"""Render the IR with Jinja into unformatted module texts (path → text)."""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path

import jinja2
from google.protobuf import descriptor_pb2

from codegen import GENERATOR_VERSION, model, toolchain

TEMPLATES = Path(__file__).parent / "templates"
_ALL = "__CODEGEN_ALL_PLACEHOLDER__"
_B64_CHUNK = 76


def _pystr(value: object) -> str:
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _docstring(text: str, indent: int) -> str:
    """A triple-quoted docstring, lines re-wrapped to fit the line length."""
    body = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    width = 100 - indent
    lines: list[str] = []
    for line in body.splitlines():
        if len(line) <= width - 6:
            lines.append(line)
        else:
            lead = line[: len(line) - len(line.lstrip())]
            lines.extend(
                textwrap.wrap(line, width=width - 6, subsequent_indent=lead, break_long_words=False)
            )
    if body.endswith('"'):
        lines[-1] += " "
    if len(lines) == 1 and len(lines[0]) + 6 <= width:
        return f'"""{lines[0]}"""'
    pad = " " * indent
    inner = "\n".join((pad + line) if line else "" for line in lines)
    return f'"""\n{inner}\n{pad}"""'


def environment() -> jinja2.Environment:
    """The Jinja environment: strict about undefined names, block whitespace trimmed."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["pystr"] = _pystr
    env.filters["docstring"] = _docstring
    return env


class Renderer:
    """Renders every output module of one run."""

    def __init__(self, package_name: str) -> None:
        self.package_name = package_name
        self.env = environment()

    def _render(self, template: str, sources: str, **context: object) -> str:
        exported: list[str] = []

        def export(name: str) -> str:
            exported.append(name)
            return ""

        text = self.env.get_template(template).render(
            sources=textwrap.wrap(f"Sources: {sources}.", 96, break_on_hyphens=False),
            generator_version=GENERATOR_VERSION,
            betterproto2_minor=toolchain.BETTERPROTO2_MINOR,
            ALL=_ALL,
            export=export,
            **context,
        )
        names = sorted(set(exported))
        all_text = "__all__ = (" + "".join(f"{_pystr(n)}, " for n in names) + ")"
        if not names:
            all_text = "__all__: tuple[str, ...] = ()"
        return text.replace(_ALL, all_text)

    def render(
        self, packages: list[model.Package], fds: descriptor_pb2.FileDescriptorSet
    ) -> dict[str, str]:
        """Module texts keyed by path relative to the output dir (``aether_api/...``)."""
        root = self.package_name
        out: dict[str, str] = {}
        static = "its template (no proto input)"
        out[f"{root}/py.typed"] = ""
        for name in ("codec", "runtime", "model_base", "message_pool"):
            out[f"{root}/{name}.py"] = self._render(f"{name}.py.j2", static)
        all_sources = ", ".join(sorted(f.name for f in fds.file))
        out[f"{root}/descriptors.py"] = self._descriptors(fds, all_sources)
        folders: dict[str, str] = {root: f"The generated Aether API package `{root}`."}
        for pkg in packages:
            sources = ", ".join(pkg.sources)
            base = f"{root}/{pkg.folder}"
            parts = pkg.folder.split("/")
            for depth in range(1, len(parts)):
                folder = f"{root}/{'/'.join(parts[:depth])}"
                folders.setdefault(
                    folder, f"Namespace of the generated `{'.'.join(parts[:depth])}` packages."
                )
            folders[base] = f"Generated code of proto package `{pkg.proto_package}`."
            ctx: dict[str, object] = {"pkg": pkg, "dots": "." * (len(parts) + 1)}
            out[f"{base}/messages.py"] = self._render("messages.py.j2", sources, **ctx)
            out[f"{base}/models.py"] = self._render("models.py.j2", sources, **ctx)
            if pkg.services:
                out[f"{base}/client.py"] = self._render("client.py.j2", sources, **ctx)
                out[f"{base}/server.py"] = self._render("server.py.j2", sources, **ctx)
        for folder, doc in sorted(folders.items()):
            out[f"{folder}/__init__.py"] = self._render("package_init.py.j2", static, doc=doc)
        return dict(sorted(out.items()))

    def _descriptors(self, fds: descriptor_pb2.FileDescriptorSet, sources: str) -> str:
        files: list[tuple[str, list[str]]] = []
        symbols: dict[str, str] = {}
        services: list[str] = []
        for fdp in sorted(fds.file, key=lambda f: f.name):
            bare = descriptor_pb2.FileDescriptorProto()
            bare.CopyFrom(fdp)
            bare.ClearField("source_code_info")
            encoded = base64.b64encode(bare.SerializeToString(deterministic=True)).decode()
            chunks = [encoded[i : i + _B64_CHUNK] for i in range(0, len(encoded), _B64_CHUNK)]
            files.append((fdp.name, chunks or [""]))
            prefix = f"{fdp.package}." if fdp.package else ""
            for enum in fdp.enum_type:
                symbols[prefix + enum.name] = fdp.name
            _message_symbols(prefix, fdp.message_type, fdp.name, symbols.__setitem__)
            for svc in fdp.service:
                services.append(prefix + svc.name)
                symbols[prefix + svc.name] = fdp.name
                for method in svc.method:
                    symbols[f"{prefix}{svc.name}.{method.name}"] = fdp.name
        return self._render(
            "descriptors.py.j2",
            sources,
            files=files,
            services=sorted(services),
            symbols=_by_file(symbols),
        )


def _by_file(symbols: dict[str, str]) -> list[tuple[str, list[str]]]:
    grouped: dict[str, list[str]] = {}
    for symbol, file in sorted(symbols.items()):
        grouped.setdefault(file, []).append(symbol)
    return sorted(grouped.items())


def _message_symbols(
    prefix: str,
    messages: Iterable[descriptor_pb2.DescriptorProto],
    file: str,
    add: Callable[[str, str], None],
) -> None:
    for msg in messages:
        name = prefix + msg.name
        add(name, file)
        for enum in msg.enum_type:
            add(f"{name}.{enum.name}", file)
        _message_symbols(name + ".", msg.nested_type, file, add)
