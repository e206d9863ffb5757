"""Fixtures for the dev Hub core tests: a real Hub on 127.0.0.1, a fake clock, a channel."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpclib.client
import pytest

from aether._wire import client
from aether_hub.server import HubServer
from aether_hub.settings import HubConfig
from tests.hubserver.hubkit import FakeClock, running_hub


@pytest.fixture
def hub_clock() -> FakeClock:
    """The clock the `hub` fixture measures heartbeats and deadlines with."""
    return FakeClock()


@pytest.fixture
async def hub(hub_clock: FakeClock) -> AsyncIterator[HubServer]:
    """A dev Hub (`--dev`, in-memory) on a free loopback port, driven by `hub_clock`."""
    async with running_hub(HubConfig(port=0, dev=True), clock=hub_clock) as server:
        yield server


@pytest.fixture
async def channel(hub: HubServer) -> AsyncIterator[grpclib.client.Channel]:
    """A grpclib channel to the `hub` fixture."""
    ch = grpclib.client.Channel("127.0.0.1", hub.port)
    try:
        yield ch
    finally:
        ch.close()


@pytest.fixture
def tasks(channel: grpclib.client.Channel) -> client.TaskServiceStub:
    """A TaskService stub on `channel` (no client token needed on loopback)."""
    return client.TaskServiceStub(channel)
