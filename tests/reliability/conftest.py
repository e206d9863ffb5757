"""Fixtures of the reliability tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.aether.conftest import SECRET
from tests.aether.fake_hub import FakeHub, HubState
from tests.reliability.hubproc import Processes


@pytest.fixture
async def fake_hub() -> AsyncIterator[FakeHub]:
    """The tests' fake Hub (tests/aether/fake_hub.py) on a free loopback port."""
    fake = FakeHub(HubState(secret=SECRET))
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Real processes (Hub, agent fleets, nats-server), killed at the end whatever happens."""
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()
