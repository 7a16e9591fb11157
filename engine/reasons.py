"""Reasons and concerns: why a score is what it is, in words that are true. Pure, no I/O.

Every contribution is measured against a lead with *no activity* (the prior's points
are zero for a signal that is zero; the model's contributions are taken against the
same baseline, see ``engine/model.py``), so a count of zero can never be a reason.
Signals that describe one fact are one *group* (property views in 24 h / 7 d / 30 d,
"browsing without engaging" and distinct homes are all "views"): a group's net
contribution puts it among the reasons (> 0) or the concerns (< 0), never both, so a
concern cannot contradict a reason. The text follows the sign and states only what
the features hold ("12 property views this week (3 different homes)").

A lead in P5 or marked lost is low for a reason that is not a contribution: that
reason comes first among its concerns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from engine.settings import Settings

__all__ = [
    "GROUPS", "explain", "explain_codes", "group_of", "low_reasons", "reason_text", "render",
    "states_fact",
]  # fmt: skip

#: Signals that state one fact, explained once (signal -> group).
GROUPS: dict[str, tuple[str, ...]] = {
    "views": ("views_24h", "views_7d", "views_30d", "views_30d_broad", "distinct_properties_30d"),
    "replies": ("replies", "reply_recency", "calls_answered"),
    "silence": ("days_silent_before", "reactivated"),
    "contacts": ("agent_contacts", "agent_contacts_unanswered", "calls_missed"),
    "email": ("email_opens", "email_clicks"),
    "consent": ("unsubscribes", "bounces", "opt_outs"),
}
_GROUP_OF = {signal: group for group, signals in GROUPS.items() for signal in signals}
_ENGAGED = (
    "inquiries", "showing_requests", "valuation_requests", "call_requests", "saves", "replies",
    "saved_searches", "email_clicks",
)  # fmt: skip
_CHANNEL_WORDS = {"sms": "text", "email": "email", "call": "phone", "chat": "chat", "web": "web"}
_TIMELINE_WORDS = {
    "0-3m": "plans to move within 3 months",
    "3-6m": "plans to move in 3-6 months",
    "6-18m": "plans to move in 6-18 months",
    "18m+": "plans to move in 18+ months",
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
    "paid_search": "came from a search ad",
    "other": "came from another source",
}
_SIDE_WORDS = {"buyer": "is buying", "seller": "is selling", "both": "is buying and selling"}
#: Counts with one sentence each: (singular, plural with {n}).
_COUNTS = {
    "saves": ("saved a home", "saved {n} homes"),
    "unsaves": ("removed a home from saved", "removed {n} homes from saved"),
    "searches": ("ran a search", "ran {n} searches"),
    "saved_searches": ("saved a search", "saved {n} searches"),
    "shares": ("shared a listing", "shared {n} listings"),
    "mortgage_calcs": ("used the mortgage calculator", "used the mortgage calculator {n} times"),
    "valuation_views": ("looked up home values", "looked up home values {n} times"),
    "inquiries": ("asked a question about a home", "asked {n} questions about homes"),
    "showing_requests": ("asked to see a home", "asked to see homes {n} times"),
    "valuation_requests": ("requested a home valuation", "requested {n} home valuations"),
    "call_requests": ("asked for a call", "asked for a call {n} times"),
    "page_views": ("viewed a page on the site", "viewed {n} pages on the site"),
}


def group_of(signal: str) -> str:
    """The fact a signal (or a model input such as ``source=referral``) belongs to."""
    group = _GROUP_CACHE.get(signal)
    if group is None:
        base = signal.split("=", 1)[0]
        group = _GROUP_OF.get(base, base)
        if len(_GROUP_CACHE) < 4_096:  # bounded: inputs are config names and profile levels
            _GROUP_CACHE[signal] = group
    return group


_GROUP_CACHE: dict[str, str] = {}


def _n(f: Mapping[str, Any], name: str) -> int:
    try:
        return int(round(float(f.get(name, 0) or 0)))
    except (TypeError, ValueError):
        return 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _span(days: float) -> str:
    return _plural(round(days), "day")


def _ago(hours: float) -> str:
    if hours < 1:
        return "within the hour"
    if hours < 48:
        return f"{round(hours)} h ago"
    return f"{round(hours / 24)} days ago"


def _views(f: Mapping[str, Any], positive: bool) -> str | None:
    week, month, homes = _n(f, "views_7d"), _n(f, "views_30d"), _n(f, "distinct_properties_30d")
    if month <= 0:
        return None
    n, when = (week, "this week") if week else (month, "this month")
    # the homes are counted over the month: said so when the count is the week's alone
    # ("7 property views this week (11 different homes)" would be untrue)
    window = "" if n == month else " this month"
    spread = f" ({_plural(homes, 'different home')}{window})" if homes > 1 else ""
    if n > 1 and homes == 1:
        spread = " (all of one home)"
    engaged = any(_n(f, k) > 0 for k in _ENGAGED)
    if not positive and not engaged:
        return f"{_plural(month, 'property view')} this month without saving, asking or replying"
    return f"{_plural(n, 'property view')} {when}{spread}"


def _replies(f: Mapping[str, Any], context: Mapping[str, Any]) -> str | None:
    replies, calls = _n(f, "replies"), _n(f, "calls_answered")
    if replies <= 0 and calls <= 0:
        return None
    r = float(f.get("reply_recency", 0) or 0)
    when = _ago(-72.0 * math.log(r)) if 0 < r <= 1 else "over a month ago"
    channel = str(context.get("last_reply_channel") or "")
    if channel == "call":
        return (
            f"answered a call {when}"
            if replies <= 1
            else f"replied {replies} times, last by phone {when}"
        )
    how = _CHANNEL_WORDS.get(channel, "message")
    return (
        f"replied by {how} {when}"
        if replies <= 1
        else f"replied {replies} times, last by {how} {when}"
    )


def _silence(f: Mapping[str, Any], positive: bool) -> str | None:
    gap = float(f.get("days_silent_before", 0) or 0)
    if gap < 1:  # a pause within a day is a session, not a silence worth a sentence
        return None
    if float(f.get("reactivated", 0) or 0) > 0:
        return f"active again after {_span(gap)} away"
    return (
        f"back after {_span(gap)}"
        if positive
        else f"quiet for {_span(gap)} before the latest activity"
    )


def _contacts(f: Mapping[str, Any], positive: bool) -> str | None:
    made, unanswered, missed = (
        _n(f, "agent_contacts"),
        _n(f, "agent_contacts_unanswered"),
        _n(f, "calls_missed"),
    )
    if not positive and unanswered > 0:
        return f"no answer to {_plural(unanswered, 'contact attempt')} since the last reply"
    if made > 0:
        return f"{_plural(made, 'agent contact')} so far"
    if missed > 0:
        return _plural(missed, "missed call")
    if unanswered > 0:
        return f"{_plural(unanswered, 'contact attempt')} without an answer yet"
    return None


def _email(f: Mapping[str, Any]) -> str | None:
    parts = []
    if _n(f, "email_opens") > 0:
        parts.append(f"opened {_plural(_n(f, 'email_opens'), 'email')}")
    if _n(f, "email_clicks") > 0:
        parts.append(f"clicked {_plural(_n(f, 'email_clicks'), 'email link')}")
    return ", ".join(parts) or None


def _consent(f: Mapping[str, Any], context: Mapping[str, Any]) -> str | None:
    parts = []
    if _n(f, "unsubscribes") > 0:
        parts.append("unsubscribed from email")
    if _n(f, "bounces") > 0:
        parts.append("email address bounced")
    if _n(f, "opt_outs") > 0:
        blocked = ", ".join(_CHANNEL_WORDS.get(c, c) for c in context.get("blocked", ()))
        parts.append(f"opted out of {blocked or 'contact'}")
    return ", ".join(parts) or None


def _profile(signal: str, f: Mapping[str, Any]) -> str | None:
    value = str(f.get(signal) or "unknown")
    if value == "unknown":
        return None
    if signal == "source":
        return _SOURCE_WORDS.get(value)
    if signal == "timeline":
        return _TIMELINE_WORDS.get(value)
    if signal == "side":
        return _SIDE_WORDS.get(value)
    return f"{signal.split('.', 1)[-1].replace('_', ' ')}: {value}"


_Text = Callable[[Mapping[str, Any], Mapping[str, Any], bool], "str | None"]
_Fact = Callable[[Mapping[str, Any]], bool]


def _repeat_text(f: Mapping[str, Any]) -> str | None:
    n = _n(f, "repeat_views_48h")
    return f"viewed the same home {n} times in 2 days" if n >= 2 else None


def _dwell_text(f: Mapping[str, Any]) -> str | None:
    minutes = round(float(f.get("dwell_min", 0) or 0))  # 0.5 rounds to 0 (to even): no text
    return f"spent {minutes} min on the site" if minutes >= 1 else None


#: group -> its fact in words (``reason_text``), for the groups with their own wording
_TEXTS: dict[str, _Text] = {
    "views": lambda f, _c, positive: _views(f, positive),
    "replies": lambda f, context, _p: _replies(f, context),
    "silence": lambda f, _c, positive: _silence(f, positive),
    "contacts": lambda f, _c, positive: _contacts(f, positive),
    "email": lambda f, _c, _p: _email(f),
    "consent": lambda f, context, _p: _consent(f, context),
    "repeat_views_48h": lambda f, _c, _p: _repeat_text(f),
    "dwell_min": lambda f, _c, _p: _dwell_text(f),
}


def reason_text(
    signal: str, f: Mapping[str, Any], context: Mapping[str, Any], positive: bool = True
) -> str | None:
    """One group's fact in the words an agent uses, or None when there is no fact to state."""
    group = group_of(signal)
    text = _TEXTS.get(group)
    if text is not None:
        return text(f, context, positive)
    if group in _PROFILE_WORDS or group.startswith("props."):
        return _profile(group, f)
    if group in _COUNTS:
        n = _n(f, group)
        one, many = _COUNTS[group]
        return None if n <= 0 else one if n == 1 else many.format(n=n)
    return None


_PROFILE_WORDS = {"source": _SOURCE_WORDS, "timeline": _TIMELINE_WORDS, "side": _SIDE_WORDS}

#: group -> whether its text states something (``states_fact``), mirroring ``_TEXTS``
_FACTS: dict[str, _Fact] = {
    "views": lambda f: _n(f, "views_30d") > 0,
    "replies": lambda f: _n(f, "replies") > 0 or _n(f, "calls_answered") > 0,
    "silence": lambda f: not float(f.get("days_silent_before", 0) or 0) < 1,
    "contacts": lambda f: any(_n(f, k) > 0 for k in GROUPS["contacts"]),
    "email": lambda f: _n(f, "email_opens") > 0 or _n(f, "email_clicks") > 0,
    "consent": lambda f: any(_n(f, k) > 0 for k in GROUPS["consent"]),
    "repeat_views_48h": lambda f: _n(f, "repeat_views_48h") >= 2,
    "dwell_min": lambda f: round(float(f.get("dwell_min", 0) or 0)) >= 1,
}


def states_fact(
    group: str, f: Mapping[str, Any], context: Mapping[str, Any], positive: bool = True
) -> bool:
    """Whether :func:`reason_text` of ``group`` states something (is not None), without
    putting it into words: how :func:`explain_codes` chooses codes. Mirrors each text
    function's None cases (a test holds the two together)."""
    if group in _COUNTS:
        return _n(f, group) > 0
    fact = _FACTS.get(group)
    if fact is not None:
        return fact(f)
    if group in _PROFILE_WORDS or group.startswith("props."):
        value = str(f.get(group) or "unknown")
        words = _PROFILE_WORDS.get(group)
        return value != "unknown" and (words is None or value in words)
    return False


def low_reasons(
    context: Mapping[str, Any], outcome: str, outcome_ts: float, settings: Settings
) -> tuple[str, ...]:
    """Why a P5 or lost lead is low, whatever its contributions say."""
    out: list[str] = []
    if outcome == "lost":
        day = datetime.fromtimestamp(outcome_ts, UTC).astimezone(ZoneInfo(settings.alerts.timezone))
        out.append(f"marked lost on {day:%Y-%m-%d}")
    if context.get("not_interested"):
        out.append("said they are not interested")
    if context.get("invalid_contact"):
        out.append("contact details are invalid")
    blocked = set(context.get("blocked", ()))
    if {"email", "sms", "call"} <= blocked:
        out.append("opted out of email, text and phone")
    return tuple(out)


def explain_codes(
    features: Mapping[str, Any],
    context: Mapping[str, Any],
    settings: Settings,
    prior_points: Mapping[str, float],
    model_contributions: Mapping[str, float],
    model_weight: float,
    n_low: int = 0,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(groups for, groups against): the largest net contributions, by group, in log-odds
    of the same blend the score was made of; ``scoring.reasons`` of each at most (the
    concerns share their room with ``n_low`` reasons why the lead is low). A group is
    chosen only when it states a fact (:func:`states_fact`: the words are not made here);
    :func:`render` turns the codes into words."""
    sc = settings.scoring
    by_group: dict[str, float] = {}
    get, groups = by_group.get, _GROUP_CACHE
    w, per_point = model_weight, sc.prior_logit_per_point
    prior_share = 1 - w
    for name, pts in prior_points.items():
        g = groups.get(name) or group_of(name)
        by_group[g] = get(g, 0.0) + prior_share * pts * per_point
    for name, c in model_contributions.items():
        g = groups.get(name) or group_of(name)
        by_group[g] = get(g, 0.0) + w * c
    # largest first, ties by name: (-|c|, group) as the key, groups are unique
    ranked = sorted([(-abs(c), g, c) for g, c in by_group.items()])
    pros: list[str] = []
    cons: list[str] = []
    props: set[str] = set()  # the words of props.* groups chosen (see below)
    room_pros, room_cons = sc.reasons, max(0, sc.reasons - n_low)
    for neg_size, group, c in ranked:
        if len(pros) >= room_pros and len(cons) >= room_cons:
            break  # no room left
        positive = c > 0
        bucket = pros if positive else cons
        if -neg_size < 1e-6 or len(bucket) >= (room_pros if positive else room_cons):
            continue
        if not states_fact(group, features, context, positive):
            continue
        # Two groups' words are the same only for props.* ("a_b: v" and "a b: v"); the
        # other groups' words differ from each other's and hold no ": " (test_reasons).
        if group.startswith("props."):
            text = reason_text(group, features, context, positive=positive) or ""
            if text in props:
                continue
            props.add(text)
        bucket.append(group)
    return tuple(pros), tuple(cons)


def render(
    pros: tuple[str, ...],
    cons: tuple[str, ...],
    features: Mapping[str, Any],
    context: Mapping[str, Any],
    low: tuple[str, ...] = (),
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Reason and concern codes (groups) in words, from the features they were chosen on;
    ``low`` (:func:`low_reasons`) comes first among the concerns."""
    said: set[str] = set(low)
    out: list[list[str]] = [[], list(low)]
    for i, (groups, positive) in enumerate(((pros, True), (cons, False))):
        for group in groups:
            text = reason_text(group, features, context, positive=positive)
            if text and text not in said:
                said.add(text)
                out[i].append(text)
    return tuple(out[0]), tuple(out[1])


def explain(
    features: Mapping[str, Any],
    context: Mapping[str, Any],
    settings: Settings,
    prior_points: Mapping[str, float],
    model_contributions: Mapping[str, float],
    model_weight: float,
    low: tuple[str, ...] = (),
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(reasons for, concerns against) in words: :func:`explain_codes` then :func:`render`."""
    pros, cons = explain_codes(
        features, context, settings, prior_points, model_contributions, model_weight, len(low)
    )
    return render(pros, cons, features, context, low)
