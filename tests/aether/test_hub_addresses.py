"""Several Hub addresses: `parse_hub_urls`, `AgentConfig.hub_addresses`, the environment,
`aether run --hub-url`, `aether task --hub-url` and `TaskClient`, with clear errors."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from aether import AgentConfig, HubAddress, TaskClient
from aether.address import describe_hub_addresses, parse_hub_url, parse_hub_urls
from aether.errors import AetherConfigError
from aether.runner import build_config, configure_parser


@pytest.mark.parametrize(
    ("urls", "expected"),
    [
        ("h1:50051", (HubAddress("h1"),)),
        ("h1:50051,h2:50052", (HubAddress("h1"), HubAddress("h2", 50052))),
        (" h1 , h2:7 ", (HubAddress("h1"), HubAddress("h2", 7))),
        ("[::1]:1,127.0.0.1:2", (HubAddress("::1", 1), HubAddress("127.0.0.1", 2))),
        ("grpc://a:1,http://b:2/", (HubAddress("a", 1), HubAddress("b", 2))),
        # grpcs:// and https:// both mean TLS: the same scheme rules.
        ("grpcs://a:1,https://b", (HubAddress("a", 1, tls=True), HubAddress("b", tls=True))),
    ],
)
def test_good_lists(urls: str, expected: tuple[HubAddress, ...]) -> None:
    assert parse_hub_urls(urls) == expected
    config = AgentConfig(agent_id="a", agent_name="A", hub_url=urls)
    assert config.hub_addresses == expected
    assert config.hub_address == expected[0]  # the first, as before
    assert TaskClient(urls).addresses == expected
    assert TaskClient(urls).address == expected[0]


def test_one_address_is_exactly_as_before() -> None:
    for url in ("localhost:50051", "grpcs://hub:443", "[::1]", "hub"):
        assert parse_hub_urls(url) == (parse_hub_url(url),)
        config = AgentConfig(agent_id="a", agent_name="A", hub_url=url)
        assert config.hub_addresses == (config.hub_address,)
        assert repr(TaskClient(url)) == f"<TaskClient hub={parse_hub_url(url)} token=None>"


@pytest.mark.parametrize(
    ("urls", "problem"),
    [
        ("h1:1,,h2:2", "invalid Hub address list 'h1:1,,h2:2': part 2 of 3 is empty"),
        ("h1:1,", "part 2 of 2 is empty"),
        (",h1:1", "part 1 of 2 is empty"),
        ("h1:1, ,h2:2", "part 2 of 3 is empty"),
        (
            "grpcs://h1:1,h2:2",
            "part 2 of 2, 'h2:2', is plaintext but part 1, 'grpcs://h1:1', is TLS",
        ),
        ("h1:1,h2:2,https://h3:3", "part 3 of 3, 'https://h3:3', is TLS but part 1, 'h1:1'"),
        (
            "h1:1,h2:x",
            "invalid Hub address 'h2:x' (part 2 of 2 of 'h1:1,h2:x'): the port must be a"
            " number from 1 to 65535, got 'x'",
        ),
        ("h1:1,ftp://h2:2", "(part 2 of 2 of 'h1:1,ftp://h2:2'): unknown scheme 'ftp://'"),
        ("h1:1,h1:1", "part 2 of 2, 'h1:1', repeats h1:1"),
    ],
)
def test_bad_lists_name_the_bad_part(urls: str, problem: str) -> None:
    with pytest.raises(AetherConfigError) as info:
        parse_hub_urls(urls)
    assert problem in str(info.value)
    assert info.value.variable == "hub_url"
    with pytest.raises(ValidationError, match="hub_url"):
        AgentConfig(agent_id="a", agent_name="A", hub_url=urls)
    with pytest.raises(AetherConfigError, match="invalid Hub address"):
        TaskClient(urls)


def test_mixed_schemes_message_says_what_to_do() -> None:
    with pytest.raises(AetherConfigError, match="every address of a list must use the same"):
        parse_hub_urls("grpcs://h1,h2")


def test_credentials_in_any_part_are_refused_without_echoing_the_list() -> None:
    with pytest.raises(AetherConfigError) as info:
        parse_hub_urls("h1:1,grpc://admin:hunter2@h2:2")
    assert "credentials" in str(info.value)
    assert "hunter2" not in str(info.value) and "h1:1" not in str(info.value)


def test_tls_settings_make_every_address_tls() -> None:
    config = AgentConfig(agent_id="a", agent_name="A", hub_url="h1:1,h2:2", tls_ca_file="/ca.pem")
    assert config.uses_tls
    assert config.hub_addresses == (HubAddress("h1", 1, tls=True), HubAddress("h2", 2, tls=True))
    assert TaskClient("h1:1,h2:2", tls_server_name="hub").addresses == config.hub_addresses


def test_describe_names_every_address() -> None:
    assert describe_hub_addresses(parse_hub_urls("h1:1,[::1]:2")) == "grpc://h1:1, grpc://[::1]:2"


def test_from_env_reads_a_list_and_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_AGENT_ID", "a")
    monkeypatch.setenv("AETHER_AGENT_NAME", "A")
    monkeypatch.setenv("AETHER_HUB_URL", "h1:1,h2:2")
    assert len(AgentConfig.from_env().hub_addresses) == 2
    assert TaskClient.from_env().addresses == (HubAddress("h1", 1), HubAddress("h2", 2))
    monkeypatch.setenv("AETHER_HUB_URL", "h1:1,,h2:2")
    with pytest.raises(AetherConfigError, match=r"AETHER_HUB_URL: .*part 2 of 3 is empty"):
        AgentConfig.from_env()
    with pytest.raises(AetherConfigError, match=r"AETHER_HUB_URL: .*part 2 of 3 is empty"):
        TaskClient.from_env()


def _run_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(["x:Y", *argv])


def test_aether_run_hub_url_takes_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in AgentConfig.ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    config = build_config(_run_args("--agent-id", "a1", "--hub-url", "h1:1,h2:2"))
    assert config.hub_addresses == (HubAddress("h1", 1), HubAddress("h2", 2))
    with pytest.raises(AetherConfigError, match=r"--hub-url: .*is TLS but part 1"):
        build_config(_run_args("--agent-id", "a1", "--hub-url", "h1:1,grpcs://h2:2"))
