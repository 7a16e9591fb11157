"""Scoring: the points prior, the model hand-over, buckets, tiers, reasons; the model's view."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.probability import P_MAX, P_MIN, clamp
from engine.scoring import Score, assess, blend, bucket_of, log_odds_blend, prior, tier_of
from engine.settings import load_settings
from features.definitions import (
    FEATURE_NAMES,
    NUMERIC,
    RAW_FIELDS,
    model_input,
    parse_reply,
)

S = load_settings(environ={})
NO_CONTEXT: dict[str, Any] = {"blocked": ()}
RANK = {"P1": 1, "P2": 2, "P3": 3, "P4": 4, "P5": 5}


def score(features: dict[str, Any], context: dict[str, Any] | None = None, **kw: Any) -> Score:
    args: dict[str, Any] = {"model_probability": None, "model_contributions": {}, "model_weight": 0}
    args.update(kw)
    return blend(features, context or NO_CONTEXT, S, **args)


def logistic(z: float) -> float:
    return 1 / (1 + math.exp(-z))


# --------------------------------------------------------------------------- seed 000

# Lead A: 20 homes over three months, never replied to anything.
LEAD_A: dict[str, Any] = {
    "views_24h": 0, "views_7d": 1, "views_30d": 7, "distinct_properties_30d": 7,
    "distinct_areas_30d": 4, "replies": 0, "saves": 0, "reply_recency": 0.0,
    "source": "portal", "side": "buyer", "timeline": "unknown",
}  # fmt: skip
# Lead B: three homes in one neighbourhood this week, saved one, replied to a text, asked.
LEAD_B: dict[str, Any] = {
    "views_24h": 1, "views_7d": 3, "views_30d": 3, "distinct_properties_30d": 3,
    "distinct_areas_30d": 1, "saves": 1, "replies": 1, "reply_recency": 0.9, "inquiries": 1,
    "source": "portal", "side": "buyer", "timeline": "unknown",
}  # fmt: skip


def test_seed_000_specific_recent_engagement_beats_broad_browsing() -> None:
    a, b = score(LEAD_A), score(LEAD_B, {"blocked": (), "last_reply_channel": "sms"})
    assert b.score > a.score
    assert b.probability > a.probability
    assert RANK[b.bucket] <= RANK[a.bucket]
    assert a.bucket == "P4"
    assert any(c.endswith("property views this month without saving, asking or replying")
               for c in a.concerns)  # fmt: skip
    assert b.reasons[0].startswith("replied by text")


def test_prior_points_are_transparent_and_capped() -> None:
    p, points = prior(LEAD_B, S)
    # views_7d 3x2, saves 8, inquiries 22, replies 12, reply_recency 0.9x15, portal source 6
    assert points == pytest.approx(
        {
            "views_7d": 6,
            "saves": 8,
            "inquiries": 22,
            "replies": 12,
            "reply_recency": 13.5,
            "source": 6,
        }
    )
    assert p == pytest.approx(logistic(-3.0 + 0.055 * 67.5))
    _, capped = prior({"views_7d": 100, "showing_requests": 5, "opt_outs": 9}, S)
    assert capped == {"views_7d": 16, "showing_requests": 70, "opt_outs": -30}


def test_prior_of_an_empty_lead_is_the_intercept() -> None:
    p, points = prior({}, S)
    assert points == {}
    assert p == pytest.approx(logistic(S.scoring.prior_intercept))


def test_first_view_is_not_a_repeat() -> None:
    assert "repeat_views_48h" not in prior({"repeat_views_48h": 1}, S)[1]
    assert prior({"repeat_views_48h": 3}, S)[1]["repeat_views_48h"] == 16


def test_broad_browsing_penalty_only_without_engagement() -> None:
    assert prior({"views_30d": 7}, S)[1]["views_30d_broad"] == -7
    assert "views_30d_broad" not in prior({"views_30d": 7, "saves": 1}, S)[1]
    assert "views_30d_broad" not in prior({"views_30d": 7, "email_clicks": 2}, S)[1]


class _ReadOneByOne(dict[str, Any]):
    """A feature vector that only answers ``get``: the prior reads it signal by signal."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)


_COUNT = st.one_of(st.just(0), st.just(0.0), st.just(1), st.integers(-2, 60),
                   st.floats(min_value=-50, max_value=500, allow_nan=False))  # fmt: skip


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.fixed_dictionaries({n: _COUNT for n in NUMERIC}),
    st.sampled_from(["0-3m", "3-6m", "18m+", "unknown", ""]),
    st.sampled_from(["referral", "giveaway", "portal", "unknown", "nowhere"]),
)
def test_prior_of_a_whole_vector_reads_as_signal_by_signal(
    counts: dict[str, Any], timeline: str, source: str
) -> None:
    """Read at once (only signals not at 0 worked out) or one by one: the same floats,
    the same points in the same order."""
    f = {**counts, "timeline": timeline, "source": source}
    p, points = prior(f, S)
    p_slow, points_slow = prior(_ReadOneByOne(f), S)
    assert p == p_slow
    assert list(points.items()) == list(points_slow.items())


def test_repeat_and_broad_rules_on_a_whole_vector() -> None:
    whole = dict.fromkeys(NUMERIC, 0.0)
    assert "repeat_views_48h" not in prior({**whole, "repeat_views_48h": 1}, S)[1]
    assert prior({**whole, "views_30d": 7}, S)[1]["views_30d_broad"] == -7
    engaged = ("inquiries", "showing_requests", "valuation_requests", "call_requests", "saves",
               "replies", "saved_searches", "email_clicks")  # fmt: skip
    for name in engaged:
        assert "views_30d_broad" not in prior({**whole, "views_30d": 7, name: 1}, S)[1]
        assert "views_30d_broad" in prior({**whole, "views_30d": 7, name: -1}, S)[1]


# --------------------------------------------------------------------------- seed 003 tiers


@pytest.mark.parametrize(
    ("features", "tier"),
    [
        ({"source": "giveaway", "timeline": "0-3m"}, "hot"),
        ({"source": "giveaway", "timeline": "3-6m"}, "hot"),
        ({"source": "giveaway", "timeline": "unknown"}, "long-term"),
        ({"source": "giveaway"}, "long-term"),
        ({"source": "listing_ad", "timeline": "18m+"}, "long-term"),
        ({"source": "listing_ad", "timeline": "unknown"}, "warm"),
        ({"source": "valuation_funnel", "timeline": "6-18m"}, "warm"),
        ({"source": "social", "timeline": "6-18m"}, "warm"),
        ({"source": "giveaway", "timeline": "unknown", "showing_requests": 1}, "hot"),
        ({"source": "listing_ad", "timeline": "18m+", "inquiries": 1}, "long-term"),
    ],
)
def test_tier_of(features: dict[str, Any], tier: str) -> None:
    assert tier_of(features, S) == tier


def test_blend_reports_the_tier() -> None:
    assert score({"source": "giveaway", "timeline": "0-3m"}).tier == "hot"
    assert score({"source": "giveaway", "timeline": "unknown"}).tier == "long-term"


def test_near_term_timeline_overrides_a_low_intent_source_in_the_score_too() -> None:
    hot = score({"source": "giveaway", "timeline": "0-3m"})
    cold = score({"source": "giveaway", "timeline": "unknown"})
    assert hot.score > cold.score
    assert "plans to move within 3 months" in hot.reasons
    assert "came from a giveaway" in cold.concerns


# --------------------------------------------------------------------------- buckets


@pytest.mark.parametrize(
    ("value", "bucket"),
    [
        (100, "P1"),
        (90, "P1"),
        (89, "P2"),
        (70, "P2"),
        (69, "P3"),
        (50, "P3"),
        (49, "P4"),
        (0, "P4"),
    ],
)
def test_bucket_floors_are_exact(value: int, bucket: str) -> None:
    assert bucket_of(value, NO_CONTEXT, S) == bucket


@pytest.mark.parametrize(
    "context",
    [
        {"not_interested": True},
        {"invalid_contact": True},
        {"blocked": ("email", "sms", "call")},
        {"blocked": ("call", "chat", "email", "sms", "web")},
    ],
)
def test_p5_for_clean_up_leads_whatever_the_score(context: dict[str, Any]) -> None:
    assert bucket_of(99, context, S) == "P5"
    assert score({"showing_requests": 2, "timeline": "0-3m"}, context).bucket == "P5"


@pytest.mark.parametrize(
    "context",
    [
        {"blocked": ("email", "sms")},
        {"blocked": ("call",)},
        {"not_interested": False, "invalid_contact": False},
        {},
    ],
)
def test_partly_reachable_leads_are_not_p5(context: dict[str, Any]) -> None:
    assert bucket_of(99, context, S) == "P1"


def test_bucket_follows_configured_floors() -> None:
    s = load_settings(overrides={"buckets": {"p1": 80, "p2": 60, "p3": 40}}, environ={})
    assert [bucket_of(v, NO_CONTEXT, s) for v in (80, 79, 60, 59, 40, 39)] == [
        "P1",
        "P2",
        "P2",
        "P3",
        "P3",
        "P4",
    ]


# --------------------------------------------------------------------------- model hand-over


def test_model_probability_is_ignored_at_zero_weight() -> None:
    p_prior = prior(LEAD_B, S)[0]
    s = score(LEAD_B, model_probability=0.01, model_contributions={"saves": -5.0}, model_weight=0)
    assert s.model_weight == 0
    assert s.probability == pytest.approx(p_prior, abs=1e-6)
    assert s.model_probability == 0.01


def test_model_probability_is_ignored_when_model_not_ready() -> None:
    s = score(LEAD_B, model_probability=None, model_weight=1.0)
    assert s.model_weight == 0
    assert s.probability == pytest.approx(prior(LEAD_B, S)[0], abs=1e-6)


def test_model_fully_carries_the_score_at_full_weight() -> None:
    s = score(LEAD_B, model_probability=0.123, model_weight=1.0)
    assert s.model_weight == 1
    assert s.probability == pytest.approx(0.123, abs=1e-6)
    assert s.score == 12
    assert s.prior_probability == pytest.approx(prior(LEAD_B, S)[0], abs=1e-6)


@pytest.mark.parametrize("w", [0.01, 0.25, 0.5, 0.99])
def test_served_score_blends_by_the_evidence_weight_in_log_odds(w: float) -> None:
    p_prior = prior(LEAD_B, S)[0]
    s = score(LEAD_B, model_probability=0.05, model_weight=w)
    assert s.model_weight == pytest.approx(w, abs=1e-4)
    z = (1 - w) * math.log(p_prior / (1 - p_prior)) + w * math.log(0.05 / 0.95)
    assert s.probability == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    p_prior=st.floats(0.0, 1.0),
    p_model=st.floats(0.0, 1.0),
    w=st.floats(0.0, 1.0),
)
def test_log_odds_blend_lies_between_prior_and_model_and_is_never_certain(
    p_prior: float, p_model: float, w: float
) -> None:
    p = log_odds_blend(p_prior, p_model, w)
    lo, hi = sorted((min(P_MAX, max(P_MIN, p_prior)), min(P_MAX, max(P_MIN, p_model))))
    assert P_MIN <= p <= P_MAX
    assert lo - 1e-9 <= p <= hi + 1e-9
    assert log_odds_blend(p_prior, p_model, 0.0) == min(P_MAX, max(P_MIN, p_prior))
    assert log_odds_blend(p_prior, None, w) == min(P_MAX, max(P_MIN, p_prior))


@settings(max_examples=100, deadline=None)
@given(
    points=st.dictionaries(
        st.sampled_from(["saves", "inquiries", "replies", "views_7d"]),
        st.floats(-20, 20),
        max_size=4,
    ),
    contrib=st.dictionaries(
        st.sampled_from(["saves", "inquiries", "source=referral"]), st.floats(-3, 3), max_size=3
    ),
    w=st.floats(0.0, 1.0),
    base=st.floats(-4, 4),
)
def test_served_log_odds_is_the_sum_the_reasons_rank(
    points: dict[str, float], contrib: dict[str, float], w: float, base: float
) -> None:
    """The blend is linear in log-odds: served log-odds = (1 - w) * prior's points +
    w * model contributions + the baselines, the same terms ``explain_codes`` ranks."""
    sc = S.scoring
    z_prior = sc.prior_intercept + sc.prior_logit_per_point * sum(points.values())
    z_model = base + sum(contrib.values())
    edge = math.log(P_MAX / (1 - P_MAX))  # inputs are held inside [P_MIN, P_MAX] first
    assume(abs(z_prior) < edge and abs(z_model) < edge)
    p = log_odds_blend(1 / (1 + math.exp(-z_prior)), 1 / (1 + math.exp(-z_model)), w)
    terms = (1 - w) * sc.prior_logit_per_point * sum(points.values()) + w * sum(contrib.values())
    baseline = (1 - w) * sc.prior_intercept + w * base
    assert math.log(p / (1 - p)) == pytest.approx(baseline + terms, abs=1e-6)


def test_score_is_probability_times_100_and_never_certain() -> None:
    for feats in (LEAD_A, LEAD_B, {}, {"showing_requests": 2, "timeline": "0-3m"}):
        s = score(feats)
        assert s.score == round(s.probability * 100)
        assert 0 < s.probability < 1
    assert score(LEAD_B, model_probability=1.0, model_weight=1.0).probability <= 0.999


def test_a_lost_lead_is_never_above_p4_and_says_why() -> None:
    s = score({"showing_requests": 1}, {"blocked": (), "last_hand_ts": 10.0, "last_ts": 10.0},
              outcome="lost", outcome_ts=1_767_225_600.0)  # fmt: skip
    assert s.bucket == "P4" and s.bucket_by == "lost"
    assert s.concerns[0] == "marked lost on 2025-12-31"  # in the tenant's zone (New York)


def test_the_bucket_says_which_rule_set_it() -> None:
    hand = {"blocked": (), "last_hand_ts": 10.0, "last_ts": 10.0}
    assert score({"showing_requests": 1}, hand, model_probability=0.3, model_weight=1.0).bucket_by \
        == "hand_raise"  # fmt: skip
    assert score(LEAD_B).bucket_by == "score"
    assert score(LEAD_B, {"blocked": (), "not_interested": True}).bucket_by == "clean_up"


# --------------------------------------------------------------------------- reasons


def test_top_reason_is_the_largest_prior_contribution() -> None:
    s = score({"showing_requests": 1, "views_7d": 1, "views_30d": 1, "searches": 1})
    assert s.reasons == ("asked to see a home", "1 property view this week", "ran a search")


def test_negative_contributions_are_concerns_ranked_by_size() -> None:
    s = score(
        {"opt_outs": 2, "views_7d": 1, "views_30d": 1, "bounces": 1, "saves": 1},
        {"blocked": ("sms",)},
    )
    assert s.concerns[0] == "email address bounced, opted out of text"  # one fact: consent
    assert "saved a home" in s.reasons


def test_top_reason_follows_the_model_once_it_carries_the_score() -> None:
    contrib = {"saves": 0.2, "email_clicks": 3.0, "source=portal": 0.1}
    feats = {**LEAD_B, "email_clicks": 2}
    s = score(feats, model_probability=0.8, model_contributions=contrib, model_weight=1.0)
    assert s.reasons[0] == "clicked 2 email links"
    assert s.reasons[1] == "saved a home"


def test_reason_count_is_configured() -> None:
    assert len(score(LEAD_B).reasons) == S.scoring.reasons
    s1 = load_settings(overrides={"scoring": {"reasons": 1}}, environ={})
    assert len(blend(LEAD_B, NO_CONTEXT, s1, None, {}, 0).reasons) == 1


def test_views_are_one_reason_not_three() -> None:
    contrib = {"views_24h": 1.0, "views_7d": 1.0, "views_30d": 1.0, "saves": 2.5}
    s = score(
        {"views_24h": 2, "views_7d": 4, "views_30d": 9, "saves": 1, "distinct_properties_30d": 1},
        model_probability=0.5,
        model_contributions=contrib,
        model_weight=1.0,
    )
    assert s.reasons[0] == "4 property views this week (all of one home)"
    assert sum("view" in r for r in s.reasons) == 1


# --------------------------------------------------------------------------- model_input

NAMES = ("views_7d", "saves", "reply_recency", "reactivated", "unsaves", "source", "timeline")


def test_model_input_one_hots_and_log_scales() -> None:
    feats = {
        "views_7d": 3,
        "saves": 0,
        "reply_recency": 0.5,
        "reactivated": 1.0,
        "unsaves": -4,
        "source": "portal",
        "timeline": "0-3m",
        "side": "buyer",
        "inquiries": 9,
    }
    x = model_input(feats, NAMES)
    assert x == pytest.approx(
        {
            "views_7d": math.log(4),
            "saves": 0.0,
            "reply_recency": 0.5,  # already in [0, 1]: not log-scaled
            "reactivated": 1.0,
            "unsaves": -math.log(5),  # sign kept
            "source=portal": 1.0,
            "timeline=0-3m": 1.0,
        }
    )
    assert "inquiries" not in x and not any(k.startswith("side") for k in x)


def test_model_input_heavy_tail_is_compressed() -> None:
    x = model_input({"views_7d": 300}, ("views_7d",))
    assert x["views_7d"] == pytest.approx(math.log1p(300))
    assert x["views_7d"] < 6


def test_model_input_only_uses_configured_names() -> None:
    feats = {name: 1.0 for name in NUMERIC} | {
        "source": "portal",
        "side": "buyer",
        "timeline": "0-3m",
    }
    assert set(model_input(feats, ("saves",))) == {"saves"}
    assert model_input(feats, ()) == {}
    full = model_input(feats, S.features.names)
    assert {k.split("=", 1)[0] for k in full} == set(S.features.names)
    assert set(S.features.names) <= set(FEATURE_NAMES)


def test_model_input_does_not_mutate_features() -> None:
    feats = {"views_7d": 3, "source": "portal"}
    model_input(feats, ("views_7d", "source"))
    assert feats == {"views_7d": 3, "source": "portal"}


# --------------------------------------------------------------------------- parse_reply


def reply(**raw: str) -> list[str]:
    """A script reply: every field as text (Lua replies cannot carry floats)."""
    numbers = ["0"] * len(NUMERIC)
    numbers[NUMERIC.index("views_7d")] = "3"
    numbers[NUMERIC.index("reply_recency")] = "0.25"
    numbers[NUMERIC.index("saves")] = "2"
    fields = {name: "" for name in RAW_FIELDS} | {"last_ts": "1700000000"} | raw
    return numbers + [fields[name] for name in RAW_FIELDS]


def test_parse_reply_splits_features_and_context() -> None:
    feats, ctx = parse_reply(
        reply(
            source="portal",
            side="buyer",
            last_ts="1700000000.5",
            blocked="sms,call,",
            reactivated_now="1",
            not_interested="0",
            invalid_contact="1",
            agent_id="ag-1",
            last_reply_channel="sms",
            repeat_property="mls-9",
        )
    )
    assert set(feats) == set(FEATURE_NAMES)
    assert feats["views_7d"] == 3.0 and feats["saves"] == 2.0
    assert feats["reply_recency"] == 0.25 and feats["dwell_min"] == 0.0
    assert (feats["source"], feats["side"], feats["timeline"]) == ("portal", "buyer", "unknown")
    assert ctx["blocked"] == ("call", "sms")
    assert ctx["reactivated_now"] is True
    assert ctx["not_interested"] is False and ctx["invalid_contact"] is True
    assert ctx["last_ts"] == 1_700_000_000.5
    assert (ctx["agent_id"], ctx["last_reply_channel"], ctx["repeat_property"]) == (
        "ag-1",
        "sms",
        "mls-9",
    )


def test_parse_reply_feeds_scoring_end_to_end() -> None:
    feats, ctx = parse_reply(reply(invalid_contact="1"))
    assert score(feats, ctx).bucket == "P5"
    feats, ctx = parse_reply(reply())
    assert score(feats, ctx).bucket == "P4"


def test_parse_reply_refuses_a_short_reply() -> None:
    with pytest.raises(ValueError):
        parse_reply(reply()[:-1])


# --------------------------------------------------------------------------- known bugs


def test_unknown_timeline_reason_does_not_claim_a_stated_timeline() -> None:
    s = score(
        {"timeline": "unknown"},
        model_probability=0.2,
        model_contributions={"timeline=unknown": -2.0},
        model_weight=1.0,
    )
    assert not any("timeline" in c or "move" in c for c in s.concerns)  # no fact to state


def test_a_recent_hand_raise_is_call_today_whatever_the_score() -> None:
    """Seed 000: P1 is a 90+ score *or* a showing/valuation request or direct question."""
    settings = load_settings(environ={})
    now = 1_767_225_600.0
    recent = {"last_hand_ts": now - 3600, "last_ts": now}
    stale = {"last_hand_ts": now - 25 * 3600, "last_ts": now}
    assert bucket_of(30, recent, settings) == "P1"
    assert bucket_of(30, stale, settings) == "P4"
    assert bucket_of(30, {**recent, "not_interested": True}, settings) == "P5"


def test_with_codes_is_replace_for_every_field() -> None:
    """Written out for speed: it must carry every field, including any added later."""
    values: dict[str, Any] = {}
    for i, f in enumerate(dataclasses.fields(Score)):
        values[f.name] = {"int": i, "float": i + 0.5, "str": f"v{i}"}.get(str(f.type), (f"t{i}",))
    values["codes"] = (("views",), ("consent",))
    values["model_probability"], values["raw_prior_probability"] = 0.25, 0.75
    s = Score(**values)
    codes = (("saves",), ("email",))
    assert s.with_codes(codes) == dataclasses.replace(s, codes=codes)
    words = (("saved a home",), ("opened 2 emails",))
    assert s.with_codes(codes, words) == dataclasses.replace(
        s, codes=codes, reasons=words[0], concerns=words[1]
    )


def _points_as_they_were(features: dict[str, Any]) -> dict[str, float]:
    """The prior's points per signal as min/max worked them out (the reference)."""
    engaged = any(float(features.get(k, 0)) > 0 for k in (
        "inquiries", "showing_requests", "valuation_requests", "call_requests", "saves",
        "replies", "saved_searches", "email_clicks"))  # fmt: skip
    points: dict[str, float] = {}
    for name, (each, cap) in S.scoring.points.items():
        value = float(features.get("views_30d" if name == "views_30d_broad" else name, 0.0))
        if name == "repeat_views_48h":
            value = max(0.0, value - 1.0)
        elif name == "views_30d_broad" and engaged:
            value = 0.0
        if value:
            pts = each * value
            points[name] = max(pts, cap) if cap < 0 else min(pts, cap)
    return points


# on and around every cap (points each x value == cap), both signs, ints and floats
_AT_CAPS = st.sampled_from(sorted({
    v for each, cap in S.scoring.points.values() for v in (
        cap / each, cap // each, cap / each + 1, cap / each - 0.5, -(cap / each), 0, 1, 2.0)
}))  # fmt: skip


@settings(max_examples=300, deadline=None, database=None)
@given(st.fixed_dictionaries({n: st.one_of(_COUNT, _AT_CAPS) for n in NUMERIC}))
def test_capped_points_are_the_values_and_types_min_and_max_gave(counts: dict[str, Any]) -> None:
    """Caps without min/max: the same points, of the same type, in the same order (at a
    cap, ``pts``: min and max return the first of equals)."""
    want = [(k, repr(v)) for k, v in _points_as_they_were(counts).items()]
    assert [(k, repr(v)) for k, v in prior(counts, S)[1].items()] == want
    assert [(k, repr(v)) for k, v in prior(_ReadOneByOne(counts), S)[1].items()] == want


@pytest.mark.parametrize(
    "p", [0.0, -0.0, 0.001, 0.0010000000000000002, 0.5, 0.999, 0.9990000000000001, 1, 0, 2,
          -1.5, math.inf, -math.inf, math.nan, P_MIN, P_MAX],
)  # fmt: skip
def test_clamp_is_min_of_max(p: float) -> None:
    assert repr(clamp(p)) == repr(min(P_MAX, max(P_MIN, p)))


def test_assess_fills_each_field_of_the_score() -> None:
    """``assess`` builds its Score positionally (speed): each value in its own field."""
    s = assess({"views_7d": 3, "timeline": "0-3m"}, NO_CONTEXT, S, 0.4, 0.5, lambda p: p * 0.9,
               0.2)  # fmt: skip
    assert (s.model_probability, s.raw_prior_probability, s.model_weight) == (0.4, 0.2, 0.5)
    assert s.prior_probability == round(0.2 * 0.9, 6) and s.probability == 0.276697
    assert (s.score, s.bucket, s.tier, s.bucket_by) == (28, "P4", "hot", "score")
    assert (s.reasons, s.concerns, s.codes) == ((), (), ((), ()))
