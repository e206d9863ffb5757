"""Fixtures of the generator tests: the kitchen sink generated once per run."""

from __future__ import annotations

import pytest

from tests.generated import genpkgs, protoplan


@pytest.fixture(scope="session")
def kitchen_ours() -> protoplan.Ours:
    """Our generated kitchen-sink wire classes (generated into a temporary folder)."""
    return genpkgs.kitchen_ours()


@pytest.fixture(scope="session")
def api_ours() -> protoplan.Ours:
    """Our committed `aether_api` wire classes of `aether.v1`."""
    return genpkgs.api_ours()
