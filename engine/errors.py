"""The one error root of leadpulse, and its small tree.

::

    LeadpulseError
     +-- ConfigError (ValueError)         bad or unknown setting, named by key
     |    +-- ForbiddenFeatureError       a protected characteristic or proxy in config
     +-- InvalidEventError (ValueError)   an event that breaks contract v1 (has .reason)
     +-- StoreError                       Redis unreachable or refusing, after retries
     +-- EmbeddedServerError (StoreError) the embedded Valkey would not start

Bad input never raises out of the dataflow: the validator returns a rejection,
and only code that *wants* an exception (the gateway, tests) uses
``InvalidEventError``.

:func:`redact_url` is the one helper that makes a URL safe to print, log, label or
answer: every message that names a server goes through it, so a password in
``REDIS_URL`` (``redis://:s3cret@host``) never reaches a terminal, a log or ``/healthz``.
"""

from __future__ import annotations

import re

__all__ = [
    "ConfigError",
    "EmbeddedServerError",
    "ForbiddenFeatureError",
    "InvalidEventError",
    "LeadpulseError",
    "StoreError",
    "redact_text",
    "redact_url",
]

_SECRET_QUERY = re.compile(r"(?i)([?&](?:password|pass|pwd|secret|token|key|auth)=)[^&#]*")
# a URL with a scheme, or a schemeless "user:password@host" (an email has no colon)
_URL_IN_TEXT = re.compile(
    r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+|[^\s'\"<>@]*:[^\s'\"<>]*@[a-z0-9.\-\[\]]+"
)


def redact_url(url: str) -> str:
    """``url`` with any password (and a lone user-info part) replaced by ``***``.

    ``redis://:s3cret@h:6379/0`` -> ``redis://:***@h:6379/0``; ``redis://u:p@h`` ->
    ``redis://u:***@h``; ``?password=x`` -> ``?password=***``. A string that does not
    parse as a URL is redacted the same way (everything before its last ``@``).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    cut = min((i for i in (rest.find(c) for c in "?#") if i >= 0), default=len(rest))
    head, tail = rest[:cut], rest[cut:]
    if "@" in head:  # the last @ before the query ends the user info (a password may hold /)
        userinfo, host = head.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        head = f"{user}:***@{host}" if colon and "/" not in user else f"***@{host}"
    tail = _SECRET_QUERY.sub(r"\1***", tail)
    return f"{scheme}{sep}{head}{tail}"


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


class LeadpulseError(Exception):
    """Root of every error leadpulse raises on purpose."""


class ConfigError(LeadpulseError, ValueError):
    """A setting is unknown or has a value outside what is allowed."""


class ForbiddenFeatureError(ConfigError):
    """Config names a protected characteristic or a proxy for one (Fair Housing)."""


class InvalidEventError(LeadpulseError, ValueError):
    """An event breaks contract v1; ``reason`` says how, in one stable phrase."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StoreError(LeadpulseError):
    """Redis could not be reached or refused a command after retries."""


class EmbeddedServerError(StoreError):
    """The embedded Valkey server could not be started."""
