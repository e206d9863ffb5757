"""Damaged and unusual map entries decode as Google's protobuf decodes them (issue 8).

A map entry is a small message (key = 1, value = 2). Google's protobuf (upb) gives
a missing key or value its default and lets the last of a repeated key or value win,
merging a repeated message value; but an entry with any other field (an unknown field
number, or key or value with the wrong wire type) is not put in the map at all: it
is kept whole among the message's unknown fields. Malformed entries are refused.

Every case is compared with Google's decode of the same bytes, never with a value
written down here: the decoded fields must be equal, and what we keep as unknown
fields must be what Google keeps (read back by Google from our encoding).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.message import DecodeError, Message

from tests.generated import genpkgs, protoplan
from tests.generated.protoplan import Ours

# One kitchen.v1.Maps message the differential fuzzer found (issue 8, item 2): the last
# entry of `str_enum` (field 6) has an unknown field 17, so Google leaves it out of the
# map, and we put {"": COLOR_UNSPECIFIED} in ("['str_enum'].: unexpected 0").
ISSUE_8_MAPS = (
    b"\n\x16\n\r000\xc2\x80\xf0\x90\x80\x80\xf0\x90\x80\x80\x12\x050\xc2\x80\xc2\x80\n\r\n\x03000"
    b'\x12\x06\xc2\x80\xf0\x90\x80\x80\n\n\n\x010\x12\x050\xc2\x80\xc2\x80"\x0b\x08\x01\x12\x07'
    b'\x00\x00\x00\x00\x00\x00\x00"\x0f\x08\x00\x12\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00'
    b"\x002\x1c\n\x18000\xc2\x80\xc2\x80\xc2\x80\xc2\x80\xc2\x80\xc2\x80\xc2\x80\xe0\xa0\x9b\xf0"
    b"\x90\x80\x80\x10\x002\x05\x88\x011\x10\x00"
)

MAPS = "kitchen.v1.Maps"
STRUCT = "google.protobuf.Struct"
TASK = "aether.v1.Task"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _entry(number: int, body: bytes) -> bytes:
    """One map entry of field `number`."""
    return _varint(number << 3 | 2) + _varint(len(body)) + body


# -- Google's decode, and ours --------------------------------------------------------------


def _google_class(full_name: str) -> type[Message]:
    if full_name.startswith("aether."):
        return genpkgs.api_google_class(full_name)
    return genpkgs.kitchen_google_class(full_name)


def _ours(full_name: str) -> Ours:
    return genpkgs.api_ours() if full_name.startswith("aether.") else genpkgs.kitchen_ours()


def _google_unknown(message: Message) -> list[tuple[int, int, object]]:
    """The unknown fields Google keeps: (number, wire type, value) in order."""
    # google.protobuf.unknown_fields has no stubs in types-protobuf.
    module: Any = importlib.import_module("google.protobuf.unknown_fields")
    return [(f.field_number, f.wire_type, f.data) for f in module.UnknownFieldSet(message)]


def assert_decodes_like_google(full_name: str, body: bytes) -> protoplan.Plan | None:
    """Decode `body` with both codecs and require the same outcome; returns the plan
    (None when both refuse the bytes)."""
    google_class = _google_class(full_name)
    desc = protoplan.descriptor_of(google_class)
    ours = _ours(full_name)
    cls = ours.message_class(desc)
    try:
        google = google_class.FromString(body)
    except DecodeError:
        with pytest.raises(ValueError):
            cls.parse(body)
        return None
    expected = protoplan.google_plan(google)
    decoded = cls.parse(body)
    protoplan.assert_same(expected, ours.plan(desc, decoded), f"decoding {body!r}")
    # Unknown fields (entries that are not map items among them) are kept and written back,
    # so that Google, reading our encoding, finds the same values and unknown fields.
    again = google_class.FromString(bytes(decoded))
    protoplan.assert_same(expected, protoplan.google_plan(again), f"Google re-reading {body!r}")
    assert _google_unknown(again) == _google_unknown(google), f"unknown fields of {body!r}"
    # And our own encoding decodes to the same values.
    protoplan.assert_same(expected, ours.plan(desc, cls.parse(bytes(decoded))), "round trip")
    return expected


def test_issue_8_input_decodes_like_google() -> None:
    plan = assert_decodes_like_google(MAPS, ISSUE_8_MAPS)
    assert plan is not None
    # The damaged last entry is not a map item (the first str_enum entry is).
    str_enum = plan["str_enum"]
    assert isinstance(str_enum, dict)
    assert "" not in str_enum and len(str_enum) == 1


# -- the family: entries of every map of kitchen.v1.Maps --------------------------------------

# Field number → (name, a key, a value), each a complete field of the entry.
_MAPS_FIELDS: dict[int, tuple[str, bytes, bytes]] = {
    1: ("str_str", b"\x0a\x01k", b"\x12\x01v"),
    2: ("int_str", b"\x08\x05", b"\x12\x01v"),
    3: ("long_double", b"\x08\x05", b"\x11" + bytes(7) + b"\x40"),
    4: ("bool_bytes", b"\x08\x01", b"\x12\x01v"),
    5: ("str_msg", b"\x0a\x01k", b"\x12\x02\x08\x07"),
    6: ("str_enum", b"\x0a\x01k", b"\x10\x02"),
    7: ("uint_sint", b"\x08\x05", b"\x10\x03"),
}
_OTHER_KEY = {b"\x0a": b"\x0a\x01j", b"\x08": b"\x08\x04"}
# A wire type → another one, and a value of each.
_OTHER_WIRE = {0: 2, 1: 5, 2: 0, 5: 1}
_OF_WIRE = {0: b"\x00", 1: bytes(8), 2: b"\x01x", 5: bytes(4)}


def _wrong_wire(field: bytes) -> bytes:
    """The field of `field` (a one-byte tag and its value) with another wire type."""
    wire = _OTHER_WIRE[field[0] & 7]
    return bytes([field[0] & ~7 | wire]) + _OF_WIRE[wire]


# Entry bodies (from a map's key `k` and value `v`) that Google accepts or refuses.
_SHAPES: dict[str, Callable[[bytes, bytes], bytes]] = {
    "empty": lambda k, v: b"",
    "key-only": lambda k, v: k,
    "value-only": lambda k, v: v,
    "value-before-key": lambda k, v: v + k,
    "key-twice": lambda k, v: k + v + _OTHER_KEY[k[:1]],
    "value-twice": lambda k, v: k + v + v,
    "unknown-varint-after": lambda k, v: k + v + b"\x18\x01",
    "unknown-varint-first": lambda k, v: b"\x18\x01" + k + v,
    "unknown-varint-between": lambda k, v: k + b"\x18\x01" + v,
    "unknown-fixed64": lambda k, v: k + v + b"\x19" + bytes(8),
    "unknown-length-delimited": lambda k, v: k + v + b"\x1a\x02ab",
    "unknown-fixed32": lambda k, v: k + v + b"\x1d" + bytes(4),
    "unknown-group": lambda k, v: k + v + b"\x1b\x08\x01\x1c",
    "unknown-large-number": lambda k, v: k + v + b"\x88\x01\x31",
    "unknown-only": lambda k, v: b"\x18\x01",
    "key-wrong-wire": lambda k, v: _wrong_wire(k) + v,
    "value-wrong-wire": lambda k, v: k + _wrong_wire(v),
    "value-wrong-wire-then-right": lambda k, v: k + _wrong_wire(v) + v,
    "value-length-delimited": lambda k, v: k + b"\x12\x01\x02" if v[0] != 0x12 else k + b"\x10\x01",
    "zero-key-and-unknown": lambda k, v: k[:1] + b"\x00" + b"\x18\x01",
    # Malformed: refused.
    "field-number-0": lambda k, v: k + b"\x00\x01",
    "end-group": lambda k, v: k + b"\x0c",
    "wire-type-7": lambda k, v: k + b"\x0f",
    "unterminated-group": lambda k, v: k + b"\x1b",
    "truncated-value": lambda k, v: k + v[:-1],
    "truncated-tag": lambda k, v: k + b"\x88",
    "field-number-2**29": lambda k, v: k + b"\x80\x80\x80\x80\x10\x01",
}
# Where the entry is: alone, or before / after a well-formed entry of the same key.
_CONTEXTS: dict[str, Callable[[int, bytes, bytes], bytes]] = {
    "alone": lambda n, good, odd: _entry(n, odd),
    "then-good": lambda n, good, odd: _entry(n, odd) + _entry(n, good),
    "after-good": lambda n, good, odd: _entry(n, good) + _entry(n, odd) + _entry(n, good),
}


def _family() -> list[Any]:
    params: list[Any] = []
    for number, (name, key, value) in _MAPS_FIELDS.items():
        for shape, make in _SHAPES.items():
            for where, place in _CONTEXTS.items():
                body = place(number, key + value, make(key, value))
                params.append(pytest.param(MAPS, body, id=f"{name}-{shape}-{where}"))
    return params


@pytest.mark.parametrize(("full_name", "body"), _family())
def test_map_entry_family_decodes_like_google(full_name: str, body: bytes) -> None:
    assert_decodes_like_google(full_name, body)


# -- values and maps with more to them ---------------------------------------------------------

_E5 = 5  # Maps.str_msg: map<string, Outer.Inner>
_E6 = 6  # Maps.str_enum: map<string, Color>
_SPECIAL = [
    # Open enum: a number Color does not name is kept, as a value of the map.
    pytest.param(MAPS, _entry(_E6, b"\x0a\x01k\x10\x63"), id="enum-unknown-number"),
    pytest.param(MAPS, _entry(_E6, b"\x0a\x01k\x10" + b"\xff" * 9 + b"\x01"), id="enum-negative"),
    pytest.param(MAPS, _entry(_E6, b"\x0a\x01k\x10\x80\x80\x80\x80\x10"), id="enum-over-32-bits"),
    pytest.param(
        MAPS, _entry(_E6, b"\x0a\x01k\x10\x63\x18\x01"), id="enum-unknown-number-and-field"
    ),
    pytest.param(MAPS, _entry(_E6, b"\x0a\x01k\x12\x02\x01\x02"), id="enum-packed"),
    # A message value that occurs twice in one entry is merged: value 7, then mode 1.
    pytest.param(MAPS, _entry(_E5, b"\x0a\x01k\x12\x02\x08\x07\x12\x02\x18\x01"), id="msg-merge"),
    pytest.param(
        MAPS,
        _entry(_E5, b"\x0a\x01k\x12\x04\x12\x02\x0a\x01a\x12\x02\x08\x07\x12\x04\x12\x02\x0a\x01b"),
        id="msg-merge-nested",
    ),
    pytest.param(
        MAPS,
        _entry(_E5, b"\x0a\x01k\x12\x02\x08\x07") + _entry(_E5, b"\x0a\x01k\x12\x02\x18\x01"),
        id="msg-repeated-key-replaces",
    ),
    pytest.param(
        MAPS, _entry(_E5, b"\x0a\x01k\x12\x04\x08\x07\x20\x01"), id="msg-value-unknown-field"
    ),
    pytest.param(MAPS, _entry(_E5, b"\x0a\x01k\x12\x02\x08\xff"), id="msg-value-malformed"),
    pytest.param(
        MAPS, _entry(_E5, b"\x0a\x01k\x12\x02\x08\xff\x18\x01"), id="msg-value-malformed-unknown"
    ),
    pytest.param(MAPS, _entry(_E5, b"\x0a\x01k\x12\x05\x08\x07"), id="msg-value-past-entry"),
    # Strings are checked even in an entry that goes to the unknown fields.
    pytest.param(MAPS, _entry(1, b"\x0a\x02\xc3\x28\x12\x01v"), id="key-invalid-utf8"),
    pytest.param(MAPS, _entry(1, b"\x0a\x01k\x12\x02\xc3\x28"), id="value-invalid-utf8"),
    pytest.param(MAPS, _entry(1, b"\x18\x01\x0a\x02\xc3\x28"), id="invalid-utf8-and-unknown"),
    # Keys and values read as their type reads them.
    pytest.param(MAPS, _entry(2, b"\x08\xff\xff\xff\xff\x0f\x12\x01v"), id="int32-key-5-bytes"),
    pytest.param(MAPS, _entry(2, b"\x08\x85\x00\x12\x01v"), id="overlong-key"),
    pytest.param(MAPS, _entry(7, b"\x08\xff\xff\xff\xff\xff\x01"), id="uint32-key-over-32-bits"),
    pytest.param(MAPS, _entry(4, b"\x08\x02"), id="bool-key-2"),
    # The entry itself: a length past the end, a tag with an overlong varint.
    pytest.param(MAPS, b"\x0a\x05\x0a\x01k", id="entry-past-end"),
    pytest.param(MAPS, b"\x8a\x00\x03\x0a\x01k", id="entry-overlong-tag"),
    pytest.param(MAPS, b"\x8a\x00\x05\x0a\x01k\x18\x01", id="entry-overlong-tag-unknown"),
    # Entries of several maps, damaged ones between, in and out of field order.
    pytest.param(
        MAPS,
        _entry(1, b"\x0a\x01a\x12\x01b")
        + _entry(1, b"\x0a\x01c\x12\x01d\x18\x01")
        + _entry(1, b"\x0a\x01e\x12\x01f")
        + _entry(6, b"\x0a\x01k\x10\x01")
        + _entry(1, b"\x0a\x01g\x12\x01h\x18\x01")
        + _entry(6, b"\x0a\x01k\x10\x02\x18\x01")
        + _entry(1, b"\x0a\x01i\x12\x01j"),
        id="runs-with-damaged-entries",
    ),
    # google.protobuf.Struct: map<string, Value>, a Value is a oneof.
    pytest.param(
        STRUCT,
        _entry(1, b"\x0a\x01k\x12\x09\x11" + bytes(7) + b"\x40"),
        id="struct-number",
    ),
    pytest.param(
        STRUCT,
        _entry(1, b"\x0a\x01k\x12\x09\x11" + bytes(7) + b"\x40\x12\x03\x1a\x01s"),
        id="struct-value-merge-oneof",
    ),
    pytest.param(STRUCT, _entry(1, b"\x0a\x01k\x12\x02\x20\x01\x18\x01"), id="struct-unknown"),
    pytest.param(STRUCT, _entry(1, b"\x0a\x01k"), id="struct-missing-value"),
    # aether.v1.Task: map<string, string> with a one-byte tag (metadata = 7, read in runs)
    # and with a two-byte tag (metrics = 17).
    pytest.param(
        TASK,
        _entry(7, b"\x0a\x01a\x12\x01b")
        + _entry(7, b"\x0a\x01c\x12\x01d\x20\x01")
        + _entry(7, b"\x0a\x01a\x12\x01x\x20\x01")
        + _entry(7, b"\x12\x01y\x0a\x01e"),
        id="task-metadata-run",
    ),
    pytest.param(
        TASK,
        _entry(17, b"\x0a\x01a\x12\x01b")
        + _entry(17, b"\x0a\x01c\x12\x01d\x20\x01")
        + _entry(17, b"\x0a\x01a\x12\x01x\x15\x00\x00\x00\x00")
        + _entry(17, b""),
        id="task-metrics",
    ),
    pytest.param(TASK, _entry(17, b"\x0a\x01a\x12\x02\xc3\x28"), id="task-metrics-invalid-utf8"),
]


@pytest.mark.parametrize(("full_name", "body"), _SPECIAL)
def test_special_map_entries_decode_like_google(full_name: str, body: bytes) -> None:
    assert_decodes_like_google(full_name, body)
