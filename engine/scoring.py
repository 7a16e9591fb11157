"""From a feature vector to what an agent sees: score, bucket, tier and reasons.

Pure functions, no I/O. The score is a probability x 100. Until the online model
has seen ``scoring.min_labels`` labels, a transparent points prior (seeds 000 and
003: points per signal, capped) carries it, and the two are blended linearly:

    w = min(1, labels_seen / min_labels)
    p = (1 - w) * p_prior + w * p_model

so the hand-over is smooth and documented, never a jump on one label.
Reasons are the largest contributions in log-odds from the same blend, written
the way an agent talks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from engine.settings import Settings
from features.definitions import CATEGORICAL

__all__ = [
    "PRIOR_INPUT",
    "prior_logit",
    "Score",
    "assess",
    "blend",
    "bucket_of",
    "explain",
    "prior",
    "reason_text",
    "tier_of",
]

_HAND_RAISES = ("inquiries", "showing_requests", "valuation_requests", "call_requests")
_ENGAGED = _HAND_RAISES + ("saves", "replies", "saved_searches", "email_clicks")
#: The model input that carries the points prior's log-odds (the model learns how far to
#: trust the seeds' rules, and can only add to them).
PRIOR_INPUT = "prior_logit"


def prior_logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


_SAME_REASON = {"replies": "reply_recency", "views_24h": "views_7d", "views_30d": "views_7d"}
_CHANNEL_WORDS = {"sms": "text", "email": "email", "call": "phone", "chat": "chat", "web": "web"}
_TIMELINE_WORDS = {
    "0-3m": "plans to move within 3 months",
    "3-6m": "plans to move in 3-6 months",
    "6-18m": "plans to move in 6-18 months",
    "18m+": "plans to move in 18+ months",
    "unknown": "no timeline given yet",
}
_SOURCE_WORDS = {
    "referral": "came by referral",
    "valuation_funnel": "came through a home-value request",
    "listing_ad": "came from a listing ad",
    "portal": "came from a portal inquiry",
    "open_house": "met at an open house",
    "database": "is a past contact",
    "giveaway": "came from a giveaway",
    "social": "came from social media",
    "website": "signed up on the website",
    "chat": "started a chat",
}


@dataclass(frozen=True, slots=True)
class Score:
    """The scored moment of one lead."""

    score: int
    probability: float
    bucket: str
    tier: str
    reasons: tuple[str, ...]
    model_weight: float
    prior_probability: float
    model_probability: float | None
    concerns: tuple[str, ...] = ()  # the largest contributions *against* the lead
    raw_prior_probability: float | None = None  # the points prior before calibration


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


def _signal_value(name: str, f: Mapping[str, Any]) -> float:
    if name == "repeat_views_48h":  # the first view is not a repeat
        return max(0.0, float(f.get(name, 0.0)) - 1.0)
    if name == "views_30d_broad":
        engaged = any(float(f.get(k, 0)) > 0 for k in _ENGAGED)
        return 0.0 if engaged else float(f.get("views_30d", 0))
    return float(f.get(name, 0.0))


def prior(features: Mapping[str, Any], settings: Settings) -> tuple[float, dict[str, float]]:
    """The points prior: (probability, points per signal). Transparent by design."""
    sc = settings.scoring
    points: dict[str, float] = {}
    for name, (each, cap) in sc.points.items():
        value = _signal_value(name, features)
        if value:
            pts = each * value
            points[name] = max(pts, cap) if cap < 0 else min(pts, cap)
    tl = str(features.get("timeline", "unknown"))
    if sc.timeline_points.get(tl, 0):  # type: ignore[call-overload]
        points["timeline"] = sc.timeline_points[tl]  # type: ignore[index]
    src = str(features.get("source", "unknown"))
    if sc.source_points.get(src, 0):
        points["source"] = sc.source_points[src]
    logit = sc.prior_intercept + sc.prior_logit_per_point * sum(points.values())
    return _sigmoid(logit), points


def tier_of(features: Mapping[str, Any], settings: Settings) -> str:
    """hot / warm / long-term (seed 003): a stated timeline overrides the source default."""
    t = settings.tiers
    timeline = str(features.get("timeline", "unknown"))
    if timeline in t.hot_timelines:
        return "hot"
    if timeline in t.warm_timelines:
        return "warm"
    if timeline in t.long_term_timelines:
        return "long-term"
    if any(float(features.get(k, 0)) > 0 for k in _HAND_RAISES):
        return "hot"  # a specific, high-intent request at entry (seed 003)
    source = str(features.get("source", "unknown"))
    if source in t.hot_sources:
        return "hot"
    if source in t.warm_sources:
        return "warm"
    return "long-term"


def bucket_of(score: int, context: Mapping[str, Any], settings: Settings) -> str:
    """P1-P4 by score (seed 000); P5 for clean-up: invalid, not interested, unreachable.

    Seed 000's P1 is "call today": a score of 90+ *or* a showing request, valuation
    request or direct question. A calibrated probability rarely reaches 0.9, so a
    hand-raise within ``buckets.hand_raise_p1_h`` of the lead's latest event is P1
    whatever the score.
    """
    blocked = set(context.get("blocked", ()))
    if context.get("not_interested") or context.get("invalid_contact"):
        return "P5"
    if {"email", "sms", "call"} <= blocked:
        return "P5"
    b = settings.buckets
    hand_ts = float(context.get("last_hand_ts") or 0.0)
    if hand_ts and float(context.get("last_ts") or 0.0) - hand_ts <= b.hand_raise_p1_h * 3600:
        return "P1"
    if score >= b.p1:
        return "P1"
    if score >= b.p2:
        return "P2"
    if score >= b.p3:
        return "P3"
    return "P4"


def _ago(hours: float) -> str:
    if hours < 1:
        return "within the hour"
    if hours < 48:
        return f"{round(hours)} h ago"
    return f"{round(hours / 24)} days ago"


def reason_text(signal: str, f: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    """One contribution in the words an agent uses."""
    n = int(round(float(f.get(signal, 0)))) if signal not in CATEGORICAL else 0
    prop = context.get("repeat_property") or context.get("last_property") or "one home"
    s = "" if n == 1 else "s"
    texts = {
        "views_24h": f"viewed {n} home{s} today",
        "views_7d": f"viewed {n} home{s} this week",
        "views_30d": f"viewed {n} home{s} this month",
        "repeat_views_48h": f"viewed {prop} {n} times in 2 days",
        "distinct_properties_30d": f"looked at {n} different homes this month",
        "distinct_areas_30d": f"searching in {n} area{s}",
        "saves": f"saved {n} home{s}",
        "unsaves": f"removed {n} saved home{s}",
        "searches": f"ran {n} search{'' if n == 1 else 'es'}",
        "saved_searches": "saved a search",
        "shares": f"shared {n} listing{s}",
        "mortgage_calcs": "used the mortgage calculator",
        "valuation_views": "looked up home values",
        "inquiries": "asked a question about a home",
        "showing_requests": "asked to see a home",
        "valuation_requests": "requested a home valuation",
        "call_requests": "asked for a call",
        "email_opens": f"opened {n} email{s}",
        "email_clicks": f"clicked {n} email link{s}",
        "replies": f"replied {n} time{s}",
        "dwell_min": "spent a long time on listings",
        "days_silent_before": "returned after a quiet spell",
        "unsubscribes": "unsubscribed from email",
        "bounces": "email address bounced",
        "agent_contacts_unanswered": f"no answer to {n} agent contact{s}",
        "views_30d_broad": "browsing many homes without engaging",
        "timeline": _TIMELINE_WORDS.get(str(f.get("timeline")), "stated a timeline"),
        "source": _SOURCE_WORDS.get(str(f.get("source")), "lead source"),
    }
    if signal == "reply_recency":
        r = float(f.get("reply_recency", 0))
        hours = -72.0 * math.log(r) if r > 0 else 999.0
        channel = str(context.get("last_reply_channel"))
        if channel == "call":
            return f"answered a call {_ago(hours)}"
        return f"replied by {_CHANNEL_WORDS.get(channel, 'message')} {_ago(hours)}"
    if signal == "reactivated":
        return f"active again after {round(float(f.get('days_silent_before', 30)))} days away"
    if signal == "opt_outs":
        blocked = ", ".join(_CHANNEL_WORDS.get(c, c) for c in context.get("blocked", ()))
        return f"opted out of {blocked or 'contact'}"
    return texts.get(signal, signal.replace("_", " "))


def assess(
    features: Mapping[str, Any],
    context: Mapping[str, Any],
    settings: Settings,
    model_probability: float | None,
    labels_seen: int,
    calibrate_prior: Callable[[float], float] | None = None,
    raw_prior: float | None = None,
) -> Score:
    """Score, bucket and tier without reasons (the per-event hot path; see :func:`explain`).

    ``calibrate_prior`` maps the raw points prior to a calibrated probability (Platt
    scaling learned from the labels); without it the raw prior is used. ``raw_prior``
    saves recomputing :func:`prior` when the caller already has it.
    """
    if raw_prior is None:
        raw_prior, _ = prior(features, settings)
    p_prior = calibrate_prior(raw_prior) if calibrate_prior else raw_prior
    w = _weight(model_probability, labels_seen, settings)
    p = (1 - w) * p_prior + w * (model_probability if model_probability is not None else 0.0)
    score = int(round(p * 100))
    return Score(
        score=score,
        probability=round(p, 6),
        bucket=bucket_of(score, context, settings),
        tier=tier_of(features, settings),
        reasons=(),
        model_weight=round(w, 4),
        prior_probability=round(p_prior, 6),
        model_probability=None if model_probability is None else round(model_probability, 6),
        raw_prior_probability=round(raw_prior, 6),
    )


def explain(
    features: Mapping[str, Any],
    context: Mapping[str, Any],
    settings: Settings,
    model_contributions: Mapping[str, float],
    model_weight: float,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(reasons for, concerns against): the largest contributions in log-odds of the same
    blend :func:`assess` scored, ``scoring.reasons`` of each at most."""
    sc = settings.scoring
    _, points = prior(features, settings)
    w = model_weight
    contrib: dict[str, float] = {
        k: (1 - w) * v * sc.prior_logit_per_point for k, v in points.items()
    }
    total_points = sum(points.values())
    for name, c in model_contributions.items():
        if name == PRIOR_INPUT:  # the model's use of the prior goes back to its signals
            for k, v in points.items():
                if total_points:
                    contrib[k] = contrib.get(k, 0.0) + w * c * v / total_points
            continue
        base = name.split("=", 1)[0]
        contrib[base] = contrib.get(base, 0.0) + w * c
    for part, whole in _SAME_REASON.items():  # one sentence per fact, not two
        if part in contrib and whole in contrib:
            contrib[whole] += contrib.pop(part)
    pros = sorted((kv for kv in contrib.items() if kv[1] > 1e-6), key=lambda kv: (-kv[1], kv[0]))
    cons = sorted((kv for kv in contrib.items() if kv[1] < -1e-6), key=lambda kv: (kv[1], kv[0]))
    return (
        tuple(reason_text(k, features, context) for k, _ in pros[: sc.reasons]),
        tuple(reason_text(k, features, context) for k, _ in cons[: sc.reasons]),
    )


def _weight(model_probability: float | None, labels_seen: int, settings: Settings) -> float:
    if model_probability is None:
        return 0.0
    return min(1.0, labels_seen / settings.scoring.min_labels)


def blend(
    features: Mapping[str, Any],
    context: Mapping[str, Any],
    settings: Settings,
    model_probability: float | None,
    model_contributions: Mapping[str, float],
    labels_seen: int,
) -> Score:
    """:func:`assess` and :func:`explain` together: a complete score with its reasons."""
    score = assess(features, context, settings, model_probability, labels_seen)
    pros, cons = explain(features, context, settings, model_contributions, score.model_weight)
    return replace(score, reasons=pros, concerns=cons)
