"""Descriptors → IR: every decision about names, types and text is made here."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2

from codegen import model, naming, wirecode

_FDP = descriptor_pb2.FieldDescriptorProto

WKT_PACKAGE = "google.protobuf"
WRAPPED = {".google.protobuf.Timestamp": "timestamp", ".google.protobuf.Duration": "duration"}

_TYPE_NAMES: dict[int, str] = {
    _FDP.TYPE_DOUBLE: "TYPE_DOUBLE",
    _FDP.TYPE_FLOAT: "TYPE_FLOAT",
    _FDP.TYPE_INT64: "TYPE_INT64",
    _FDP.TYPE_UINT64: "TYPE_UINT64",
    _FDP.TYPE_INT32: "TYPE_INT32",
    _FDP.TYPE_FIXED64: "TYPE_FIXED64",
    _FDP.TYPE_FIXED32: "TYPE_FIXED32",
    _FDP.TYPE_BOOL: "TYPE_BOOL",
    _FDP.TYPE_STRING: "TYPE_STRING",
    _FDP.TYPE_MESSAGE: "TYPE_MESSAGE",
    _FDP.TYPE_BYTES: "TYPE_BYTES",
    _FDP.TYPE_UINT32: "TYPE_UINT32",
    _FDP.TYPE_ENUM: "TYPE_ENUM",
    _FDP.TYPE_SFIXED32: "TYPE_SFIXED32",
    _FDP.TYPE_SFIXED64: "TYPE_SFIXED64",
    _FDP.TYPE_SINT32: "TYPE_SINT32",
    _FDP.TYPE_SINT64: "TYPE_SINT64",
}
_WIRE_SCALARS: dict[int, str] = {
    _FDP.TYPE_DOUBLE: "float",
    _FDP.TYPE_FLOAT: "float",
    _FDP.TYPE_BOOL: "bool",
    _FDP.TYPE_STRING: "str",
    _FDP.TYPE_BYTES: "bytes",
}
_MODEL_INTS: dict[int, str] = {
    _FDP.TYPE_INT32: "_mb.Int32",
    _FDP.TYPE_SINT32: "_mb.Int32",
    _FDP.TYPE_SFIXED32: "_mb.Int32",
    _FDP.TYPE_UINT32: "_mb.UInt32",
    _FDP.TYPE_FIXED32: "_mb.UInt32",
    _FDP.TYPE_INT64: "_mb.Int64",
    _FDP.TYPE_SINT64: "_mb.Int64",
    _FDP.TYPE_SFIXED64: "_mb.Int64",
    _FDP.TYPE_UINT64: "_mb.UInt64",
    _FDP.TYPE_FIXED64: "_mb.UInt64",
}
_ZEROS: dict[str, str] = {"float": "0.0", "bool": "False", "str": '""', "bytes": 'b""', "int": "0"}


class BuildError(ValueError):
    """The protos use something the generator does not support; the message says what."""


@dataclass(frozen=True)
class _TypeInfo:
    full_name: str
    proto_package: str
    parts: tuple[str, ...]
    py_name: str
    is_enum: bool
    file: str
    proto: descriptor_pb2.DescriptorProto | None
    enum_zero: str
    map_entry: bool


@dataclass
class _Imports:
    """Modules one generated module needs, collected while its text is prepared."""

    parts: tuple[str, ...]
    lines: set[str] = field(default_factory=set)

    @property
    def dots(self) -> str:
        return "." * (len(self.parts) + 1)

    def other(self, parts: tuple[str, ...], module: str, suffix: str) -> str:
        alias = naming.module_alias(list(parts), suffix)
        self.lines.add(f"from {self.dots}{'.'.join(parts)} import {module} as {alias}")
        return alias

    def add(self, line: str) -> None:
        self.lines.add(line)


def _clean_comment(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents, default=0)
    return "\n".join(line[cut:] for line in lines)


def _comments(fdp: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    result: dict[tuple[int, ...], str] = {}
    for loc in fdp.source_code_info.location:
        text = loc.leading_comments or loc.trailing_comments
        if text:
            result[tuple(loc.path)] = _clean_comment(text)
    return result


@dataclass(frozen=True)
class _FieldShape:
    """How a field is laid out on the wire and in the model."""

    is_map: bool
    repeated: bool
    optional: bool
    """Singular with presence: proto3 `optional`, a oneof member or a message."""
    required: bool
    """A plain string field whose comment says "(required)": the model wants it non-empty."""

    @classmethod
    def of(
        cls,
        fd: descriptor_pb2.FieldDescriptorProto,
        doc: str,
        group: str | None,
        types: dict[str, _TypeInfo],
    ) -> _FieldShape:
        """The shape of `fd` (in oneof `group`, if any)."""
        repeated = fd.label == _FDP.LABEL_REPEATED
        entry = types.get(fd.type_name) if fd.type_name else None
        optional = not repeated and (
            fd.proto3_optional or group is not None or fd.type == _FDP.TYPE_MESSAGE
        )
        required = (
            fd.type == _FDP.TYPE_STRING and not repeated and not optional and "(required)" in doc
        )
        return cls(
            is_map=bool(entry and entry.map_entry),
            repeated=repeated,
            optional=optional,
            required=required,
        )


@dataclass(frozen=True)
class _FieldContext:
    """One field being built, and where its text goes."""

    fd: descriptor_pb2.FieldDescriptorProto
    name: str
    doc: str
    group: str | None
    parts: tuple[str, ...]
    msg_imports: _Imports
    model_imports: _Imports


@dataclass(frozen=True)
class _Elem:
    """One element's types and conversions (`Builder._elem`); templates take `{}`."""

    wire: str
    model: str
    to_wire: str
    from_wire: str


@dataclass
class _FieldText:
    """The generated text of one field, before it becomes a `model.Field`."""

    kwargs: list[str]
    """Extra `betterproto2.field(...)` arguments, in order."""
    codec: wirecode.FieldCode
    wire_ann: str
    model_ann: str
    default: str
    """The `pydantic.Field` default argument ("" for none)."""
    to_wire: str
    from_wire: str


def _repeated_text(
    name: str, elem: _Elem, kwargs: list[str], codec: wirecode.FieldCode
) -> _FieldText:
    """A repeated field: lists on both sides, converted element by element."""
    kwargs.append("repeated=True")
    return _FieldText(
        kwargs=kwargs,
        codec=codec,
        wire_ann=f"list[{elem.wire}]",
        model_ann=f"list[{elem.model}]",
        default="default_factory=list",
        to_wire=(
            f"list(self.{name})"
            if elem.to_wire == "{}"
            else f"[{elem.to_wire.format('v')} for v in self.{name}]"
        ),
        from_wire=(
            f"list(wire.{name})"
            if elem.from_wire == "{}"
            else f"[{elem.from_wire.format('v')} for v in wire.{name}]"
        ),
    )


def _empty_if_unset_text(
    name: str, elem: _Elem, kwargs: list[str], codec: wirecode.FieldCode
) -> _FieldText:
    """A message field marked `EMPTY_IF_UNSET`: optional on the wire, never None in the model."""
    # Read as protobuf's own getters do: an unset message is the empty message.
    kwargs.append("optional=True")
    return _FieldText(
        kwargs=kwargs,
        codec=codec,
        wire_ann=f"{elem.wire} | None",
        model_ann=elem.model,
        default=f"default_factory=lambda: {elem.model}()",
        # An empty one is written unset, as proto3 writes a zero scalar.
        to_wire=f"_mb.unless_empty({elem.to_wire.format('self.' + name)})",
        from_wire=(
            f"{elem.model}() if wire.{name} is None else {elem.from_wire.format('wire.' + name)}"
        ),
    )


def _optional_text(
    name: str, elem: _Elem, kwargs: list[str], codec: wirecode.FieldCode
) -> _FieldText:
    """A singular field with presence: None when unset, on both sides."""
    kwargs.append("optional=True")
    return _FieldText(
        kwargs=kwargs,
        codec=codec,
        wire_ann=f"{elem.wire} | None",
        model_ann=f"{elem.model} | None",
        default="default=None",
        to_wire=(
            f"self.{name}"
            if elem.to_wire == "{}"
            else f"None if self.{name} is None else {elem.to_wire.format('self.' + name)}"
        ),
        from_wire=(
            f"wire.{name}"
            if elem.from_wire == "{}"
            else f"None if wire.{name} is None else {elem.from_wire.format('wire.' + name)}"
        ),
    )


class Builder:
    """Turns a FileDescriptorSet into the IR packages."""

    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        self.files = sorted(fds.file, key=lambda f: f.name)
        self.types: dict[str, _TypeInfo] = {}
        self.comments = {f.name: _comments(f) for f in self.files}
        for fdp in self.files:
            self._index(fdp)

    # ------------------------------------------------------------------ indexing

    def _index(self, fdp: descriptor_pb2.FileDescriptorProto) -> None:
        parts = tuple(naming.package_path(fdp.package))
        prefix = f".{fdp.package}" if fdp.package else ""
        for enum in fdp.enum_type:
            self._index_enum(fdp, parts, prefix, [], enum)
        for msg in fdp.message_type:
            self._index_message(fdp, parts, prefix, [], msg)

    def _index_enum(
        self,
        fdp: descriptor_pb2.FileDescriptorProto,
        parts: tuple[str, ...],
        prefix: str,
        outer: list[str],
        enum: descriptor_pb2.EnumDescriptorProto,
    ) -> None:
        path = [*outer, enum.name]
        zero = next((v.name for v in enum.value if v.number == 0), enum.value[0].name)
        full = f"{prefix}.{'.'.join(path)}"
        self.types[full] = _TypeInfo(
            full,
            fdp.package,
            parts,
            naming.class_name(path),
            True,
            fdp.name,
            None,
            naming.enum_member_name(enum.name, zero),
            False,
        )

    def _index_message(
        self,
        fdp: descriptor_pb2.FileDescriptorProto,
        parts: tuple[str, ...],
        prefix: str,
        outer: list[str],
        msg: descriptor_pb2.DescriptorProto,
    ) -> None:
        path = [*outer, msg.name]
        full = f"{prefix}.{'.'.join(path)}"
        self.types[full] = _TypeInfo(
            full,
            fdp.package,
            parts,
            naming.class_name(path),
            False,
            fdp.name,
            msg,
            "",
            msg.options.map_entry,
        )
        for enum in msg.enum_type:
            self._index_enum(fdp, parts, prefix, path, enum)
        for nested in msg.nested_type:
            self._index_message(fdp, parts, prefix, path, nested)

    def _type(self, name: str) -> _TypeInfo:
        try:
            return self.types[name]
        except KeyError as exc:
            raise BuildError(f"unknown type {name}") from exc

    def _used_wkt(self) -> set[str]:
        """Full names of google.protobuf types reachable from the other packages."""
        used: set[str] = set()
        todo: list[str] = []
        for fdp in self.files:
            if fdp.package == WKT_PACKAGE:
                continue
            for info in self.types.values():
                if info.file == fdp.name and info.proto is not None:
                    todo.extend(f.type_name for f in info.proto.field if f.type_name)
            for svc in fdp.service:
                for m in svc.method:
                    todo += [m.input_type, m.output_type]
        while todo:
            name = todo.pop()
            info = self._type(name)
            if info.proto_package != WKT_PACKAGE or name in used:
                continue
            used.add(name)
            if info.proto is not None:
                todo.extend(f.type_name for f in info.proto.field if f.type_name)
        return used

    # ------------------------------------------------------------------ packages

    def packages(self) -> list[model.Package]:
        """The IR of every package, sorted by proto package name."""
        used_wkt = self._used_wkt()
        by_package: dict[str, list[descriptor_pb2.FileDescriptorProto]] = defaultdict(list)
        for fdp in self.files:
            by_package[fdp.package].append(fdp)
        result = []
        for package in sorted(by_package):
            files = by_package[package]
            if package == WKT_PACKAGE:
                names = {self.types[n].file for n in used_wkt}
                files = [f for f in files if f.name in names]
                if not files:
                    continue
            result.append(self._package(package, files, used_wkt))
        return result

    def _package(
        self,
        package: str,
        files: list[descriptor_pb2.FileDescriptorProto],
        used_wkt: set[str],
    ) -> model.Package:
        parts = tuple(naming.package_path(package))
        msg_imports = _Imports(parts)
        model_imports = _Imports(parts)
        svc_imports = _Imports(parts)
        enums: list[model.Enum] = []
        messages: list[model.Message] = []
        services: list[model.Service] = []
        for fdp in files:
            if fdp.syntax != "proto3":
                raise BuildError(
                    f"{fdp.name}: only proto3 is supported (syntax is {fdp.syntax or 'proto2'!r})"
                )
            comments = self.comments[fdp.name]
            prefix = f".{fdp.package}" if fdp.package else ""
            for i, enum in enumerate(fdp.enum_type):
                enums.append(self._enum(prefix, [], enum, (5, i), comments))
            for i, msg in enumerate(fdp.message_type):
                self._collect(
                    prefix, [], msg, (4, i), comments, parts, msg_imports, model_imports,
                    enums, messages, used_wkt if package == WKT_PACKAGE else None,
                )  # fmt: skip
            for i, svc in enumerate(fdp.service):
                services.append(self._service(fdp, svc, (6, i), comments, parts, svc_imports))
        if package == WKT_PACKAGE:
            enums = [e for e in enums if e.full_name in used_wkt]
        self._check_unique(
            f"package {package or '(none)'}",
            [e.py_name for e in enums] + [m.py_name for m in messages],
            what="types",
        )
        if any(m.wrapped is not None for m in messages) or any(
            "datetime." in f.wire_annotation for m in messages for f in m.fields
        ):
            msg_imports.add("import datetime")
        if any(
            "datetime." in f.model_annotation
            for m in messages
            if m.wrapped is None
            for f in m.fields
        ):
            model_imports.add("import datetime")
        if any(
            "Annotated[" in f.model_annotation
            for m in messages
            if m.wrapped is None
            for f in m.fields
        ):
            model_imports.add("from typing import Annotated")
        return model.Package(
            proto_package=package,
            parts=parts,
            sources=tuple(sorted(f.name for f in files)),
            enums=tuple(sorted(enums, key=lambda e: e.py_name)),
            messages=tuple(sorted(messages, key=lambda m: m.py_name)),
            services=tuple(sorted(services, key=lambda s: s.py_name)),
            messages_imports=tuple(sorted(msg_imports.lines)),
            models_imports=tuple(sorted(model_imports.lines)),
            client_imports=tuple(sorted(svc_imports.lines)),
            server_imports=tuple(sorted(svc_imports.lines)),
        )

    def _enum(
        self,
        prefix: str,
        outer: list[str],
        enum: descriptor_pb2.EnumDescriptorProto,
        path: tuple[int, ...],
        comments: dict[tuple[int, ...], str],
    ) -> model.Enum:
        names = [*outer, enum.name]
        seen: set[int] = set()
        values = []
        for i, value in enumerate(enum.value):
            if value.number in seen:
                continue  # allow_alias: the first name wins
            seen.add(value.number)
            values.append(
                model.EnumValue(
                    py_name=naming.enum_member_name(enum.name, value.name),
                    proto_name=value.name,
                    number=value.number,
                    doc=comments.get((*path, 2, i), ""),
                )
            )
        self._check_unique(f"enum {'.'.join(names)}", [v.py_name for v in values])
        return model.Enum(
            py_name=naming.class_name(names),
            full_name=f"{prefix}.{'.'.join(names)}",
            doc=comments.get(path, "") or f"The `{'.'.join(names)}` enum.",
            values=tuple(values),
        )

    def _collect(
        self,
        prefix: str,
        outer: list[str],
        msg: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
        comments: dict[tuple[int, ...], str],
        parts: tuple[str, ...],
        msg_imports: _Imports,
        model_imports: _Imports,
        enums: list[model.Enum],
        messages: list[model.Message],
        only: set[str] | None,
    ) -> None:
        names = [*outer, msg.name]
        full = f"{prefix}.{'.'.join(names)}"
        if msg.options.map_entry or (only is not None and full not in only):
            return
        for i, enum in enumerate(msg.enum_type):
            enums.append(self._enum(prefix, names, enum, (*path, 4, i), comments))
        for i, nested in enumerate(msg.nested_type):
            self._collect(
                prefix, names, nested, (*path, 3, i), comments, parts, msg_imports,
                model_imports, enums, messages, only,
            )  # fmt: skip
        oneof_names = [naming.field_name(o.name) for o in msg.oneof_decl]
        real_oneofs: dict[int, list[str]] = defaultdict(list)
        fields = []
        for i, fd in enumerate(msg.field):
            group = None
            if fd.HasField("oneof_index") and not fd.proto3_optional:
                group = oneof_names[fd.oneof_index]
                real_oneofs[fd.oneof_index].append(naming.field_name(fd.name))
            doc = comments.get((*path, 2, i), "")
            fields.append(self._field(fd, doc, group, parts, msg_imports, model_imports))
        self._check_unique(full, [f.py_name for f in fields])
        accessors = _json_accessors(msg, fields)
        messages.append(
            model.Message(
                py_name=naming.class_name(names),
                proto_name=".".join(names),
                full_name=full,
                doc=comments.get(path, "") or f"The `{'.'.join(names)}` message.",
                fields=tuple(fields),
                oneofs=tuple(
                    model.Oneof(oneof_names[k], tuple(v), comments.get((*path, 8, k), ""))
                    for k, v in sorted(real_oneofs.items())
                ),
                wrapped=WRAPPED.get(full),
                json_accessors=accessors,
            )
        )

    @staticmethod
    def _check_unique(where: str, names: Iterable[str], what: str = "fields") -> None:
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise BuildError(f"{where}: two {what} map to the Python name {name!r}")
            seen.add(name)

    # ------------------------------------------------------------------ fields

    def _ref(
        self, info: _TypeInfo, parts: tuple[str, ...], imports: _Imports, own: str, suffix: str
    ) -> str:
        """Text naming a generated class from a module of package ``parts``."""
        if info.parts == parts:
            return f"{own}.{info.py_name}" if own else info.py_name
        module = "models" if suffix == "_models" else "messages"
        return f"{imports.other(info.parts, module, suffix)}.{info.py_name}"

    def _field(
        self,
        fd: descriptor_pb2.FieldDescriptorProto,
        doc: str,
        group: str | None,
        parts: tuple[str, ...],
        msg_imports: _Imports,
        model_imports: _Imports,
    ) -> model.Field:
        """The generated text of one message field: wire class, model class and codec."""
        if fd.type not in _TYPE_NAMES:
            raise BuildError(f"field {fd.name}: proto2 groups are not supported")
        shape = _FieldShape.of(fd, doc, group, self.types)
        ctx = _FieldContext(
            fd, naming.field_name(fd.name), doc, group, parts, msg_imports, model_imports
        )
        text = self._map_text(ctx) if shape.is_map else self._value_text(ctx, shape)
        return self._field_record(ctx, shape, text)

    def _map_text(self, ctx: _FieldContext) -> _FieldText:
        """A `map<K, V>` field: a dict on both sides, values converted one by one."""
        name, parts, msg_imports = ctx.name, ctx.parts, ctx.msg_imports
        entry = self.types.get(ctx.fd.type_name)
        assert entry is not None and entry.proto is not None
        key_fd, value_fd = entry.proto.field[0], entry.proto.field[1]
        kw, mk, _, _ = self._elem(key_fd, parts, msg_imports, ctx.model_imports)
        vw, mv, v_to, v_from = self._elem(value_fd, parts, msg_imports, ctx.model_imports)
        key_type, value_type = _TYPE_NAMES[key_fd.type], _TYPE_NAMES[value_fd.type]
        meta = f"betterproto2.{key_type}, betterproto2.{value_type}"
        if WRAPPED.get(value_fd.type_name):
            meta += f", unwrap_2=lambda: {self._wrapped_ref(value_fd, parts, msg_imports)}"
        codec = wirecode.mapping(
            name,
            ctx.fd.number,
            self._element(key_fd, parts, msg_imports),
            self._element(value_fd, parts, msg_imports),
            f"dict[{kw}, {vw}]",
        )
        return _FieldText(
            kwargs=[f"map_meta=betterproto2.map_meta({meta})"],
            codec=codec,
            wire_ann=f"dict[{kw}, {vw}]",
            model_ann=f"dict[{mk}, {mv}]",
            default="default_factory=dict",
            to_wire=(
                f"dict(self.{name})"
                if v_to == "{}"
                else f"{{k: {v_to.format('v')} for k, v in self.{name}.items()}}"
            ),
            from_wire=(
                f"dict(wire.{name})"
                if v_from == "{}"
                else f"{{k: {v_from.format('v')} for k, v in wire.{name}.items()}}"
            ),
        )

    def _value_text(self, ctx: _FieldContext, shape: _FieldShape) -> _FieldText:
        """A scalar, enum or message field: repeated, presence-tracked or plain."""
        fd, name, parts, msg_imports = ctx.fd, ctx.name, ctx.parts, ctx.msg_imports
        elem = _Elem(*self._elem(fd, parts, msg_imports, ctx.model_imports))
        kwargs: list[str] = []
        if fd.type_name in WRAPPED:
            kwargs.append(f"unwrap=lambda: {self._wrapped_ref(fd, parts, msg_imports)}")
        element = self._element(fd, parts, msg_imports)
        if shape.repeated:
            packed = not (fd.options.HasField("packed") and not fd.options.packed)
            codec = wirecode.repeated(name, fd.number, element, f"list[{elem.wire}]", packed)
        else:
            wire_t = f"{elem.wire} | None" if shape.optional else elem.wire
            codec = wirecode.singular(name, fd.number, element, wire_t, shape.optional)
        if shape.repeated:
            text = _repeated_text(name, elem, kwargs, codec)
        elif _empty_if_unset(fd, ctx.doc, ctx.group):
            text = _empty_if_unset_text(name, elem, kwargs, codec)
        elif shape.optional:
            text = _optional_text(name, elem, kwargs, codec)
        else:
            text = self._plain_text(ctx, shape, elem, kwargs, codec)
        if ctx.group is not None:
            text.kwargs.append(f"group={ctx.group!r}".replace("'", '"'))
        return text

    def _plain_text(
        self,
        ctx: _FieldContext,
        shape: _FieldShape,
        elem: _Elem,
        kwargs: list[str],
        codec: wirecode.FieldCode,
    ) -> _FieldText:
        """A singular field without presence: the type's zero value is its default."""
        fd = ctx.fd
        info = self.types.get(fd.type_name) if fd.type_name else None
        if info is not None and info.is_enum:
            zero = f"{elem.wire}.{info.enum_zero}"
            kwargs.append(f"default_factory=lambda: {zero}")
            enum_ref = self._ref(info, ctx.parts, ctx.model_imports, "_pb", "_pb")
            default = f"default={enum_ref}.{info.enum_zero}"
        else:
            base = _WIRE_SCALARS.get(fd.type, "int")
            default = "" if shape.required else f"default={_ZEROS[base]}"
        return _FieldText(
            kwargs=kwargs,
            codec=codec,
            wire_ann=elem.wire,
            model_ann=elem.model,
            default=default,
            to_wire=f"self.{ctx.name}",
            from_wire=f"wire.{ctx.name}",
        )

    @staticmethod
    def _field_record(ctx: _FieldContext, shape: _FieldShape, text: _FieldText) -> model.Field:
        """Assemble the `model.Field` from the field's prepared text."""
        fd = ctx.fd
        proto_type = "TYPE_MAP" if shape.is_map else _TYPE_NAMES[fd.type]
        call_args = ", ".join([str(fd.number), f"betterproto2.{proto_type}", *text.kwargs])
        model_args = [text.default] if text.default else []
        if shape.required:
            model_args.append("min_length=1")
        description = " ".join(ctx.doc.split())
        if description:
            model_args.append(f"description={_py_str(description)}")
        return model.Field(
            py_name=ctx.name,
            proto_name=fd.name,
            number=fd.number,
            doc=ctx.doc,
            wire_annotation=text.wire_ann,
            wire_call=f"betterproto2.field({call_args})",
            model_annotation=text.model_ann,
            model_default=f"pydantic.Field({', '.join(model_args)})",
            to_wire=text.to_wire,
            from_wire=text.from_wire,
            oneof=ctx.group,
            codec=text.codec,
        )

    def _element(
        self, fd: descriptor_pb2.FieldDescriptorProto, parts: tuple[str, ...], imports: _Imports
    ) -> wirecode.Element:
        """How the codec writes and reads one value of the field's type."""
        if fd.type_name in WRAPPED:
            return wirecode.Element(fd.type, "wrapped", "", "", WRAPPED[fd.type_name])
        if fd.type == _FDP.TYPE_ENUM:
            info = self._type(fd.type_name)
            ref = self._ref(info, parts, imports, "", "_pb")
            return wirecode.Element(fd.type, "enum", ref, f"{ref}.{info.enum_zero}")
        if fd.type == _FDP.TYPE_MESSAGE:
            ref = self._ref(self._type(fd.type_name), parts, imports, "", "_pb")
            return wirecode.Element(fd.type, "message", ref, "")
        return wirecode.Element(fd.type, "scalar", "", wirecode.scalar_zero(fd.type))

    def _wrapped_ref(
        self, fd: descriptor_pb2.FieldDescriptorProto, parts: tuple[str, ...], imports: _Imports
    ) -> str:
        return self._ref(self._type(fd.type_name), parts, imports, "", "_pb")

    def _elem(
        self,
        fd: descriptor_pb2.FieldDescriptorProto,
        parts: tuple[str, ...],
        msg_imports: _Imports,
        model_imports: _Imports,
    ) -> tuple[str, str, str, str]:
        """(wire type, model type, to-wire template, from-wire template) of one element.

        The templates take the element expression as ``{}``; ``"{}"`` means "as is".
        """
        if fd.type_name in WRAPPED:
            if WRAPPED[fd.type_name] == "timestamp":
                return "datetime.datetime", "pydantic.AwareDatetime", "{}", "{}"
            return "datetime.timedelta", "datetime.timedelta", "{}", "{}"
        if fd.type == _FDP.TYPE_ENUM:
            info = self._type(fd.type_name)
            wire = self._ref(info, parts, msg_imports, "", "_pb")
            pb = self._ref(info, parts, model_imports, "_pb", "_pb")
            return wire, f"Annotated[{pb}, _mb.KNOWN_ENUM]", "{}", "{}"
        if fd.type == _FDP.TYPE_MESSAGE:
            info = self._type(fd.type_name)
            wire = self._ref(info, parts, msg_imports, "", "_pb")
            mdl = self._ref(info, parts, model_imports, "", "_models")
            return wire, mdl, "{}.to_wire()", f"{mdl}.from_wire({{}})"
        if fd.type in _MODEL_INTS:
            return "int", _MODEL_INTS[fd.type], "{}", "{}"
        base = _WIRE_SCALARS[fd.type]
        return base, base, "{}", "{}"

    # ------------------------------------------------------------------ services

    def _service(
        self,
        fdp: descriptor_pb2.FileDescriptorProto,
        svc: descriptor_pb2.ServiceDescriptorProto,
        path: tuple[int, ...],
        comments: dict[tuple[int, ...], str],
        parts: tuple[str, ...],
        imports: _Imports,
    ) -> model.Service:
        full = f"{fdp.package}.{svc.name}" if fdp.package else svc.name
        methods = []
        for i, m in enumerate(svc.method):
            methods.append(
                model.Method(
                    py_name=naming.method_name(m.name),
                    proto_name=m.name,
                    path=f"/{full}/{m.name}",
                    doc=comments.get((*path, 2, i), "") or f"The `{m.name}` RPC.",
                    request=self._ref(self._type(m.input_type), parts, imports, "_pb", "_pb"),
                    reply=self._ref(self._type(m.output_type), parts, imports, "_pb", "_pb"),
                    client_streaming=m.client_streaming,
                    server_streaming=m.server_streaming,
                )
            )
        self._check_unique(full, [m.py_name for m in methods], what="RPCs")
        return model.Service(
            py_name=naming.class_name([svc.name]),
            full_name=full,
            doc=comments.get(path, "") or f"The `{full}` service.",
            methods=tuple(methods),
        )


EMPTY_IF_UNSET = "(empty if unset)"
"""In a message field's comment: the model's field is never None (unset reads as empty)."""

JSON_SUFFIX = "_json"
"""A plain ``string x_json`` field gets the model method ``x()``: the field parsed as JSON."""


def _empty_if_unset(fd: descriptor_pb2.FieldDescriptorProto, doc: str, group: str | None) -> bool:
    """Whether a singular message field's model drops presence (`EMPTY_IF_UNSET`)."""
    return (
        EMPTY_IF_UNSET in doc
        and fd.type == _FDP.TYPE_MESSAGE
        and fd.label != _FDP.LABEL_REPEATED
        and group is None
        and not fd.proto3_optional
        and fd.type_name not in WRAPPED
    )


def _json_accessors(
    msg: descriptor_pb2.DescriptorProto, fields: list[model.Field]
) -> tuple[model.JsonAccessor, ...]:
    """The ``x()`` method of each plain (not repeated, optional or oneof) ``string x_json``.

    The name is escaped as a field name is, then gets a trailing ``_`` while a field or
    another accessor of the message has it.
    """
    taken = {f.py_name for f in fields}
    accessors: list[model.JsonAccessor] = []
    for fd, built in zip(msg.field, fields, strict=True):
        stem = fd.name.removesuffix(JSON_SUFFIX)
        if (
            not stem
            or stem == fd.name
            or fd.type != _FDP.TYPE_STRING
            or fd.label == _FDP.LABEL_REPEATED
            or fd.HasField("oneof_index")
        ):
            continue
        name = naming.field_name(stem)
        while name in taken:
            name += "_"
        taken.add(name)
        accessors.append(model.JsonAccessor(py_name=name, field=built.py_name))
    return tuple(accessors)


def _py_str(text: str, width: int = 70) -> str:
    """A string literal, split into implicitly concatenated pieces when long."""
    if len(text) <= width:
        return _quote(text)
    pieces: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if len(candidate) > width and current:
            pieces.append(current + " ")
            current = word
        else:
            current = candidate
    pieces.append(current)
    return "(" + " ".join(_quote(p) for p in pieces) + ")"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build(fds: descriptor_pb2.FileDescriptorSet) -> list[model.Package]:
    """The IR of every package in the descriptor set."""
    return Builder(fds).packages()
