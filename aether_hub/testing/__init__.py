"""Test helpers for agents.

- `TestHub`: a development Hub in this process on a free port, with typed handles to
  submit tasks and inspect memory, messages and LLM calls (also the `hub` pytest fixture).
- `TaskHarness`: runs an agent's `handle_task` against in-memory Hub services, no network.
- `open_in_memory_channel`: a grpclib channel to service handlers (e.g. those of
  `HubServer.build_services()`) in this process, for `AgentClient(channel_factory=...)`.
- The pytest plugin `aether_hub.testing.plugin`, registered as the `pytest11` entry point
  `aether`, so installed projects get the `hub` fixture without a conftest.

Names are imported on first use: pytest loads this package for every run through the
plugin, and that must stay cheap and unable to fail.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aether_hub.testing.harness import HarnessRun as HarnessRun
    from aether_hub.testing.harness import ProgressReport as ProgressReport
    from aether_hub.testing.harness import TaskHarness as TaskHarness
    from aether_hub.testing.inmemory import open_in_memory_channel as open_in_memory_channel
    from aether_hub.testing.testhub import LLMCall as LLMCall
    from aether_hub.testing.testhub import RecordedMessage as RecordedMessage
    from aether_hub.testing.testhub import TestHub as TestHub
    from aether_hub.testing.testhub import TestHubError as TestHubError

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
    "HarnessRun": "aether_hub.testing.harness",
    "TaskHarness": "aether_hub.testing.harness",
    "ProgressReport": "aether_hub.testing.harness",
    "LLMCall": "aether_hub.testing.testhub",
    "RecordedMessage": "aether_hub.testing.testhub",
    "TestHub": "aether_hub.testing.testhub",
    "TestHubError": "aether_hub.testing.testhub",
    "open_in_memory_channel": "aether_hub.testing.inmemory",
}


def __getattr__(name: str) -> object:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'aether_hub.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
