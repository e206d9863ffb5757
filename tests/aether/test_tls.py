"""TLS and mutual TLS to the Hub (certificates made by the openssl CLI for the test)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aether import AetherConnectionError, AgentConfig, ConnectionState
from tests.aether.conftest import SECRET
from tests.aether.fake_hub import FakeHub, HubState
from tests.aether.test_agent import EchoAgent

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(cwd: Path, name: str, cn: str, ext: str) -> None:
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=cwd,
    )  # fmt: skip
    (cwd / f"{name}.ext").write_text(ext)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext",
        cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    cwd = tmp_path_factory.mktemp("certs")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=Aether Test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )  # fmt: skip
    _issue(cwd, "server", "hub.test", "subjectAltName=DNS:hub.test\nextendedKeyUsage=serverAuth\n")
    _issue(cwd, "client", "agent", "extendedKeyUsage=clientAuth\n")
    return Certs(
        ca=cwd / "ca.pem",
        server_cert=cwd / "server.pem",
        server_key=cwd / "server.key",
        client_cert=cwd / "client.pem",
        client_key=cwd / "client.key",
    )


@pytest.fixture
async def tls_hub(certs: Certs) -> AsyncIterator[FakeHub]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca))
    context.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
    context.set_alpn_protocols(["h2"])
    hub = FakeHub(HubState(secret=SECRET))
    await hub.start(ssl_context=context)
    try:
        yield hub
    finally:
        await hub.close()


def tls_config(hub: FakeHub, certs: Certs, **overrides: object) -> AgentConfig:
    data: dict[str, object] = {
        "agent_id": "tls-agent",
        "agent_name": "TLS",
        "hub_url": f"grpcs://127.0.0.1:{hub.port}",
        "metadata": {"secret": SECRET},
        "tls_ca_file": str(certs.ca),
        "tls_cert_file": str(certs.client_cert),
        "tls_key_file": str(certs.client_key),
        "tls_server_name": "hub.test",
        "max_reconnect_attempts": 0,
    }
    data.update(overrides)
    return AgentConfig.model_validate(data)


async def test_mutual_tls_round_trip(tls_hub: FakeHub, certs: Certs) -> None:
    agent = EchoAgent(tls_config(tls_hub, certs))
    async with agent:
        assert agent.connection_state is ConnectionState.CONNECTED
        await tls_hub.state.submit("secure", description="over tls")
        await tls_hub.state.wait_for(lambda: "secure" in tls_hub.state.results)
    assert tls_hub.state.results["secure"].result == b"over tls"


async def test_unknown_ca_is_a_clear_non_retried_error(tls_hub: FakeHub, certs: Certs) -> None:
    agent = EchoAgent(tls_config(tls_hub, certs, tls_ca_file=None, max_reconnect_attempts=-1))
    with pytest.raises(AetherConnectionError, match="TLS") as info:
        await agent.start()  # would retry forever if a TLS failure were retryable
    assert not info.value.retryable
    assert "tls_" in str(info.value)
