"""From a request body to events ready to append: decode, check, scrub, pack.

Pure (no I/O): the app reads the body, looks up aliases and appends; this module
decides, per event, *accepted* (a :class:`~engine.gateway.store.Prepared`) or
*rejected* with a reason. Validation is the engine's own
(:class:`engine.validate.Validator`), so the gateway can never accept what the engine
would dead-letter, and the reason codes are the contract's. On top of it, the
gateway's rules:

- ``forbidden:tenant``  the event names a tenant other than the API key's
- ``forbidden:type``    a tracker key sent a type other than browsing / ``identify``
- ``forbidden:<field>`` a tracker key set a profile or routing field
- ``bad_value:<id> looks like an email / a phone number``  contact data where an id
  belongs
- ``too_large``         the packed event exceeds ``validation.max_event_bytes``

Who may address a lead (README "Threat model"): an event sent with a server key
*binds* its lead (the store marks it known). A tracker key is public, so its events
reach a lead only if that lead is bound, or if the event is an ``identify`` with a
token the site's server signed for that lead (``engine.gateway.identify``), which binds
it. Any other ``lead_id`` is kept visitor-level: the event is stored under
``~<visitor_id>`` (or ``~<lead_id>`` without a visitor id), the anonymous id the engine
scores but must never alert on, and its result carries the note ``visitor_level:...``.
A made-up lead id from a public page therefore never becomes an agent's lead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, MutableSet, Set
from dataclasses import dataclass, field
from typing import Any

import msgpack

from engine.errors import InvalidEventError
from engine.events import Event, partition_of
from engine.gateway.auth import TRACKER_FORBIDDEN_FIELDS, TRACKER_TYPES, Principal
from engine.gateway.identify import TOKEN_FIELD
from engine.gateway.privacy import ContactHasher, contact_like_id
from engine.gateway.store import Prepared
from engine.settings import ValidationSettings
from engine.validate import Rejection, Validator, decode

__all__ = [
    "JSON_TYPES",
    "MSGPACK_TYPES",
    "BodyError",
    "Ingestor",
    "Outcome",
    "body_format",
    "contact_reason",
    "decode_body",
    "lead_candidates",
]

JSON_TYPES = frozenset({"application/json", "text/plain"})  # text/plain: what beacons send
MSGPACK_TYPES = frozenset(
    {"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"}
)
_ID_FIELDS = ("event_id", "lead_id", "visitor_id", "property_id", "agent_id", "area")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # JSON "\ud800": no UTF-8 form, never a valid id


class BodyError(Exception):
    """The request as a whole cannot be read: HTTP ``status`` with an error code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Outcome:
    """One event's result, in request order."""

    index: int
    status: str  # accepted | duplicate | rejected
    event_id: str | None = None
    reason: str | None = None
    notes: tuple[str, ...] = field(default=())


def body_format(content_type: str | None) -> str:
    """``json`` or ``msgpack`` from the Content-Type header; 415 for anything else."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in JSON_TYPES:
        return "json"
    if media in MSGPACK_TYPES:
        return "msgpack"
    accepted = ", ".join(sorted(JSON_TYPES | MSGPACK_TYPES))
    raise BodyError(415, "unsupported_media_type", f"Content-Type must be one of: {accepted}")


def decode_body(body: bytes, fmt: str, max_events: int) -> list[Any]:
    """The body's array of events; 400 if it is not one, 413 if it holds too many."""
    try:
        items = decode(body, fmt)
    except InvalidEventError as exc:
        raise BodyError(400, exc.reason.split(":", 1)[0], exc.reason) from None
    if not isinstance(items, list):
        raise BodyError(400, "not_an_array", f"the body must be an array of events, got "
                        f"{type(items).__name__}")  # fmt: skip
    if len(items) > max_events:
        raise BodyError(413, "too_many_events", f"{len(items)} events > {max_events} per request")
    return items


def lead_candidates(items: list[Any], limit: int = 1_000) -> list[str]:
    """The lead ids the items name (``lead_id`` and ``~visitor_id``), before validation:
    what to look up in the alias map. Bounded, and only strings and ints are considered
    (not text with a lone surrogate: it cannot be sent to Redis, and is rejected anyway)."""
    out: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            continue
        lead, visitor = item.get("lead_id"), item.get("visitor_id")
        if isinstance(lead, str | int) and not isinstance(lead, bool) and lead != "":
            out.add(str(lead)[:256])
        if isinstance(visitor, str | int) and not isinstance(visitor, bool) and visitor != "":
            out.add(f"~{visitor}"[:256])
        if len(out) >= limit:
            break
    return sorted(c for c in out if c.isascii() or not _SURROGATE.search(c))


class Ingestor:
    """Turns decoded items into prepared events and per-event outcomes."""

    def __init__(
        self,
        validation: ValidationSettings,
        hasher: ContactHasher,
        partitions: int,
        vouch: Callable[[str, str, object], bool] | None = None,
    ) -> None:
        self._vouch = vouch  # (tenant, lead id, identify token) -> valid
        self._validator = Validator(validation)
        self._hasher = hasher
        self._partitions = partitions
        self._max_bytes = validation.max_event_bytes
        self._max_id_len = validation.max_id_len
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def prepare(
        self,
        items: list[Any],
        who: Principal,
        aliases: Mapping[str, str] | None = None,
        bound: Set[str] = frozenset(),
    ) -> tuple[list[Prepared], list[Outcome | None]]:
        """Prepared events, and outcomes with ``None`` where an event awaits its append.

        ``aliases`` (lead id -> the lead it was folded into) rewrites ``lead_id`` so an
        event still sent under an old id (a visitor's, after identify; a merged lead's)
        lands on the lead that now holds its state; ``visitor_id`` is kept. ``bound``:
        the (resolved) lead ids a server key has vouched for; a tracker key's event for
        any other lead id is kept visitor-level (module docstring).
        """
        ready: list[Prepared] = []
        outcomes: list[Outcome | None] = []
        bound = set(bound)  # an identify token binds its lead for the rest of the request
        for i, item in enumerate(items):
            checked = self._one(i, item, who, aliases or {}, bound)
            if isinstance(checked, Outcome):
                outcomes.append(checked)
            else:
                ready.append(checked[0])
                outcomes.append(Outcome(i, "accepted", checked[0].event_id, None, checked[1]))
        return ready, outcomes

    def _one(
        self, i: int, item: Any, who: Principal, aliases: Mapping[str, str], bound: MutableSet[str]
    ) -> Outcome | tuple[Prepared, tuple[str, ...]]:
        event = self._allowed(i, item, who)
        if isinstance(event, Outcome):
            return event
        props = event.props
        if TOKEN_FIELD in props:  # proof for the gateway, never stored
            props = {k: v for k, v in props.items() if k != TOKEN_FIELD}
        scrubbed = self._hasher.scrub(event.tenant, props)
        lead = aliases.get(event.lead_id, event.lead_id)
        if who.is_tracker and not lead.startswith("~") and lead not in bound:
            lead = self._tracker_lead(event, lead, aliases, bound, scrubbed.notes)
            if len(lead) > self._max_id_len:
                return _rejected(i, f"too_long:lead_id {event.lead_id[:40]} is not bound by a "
                                 "server key and too long for a visitor-level id")  # fmt: skip
        payload = self._payload(i, event, lead, scrubbed.props)
        if isinstance(payload, Outcome):
            return payload
        prepared = Prepared(
            index=i,
            event_id=event.event_id,
            lead_id=lead,
            partition=partition_of(event.tenant, lead, self._partitions),
            payload=payload,
            contact_hashes=tuple(dict.fromkeys(scrubbed.hashes)),
            bind=not lead.startswith("~"),  # a tracker's only reach bound leads (refreshed)
        )
        return prepared, tuple(scrubbed.notes)

    def _allowed(self, i: int, item: Any, who: Principal) -> Event | Outcome:
        """The item as a valid event this key may send (its tenant, the tracker's types and
        fields, no contact data in an id), or its rejection."""
        if isinstance(item, dict):
            given = item.get("tenant")
            if given not in (None, "") and given != who.tenant:
                return _rejected(i, "forbidden:tenant does not match the API key's tenant")
            item = {**item, "tenant": who.tenant}
        checked = self._validator.check(item)
        if isinstance(checked, Rejection):
            return _rejected(i, checked.reason)
        event = checked
        if who.is_tracker:
            if event.type not in TRACKER_TYPES:
                return _rejected(i, f"forbidden:type {event.type} needs a server key")
            for name in TRACKER_FORBIDDEN_FIELDS:
                if getattr(event, name):
                    return _rejected(i, f"forbidden:{name} needs a server key")
        for name in _ID_FIELDS:
            kind = contact_like_id(getattr(event, name))
            if kind:
                return _rejected(i, contact_reason(name, kind))
        return event

    def _payload(
        self, i: int, event: Event, lead: str, props: Mapping[str, Any]
    ) -> bytes | Outcome:
        """The event as the stream entry's msgpack (for ``lead``, with the scrubbed
        ``props``), or its rejection (props msgpack cannot encode; over the size limit)."""
        wire = event.to_wire()  # (cheaper than dataclasses.replace, then to_wire)
        wire["lead_id"] = lead
        if props:
            wire["props"] = props
        else:
            wire.pop("props", None)
        try:
            payload: bytes = self._pack(wire)
        except (ValueError, TypeError, OverflowError) as exc:  # only props can fail here
            bad = "text that is not Unicode" if isinstance(exc, UnicodeError) else "a huge int"
            return _rejected(i, f"bad_value:props has {bad} (msgpack cannot encode it)")
        if len(payload) > self._max_bytes:
            return _rejected(i, f"too_large: {len(payload)} bytes > {self._max_bytes}")
        return payload

    def _tracker_lead(
        self,
        event: Event,
        lead: str,
        aliases: Mapping[str, str],
        bound: MutableSet[str],
        notes: list[str],
    ) -> str:
        """Where a tracker's event for an unbound ``lead`` goes: the lead itself if it is an
        ``identify`` with a valid token (which binds it, for the rest of the request too),
        else the visitor-level id (too long for one: the caller rejects it)."""
        token = event.props.get(TOKEN_FIELD)
        if event.type == "identify" and token is not None:
            if self._vouch is not None and self._vouch(event.tenant, lead, token):
                bound.add(lead)
                return lead
            notes.append("dropped:identify_token is not valid for this lead (or expired)")
        anonymous = f"~{event.visitor_id or event.lead_id}"
        if len(anonymous) > self._max_id_len:
            return anonymous
        resolved = aliases.get(anonymous, anonymous)
        target = resolved if resolved.startswith("~") or resolved in bound else anonymous
        notes.append(
            f"visitor_level:lead_id {event.lead_id[:40]} is not bound by a server key; "
            f"stored as {target[:41]}"
        )
        return target


def contact_reason(name: str, kind: str) -> str:
    """The rejection of an id field that looks like contact data (``kind``: email, phone)."""
    words = "an email" if kind == "email" else "a phone number"
    return (f"bad_value:{name} looks like {words}; send an opaque id and put the {kind} in "
            f"props.{kind}")  # fmt: skip


def _rejected(i: int, reason: str) -> Outcome:
    return Outcome(i, "rejected", None, reason)
