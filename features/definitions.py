"""What a lead's feature vector holds, and what it must never hold.

The Redis script (``update.lua``) keeps the raw rolling state; this module names
the features the model and the prior can see and turns the script's reply into
a plain ``dict``. Everything here is pure and tested without I/O.

Fair Housing: no protected characteristic or proxy is ever a feature. The
engine never stores names, language or neighbourhood demographics; ``area`` is
used only as an identifier to count *how many distinct* areas a lead looks at
(search narrowness), never as a value the model can weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CATEGORICAL",
    "FEATURE_NAMES",
    "NUMERIC",
    "PRIOR_SIGNALS",
    "PROTECTED_TERMS",
    "RAW_FIELDS",
    "model_input",
    "pack_features",
    "parse_reply",
    "unpack_features",
]

#: Numeric features in the order the Lua script returns them.
NUMERIC: tuple[str, ...] = (
    "views_24h",
    "views_7d",
    "views_30d",
    "repeat_views_48h",
    "distinct_properties_30d",
    "distinct_areas_30d",
    "saves",
    "unsaves",
    "searches",
    "saved_searches",
    "shares",
    "mortgage_calcs",
    "valuation_views",
    "inquiries",
    "showing_requests",
    "valuation_requests",
    "call_requests",
    "email_opens",
    "email_clicks",
    "replies",
    "reply_recency",
    "dwell_min",
    "days_silent_before",
    "reactivated",
    "unsubscribes",
    "bounces",
    "opt_outs",
    "agent_contacts_unanswered",
)

#: Profile features (one-hot for the model).
CATEGORICAL: tuple[str, ...] = ("source", "side", "timeline")

FEATURE_NAMES: tuple[str, ...] = NUMERIC + CATEGORICAL

#: Signals the points prior may weight: the numeric features plus derived ones.
PRIOR_SIGNALS: tuple[str, ...] = NUMERIC + ("views_30d_broad",)

#: Terms that may never name a feature or config key (FHA protected classes and proxies).
PROTECTED_TERMS: tuple[str, ...] = (
    "race", "color", "colour", "religion", "religious", "national_origin", "nationality",
    "ethnicity", "ethnic", "sex", "gender", "familial_status", "pregnant", "children",
    "disability", "disabled", "handicap", "name", "first_name", "last_name", "surname",
    "language", "demographics", "neighborhood_demographics", "marital_status", "age",
)  # fmt: skip

#: Raw (non-feature) fields the script returns after the numeric features.
RAW_FIELDS: tuple[str, ...] = (
    "source",
    "side",
    "timeline",
    "last_ts",
    "repeat_property",
    "reactivated_now",
    "blocked",
    "last_reply_channel",
    "not_interested",
    "invalid_contact",
    "agent_id",
    "last_area",
    "last_property",
    "last_hand_ts",
)


def parse_reply(values: Sequence[str]) -> tuple[dict[str, float | str], dict[str, Any]]:
    """Split the script's reply fields into (features, raw context).

    ``values`` holds the numeric features in :data:`NUMERIC` order, then the
    :data:`RAW_FIELDS`, all as text (Lua replies cannot carry floats).
    """
    n = len(NUMERIC)
    pairs = zip(NUMERIC, values[:n], strict=True)
    feats: dict[str, float | str] = {name: float(v) for name, v in pairs}
    raw = dict(zip(RAW_FIELDS, values[n:], strict=True))
    for name in CATEGORICAL:
        feats[name] = raw[name] or "unknown"
    context: dict[str, Any] = {
        "last_ts": float(raw["last_ts"]),
        "repeat_property": raw["repeat_property"],
        "reactivated_now": raw["reactivated_now"] == "1",
        "blocked": tuple(sorted(c for c in raw["blocked"].split(",") if c)),
        "last_reply_channel": raw["last_reply_channel"],
        "not_interested": raw["not_interested"] == "1",
        "invalid_contact": raw["invalid_contact"] == "1",
        "agent_id": raw["agent_id"],
        "last_area": raw["last_area"],
        "last_property": raw["last_property"],
        "last_hand_ts": float(raw["last_hand_ts"] or 0.0),
    }
    return feats, context


def pack_features(features: Mapping[str, float | str]) -> list[float | str]:
    """A compact copy of a feature vector (for learning snapshots): numbers then profile."""
    return [float(features.get(n, 0.0)) for n in NUMERIC] + [
        str(features.get(c) or "unknown") for c in CATEGORICAL
    ]


def unpack_features(values: Sequence[float | str]) -> dict[str, float | str]:
    """The inverse of :func:`pack_features` (older snapshots with fewer fields read as 0)."""
    out: dict[str, float | str] = dict(zip(NUMERIC, values[: len(NUMERIC)], strict=False))
    out.update(zip(CATEGORICAL, values[len(NUMERIC) :], strict=False))
    return out


_UNIT_INTERVAL = frozenset({"reply_recency", "reactivated"})  # already in [0, 1]: no log


def model_input(features: Mapping[str, float | str], names: Sequence[str]) -> dict[str, float]:
    """The model's view of a lead: log-scaled counts and one-hot profile.

    Counts are heavy-tailed (one lead views 300 homes), so ``log1p`` keeps a
    single outlier from dominating a linear model. Only ``names`` (config) are
    used: a feature not listed there is invisible to the model.
    """
    x: dict[str, float] = {}
    for name in names:
        if name in CATEGORICAL:
            x[f"{name}={features.get(name) or 'unknown'}"] = 1.0
            continue
        v = float(features.get(name, 0.0))
        if name in _UNIT_INTERVAL:
            x[name] = v
        else:
            x[name] = math.copysign(math.log1p(abs(v)), v)
    return x
