"""Descriptor-driven message "plans": one neutral form to build and compare both codecs.

A *plan* is a plain dict of a message's field values, keyed by proto field name,
with one canonical Python form per proto type: ints, floats, bools, str, bytes,
enums as ints, messages as nested plans (None when absent), repeated fields as
lists, maps as dicts, Timestamp as an aware UTC `datetime`, Duration as a
`timedelta`, every other message (Struct included) field by field.

From a plan we build our betterproto2 object and Google's message, and we turn
both back into plans; two codecs agree when the plans agree. Everything is driven
by Google's descriptors, so no test names a field by hand and a field the
generator forgot fails loudly.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, cast

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, OneofDescriptor
from google.protobuf.message import Message
from hypothesis import settings
from hypothesis import strategies as st

from tests.conftest import fuzz_scale

Plan = dict[str, object]

TIMESTAMP = "google.protobuf.Timestamp"
DURATION = "google.protobuf.Duration"
UTC = datetime.timezone.utc

_FD = FieldDescriptor
# The value range of each integer field type.
INT_RANGES: dict[int, tuple[int, int]] = {
    _FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    _FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    _FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _FD.TYPE_UINT32: (0, 2**32 - 1),
    _FD.TYPE_FIXED32: (0, 2**32 - 1),
    _FD.TYPE_UINT64: (0, 2**64 - 1),
    _FD.TYPE_FIXED64: (0, 2**64 - 1),
}
# Two non-default values per scalar type: extremes (10-byte varints, zigzag
# edges, float32 max) and small ones; strings with multi-byte UTF-8 and NUL.
_EDGES: dict[int, tuple[object, object]] = {
    _FD.TYPE_DOUBLE: (-1.7976931348623157e308, 2.5),
    _FD.TYPE_FLOAT: (-3.4028234663852886e38, 0.15625),
    _FD.TYPE_BOOL: (True, True),
    _FD.TYPE_STRING: ("héllo ✓ 🐍 \x00 end", "x" * 200),
    _FD.TYPE_BYTES: (b"\x00\xff\x80", bytes(range(256))),
    **{t: (lo, hi) if lo < 0 else (hi, 300) for t, (lo, hi) in INT_RANGES.items()},
}
_ZEROS: dict[int, object] = {
    _FD.TYPE_DOUBLE: 0.0,
    _FD.TYPE_FLOAT: 0.0,
    _FD.TYPE_BOOL: False,
    _FD.TYPE_STRING: "",
    _FD.TYPE_BYTES: b"",
    **dict.fromkeys(INT_RANGES, 0),
}
_TIMESTAMPS = (
    datetime.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
    # Before the epoch: negative seconds with positive nanos on the wire.
    datetime.datetime(1969, 12, 31, 23, 59, 58, 250000, tzinfo=UTC),
)
_DURATIONS = (
    datetime.timedelta(days=2, seconds=3, microseconds=4),
    # Negative: seconds and nanos both negative on the wire.
    datetime.timedelta(seconds=-1, microseconds=-500000),
)
_JSON_SAMPLE: dict[str, object] = {
    "number": 1.5,
    "text": "t",
    "flag": True,
    "nothing": None,
    "list": [1.0, "two", None, {"deep": False}],
    "object": {"inner": -2.0},
}


# -- descriptor helpers ---------------------------------------------------------------------


_OPTIONAL_CACHE: dict[str, frozenset[str]] = {}


def _proto3_optional_names(desc: Descriptor) -> frozenset[str]:
    cached = _OPTIONAL_CACHE.get(desc.full_name)
    if cached is None:
        proto = descriptor_pb2.DescriptorProto()
        desc.CopyToProto(proto)
        cached = frozenset(f.name for f in proto.field if f.proto3_optional)
        _OPTIONAL_CACHE[desc.full_name] = cached
    return cached


def is_proto3_optional(field: FieldDescriptor) -> bool:
    """Whether the field is declared `optional` in proto3 (a synthetic oneof)."""
    owner = field.containing_type
    return owner is not None and field.name in _proto3_optional_names(owner)


def real_oneof(field: FieldDescriptor) -> OneofDescriptor | None:
    """The field's oneof, unless it is the synthetic oneof of a proto3 `optional`."""
    if field.containing_oneof is None or is_proto3_optional(field):
        return None
    return field.containing_oneof


def is_map(field: FieldDescriptor) -> bool:
    """Whether the field is a map (a repeated synthetic `*Entry` message)."""
    entry = field.message_type
    return field.is_repeated and entry is not None and entry.GetOptions().map_entry


def map_key_value(field: FieldDescriptor) -> tuple[FieldDescriptor, FieldDescriptor]:
    """The key and value fields of a map field's entry type."""
    entry = field.message_type
    assert entry is not None
    return entry.fields_by_name["key"], entry.fields_by_name["value"]


def enum_numbers(enum_desc: EnumDescriptor | None) -> list[int]:
    """The distinct declared numbers of an enum (aliases share one), ascending."""
    assert enum_desc is not None
    return sorted({v.number for v in enum_desc.values})


def required_message(field: FieldDescriptor) -> Descriptor:
    """The message type of a message-typed field."""
    assert field.message_type is not None, field.full_name
    return field.message_type


# -- deterministic populated plans ----------------------------------------------------------


def _json_to_struct_plan(value: Mapping[str, object]) -> Plan:
    return {"fields": {k: _json_to_value_plan(v) for k, v in value.items()}}


def _json_to_value_plan(value: object) -> Plan:
    kinds: Plan = dict.fromkeys(
        (
            "null_value",
            "number_value",
            "string_value",
            "bool_value",
            "struct_value",
            "list_value",
        )
    )
    if value is None:
        kinds["null_value"] = 0
    elif isinstance(value, bool):
        kinds["bool_value"] = value
    elif isinstance(value, float):
        kinds["number_value"] = value
    elif isinstance(value, str):
        kinds["string_value"] = value
    elif isinstance(value, list):
        kinds["list_value"] = {"values": [_json_to_value_plan(v) for v in value]}
    elif isinstance(value, dict):
        kinds["struct_value"] = _json_to_struct_plan(value)
    else:
        raise TypeError(f"not a JSON value: {value!r}")
    return kinds


def _scalar_edge(field: FieldDescriptor, variant: int) -> object:
    if field.type == _FD.TYPE_ENUM:
        non_zero = [n for n in enum_numbers(field.enum_type) if n != 0] or [0]
        return non_zero[variant % len(non_zero)]
    return _EDGES[field.type][variant % 2]


def _zero(field: FieldDescriptor) -> object:
    return 0 if field.type == _FD.TYPE_ENUM else _ZEROS[field.type]


def _single_populated(
    field: FieldDescriptor, variant: int, stack: tuple[str, ...]
) -> object | None:
    if field.type != _FD.TYPE_MESSAGE:
        return _scalar_edge(field, variant)
    desc = required_message(field)
    if desc.full_name == TIMESTAMP:
        return _TIMESTAMPS[variant % 2]
    if desc.full_name == DURATION:
        return _DURATIONS[variant % 2]
    if desc.full_name == "google.protobuf.Struct":
        return _json_to_struct_plan(_JSON_SAMPLE)
    if desc.full_name in stack:
        return None  # stop recursion after one level
    return populated(desc, variant, stack)


def populated(desc: Descriptor, variant: int = 0, stack: tuple[str, ...] = ()) -> Plan:
    """A plan with every field set to a non-default value (one member per oneof).

    `variant` picks among edge values and which oneof member is set, so that a few
    variants together set every oneof member. proto3 `optional` fields are set to
    their zero value in even variants: presence must survive the wire.
    """
    stack = (*stack, desc.full_name)
    plan: Plan = {}
    for field in desc.fields:
        oneof = real_oneof(field)
        if oneof is not None and oneof.fields[variant % len(oneof.fields)] is not field:
            plan[field.name] = None
        elif is_map(field):
            key_field, value_field = map_key_value(field)
            keys = (_scalar_edge(key_field, variant), _zero(key_field))
            values = [_single_populated(value_field, variant + i, stack) for i in range(2)]
            if value_field.type == _FD.TYPE_MESSAGE and values[0] is None:
                plan[field.name] = {}
            else:
                plan[field.name] = dict(zip(keys, values, strict=True))
        elif field.is_repeated:
            items = [_single_populated(field, variant + i, stack) for i in range(2)]
            if field.type != _FD.TYPE_MESSAGE:
                items.append(_zero(field))  # zeros inside packed arrays
            plan[field.name] = [item for item in items if item is not None]
        elif is_proto3_optional(field) and variant % 2 == 0:
            plan[field.name] = _zero(field)
        else:
            plan[field.name] = _single_populated(field, variant, stack)
    return plan


def variant_count(desc: Descriptor, stack: tuple[str, ...] = ()) -> int:
    """How many variants of `populated` it takes to set every oneof member at least once."""
    stack = (*stack, desc.full_name)
    count = 2
    for oneof in desc.oneofs:
        count = max(count, len(oneof.fields))
    for field in desc.fields:
        nested = field.message_type
        if nested is not None and nested.full_name not in stack:
            count = max(count, variant_count(nested, stack))
    return count


# -- hypothesis strategies ------------------------------------------------------------------


def fuzz_settings(max_examples: int) -> settings:
    """Hypothesis settings of these tests: the active profile (tests/conftest.py: derandomized
    in the gate, random under `make fuzz`) with `max_examples` scaled by `make fuzz`."""
    return settings(max_examples=max_examples * fuzz_scale())


@dataclasses.dataclass(frozen=True)
class Options:
    """Knobs of `plan_strategy`."""

    nonempty_strings: bool = False
    """Strings of at least one character (for models whose "(required)" ids must be set)."""
    finite_floats: bool = False
    """No infinities (JSON has none)."""


_json: st.SearchStrategy[object] = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def _scalar_strategy(field: FieldDescriptor, opts: Options) -> st.SearchStrategy[object]:
    kind = field.type
    if kind in INT_RANGES:
        lo, hi = INT_RANGES[kind]
        return st.integers(lo, hi)
    if kind == _FD.TYPE_ENUM:
        return st.sampled_from(enum_numbers(field.enum_type))
    if kind == _FD.TYPE_DOUBLE:
        return st.floats(allow_nan=False, allow_infinity=not opts.finite_floats)
    if kind == _FD.TYPE_FLOAT:
        return st.floats(allow_nan=False, allow_infinity=not opts.finite_floats, width=32)
    if kind == _FD.TYPE_BOOL:
        return st.booleans()
    if kind == _FD.TYPE_STRING:
        return st.text(min_size=1 if opts.nonempty_strings else 0, max_size=12)
    if kind == _FD.TYPE_BYTES:
        return st.binary(max_size=12)
    raise AssertionError(f"unhandled field type {kind} of {field.full_name}")


def _single_strategy(
    field: FieldDescriptor, stack: tuple[str, ...], opts: Options
) -> st.SearchStrategy[object] | None:
    """None when the field's message type would recurse too deep."""
    if field.type != _FD.TYPE_MESSAGE:
        return _scalar_strategy(field, opts)
    desc = required_message(field)
    if desc.full_name == TIMESTAMP:
        return st.datetimes(
            min_value=datetime.datetime(1, 1, 1),
            max_value=datetime.datetime(9999, 12, 31, 23, 59, 59),
            timezones=st.just(UTC),
        )
    if desc.full_name == DURATION:
        # The proto Duration range is about ±10,000 years.
        span = datetime.timedelta(days=365 * 9_999)
        return st.timedeltas(min_value=-span, max_value=span)
    if desc.full_name == "google.protobuf.Struct":
        return st.dictionaries(st.text(max_size=5), _json, max_size=3).map(_json_to_struct_plan)
    if desc.full_name in stack:
        return None
    return plan_strategy(desc, stack=stack, opts=opts)


def plan_strategy(
    desc: Descriptor, *, stack: tuple[str, ...] = (), opts: Options = Options()
) -> st.SearchStrategy[Plan]:
    """Random plans of `desc`: any values, fields absent or present, oneofs any member."""
    stack = (*stack, desc.full_name)
    fixed: dict[str, st.SearchStrategy[object]] = {}
    oneof_choices: list[st.SearchStrategy[tuple[str | None, object]]] = []
    oneof_members: list[str] = []
    for field in desc.fields:
        single = _single_strategy(field, stack, opts)
        if real_oneof(field) is not None:
            oneof_members.append(field.name)
            continue
        if is_map(field):
            key_field, value_field = map_key_value(field)
            value_strategy = _single_strategy(value_field, stack, opts)
            fixed[field.name] = (
                st.dictionaries(_scalar_strategy(key_field, opts), value_strategy, max_size=3)
                if value_strategy is not None
                else st.just({})
            )
        elif field.is_repeated:
            fixed[field.name] = st.lists(single, max_size=3) if single is not None else st.just([])
        elif single is None:
            fixed[field.name] = st.none()
        elif field.has_presence:
            fixed[field.name] = st.none() | single
        else:
            fixed[field.name] = single
    for oneof in desc.oneofs:
        members = [f for f in oneof.fields if real_oneof(f) is not None]
        options: list[st.SearchStrategy[tuple[str | None, object]]] = [st.just((None, None))]
        for member in members:
            single = _single_strategy(member, stack, opts)
            if single is not None:
                options.append(st.tuples(st.just(member.name), single))
        if members:
            oneof_choices.append(st.one_of(options))

    def assemble(parts: tuple[dict[str, object], list[tuple[str | None, object]]]) -> Plan:
        plan: Plan = dict(parts[0])
        for name in oneof_members:
            plan[name] = None
        for chosen, value in parts[1]:
            if chosen is not None:
                plan[chosen] = value
        return plan

    return st.tuples(st.fixed_dictionaries(fixed), st.tuples(*oneof_choices).map(list)).map(
        assemble
    )


# -- Google's side --------------------------------------------------------------------------


def build_google(cls: type[Message], plan: Plan) -> Message:
    """Google's message of class `cls` holding `plan`."""
    msg = cls()
    _fill_google(msg, plan)
    return msg


def _fill_google_value(msg: Any, desc: Descriptor, value: object) -> None:
    if desc.full_name == TIMESTAMP:
        assert isinstance(value, datetime.datetime)
        msg.FromDatetime(value)
    elif desc.full_name == DURATION:
        assert isinstance(value, datetime.timedelta)
        msg.FromTimedelta(value)
    else:
        assert isinstance(value, dict)
        _fill_google(msg, value)


def _fill_google(msg: Any, plan: Plan) -> None:
    desc = descriptor_of(msg)
    for field in desc.fields:
        value = plan[field.name]
        if value is None:
            continue
        if is_map(field):
            _, value_field = map_key_value(field)
            container = getattr(msg, field.name)
            assert isinstance(value, dict)
            for key, item in value.items():
                if value_field.type == _FD.TYPE_MESSAGE:
                    _fill_google_value(container[key], required_message(value_field), item)
                else:
                    container[key] = item
        elif field.is_repeated:
            container = getattr(msg, field.name)
            assert isinstance(value, list)
            for item in value:
                if field.type == _FD.TYPE_MESSAGE:
                    _fill_google_value(container.add(), required_message(field), item)
                else:
                    container.append(item)
        elif field.type == _FD.TYPE_MESSAGE:
            sub = getattr(msg, field.name)
            sub.SetInParent()
            _fill_google_value(sub, required_message(field), value)
        else:
            setattr(msg, field.name, value)


def _google_single(field: FieldDescriptor, value: Any) -> object:
    if field.type != _FD.TYPE_MESSAGE:
        return value
    desc = required_message(field)
    if desc.full_name == TIMESTAMP:
        return value.ToDatetime(tzinfo=UTC)
    if desc.full_name == DURATION:
        return value.ToTimedelta()
    return google_plan(value)


def google_plan(msg: Message) -> Plan:
    """The plan of a Google message."""
    desc = descriptor_of(msg)
    plan: Plan = {}
    anymsg: Any = msg
    for field in desc.fields:
        value = getattr(anymsg, field.name)
        if is_map(field):
            _, value_field = map_key_value(field)
            plan[field.name] = {k: _google_single(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            plan[field.name] = [_google_single(field, v) for v in value]
        elif field.has_presence and not msg.HasField(field.name):
            plan[field.name] = None
        else:
            plan[field.name] = _google_single(field, value)
    return plan


# -- our side -------------------------------------------------------------------------------


class Ours:
    """Finds our generated classes for proto types.

    `modules` maps a proto package ("kitchen.v1", "google.protobuf") to our
    generated `messages` module for it.
    """

    def __init__(self, modules: Mapping[str, ModuleType]) -> None:
        self._modules = dict(modules)

    def module(self, proto_package: str) -> ModuleType:
        """Our generated messages module of a proto package."""
        return self._modules[proto_package]

    def _lookup(self, full_name: str) -> Any:
        # Longest package first: "grpc.reflection.v1alpha" before "grpc.reflection.v1".
        for package, module in sorted(self._modules.items(), key=lambda kv: -len(kv[0])):
            if full_name.startswith(package + "."):
                name = full_name[len(package) + 1 :].replace(".", "")
                # Class names that shadow builtins are escaped with a trailing `_`.
                found = getattr(module, name, None) or getattr(module, name + "_", None)
                if found is None:
                    raise AssertionError(f"{module.__name__} has no {name} (for {full_name})")
                return found
        raise AssertionError(f"no generated module for {full_name}")

    def message_class(self, desc: Descriptor) -> type[Any]:
        """Our betterproto2 class for a message type."""
        cls = self._lookup(desc.full_name)
        assert isinstance(cls, type) and dataclasses.is_dataclass(cls), cls
        return cls

    def enum_class(self, desc: EnumDescriptor | None) -> type[enum.IntEnum]:
        """Our enum class for an enum type."""
        assert desc is not None
        cls = self._lookup(desc.full_name)
        assert isinstance(cls, type) and issubclass(cls, enum.IntEnum), cls
        return cls

    @staticmethod
    def attr(cls: type[Any], proto_name: str) -> str:
        """The Python attribute of a proto field: its name, or the name escaped with `_`s."""
        names = {f.name for f in dataclasses.fields(cls)}
        for candidate in (proto_name + "_" * n for n in range(4)):
            if candidate in names:
                return candidate
        raise AssertionError(f"{cls.__name__} has no field for {proto_name!r}: {sorted(names)}")

    # building

    def build(self, desc: Descriptor, plan: Plan) -> Any:
        """Our wire object of type `desc` holding `plan`."""
        cls = self.message_class(desc)
        kwargs: dict[str, object] = {}
        for field in desc.fields:
            kwargs[self.attr(cls, field.name)] = self._to_ours(field, plan[field.name])
        return cls(**kwargs)

    def _to_ours(self, field: FieldDescriptor, value: object) -> object:
        if is_map(field):
            _, value_field = map_key_value(field)
            assert isinstance(value, dict)
            return {k: self._single_to_ours(value_field, v) for k, v in value.items()}
        if field.is_repeated:
            assert isinstance(value, list)
            return [self._single_to_ours(field, v) for v in value]
        return self._single_to_ours(field, value)

    def _single_to_ours(self, field: FieldDescriptor, value: object) -> object:
        if value is None:
            return None
        if field.type == _FD.TYPE_ENUM:
            assert isinstance(value, int)
            return self.enum_class(field.enum_type)(value)
        if field.type != _FD.TYPE_MESSAGE:
            return value
        desc = required_message(field)
        if desc.full_name in (TIMESTAMP, DURATION):
            return value
        assert isinstance(value, dict)
        return self.build(desc, value)

    # reading back

    def plan(self, desc: Descriptor, obj: object) -> Plan:
        """The plan of our wire object (checking the Python types on the way)."""
        cls = self.message_class(desc)
        assert type(obj) is cls, f"expected {cls.__name__}, got {type(obj).__name__}"
        plan: Plan = {}
        for field in desc.fields:
            value = getattr(obj, self.attr(cls, field.name))
            if is_map(field):
                _, value_field = map_key_value(field)
                assert isinstance(value, dict), f"{field.full_name}: {value!r}"
                plan[field.name] = {k: self._single_plan(value_field, v) for k, v in value.items()}
            elif field.is_repeated:
                assert isinstance(value, list), f"{field.full_name}: {value!r}"
                plan[field.name] = [self._single_plan(field, v) for v in value]
            else:
                plan[field.name] = self._single_plan(field, value)
        return plan

    def _single_plan(self, field: FieldDescriptor, value: object) -> object:
        if value is None:
            return None
        if field.type == _FD.TYPE_ENUM:
            enum_cls = self.enum_class(field.enum_type)
            assert isinstance(value, enum_cls), f"{field.full_name}: {value!r} is no {enum_cls}"
            return int(value)
        if field.type != _FD.TYPE_MESSAGE:
            return value
        desc = required_message(field)
        if desc.full_name == TIMESTAMP:
            assert isinstance(value, datetime.datetime), f"{field.full_name}: {value!r}"
            assert value.tzinfo is not None, f"{field.full_name}: naive datetime {value!r}"
            return value
        if desc.full_name == DURATION:
            assert isinstance(value, datetime.timedelta), f"{field.full_name}: {value!r}"
            return value
        return self.plan(desc, value)


# -- comparing ------------------------------------------------------------------------------


def diff(expected: object, actual: object, path: str = "") -> list[str]:
    """Field-by-field differences between two plans (empty when equal), with types checked."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        problems: list[str] = []
        for key in sorted(set(expected) | set(actual), key=repr):
            where = f"{path}.{key}" if isinstance(key, str) and path else f"{path}[{key!r}]"
            if key not in actual:
                problems.append(f"{where}: missing")
            elif key not in expected:
                problems.append(f"{where}: unexpected {actual[key]!r}")
            else:
                problems.extend(diff(expected[key], actual[key], where))
        return problems
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: expected {len(expected)} items, got {len(actual)}: {actual!r}"]
        pairs = enumerate(zip(expected, actual, strict=True))
        return [p for i, (e, a) in pairs for p in diff(e, a, f"{path}[{i}]")]
    if type(expected) is not type(actual) or not _same(expected, actual):
        return [f"{path}: expected {expected!r}, got {actual!r}"]
    return []


def _same(expected: object, actual: object) -> bool:
    if isinstance(expected, float) and isinstance(actual, float):
        return expected == actual or (math.isnan(expected) and math.isnan(actual))
    return expected == actual


def assert_same(expected: Plan, actual: Plan, what: str) -> None:
    """Fail with every differing field listed."""
    problems = diff(expected, actual)
    assert not problems, f"{what}:\n  " + "\n  ".join(problems)


def populated_variants(desc: Descriptor) -> Sequence[Plan]:
    """Populated plans of every variant `desc` needs."""
    return [populated(desc, v) for v in range(variant_count(desc))]


def descriptor_of(msg: Message | type[Message]) -> Descriptor:
    """The descriptor of a Google message or message class."""
    return cast(Descriptor, msg.DESCRIPTOR)
