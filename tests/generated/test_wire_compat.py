"""Our generated codec against Google's protobuf, message by message, in both directions.

For every message of the real API (`aether.v1`) and of the kitchen sink, a
populated instance (every field non-default; enough variants to set every oneof
member) is encoded by one side and decoded by the other, and compared field by
field. Hypothesis then does the same with random values for the biggest types.
"""

from __future__ import annotations

import inspect
import math
import struct
from collections.abc import Callable

import betterproto2
import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import given

from tests.generated import genpkgs, protoplan
from tests.generated.protoplan import Ours, Plan

API_PACKAGES = genpkgs.api_packages()
API_MESSAGES = genpkgs.api_message_names()
KITCHEN_MESSAGES = genpkgs.message_names(genpkgs.KITCHEN_PROTO_ROOT, genpkgs.KITCHEN_PROTO_PACKAGE)

_FUZZ = protoplan.fuzz_settings(max_examples=40)


def _generated_message_names(ours: Ours, package: str) -> set[str]:
    module = ours.module(package)
    return {
        name
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, betterproto2.Message)
        and obj.__module__ == module.__name__
    }


def _check_both_directions(ours: Ours, google_class: type[Message], plan: Plan) -> None:
    desc = protoplan.descriptor_of(google_class)
    name = desc.full_name

    encoded = bytes(ours.build(desc, plan))
    protoplan.assert_same(
        plan, protoplan.google_plan(google_class.FromString(encoded)), f"ours → Google: {name}"
    )

    google_bytes = protoplan.build_google(google_class, plan).SerializeToString()
    decoded = ours.message_class(desc).parse(google_bytes)
    protoplan.assert_same(plan, ours.plan(desc, decoded), f"Google → ours: {name}")


def _assert_fully_populated(google_class: type[Message], plans: list[Plan]) -> None:
    """Guards the test itself: every field is set in at least one variant."""
    desc = protoplan.descriptor_of(google_class)
    for field in desc.fields:
        values = [plan[field.name] for plan in plans]
        nested = field.message_type
        if nested is not None and nested.full_name == desc.full_name:
            continue  # recursion stops at one level
        empty: tuple[object, ...] = ([], {}) if field.is_repeated else (None,)
        assert any(v is not None and v not in empty for v in values), f"{field.full_name} unset"


# -- the real API ---------------------------------------------------------------------------


def test_api_packages() -> None:
    assert API_PACKAGES == [
        "aether.v1",
        "grpc.health.v1",
        "grpc.reflection.v1",
        "grpc.reflection.v1alpha",
    ]


@pytest.mark.parametrize("package", API_PACKAGES)
def test_every_api_message_is_generated(package: str, api_ours: Ours) -> None:
    generated = _generated_message_names(api_ours, package)
    names = genpkgs.message_names(genpkgs.API_PROTO_ROOT, package)
    assert generated == {genpkgs.flat_name(n, package) for n in names}
    assert names


@pytest.mark.parametrize("full_name", API_MESSAGES)
def test_api_message_matches_google(full_name: str, api_ours: Ours) -> None:
    google_class = genpkgs.api_google_class(full_name)
    plans = list(protoplan.populated_variants(protoplan.descriptor_of(google_class)))
    _assert_fully_populated(google_class, plans)
    for plan in plans:
        _check_both_directions(api_ours, google_class, plan)


@pytest.mark.parametrize(
    "full_name",
    ["aether.v1.TaskAssignment", "aether.v1.TaskStreamEvent", "aether.v1.ChatRequest"],
)
def test_api_message_matches_google_fuzzed(full_name: str, api_ours: Ours) -> None:
    google_class = genpkgs.api_google_class(full_name)

    @_FUZZ
    @given(protoplan.plan_strategy(protoplan.descriptor_of(google_class)))
    def check(plan: Plan) -> None:
        _check_both_directions(api_ours, google_class, plan)

    check()


# -- the kitchen sink -----------------------------------------------------------------------


def test_every_kitchen_message_is_generated(kitchen_ours: Ours) -> None:
    generated = _generated_message_names(kitchen_ours, genpkgs.KITCHEN_PROTO_PACKAGE)
    expected = {genpkgs.flat_name(n, genpkgs.KITCHEN_PROTO_PACKAGE) for n in KITCHEN_MESSAGES}
    assert generated == expected


@pytest.mark.parametrize("full_name", KITCHEN_MESSAGES)
def test_kitchen_message_matches_google(full_name: str, kitchen_ours: Ours) -> None:
    google_class = genpkgs.kitchen_google_class(full_name)
    plans = list(protoplan.populated_variants(protoplan.descriptor_of(google_class)))
    _assert_fully_populated(google_class, plans)
    for plan in plans:
        _check_both_directions(kitchen_ours, google_class, plan)


def test_kitchen_everything_matches_google_fuzzed(kitchen_ours: Ours) -> None:
    google_class = genpkgs.kitchen_google_class("kitchen.v1.Everything")

    @_FUZZ
    @given(protoplan.plan_strategy(protoplan.descriptor_of(google_class)))
    def check(plan: Plan) -> None:
        _check_both_directions(kitchen_ours, google_class, plan)

    check()


def test_unknown_fields_are_skipped(kitchen_ours: Ours) -> None:
    """A newer peer's extra fields must not break decoding (forward compatibility)."""
    google_class = genpkgs.kitchen_google_class("kitchen.v1.Everything")
    desc = protoplan.descriptor_of(google_class)
    plan = protoplan.populated(desc)
    data = protoplan.build_google(google_class, plan).SerializeToString()
    # Field 1000 as a varint, field 1001 as a length-delimited blob, field 1002 as fixed64.
    extra = b"\xc0\x3e\x96\x01" + b"\xca\x3e\x03abc" + b"\xd1\x3e" + bytes(8)
    decoded = kitchen_ours.message_class(desc).parse(data + extra)
    protoplan.assert_same(plan, kitchen_ours.plan(desc, decoded), "with unknown fields")


def test_unknown_enum_values_survive(kitchen_ours: Ours) -> None:
    """proto3 enums are open: a value this side does not know is kept, not dropped."""
    google_class = genpkgs.kitchen_google_class("kitchen.v1.Outer")
    desc = protoplan.descriptor_of(google_class)
    # The class is typed as type[Message], whose __init__ (types-protobuf) takes no fields.
    make: Callable[..., object] = google_class
    google = make(mode=77)
    assert isinstance(google, Message)
    decoded = kitchen_ours.message_class(desc).parse(google.SerializeToString())
    assert int(decoded.mode) == 77
    again = google_class.FromString(bytes(decoded))
    assert protoplan.google_plan(again)["mode"] == 77


def test_unpacked_and_packed_repeated_are_both_accepted(kitchen_ours: Ours) -> None:
    """Decoders must accept either encoding of a repeated scalar field."""
    desc = protoplan.descriptor_of(genpkgs.kitchen_google_class("kitchen.v1.RepeatedScalars"))
    cls = kitchen_ours.message_class(desc)
    packed_field_3 = b"\x1a\x03\x01\x02\x03"  # r_int32 = [1, 2, 3], packed
    unpacked_field_3 = b"\x18\x01\x18\x02\x18\x03"  # the same, one tag per element
    packed_field_16 = b"\x82\x01\x02\x04\x05"  # r_unpacked_int32 = [4, 5], packed anyway
    for data, attr, expected in [
        (packed_field_3, "r_int32", [1, 2, 3]),
        (unpacked_field_3, "r_int32", [1, 2, 3]),
        (packed_field_16, "r_unpacked_int32", [4, 5]),
    ]:
        assert getattr(cls.parse(data), attr) == expected


def test_float_fields_round_to_float32(kitchen_ours: Ours) -> None:
    """A float field holds 32 bits: Google and we must round a Python float the same way."""
    google_class = genpkgs.kitchen_google_class("kitchen.v1.Scalars")
    cls = kitchen_ours.message_class(protoplan.descriptor_of(google_class))
    data = bytes(cls(f_float=0.1))
    as_float32 = struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert as_float32 != 0.1
    assert cls.parse(data).f_float == as_float32
    assert protoplan.google_plan(google_class.FromString(data))["f_float"] == as_float32


def test_packed_false_is_encoded_unpacked(kitchen_ours: Ours) -> None:
    """`[packed = false]` asks for one tag per element on the wire, as Google encodes it."""
    google_class = genpkgs.kitchen_google_class("kitchen.v1.RepeatedScalars")
    cls = kitchen_ours.message_class(protoplan.descriptor_of(google_class))
    google = protoplan.build_google(
        google_class, {**protoplan.google_plan(google_class()), "r_unpacked_int32": [1, 2]}
    )
    assert bytes(cls(r_unpacked_int32=[1, 2])) == google.SerializeToString()


# -- malformed input --------------------------------------------------------------------------

# Bodies Google's parser rejects as corrupt, for messages whose field 1 is a string
# (TaskResult) or a message (TaskStreamEvent).
_CORRUPT = [
    pytest.param(b"\x0a\x05ab", id="length-past-end"),
    pytest.param(b"\x08\xff", id="truncated-varint"),
    pytest.param(b"\x0f", id="wire-type-7"),
    pytest.param(b"\x0e", id="wire-type-6"),
    pytest.param(b"\x0b", id="unterminated-group"),
    pytest.param(b"\x0c", id="stray-end-group"),
    pytest.param(b"\x00\x01", id="field-number-0"),
    pytest.param(b"\x0a\x02\xc3\x28", id="invalid-utf8"),
    pytest.param(b"\x80\x80\x80\x80\x10\x01", id="field-number-2**29"),
    pytest.param(b"\xf8\xff\xff\xff\xff\xff\xff\xff\xff\x01\x01", id="tag-over-32-bits"),
]
# Bodies whose field 1 has the wrong wire type: Google's parser keeps them as unknown
# fields and leaves field 1 unset.
_MISMATCHED = [
    pytest.param(b"\x08\x01", id="varint"),
    pytest.param(b"\x0d\x01\x00\x00\x00", id="fixed32"),
    pytest.param(b"\x09" + bytes(8), id="fixed64"),
]
_FIELD_1 = {"aether.v1.TaskResult": "task_id", "aether.v1.TaskStreamEvent": "assignment"}


@pytest.mark.parametrize("full_name", sorted(_FIELD_1))
@pytest.mark.parametrize("body", _CORRUPT)
def test_corrupt_bytes_are_rejected(full_name: str, body: bytes, api_ours: Ours) -> None:
    """What Google refuses to decode, we refuse too (the server maps it to INVALID_ARGUMENT)."""
    google_class = genpkgs.api_google_class(full_name)
    with pytest.raises(DecodeError):
        google_class.FromString(body)
    cls = api_ours.message_class(protoplan.descriptor_of(google_class))
    try:
        decoded = cls.parse(body)
    except Exception:
        return  # any error is a refusal
    pytest.fail(f"{body!r} decoded to {decoded!r} instead of being refused")


@pytest.mark.parametrize("full_name", sorted(_FIELD_1))
@pytest.mark.parametrize("body", _MISMATCHED)
def test_mismatched_wire_type_is_skipped(full_name: str, body: bytes, api_ours: Ours) -> None:
    """A field of the wrong wire type is an unknown field: never a value of the wrong type."""
    google_class = genpkgs.api_google_class(full_name)
    desc = protoplan.descriptor_of(google_class)
    expected = protoplan.google_plan(google_class.FromString(body))
    assert expected == protoplan.google_plan(google_class())
    decoded = api_ours.message_class(desc).parse(body)
    protoplan.assert_same(expected, api_ours.plan(desc, decoded), f"{body!r}")


def test_message_field_occurrences_merge(api_ours: Ours) -> None:
    """A message field that occurs twice is merged, not replaced (protobuf encoding rules)."""
    google_class = genpkgs.api_google_class("aether.v1.TaskStreamEvent")
    desc = protoplan.descriptor_of(google_class)
    # assignment{workflow_id: "w", attempt: 2} then assignment{task_id: "t"}
    body = b"\x0a\x05\x42\x01w\x28\x02" + b"\x0a\x03\x0a\x01t"
    expected = protoplan.google_plan(google_class.FromString(body))
    assignment = expected["assignment"]
    assert isinstance(assignment, dict)
    assert (assignment["task_id"], assignment["workflow_id"], assignment["attempt"]) == (
        "t",
        "w",
        2,
    )
    decoded = api_ours.message_class(desc).parse(body)
    protoplan.assert_same(expected, api_ours.plan(desc, decoded), "merged occurrences")


@pytest.mark.parametrize("full_name", KITCHEN_MESSAGES)
def test_concatenated_encodings_merge_like_google(full_name: str, kitchen_ours: Ours) -> None:
    """Parsing `a + b` is merging b into a: scalars last wins, repeated fields append,
    maps update, sub-messages merge, oneofs take the last member set."""
    google_class = genpkgs.kitchen_google_class(full_name)
    desc = protoplan.descriptor_of(google_class)
    plans = protoplan.populated_variants(desc)
    for first, second in zip(plans, [*plans[1:], plans[0]], strict=True):
        body = b"".join(
            protoplan.build_google(google_class, p).SerializeToString() for p in (first, second)
        )
        expected = protoplan.google_plan(google_class.FromString(body))
        decoded = kitchen_ours.message_class(desc).parse(body)
        protoplan.assert_same(expected, kitchen_ours.plan(desc, decoded), "a + b")


def test_negative_zero_survives(kitchen_ours: Ours) -> None:
    """-0.0 is not the default 0.0 (Google compares bits): it is encoded and keeps its sign."""
    google_class = genpkgs.kitchen_google_class("kitchen.v1.Scalars")
    cls = kitchen_ours.message_class(protoplan.descriptor_of(google_class))
    expected = protoplan.build_google(
        google_class,
        {**protoplan.google_plan(google_class()), "f_double": -0.0, "f_float": -0.0},
    ).SerializeToString()
    assert bytes(cls(f_double=-0.0, f_float=-0.0)) == expected
    decoded = cls.parse(expected)
    assert math.copysign(1.0, decoded.f_double) == -1.0
    assert math.copysign(1.0, decoded.f_float) == -1.0


@pytest.mark.parametrize("full_name", KITCHEN_MESSAGES)
def test_single_field_encodings_match_google_byte_for_byte(
    full_name: str, kitchen_ours: Ours
) -> None:
    """Each scalar, enum, repeated, one-entry map, Timestamp and Duration field alone encodes
    to exactly Google's bytes (e.g. negative int32 as ten-byte varints, zigzag, packing)."""
    google_class = genpkgs.kitchen_google_class(full_name)
    desc = protoplan.descriptor_of(google_class)
    defaults = protoplan.google_plan(google_class())
    checked = 0
    for variant in (0, 1):
        full = protoplan.populated(desc, variant)
        for field in desc.fields:
            value = full[field.name]
            nested = field.message_type
            if protoplan.is_map(field):
                _, value_field = protoplan.map_key_value(field)
                if value_field.message_type is not None or not isinstance(value, dict):
                    continue
                value = dict(list(value.items())[:1])
            elif nested is not None and nested.full_name not in (
                protoplan.TIMESTAMP,
                protoplan.DURATION,
            ):
                continue
            if value is None:
                continue
            plan = {**defaults, field.name: value}
            ours = bytes(kitchen_ours.build(desc, plan))
            google = protoplan.build_google(google_class, plan).SerializeToString()
            assert ours == google, f"{field.full_name} = {value!r}: {ours.hex()} != {google.hex()}"
            checked += 1
    if any(f.message_type is None or protoplan.is_map(f) for f in desc.fields):
        assert checked


def _has_map(desc: Descriptor, seen: tuple[str, ...] = ()) -> bool:
    if desc.full_name in seen:
        return False
    for field in desc.fields:
        if protoplan.is_map(field):
            return True
        if field.message_type is not None and _has_map(field.message_type, (*seen, desc.full_name)):
            return True
    return False


def _google_class(where: str, full_name: str) -> type[Message]:
    if where == "kitchen":
        return genpkgs.kitchen_google_class(full_name)
    return genpkgs.api_google_class(full_name)


def _map_free_messages() -> list[tuple[str, str]]:
    cases = [("kitchen", n) for n in KITCHEN_MESSAGES] + [("api", n) for n in API_MESSAGES]
    return [
        (where, name)
        for where, name in cases
        if not _has_map(protoplan.descriptor_of(_google_class(where, name)))
    ]


_MAP_FREE = _map_free_messages()


@pytest.mark.parametrize(("where", "full_name"), _MAP_FREE, ids=[n for _, n in _MAP_FREE])
def test_encoding_equals_googles(
    where: str, full_name: str, kitchen_ours: Ours, api_ours: Ours
) -> None:
    """Without maps (whose order Google leaves undefined) our bytes are Google's bytes."""
    ours = kitchen_ours if where == "kitchen" else api_ours
    google_class = _google_class(where, full_name)
    desc = protoplan.descriptor_of(google_class)

    @_FUZZ
    @given(protoplan.plan_strategy(desc))
    def check(plan: Plan) -> None:
        expected = protoplan.build_google(google_class, plan).SerializeToString()
        assert bytes(ours.build(desc, plan)) == expected

    check()


def test_float_overflow_encodes_as_infinity_like_google(kitchen_ours: Ours) -> None:
    """A double beyond float32 range stored in a float field becomes inf (Google's rule),
    rather than failing the encode with OverflowError."""
    google_class = genpkgs.kitchen_google_class("kitchen.v1.Scalars")
    cls = kitchen_ours.message_class(protoplan.descriptor_of(google_class))
    for value in (1e39, -1e39):
        expected = protoplan.build_google(
            google_class, {**protoplan.google_plan(google_class()), "f_float": value}
        ).SerializeToString()
        assert bytes(cls(f_float=value)) == expected
        assert cls.parse(expected).f_float == math.copysign(math.inf, value)
