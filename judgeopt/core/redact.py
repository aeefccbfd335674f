"""The one redaction of secrets from text that leaves a process: endpoint error messages (logged, stored in
``run.sqlite``, returned in a gRPC status), every structlog event, and URLs that carry credentials.

A model endpoint may echo what it was sent (an ``Authorization`` header, a key) in its error body; a ``base_url`` may
carry ``user:password@``. Whatever the source, :func:`redact` replaces the secret with ``REDACTED`` and keeps the
rest of the text, so an error still says what went wrong.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "REDACTED"

_SUBSTITUTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # An Authorization header's value, whatever its scheme: `Authorization: Bearer x`, `'authorization': 'Basic y'`.
    (re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n,;}]+"), rf"\g<1>{REDACTED}"),
    # Credentials after an HTTP auth scheme, wherever they stand (an endpoint echoing the header's value alone).
    (re.compile(r"\b((?i:bearer)|Basic)\s+[A-Za-z0-9._~+/=-]{6,}"), rf"\g<1> {REDACTED}"),
    # OpenAI-style keys: sk-…, sk-proj-…
    (re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"), f"sk-{REDACTED}"),
    # URL credentials: scheme://user:password@host (a user alone may be a token too).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@"), rf"\g<1>{REDACTED}@"),
)


def redact(text: str) -> str:
    """``text`` with bearer and basic credentials, ``sk-`` keys, ``Authorization`` values and URL credentials
    replaced by ``REDACTED``."""
    for pattern, replacement in _SUBSTITUTIONS:
        text = pattern.sub(replacement, text)
    return text


def has_url_credentials(url: str) -> bool:
    parts = urlsplit(url)
    return parts.username is not None or parts.password is not None


def redact_url(url: str) -> str:
    """``url`` with its ``user:password@`` shown as ``REDACTED@`` (a URL that says credentials were there)."""
    return _with_userinfo(url, REDACTED) if has_url_credentials(url) else url


def strip_url_credentials(url: str) -> str:
    """``url`` without its ``user:password@``."""
    return _with_userinfo(url, None) if has_url_credentials(url) else url


def is_redacted_url(url: str) -> bool:
    """Whether ``url`` came from :func:`redact_url` (its credentials are gone, not just hidden)."""
    return urlsplit(url).username == REDACTED and urlsplit(url).password is None


def _with_userinfo(url: str, userinfo: str | None) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=host if userinfo is None else f"{userinfo}@{host}"))
