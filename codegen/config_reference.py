"""The configuration reference table of the README, generated from `AgentConfig`.

The README carries the table between two markers; a test re-renders it from the
`AgentConfig` fields (names, types, defaults, environment variables, descriptions) and
fails when they drift apart. Regenerate it with:

    python -m codegen.config_reference --write README.md

It also generates the typed `__init__` that `AgentConfig` declares for type checkers
(between markers in aether/config.py; a test checks it too). Regenerate it with:

    python -m codegen.config_reference --write-init
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
import typing
from pathlib import Path

from pydantic.fields import FieldInfo

from aether.config import AgentConfig

__all__ = (
    "BEGIN_MARKER",
    "END_MARKER",
    "INIT_BEGIN_MARKER",
    "INIT_END_MARKER",
    "render_init_stub",
    "render_table",
    "replace_init_stub",
    "replace_table",
)

BEGIN_MARKER = "<!-- BEGIN AgentConfig reference (generated; do not edit by hand) -->"
END_MARKER = "<!-- END AgentConfig reference -->"
INIT_BEGIN_MARKER = "# BEGIN generated __init__ (config_reference --write-init)"
INIT_END_MARKER = "# END generated __init__"


def _type_name(annotation: object) -> str:
    """A short, readable spelling of a field annotation (`dict[str, str]`, `float | None`)."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(arg) for arg in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        factory = typing.cast("typing.Callable[[], object]", field.default_factory)
        value = factory()
    else:
        value = field.default
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 30 reads better than 30.0 in a table of seconds
    return repr(value)


#: Field types a caller may also pass as a plain `str` (pydantic converts it).
_ACCEPTS_STR = ("SecretStr",)

#: Defaults shown as such in the generated signature; anything else is `...`.
_LITERAL_DEFAULTS = (str, int, float, bool, type(None))


def _init_type(annotation: object) -> str:
    spelled = _type_name(annotation)
    for name in _ACCEPTS_STR:
        spelled = spelled.replace(name, f"{name} | str")
    return spelled


def _init_default(field: FieldInfo) -> str:
    if field.is_required():
        return ""
    value = field.default
    if field.default_factory is None and isinstance(value, _LITERAL_DEFAULTS):
        if isinstance(value, str):
            return f' = "{value}"' if '"' not in value and "\\" not in value else f" = {value!r}"
        return f" = {value!r}"
    return " = ..."


def render_init_stub() -> str:
    """The typed `__init__` AgentConfig declares for type checkers, from its fields.

    Pydantic's synthesized signature takes each field's own type, so `secret="sk-..."`
    (converted to `SecretStr` at run time) would not type-check; this one also accepts a
    `str` for `SecretStr` fields. Indented for the `if TYPE_CHECKING:` block of the class.
    """
    lines = [
        "        def __init__(",
        "            self,",
        "            *,",
    ]
    for name, field in AgentConfig.model_fields.items():
        lines.append(f"            {name}: {_init_type(field.annotation)}{_init_default(field)},")
    lines.append("        ) -> None: ...")
    return "\n".join(lines) + "\n"


def replace_init_stub(source: str) -> str:
    """`source` (aether/config.py) with the generated `__init__` between its markers."""
    for marker in (INIT_BEGIN_MARKER, INIT_END_MARKER):
        if source.count(marker) != 1:
            raise ValueError(f"expected the marker {marker!r} exactly once")
    head, rest = source.split(INIT_BEGIN_MARKER)
    _, tail = rest.split(INIT_END_MARKER)
    indent = "        "
    # The blank line is ruff's: it keeps one between a function and a comment after it.
    return f"{head}{INIT_BEGIN_MARKER}\n{render_init_stub()}\n{indent}{INIT_END_MARKER}{tail}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table() -> str:
    """The Markdown table of every `AgentConfig` field, in declaration order."""
    rows = [
        "| Field | Type | Default | Environment variable | Description |",
        "|---|---|---|---|---|",
    ]
    for name, field in AgentConfig.model_fields.items():
        env = AgentConfig.ENV_VARS.get(name, "")
        rows.append(
            "| "
            + " | ".join(
                [
                    f"`{name}`",
                    f"`{_cell(_type_name(field.annotation))}`",
                    f"`{_cell(_default(field))}`",
                    f"`{env}`" if env else "",
                    _cell(field.description or ""),
                ]
            )
            + " |"
        )
    return "\n".join(rows) + "\n"


def replace_table(document: str) -> str:
    """`document` with the text between the markers replaced by a fresh table.

    Raises `ValueError` naming the missing marker when the document has none.
    """
    for marker in (BEGIN_MARKER, END_MARKER):
        if document.count(marker) != 1:
            raise ValueError(f"expected the marker {marker!r} exactly once")
    head, rest = document.split(BEGIN_MARKER)
    _, tail = rest.split(END_MARKER)
    return f"{head}{BEGIN_MARKER}\n{render_table()}{END_MARKER}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Print the table, or rewrite it in place in the files given with `--write`."""
    parser = argparse.ArgumentParser(prog="python -m codegen.config_reference")
    parser.add_argument("--write", metavar="FILE", nargs="*", default=None)
    parser.add_argument(
        "--write-init",
        action="store_true",
        help="rewrite the generated AgentConfig.__init__ in aether/config.py",
    )
    args = parser.parse_args(argv)
    if args.write_init:
        path = Path(inspect.getfile(AgentConfig))
        path.write_text(replace_init_stub(path.read_text(encoding="utf-8")), encoding="utf-8")
        if args.write is None:
            return 0
    if args.write is None:
        sys.stdout.write(render_table())
        return 0
    for name in args.write:
        path = Path(name)
        path.write_text(replace_table(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
