"""Several Hubs on one NATS cluster (`--nats-url` with several servers), and the list's checks.

A real 3-node nats-server cluster on loopback (`nats_cluster`, routes between the nodes,
JetStream on); real Hubs in this process, each given the cluster's URLs in another order,
so each is connected to another node; real SDK agents on them. No timed assertions: every
wait is for an event, polled under a generous timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from aether import (
    AetherAgent,
    AetherError,
    AgentConfig,
    BusMessage,
    ConnectionState,
    TaskClient,
    json_payload,
)
from aether_hub.bus import BusError, BusMessageData
from aether_hub.nats_bus import NatsBus, NatsUrlError, parse_nats_urls
from aether_hub.server import HubServer
from aether_hub.settings import ConfigError, HubConfig
from tests.aether.test_agent import EchoAgent
from tests.hubserver.hubkit import running_hub
from tests.hubserver.nats_fixture import (
    NatsCluster,
    find_nats_server,
    nats_cluster,
    run_nats_cluster,
)

__all__ = ("nats_cluster",)

WAIT = 30.0  # generous: never a timing assertion
PASSWORD = "hunter2-s3cret"
NATS_LOG = "aether_hub.nats_bus"


# --- the list and its checks ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "index", "shown", "why"),
    [
        ("nats://a:4222,,nats://b:4222", 2, "", "empty"),
        ("nats://a:4222,", 2, "", "empty"),
        (f"nats://u:{PASSWORD}@a:4222,http://u:{PASSWORD}@b:80", 2, "http://b:80", "scheme"),
        (f"nats://a:4222,nats://u:{PASSWORD}@b:99999", 2, "nats://b:99999", "port"),
        ("nats://a:4222,nats://b:x", 2, "nats://b:x", "port"),
        (f"nats://u:{PASSWORD}@:4222", 1, "nats://:4222", "no host"),
        ("nats://a:4222,ws://b:8080", 2, "ws://b:8080", "mixed"),
        ("nats://a:4222/path", 1, "nats://a:4222/path", "path"),
        ("nats://a:4222,nats://b :4222", 2, "nats://b :4222", "whitespace"),
    ],
)
def test_a_bad_part_is_refused_naming_it(value: str, index: int, shown: str, why: str) -> None:
    with pytest.raises(NatsUrlError) as caught:
        parse_nats_urls(value)
    error = caught.value
    assert isinstance(error, BusError) and isinstance(error, ValueError)
    assert (error.index, error.part) == (index, shown)
    assert f"part {index}" in str(error) and why in str(error)
    assert PASSWORD not in str(error)
    # The Hub's settings refuse it the same way, before anything starts.
    with pytest.raises(ConfigError, match=f"--nats-url: part {index}") as refused:
        HubConfig(port=0, dev=True, nats_url=value).validate()
    assert PASSWORD not in str(refused.value)


def test_good_lists_keep_their_order_and_credentials_stay_apart() -> None:
    plain = parse_nats_urls(" nats://a:4222 , b:4223,tls://c ")
    assert plain.urls == ("nats://a:4222", "nats://b:4223", "tls://c")
    assert (plain.user, plain.password, plain.token) == (None, None, None)
    HubConfig(port=0, dev=True, nats_url="nats://a:4222,nats://b:4222").validate()

    # The same credentials on every part: taken out of the URLs, given to nats-py once
    # (so that the servers the cluster advertises get them too).
    shared = parse_nats_urls(f"nats://hub:{PASSWORD}@a:4222,nats://hub:{PASSWORD}@b:4222")
    assert shared.urls == ("nats://a:4222", "nats://b:4222")
    assert (shared.user, shared.password) == ("hub", PASSWORD)
    token = parse_nats_urls(f"nats://{PASSWORD}@a:4222,nats://b:4222")
    assert (token.urls, token.token) == (("nats://a:4222", "nats://b:4222"), PASSWORD)
    # Different credentials per server: each URL keeps its own.
    mixed = parse_nats_urls(f"nats://x:{PASSWORD}@a:4222,nats://y:other@b:4222")
    assert mixed.user is None and mixed.urls[0] == f"nats://x:{PASSWORD}@a:4222"
    for servers in (shared, token, mixed):
        assert PASSWORD not in repr(servers) and PASSWORD not in servers.display
        assert servers.scrub(f"boom {PASSWORD} boom") == "boom *** boom"


def test_a_config_file_may_list_the_servers(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('[hub]\nnats_url = ["nats://a:4222", "nats://b:4222"]\n')
    config = HubConfig(port=0, dev=True).merged_with_file(path, set())
    assert config.nats_url == "nats://a:4222,nats://b:4222"
    config.validate()
    path.write_text('[hub]\nnats_url = ["nats://a:4222", ""]\n')
    with pytest.raises(ConfigError, match="part 2"):
        HubConfig(port=0, dev=True).merged_with_file(path, set()).validate()
    path.write_text("[hub]\nnats_url = [1, 2]\n")
    with pytest.raises(ConfigError, match="nats_url"):
        HubConfig(port=0, dev=True).merged_with_file(path, set())


def test_aether_hub_refuses_a_bad_list_naming_the_part_without_the_password() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aether_hub", "--dev", "--port", "0", "--nats-url",
         f"nats://hub:{PASSWORD}@127.0.0.1:4222,nats://hub:{PASSWORD}@127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert "--nats-url: part 2 'nats://127.0.0.1:0'" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_no_server_answering_names_them_all_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=NATS_LOG)
    first, second = _dead_port(), _dead_port()
    with pytest.raises(BusError) as caught:
        await NatsBus.connect(
            f"nats://hub:{PASSWORD}@127.0.0.1:{first},nats://hub:{PASSWORD}@127.0.0.1:{second}",
            connect_timeout=1,
        )
    message = str(caught.value)
    assert (
        f"cannot connect to NATS at nats://127.0.0.1:{first}, nats://127.0.0.1:{second}" in message
    )
    assert PASSWORD not in message
    assert caplog.records, "the connection errors are logged at DEBUG"
    assert PASSWORD not in caplog.text


# --- a real cluster ---------------------------------------------------------------------


async def eventually(
    probe: Callable[[], Awaitable[object] | object], what: str, timeout: float = WAIT
) -> object:
    """Poll `probe` until it returns something truthy; that value (AssertionError naming
    `what` after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(0.05)


def _agent(agent_id: str, hub: HubServer) -> AetherAgent:
    return EchoAgent(
        AgentConfig(
            agent_id=agent_id,
            agent_name=agent_id,
            hub_url=hub.address,
            reconnect_delay=0.1,
            max_reconnect_delay=1,
            connect_timeout=2,
        )
    )


def _node_of(hub: HubServer, cluster: NatsCluster) -> int | None:
    bus = hub.bus
    assert isinstance(bus, NatsBus)
    return cluster.index_of(bus.connected_url)


class Answerer:
    """An agent's subscriptions: it doubles `n` on `shared.math.double` (request-reply) and
    collects what arrives on `shared.events.>`."""

    def __init__(self, agent: AetherAgent) -> None:
        self.agent = agent
        self.events: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def _answer(self) -> None:
        message: BusMessage
        async for message in self.agent.hub.messaging.subscribe("shared.math.double"):
            n = json.loads(message.payload)["n"]
            await self.agent.hub.messaging.publish(message.reply_to, {"n": 2 * n})

    async def _collect(self) -> None:
        message: BusMessage
        async for message in self.agent.hub.messaging.subscribe("shared.events.>"):
            self.events.append(message.payload.decode())

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._tasks = [asyncio.create_task(self._answer()), asyncio.create_task(self._collect())]
        try:
            yield
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def _ask(asker: AetherAgent, n: int) -> bool:
    """One request through the cluster; whether the right answer came back."""
    with contextlib.suppress(AetherError):
        reply = await asker.hub.messaging.request("shared.math.double", {"n": n}, timeout=1)
        return reply.success and json_payload(reply) == {"n": 2 * n}
    return False


async def _delivered(asker: AetherAgent, answerer: Answerer, text: str) -> bool:
    """Publish `text` until the answerer has it (at-most-once: a publish may be lost)."""
    if text not in answerer.events:
        with contextlib.suppress(AetherError):
            await asker.hub.messaging.publish("shared.events.note", text.encode())
        await asyncio.sleep(0.1)
    return text in answerer.events


class GrpcProbe:
    """Calls the Hub (ListAgents) in a loop and counts successes and failures."""

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub
        self.ok = 0
        self.failures: list[str] = []

    async def _run(self) -> None:
        async with TaskClient(hub_url=self.hub.address, timeout=10) as client:
            while True:
                try:
                    await client.list_agents()
                except AetherError as exc:
                    self.failures.append(str(exc))
                else:
                    self.ok += 1
                await asyncio.sleep(0.02)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._run())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def test_the_cluster_fixture_restarts_a_killed_node_on_its_ports_and_store(
    nats_cluster: NatsCluster,
) -> None:
    cluster = nats_cluster
    cluster.wait_formed(jetstream_ready=True)  # a JetStream meta leader was elected
    node = cluster.nodes[2]
    assert node.store_dir.is_dir() and any(node.store_dir.iterdir())
    assert {n.name for n in cluster.nodes} - {"n0"} <= cluster.nodes[0].route_names()
    cluster.kill(2)
    killed = node.proc
    assert killed is not None and killed.poll() == -9
    cluster.wait_formed()  # the two others are a cluster on their own
    assert "n2" not in cluster.nodes[0].route_names()
    ports = (node.port, node.cluster_port, node.monitor_port)
    cluster.restart(2)
    assert node.proc is not killed and node.proc is not None and node.proc.poll() is None
    assert node.starts == 2
    assert (node.port, node.cluster_port, node.monitor_port) == ports
    assert node.monitor("/varz")[0] == 200
    assert {"n0", "n1"} <= node.route_names()


@pytest.mark.parametrize("lose", ["answerer-node", "asker-node"])
async def test_two_hubs_on_different_nodes_share_messaging_and_survive_losing_a_node(
    nats_cluster: NatsCluster, caplog: pytest.LogCaptureFixture, lose: str
) -> None:
    caplog.set_level(logging.INFO, logger=NATS_LOG)
    cluster = nats_cluster
    config_a = HubConfig(port=0, dev=True, nats_url=cluster.url_list([0, 1, 2]))
    config_b = HubConfig(port=0, dev=True, nats_url=cluster.url_list([1, 2, 0]))
    async with running_hub(config_a) as hub_a, running_hub(config_b) as hub_b:
        # Each Hub is on the first node of its list: two different nodes.
        assert (_node_of(hub_a, cluster), _node_of(hub_b, cluster)) == (0, 1)
        asker, answering = _agent("asker", hub_a), _agent("answerer", hub_b)
        answerer = Answerer(answering)
        states: list[ConnectionState] = []
        await asker.start()
        await answering.start()
        try:
            for agent in (asker, answering):
                agent.add_connection_callback(states.append)
            probe = GrpcProbe(hub_b if lose == "answerer-node" else hub_a)
            async with answerer.running(), probe.running():
                # Agent on Hub A -> node 0 -> route -> node 1 -> Hub B -> agent, and back.
                await eventually(lambda: _ask(asker, 21), "a request-reply across the Hubs")
                await eventually(lambda: _delivered(asker, answerer, "before"), "a publish")

                # kill -9 the node of Hub B (whose agent subscribes and answers) or of
                # Hub A (whose agent publishes and asks).
                moved, dead = (hub_b, 1) if lose == "answerer-node" else (hub_a, 0)
                kept = hub_a if moved is hub_b else hub_b
                lost_line = f"lost the connection to NATS at {cluster.nodes[dead].url}"
                cluster.kill(dead)
                await eventually(lambda: lost_line in caplog.text, "the Hub noticing")
                others = {0, 1, 2} - {dead}
                await eventually(lambda: _node_of(moved, cluster) in others, "the Hub moving")
                now_on = _node_of(moved, cluster)
                assert now_on is not None
                assert f"reconnected to NATS at {cluster.nodes[now_on].url}" in caplog.text

                # The Hub re-subscribed on its new node: the agents talk again.
                await eventually(lambda: _ask(asker, 50), "a request-reply after the kill")
                await eventually(lambda: _delivered(asker, answerer, "after"), "a publish after")

                # The node comes back on its ports and store; the cluster forms again.
                await asyncio.to_thread(cluster.restart, dead)
                await eventually(lambda: _ask(asker, 7), "a request-reply after the restart")
            # The Hub answered gRPC calls all along, while its NATS node was gone too.
            assert probe.ok > 0 and not probe.failures, probe.failures[:3]
            # The other Hub never lost its node.
            assert _node_of(kept, cluster) == (0 if kept is hub_a else 1)
            assert lost_line in caplog.text
            assert caplog.text.count("lost the connection to NATS") == 1
        finally:
            await asker.stop()
            await answering.stop()
        # Neither agent's session broke: NATS is behind the Hubs, not between agent and Hub.
        assert states == [ConnectionState.DRAINING, ConnectionState.CLOSED] * 2, states


async def _until_received(bus: NatsBus, messages: AsyncIterator[BusMessageData], text: str) -> None:
    """Publish `text` until it comes back on `messages` (a message may be lost in a crash)."""
    while True:
        with contextlib.suppress(BusError):
            await bus.publish("shared.ping", text.encode(), {})
        with contextlib.suppress(asyncio.TimeoutError):
            got = await asyncio.wait_for(anext(messages), 0.2)
            if got.payload == text.encode():
                return


async def test_one_url_is_enough_the_cluster_advertises_the_others_with_the_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A cluster whose clients must log in; the Hub is told only node 0, with the login.
    caplog.set_level(logging.DEBUG, logger=NATS_LOG)
    binary = find_nats_server()
    assert binary is not None
    with run_nats_cluster(binary, tmp_path / "c", args=["--user", "hub", "--pass", PASSWORD]) as c:
        bus = await NatsBus.connect(f"nats://hub:{PASSWORD}@{c.nodes[0].host}:{c.nodes[0].port}")
        try:
            assert c.index_of(bus.connected_url) == 0
            assert PASSWORD not in repr(bus) and bus.servers == (c.nodes[0].url,)
            async with bus.subscribe("shared.ping") as messages:
                await asyncio.wait_for(_until_received(bus, messages, "one"), WAIT)
                await asyncio.to_thread(c.kill, 0)
                # It moves to a node it learnt from the cluster, logging in there too.
                await eventually(lambda: c.index_of(bus.connected_url) in (1, 2), "moving")
                await asyncio.wait_for(_until_received(bus, messages, "two"), WAIT)
        finally:
            await bus.close()
    assert f"lost the connection to NATS at {c.nodes[0].url}" in caplog.text
    assert PASSWORD not in caplog.text
