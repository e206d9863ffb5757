"""Round trips through everything the generator emits: wire object ↔ bytes ↔ Pydantic model.

Hypothesis draws random messages (from Google's descriptors, so every field and
every oneof member takes part) for the kitchen sink and for every message of the
real API; each must survive

    wire object → bytes → wire object → Model.from_wire → .to_wire()   unchanged, and
    Model → model_dump() → Model.model_validate → .to_wire()          unchanged

(except that a message field marked "(empty if unset)" comes back unset when it was empty).
"""

from __future__ import annotations

import datetime
import importlib
from types import ModuleType
from typing import Any

import pydantic
import pytest
from aether_api.v1 import messages, models
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given

from tests.generated import genpkgs, protoplan
from tests.generated.protoplan import Options, Ours, Plan

API_PACKAGES = genpkgs.api_packages()
API_MESSAGES = genpkgs.api_message_names()
KITCHEN_MESSAGES = genpkgs.message_names(genpkgs.KITCHEN_PROTO_ROOT, genpkgs.KITCHEN_PROTO_PACKAGE)

_SETTINGS = protoplan.fuzz_settings(max_examples=15)


def _model_class(models_module: ModuleType, wire: object) -> Any:
    return getattr(models_module, type(wire).__name__)


def _api_models(full_name: str) -> ModuleType:
    package = genpkgs.package_of(full_name, API_PACKAGES)
    return importlib.import_module(f"aether_api.{genpkgs.module_folder(package)}.models")


def _model_kept(ours: Ours, models_module: ModuleType, desc: Any, plan: Plan) -> Plan:
    """What a trip through the model keeps of `plan`.

    A message field the model reads as empty when unset (its proto comment says "(empty if
    unset)": the model's annotation is the model class, not `X | None`) has no presence in
    the model: an empty one comes back unset.
    """
    wire_class = ours.message_class(desc)
    model_fields = _model_class(models_module, wire_class()).model_fields
    kept = dict(plan)
    for field in desc.fields:
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.is_repeated:
            continue
        annotation = model_fields[ours.attr(wire_class, field.name)].annotation
        if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
            empty = ours.plan(field.message_type, ours.message_class(field.message_type)())
            if kept[field.name] == empty:
                kept[field.name] = None
    return kept


def _wire_model_wire(ours: Ours, models_module: ModuleType, desc: Any, plan: Plan) -> None:
    wire = ours.build(desc, plan)
    data = bytes(wire)
    parsed = type(wire).parse(data)
    protoplan.assert_same(plan, ours.plan(desc, parsed), "wire → bytes → wire")

    model = _model_class(models_module, wire).from_wire(parsed)
    back = model.to_wire()
    kept = _model_kept(ours, models_module, desc, plan)
    protoplan.assert_same(kept, ours.plan(desc, back), "wire → model → wire")
    assert bytes(back) == (data if kept == plan else bytes(ours.build(desc, kept)))


def _validated_model_roundtrip(
    ours: Ours, models_module: ModuleType, desc: Any, plan: Plan
) -> None:
    wire = ours.build(desc, plan)
    model_class = _model_class(models_module, wire)
    model = model_class.from_wire(wire)
    validated = model_class.model_validate(model.model_dump())
    kept = _model_kept(ours, models_module, desc, plan)
    protoplan.assert_same(kept, ours.plan(desc, validated.to_wire()), "model → dict → model")


def _json_model_roundtrip(ours: Ours, models_module: ModuleType, desc: Any, plan: Plan) -> None:
    wire = ours.build(desc, plan)
    model_class = _model_class(models_module, wire)
    model = model_class.from_wire(wire)
    from_json = model_class.model_validate_json(model.model_dump_json())
    kept = _model_kept(ours, models_module, desc, plan)
    protoplan.assert_same(kept, ours.plan(desc, from_json.to_wire()), "model → JSON → model")


def _kitchen_models() -> ModuleType:
    return genpkgs.kitchen_ours_module("models")


# -- kitchen sink ---------------------------------------------------------------------------


@pytest.mark.parametrize("full_name", KITCHEN_MESSAGES)
def test_kitchen_roundtrip(full_name: str, kitchen_ours: Ours) -> None:
    desc = protoplan.descriptor_of(genpkgs.kitchen_google_class(full_name))
    models_module = _kitchen_models()

    @_SETTINGS
    @given(protoplan.plan_strategy(desc))
    def check(plan: Plan) -> None:
        _wire_model_wire(kitchen_ours, models_module, desc, plan)

    check()
    for plan in protoplan.populated_variants(desc):
        _wire_model_wire(kitchen_ours, models_module, desc, plan)


@pytest.mark.parametrize("full_name", KITCHEN_MESSAGES)
def test_kitchen_validated_roundtrip(full_name: str, kitchen_ours: Ours) -> None:
    desc = protoplan.descriptor_of(genpkgs.kitchen_google_class(full_name))
    models_module = _kitchen_models()

    @_SETTINGS
    @given(protoplan.plan_strategy(desc, opts=Options(nonempty_strings=True, finite_floats=True)))
    def check(plan: Plan) -> None:
        _validated_model_roundtrip(kitchen_ours, models_module, desc, plan)

    check()


@pytest.mark.parametrize(
    "full_name", ["kitchen.v1.Everything", "aether.v1.TaskResult", "aether.v1.TaskAssignment"]
)
def test_json_roundtrip(full_name: str, kitchen_ours: Ours, api_ours: Ours) -> None:
    """`model_dump_json()` / `model_validate_json()` keep every value, binary bytes included."""
    if full_name.startswith(genpkgs.API_PROTO_PACKAGE + "."):
        desc = protoplan.descriptor_of(genpkgs.api_google_class(full_name))
        ours, models_module = api_ours, models
    else:
        desc = protoplan.descriptor_of(genpkgs.kitchen_google_class(full_name))
        ours, models_module = kitchen_ours, _kitchen_models()

    @_SETTINGS
    @given(protoplan.plan_strategy(desc, opts=Options(nonempty_strings=True, finite_floats=True)))
    def check(plan: Plan) -> None:
        _json_model_roundtrip(ours, models_module, desc, plan)

    check()


def test_kitchen_escaped_names_round_trip(kitchen_ours: Ours) -> None:
    """Keyword and method-shadowing field names are usable on the model, by their escaped names."""
    models_module = _kitchen_models()
    awkward = models_module.Awkward(from_="a", class_="b", parse_="c", to_dict_="d", json_="e")
    wire = awkward.to_wire()
    google = genpkgs.kitchen_google_class("kitchen.v1.Awkward").FromString(bytes(wire))
    plan = protoplan.google_plan(google)
    assert (plan["from"], plan["class"], plan["parse"], plan["to_dict"], plan["json"]) == (
        "a",
        "b",
        "c",
        "d",
        "e",
    )
    # The escaped names do not break the methods they would have shadowed.
    assert type(wire).parse(bytes(wire)).from_ == "a"
    assert models_module.Awkward.model_validate_json(awkward.model_dump_json()) == awkward


# -- the real API ---------------------------------------------------------------------------


@pytest.mark.parametrize("full_name", API_MESSAGES)
def test_api_roundtrip(full_name: str, api_ours: Ours) -> None:
    desc = protoplan.descriptor_of(genpkgs.api_google_class(full_name))

    @_SETTINGS
    @given(protoplan.plan_strategy(desc))
    def check(plan: Plan) -> None:
        _wire_model_wire(api_ours, _api_models(full_name), desc, plan)

    check()


@pytest.mark.parametrize("full_name", API_MESSAGES)
def test_api_validated_roundtrip(full_name: str, api_ours: Ours) -> None:
    desc = protoplan.descriptor_of(genpkgs.api_google_class(full_name))

    @_SETTINGS
    @given(protoplan.plan_strategy(desc, opts=Options(nonempty_strings=True, finite_floats=True)))
    def check(plan: Plan) -> None:
        _validated_model_roundtrip(api_ours, _api_models(full_name), desc, plan)

    check()


def test_task_assignment_typed_roundtrip() -> None:
    """The same trip written against the typed package, as SDK code does it."""
    created = datetime.datetime(2025, 1, 2, 3, 4, 5, 600000, tzinfo=datetime.timezone.utc)
    wire = messages.TaskAssignment(
        task_id="t-1",
        description="review",
        payload=b"\x00\x01",
        task_type="code_review",
        attempt=2,
        priority=-3,
        metadata={"k": "v"},
        workflow_id="w",
        created_at=created,
    )
    model = models.TaskAssignment.from_wire(messages.TaskAssignment.parse(bytes(wire)))
    assert model.task_id == "t-1"
    assert model.payload == b"\x00\x01"
    assert model.created_at == created
    assert model.deadline is None
    assert model.metadata == {"k": "v"}
    assert model.to_wire() == wire

    event = messages.TaskStreamEvent(assignment=wire)
    decoded = models.TaskStreamEvent.from_wire(messages.TaskStreamEvent.parse(bytes(event)))
    assert decoded.cancel is None
    assert decoded.assignment == model


def test_kitchen_module_is_importable_by_name() -> None:
    """The temporary kitchen package is a normal package (not only reachable through helpers)."""
    genpkgs.kitchen_generated()
    module = importlib.import_module(f"{genpkgs.KITCHEN_PACKAGE}.kitchen.v1.models")
    assert module is _kitchen_models()


def test_kitchen_models_enforce_integer_ranges() -> None:
    """Each integer field of a model accepts exactly its proto type's range."""
    desc = protoplan.descriptor_of(genpkgs.kitchen_google_class("kitchen.v1.Scalars"))
    scalars = _kitchen_models().Scalars
    checked = 0
    for field in desc.fields:
        bounds = protoplan.INT_RANGES.get(field.type)
        if bounds is None:
            continue
        lo, hi = bounds
        for good in (lo, hi):
            assert getattr(scalars(**{field.name: good}), field.name) == good
        for bad in (lo - 1, hi + 1):
            with pytest.raises(pydantic.ValidationError) as failed:
                scalars(**{field.name: bad})
            assert [e["loc"] for e in failed.value.errors()] == [(field.name,)]
        checked += 1
    assert checked == 10
