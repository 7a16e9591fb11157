"""API keys: stored hashed, compared in constant time, each key names one tenant.

Config holds only ``sha256(key)`` hex digests (``[gateway.api_keys]``), so a leaked
config file does not leak a key. A presented key is hashed and compared with
*every* configured digest by :func:`hmac.compare_digest`, without stopping at a
match, so neither which digest matched nor how much of it did shows in the time
taken. Keys have a role:

- ``server``: read and write, sent in ``Authorization: Bearer`` or ``X-Api-Key``.
- ``tracker``: for the browser snippet, so it must be assumed public: it may only
  append browser behaviour events (:data:`TRACKER_TYPES`) without profile or agent
  fields, may not read leads, can be limited to page origins, and is rate-limited
  per client address. It may come in the ``key`` query parameter (``sendBeacon``
  cannot set headers).
- ``agent``: one agent's key for the hot-list page, bound to that agent id (``agent``
  in its config entry). Least privilege: it reads the board, the alert feed and a lead
  only as its agent (leads assigned or offered to it, and the pond), claims / acks /
  logs contact only as its agent and only on those leads, may see a team view only of
  a group it belongs to, and may not post events nor read the tenant-wide views
  (``/v1/hotlist``, SLA report, receipts, dead letters). Header only, like server keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from engine.events import BEHAVIOUR_TYPES
from engine.settings import ApiKeyEntry

__all__ = [
    "TRACKER_FORBIDDEN_FIELDS",
    "TRACKER_TYPES",
    "KeyRing",
    "Principal",
    "key_digest",
    "new_key",
    "presented_key",
]

#: Event types a (public) tracker key may append: browsing, plus identify.
TRACKER_TYPES = frozenset(BEHAVIOUR_TYPES) | {"identify"}
#: Fields a tracker event may not set: they change the lead's profile or routing.
TRACKER_FORBIDDEN_FIELDS = ("source", "side", "timeline", "agent_id", "channel")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's tenant and role, a short id of the key for logs, and for
    an agent key its agent."""

    tenant: str
    role: str
    key_id: str  # first 12 hex of the digest: names the key in logs and limits, reveals nothing
    origins: tuple[str, ...] = ()
    agent: str = ""  # agent keys only: the one agent this key acts as

    @property
    def is_tracker(self) -> bool:
        return self.role == "tracker"

    @property
    def is_agent(self) -> bool:
        return self.role == "agent"


def key_digest(key: str) -> str:
    """The sha256 hex digest stored in config for ``key``."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The key in ``Authorization: Bearer`` or ``X-Api-Key`` of raw ASGI headers ("" if
    none): for middlewares that must know the caller before the routes authenticate."""
    bearer = api_key = ""
    for name, value in headers:
        if name == b"authorization":
            text = value.decode("latin-1")
            if text[:7].lower() == "bearer ":
                bearer = text[7:].strip()
        elif name == b"x-api-key":
            api_key = value.decode("latin-1")
    return bearer or api_key


def new_key(role: str = "server") -> str:
    """A fresh random key (256 bits); ``lpk_trk_`` marks tracker keys, ``lpk_agt_`` agent
    keys, for people (the prefix grants nothing: the config entry decides the role)."""
    prefix = {"tracker": "lpk_trk_", "agent": "lpk_agt_"}.get(role, "lpk_")
    return prefix + secrets.token_urlsafe(32)


class KeyRing:
    """The configured keys; :meth:`authenticate` maps a presented key to its principal."""

    def __init__(self, entries: Mapping[str, ApiKeyEntry]) -> None:
        self._entries = [(bytes.fromhex(d), d, e) for d, e in entries.items()]

    def __len__(self) -> int:
        return len(self._entries)

    def server_digests(self, tenant: str) -> tuple[bytes, ...]:
        """The sha256 digests of ``tenant``'s server keys (identify tokens are signed with
        them: ``engine.gateway.identify``)."""
        return tuple(d for d, _, e in self._entries if e.tenant == tenant and e.role == "server")

    def authenticate(self, presented: str) -> Principal | None:
        """The principal of ``presented``, or None; time does not depend on which matched."""
        if not presented or len(presented) > 512:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: Principal | None = None
        for stored, hexdigest, entry in self._entries:
            if hmac.compare_digest(stored, digest):  # no break: compare with every key
                found = Principal(
                    entry.tenant, entry.role, hexdigest[:12], entry.origins, entry.agent
                )
        return found
