"""The ~1 KiB TaskAssignment every codec encodes, as plain data.

Plain data (no SDK imports) because the upb worker builds the same message in a process
where our `aether` package must not be imported (protoc's modules are named `aether.v1`).
"""

from __future__ import annotations

import datetime
from typing import TypedDict


class SampleFields(TypedDict):
    """Field values of the sample TaskAssignment (timestamps as epoch microseconds)."""

    task_id: str
    description: str
    payload: bytes
    task_type: str
    attempt: int
    priority: int
    metadata: dict[str, str]
    workflow_id: str
    created_at_us: int
    deadline_us: int


def sample_fields() -> SampleFields:
    """A realistic assignment: ~800 bytes of payload, some metadata, two timestamps."""
    created = datetime.datetime(2026, 11, 25, 12, 30, 45, 123456, tzinfo=datetime.timezone.utc)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    created_us = (created - epoch) // datetime.timedelta(microseconds=1)
    return SampleFields(
        task_id="3f9c2a7be41d08c5a6f0e913",
        description="Review the pull request and summarise the risky changes.",
        payload=bytes(range(256)) * 3 + b"x" * 32,
        task_type="code_review",
        attempt=1,
        priority=5,
        metadata={
            "repo": "aether/sdk",
            "pr": "4217",
            "requested_by": "pm_sarah",
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
        },
        workflow_id="wf-release-2026-11",
        created_at_us=created_us,
        deadline_us=created_us + 300_000_000,
    )


def from_epoch_us(us: int) -> datetime.datetime:
    """An aware UTC datetime from epoch microseconds."""
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return epoch + datetime.timedelta(microseconds=us)
