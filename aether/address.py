"""Hub addresses: the one grammar of `hub_url`, `AETHER_HUB_URL` and `--hub-url`.

Agents (`AgentConfig.hub_url`), `aether run`, `aether task` and `TaskClient` all parse an
address with `parse_hub_url`:

- ``host:port``, or ``host`` alone (port 50051), or ``[v6 address]:port`` / ``[v6 address]``
- optionally behind a scheme: ``grpc://`` or ``http://`` (plaintext), ``grpcs://`` or
  ``https://`` (TLS); a trailing ``/`` is ignored.

Where several Hubs can serve (a standby that takes over the same ``--db`` file, or a
name with several IPs), `parse_hub_urls` reads a comma-separated list of such addresses
(``h1:50051,h2:50051``): every part in the grammar above, all plaintext or all TLS. Agents
and `TaskClient` fail over from one to the next (docs/architecture.md#connection-policy).

A bad address raises `AetherConfigError` (a `ValueError`) saying what is wrong with it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from aether.errors import AetherConfigError

__all__ = (
    "DEFAULT_HUB_PORT",
    "DEFAULT_HUB_URL",
    "HubAddress",
    "describe_hub_addresses",
    "parse_hub_url",
    "parse_hub_urls",
)

DEFAULT_HUB_PORT: Final = 50051
DEFAULT_HUB_URL: Final = "localhost:50051"

# Scheme -> whether it means TLS.
_SCHEMES: Final = {"grpc": False, "http": False, "grpcs": True, "https": True}


@dataclass(frozen=True)
class HubAddress:
    """Where a Hub listens: host, port and whether the connection uses TLS."""

    host: str
    port: int = DEFAULT_HUB_PORT
    tls: bool = False

    @property
    def authority(self) -> str:
        """``host:port`` (an IPv6 host in brackets), without a scheme."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The address with its scheme: ``grpcs://host:port`` (TLS) or ``grpc://host:port``."""
        return f"{'grpcs' if self.tls else 'grpc'}://{self.authority}"

    def __str__(self) -> str:
        return self.url


def parse_hub_url(url: str) -> HubAddress:
    """Parse one Hub address (see the module docs for the forms it takes).

    Raises `AetherConfigError` naming the problem: an unknown scheme, an empty host, a port
    that is not a number from 1 to 65535, a path, or an IPv6 address outside brackets.
    """
    # A list goes through parse_hub_urls, which parses it here one part at a time; a comma
    # is refused rather than read as part of a host name.
    text = url.strip()
    if not text:
        raise _bad(url, "it is empty; expected host:port (e.g. localhost:50051)")
    if "," in text:
        raise _bad(
            url,
            "a list of Hub addresses is not supported here; give one host:port"
            " (parse_hub_urls reads a comma-separated list)",
        )
    tls = False
    scheme, sep, rest = text.partition("://")
    if sep:
        secure = _SCHEMES.get(scheme.lower())
        if secure is None:
            raise _bad(
                url,
                f"unknown scheme {scheme + '://'!r}; use grpc:// or http:// (plaintext),"
                " grpcs:// or https:// (TLS)",
            )
        tls, text = secure, rest
    text = text.rstrip("/")
    if "@" in text:
        # Never echo it: the part before "@" may be a password.
        raise _credentials_error()
    if "/" in text:
        raise _bad(url, "it has a path; expected host:port only")
    host, port_text = _split_host_port(url, text)
    if not host:
        raise _bad(url, "the host is empty")
    if any(char.isspace() for char in host):
        raise _bad(url, "the host contains whitespace")
    return HubAddress(host=host, port=_port(url, port_text), tls=tls)


def parse_hub_urls(urls: str) -> tuple[HubAddress, ...]:
    """Parse one Hub address or a comma-separated list of them (``h1:50051,h2:50051``).

    Each part takes the forms of `parse_hub_url`. All parts must agree on TLS (``grpcs://``
    / ``https://`` on every part, or on none), and none may be empty or listed twice.
    Raises `AetherConfigError` naming the bad part and its position. A single address
    gives a 1-tuple equal to ``(parse_hub_url(urls),)``.
    """
    if "," not in urls:
        return (parse_hub_url(urls),)
    if "@" in urls:
        # Never echo the list: the part with "@" may hold a password.
        raise _credentials_error()
    parts = urls.split(",")
    addresses: list[HubAddress] = []
    for number, part in enumerate(parts, start=1):
        where = f"part {number} of {len(parts)}"
        if not part.strip():
            raise AetherConfigError(
                f"invalid Hub address list {urls!r}: {where} is empty"
                " (separate addresses with single commas, e.g. h1:50051,h2:50051)",
                variable="hub_url",
            )
        try:
            address = parse_hub_url(part)
        except AetherConfigError as exc:
            prefix = f"invalid Hub address {part!r}: "
            problem = str(exc).removeprefix(prefix)
            raise AetherConfigError(
                f"invalid Hub address {part!r} ({where} of {urls!r}): {problem}",
                variable="hub_url",
            ) from None
        if addresses and address.tls != addresses[0].tls:
            first = addresses[0]
            raise AetherConfigError(
                f"invalid Hub address list {urls!r}: {where}, {part.strip()!r}, is"
                f" {_security(address)} but part 1, {parts[0].strip()!r}, is {_security(first)};"
                " every address of a list must use the same scheme (all grpcs:// or https://"
                " for TLS, or none)",
                variable="hub_url",
            )
        if address in addresses:
            raise AetherConfigError(
                f"invalid Hub address list {urls!r}: {where}, {part.strip()!r}, repeats"
                f" {address.authority}",
                variable="hub_url",
            )
        addresses.append(address)
    return tuple(addresses)


def describe_hub_addresses(addresses: tuple[HubAddress, ...]) -> str:
    """The addresses for messages: ``grpc://h1:50051`` or ``grpc://h1:50051, grpc://h2:50051``."""
    return ", ".join(str(address) for address in addresses)


def _security(address: HubAddress) -> str:
    return "TLS" if address.tls else "plaintext"


def _split_host_port(url: str, text: str) -> tuple[str, str | None]:
    """(host, port text or None when no port was given)."""
    if text.startswith("["):
        host, closed, after = text[1:].partition("]")
        if not closed:
            raise _bad(url, "missing ']' after the IPv6 address")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad(url, f"{host!r} in brackets is not an IPv6 address") from None
        if not after:
            return host, None
        if not after.startswith(":"):
            raise _bad(url, "expected ':port' after the IPv6 address")
        return host, after[1:]
    if text.count(":") > 1:
        raise _bad(url, "put an IPv6 address in brackets, e.g. [::1]:50051")
    host, sep, port_text = text.partition(":")
    return host, port_text if sep else None


def _port(url: str, text: str | None) -> int:
    if text is None:
        return DEFAULT_HUB_PORT
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise _bad(url, f"the port must be a number from 1 to 65535, got {text!r}")
    return int(text)


def _credentials_error() -> AetherConfigError:
    return AetherConfigError(
        "invalid Hub address: it must not contain credentials (user@host);"
        " pass a client token or agent secret separately",
        variable="hub_url",
    )


def _bad(url: str, problem: str) -> AetherConfigError:
    return AetherConfigError(f"invalid Hub address {url!r}: {problem}", variable="hub_url")
