"""Event contract v1 as a JSON Schema, generated from ``engine/events.py``.

``python -m engine.contract > config/event.schema.json`` writes the schema committed in
``config/``; ``python -m engine.contract --markdown`` prints the README's field and type
tables. Both come from :class:`engine.events.Event`, the type groups and enums of
``engine/events.py`` and the default bounds of ``[validation]``, so the contract cannot
drift from the code without ``tests/engine/test_contract.py`` failing.

The schema describes one event as a JSON object (msgpack maps carry the same fields).
It is the shape; the validator (``engine/validate.py``) is the authority and adds what a
schema cannot say: an unknown top-level field is moved into ``props`` and counts
against ``max_props``; an ``event_id`` seen before is a duplicate; ``ts`` must be within
``max_future_skew_s`` of the server's clock.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, datetime
from typing import Any

from engine import events as ev
from engine.settings import ValidationSettings

__all__ = ["FIELDS", "PROPS", "TYPE_GROUPS", "TYPE_WORDS", "markdown", "schema"]

SCHEMA_ID = "urn:leadpulse:event:v1"

#: Every field of :class:`engine.events.Event`, in words (the test checks none is missing).
FIELDS: dict[str, str] = {
    "event_id": "Unique per tenant; a repeat is ignored (idempotent). Required.",
    "lead_id": "The lead (CRM id). Required unless visitor_id is given.",
    "type": "One of the event types below. Required.",
    "ts": "Event time: ISO-8601 with a UTC offset, or epoch seconds. Required.",
    "tenant": "The brokerage; the gateway sets it from the API key. Default `default`.",
    "visitor_id": "Anonymous browser id; without lead_id the event is lead `~<visitor_id>`.",
    "property_id": "Listing id (MLS number); used only to count repeats and distinct homes.",
    "price": "Listing price (routing by price band).",
    "area": "Zip code or neighbourhood (routing, distinct areas).",
    "source": "Where the lead came from (SLA row, points prior).",
    "side": "buyer / seller / both (routing: sellers to listing specialists).",
    "timeline": "Stated time frame to move.",
    "channel": "Channel of a conversation, contact, opt-out or bounce.",
    "dwell_s": "Seconds on the page.",
    "agent_id": "The agent of an assigned / agent_contact / alert_ack event.",
    "props": "Free-form map; unknown top-level fields land here. Ignored by scoring.",
}

#: ``props`` keys leadpulse reads (every other key is kept and ignored).
PROPS: dict[str, str] = {
    "address": "The home's street address: named in scripts and alerts (never the id).",
    "title": "The listing's title, used when there is no address.",
    "email": "Contact email: the gateway replaces it with a keyed hash (email_hash).",
    "phone": "Contact phone: the gateway replaces it with a keyed hash (phone_hash).",
    "text": "A reply's text; STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT close texts.",
    "alert_id": "On alert_ack / agent_contact: the alert answered.",
    "note": "On agent_contact: the agent's note (≤ 200 characters from the page).",
    "reason": "On assigned: why, in words (written by delivery).",
}

TYPE_GROUPS: dict[str, tuple[str, ...]] = {
    "behaviour": ev.BEHAVIOUR_TYPES,
    "hand_raise": ev.HAND_RAISE_TYPES,
    "conversation": ev.CONVERSATION_TYPES,
    "negative": ev.NEGATIVE_TYPES,
    "lifecycle": ev.LIFECYCLE_TYPES,
    "outcome": ev.OUTCOME_TYPES,
}

#: What each group means to leadpulse.
TYPE_WORDS: dict[str, str] = {
    "behaviour": "browsing on the IDX site: features and the points prior",
    "hand_raise": "the lead asked for something: always an alert, P1 for 24 h",
    "conversation": "replies and calls: engagement features",
    "negative": "closes channels (consent) or marks the lead P5",
    "lifecycle": "identity, assignment and agent responses (stop SLA clocks)",
    "outcome": "labels for learning (appointment_set … closed positive, lost negative)",
}

_ENUM_FIELDS = {"source": ev.SOURCES, "side": ev.SIDES, "timeline": ev.TIMELINES,
                "channel": ev.CHANNELS}  # fmt: skip
_NO_CONTROL = "^[^\\u0000-\\u001f]*$"


def _bound(name: str) -> Any:
    return ValidationSettings.model_fields[name].default


def _id(pattern: str = _NO_CONTROL, min_len: int = 0) -> dict[str, Any]:
    max_len = _bound("max_id_len")
    return {"type": ["string", "integer"], "minLength": min_len, "maxLength": max_len,
            "pattern": pattern}  # fmt: skip


def _properties() -> dict[str, dict[str, Any]]:
    ids = "[A-Za-z0-9_.:-]*[A-Za-z0-9][A-Za-z0-9_.:-]*"
    iso = "^\\d{4}-\\d{2}-\\d{2}[T ]\\d{2}:\\d{2}(:\\d{2}(\\.\\d+)?)?(Z|[+-]\\d{2}:?\\d{2})$"
    p: dict[str, dict[str, Any]] = {
        "event_id": _id(min_len=1),
        "lead_id": _id(f"^~?{ids}$", 1),
        "type": {"type": "string", "enum": sorted(ev.EVENT_TYPES)},
        "ts": {
            "oneOf": [
                {"type": "string", "maxLength": 40, "pattern": iso},
                {"type": "number", "minimum": _bound("min_ts")},
            ]
        },  # fmt: skip
        "tenant": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$", "default": "default"},
        "visitor_id": _id(f"^{ids}$", 1),
        "property_id": _id(),
        "price": {"type": "number", "minimum": 0, "maximum": 1e10},
        "area": _id(),
        "dwell_s": {"type": "number", "minimum": 0, "maximum": 86_400},
        "agent_id": _id(),
        "props": {
            "type": "object",
            "maxProperties": _bound("max_props"),
            "propertyNames": {"maxLength": _bound("max_id_len")},
            "additionalProperties": {
                "not": {"type": "string", "minLength": _bound("max_string_len") + 1}
            },
            "properties": {
                k: {"type": "string", "maxLength": _bound("max_string_len"), "description": v}
                for k, v in PROPS.items()
            },
        },  # fmt: skip
    }
    for name, allowed in _ENUM_FIELDS.items():
        p[name] = {"type": "string", "enum": ["", *sorted(allowed)]}
    return p


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one contract-v1 event."""
    props = _properties()
    ordered = {f.name: {**props[f.name], "description": FIELDS[f.name]}
               for f in dataclasses.fields(ev.Event)}  # fmt: skip
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "leadpulse event, contract v1",
        "description": "One IDX click event (a JSON object or msgpack map). Generated from "
        "engine/events.py by `python -m engine.contract`; do not edit by hand.",
        "type": "object",
        "required": ["event_id", "type", "ts"],
        "anyOf": [{"required": ["lead_id"]}, {"required": ["visitor_id"]}],
        "properties": ordered,
        "additionalProperties": True,
        "x-type-groups": {g: list(types) for g, types in TYPE_GROUPS.items()},
        "x-positive-outcomes": list(ev.POSITIVE_OUTCOMES),
        "x-negative-outcomes": list(ev.NEGATIVE_OUTCOMES),
    }


def markdown() -> str:
    """The README's tables: every field, then every event type by group."""
    props = _properties()
    lines = ["| field | type | rule | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(ev.Event):
        lines.append(f"| `{f.name}` | {_kind(props[f.name])} | {_rule(f.name, props[f.name])} | "
                     f"{FIELDS[f.name]} |")  # fmt: skip
    lines += ["", "| group | types | what leadpulse does with them |", "|---|---|---|"]
    for group, types in TYPE_GROUPS.items():
        names = ", ".join(f"`{t}`" for t in types)
        lines.append(f"| {group} | {names} | {TYPE_WORDS[group]} |")
    lines += ["", "| `props` key | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in PROPS.items()]
    return "\n".join(lines)


def _kind(p: dict[str, Any]) -> str:
    if "oneOf" in p:
        return "string or number"
    t = p.get("type")
    return " or ".join(t) if isinstance(t, list) else str(t)


def _rule(name: str, p: dict[str, Any]) -> str:
    n = _bound("max_id_len")
    since = datetime.fromtimestamp(_bound("min_ts"), UTC).date().isoformat()
    ahead = _bound("max_future_skew_s") / 3600
    special = {
        "type": "see the types below",
        "ts": f"ISO-8601 with offset, or epoch s; from {since}, ≤ {ahead:g} h ahead",
        "tenant": "`[A-Za-z0-9_.-]{1,64}`",
        "lead_id": f"≤ {n} chars of `A-Z a-z 0-9 _ . : -`, optional leading `~`",
        "visitor_id": f"≤ {n} chars of `A-Z a-z 0-9 _ . : -`",
    }
    if name in special:
        return special[name]
    if "enum" in p:
        return "one of " + ", ".join(f"`{x}`" for x in p["enum"] if x)
    if "maximum" in p:
        return f"{p['minimum']:g} to {p['maximum']:g}"
    if p.get("type") == "object":
        return f"≤ {p['maxProperties']} keys, strings ≤ {_bound('max_string_len')} chars"
    return f"≤ {p['maxLength']} chars, no control characters"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--markdown"]:
        print(markdown())
        return 0
    if args:
        print("usage: python -m engine.contract [--markdown]", file=sys.stderr)
        return 2
    print(json.dumps(schema(), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
