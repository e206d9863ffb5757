"""The `aether` pytest plugin: a `hub` fixture with a fresh in-process dev Hub per test.

Registered as the `pytest11` entry point `aether`, so any project with the SDK installed
gets the fixture without a conftest:

```python
from aether_hub.testing import TestHub

async def test_my_agent(hub: TestHub) -> None:
    agent = MyAgent(AgentConfig(agent_id="a1", agent_name="A", hub_url=hub.url))
    async with hub.running(agent):
        task = await hub.run_task("hello", target_agent_id="a1")
    assert task.result == b"Processed: hello"
```

To configure the Hub (tool plugins, LLM provider, attempts...), override the
`aether_hub_config` fixture in a conftest.py:

```python
@pytest.fixture
def aether_hub_config() -> HubConfig:
    return HubConfig(host="127.0.0.1", port=0, dev=True, tools=("my_project.tools",))
```

The fixture is async, so it needs pytest-asyncio (any mode). The Hub is imported only
when a test asks for the fixture: loading this plugin must never break a pytest run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from aether_hub.settings import HubConfig
    from aether_hub.testing.testhub import TestHub

__all__ = ("aether_hub_config", "hub_fixture")


@pytest.fixture
def aether_hub_config() -> HubConfig:
    """The `hub` fixture's configuration: loopback, a free port, `--dev`. Override it."""
    from aether_hub.settings import HubConfig

    return HubConfig(host="127.0.0.1", port=0, dev=True)


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is a dev dependency here

    @pytest.fixture(name="hub")
    def hub_fixture() -> TestHub:
        """Needs pytest-asyncio: `pip install pytest-asyncio`."""
        pytest.fail("the aether `hub` fixture needs pytest-asyncio (pip install pytest-asyncio)")

else:

    @pytest_asyncio.fixture(name="hub")
    async def hub_fixture(  # type: ignore[misc]  # twin of the above
        aether_hub_config: HubConfig,
    ) -> AsyncIterator[TestHub]:
        """A started dev Hub (`--dev`, echo LLM) on a free 127.0.0.1 port, stopped after."""
        from aether_hub.testing.testhub import TestHub

        async with TestHub(aether_hub_config) as test_hub:
            yield test_hub
