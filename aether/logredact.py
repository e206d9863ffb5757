"""Keep secrets and tokens out of every log record, whichever logger writes it.

`install_log_redaction()` wraps the process's log record factory once, so every record
created afterwards — the SDK's, the Hub's and third-party loggers' alike (`hpack` prints
decoded headers at DEBUG, `h2`, `grpclib`, `nats`) — has these masked in its message
before any handler or formatter sees it:

- bearer tokens: ``Bearer <token>`` (the `authorization` header as hpack prints it, as
  ``b'authorization'=b'Bearer …'`` or ``(b'authorization', b'Bearer …')``);
- the value after an ``authorization``, ``session_token``, ``client_token``, ``secret``,
  ``password`` or ``api_key`` name (``secret='…'``, ``"session_token": "…"``);
- every exact value passed to `install_log_redaction(*known)` (an agent's secret, a
  session token, the Hub's client token), wherever it appears;
- hpack's dumps of raw header blocks (``Encoded header block to …``, ``Decoding …``),
  whose Huffman-coded bytes hold the same headers in a form no pattern can find.

Masks read ``<redacted>``. Installing again only adds known values. Records from a
record factory installed later still pass through this one (it wraps whatever factory
was current when it was installed and a later one normally wraps it in turn).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any, Final

__all__ = ("REDACTED", "RedactingFilter", "install_log_redaction", "redact")

REDACTED: Final = "<redacted>"

# Shorter known values are not masked by value (they would mask ordinary words).
_MIN_KNOWN_LENGTH: Final = 8

_BEARER = re.compile(r"(?i)(bearer\s+)(?!<)[^\s'\"\\,;)\]}>]+")
# The whole quoted value of an authorization header: `b'authorization'=b'…'`,
# `(b'authorization', b'…')`, `{'authorization': '…'}`.
_AUTHORIZATION = re.compile(r"(?i)(\bauthorization['\"]?\s*[=:,]\s*b?(['\"]))(?:(?!\2).)*")
# `name=value`, `name='value'`, `'name': 'value'`, `(b'name', b'value')`.
_NAMED = re.compile(
    r"(?i)(\b(?:session_token|client_token|secret|password|api_key|token)"
    r"(?:\s*=\s*|['\"]\s*[=:,]\s*)(?!b?['\"]?(?:bearer\b|<redacted>))b?['\"]?)"
    r"[^\s'\"\\,;)\]}>]+"
)
# hpack's dumps of whole header blocks (raw, Huffman-coded bytes): dropped entirely.
_HPACK_BLOCK_MESSAGES: Final = frozenset({"Encoded header block to %s", "Decoding %s"})

_lock = threading.Lock()
_known: set[str] = set()
_known_pattern: re.Pattern[str] | None = None
_installed = False


def redact(text: str) -> str:
    """`text` with bearer tokens, named secrets and known secret values masked."""
    if not text:
        return text
    pattern = _known_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _AUTHORIZATION.sub(r"\1" + REDACTED, text)
    text = _BEARER.sub(r"\1" + REDACTED, text)
    return _NAMED.sub(r"\1" + REDACTED, text)


def _remember(values: tuple[str, ...]) -> None:
    global _known_pattern
    fresh = {v for v in values if isinstance(v, str) and len(v) >= _MIN_KNOWN_LENGTH}
    if not fresh - _known:
        return
    _known.update(fresh)
    ordered = sorted(_known, key=len, reverse=True)
    _known_pattern = re.compile("|".join(re.escape(v) for v in ordered))


def _scrub(record: logging.LogRecord) -> None:
    if record.name.startswith("hpack") and record.msg in _HPACK_BLOCK_MESSAGES:
        record.msg = f"{record.msg.split(' %s')[0]} {REDACTED} (header block)"
        record.args = None
        return
    try:
        message = record.getMessage()
    except Exception:  # a broken format: leave it for logging's own error report
        return
    masked = redact(message)
    if masked != message:
        record.msg = masked
        record.args = None
    if record.exc_info and not record.exc_text:
        # Formatted here (as logging's default formatter would) so a traceback that
        # quotes a token is masked too; formatters use exc_text when it is set.
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)


def install_log_redaction(*known: str) -> None:
    """Mask secrets in every log record from now on (idempotent); `known` are exact
    values to mask too (at least 8 characters long)."""
    global _installed
    with _lock:
        _remember(tuple(known))
        if _installed:
            return
        previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _scrub(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


class RedactingFilter(logging.Filter):
    """A handler filter doing the same masking (for handlers fed by records made before
    `install_log_redaction`, or by another process's factory)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _scrub(record)
        return True
