"""Contact data is never stored or logged in clear: keyed hashes for matching.

An event's ``props`` may carry an email address or a phone number (``props.email``,
``props.phone`` and the aliases below; ``identify`` traits from the tracker land
there too). Before the event is stored, :meth:`ContactHasher.scrub` replaces each
with a keyed hash of its normalised form (``props.email`` -> ``props.email_hash``)
and returns the hashes, which the store indexes per tenant (hash -> lead ids) so
two leads that are one person can be found and merged.

The hash is ``HMAC-SHA256(k_tenant, kind ":" normalised)`` truncated to 128 bits,
where ``k_tenant = HMAC-SHA256(secret, "leadpulse/contact/v1/" tenant)``: without the
secret a stored hash cannot be tested against a guessed address, and the same
person has unrelated hashes in two tenants (no cross-brokerage linking).

Free text in other string props (a question typed into a form) is scrubbed too:
email addresses and *formatted* phone numbers (``+44 20 7946 0958``,
``(555) 123-4567``, ``555-123-4567``) are replaced by ``[email:<hash>]`` /
``[phone:<hash>]``. A bare run of digits in free text is left alone: listing and
MLS numbers look the same. Identifier fields that look like an email or a
formatted phone number are refused (:func:`contact_like_id`): an id is stored in
key names and cannot be hashed after the fact.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EMAIL_KEYS",
    "PHONE_KEYS",
    "ContactHasher",
    "Scrubbed",
    "contact_like_id",
    "fold",
    "normalise_email",
    "normalise_phone",
]

#: props keys whose value is an email address (replaced by ``<key>_hash``).
EMAIL_KEYS = frozenset({"email", "e_mail", "email_address", "mail"})
#: props keys whose value is a phone number (replaced by ``<key>_hash``).
PHONE_KEYS = frozenset({"phone", "phone_number", "mobile", "cell", "tel", "telephone"})

_EMAIL_FULL = re.compile(r"^[^@\s]{1,64}@[^@\s.]+(?:\.[^@\s.]+)+$")
# \w: any script's letters and digits (jörg@müller.de); text is NFKC-folded first, so a
# fullwidth "＠" or "．" reads as "@" or "."
_EMAIL_IN_TEXT = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
# formatted phone numbers only: "+<digits and separators>", or NANP "(555) 123-4567" styles
_PHONE_IN_TEXT = re.compile(
    r"(?<![\w+])\+\d[\d ().-]{6,20}\d(?!\w)"
    r"|(?<![\w(])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\w)"
)
_EXTENSION = re.compile(r"\s*(?:x|ext\.?|extension)\s*\d+\s*$", re.IGNORECASE)
_MAX_DEPTH = 8  # nested props deeper than this are dropped (they could hide contact data)


def fold(text: str) -> str:
    """NFKC for non-ASCII text (fullwidth and compatibility forms to their plain
    characters), so look-alike "@", "." and digits cannot hide contact data."""
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def normalise_email(value: str) -> str | None:
    """Trimmed, NFKC-folded and lower-cased, or None if it is not an email address."""
    text = fold(value).strip().lower()
    return text if _EMAIL_FULL.fullmatch(text) else None


def normalise_phone(value: str | int, country_code: str = "1") -> str | None:
    """E.164 (``+15551234567``), or None if it cannot be a phone number.

    ``+`` or ``00`` starts an international number; otherwise the number is national:
    a trunk ``0`` is dropped and ``country_code`` prefixed, unless the number already
    starts with it and is longer than ten digits (``15551234567``). Extensions are
    dropped. Valid: 8 to 15 digits in all.
    """
    if isinstance(value, bool):
        return None
    text = _EXTENSION.sub("", fold(str(value)).strip())
    if not text or re.search(r"[^\d\s().+-]", text):
        return None
    digits = re.sub(r"\D", "", text)
    if text.startswith("+"):
        pass
    elif text.startswith("00"):
        digits = digits[2:]
    elif len(digits) > 10 and digits.startswith(country_code):
        pass
    else:
        digits = country_code + digits.removeprefix("0")
    if not 8 <= len(digits) <= 15:
        return None
    return "+" + digits


def contact_like_id(value: str) -> str | None:
    """ "email" or "phone" if an identifier looks like one (then it must be refused)."""
    value = fold(value)
    if "@" in value and _EMAIL_IN_TEXT.search(value):
        return "email"
    m = _PHONE_IN_TEXT.fullmatch(value.strip())
    if m:
        return "phone"
    return None


@dataclass
class Scrubbed:
    """``props`` with contact data replaced, the hashes to index, and what was dropped."""

    props: dict[str, Any]
    hashes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class ContactHasher:
    """Keyed, per-tenant hashes of normalised emails and phone numbers."""

    def __init__(self, secret: bytes, country_code: str = "1") -> None:
        if len(secret) < 32:
            raise ValueError("the contact hash secret must be at least 32 bytes")
        self._secret = secret
        self._cc = country_code
        self._keys: dict[str, bytes] = {}

    def _tenant_key(self, tenant: str) -> bytes:
        key = self._keys.get(tenant)
        if key is None:
            msg = b"leadpulse/contact/v1/" + tenant.encode()
            key = hmac.new(self._secret, msg, hashlib.sha256).digest()
            if len(self._keys) < 10_000:  # tenants are few; never grow without bound
                self._keys[tenant] = key
        return key

    def _digest(self, tenant: str, kind: str, normalised: str) -> str:
        msg = f"{kind}:{normalised}".encode()
        return hmac.new(self._tenant_key(tenant), msg, hashlib.sha256).hexdigest()[:32]

    def email_hash(self, tenant: str, value: str) -> str | None:
        """The tenant's matching hash of an email address (None if not an address)."""
        norm = normalise_email(value)
        return None if norm is None else self._digest(tenant, "email", norm)

    def phone_hash(self, tenant: str, value: str | int) -> str | None:
        """The tenant's matching hash of a phone number (None if not a number)."""
        norm = normalise_phone(value, self._cc)
        return None if norm is None else self._digest(tenant, "phone", norm)

    def scrub(self, tenant: str, props: dict[str, Any]) -> Scrubbed:
        """Replace contact data in ``props``; never returns or keeps a clear value."""
        out = Scrubbed({})
        for key, value in props.items():
            lowered = key.lower() if isinstance(key, str) else key
            if lowered in EMAIL_KEYS or lowered in PHONE_KEYS:
                kind = "email" if lowered in EMAIL_KEYS else "phone"
                digest = None
                if isinstance(value, str) and kind == "email":
                    digest = self.email_hash(tenant, value)
                elif isinstance(value, str | int) and kind == "phone":
                    digest = self.phone_hash(tenant, value)
                if digest is not None:
                    out.props[f"{key}_hash"] = digest
                    out.hashes.append(digest)
                elif value not in (None, ""):
                    out.notes.append(f"dropped:props.{key} is not a valid {kind}")
                continue
            out.props[key] = self._text(tenant, value, 0, out.notes, f"props.{key}")
        return out

    def _text(self, tenant: str, value: Any, depth: int, notes: list[str], where: str) -> Any:
        if isinstance(value, str):
            value = fold(value)
            if "@" in value:
                value = _EMAIL_IN_TEXT.sub(lambda m: self._token(tenant, "email", m[0]), value)
            if any(c.isdigit() for c in value):
                value = _PHONE_IN_TEXT.sub(lambda m: self._token(tenant, "phone", m[0]), value)
            return value
        if isinstance(value, bytes | bytearray):
            notes.append(f"dropped:{where[:60]} binary values are not kept")
            return None
        if isinstance(value, dict | list | tuple) and depth >= _MAX_DEPTH:
            notes.append(f"dropped:{where[:60]} nested deeper than {_MAX_DEPTH}")
            return None
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    notes.append(f"dropped:{where[:60]} binary keys are not kept")
                    continue
                out[self._text(tenant, k, depth + 1, notes, where)] = self._text(
                    tenant, v, depth + 1, notes, where
                )
            return out
        if isinstance(value, list | tuple):
            return [self._text(tenant, v, depth + 1, notes, where) for v in value]
        return value

    def _token(self, tenant: str, kind: str, found: str) -> str:
        digest = (
            self.email_hash(tenant, found) if kind == "email" else self.phone_hash(tenant, found)
        )
        return f"[{kind}:{digest}]" if digest else f"[{kind}]"
