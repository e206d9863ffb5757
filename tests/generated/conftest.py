"""Fixtures of the generated-code tests: our generated packages and Google's, made once per run."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.generated import genpkgs, protoplan


@pytest.fixture(scope="session")
def kitchen_ours() -> protoplan.Ours:
    """Our generated kitchen-sink wire classes (generated into a temporary folder)."""
    return genpkgs.kitchen_ours()


@pytest.fixture(scope="session")
def kitchen_pb2() -> ModuleType:
    """Google's `kitchen_sink_pb2` (stock protoc output in a temporary folder)."""
    return genpkgs.kitchen_pb2()


@pytest.fixture(scope="session")
def api_ours() -> protoplan.Ours:
    """Our committed `aether_api` wire classes of `aether.v1`."""
    return genpkgs.api_ours()
