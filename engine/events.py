"""Event contract v1: the public shape of an IDX click event.

An :class:`Event` is what survives validation (``engine/validate.py``); every
field is typed and bounded. ``partition_of`` decides which stream partition a
lead's events live on, so one worker owns a lead and sees its events in order.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BEHAVIOUR_TYPES",
    "CHANNELS",
    "CONVERSATION_TYPES",
    "EVENT_TYPES",
    "Event",
    "HAND_RAISE_TYPES",
    "LIFECYCLE_TYPES",
    "NEGATIVE_OUTCOMES",
    "NEGATIVE_TYPES",
    "OUTCOME_TYPES",
    "POSITIVE_OUTCOMES",
    "SIDES",
    "SOURCES",
    "TIMELINES",
    "partition_of",
]

BEHAVIOUR_TYPES = (
    "page_view", "property_view", "property_save", "property_unsave", "search",
    "saved_search", "share", "mortgage_calc", "valuation_view",
)  # fmt: skip
HAND_RAISE_TYPES = ("inquiry", "showing_request", "valuation_request", "call_request")
CONVERSATION_TYPES = ("email_open", "email_click", "reply", "call_answered", "call_missed")
NEGATIVE_TYPES = ("unsubscribe", "bounce", "opt_out", "invalid_contact", "not_interested")
LIFECYCLE_TYPES = (
    "lead_created", "profile_update", "identify", "assigned", "agent_contact", "alert_ack",
)  # fmt: skip
POSITIVE_OUTCOMES = ("appointment_set", "appointment_held", "agreement_signed", "closed")
NEGATIVE_OUTCOMES = ("lost",)
OUTCOME_TYPES = POSITIVE_OUTCOMES + NEGATIVE_OUTCOMES

EVENT_TYPES: frozenset[str] = frozenset(
    BEHAVIOUR_TYPES
    + HAND_RAISE_TYPES
    + CONVERSATION_TYPES
    + NEGATIVE_TYPES
    + LIFECYCLE_TYPES
    + OUTCOME_TYPES
)

SOURCES: frozenset[str] = frozenset(
    {
        "portal", "website", "listing_ad", "valuation_funnel", "open_house", "referral",
        "giveaway", "database", "social", "paid_search", "chat", "other",
    }
)  # fmt: skip
SIDES: frozenset[str] = frozenset({"buyer", "seller", "both", "unknown"})
TIMELINES: frozenset[str] = frozenset({"0-3m", "3-6m", "6-18m", "18m+", "unknown"})
CHANNELS: frozenset[str] = frozenset({"email", "sms", "call", "chat", "web"})


@dataclass(slots=True)
class Event:
    """A valid contract-v1 event. ``ts`` is epoch seconds (event time).

    Immutable by convention: nothing assigns to an event's fields (a changed event is a
    new one, ``dataclasses.replace``). Not ``frozen=True`` because a frozen dataclass sets
    each of its 16 fields through ``object.__setattr__`` in ``__init__``: ~10x the cost of
    this one, paid for every event on the hot path (an event was never hashable anyway:
    ``props`` is a dict)."""

    event_id: str
    lead_id: str
    type: str
    ts: float
    tenant: str = "default"
    visitor_id: str = ""
    property_id: str = ""
    price: float = 0.0
    area: str = ""
    source: str = ""
    side: str = ""
    timeline: str = ""
    channel: str = ""
    dwell_s: float = 0.0
    agent_id: str = ""
    props: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """The event as a contract-v1 map, without empty optional fields."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "lead_id": self.lead_id,
            "type": self.type,
            "ts": self.ts,
            "tenant": self.tenant,
        }
        for name in (
            "visitor_id", "property_id", "price", "area", "source", "side", "timeline",
            "channel", "dwell_s", "agent_id",
        ):  # fmt: skip
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.props:
            out["props"] = self.props
        return out


def partition_of(tenant: str, lead_id: str, partitions: int) -> int:
    """Stable partition of a lead: crc32 of ``tenant`` and ``lead_id``, mod P.

    crc32 is stable across processes and Python versions (``hash()`` is salted),
    cheap, and spreads ids well enough for partitioning.
    """
    return zlib.crc32(f"{tenant}\x1f{lead_id}".encode()) % partitions
