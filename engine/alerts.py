"""Alert rules: when a scored event deserves an agent's attention. Pure, no I/O.

Triggers (all thresholds in ``[alerts]``):

- ``hand_raise:<type>``  an inquiry, showing, valuation or call request; always alerts
  (deduplicated by the event itself), cooldown does not apply: a lead asking for
  something must never wait for a timer.
- ``entered:P1|P2``      the score crosses into a configured bucket from below.
- ``jump``               the score rose >= ``jump_points`` above its lowest value in the
  last ``jump_window_h`` (event time) and landed at >= ``jump_min_score``.
- ``reactivation``       the lead is active again after >= 30 silent days.

A visitor-level lead (an id starting with ``~``: anonymous browsing, or a tracker-key
event for a lead no server key created or bound) is scored but never alerted: a public
tracker key cannot page an agent. Non-hand-raise triggers respect a per-lead cooldown
in event time. One event makes
at most one alert, listing every trigger, so the alert id is a hash of tenant, lead
and triggering event id: stable across replays, so receivers can deduplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from engine.events import Event
from engine.scoring import Score
from engine.settings import AlertSettings, SlaRule

__all__ = ["AlertState", "Decision", "evaluate", "first_touch", "sla_deadline", "sla_rule_for"]

_BUCKET_RANK = {"P1": 1, "P2": 2, "P3": 3, "P4": 4, "P5": 5, "": 9}


@dataclass(slots=True)
class AlertState:
    """What the rules remember per lead (kept in the lead's score hash). Read-only by
    convention (not ``frozen``: one is made per event, and a frozen ``__init__`` is slower)."""

    score: int = 0
    bucket: str = ""
    last_alert_ts: float = 0.0
    jump_base: float = 0.0
    jump_base_ts: float = 0.0

    @classmethod
    def from_hash(cls, h: Mapping[str, str]) -> AlertState:
        def f(k: str) -> float:
            return float(h.get(k) or 0.0)

        return cls(
            int(f("score")),
            h.get("bucket", ""),
            f("last_alert_ts"),
            f("jump_base"),
            f("jump_base_ts"),
        )


@dataclass(slots=True)
class Decision:
    """The rules' verdict for one event: triggers (empty: no alert) and the next state
    (read-only by convention, like :class:`AlertState`)."""

    triggers: tuple[str, ...]
    alert_id: str
    state: AlertState
    jump_from: int | None = None  # the score a ``jump`` is measured from (the window's low)


def _alert_id(tenant: str, lead: str, key: str) -> str:
    return hashlib.blake2b(f"{tenant}\x1f{lead}\x1f{key}".encode(), digest_size=10).hexdigest()


def evaluate(
    event: Event, score: Score, prev: AlertState, context: Mapping[str, Any], s: AlertSettings
) -> Decision:
    """Apply the rules to one scored event; returns triggers and the updated state."""
    ts = event.ts
    window = s.jump_window_h * 3600.0
    if not prev.bucket:  # first score of this lead: nothing to jump from
        base, base_ts = float(score.score), ts
    elif ts - prev.jump_base_ts > window:  # window over: restart from the last score
        base, base_ts = prev.score, ts
    else:
        base, base_ts = prev.jump_base, prev.jump_base_ts
    hand = event.type in s.hand_raise_types
    triggers: list[str] = []
    if event.lead_id.startswith("~"):  # a visitor-level lead: scored, never alerted
        return Decision((), "", _next_state(prev, score, base, base_ts, ts, ()))
    if hand:
        triggers.append(f"hand_raise:{event.type}")
    cooling = prev.last_alert_ts and ts - prev.last_alert_ts < s.cooldown_min * 60.0
    if score.bucket != "P5" and not (cooling and not hand):
        entered = score.bucket in s.enter_buckets and _BUCKET_RANK[score.bucket] < _BUCKET_RANK.get(
            prev.bucket, 9
        )
        if entered:
            triggers.append(f"entered:{score.bucket}")
        if prev.bucket and score.score - base >= s.jump_points and score.score >= s.jump_min_score:
            triggers.append("jump")
        if context.get("reactivated_now"):
            triggers.append("reactivation")
    state = _next_state(prev, score, base, base_ts, ts, tuple(triggers))
    alert_id = _alert_id(event.tenant, event.lead_id, event.event_id) if triggers else ""
    jump_from = int(base) if "jump" in triggers else None
    return Decision(tuple(triggers), alert_id, state, jump_from)


def _next_state(
    prev: AlertState,
    score: Score,
    base: float,
    base_ts: float,
    ts: float,
    triggers: tuple[str, ...],
) -> AlertState:
    if "jump" in triggers:  # a reported jump starts a new window from here
        base, base_ts = score.score, ts
    return AlertState(
        score.score,
        score.bucket,
        ts if triggers else prev.last_alert_ts,
        float(min(base, score.score)),
        base_ts,
    )


def sla_rule_for(event: Event, source: str, s: AlertSettings) -> tuple[str, SlaRule]:
    """The SLA row of seed 002: by request type first, then by the lead's source."""
    for key in (event.type, source):
        if key in s.sla:
            return key, s.sla[key]
    return "default", s.sla["default"]


def sla_deadline(ts: float, rule: SlaRule, s: AlertSettings) -> tuple[float, bool]:
    """(deadline epoch seconds, after_hours) for a lead arriving at ``ts``, tenant-local."""
    tz = ZoneInfo(s.timezone)
    local = datetime.fromtimestamp(ts, tz)
    open_ = local.replace(hour=s.business_open_h, minute=0, second=0, microsecond=0)
    if s.business_close_h == 24:
        close = open_.replace(hour=0) + timedelta(days=1)
    else:
        close = local.replace(hour=s.business_close_h, minute=0, second=0, microsecond=0)
    if open_ <= local < close:
        return ts + rule.minutes * 60.0, False
    if rule.after_hours_minutes is not None:
        return ts + rule.after_hours_minutes * 60.0, True
    morning = local.replace(hour=rule.next_morning_h or 0, minute=0, second=0, microsecond=0)
    if morning <= local:
        morning = (local + timedelta(days=1)).replace(
            hour=rule.next_morning_h or 0, minute=0, second=0, microsecond=0
        )
    return morning.timestamp(), True


def _quiet(ts: float, s: AlertSettings) -> bool:
    hour = datetime.fromtimestamp(ts, ZoneInfo(s.timezone)).hour
    if s.quiet_start_h > s.quiet_end_h:
        return hour >= s.quiet_start_h or hour < s.quiet_end_h
    return s.quiet_start_h <= hour < s.quiet_end_h


def first_touch(
    ts: float, rule: SlaRule, blocked: tuple[str, ...], s: AlertSettings, repeat_viewer: bool
) -> str:
    """The recommended first touch: the SLA row's order, minus blocked channels and quiet hours.

    A lead who asked for something or keeps returning to one home gets a call first
    (seed 000); an opted-out channel is never recommended; in quiet hours no call or
    text is recommended. ``"none"`` when every channel is closed.
    """
    order = list(rule.first_touch)
    if repeat_viewer and "call" in order:
        order.remove("call")
        order.insert(0, "call")
    if "email" not in order:
        order.append("email")
    quiet = _quiet(ts, s)
    for channel in order:
        if channel in blocked or (quiet and channel in ("call", "sms")):
            continue
        return channel
    return "none"
