"""Fixtures: a fake Hub on 127.0.0.1 and agent configs pointing at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aether import AgentConfig
from tests.aether.fake_hub import FakeHub, HubState

SECRET = "sk-test-secret-5f1c2a"


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    """A fake Hub that accepts `SECRET`."""
    fake = FakeHub(HubState(secret=SECRET))
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


def make_config(hub: FakeHub, **overrides: object) -> AgentConfig:
    """A config for `hub` with fast timings; `overrides` replace fields."""
    data: dict[str, object] = {
        "agent_id": "test-agent",
        "agent_name": "Test Agent",
        "hub_url": hub.url,
        "metadata": {"secret": SECRET},
        "reconnect_delay": 0.05,
        "heartbeat_interval": 30,
        "shutdown_grace_seconds": 5,
    }
    data.update(overrides)
    return AgentConfig.model_validate(data)
