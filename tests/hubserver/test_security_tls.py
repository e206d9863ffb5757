"""TLS and mTLS on the Hub, with real certificates made by `trustme` (issue 11).

An agent and a TaskClient work over TLS and mTLS; a plaintext client, a wrong CA and a
missing client certificate each get an error naming the cause. The Hub refuses plaintext
and --dev on a non-loopback address unless told otherwise.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from pydantic import SecretStr

from aether import (
    AetherAgent,
    AetherConnectionError,
    AgentConfig,
    TaskAssignment,
    TaskClient,
    TaskResult,
    TaskState,
)
from aether_hub.commands import main as hub_main
from aether_hub.server import HubServer
from aether_hub.settings import ConfigError, HubConfig
from tests.hubserver.hubkit import running_hub


@dataclass(frozen=True)
class Certs:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    root = tmp_path_factory.mktemp("certs")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("agent.example")
    files = Certs(
        ca=root / "ca.pem",
        other_ca=root / "other-ca.pem",
        server_cert=root / "server.crt",
        server_key=root / "server.key",
        client_cert=root / "client.crt",
        client_key=root / "client.key",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    other.cert_pem.write_to_path(str(files.other_ca))
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    server.private_key_pem.write_to_path(str(files.server_key))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    return files


def _config(certs: Certs, *, mtls: bool, **extra: object) -> HubConfig:
    return HubConfig(
        port=0,
        dev=True,
        tls_cert_file=str(certs.server_cert),
        tls_key_file=str(certs.server_key),
        tls_client_ca_file=str(certs.ca) if mtls else None,
        **extra,  # type: ignore[arg-type]  # test helper forwards HubConfig fields
    )


@pytest.fixture(params=[False, True], ids=["tls", "mtls"])
async def tls_hub(request: pytest.FixtureRequest, certs: Certs) -> AsyncIterator[HubServer]:
    async with running_hub(_config(certs, mtls=request.param)) as hub:
        yield hub


class Echo(AetherAgent):
    async def handle_task(self, task: TaskAssignment) -> TaskResult:
        return TaskResult(task_id=task.task_id, success=True, result=task.description.encode())


async def test_agent_and_task_client_over_tls_and_mtls(tls_hub: HubServer, certs: Certs) -> None:
    client_files = {
        "tls_ca_file": str(certs.ca),
        "tls_cert_file": str(certs.client_cert),
        "tls_key_file": str(certs.client_key),
    }
    agent = Echo(
        AgentConfig(
            agent_id="tls-echo",
            agent_name="TLS echo",
            hub_url=f"grpcs://{tls_hub.address}",
            capabilities={"task_types": "echo"},
            secret=SecretStr("unused-in-dev"),
            **client_files,  # type: ignore[arg-type]  # pydantic settings fields
        )
    )
    await agent.start()
    try:
        async with TaskClient(
            f"grpcs://{tls_hub.address}",
            tls_ca_file=str(certs.ca),
            tls_cert_file=str(certs.client_cert),
            tls_key_file=str(certs.client_key),
        ) as tasks:
            submitted = await tasks.submit("over tls", task_type="echo")
            task = await submitted.wait(timeout=30)
        assert task.state == TaskState.SUCCEEDED and task.result == b"over tls"
    finally:
        await agent.stop()


async def test_a_plaintext_client_is_told_the_hub_speaks_tls(tls_hub: HubServer) -> None:
    async with TaskClient(f"grpc://{tls_hub.address}", timeout=10) as tasks:
        with pytest.raises(AetherConnectionError) as caught:
            await tasks.get("nothing")
    message = str(caught.value)
    assert "closed the connection before answering" in message
    assert f"grpcs://{tls_hub.address}" in message


async def test_a_wrong_ca_is_a_certificate_error(tls_hub: HubServer, certs: Certs) -> None:
    async with TaskClient(
        f"grpcs://{tls_hub.address}",
        tls_ca_file=str(certs.other_ca),
        tls_cert_file=str(certs.client_cert),
        tls_key_file=str(certs.client_key),
        timeout=10,
    ) as tasks:
        with pytest.raises(AetherConnectionError) as caught:
            await tasks.get("nothing")
    message = str(caught.value)
    assert "CERTIFICATE_VERIFY_FAILED" in message and "CA file" in message


async def test_mtls_without_a_client_certificate_names_the_missing_certificate(
    certs: Certs,
) -> None:
    async with running_hub(_config(certs, mtls=True)) as hub:
        async with TaskClient(
            f"grpcs://{hub.address}", tls_ca_file=str(certs.ca), timeout=10
        ) as tasks:
            with pytest.raises(AetherConnectionError) as caught:
                await tasks.get("nothing")
        message = str(caught.value)
        assert "client certificates (mTLS)" in message and "tls_cert_file" in message
        # A certificate from another CA is refused as well.
        other = trustme.CA().issue_cert("intruder.example")
        cert, key = certs.ca.parent / "intruder.crt", certs.ca.parent / "intruder.key"
        other.cert_chain_pems[0].write_to_path(str(cert))
        other.private_key_pem.write_to_path(str(key))
        async with TaskClient(
            f"grpcs://{hub.address}",
            tls_ca_file=str(certs.ca),
            tls_cert_file=str(cert),
            tls_key_file=str(key),
            timeout=10,
        ) as tasks:
            with pytest.raises(AetherConnectionError):
                await tasks.get("nothing")


# -- what the Hub refuses to start with --------------------------------------------------


def test_plaintext_off_loopback_is_refused_unless_insecure(
    monkeypatch: pytest.MonkeyPatch, certs: Certs
) -> None:
    monkeypatch.setenv("TLS_TEST_TOKEN", "t" * 16)
    base = HubConfig(host="0.0.0.0", client_token_env="TLS_TEST_TOKEN")
    with pytest.raises(ConfigError, match=r"plaintext on non-loopback.*--tls-cert"):
        base.validate()
    HubConfig(host="0.0.0.0", client_token_env="TLS_TEST_TOKEN", insecure=True).validate()
    HubConfig(
        host="0.0.0.0",
        client_token_env="TLS_TEST_TOKEN",
        tls_cert_file=str(certs.server_cert),
        tls_key_file=str(certs.server_key),
    ).validate()


def test_dev_off_loopback_is_refused(monkeypatch: pytest.MonkeyPatch, certs: Certs) -> None:
    monkeypatch.setenv("TLS_TEST_TOKEN", "t" * 16)
    config = HubConfig(
        host="0.0.0.0",
        dev=True,
        client_token_env="TLS_TEST_TOKEN",
        tls_cert_file=str(certs.server_cert),
        tls_key_file=str(certs.server_key),
    )
    with pytest.raises(ConfigError, match="refusing --dev on non-loopback"):
        config.validate()


def test_tls_settings_are_checked(certs: Certs, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both --tls-cert and --tls-key"):
        HubConfig(tls_cert_file=str(certs.server_cert)).validate()
    with pytest.raises(ConfigError, match="needs --tls-cert"):
        HubConfig(tls_client_ca_file=str(certs.ca)).validate()
    with pytest.raises(ConfigError, match="no such file"):
        HubConfig(
            tls_cert_file=str(tmp_path / "x.crt"), tls_key_file=str(certs.server_key)
        ).validate()


async def test_a_key_that_does_not_match_is_a_config_error(certs: Certs) -> None:
    config = HubConfig(
        port=0, tls_cert_file=str(certs.server_cert), tls_key_file=str(certs.client_key)
    )
    with pytest.raises(ConfigError, match="cannot use them"):
        await HubServer(config).start()


def test_the_command_line_refuses_dev_and_plaintext_off_loopback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TLS_TEST_TOKEN", "t" * 16)
    code = hub_main(["--host", "0.0.0.0", "--dev", "--client-token-env", "TLS_TEST_TOKEN"])
    assert code == 2 and "refusing --dev" in capsys.readouterr().err
    code = hub_main(["--host", "0.0.0.0", "--client-token-env", "TLS_TEST_TOKEN"])
    assert code == 2 and "--tls-cert" in capsys.readouterr().err


async def test_tls_settings_come_from_the_config_file(certs: Certs, tmp_path: Path) -> None:
    path = tmp_path / "hub.json"
    hub_options = {
        "tls_cert_file": str(certs.server_cert),
        "tls_key_file": str(certs.server_key),
        "tls_client_ca_file": str(certs.ca),
    }
    path.write_text(json.dumps({"hub": hub_options}), encoding="utf-8")
    config = HubConfig(port=0, dev=True).merged_with_file(path, set())
    assert config.tls and config.tls_client_ca_file == str(certs.ca)
    async with (
        running_hub(config) as hub,
        TaskClient(
            f"grpcs://{hub.address}",
            tls_ca_file=str(certs.ca),
            tls_cert_file=str(certs.client_cert),
            tls_key_file=str(certs.client_key),
        ) as tasks,
    ):
        assert [t async for t in tasks.list()] == []
