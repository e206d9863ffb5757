"""Test helpers for agents.

- `TestHub`: a development Hub in this process on a free port, with typed handles to
  submit tasks and inspect memory, messages and LLM calls (also the `hub` pytest fixture).
- `TaskHarness`: runs an agent's `handle_task` against in-memory Hub services, no network.
- `open_in_memory_channel`: a grpclib channel to service handlers (e.g. those of
  `HubServer.build_services()`) in this process, for `AgentClient(channel_factory=...)`.
- The pytest plugin `aether.testing.plugin`, registered as the `pytest11` entry point
  `aether`, so installed projects get the `hub` fixture without a conftest.

Names are imported on first use: pytest loads this package for every run through the
plugin, and that must stay cheap and unable to fail.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aether.testing.harness import HarnessRun as HarnessRun
    from aether.testing.harness import ProgressReport as ProgressReport
    from aether.testing.harness import TaskHarness as TaskHarness
    from aether.testing.hub import LLMCall as LLMCall
    from aether.testing.hub import RecordedMessage as RecordedMessage
    from aether.testing.hub import TestHub as TestHub
    from aether.testing.hub import TestHubError as TestHubError
    from aether.testing.inmemory import open_in_memory_channel as open_in_memory_channel

__all__ = (
    "HarnessRun",
    "LLMCall",
    "ProgressReport",
    "RecordedMessage",
    "TaskHarness",
    "TestHub",
    "TestHubError",
    "open_in_memory_channel",
)

_MODULES = {
    "HarnessRun": "aether.testing.harness",
    "TaskHarness": "aether.testing.harness",
    "ProgressReport": "aether.testing.harness",
    "LLMCall": "aether.testing.hub",
    "RecordedMessage": "aether.testing.hub",
    "TestHub": "aether.testing.hub",
    "TestHubError": "aether.testing.hub",
    "open_in_memory_channel": "aether.testing.inmemory",
}


def __getattr__(name: str) -> object:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'aether.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
