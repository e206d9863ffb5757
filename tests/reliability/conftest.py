"""Fixtures of the reliability tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.aether.conftest import SECRET
from tests.aether.fake_hub import FakeHub, HubState


@pytest.fixture
async def fake_hub() -> AsyncIterator[FakeHub]:
    """The tests' fake Hub (tests/aether/fake_hub.py) on a free loopback port."""
    fake = FakeHub(HubState(secret=SECRET))
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()
