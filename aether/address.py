"""Hub addresses: the one grammar of `hub_url`, `AETHER_HUB_URL` and `--hub-url`.

Agents (`AgentConfig.hub_url`), `aether run`, `aether task` and `TaskClient` all parse an
address with `parse_hub_url`:

- ``host:port``, or ``host`` alone (port 50051), or ``[v6 address]:port`` / ``[v6 address]``
- optionally behind a scheme: ``grpc://`` or ``http://`` (plaintext), ``grpcs://`` or
  ``https://`` (TLS); a trailing ``/`` is ignored.

A bad address raises `AetherConfigError` (a `ValueError`) saying what is wrong with it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from aether.errors import AetherConfigError

__all__ = ("DEFAULT_HUB_PORT", "DEFAULT_HUB_URL", "HubAddress", "parse_hub_url")

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
    # A comma-separated list of replicas will go through here one item at a time; until
    # then a comma is refused rather than read as part of a host name.
    text = url.strip()
    if not text:
        raise _bad(url, "it is empty; expected host:port (e.g. localhost:50051)")
    if "," in text:
        raise _bad(url, "a list of Hub addresses is not supported; give one host:port")
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
        raise AetherConfigError(
            "invalid Hub address: it must not contain credentials (user@host);"
            " pass a client token or agent secret separately",
            variable="hub_url",
        )
    if "/" in text:
        raise _bad(url, "it has a path; expected host:port only")
    host, port_text = _split_host_port(url, text)
    if not host:
        raise _bad(url, "the host is empty")
    if any(char.isspace() for char in host):
        raise _bad(url, "the host contains whitespace")
    return HubAddress(host=host, port=_port(url, port_text), tls=tls)


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


def _bad(url: str, problem: str) -> AetherConfigError:
    return AetherConfigError(f"invalid Hub address {url!r}: {problem}", variable="hub_url")
