"""Edge cases of the generated straight-line codec (`aether_api.codec` + per-message code).

Wire compatibility with Google's protobuf over whole messages is covered by
test_wire_compat.py; these pin the behaviours a random round trip rarely hits.
"""

from __future__ import annotations

import datetime

import pytest
from aether_api import codec
from aether_api.google.protobuf import messages as wkt_pb
from aether_api.grpc.health.v1 import messages as health_pb
from aether_api.grpc.reflection.v1 import messages as reflection_pb
from aether_api.grpc.reflection.v1alpha import messages as reflection_alpha_pb
from aether_api.message_pool import default_message_pool
from aether_api.v1 import messages as pb

UTC = datetime.timezone.utc


def test_truncated_input_raises_value_error() -> None:
    whole = bytes(pb.TaskResult(task_id="t-1", result=b"abc", metrics={"k": "v"}))
    for cut in range(1, len(whole)):
        try:
            decoded = pb.TaskResult.parse(whole[:cut])
        except ValueError:
            continue
        # A cut on a field boundary is a valid shorter message, never garbage.
        assert bytes(decoded) == whole[:cut]


def test_unknown_fields_are_kept_and_written_back() -> None:
    # Field 99 (varint 7) and field 100 (bytes "zz") are unknown to TaskResult.
    extra = b"\x98\x06\x07" + b"\xa2\x06\x02zz"
    data = bytes(pb.TaskResult(task_id="t")) + extra
    decoded = pb.TaskResult.parse(data)
    assert decoded.task_id == "t"
    assert bytes(decoded) == data


def test_oneof_last_member_on_the_wire_wins() -> None:
    assignment = bytes(pb.TaskStreamEvent(assignment=pb.TaskAssignment(task_id="a")))
    cancel = bytes(pb.TaskStreamEvent(cancel=pb.TaskCancellation(task_id="c")))
    event = pb.TaskStreamEvent.parse(assignment + cancel)
    assert event.assignment is None
    assert event.cancel == pb.TaskCancellation(task_id="c")


def test_negative_int32_uses_ten_bytes_and_round_trips() -> None:
    data = bytes(pb.TaskAssignment(priority=-1))
    assert data == b"\x30" + b"\xff" * 9 + b"\x01"
    assert pb.TaskAssignment.parse(data).priority == -1


def test_zero_values_are_not_written_but_set_optionals_are() -> None:
    assert bytes(pb.TaskResult()) == b""
    assert bytes(pb.ChatRequest(temperature=0.0, max_tokens=0)) == b"\x1d\x00\x00\x00\x00\x20\x00"
    decoded = pb.ChatRequest.parse(b"\x1d\x00\x00\x00\x00\x20\x00")
    assert decoded.temperature == 0.0 and decoded.max_tokens == 0


def test_unknown_enum_number_is_kept() -> None:
    data = b"\x08\x63"  # status = 99
    response = health_pb.HealthCheckResponse.parse(data)
    assert int(response.status) == 99
    assert bytes(response) == data


def test_timestamps_convert_any_timezone_and_refuse_naive() -> None:
    at = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    plus_two = at.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    data = bytes(pb.TaskAssignment(created_at=plus_two))
    assert data == bytes(pb.TaskAssignment(created_at=at))
    assert pb.TaskAssignment.parse(data).created_at == at
    with pytest.raises(ValueError, match="timezone-aware"):
        bytes(pb.TaskAssignment(created_at=datetime.datetime(2024, 1, 1)))
    before_epoch = datetime.datetime(1960, 1, 1, 0, 0, 0, 500, tzinfo=UTC)
    assert pb.TaskAssignment.parse(bytes(pb.TaskAssignment(deadline=before_epoch))).deadline == (
        before_epoch
    )


def test_durations_round_trip_with_sign() -> None:
    out = bytearray()
    codec.put_duration(out, b"\x0a", datetime.timedelta(seconds=-1, microseconds=-500))
    value, pos = codec.read_duration(bytes(out), 1)
    assert pos == len(out)
    assert value == datetime.timedelta(seconds=-1, microseconds=-500)


def test_map_entry_without_value_takes_the_default() -> None:
    # metrics entry with key "k" only.
    data = b"\x2a\x03\x0a\x01k"
    assert pb.TaskResult.parse(data).metrics == {"k": ""}


def test_invalid_wire_type_and_field_zero_are_rejected() -> None:
    with pytest.raises(ValueError):
        pb.TaskResult.parse(b"\x0f")  # field 1, wire type 7
    with pytest.raises(ValueError):
        pb.TaskResult.parse(b"\x00\x01")  # field 0


def test_overlong_varint_is_rejected() -> None:
    with pytest.raises(ValueError, match="10 bytes"):
        codec.read_varint(b"\xff" * 11, 0)


def test_repeated_singular_message_field_is_merged() -> None:
    first = bytes(pb.ChatResponse(usage=pb.Usage(prompt_tokens=3, total_tokens=5)))
    second = bytes(pb.ChatResponse(usage=pb.Usage(completion_tokens=2, total_tokens=7)))
    merged = pb.ChatResponse.parse(first + second)
    assert merged.usage == pb.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=7)


def test_repeated_singular_timestamp_is_merged_field_wise() -> None:
    # seconds=5, nanos=7000 then seconds=9 only: protobuf keeps nanos from the first.
    first = b"\x4a\x05\x08\x05\x10\xd8\x36"
    second = b"\x4a\x02\x08\x09"
    merged = pb.TaskAssignment.parse(first + second).created_at
    assert merged == datetime.datetime(1970, 1, 1, 0, 0, 9, 7, tzinfo=UTC)


def test_field_number_beyond_the_maximum_is_rejected() -> None:
    with pytest.raises(ValueError, match="invalid field number"):
        pb.TaskResult.parse(b"\x8d\x80\x80\x80\x10\x00\x00\x00\x00")


def test_negative_zero_is_written() -> None:
    data = bytes(pb.TaskStatus(progress=-0.0))
    assert data == b"\x1d\x00\x00\x00\x80"
    assert str(pb.TaskStatus.parse(data).progress) == "-0.0"


def test_parse_builds_the_same_instance_as_the_constructor() -> None:
    # `parse` skips the dataclass __init__ (object.__new__ + one assignment per field): the
    # instance must hold exactly what the constructor's does, in the same order.
    classes = list(default_message_pool.url_to_type.values())
    for expected in (
        pb.TaskAssignment,
        health_pb.HealthCheckRequest,
        reflection_pb.ServerReflectionRequest,
        reflection_alpha_pb.ServerReflectionRequest,
        wkt_pb.Timestamp,
    ):
        assert expected in classes
    for cls in classes:
        assert list(vars(cls.parse(b"")).items()) == list(vars(cls()).items()), cls
    made = pb.TaskAssignment(
        task_id="t",
        payload=b"p",
        attempt=2,
        metadata={"k": "v"},
        created_at=datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    )
    parsed = pb.TaskAssignment.parse(bytes(made))
    assert list(vars(parsed).items()) == list(vars(made).items())
