"""Reasons and concerns are true: property-based over generated leads and contributions."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.reasons import (
    GROUPS,
    explain,
    explain_codes,
    group_of,
    low_reasons,
    reason_text,
    states_fact,
)
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
    homes = re.search(r"\((\d+) different homes( this month)?\)", text)
    if homes:
        assert int(homes.group(1)) == features["distinct_properties_30d"]
        # the homes are the month's: a count of the week alone says so (never "2 property
        # views this week (5 different homes)")
        assert bool(homes.group(2)) == (n != features["views_30d"])


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


#: Every group a reason can be about, and some no text is written for.
_ALL_GROUPS = list(dict.fromkeys([
    *GROUPS, *map(group_of, NUMERIC), "source", "side", "timeline", "props.origin",
    "props.lead_type", "props.lead type", "hour_of_day", "",
]))  # fmt: skip
_small = st.one_of(counts, st.floats(min_value=0, max_value=3), st.just(None), st.just(""))
sparse = st.dictionaries(
    st.sampled_from([*NUMERIC, "source", "side", "timeline"]), _small, max_size=20
)
props = st.fixed_dictionaries(
    {},
    optional={
        "props.origin": st.sampled_from(["unknown", "", "lead_add_form"]),
        "props.lead_type": st.sampled_from(["unknown", "v", "w"]),
        "props.lead type": st.sampled_from(["v", "w"]),
    },
)


@settings(max_examples=400, deadline=None, database=None)
@given(st.one_of(lead, sparse), props, context, st.booleans())
def test_states_fact_is_whether_reason_text_says_something(
    features: dict[str, Any], extra: dict[str, Any], ctx: dict[str, Any], positive: bool
) -> None:
    """Codes are chosen by ``states_fact``, words made by ``reason_text``: they must agree."""
    f = features | extra
    for group in _ALL_GROUPS:
        said = reason_text(group, f, ctx, positive)
        assert states_fact(group, f, ctx, positive) == (said is not None), (group, said)


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(lead, sparse), context, st.booleans())
def test_words_of_different_groups_differ_outside_props(
    features: dict[str, Any], ctx: dict[str, Any], positive: bool
) -> None:
    """What lets ``explain_codes`` skip the words: only props.* groups can say the same."""
    texts = [reason_text(g, features, ctx, positive) for g in _ALL_GROUPS if "." not in g]
    said = [t for t in texts if t is not None]
    assert len(set(said)) == len(said), said
    assert not any(": " in t for t in said), said


def _codes_by_words(
    f: dict[str, Any], ctx: dict[str, Any], points: dict[str, float],
    contrib: dict[str, float], w: float, n_low: int,
) -> tuple[tuple[str, ...], tuple[str, ...]]:  # fmt: skip
    """explain_codes as it was, choosing each group by its words (the reference)."""
    by_group: dict[str, float] = {}
    for name, pts in points.items():
        g = group_of(name)
        by_group[g] = by_group.get(g, 0.0) + (1 - w) * pts * S.scoring.prior_logit_per_point
    for name, c in contrib.items():
        by_group[group_of(name)] = by_group.get(group_of(name), 0.0) + w * c
    out: tuple[list[str], list[str]] = ([], [])
    texts: set[str] = set()
    room = (S.scoring.reasons, max(0, S.scoring.reasons - n_low))
    for _, group, c in sorted((-abs(c), g, c) for g, c in by_group.items()):
        side = 0 if c > 0 else 1
        if abs(c) < 1e-6 or len(out[side]) >= room[side]:
            continue
        text = reason_text(group, f, ctx, positive=c > 0)
        if text and text not in texts:
            texts.add(text)
            out[side].append(group)
    return tuple(out[0]), tuple(out[1])


_inputs = st.sampled_from(
    [*NUMERIC, "source=referral", "side=seller", "timeline=0-3m", "props.origin=x",
     "props.lead_type=v", "props.lead type=v", "hour_of_day"]
)  # fmt: skip


@settings(max_examples=400, deadline=None, database=None)
@given(
    st.one_of(lead, sparse), props, context,
    st.dictionaries(_inputs, st.floats(min_value=-5, max_value=5), max_size=14),
    st.dictionaries(st.sampled_from(NUMERIC), st.floats(min_value=-9, max_value=9), max_size=8),
    st.floats(min_value=0, max_value=1), st.integers(0, 3),
)  # fmt: skip
def test_explain_codes_chooses_what_choosing_by_the_words_did(
    features: dict[str, Any], extra: dict[str, Any], ctx: dict[str, Any],
    contrib: dict[str, float], points: dict[str, float], w: float, n_low: int,
) -> None:  # fmt: skip
    f = features | extra
    assert explain_codes(f, ctx, S, points, contrib, w, n_low) == _codes_by_words(
        f, ctx, points, contrib, w, n_low
    )


def test_two_props_groups_with_the_same_words_are_said_once() -> None:
    f = {"props.lead_type": "v", "props.lead type": "v", "props.origin": "x"}
    contrib = {"props.lead_type=v": 2.0, "props.lead type=v": 1.0, "props.origin=x": 0.5}
    codes = explain_codes(f, {}, S, {}, contrib, 1.0)
    assert codes == (("props.lead_type", "props.origin"), ())
    assert codes == _codes_by_words(f, {}, {}, contrib, 1.0, 0)


@pytest.mark.parametrize(
    ("group", "features"),
    [
        ("silence", {"days_silent_before": 1}), ("silence", {"days_silent_before": 0.999}),
        ("dwell_min", {"dwell_min": 0.5}), ("dwell_min", {"dwell_min": 0.51}),
        ("repeat_views_48h", {"repeat_views_48h": 1}),
        ("repeat_views_48h", {"repeat_views_48h": 1.5}),
        ("views", {"views_30d": 0.5}), ("views", {"views_30d": 0.51}),
        ("saves", {"saves": 0.5}), ("saves", {"saves": 1}), ("saves", {"saves": "2"}),
        ("contacts", {"calls_missed": 1}), ("consent", {"bounces": 1}),
        ("email", {"email_clicks": 1}), ("replies", {"calls_answered": 1}),
        ("source", {"source": "nowhere"}), ("timeline", {"timeline": "0-3m"}),
        ("props.origin", {"props.origin": ""}), ("props.origin", {"props.origin": 0}),
    ],
)  # fmt: skip
def test_states_fact_at_the_edges(group: str, features: dict[str, Any]) -> None:
    for positive in (True, False):
        said = reason_text(group, features, {}, positive)
        assert states_fact(group, features, {}, positive) == (said is not None), said
