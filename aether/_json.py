"""JSON values as the public API types them, and their encoding."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TypeAlias

__all__ = ("JsonValue", "dumps", "loads")

#: A JSON-serialisable value. Read-only container types so that e.g. a `dict[str, str]`
#: is accepted where a JSON value is expected.
JsonValue: TypeAlias = (
    Mapping[str, "JsonValue"] | Sequence["JsonValue"] | str | int | float | bool | None
)


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


def loads(text: str | bytes) -> JsonValue:
    """Decode a JSON document."""
    result: JsonValue = json.loads(text)
    return result
