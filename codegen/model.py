"""The IR between descriptors and templates: small frozen dataclasses.

Templates only read these prepared properties (names, annotation text, field-call text,
docstrings); every decision about the generated code is made in ``codegen.build``.
"""

from __future__ import annotations

from dataclasses import dataclass

from codegen.wirecode import FieldCode


@dataclass(frozen=True)
class EnumValue:
    """One enum member."""

    py_name: str
    proto_name: str
    number: int
    doc: str


@dataclass(frozen=True)
class Enum:
    """An enum (nested enums are flattened into the module)."""

    py_name: str
    full_name: str
    doc: str
    values: tuple[EnumValue, ...]


@dataclass(frozen=True)
class Field:
    """A message field with its generated text prepared."""

    py_name: str
    proto_name: str
    number: int
    doc: str
    wire_annotation: str
    wire_call: str
    model_annotation: str
    model_default: str
    """Right-hand side of the model field: a default, or a ``pydantic.Field(...)`` call."""
    to_wire: str
    """Expression converting ``self.<name>`` of the model to the wire value."""
    from_wire: str
    """Expression converting ``wire.<name>`` to the model value."""
    oneof: str | None
    codec: FieldCode
    """The straight-line codec text of the field."""


@dataclass(frozen=True)
class JsonAccessor:
    """The parsed accessor of a ``string x_json`` field: the model method ``x()``."""

    py_name: str
    """The method's name: the field's proto name without ``_json`` (escaped if taken)."""
    field: str
    """The Python name of the string field it parses."""

    @property
    def doc(self) -> str:
        """The method's docstring."""
        return (
            f"`{self.field}` parsed: its JSON value, or None when it is empty.\n\n"
            f"Raises `JsonFieldError` (a `ValueError`) when it is not valid JSON."
        )


@dataclass(frozen=True)
class Oneof:
    """A real (non-synthetic) oneof group."""

    name: str
    fields: tuple[str, ...]
    doc: str


@dataclass(frozen=True)
class Message:
    """A message (nested messages are flattened into the module)."""

    py_name: str
    proto_name: str
    full_name: str
    doc: str
    fields: tuple[Field, ...]
    oneofs: tuple[Oneof, ...]
    wrapped: str | None
    """``"timestamp"`` or ``"duration"`` for the WKT that betterproto2 unwraps."""
    json_accessors: tuple[JsonAccessor, ...] = ()
    """The model's parsed accessors of its ``string x_json`` fields."""

    @property
    def class_doc(self) -> str:
        """The class docstring: the message's comment plus one line per oneof group."""
        lines = [self.doc]
        for oneof in self.oneofs:
            members = ", ".join(f"`{name}`" for name in oneof.fields)
            about = f" {' '.join(oneof.doc.split())}" if oneof.doc else ""
            lines.append(f"Oneof `{oneof.name}` (at most one of {members} is set).{about}")
        return "\n\n".join(lines)

    @property
    def encode_lines(self) -> tuple[str, ...]:
        """Body of ``__bytes__`` (before the unknown fields), in field-number order."""
        fields = sorted(self.fields, key=lambda f: f.number)
        return tuple(line for f in fields for line in f.codec.encode)

    @property
    def decode_cases(self) -> tuple[tuple[int, tuple[str, ...]], ...]:
        """(tag, statements) of ``parse``; a oneof member clears its siblings."""
        groups = {o.name: o.fields for o in self.oneofs}
        cases: list[tuple[int, tuple[str, ...]]] = []
        for f in self.fields:
            siblings = [n for n in groups.get(f.oneof or "", ()) if n != f.py_name]
            for tag, statement in f.codec.decode:
                cases.append((tag, (statement, *(f"f_{n} = None" for n in siblings))))
        return tuple(sorted(cases))

    @property
    def in_order_cases(self) -> tuple[tuple[int, tuple[str, ...]], ...]:
        """(tag, statements) of ``parse``'s straight-line prefix, in field-number order.

        Encoders write fields in field-number order, so most input is read by one ``if`` per
        field before the general tag loop (which then sees nothing, or whatever came out of
        order). Only one-byte tags, and per field the first of its cases (packed for packable
        repeated fields).
        """
        by_tag = dict(self.decode_cases)
        cases: list[tuple[int, tuple[str, ...]]] = []
        for f in sorted(self.fields, key=lambda f: f.number):
            tag = f.codec.decode[0][0]
            if tag < 0x80:
                cases.append((tag, by_tag[tag]))
        return tuple(cases)


@dataclass(frozen=True)
class Method:
    """An RPC."""

    py_name: str
    proto_name: str
    path: str
    doc: str
    request: str
    reply: str
    client_streaming: bool
    server_streaming: bool

    @property
    def shape(self) -> str:
        """``unary_unary``, ``unary_stream``, ``stream_unary`` or ``stream_stream``."""
        return (
            ("stream" if self.client_streaming else "unary")
            + "_"
            + ("stream" if self.server_streaming else "unary")
        )

    @property
    def cardinality(self) -> str:
        """The grpclib Cardinality member."""
        return self.shape.upper()


@dataclass(frozen=True)
class Service:
    """A service."""

    py_name: str
    full_name: str
    doc: str
    methods: tuple[Method, ...]


@dataclass(frozen=True)
class Package:
    """One proto package = one module folder of the output."""

    proto_package: str
    parts: tuple[str, ...]
    sources: tuple[str, ...]
    enums: tuple[Enum, ...]
    messages: tuple[Message, ...]
    services: tuple[Service, ...]
    messages_imports: tuple[str, ...]
    models_imports: tuple[str, ...]
    client_imports: tuple[str, ...]
    server_imports: tuple[str, ...]

    @property
    def folder(self) -> str:
        """The folder relative to the package root, e.g. ``grpc/health/v1``."""
        return "/".join(self.parts)

    @property
    def model_messages(self) -> tuple[Message, ...]:
        """Messages that get a Pydantic model (the unwrapped WKT do not)."""
        return tuple(m for m in self.messages if m.wrapped is None)
