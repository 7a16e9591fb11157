"""Reasons and concerns are true: property-based over generated leads and contributions."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.reasons import GROUPS, explain, group_of, low_reasons, reason_text
from engine.scoring import blend
from engine.settings import load_settings
from features.definitions import NUMERIC

S = load_settings(overrides={"scoring": {"reasons": 10}}, environ={})
_ZERO_COUNT = re.compile(r"(^|[^\d.])0 [a-z]")

counts = st.integers(min_value=0, max_value=40)
lead = st.fixed_dictionaries(
    {name: counts for name in NUMERIC if name not in ("reply_recency", "reactivated")}
    | {
        "reply_recency": st.floats(min_value=0, max_value=1),
        "reactivated": st.sampled_from([0, 1]),
        "days_silent_before": st.floats(min_value=0, max_value=400),
        "dwell_min": st.floats(min_value=0, max_value=600),
        "source": st.sampled_from(["unknown", "referral", "portal", "giveaway", "website"]),
        "side": st.sampled_from(["unknown", "buyer", "seller"]),
        "timeline": st.sampled_from(["unknown", "0-3m", "18m+"]),
    }
)
context = st.fixed_dictionaries(
    {
        "blocked": st.sampled_from([(), ("sms",), ("call", "email", "sms")]),
        "last_reply_channel": st.sampled_from(["", "sms", "call", "email"]),
        "not_interested": st.booleans(),
        "invalid_contact": st.booleans(),
    }
)
inputs = st.sampled_from(
    [*NUMERIC, "source=referral", "source=giveaway", "side=seller", "timeline=0-3m"]
)
contributions = st.dictionaries(inputs, st.floats(min_value=-5, max_value=5), max_size=12)


def _group_of_text(text: str, features: dict[str, Any], ctx: dict[str, Any]) -> set[str]:
    """Which groups could have produced this sentence (for the contradiction check)."""
    found = set()
    for signal in [*NUMERIC, "source", "side", "timeline"]:
        for positive in (True, False):
            if reason_text(signal, features, ctx, positive) == text:
                found.add(group_of(signal))
    return found


@settings(max_examples=300, deadline=None, database=None)
@given(lead, context, contributions, st.floats(min_value=0, max_value=1))
def test_reasons_never_contradict_and_never_state_a_zero(
    features: dict[str, Any], ctx: dict[str, Any], contrib: dict[str, float], w: float
) -> None:
    s = blend(features, ctx, S, 0.4, contrib, w)
    texts = s.reasons + s.concerns
    for text in texts:
        assert not _ZERO_COUNT.search(text), text
        assert "_" not in text and "=" not in text, text
    assert len(set(texts)) == len(texts)  # no fact said twice
    pro_groups = set().union(*(_group_of_text(t, features, ctx) for t in s.reasons))
    con_groups = set().union(*(_group_of_text(t, features, ctx) for t in s.concerns))
    assert not pro_groups & con_groups, (s.reasons, s.concerns)


@settings(max_examples=200, deadline=None, database=None)
@given(lead, context)
def test_a_zero_signal_is_never_a_reason(features: dict[str, Any], ctx: dict[str, Any]) -> None:
    """Against the no-activity baseline, a signal at zero has no fact to state."""
    for signal in NUMERIC:
        zeroed = dict(features)
        for other in GROUPS.get(group_of(signal), (signal,)):
            zeroed[other] = 0
        assert reason_text(signal, zeroed, ctx, True) is None, signal
        assert reason_text(signal, zeroed, ctx, False) is None, signal


@settings(max_examples=200, deadline=None, database=None)
@given(lead, context, contributions, st.floats(min_value=0, max_value=1))
def test_p5_and_lost_leads_say_why_first(
    features: dict[str, Any], ctx: dict[str, Any], contrib: dict[str, float], w: float
) -> None:
    s = blend(features, ctx, S, 0.4, contrib, w, outcome="lost", outcome_ts=1.7e9)
    assert s.concerns[0].startswith("marked lost on ")
    s = blend(features, ctx, S, 0.4, contrib, w)
    if s.bucket == "P5":
        assert s.concerns and s.concerns[0] in low_reasons(ctx, "", 0.0, S)


@settings(max_examples=200, deadline=None, database=None)
@given(lead)
def test_view_counts_name_what_they_count(features: dict[str, Any]) -> None:
    """ "N property views", with the number of *different* homes only when it is known."""
    text = reason_text("views_7d", features, {}, True)
    if text is None:
        assert int(features["views_30d"]) == 0
        return
    n = int(re.match(r"(\d+) property view", text).group(1))  # type: ignore[union-attr]
    assert n in (features["views_7d"], features["views_30d"])
    homes = re.search(r"\((\d+) different homes\)", text)
    if homes:
        assert int(homes.group(1)) == features["distinct_properties_30d"]


@pytest.mark.parametrize(
    ("signal", "features", "context", "positive", "text"),
    [
        ("reply_recency", {"replies": 1, "reply_recency": 1.0}, {"last_reply_channel": "sms"},
         True, "replied by text within the hour"),
        ("replies", {"replies": 3, "reply_recency": math.exp(-0.5)},
         {"last_reply_channel": "email"}, False, "replied 3 times, last by email 36 h ago"),
        ("calls_answered", {"calls_answered": 1, "replies": 1, "reply_recency": math.exp(-2)},
         {"last_reply_channel": "call"}, True, "answered a call 6 days ago"),
        ("repeat_views_48h", {"repeat_views_48h": 3}, {}, True,
         "viewed the same home 3 times in 2 days"),
        ("repeat_views_48h", {"repeat_views_48h": 1}, {}, True, None),
        ("reactivated", {"reactivated": 1, "days_silent_before": 45}, {}, True,
         "active again after 45 days away"),
        ("days_silent_before", {"days_silent_before": 12.2}, {}, False,
         "quiet for 12 days before the latest activity"),
        ("days_silent_before", {"days_silent_before": 12.2}, {}, True, "back after 12 days"),
        ("agent_contacts_unanswered", {"agent_contacts": 2, "agent_contacts_unanswered": 1},
         {}, False, "no answer to 1 contact attempt since the last reply"),
        ("agent_contacts_unanswered", {"agent_contacts": 1, "agent_contacts_unanswered": 1},
         {}, True, "1 agent contact so far"),
        ("opt_outs", {"opt_outs": 1}, {"blocked": ("call", "sms")}, False,
         "opted out of phone, text"),
        ("saves", {"saves": 1}, {}, True, "saved a home"),
        ("saves", {"saves": 2}, {}, True, "saved 2 homes"),
        ("saves", {"saves": 0}, {}, True, None),
        ("email_opens", {"email_opens": 0}, {}, True, None),
        ("timeline", {"timeline": "18m+"}, {}, False, "plans to move in 18+ months"),
        ("timeline", {"timeline": "unknown"}, {}, False, None),
        ("source", {"source": "referral"}, {}, True, "came by referral"),
        ("props.origin", {"props.origin": "lead_add_form"}, {}, True, "origin: lead_add_form"),
        ("dwell_min", {"dwell_min": 0.5}, {}, True, None),  # rounds to 0: no "spent 0 min"
        ("dwell_min", {"dwell_min": 1.5}, {}, True, "spent 2 min on the site"),
        ("dwell_min", {"dwell_min": 2.5}, {}, True, "spent 2 min on the site"),
    ],
)  # fmt: skip
def test_reason_text(
    signal: str, features: dict[str, Any], context: dict[str, Any], positive: bool, text: str
) -> None:
    assert reason_text(signal, features, context, positive) == text


def test_explain_merges_a_group_before_choosing_its_side() -> None:
    """The prior calls broad browsing negative, the model calls views positive: one verdict."""
    f = {"views_7d": 9, "views_30d": 9, "distinct_properties_30d": 6}
    pros, cons = explain(f, {}, S, {"views_30d_broad": -9.0}, {"views_7d": 2.0}, 1.0)
    assert pros == ("9 property views this week (6 different homes)",) and cons == ()
    pros, cons = explain(f, {}, S, {"views_30d_broad": -9.0}, {"views_7d": 2.0}, 0.0)
    assert pros == () and cons == (
        "9 property views this month without saving, asking or replying",
    )
