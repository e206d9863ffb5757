"""Python names for proto names: case conversion and escaping of reserved names."""

from __future__ import annotations

import keyword
import re

MESSAGE_METHODS = frozenset(
    {
        "FromString",
        "SerializeToString",
        "dump",
        "from_dict",
        "from_json",
        "is_set",
        "load",
        "parse",
        "to_dict",
        "to_json",
    }
)
"""Public methods of betterproto2.Message that a field must not shadow."""

MODEL_ATTRIBUTES = frozenset(
    {
        "construct",
        "copy",
        "dict",
        "from_orm",
        "from_wire",
        "json",
        "parse_file",
        "parse_obj",
        "parse_raw",
        "schema",
        "schema_json",
        "to_wire",
        "update_forward_refs",
        "validate",
    }
)
"""Attributes of the generated Pydantic models (besides ``model_*``) a field must not shadow."""

MODULE_NAMES = frozenset(
    {"abc", "betterproto2", "dataclasses", "datetime", "grpclib", "pydantic", "typing"}
)
"""Modules the generated code imports by name; a class or field must not shadow them."""

TYPE_NAMES = frozenset({"bool", "bytes", "dict", "float", "int", "list", "str"})
"""Builtins used in generated annotations; a field named so would shadow them in the class."""

CODE_BUILTINS = frozenset(
    {"bytearray", "len", "object", "super", "type", "ValueError", "TypeError", "Exception"}
)
"""Other builtins the generated code calls; a class named so would shadow them."""

PARAMETER_NAMES = frozenset({"self"})
"""Names a dataclass field cannot take (its ``__init__`` has a ``self`` parameter)."""

_CAMEL_BOUNDARY_1 = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_BOUNDARY_2 = re.compile(r"([a-z0-9])([A-Z])")


def snake_case(name: str) -> str:
    """``StreamTasks`` → ``stream_tasks``; ``GetHTTPStatus`` → ``get_http_status``."""
    name = _CAMEL_BOUNDARY_1.sub(r"\1_\2", name)
    name = _CAMEL_BOUNDARY_2.sub(r"\1_\2", name)
    return name.replace("-", "_").lower()


def screaming_snake(name: str) -> str:
    """``TaskState`` → ``TASK_STATE``."""
    return snake_case(name).upper()


def _escape(name: str, reserved: frozenset[str] | set[str]) -> str:
    # Hard keywords only: soft keywords (match, case, type, _) are valid names, and the
    # list of soft keywords changes between Python versions (the output must not).
    while keyword.iskeyword(name) or name in reserved:
        name += "_"
    return name


def field_name(proto_name: str) -> str:
    """The Python attribute of a field: its proto name, escaped if it collides."""
    name = proto_name
    if name.startswith("model_"):
        # Pydantic reserves the ``model_`` namespace.
        return _escape(name + "_", MESSAGE_METHODS | MODEL_ATTRIBUTES)
    return _escape(
        name, MESSAGE_METHODS | MODEL_ATTRIBUTES | MODULE_NAMES | TYPE_NAMES | PARAMETER_NAMES
    )


def class_name(proto_path: list[str]) -> str:
    """Nested types are flattened: ``HealthCheckResponse.ServingStatus`` →
    ``HealthCheckResponseServingStatus``."""
    return _escape("".join(proto_path), MODULE_NAMES | TYPE_NAMES | CODE_BUILTINS)


def method_name(proto_name: str) -> str:
    """RPC methods are snake_case: ``Register`` → ``register``."""
    return _escape(
        snake_case(proto_name), frozenset({"channel", "max_message_bytes", "metadata", "timeout"})
    )


def enum_member_name(enum_proto_name: str, value_proto_name: str) -> str:
    """Enum members drop the enum-name prefix: ``TASK_STATE_PENDING`` → ``PENDING``."""
    prefix = screaming_snake(enum_proto_name) + "_"
    name = value_proto_name
    if name.startswith(prefix):
        rest = name[len(prefix) :]
        if rest.isidentifier() and not rest[0].isdigit():
            name = rest
    return _escape(name, frozenset({"name", "value", "proto_name", "mro"}))


def package_path(proto_package: str) -> list[str]:
    """Module folder of a proto package: a leading ``aether.`` is dropped."""
    parts = proto_package.split(".") if proto_package else ["_root"]
    if parts[0] == "aether" and len(parts) > 1:
        parts = parts[1:]
    return [_escape(part, frozenset()) for part in parts]


def module_alias(package_parts: list[str], suffix: str) -> str:
    """Import alias of another package's module, e.g. ``_google_protobuf_pb``."""
    return "_" + "_".join(package_parts) + suffix
