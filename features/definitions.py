"""What a lead's feature vector holds, and what it must never hold.

A lead's rolling state lives in :mod:`features.state` (the rules in
:mod:`features.spec`); this module names the features the model and the prior can
see, defines which event type moves which counter (:data:`COUNTERS`, the one copy of
that rule: applying and folding both read it) and packs feature vectors for learning
moments. Everything here is pure and tested without I/O.

Fair Housing: no protected characteristic or proxy is ever a feature. The
engine never stores names, language or neighbourhood demographics; ``area`` is
used only as an identifier to count *how many distinct* areas a lead looks at
(search narrowness), never as a value the model can weight.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CATEGORICAL",
    "COUNTERS",
    "PROFILE_BUILTIN",
    "FEATURE_NAMES",
    "NUMERIC",
    "PRIOR_SIGNALS",
    "LOCATION_PROXIES",
    "PROPS_PREFIX",
    "PROTECTED_TERMS",
    "RAW_FIELDS",
    "InputPlan",
    "input_plan",
    "input_source",
    "is_categorical",
    "model_input",
    "pack_features",
    "parse_reply",
    "profile_prop",
    "unpack_features",
]

#: Event type -> the lifetime counter it increments (features/state.py applies it and
#: sums the same counters when leads fold).
COUNTERS: dict[str, str] = {
    "page_view": "page_views",
    "property_save": "saves",
    "property_unsave": "unsaves",
    "search": "searches",
    "saved_search": "saved_searches",
    "share": "shares",
    "mortgage_calc": "mortgage_calcs",
    "valuation_view": "valuation_views",
    "inquiry": "inquiries",
    "showing_request": "showing_requests",
    "valuation_request": "valuation_requests",
    "call_request": "call_requests",
    "email_open": "email_opens",
    "email_click": "email_clicks",
    "unsubscribe": "unsubscribes",
    "bounce": "bounces",
    "opt_out": "opt_outs",
    "agent_contact": "agent_contacts",
    "call_answered": "calls_answered",
    "call_missed": "calls_missed",
}

#: Numeric features, in the order learning moments pack them (never reorder).
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
    "page_views",
    "agent_contacts",
    "calls_answered",
    "calls_missed",
)

#: Profile fields every event may carry (categorical: one-hot for the model). A tenant
#: may declare more, read from the event's ``props`` (``features.profile``).
PROFILE_BUILTIN: tuple[str, ...] = ("source", "side", "timeline")
CATEGORICAL = PROFILE_BUILTIN

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

#: Location fields a declared profile field may not read: where someone lives or looks is
#: a proxy for protected characteristics (redlining); ``area`` is only ever counted.
LOCATION_PROXIES: tuple[str, ...] = (
    "zip", "zipcode", "postcode", "postal", "area", "neighborhood", "neighbourhood", "city",
    "county", "region", "country", "address", "street", "location", "geo", "latitude",
    "longitude", "lat", "lon", "ip",
)  # fmt: skip

#: Context fields of the flat text form :func:`parse_reply` reads (after the numbers).
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


PROPS_PREFIX = "props."


def profile_prop(name: str) -> str | None:
    """The ``props`` key a declared profile field reads (``props.origin`` -> ``origin``)."""
    return name[len(PROPS_PREFIX) :] if name.startswith(PROPS_PREFIX) else None


def is_categorical(name: str) -> bool:
    return name in PROFILE_BUILTIN or name.startswith(PROPS_PREFIX)


def parse_reply(
    values: Sequence[str], profile_props: Sequence[str] = ()
) -> tuple[dict[str, float | str], dict[str, Any]]:
    """Split a flat text form of a lead's state into (features, raw context).

    ``values`` holds the numeric features in :data:`NUMERIC` order, then the
    :data:`RAW_FIELDS`, then one value per declared profile field (``profile_props``,
    e.g. ``props.origin``), all as text (a compact fixture form for tests and tools).
    """
    n = len(NUMERIC)
    pairs = zip(NUMERIC, values[:n], strict=True)
    feats: dict[str, float | str] = {name: float(v) for name, v in pairs}
    m = n + len(RAW_FIELDS)
    raw = dict(zip(RAW_FIELDS, values[n:m], strict=True))
    for name in PROFILE_BUILTIN:
        feats[name] = raw[name] or "unknown"
    for name, value in zip(profile_props, values[m:], strict=True):
        feats[name] = value or "unknown"
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


_INT31 = 2**31


def pack_features(features: Mapping[str, float | str]) -> list[Any]:
    """A compact copy of a feature vector (for learning moments): numbers, profile, props.

    Whole numbers are packed as ints (1 byte each in msgpack for small counts).
    """
    values: Any = None
    if features.__class__ is dict:  # the engine's vectors: every number there, read at once
        try:
            values = _read_numeric(features)
        except KeyError:
            pass
    if values is None:
        values = [features.get(n, 0.0) for n in NUMERIC]
    # whole numbers within 31 bits as ints (one comprehension: no call per value)
    out: list[Any] = [
        int(v) if v.is_integer() and -_INT31 < v < _INT31 else v for v in map(float, values)
    ]
    out += [str(features.get(c) or "unknown") for c in PROFILE_BUILTIN]
    props = {k: str(features[k]) for k in filter(_is_prop, features)}
    if props:
        out.append(props)
    return out


_read_numeric = operator.itemgetter(*NUMERIC)
_is_prop = operator.methodcaller("startswith", PROPS_PREFIX)


def unpack_features(values: Sequence[Any]) -> dict[str, float | str]:
    """The inverse of :func:`pack_features` (older snapshots with fewer fields read as 0)."""
    n, c = len(NUMERIC), len(PROFILE_BUILTIN)
    out: dict[str, float | str] = dict(zip(NUMERIC, values[:n], strict=False))
    out.update(zip(PROFILE_BUILTIN, values[n : n + c], strict=False))
    for extra in values[n + c :]:
        if isinstance(extra, dict):
            out.update({str(k): str(v) for k, v in extra.items()})
    return out


_UNIT_INTERVAL = frozenset({"reply_recency", "reactivated"})  # already in [0, 1]: no log


_CAT, _UNIT, _REPEAT, _LOG = 0, 1, 2, 3


class InputPlan(tuple[tuple[str, int], ...]):
    """How each configured model input is built, in order: :func:`input_plan` (made once
    per feature list; :func:`model_input` takes it in place of the names)."""


@functools.lru_cache(maxsize=64)
def _plan(names: tuple[str, ...]) -> InputPlan:
    def kind(name: str) -> int:
        if is_categorical(name):
            return _CAT
        if name in _UNIT_INTERVAL:
            return _UNIT
        return _REPEAT if name == "repeat_views_48h" else _LOG

    return InputPlan((name, kind(name)) for name in names)


def input_plan(names: Sequence[str]) -> InputPlan:
    """The plan of ``names`` for :func:`model_input` (callers on the hot path keep it)."""
    return _plan(tuple(names))


def model_input(
    features: Mapping[str, float | str], names: Sequence[str] | InputPlan
) -> dict[str, float]:
    """The model's view of a lead: log-scaled counts and one-hot profile levels.

    Counts are heavy-tailed (one lead views 300 homes), so ``log1p`` keeps a
    single outlier from dominating a linear model. A lead with no activity has every
    numeric input at 0 (the baseline explanations are measured against): the first
    view of a home is not a repeat, so ``repeat_views_48h`` counts views after it.
    Profile fields become ``name=level`` inputs of value 1 (the model keeps them out
    of its scaler); ``unknown`` is the baseline and gets no input, so a field nobody
    fills is not a second, faster-moving intercept. Only ``names`` (config) are used: a
    feature not listed there is invisible to the model.
    """
    x: dict[str, float] = {}
    get, log1p = features.get, math.log1p
    plan = names if isinstance(names, InputPlan) else _plan(tuple(names))
    for name, kind in plan:
        if kind == _LOG:  # the common case first
            v = float(get(name, 0.0))
            x[name] = log1p(v) if v >= 0 else -log1p(-v)
        elif kind == _CAT:
            level = get(name) or "unknown"
            if level != "unknown":  # the baseline level: no input (not a second intercept)
                x[f"{name}={level}"] = 1.0
        elif kind == _UNIT:
            x[name] = float(get(name, 0.0))
        else:  # _REPEAT: the first view of a home is not a repeat
            v = max(0.0, float(get(name, 0.0)) - 1.0)
            x[name] = log1p(v) if v >= 0 else -log1p(-v)
    return x


#: :func:`model_input`'s arithmetic for a numeric input of each kind, as Python source
#: that turns the feature's value ``v`` (not 0) into the input's value ``v``: the same
#: operations in the same order, so the same float (``engine/model.py`` compiles it).
_SOURCE: dict[int, tuple[str, ...]] = {
    _LOG: ("v = float(v)", "v = log1p(v) if v >= 0 else -log1p(-v)"),
    _UNIT: ("v = float(v)",),
    _REPEAT: ("v = max(0.0, float(v) - 1.0)", "v = log1p(v) if v >= 0 else -log1p(-v)"),
}


def input_source(plan: InputPlan) -> tuple[tuple[str, tuple[str, ...] | None], ...]:
    """Each input of ``plan`` in :func:`model_input`'s order: (name, the source of its
    value from ``v``, ``math.log1p`` as ``log1p``), or (field, None) for a profile field
    (input ``field=level`` of value 1.0 unless the level is unknown)."""
    return tuple((name, None if kind == _CAT else _SOURCE[kind]) for name, kind in plan)
