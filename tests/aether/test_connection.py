"""Channel settings: keepalive fields (grpclib private API, pinned) and TLS selection."""

from __future__ import annotations

import asyncio

import grpclib

from aether import AgentConfig, ConnectionState
from aether._connection import ConnectionStateTracker, channel_configuration


def test_grpclib_is_the_pinned_version() -> None:
    # The keepalive fields below are private to grpclib: re-check them when it changes.
    assert grpclib.__version__ == "0.4.9"


def test_keepalive_fields_set_together() -> None:
    config = AgentConfig(agent_id="a", agent_name="A", keepalive_interval=7, keepalive_timeout=3)
    settings = channel_configuration(config).__for_client__()
    assert settings._keepalive_time == 7
    assert settings._keepalive_timeout == 3
    assert settings._keepalive_permit_without_calls is True
    assert settings._http2_max_pings_without_data == 0
    assert settings._http2_min_sent_ping_interval_without_data == 7


def test_tls_selected_by_scheme_or_tls_settings() -> None:
    plain = AgentConfig(agent_id="a", agent_name="A", hub_url="hub:1")
    by_scheme = AgentConfig(agent_id="a", agent_name="A", hub_url="grpcs://hub:443")
    by_ca = AgentConfig(agent_id="a", agent_name="A", hub_url="hub:1", tls_ca_file="/ca.pem")
    assert (plain.uses_tls, by_scheme.uses_tls, by_ca.uses_tls) == (False, True, True)
    override = AgentConfig(agent_id="a", agent_name="A", tls_server_name="hub.internal")
    assert channel_configuration(override).ssl_target_name_override == "hub.internal"


async def test_state_tracker_logs_each_transition_once() -> None:
    tracker = ConnectionStateTracker(ConnectionState.CLOSED)
    seen: list[ConnectionState] = []
    tracker.add_callback(seen.append)
    watched: list[ConnectionState] = []

    async def watch() -> None:
        async for state in tracker.watch():
            watched.append(state)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    for state in (
        ConnectionState.CONNECTING,
        ConnectionState.CONNECTING,  # not a transition
        ConnectionState.CONNECTED,
        ConnectionState.CLOSED,
    ):
        tracker.set(state)
    await asyncio.wait_for(watcher, 10)
    assert seen == [ConnectionState.CONNECTING, ConnectionState.CONNECTED, ConnectionState.CLOSED]
    assert watched == [ConnectionState.CLOSED, *seen]
