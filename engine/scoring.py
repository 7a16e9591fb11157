"""From a feature vector to what an agent sees: score, bucket, tier and reasons.

Pure functions, no I/O. The score is a probability x 100. A transparent points
prior (seeds 000 and 003: points per signal, capped; Platt-calibrated on the labels)
and the online model are blended, in log-odds, by the evidence of recent labels:

    logit(p) = (1 - w) * logit(p_prior) + w * logit(p_model)

where ``w`` comes from both scorers' prequential log loss on the last
``scoring.evidence_window`` labels (``engine.model.Evidence``): the model takes over
when it predicts better, not after a label count. The blend is in log-odds because
both scorers are sums of per-signal log-odds: the served log-odds is then exactly
``(1 - w)`` times the prior's points plus ``w`` times the model's contributions, the
sum the reasons (``engine/reasons.py``) are the largest terms of.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from itertools import compress
from operator import itemgetter
from typing import Any

from engine.probability import log_odds_blend, sigmoid
from engine.reasons import explain, low_reasons
from engine.settings import Settings

__all__ = [
    "Score",
    "assess",
    "blend",
    "bucket_of",
    "bucket_rule",
    "log_odds_blend",
    "prior",
    "tier_of",
]

_HAND_RAISES = ("inquiries", "showing_requests", "valuation_requests", "call_requests")
_ENGAGED = _HAND_RAISES + ("saves", "replies", "saved_searches", "email_clicks")


@dataclass(slots=True)
class Score:
    """The scored moment of one lead. Read-only by convention (not ``frozen``: one or two
    are made per event, and a frozen dataclass's ``__init__`` costs ~2x a plain one)."""

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
    bucket_by: str = "score"  # what set the bucket: score, hand_raise, clean_up or lost
    codes: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # reasons, concerns as groups

    def with_codes(
        self,
        codes: tuple[tuple[str, ...], tuple[str, ...]],
        words: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
    ) -> Score:
        """This score with its reason codes and, given, their words (reasons, concerns):
        ``dataclasses.replace`` written out (a third of its cost; explained scores)."""
        reasons, concerns = (self.reasons, self.concerns) if words is None else words
        return Score(
            self.score, self.probability, self.bucket, self.tier, reasons, self.model_weight,
            self.prior_probability, self.model_probability, concerns,
            self.raw_prior_probability, self.bucket_by, codes,
        )  # fmt: skip


_PLAIN, _REPEAT, _BROAD = 0, 1, 2
_POSITIVE = (0.0).__lt__  # x > 0, the engaged test, without a generator
_ZEROS = (0,) * len(_HAND_RAISES)  # get's default for each hand-raise count
_EVERY_CHANNEL = frozenset({"email", "sms", "call"})  # all blocked: clean-up (P5)


@dataclass(frozen=True, slots=True)
class _PriorPlan:
    """A points table as the prior reads it (made once per table, not per event)."""

    table: Mapping[str, Any]
    signals: tuple[tuple[str, float, float, int], ...]  # (signal, points each, cap, kind)
    read: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # each signal's feature, at once
    engaged: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # the _ENGAGED features


#: id(points table) -> its plan
_PRIOR_PLANS: dict[int, _PriorPlan] = {}


def _getter(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """``itemgetter(*names)`` that always gives a tuple (KeyError when one is missing)."""
    if len(names) == 1:
        return lambda f: (f[names[0]],)
    return itemgetter(*names)


def _prior_plan(points: Mapping[str, Any]) -> _PriorPlan:
    """(signal, points each, cap, how its value is read) in the table's order."""
    held = _PRIOR_PLANS.get(id(points))
    if held is not None and held.table is points:
        return held
    kinds = {"repeat_views_48h": _REPEAT, "views_30d_broad": _BROAD}
    signals = tuple(
        (name, each, cap, kinds.get(name, _PLAIN)) for name, (each, cap) in points.items()
    )
    reads = tuple("views_30d" if kind == _BROAD else name for name, _, _, kind in signals)
    plan = _PriorPlan(points, signals, _getter(reads) if reads else lambda f: (), _getter(_ENGAGED))
    if len(_PRIOR_PLANS) >= 64:  # settings made over and over (tests): stay bounded
        _PRIOR_PLANS.clear()
    _PRIOR_PLANS[id(points)] = plan
    return plan


def _signal_points(features: Mapping[str, Any], plan: _PriorPlan) -> dict[str, float]:
    """Each signal's points, in the table's order, for the signals not at 0.

    A signal's value is its feature, except ``repeat_views_48h`` (the first view is not a
    repeat) and ``views_30d_broad`` (30-day views of a lead that has not engaged). The
    per-event hot path: the features are read at once and only the signals whose feature
    is not 0 are worked out (a lead has about a third of them); a feature vector that
    lacks one (read as 0) takes the signal-by-signal loop."""
    points: dict[str, float] = {}
    nonzero: Iterator[int]
    try:
        values = plan.read(features)
        nonzero = compress(range(len(values)), values)
    except KeyError:
        values, nonzero = None, iter(range(len(plan.signals)))
    get = features.get
    for i in nonzero:
        name, each, cap, kind = plan.signals[i]
        if values is None:
            value = float(get("views_30d" if kind == _BROAD else name, 0.0))
        else:
            value = float(values[i])
        if kind == _REPEAT:  # the first view is not a repeat
            value -= 1.0
            value = value if value > 0.0 else 0.0  # max(0.0, value), without the call
        elif kind == _BROAD and _engaged(features, plan):
            value = 0.0
        if value:
            pts = each * value
            # max(pts, cap) / min(pts, cap) without the calls: pts unless cap is beyond it
            if cap < 0:
                points[name] = cap if cap > pts else pts
            else:
                points[name] = cap if cap < pts else pts
    return points


def _engaged(features: Mapping[str, Any], plan: _PriorPlan) -> bool:
    """Whether the lead has engaged beyond views (any ``_ENGAGED`` count above 0)."""
    try:
        return any(map(_POSITIVE, map(float, plan.engaged(features))))
    except KeyError:
        return any(float(features.get(k, 0)) > 0 for k in _ENGAGED)


def prior(features: Mapping[str, Any], settings: Settings) -> tuple[float, dict[str, float]]:
    """The points prior: (probability, points per signal). Transparent by design.

    A signal's value is its feature, except ``repeat_views_48h`` (the first view is not a
    repeat) and ``views_30d_broad`` (30-day views of a lead that has not engaged)."""
    sc = settings.scoring
    points = _signal_points(features, _prior_plan(sc.points))
    tl = str(features.get("timeline", "unknown"))
    if sc.timeline_points.get(tl, 0):  # type: ignore[call-overload]
        points["timeline"] = sc.timeline_points[tl]  # type: ignore[index]
    src = str(features.get("source", "unknown"))
    if sc.source_points.get(src, 0):
        points["source"] = sc.source_points[src]
    logit = sc.prior_intercept + sc.prior_logit_per_point * sum(points.values())
    return sigmoid(logit), points


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
    if any(map(_POSITIVE, map(float, map(features.get, _HAND_RAISES, _ZEROS)))):
        return "hot"  # a specific, high-intent request at entry (seed 003)
    source = str(features.get("source", "unknown"))
    if source in t.hot_sources:
        return "hot"
    if source in t.warm_sources:
        return "warm"
    return "long-term"


def bucket_rule(score: int, context: Mapping[str, Any], settings: Settings) -> tuple[str, str]:
    """(bucket, what set it): ``score``, ``hand_raise`` (seed 000's "call today" rule) or
    ``clean_up`` (P5: invalid, not interested, unreachable)."""
    if context.get("not_interested") or context.get("invalid_contact"):
        return "P5", "clean_up"
    blocked = context.get("blocked", ())
    if blocked and _EVERY_CHANNEL <= set(blocked):
        return "P5", "clean_up"
    b = settings.buckets
    hand_ts = float(context.get("last_hand_ts") or 0.0)
    recent_hand = (
        hand_ts and float(context.get("last_ts") or 0.0) - hand_ts <= b.hand_raise_p1_h * 3600
    )
    if score >= b.p1:
        return "P1", "score"
    if recent_hand:
        return "P1", "hand_raise"
    if score >= b.p2:
        return "P2", "score"
    if score >= b.p3:
        return "P3", "score"
    return "P4", "score"


def bucket_of(score: int, context: Mapping[str, Any], settings: Settings) -> str:
    """P1-P4 by score (seed 000); P5 for clean-up: invalid, not interested, unreachable.

    Seed 000's P1 is "call today": a score of 90+ *or* a showing request, valuation
    request or direct question. A calibrated probability rarely reaches 0.9, so a
    hand-raise within ``buckets.hand_raise_p1_h`` of the lead's latest event is P1
    whatever the score (:func:`bucket_rule` says which rule decided).
    """
    return bucket_rule(score, context, settings)[0]


def assess(
    features: Mapping[str, Any],
    context: Mapping[str, Any],
    settings: Settings,
    model_probability: float | None,
    model_weight: float,
    calibrate_prior: Callable[[float], float] | None = None,
    raw_prior: float | None = None,
    outcome: str = "",
    calibrate: Callable[[float], float] | None = None,
) -> Score:
    """Score, bucket and tier without reasons (the per-event hot path; see :func:`blend`).

    ``model_weight`` is how much the served score follows the model: the evidence of
    prior and model on recent labels (``engine.model.Evidence``); 0 while the model is
    not ready. ``calibrate_prior`` maps the raw points prior to a calibrated probability
    (Platt scaling learned from the labels), ``calibrate`` the blend (a monotone map
    learned from the labels, ``engine.model.ScoreCalibration``). A lead marked lost keeps
    its score but is never above P4 (it is not someone to call today).
    """
    if raw_prior is None:
        raw_prior, _ = prior(features, settings)
    p_prior = calibrate_prior(raw_prior) if calibrate_prior else raw_prior
    w = model_weight if model_probability is not None else 0.0
    p = log_odds_blend(p_prior, model_probability, w)
    if calibrate is not None:
        p = calibrate(p)
    score = int(round(p * 100))
    bucket, by = bucket_rule(score, context, settings)
    if outcome == "lost" and bucket != "P5":
        bucket, by = "P4", "lost"
    # positional (once an event: keywords cost ~2.7x the call): score, probability,
    # bucket, tier, reasons, model_weight, prior_probability, model_probability,
    # concerns, raw_prior_probability, bucket_by
    return Score(
        score, round(p, 6), bucket, tier_of(features, settings), (), round(w, 4),
        round(p_prior, 6), None if model_probability is None else round(model_probability, 6),
        (), round(raw_prior, 6), by,
    )  # fmt: skip


def blend(
    features: Mapping[str, Any],
    context: Mapping[str, Any],
    settings: Settings,
    model_probability: float | None,
    model_contributions: Mapping[str, float],
    model_weight: float,
    outcome: str = "",
    outcome_ts: float = 0.0,
) -> Score:
    """:func:`assess` and its reasons together: a complete score (``engine/reasons.py``)."""
    score = assess(features, context, settings, model_probability, model_weight,
                   outcome=outcome)  # fmt: skip
    _, points = prior(features, settings)
    low = low_reasons(context, outcome, outcome_ts, settings)
    pros, cons = explain(
        features, context, settings, points, model_contributions, score.model_weight, low
    )
    return replace(score, reasons=pros, concerns=cons)
