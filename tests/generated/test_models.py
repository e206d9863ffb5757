"""Validation behaviour of the generated Pydantic models (`aether_api.v1.models`).

The protos are the source of truth: which ids are required and what each field
means are read from their comments, so a field added to the protos is covered
without touching this file.
"""

from __future__ import annotations

import datetime
import functools

import pydantic
import pytest
from aether_api.v1 import messages, models
from google.protobuf import descriptor_pb2

from tests.generated import genpkgs

_PACKAGE = genpkgs.API_PROTO_PACKAGE


def _walk(
    messages_: list[descriptor_pb2.DescriptorProto],
    path: tuple[int, ...],
    prefix: str,
    by_path: dict[tuple[int, ...], str],
    into: dict[tuple[str, str], str],
) -> None:
    for i, msg in enumerate(messages_):
        if msg.options.map_entry:
            continue
        name = prefix + msg.name
        for j, field in enumerate(msg.field):
            # SourceCodeInfo paths: 4 = message_type, 3 = nested_type, 2 = field.
            into[(name, field.name)] = " ".join(by_path.get((*path, i, 2, j), "").split())
        _walk(list(msg.nested_type), (*path, i, 3), name, by_path, into)


@functools.cache
def _field_comments() -> dict[tuple[str, str], str]:
    """(flattened message name, field name) → the field's leading proto comment."""
    comments: dict[tuple[str, str], str] = {}
    for file_proto in genpkgs.descriptor_set(genpkgs.API_PROTO_ROOT).file:
        if file_proto.package == _PACKAGE:
            by_path = {
                tuple(loc.path): loc.leading_comments
                for loc in file_proto.source_code_info.location
            }
            _walk(list(file_proto.message_type), (4,), "", by_path, comments)
    return comments


def _required_fields() -> list[tuple[str, str]]:
    return sorted(key for key, comment in _field_comments().items() if "(required)" in comment)


def _model(name: str) -> type[pydantic.BaseModel]:
    model = getattr(models, name)
    assert isinstance(model, type) and issubclass(model, pydantic.BaseModel)
    return model


def _valid_kwargs(name: str) -> dict[str, object]:
    """Every required field of message `name` set to a valid id."""
    return {field: "x" for message, field in _required_fields() if message == name}


REQUIRED = _required_fields()


def test_the_protos_mark_required_ids() -> None:
    assert ("TaskResult", "task_id") in REQUIRED
    assert ("RegisterRequest", "agent_id") in REQUIRED
    assert ("ChatMessage", "role") in REQUIRED


@pytest.mark.parametrize(("message", "field"), REQUIRED, ids=[f"{m}.{f}" for m, f in REQUIRED])
def test_required_id_must_be_non_empty(message: str, field: str) -> None:
    model = _model(message)
    kwargs = _valid_kwargs(message)
    assert model(**kwargs).model_dump()[field] == "x"

    with pytest.raises(pydantic.ValidationError) as empty:
        model(**{**kwargs, field: ""})
    assert [e["loc"] for e in empty.value.errors()] == [(field,)]
    assert field in str(empty.value)

    with pytest.raises(pydantic.ValidationError) as missing:
        model(**{k: v for k, v in kwargs.items() if k != field})
    assert [e["loc"] for e in missing.value.errors()] == [(field,)]


def test_fields_not_marked_required_accept_defaults() -> None:
    result = models.TaskResult(task_id="t")
    assert (result.success, result.result, result.error_message) == (False, b"", "")
    assert result.metrics == {}
    assert models.TaskAssignment(task_id="t").created_at is None


@pytest.mark.parametrize("bad", [99, -1, "NOT_A_STATE", "bogus", 2.5])
def test_wrong_enum_value_is_rejected(bad: object) -> None:
    with pytest.raises(pydantic.ValidationError) as failed:
        models.TaskStatus.model_validate({"task_id": "t", "state": bad})
    assert [e["loc"] for e in failed.value.errors()] == [("state",)]


def test_enum_accepts_members_and_their_numbers() -> None:
    assert models.TaskStatus(task_id="t", state=messages.TaskState.RUNNING).state is (
        messages.TaskState.RUNNING
    )
    by_number = models.TaskStatus.model_validate({"task_id": "t", "state": 3})
    assert by_number.state is messages.TaskState.RUNNING


def test_oneof_rejects_two_members() -> None:
    assignment = models.TaskAssignment(task_id="t")
    cancel = models.TaskCancellation(task_id="t")
    with pytest.raises(pydantic.ValidationError) as failed:
        models.TaskStreamEvent(assignment=assignment, cancel=cancel)
    text = str(failed.value)
    assert "event" in text
    assert "assignment" in text
    assert "cancel" in text

    event = models.TaskStreamEvent(assignment=assignment)
    with pytest.raises(pydantic.ValidationError):
        event.cancel = cancel  # assignment is validated too
    assert models.TaskStreamEvent(cancel=cancel).assignment is None
    assert models.TaskStreamEvent().to_wire() == messages.TaskStreamEvent()


def test_int32_range_is_enforced() -> None:
    models.RegisterRequest(agent_id="a", max_concurrent_tasks=2**31 - 1)
    with pytest.raises(pydantic.ValidationError) as failed:
        models.RegisterRequest(agent_id="a", max_concurrent_tasks=2**31)
    assert [e["loc"] for e in failed.value.errors()] == [("max_concurrent_tasks",)]


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError) as failed:
        models.TaskResult.model_validate({"task_id": "t", "sucess": True})
    assert [e["loc"] for e in failed.value.errors()] == [("sucess",)]


def test_timestamps_must_be_timezone_aware() -> None:
    naive = datetime.datetime(2025, 1, 1, 12, 0)
    with pytest.raises(pydantic.ValidationError) as failed:
        models.TaskAssignment(task_id="t", created_at=naive)
    assert [e["loc"] for e in failed.value.errors()] == [("created_at",)]
    aware = naive.replace(tzinfo=datetime.timezone.utc)
    assert models.TaskAssignment(task_id="t", created_at=aware).to_wire().created_at == aware


def _description_cases() -> list[tuple[str, str, str]]:
    return sorted((m, f, c) for (m, f), c in _field_comments().items())


@pytest.mark.parametrize(
    ("message", "field", "comment"),
    _description_cases(),
    ids=[f"{m}.{f}" for m, f, _ in _description_cases()],
)
def test_field_description_is_the_proto_comment(message: str, field: str, comment: str) -> None:
    info = _model(message).model_fields[field]
    assert info.description is not None
    assert " ".join(info.description.split()) == comment


def test_task_id_description() -> None:
    assert models.TaskResult.model_fields["task_id"].description == (
        "The task this result is for (required)."
    )


def test_model_docstring_is_the_message_comment() -> None:
    assert models.TaskResult.__doc__ == "The terminal result of a task."


def test_guide_usage() -> None:
    """The constructions the SDK guide's examples use."""
    ok = models.TaskResult(task_id="t", success=True, result=b"x", metrics={"a": "b"})
    assert (ok.task_id, ok.success, ok.result, ok.metrics) == ("t", True, b"x", {"a": "b"})
    assert ok.to_wire() == messages.TaskResult(
        task_id="t", success=True, result=b"x", metrics={"a": "b"}
    )

    failed = models.TaskResult(task_id="t", success=False, error_message="LLM call failed: x")
    wire = messages.TaskResult.parse(bytes(failed.to_wire()))
    assert models.TaskResult.from_wire(wire) == failed

    task = models.TaskAssignment(task_id="t-9", description="review", payload=b'{"k": 1}')
    assert task.payload.decode() == '{"k": 1}'
    message = models.ChatMessage(role="user", content=task.description)
    assert models.ChatRequest(messages=[message], temperature=0.2).to_wire().temperature == (
        pytest.approx(0.2)
    )


def test_from_wire_trusts_the_wire() -> None:
    """from_wire does not re-validate: a Hub that sends an empty id does not crash the agent."""
    model = models.TaskAssignment.from_wire(messages.TaskAssignment())
    assert model.task_id == ""
    assert model.to_wire() == messages.TaskAssignment()


def test_models_are_validated_on_assignment() -> None:
    result = models.TaskResult(task_id="t")
    with pytest.raises(pydantic.ValidationError):
        result.task_id = ""
    result.success = True
    assert result.to_wire().success is True


def test_from_wire_keeps_enum_values_the_proto_does_not_define() -> None:
    """A newer Hub may send a state this SDK does not know: it passes through unchanged."""
    data = b"\x0a\x01t\x10\x63"  # task_id="t", state=99
    model = models.TaskStatus.from_wire(messages.TaskStatus.parse(data))
    assert int(model.state) == 99
    assert bytes(model.to_wire()) == data


def test_every_model_has_a_json_schema_with_descriptions() -> None:
    """Tools (OpenAPI, LLM tool specs) read the models' JSON schemas."""
    names = sorted({message for message, _ in _field_comments()})
    for name in names:
        schema = _model(name).model_json_schema()
        assert schema["description"], name
        for field, spec in schema.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field}"


def test_float32_overflow_is_a_validation_error_or_infinity() -> None:
    """`progress=1e39` must not pass validation and then crash the encoder: either the model
    refuses it (naming the field) or the wire carries inf, as Google's encoder does."""
    try:
        status = models.TaskStatus(task_id="t", progress=1e39)
    except pydantic.ValidationError as refused:
        assert [e["loc"] for e in refused.errors()] == [("progress",)]
        return
    decoded = messages.TaskStatus.parse(bytes(status.to_wire()))
    assert decoded.progress == float("inf")
