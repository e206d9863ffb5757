"""`agent.registration` shows in logs and shells: its text forms hide the session token."""

from __future__ import annotations

from aether import AgentClient, AgentConfig, AgentRegistration
from aether.models import redacted_registration
from aether_hub.testing import TestHub
from tests.aether.test_agent import EchoAgent


async def test_registration_repr_masks_the_session_token() -> None:
    async with TestHub() as hub:
        agent = EchoAgent(AgentConfig(agent_id="repr-agent", agent_name="R", hub_url=hub.url))
        async with hub.running(agent):
            registration = agent.registration
            assert isinstance(registration, AgentRegistration)
            token = registration.session_token
            assert token and token != registration.session_id
            for text in (repr(registration), str(registration), f"{registration!r}"):
                assert token not in text
            assert repr(registration).startswith("AgentRegistration(success=True,")
            assert "session_token='***'" in repr(registration)
            assert f"session_id={registration.session_id!r}" in repr(registration)
            # Still readable by code that needs it.
            assert registration.model_dump()["session_token"] == token


def test_an_empty_token_is_shown_as_empty() -> None:
    assert "session_token=''" in repr(redacted_registration(AgentRegistration()))


async def test_the_low_level_client_registration_masks_the_token_too() -> None:
    async with TestHub() as hub:
        config = AgentConfig(agent_id="repr-client", agent_name="R", hub_url=hub.url)
        async with AgentClient(config) as client:
            registration = await client.register()
            assert registration.session_token
            for shown in (registration, client.registration):
                assert registration.session_token not in repr(shown)
