"""JSON values as the public API types them, and their encoding."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeAlias

from aether._wire import model_base

__all__ = ("HasPayload", "JsonFieldError", "JsonValue", "dumps", "json_payload")

#: A JSON-serialisable value. Read-only container types so that e.g. a `dict[str, str]`
#: is accepted where a JSON value is expected. The same type the generated models' JSON
#: accessors (`RetrieveResponse.value()`, ...) return.
JsonValue: TypeAlias = model_base.JsonValue

#: A field that should hold a JSON document does not (a `ValueError`); `field` names it,
#: e.g. "RetrieveResponse.value_json". Raised by the models' JSON accessors and
#: `json_payload()`.
JsonFieldError = model_base.JsonFieldError


class HasPayload(Protocol):
    """Anything with a `payload` of bytes: `BusMessage`, `RequestResponse`,
    `TaskAssignment`, ..."""

    @property
    def payload(self) -> bytes:
        """The message body."""
        ...


def json_payload(message: HasPayload) -> JsonValue:
    """`message.payload` parsed as JSON, or None when the payload is empty.

    The payload of a message published with a non-bytes value is its JSON (see
    `Messaging.publish`). Raises `JsonFieldError` when the payload is not JSON.
    """
    return model_base.parse_json(message.payload, f"{type(message).__name__}.payload")


def _default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: JsonValue, *, what: str = "value") -> str:
    """Encode `value` as compact JSON; a `TypeError` names `what` when it cannot be."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_default)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable: {exc}") from None
