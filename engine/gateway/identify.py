"""Identify tokens: a site's server vouches for a lead id that a page then identifies.

A tracker key is public, so its ``identify`` binds a lead only with proof that the site's
server knows that lead: either the server key has sent an event for it, or the page's
``identify`` carries a token the server signed with its server key::

    token = "lpid1." + exp + "." + base64url(HMAC-SHA256(sha256(server_key),
                                  tenant "\\x1f" lead_id "\\x1f" exp)[:18])

``exp`` is Unix seconds. The site computes it when it renders the page after
registration (:func:`identify_token` here; a few lines in any language) and passes it
as the third argument of ``leadpulse.identify(leadId, traits, token)``. The gateway
holds only the digests of its keys, and checks a token against every server key digest
of the tenant in constant time; the token is never stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable

__all__ = ["TOKEN_FIELD", "identify_token", "verify_identify_token"]

#: The event field (kept in ``props`` by the validator) that carries the token.
TOKEN_FIELD = "identify_token"
_PREFIX = "lpid1"
_MAX_LEN = 64


def _mac(key_digest: bytes, tenant: str, lead_id: str, exp: int) -> str:
    msg = f"{tenant}\x1f{lead_id}\x1f{exp}".encode()
    raw = hmac.new(key_digest, msg, hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(raw).decode()


def identify_token(
    server_key: str, tenant: str, lead_id: str, *, ttl_s: float = 3_600, now: float | None = None
) -> str:
    """A token for ``lead_id`` of ``tenant``, valid ``ttl_s`` seconds (what the site signs)."""
    exp = int((time.time() if now is None else now) + ttl_s)
    digest = hashlib.sha256(server_key.encode()).digest()
    return f"{_PREFIX}.{exp}.{_mac(digest, tenant, lead_id, exp)}"


def verify_identify_token(
    digests: Iterable[bytes], tenant: str, lead_id: str, token: object, now: float | None = None
) -> bool:
    """Whether ``token`` was signed for this tenant and lead by one of ``digests`` (the
    tenant's server keys) and has not expired. Never raises on what a page sends."""
    if not isinstance(token, str) or len(token) > _MAX_LEN or not token.isascii():
        return False
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _PREFIX or not parts[1].isdigit() or len(parts[1]) > 12:
        return False
    exp = int(parts[1])
    if exp < (time.time() if now is None else now):
        return False
    ok = False
    for digest in digests:  # no early exit: time does not depend on which key matched
        ok |= hmac.compare_digest(_mac(digest, tenant, lead_id, exp), parts[2])
    return ok
