"""The Hub's TLS: `server_ssl_context` from `--tls-cert`, `--tls-key` and `--tls-client-ca`.

TLS 1.2 or newer, ALPN ``h2``. With a client CA the Hub asks every client for a
certificate and refuses the handshake of one that sends none or one the CA did not sign
(mTLS). A file that cannot be read or used is a `ConfigError` naming it.
"""

from __future__ import annotations

import ssl

from aether_hub.settings import ConfigError, HubConfig

__all__ = ("server_ssl_context",)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)
    return str(exc)


def server_ssl_context(config: HubConfig) -> ssl.SSLContext | None:
    """The server TLS context of `config`, or None when it serves plaintext."""
    if not config.tls_cert_file or not config.tls_key_file:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"--tls-cert {config.tls_cert_file} / --tls-key {config.tls_key_file}: cannot"
            f" use them ({_reason(exc)}); both must be PEM, the key matching the certificate"
        ) from None
    if config.tls_client_ca_file:
        try:
            context.load_verify_locations(cafile=config.tls_client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"--tls-client-ca {config.tls_client_ca_file}: cannot use it ({_reason(exc)})"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    return context
