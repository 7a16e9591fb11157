"""Secrets out of URLs: the one helper every message that names a server goes through.

:func:`redact_url` makes a URL safe to print, log, label or answer, so a password in
``REDIS_URL`` (``redis://:s3cret@host``) never reaches a terminal, a log, ``/healthz``
or a metric; :func:`redact_text` does the same for every URL inside a message.
:func:`public_url` is the shorter form receipts and dead letters show: no user info,
query or fragment at all (``path=False``: scheme, host and port only).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["public_url", "redact_text", "redact_url"]

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


def public_url(url: str, *, path: bool = True) -> str:
    """``scheme://host[:port][/path]``: what a receipt or a dead letter may show.

    User info, query and fragment are dropped (a token in ``?token=`` or a password in
    ``user:pw@`` never reaches a reader); ``path=False`` keeps scheme, host and port only,
    for URLs whose path is itself the secret (chat webhooks). A URL that does not parse
    gives :func:`redact_url` of it.
    """
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return redact_url(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}" + (parts.path if path else "")
