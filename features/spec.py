"""The feature rules, defined once: which event moves which part of a lead's state.

Everything a lead's feature state does with an event is named here and applied by
:mod:`features.state` (pure Python, no I/O). The engine, the gateway and delivery
import these tables; there is no second copy of a rule (no Lua script computes
features).

- :data:`COUNTERS`: event type -> the lifetime counter it increments.
- :data:`HAND_RAISES`: event types that set ``last_hand_ts``.
- :data:`AREA_TYPES`: event types whose ``area`` counts toward ``distinct_areas_30d``.
- :data:`CONSENT`: event types that block contact channels, and the channels blocked
  when the event names no (non-web) channel; a ``reply`` whose text is a STOP word
  blocks its channel (``sms`` by default).
- Windows, reactivation and the bounds of every set come from ``[features]`` in the
  settings, as a :class:`FeatureSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.events import HAND_RAISE_TYPES, Event
from engine.settings import FeatureSettings
from features.definitions import COUNTERS, profile_prop

__all__ = [
    "AREA_TYPES",
    "CONSENT",
    "COUNTERS",
    "FLAGS",
    "HAND_RAISES",
    "MAX_CONTACTS",
    "STOP_WORDS",
    "FeatureSpec",
    "blocked_channels",
    "is_stop",
]

HAND_RAISES: frozenset[str] = frozenset(HAND_RAISE_TYPES)
AREA_TYPES: frozenset[str] = frozenset({"property_view", "property_save", "search", "saved_search"})
#: event type -> channels blocked when the event carries no channel (or ``web``)
CONSENT: dict[str, tuple[str, ...]] = {
    "unsubscribe": ("email",),
    "bounce": ("email",),
    "opt_out": ("email", "sms", "call"),
    "invalid_contact": ("call", "sms"),
}
#: event type -> the sticky flag it sets
FLAGS: dict[str, str] = {"invalid_contact": "invalid_contact", "not_interested": "not_interested"}
#: event types that count as an unanswered agent touch (until the lead's next reply)
CONTACTS: frozenset[str] = frozenset({"agent_contact", "call_missed"})
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
#: unanswered touches remembered per lead (the feature saturates long before this)
MAX_CONTACTS = 64
_HOUR, _DAY = 3600.0, 86_400.0


def is_stop(event: Event) -> bool:
    """A reply whose text is STOP (or STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT)."""
    text = event.props.get("text") if event.type == "reply" else None
    return isinstance(text, str) and text.strip().upper() in STOP_WORDS


def blocked_channels(event: Event) -> tuple[str, ...]:
    """The contact channels this event closes (the one consent rule: the engine's feature
    state and delivery's consent book both apply it)."""
    if event.type == "reply":
        return (event.channel or "sms",) if is_stop(event) else ()
    defaults = CONSENT.get(event.type)
    if defaults is None:
        return ()
    return (event.channel,) if event.channel not in ("", "web") else defaults


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """The configured windows and bounds (seconds, counts) the state applies."""

    w_short: float
    w_mid: float
    w_long: float
    w_repeat: float
    w_distinct: float
    silence: float  # reactivation: a gap at least this long
    flag_window: float  # ... flags the lead as reactivated this long
    horizon: float  # events older than the newest by more than this are late
    max_members: int  # cap on each window set
    dedup_ids: int  # event-id hashes remembered per lead
    idle_s: int  # a lead's record expires after this long without a write
    profile: tuple[str, ...] = ()  # declared profile fields ("props.origin")
    reply_tau: float = 72 * _HOUR  # reply recency falls to 1/e in three days

    @classmethod
    def from_settings(cls, s: FeatureSettings) -> FeatureSpec:
        w = s.view_windows_h
        return cls(
            w_short=w[0] * _HOUR, w_mid=w[1] * _HOUR, w_long=w[2] * _HOUR,
            w_repeat=s.repeat_window_h * _HOUR, w_distinct=s.distinct_window_h * _HOUR,
            silence=s.reactivation_silence_d * _DAY, flag_window=s.reactivation_flag_d * _DAY,
            horizon=s.dedup_horizon_h * _HOUR, max_members=s.max_window_members,
            dedup_ids=s.dedup_ids, idle_s=int(s.idle_expire_d * _DAY), profile=s.profile,
        )  # fmt: skip

    @property
    def view_keep(self) -> float:
        """How long a property view stays in the lead's view window set."""
        return max(self.w_long, self.w_repeat)

    @property
    def prop_keys(self) -> tuple[str, ...]:
        """The ``props`` key each declared profile field reads."""
        return tuple(profile_prop(name) or name for name in self.profile)
