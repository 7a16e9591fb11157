"""Consent gate: per lead and channel, whether it may be used and *why not*.

Derived from the events the IDX site and the messaging tools append: ``opt_out``,
``unsubscribe``, a STOP reply (a ``reply`` whose ``props.text`` is STOP or a synonym),
``bounce`` and ``invalid_contact``. The channel each one blocks is the one rule of
``features/spec.py`` (:func:`features.spec.blocked_channels`), which the engine's
feature state applies too for the alert's ``blocked_channels``; this module adds the
reason an agent can read, e.g.
"replied STOP to a text on 2025-05-02 10:03 EDT" (in the tenant's time zone when
read through :func:`blocked_reasons` with ``tz``). The first block of a channel
is the one kept: consent is not re-granted by later events.

Pure functions (:func:`blocks_from`, :func:`blocked_reasons`) and a small Redis
book (:class:`ConsentBook`) that stores them per lead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from engine.delivery.keys import DeliveryKeys
from engine.events import Event
from features.spec import blocked_channels, is_stop

__all__ = ["Block", "ConsentBook", "blocked_reasons", "blocks_from", "is_stop", "words"]

WORDS = {"sms": "text", "call": "phone calls", "email": "email", "chat": "chat"}


@dataclass(frozen=True, slots=True)
class Block:
    """One channel closed by one event, with the words an agent reads."""

    channel: str
    why: str  # opt_out | unsubscribe | stop_reply | bounce | invalid_contact
    event_id: str
    ts: float
    text: str


def _when(ts: float, tz: str = "UTC") -> str:
    """The date and time in the tenant's zone: "2025-06-03 14:00 EDT"."""
    try:
        zone: Any = ZoneInfo(tz) if tz != "UTC" else UTC
    except (ValueError, KeyError, OSError):
        zone = UTC
    when = datetime.fromtimestamp(ts, zone)
    return f"{when:%Y-%m-%d %H:%M} {when.tzname()}"


def blocks_from(event: Event) -> list[Block]:
    """The channels this event closes (empty for any other event)."""
    channels = blocked_channels(event)
    if event.type == "reply":
        return [Block(ch, "stop_reply", event.event_id, event.ts, _text("stop_reply", ch, event))
                for ch in channels]  # fmt: skip
    return [
        Block(ch, event.type, event.event_id, event.ts, _text(event.type, ch, event))
        for ch in channels
    ]


def _text(why: str, channel: str, event: Event) -> str:
    return words(why, channel, event.ts)


def words(why: str, channel: str, ts: float, tz: str = "UTC") -> str:
    """Why a channel is blocked, in words, with the date and time in zone ``tz``."""
    word, when = WORDS.get(channel, channel), _when(ts, tz)
    if why == "stop_reply":
        return f"replied STOP to a {'text' if channel == 'sms' else word} on {when}"
    if why == "opt_out":
        return f"opted out of {word} on {when}"
    if why == "unsubscribe":
        return f"unsubscribed from {word} on {when}"
    if why == "bounce":
        return f"{word} bounced on {when}"
    return f"{word} contact details reported invalid on {when}"


def blocked_reasons(
    engine_blocked: Iterable[str], recorded: Mapping[str, Mapping[str, Any]], tz: str = "UTC"
) -> dict[str, str]:
    """Every blocked channel (the engine's and the recorded ones) -> why, in words, with
    times in the tenant's zone ``tz``."""
    out = {ch: _recorded_words(ch, r, tz) for ch, r in recorded.items()}
    for ch in engine_blocked:
        out.setdefault(ch, f"{WORDS.get(ch, ch)} blocked by an earlier opt-out, bounce or STOP")
    return dict(sorted(out.items()))


def _recorded_words(channel: str, r: Mapping[str, Any], tz: str) -> str:
    ts, why = r.get("ts"), r.get("why")
    if tz != "UTC" and isinstance(ts, int | float) and isinstance(why, str):
        try:
            return words(why, channel, float(ts), tz)
        except (ValueError, OverflowError, OSError):
            pass
    return str(r.get("text", ""))


class ConsentBook:
    """Stores the first block of each channel per lead (idempotent: HSETNX)."""

    def __init__(self, client: Any, keys: DeliveryKeys, ttl_s: int) -> None:
        self._r = client
        self._keys = keys
        self._ttl = ttl_s

    def record(self, events: Iterable[Event], pipe: Any = None) -> int:
        """Record the blocks of these events; returns how many blocks were seen."""
        own = pipe is None
        p = self._r.pipeline(transaction=False) if own else pipe
        n = 0
        for event in events:
            for block in blocks_from(event):
                key = self._keys.consent(event.tenant, event.lead_id)
                p.hsetnx(key, block.channel, json.dumps(asdict(block)))
                p.expire(key, self._ttl)
                n += 1
        if own and n:
            p.execute()
        return n

    def reasons(self, tenant: str, lead: str) -> dict[str, dict[str, Any]]:
        return self.parse(
            cast(dict[bytes, bytes], self._r.hgetall(self._keys.consent(tenant, lead)))
        )

    def prefetch(self, pipe: Any, tenant: str, lead: str) -> None:
        pipe.hgetall(self._keys.consent(tenant, lead))

    @staticmethod
    def parse(raw: dict[bytes, bytes]) -> dict[str, dict[str, Any]]:
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def state(
        self, tenant: str, lead: str, engine_blocked: Iterable[str] = (), tz: str = "UTC"
    ) -> dict[str, Any]:
        """Per channel: allowed or blocked, and why (for the API and the page)."""
        recorded = self.reasons(tenant, lead)
        why = blocked_reasons(engine_blocked, recorded, tz)
        return {
            "lead_id": lead,
            "channels": {
                ch: {"allowed": ch not in why, "why": why.get(ch, "")} for ch in sorted(WORDS)
            },
            "blocked_reasons": why,
        }
