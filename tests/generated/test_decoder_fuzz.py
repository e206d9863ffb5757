"""Differential fuzzing of our generated decoder against Google's.

For bytes that are not a plain encoding of one message — two encodings
concatenated (which protobuf defines as a merge), or an encoding with a byte
changed, inserted, deleted or cut off — our decoder must do what Google's does:
refuse what Google refuses, and decode what Google accepts to the same values.
"""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError, Message
from hypothesis import example, given, reject
from hypothesis import strategies as st

from tests.generated import genpkgs, protoplan
from tests.generated.protoplan import Ours
from tests.generated.test_map_entry_regressions import ISSUE_8_MAPS

_SETTINGS = protoplan.fuzz_settings(max_examples=50)
_CASES = [
    ("kitchen", "kitchen.v1.Everything"),
    ("kitchen", "kitchen.v1.Scalars"),
    ("kitchen", "kitchen.v1.Maps"),
    ("api", "aether.v1.TaskAssignment"),
    ("api", "aether.v1.TaskStreamEvent"),
    ("api", "aether.v1.RegisterRequest"),
    ("api", "aether.v1.HeartbeatResponse"),
    ("api", "aether.v1.ListTasksResponse"),
]
_IDS = [name for _, name in _CASES]
# Damaged bodies that once failed (checked first on every run), by message.
_DAMAGED_EXAMPLES: dict[str, list[bytes]] = {
    "kitchen.v1.Maps": [ISSUE_8_MAPS],  # a map entry with an unknown field (issue 8)
}


def _setup(where: str, full_name: str) -> tuple[Ours, type[Message]]:
    if where == "kitchen":
        return genpkgs.kitchen_ours(), genpkgs.kitchen_google_class(full_name)
    return genpkgs.api_ours(), genpkgs.api_google_class(full_name)


def _agree(ours: Ours, google_class: type[Message], body: bytes) -> None:
    desc = protoplan.descriptor_of(google_class)
    try:
        google: Message | None = google_class.FromString(body)
    except DecodeError:
        google = None
    try:
        decoded: object = ours.message_class(desc).parse(body)
        failure: Exception | None = None
    except Exception as exc:
        decoded, failure = None, exc

    if google is None:
        assert failure is not None, f"Google refuses {body!r}; we decoded {decoded!r}"
        return
    try:
        expected = protoplan.google_plan(google)
    except (ValueError, OverflowError):
        reject()  # e.g. a Timestamp beyond what datetime can hold: no common value to compare
    assert failure is None, f"Google decodes {body!r}; we refuse it: {failure!r}"
    protoplan.assert_same(expected, ours.plan(desc, decoded), f"decoding {body!r}")


@pytest.mark.parametrize(("where", "full_name"), _CASES, ids=_IDS)
def test_concatenation_merges_like_google(where: str, full_name: str) -> None:
    ours, google_class = _setup(where, full_name)
    plans = protoplan.plan_strategy(protoplan.descriptor_of(google_class))

    @_SETTINGS
    @given(plans, plans)
    def check(first: protoplan.Plan, second: protoplan.Plan) -> None:
        body = b"".join(
            protoplan.build_google(google_class, plan).SerializeToString()
            for plan in (first, second)
        )
        _agree(ours, google_class, body)

    check()


@st.composite
def _damaged(
    draw: st.DrawFn, google_class: type[Message], plans: st.SearchStrategy[protoplan.Plan]
) -> bytes:
    """The encoding of a message with one byte changed, inserted or deleted, or cut off."""
    body = protoplan.build_google(google_class, draw(plans)).SerializeToString()
    body = body or b"\x08\x01"
    at = draw(st.integers(0, len(body) - 1))
    byte = draw(st.integers(0, 255))
    damage = draw(st.sampled_from(["cut", "replace", "insert", "delete"]))
    if damage == "cut":
        return body[:at]
    if damage == "replace":
        return body[:at] + bytes([byte]) + body[at + 1 :]
    if damage == "insert":
        return body[:at] + bytes([byte]) + body[at:]
    return body[:at] + body[at + 1 :]


@pytest.mark.parametrize(("where", "full_name"), _CASES, ids=_IDS)
def test_damaged_bytes_are_handled_like_google(where: str, full_name: str) -> None:
    ours, google_class = _setup(where, full_name)
    plans = protoplan.plan_strategy(protoplan.descriptor_of(google_class))

    @_SETTINGS
    @given(_damaged(google_class, plans))
    def check(body: bytes) -> None:
        _agree(ours, google_class, body)

    for body in _DAMAGED_EXAMPLES.get(full_name, []):
        check = example(body)(check)
    check()


@pytest.mark.parametrize(("where", "full_name"), _CASES, ids=_IDS)
def test_random_bytes_are_handled_like_google(where: str, full_name: str) -> None:
    ours, google_class = _setup(where, full_name)

    @_SETTINGS
    @given(st.binary(max_size=40))
    def check(body: bytes) -> None:
        _agree(ours, google_class, body)

    check()
