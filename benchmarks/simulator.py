"""Seeded simulator of IDX click streams: contract-v1 events with a known latent truth.

``generate(SimConfig(...))`` yields every event of a simulated brokerage, sorted by
event time; ``truths(config)`` returns, for the same seed, the hidden state of every
lead (latent intent, side, timeline, source, whether it converted). Benchmarks,
``leadpulse demo`` and the model tests use it as a workload whose answer is known.
Standard library only; the same :class:`SimConfig` gives byte-identical output
(one ``random.Random`` per lead, seeded from ``seed`` and the lead's index, so lead
``i`` is the same whatever ``leads`` is).

Generative model (the constants named here are module-level and can be read)
-----------------------------------------------------------------------------
Catalogue
    ``areas`` zip/neighbourhood ids (``z10001``, ``z10003`` ...) with a log-normal
    base price (median 450k, sigma 0.45) and Pareto(1.5) sizes; ``properties``
    listings (``P000000`` ...) spread over the areas, price = area base x
    LogNormal(0, 0.35) rounded to $1,000, popularity Zipf(``ZIPF_S`` = 1.1) over a
    shuffled rank.
Leads (seed 003: source x intent)
    Lead ``i`` (``L00001`` ...) arrives uniformly in the first ``CREATE_SPAN`` (80 %)
    of the span. Source from ``SOURCE_MIX`` (portal 20 %, website 14 %, listing_ad
    12 %, valuation_funnel 10 %, social 10 %, paid_search 8 %, giveaway 7 %,
    open_house 7 %, database 6 %, referral 6 %); latent intent ~ Beta(a, b) from
    ``SOURCE_INTENT`` (mean 0.50 referral, 0.40 valuation, 0.37 listing ad ...
    0.18 social, 0.11 giveaway). With ``HOT_OVERRIDE_P`` = 4 % a giveaway/social
    lead is really hot (Beta(5, 2)) and states ``0-3m``: the stated timeline must
    override the source. Side from ``SIDE_MIX`` (valuation funnel: mostly sellers,
    else mostly buyers). Timeline from intent + N(0, 0.12) cut at 0.55/0.38/0.20
    (``0-3m``/``3-6m``/``6-18m``/``18m+``), stated as ``unknown`` with 15-35 %
    (more on giveaway/social/database) and revealed later by a ``profile_update``.
    No names, language, demographics or any other protected characteristic exist
    in the model, so none can leak into events.
Sessions (behaviour)
    A thinned Poisson process: peak rate ``0.35 + 2.6 * intent**1.2`` sessions a
    day, decaying with time constant ``4 + 25 * intent`` days to a floor of
    ``0.06 + 0.2 * intent``, times a diurnal profile (local time UTC-5, evening
    peak). The first session starts seconds after ``lead_created``. A session is a
    ``page_view``, sometimes a ``search`` (props ``min_price``, ``max_price``,
    ``areas``), ``1 + Geometric(mean 1 + 5 * intent)`` ``property_view`` events with
    log-normal ``dwell_s`` (longer for high intent and repeats), and with
    intent-rising probabilities ``property_save`` / ``property_unsave``,
    ``saved_search``, ``share``, ``mortgage_calc`` (buyers), ``valuation_view``
    (sellers). Views pick from a shortlist (re-views; ``0.05 + 0.5 * intent``), the
    lead's search (areas x price band, Zipf-weighted; ``0.35 + 0.55 * intent``) or
    the whole catalogue (Zipf). High-intent leads narrow their search over their
    first ~8 sessions (band half-width down to 20 %, areas down to one); low-intent
    leads drift (target price and home area wander).
Hand-raises
    Per session with probability ``0.004 + 0.12 * intent**2``: ``showing_request``,
    ``inquiry``, ``call_request`` (buyers) or ``valuation_request``, ``call_request``,
    ``inquiry`` (sellers). Each gets an agent response (speed to lead: median ~6 min in
    business hours 08-20 local, otherwise next morning unless covered).
Agents and conversation (seed 002)
    ``N_AGENTS`` agents (``A001`` ...); one is ``assigned`` at creation. First touch
    is a call at speed-to-lead time, then the 14-day cadence ``CADENCE`` (days 1, 2,
    4, 6, 8, 11, 14; each touch with 70 %), then a check-in every 20-40 days. Each
    touch is an ``agent_contact`` (``agent_id``, ``channel`` call/sms/email); a call
    ends ``call_answered`` (``0.08 + 0.55 * intent``, with call length as ``dwell_s``)
    or ``call_missed``; sms/email touches get a ``reply`` on the same channel with
    ``0.04 + 0.45 * intent``. Marketing emails every 3-8 days (1-3 after a saved
    search) give ``email_open`` (``(0.1 + 0.5 * intent)``, fading with age) and
    ``email_click`` (``0.1 + 0.45 * intent`` of opens).
Negatives
    ``bounce`` (3 %, first email), ``invalid_contact`` (4 % of phones; 1 % for
    converters), ``unsubscribe`` (per open ``0.003 + 0.03 * (1 - intent)**2``),
    ``opt_out`` on sms (per unanswered text ``0.01 + 0.05 * (1 - intent)``) or email
    (0.4 %), ``not_interested`` (non-converters, per conversation
    ``0.3 * (1 - intent)**2``). A time-ordered consent pass then enforces the rules
    the scorer relies on: after an sms opt-out (or an invalid phone) no event on the
    sms channel at all (no reply, no agent text); after an unsubscribe, bounce or
    email opt-out none on email; after an invalid phone none on call; after
    ``not_interested`` no more conversation or hand-raises and 80 % less browsing.
Dormancy and reactivation
    With ``DORMANT_P`` = 30 %, from 3-20 days after creation a lead is silent (no
    event it originates) for ``31 + Exp(mean 15)`` days; 60 % (all converters) come
    back with a fresh burst of sessions, the others never do (inside the span).
    With the default 30-day span reactivations rarely fit; use ``days >= 60``.
Outcomes
    A lead converts with ``p_convert(intent) = 0.015 + 0.7 * intent**2.2``. Its
    anchor is its first hand-raise (after reactivation if it went dormant; one is
    added in an early session if it never raised a hand); ``appointment_set``
    follows after LogNormal(median 2.5 days, sigma 0.9) clipped to 2 h-28 days, then
    ``appointment_held`` (75 %, +1-7 days), ``agreement_signed`` (55 %, median +7
    days), ``closed`` (80 %, +30-60 days). Non-converters get ``lost`` with
    ``0.3 + 0.35 * (1 - intent)`` (70 % after ``not_interested``) 21-60 days after
    their last activity. Everything at or after ``start_ts + days`` is cut, so
    ``LeadTruth.converted`` means "an ``appointment_set`` was emitted". About 10 %
    of leads convert with the defaults.
Anonymous browsing
    With ``anonymous_share`` a lead first browses as ``visitor_id`` (``V`` + 10 hex)
    in 1-4 sessions during the 0.3-6 days before sign-up, then ``lead_created`` and
    an ``identify`` event carrying both ids (events before ``start_ts`` are cut).

Events are plain dicts in contract v1: ``event_id`` (``L00042-17``, the lead's
17th event; ``V...-n`` for anonymous ones), ``lead_id`` or ``visitor_id``,
``type``, ``ts`` (epoch seconds, milliseconds), ``tenant``, then the fields that
mean something for the type. Ties in ``ts`` are broken by lead index, then by the
lead's own event order.

Open loop: :func:`open_loop` hands a sequence of events to a ``send`` callback on a
fixed schedule (``rate`` per second of wall time), whether or not the consumer keeps
up; the load tests use it to produce straight to the streams at a target rate.

CLI: ``python -m benchmarks.simulator --leads 1000 --days 60 --seed 7 --out
events.jsonl`` (or ``--events 100000``; ``--out -`` writes to stdout).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from engine.events import (
    BEHAVIOUR_TYPES,
    EVENT_TYPES,
    HAND_RAISE_TYPES,
    POSITIVE_OUTCOMES,
)

__all__ = [
    "CADENCE",
    "EVENT_TYPES",
    "HAND_RAISE_TYPES",
    "LeadTruth",
    "N_AGENTS",
    "OpenLoopStats",
    "POSITIVE_OUTCOME_TYPES",
    "SOURCE_INTENT",
    "SOURCE_MIX",
    "SimConfig",
    "events_for_count",
    "generate",
    "main",
    "open_loop",
    "p_convert",
    "truths",
    "write_jsonl",
]

DAY = 86_400.0
HOUR = 3_600.0
MINUTE = 60.0
TZ_OFFSET_S = -5 * HOUR  # local time of the simulated market (diurnal and business hours)

# Contract v1 event types: the engine's own lists (engine/events.py has no dependencies).
POSITIVE_OUTCOME_TYPES = POSITIVE_OUTCOMES
# Events the lead itself causes: none of them happen while a lead is dormant.
_LEAD_ORIGINATED: frozenset[str] = frozenset(
    BEHAVIOUR_TYPES
    + HAND_RAISE_TYPES
    + ("email_open", "email_click", "reply", "call_answered")
    + ("unsubscribe", "opt_out", "not_interested", "profile_update")
)
# After `not_interested`: conversation and hand-raises stop, browsing thins out.
_AFTER_NI_DROP: frozenset[str] = frozenset(
    HAND_RAISE_TYPES
    + ("reply", "call_answered", "call_missed", "agent_contact", "email_click")
    + ("not_interested", "profile_update")
)
_AFTER_NI_THIN: frozenset[str] = frozenset(BEHAVIOUR_TYPES + ("email_open",))

SOURCE_MIX: tuple[tuple[str, float], ...] = (
    ("portal", 0.20),
    ("website", 0.14),
    ("listing_ad", 0.12),
    ("valuation_funnel", 0.10),
    ("social", 0.10),
    ("paid_search", 0.08),
    ("giveaway", 0.07),
    ("open_house", 0.07),
    ("database", 0.06),
    ("referral", 0.06),
)
SOURCE_INTENT: dict[str, tuple[float, float]] = {  # Beta(a, b) of latent intent
    "referral": (3.0, 3.0),  # mean 0.50
    "valuation_funnel": (2.2, 3.3),  # 0.40
    "listing_ad": (2.0, 3.4),  # 0.37
    "portal": (2.0, 3.6),  # 0.36
    "open_house": (1.8, 3.6),  # 0.33
    "database": (1.6, 3.4),  # 0.32
    "website": (1.6, 3.6),  # 0.31
    "paid_search": (1.5, 4.0),  # 0.27
    "social": (1.1, 5.0),  # 0.18
    "giveaway": (0.8, 6.5),  # 0.11
}
LOW_INTENT_SOURCES = ("giveaway", "social")
HOT_OVERRIDE_P = 0.04
SIDE_MIX: dict[str, tuple[float, float, float]] = {  # P(buyer), P(seller), P(both)
    "valuation_funnel": (0.05, 0.75, 0.20),
    "open_house": (0.75, 0.15, 0.10),
    "database": (0.60, 0.25, 0.15),
    "referral": (0.65, 0.20, 0.15),
}
DEFAULT_SIDE_MIX = (0.82, 0.08, 0.10)
UNKNOWN_TIMELINE_P: dict[str, float] = {"giveaway": 0.35, "social": 0.30, "database": 0.30}
DEFAULT_UNKNOWN_TIMELINE_P = 0.15
CREATE_SPAN = 0.8
ZIPF_S = 1.1
N_AGENTS = 25
CADENCE: tuple[tuple[int, str], ...] = (
    (1, "sms"), (2, "call"), (4, "email"), (6, "call"), (8, "sms"), (11, "email"), (14, "call"),
)  # fmt: skip
DORMANT_P = 0.30
_DIURNAL = (
    0.10, 0.05, 0.03, 0.03, 0.03, 0.05, 0.15, 0.35, 0.50, 0.55, 0.55, 0.60,
    0.65, 0.60, 0.55, 0.55, 0.60, 0.70, 0.85, 1.00, 1.00, 0.90, 0.60, 0.30,
)  # fmt: skip
_TIMELINE_STEPS = ("0-3m", "3-6m", "6-18m", "18m+")
_LOST_REASONS = ("no_response", "not_ready", "other_agent", "no_response")


def p_convert(intent: float) -> float:
    """Probability that a lead of this latent intent converts (before the span cut)."""
    return 0.015 + 0.7 * math.pow(intent, 2.2)


@dataclass(frozen=True)
class SimConfig:
    """What to simulate; the same config always gives the same events."""

    seed: int = 7
    leads: int = 50
    days: float = 30.0  # simulated event-time span
    start_ts: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z, epoch seconds
    tenant: str = "demo"
    properties: int = 2_000  # listing catalogue size (Zipf popularity)
    areas: int = 40  # zip/neighbourhood ids, "z10001"-style strings
    anonymous_share: float = 0.0  # leads that browse as visitor_id first, then `identify`

    def __post_init__(self) -> None:
        if self.leads < 0:
            raise ValueError(f"leads must be >= 0, got {self.leads}")
        if not self.days > 0:
            raise ValueError(f"days must be > 0, got {self.days}")
        if self.properties < 1 or self.areas < 1:
            raise ValueError("properties and areas must be >= 1")
        if not 0.0 <= self.anonymous_share <= 1.0:
            raise ValueError(f"anonymous_share must be in [0, 1], got {self.anonymous_share}")
        if not self.tenant:
            raise ValueError("tenant must not be empty")


@dataclass(frozen=True)
class LeadTruth:
    """The hidden state of one simulated lead."""

    lead_id: str
    intent: float  # latent intent in [0, 1]
    side: str  # buyer | seller | both
    timeline: str  # stated at creation: 0-3m | 3-6m | 6-18m | 18m+ | unknown
    source: str  # contract source
    converted: bool  # an appointment_set was emitted inside the span
    outcome_ts: float | None  # ts of that appointment_set


# A lead's event before numbering: (ts_ms, insertion order, type, fields, anonymous?)
_Row = tuple[int, int, str, dict[str, Any], bool]
# A numbered event: (ts_ms, lead index, seq, id key, id, event_id, type, fields)
_Out = tuple[int, int, int, str, str, str, str, dict[str, Any]]


def _cumsum(values: Iterable[float]) -> list[float]:
    return list(itertools.accumulate(values))


def _pick_cum(rng: random.Random, cum: list[float]) -> int:
    i = bisect.bisect_right(cum, rng.random() * cum[-1])
    return min(i, len(cum) - 1)


_SOURCE_NAMES = tuple(name for name, _ in SOURCE_MIX)
_SOURCE_CUM = _cumsum(w for _, w in SOURCE_MIX)


class _Catalogue:
    """Areas and listings shared by all leads of one simulation."""

    def __init__(self, cfg: SimConfig) -> None:
        rng = random.Random(f"leadpulse-sim:{cfg.seed}:catalogue")
        n_a, n_p = cfg.areas, cfg.properties
        self.area_ids = [f"z{10001 + 2 * k:05d}" for k in range(n_a)]
        self.area_base = [_lognorm(rng, math.log(450_000.0), 0.45) for _ in range(n_a)]
        self.area_cum = _cumsum(rng.paretovariate(1.5) for _ in range(n_a))
        ranks = list(range(n_p))
        rng.shuffle(ranks)
        self.prop_ids = [f"P{j:06d}" for j in range(n_p)]
        self.weight = [1.0 / (ranks[j] + 1) ** ZIPF_S for j in range(n_p)]
        self.cum = _cumsum(self.weight)
        self.prop_area = [_pick_cum(rng, self.area_cum) for _ in range(n_p)]
        self.prop_price = [
            max(25_000, int(round(self.area_base[a] * _lognorm(rng, 0.0, 0.35), -3)))
            for a in self.prop_area
        ]
        by_area: list[list[int]] = [[] for _ in range(n_a)]
        for j, a in enumerate(self.prop_area):
            by_area[a].append(j)
        for members in by_area:
            members.sort(key=lambda j: (self.prop_price[j], j))
        self.by_area = by_area
        self.by_area_prices = [[self.prop_price[j] for j in m] for m in by_area]

    def zipf(self, rng: random.Random) -> int:
        return _pick_cum(rng, self.cum)

    def in_band(self, areas: Sequence[int], lo: int, hi: int) -> list[int]:
        """Listings in these areas priced within [lo, hi] (the nearest one if none)."""
        out: list[int] = []
        for a in areas:
            prices = self.by_area_prices[a]
            i, k = bisect.bisect_left(prices, lo), bisect.bisect_right(prices, hi)
            if k > i:
                out.extend(self.by_area[a][i:k])
            elif prices:
                out.append(self.by_area[a][min(i, len(prices) - 1)])
        return out


def _lognorm(rng: random.Random, mu: float, sigma: float) -> float:
    """``rng.lognormvariate`` via the faster ``gauss`` (same distribution)."""
    return math.exp(rng.gauss(mu, sigma))


def _local_hour(t: float) -> int:
    return int(((t + TZ_OFFSET_S) % DAY) // HOUR)


def _timeline_of(z: float) -> str:
    if z > 0.55:
        return "0-3m"
    if z > 0.38:
        return "3-6m"
    if z > 0.20:
        return "6-18m"
    return "18m+"


class _Lead:
    """Simulates one lead: profile, behaviour, conversation, negatives, outcomes."""

    def __init__(self, cfg: SimConfig, cat: _Catalogue, index: int) -> None:
        self.cfg, self.cat, self.index = cfg, cat, index
        self.lead_id = f"L{index + 1:05d}"
        self.rng = rng = random.Random(f"leadpulse-sim:{cfg.seed}:lead:{index}")
        self.end = cfg.start_ts + cfg.days * DAY
        self.rows: list[_Row] = []

        self.source = _SOURCE_NAMES[_pick_cum(rng, _SOURCE_CUM)]
        hot = self.source in LOW_INTENT_SOURCES and rng.random() < HOT_OVERRIDE_P
        a, b = (5.0, 2.0) if hot else SOURCE_INTENT[self.source]
        self.intent = rng.betavariate(a, b)
        pb, ps, _ = SIDE_MIX.get(self.source, DEFAULT_SIDE_MIX)
        u = rng.random()
        self.side = "buyer" if u < pb else "seller" if u < pb + ps else "both"
        z = self.intent + rng.gauss(0.0, 0.12)
        self.true_timeline = "0-3m" if hot else _timeline_of(z)
        p_unknown = UNKNOWN_TIMELINE_P.get(self.source, DEFAULT_UNKNOWN_TIMELINE_P)
        unknown = not hot and rng.random() < p_unknown
        self.timeline = "unknown" if unknown else self.true_timeline
        self.converter = rng.random() < p_convert(self.intent)
        self.agent_id = f"A{rng.randrange(N_AGENTS) + 1:03d}"
        self.created = cfg.start_ts + rng.random() * cfg.days * DAY * CREATE_SPAN
        self.dorm_start = self.dorm_end = math.inf
        if rng.random() < DORMANT_P:
            self.dorm_start = self.created + rng.uniform(3.0, 20.0) * DAY
            if self.converter or rng.random() < 0.6:
                self.dorm_end = self.dorm_start + (31.0 + rng.expovariate(1 / 15)) * DAY
        self.phone_invalid = rng.random() < (0.01 if self.converter else 0.04)
        self.email_bounce = rng.random() < 0.03

        # Search preferences: a home area, neighbours, a target price and band.
        self.home = _pick_cum(rng, cat.area_cum)
        n_areas = len(cat.area_ids)
        k0 = 1 if self.side == "seller" else 2 + rng.randrange(3)
        offsets = (0, 1, -1, 2, -2)
        self.pref_areas = list(dict.fromkeys((self.home + d) % n_areas for d in offsets[:k0]))
        self.estimate = int(round(cat.area_base[self.home] * _lognorm(rng, 0.0, 0.3), -3))
        self.target = cat.area_base[self.home] * _lognorm(rng, 0.0, 0.25)
        self.band0 = 0.25 if self.side == "seller" else rng.uniform(0.35, 0.6)
        self.p_repeat = 0.05 + 0.5 * self.intent
        self.p_focus = 0.35 + 0.55 * self.intent
        self.n_sessions = 0
        self.shortlist: list[int] = []
        self.saved: list[int] = []
        self.last_prop = -1
        self.search: tuple[int, int, list[str]] = (0, 0, [])
        self.cand: list[int] = []
        self.cand_cum: list[float] = []
        self._update_search(drift=False)

        self.hand_raises: list[float] = []
        self.session_starts: list[float] = []
        self.ni_times: list[float] = []
        self.saved_search_at = math.inf
        self.revealed = False
        self.moved_up = False
        self.invalid_emitted = False
        self.reactivated_at = self.created
        self.visitor_id = ""

    # -- plumbing ---------------------------------------------------------------

    def add(self, t: float, etype: str, fields: dict[str, Any], anon: bool = False) -> None:
        self.rows.append((round(t * 1000.0), len(self.rows), etype, fields, anon))

    def quiet(self, t: float) -> bool:
        return self.dorm_start <= t < self.dorm_end

    def prop_fields(self, j: int) -> dict[str, Any]:
        cat = self.cat
        return {
            "property_id": cat.prop_ids[j],
            "price": cat.prop_price[j],
            "area": cat.area_ids[cat.prop_area[j]],
        }

    def response_time(self, t: float) -> float:
        """When an agent first reacts to something the lead did at ``t``."""
        rng = self.rng
        if 8 <= _local_hour(t) < 20:
            return t + min(6 * HOUR, max(30.0, _lognorm(rng, math.log(6 * MINUTE), 1.1)))
        if rng.random() < 0.35:  # after-hours coverage (ISA or on-call agent)
            return t + max(60.0, _lognorm(rng, math.log(15 * MINUTE), 1.0))
        return self.business_slot(t + 8 * HOUR, lo=8.0, width=2.0)

    def business_slot(self, t: float, lo: float = 9.0, width: float = 9.0) -> float:
        """A time in business hours on the local day of ``t`` (or the next one)."""
        day = math.floor((t + TZ_OFFSET_S) / DAY)
        slot = day * DAY - TZ_OFFSET_S + (lo + self.rng.uniform(0.0, width)) * HOUR
        return slot if slot > t - 12 * HOUR else slot + DAY

    # -- behaviour --------------------------------------------------------------

    def _update_search(self, drift: bool = True) -> None:
        rng, cat = self.rng, self.cat
        if drift and rng.random() < 0.25 * (1.0 - self.intent):
            self.target *= _lognorm(rng, 0.0, 0.2)
            if self.side != "seller" and rng.random() < 0.3:
                self.home = _pick_cum(rng, cat.area_cum)
                n = len(cat.area_ids)
                self.pref_areas = list(dict.fromkeys([self.home, *self.pref_areas[1:]]))[:n]
        progress = min(1.0, self.n_sessions / 8.0) * self.intent
        half = self.band0 * (1.0 - 0.8 * progress)
        centre = self.estimate if self.side == "seller" else self.target
        lo = int(round(centre * (1.0 - half), -3))
        hi = int(round(centre * (1.0 + half), -3))
        k0 = len(self.pref_areas)
        k = max(1, round(k0 - (k0 - 1) * min(1.0, 1.3 * progress)))
        areas = self.pref_areas[:k]
        self.search = (lo, hi, [cat.area_ids[a] for a in areas])
        self.cand = cat.in_band(areas, lo, hi)
        weight = cat.weight
        self.cand_cum = _cumsum([weight[j] for j in self.cand])

    def pick_property(self, rng: random.Random) -> int:
        if self.shortlist and rng.random() < self.p_repeat:
            return rng.choice(self.shortlist)
        if self.cand and rng.random() < self.p_focus:
            return self.cand[_pick_cum(rng, self.cand_cum)]
        return self.cat.zipf(rng)

    def sessions(self) -> None:
        rng, intent = self.rng, self.intent
        peak = (0.35 + 2.6 * intent**1.2) / DAY
        tau = (4.0 + 25.0 * intent) * DAY
        floor = 0.06 + 0.2 * intent
        burst = self.created
        self.session(self.created + rng.uniform(5.0, 90.0))
        t = self.created
        while True:
            t += rng.expovariate(peak)
            if t >= self.dorm_start and burst < self.dorm_start:
                if self.dorm_end >= self.end:
                    return
                t = burst = self.reactivated_at = self.dorm_end
                self.session(t)
                continue
            if t >= self.end:
                return
            rate = floor + (1.0 - floor) * math.exp(-(t - burst) / tau)
            if rng.random() < rate * _DIURNAL[_local_hour(t)]:
                self.session(t)

    def session(self, t: float) -> None:
        rng, intent, cat = self.rng, self.intent, self.cat
        self.session_starts.append(t)
        self.n_sessions += 1
        seller = self.side == "seller"
        dwell = round(_lognorm(rng, math.log(20.0), 0.7), 1)
        self.add(t, "page_view", {"dwell_s": dwell})
        c = t + dwell
        searched = False
        if self.n_sessions == 1 or rng.random() < (0.15 if seller else 0.35 + 0.2 * intent):
            self._update_search()
            lo, hi, areas = self.search
            props = {"min_price": lo, "max_price": hi, "areas": list(areas)}
            self.add(c, "search", {"props": props})
            c += rng.uniform(3.0, 30.0)
            searched = True
        c = self._view_homes(c, seller)
        if searched and not seller and rng.random() < 0.02 + 0.12 * intent:
            lo, hi, areas = self.search
            props = {"min_price": lo, "max_price": hi, "areas": list(areas)}
            self.add(c, "saved_search", {"props": props})
            self.saved_search_at = min(self.saved_search_at, c)
            c += rng.uniform(2.0, 10.0)
        if rng.random() < 0.02 + 0.08 * intent:
            self.add(c, "share", self.prop_fields(self.last_prop))
            c += rng.uniform(5.0, 30.0)
        if self.side != "seller" and rng.random() < 0.02 + 0.18 * intent:
            price = cat.prop_price[self.last_prop]
            down = rng.choice((5, 10, 20, 20, 25))
            self.add(c, "mortgage_calc", {"price": price, "props": {"down_payment_pct": down}})
            c += rng.uniform(20.0, 120.0)
        if self.side != "buyer" and rng.random() < 0.1 + 0.35 * intent:
            area = cat.area_ids[self.pref_areas[0]]
            self.add(c, "valuation_view", {"area": area, "price": self.estimate})
            c += rng.uniform(20.0, 90.0)
        if rng.random() < 0.004 + 0.12 * intent**2:
            self.hand_raise(c + rng.uniform(5.0, 60.0))

    def _view_homes(self, c: float, seller: bool) -> float:
        """A session's property views, with the saves (and an unsave) they lead to; the
        time after them."""
        rng, intent = self.rng, self.intent
        mean_views = 1.0 + (2.0 if seller else 5.0) * intent
        n_views = 1
        while rng.random() < mean_views / (1.0 + mean_views):
            n_views += 1
        mu = math.log(25.0 + 60.0 * intent)
        for _ in range(n_views):
            j = self.pick_property(rng)
            repeat = j in self.shortlist
            view_dwell = round(_lognorm(rng, mu + (0.4 if repeat else 0.0), 0.8), 1)
            self.add(c, "property_view", {**self.prop_fields(j), "dwell_s": view_dwell})
            c += view_dwell + rng.uniform(2.0, 20.0)
            self.last_prop = j
            if not repeat and rng.random() < (0.05 + 0.4 * intent) * min(1.0, view_dwell / 40):
                self.shortlist.append(j)
                repeat = True
            if j not in self.saved and rng.random() < (0.03 + 0.2 * intent) * (
                1.0 if repeat else 0.3
            ):
                self.saved.append(j)
                self.add(c, "property_save", self.prop_fields(j))
                c += rng.uniform(1.0, 5.0)
        if self.saved and rng.random() < 0.04:
            j = self.saved.pop(rng.randrange(len(self.saved)))
            self.add(c, "property_unsave", self.prop_fields(j))
            c += rng.uniform(1.0, 5.0)
        return c

    def hand_raise(self, t: float) -> None:
        rng, cat = self.rng, self.cat
        u = rng.random()
        if self.side == "buyer" or (self.side == "both" and u < 0.5):
            kind = "showing_request" if u < 0.45 else "inquiry" if u < 0.8 else "call_request"
        else:
            kind = "valuation_request" if u < 0.6 else "call_request" if u < 0.85 else "inquiry"
        j = self.shortlist[-1] if self.shortlist else self.last_prop
        if kind == "valuation_request":
            area = cat.area_ids[self.pref_areas[0]]
            fields: dict[str, Any] = {"area": area, "price": self.estimate, "channel": "web"}
        elif kind == "call_request":
            fields = {"channel": "web"}
        else:
            fields = {**self.prop_fields(j), "channel": "chat" if rng.random() < 0.2 else "web"}
        self.add(t, kind, fields)
        self.hand_raises.append(t)
        if (
            not self.moved_up
            and self.timeline in _TIMELINE_STEPS[1:]
            and rng.random() < 0.3 * self.intent
        ):  # the hand-raise brings the stated timeline one step closer
            self.moved_up = True
            self.timeline = _TIMELINE_STEPS[_TIMELINE_STEPS.index(self.timeline) - 1]
            self.add(t + rng.uniform(60.0, 600.0), "profile_update", {"timeline": self.timeline})
        rt = self.response_time(t)
        if not self.contact(rt, "call") and rng.random() < 0.6:
            self.contact(rt + rng.uniform(1.0, 5.0) * MINUTE, "sms")

    # -- conversation -----------------------------------------------------------

    def contact(self, t: float, channel: str) -> bool:
        """An agent touch; returns whether the lead engaged (answered or replied)."""
        if t >= self.end:
            return False
        rng, intent = self.rng, self.intent
        agent = {"agent_id": self.agent_id}
        self.add(t, "agent_contact", {**agent, "channel": channel})
        live = not self.quiet(t)
        if channel == "call":
            if self.phone_invalid:
                if not self.invalid_emitted:
                    self.invalid_emitted = True
                    self.add(t + 20.0, "invalid_contact", {**agent, "channel": "call"})
                return False
            if live and rng.random() < 0.08 + 0.55 * intent:
                talk = round(min(3600.0, _lognorm(rng, math.log(180.0), 0.8)), 1)
                ta = t + rng.uniform(5.0, 25.0)
                self.add(ta, "call_answered", {**agent, "channel": "call", "dwell_s": talk})
                self.engaged(ta + talk, "call")
                return True
            self.add(t + 30.0, "call_missed", {**agent, "channel": "call"})
            return False
        if channel == "sms" and self.phone_invalid:
            return False
        if live and rng.random() < 0.04 + 0.45 * intent:
            delay = min(2 * DAY, max(20.0, _lognorm(rng, math.log(25 * MINUTE), 1.2)))
            self.add(t + delay, "reply", {**agent, "channel": channel})
            self.engaged(t + delay, channel)
            return True
        if channel == "sms" and rng.random() < 0.01 + 0.05 * (1.0 - intent):
            delay = max(10.0, _lognorm(rng, math.log(5 * MINUTE), 1.0))
            self.add(t + delay, "opt_out", {"channel": "sms"})
        elif channel == "email" and rng.random() < 0.004:
            self.add(t + rng.uniform(1.0, 48.0) * HOUR, "opt_out", {"channel": "email"})
        return False

    def engaged(self, t: float, channel: str) -> None:
        rng = self.rng
        if self.timeline == "unknown" and not self.revealed and rng.random() < 0.5:
            self.revealed = True
            self.timeline = self.true_timeline
            fields = {"timeline": self.timeline, "side": self.side}
            self.add(t + rng.uniform(30.0, 600.0), "profile_update", fields)
        if not self.converter and rng.random() < 0.3 * (1.0 - self.intent) ** 2:
            tn = t + rng.uniform(10.0, 120.0)
            self.add(tn, "not_interested", {"agent_id": self.agent_id, "channel": channel})
            self.ni_times.append(tn)

    def agent(self) -> None:
        rng = self.rng
        self.add(self.created + rng.uniform(1.0, 30.0), "assigned", {"agent_id": self.agent_id})
        t = self.response_time(self.created)
        if not self.contact(t, "call") and rng.random() < 0.7:
            self.contact(t + rng.uniform(1.0, 5.0) * MINUTE, "sms")
        for day, channel in CADENCE:
            if rng.random() < 0.7:
                self.contact(self.business_slot(self.created + day * DAY), channel)
        t = self.created + CADENCE[-1][0] * DAY
        while True:
            t += rng.uniform(20.0, 40.0) * DAY
            if t >= self.end:
                return
            if rng.random() < 0.75:
                self.contact(self.business_slot(t), rng.choice(("call", "sms", "email")))

    def emails(self) -> None:
        rng, intent = self.rng, self.intent
        t = self.created + rng.uniform(0.5, 3.0) * DAY
        k = 0
        while t < self.end:
            k += 1
            campaign = f"C{k:03d}"
            if self.email_bounce:
                self.add(t + rng.uniform(10.0, 300.0), "bounce", {"channel": "email"})
                return
            fade = 0.4 + 0.6 * math.exp(-(t - self.created) / (45 * DAY))
            if rng.random() < (0.1 + 0.5 * intent) * fade:
                to = t + min(3 * DAY, _lognorm(rng, math.log(3 * HOUR), 1.2))
                if not self.quiet(to):
                    fields = {"channel": "email", "props": {"campaign": campaign}}
                    self.add(to, "email_open", fields)
                    if rng.random() < 0.1 + 0.45 * intent:
                        fields = {"channel": "email", "props": {"campaign": campaign}}
                        self.add(to + rng.uniform(5.0, 120.0), "email_click", fields)
                    if rng.random() < 0.003 + 0.03 * (1.0 - intent) ** 2:
                        self.add(to + rng.uniform(10.0, 300.0), "unsubscribe", {"channel": "email"})
                        return
            gap = (1.0, 3.0) if t >= self.saved_search_at else (3.0, 8.0)
            t += rng.uniform(*gap) * DAY

    # -- outcomes ---------------------------------------------------------------

    def outcomes(self) -> None:
        rng, intent = self.rng, self.intent
        agent = {"agent_id": self.agent_id}
        if self.converter:
            eligible = [h for h in self.hand_raises if h >= self.reactivated_at]
            if eligible:
                anchor = min(eligible)
            else:
                starts = [s for s in self.session_starts if s >= self.reactivated_at]
                if starts:
                    anchor = starts[rng.randrange(min(5, len(starts)))] + rng.uniform(60.0, 900.0)
                else:
                    anchor = self.reactivated_at + rng.uniform(0.1, 3.0) * DAY
                self.hand_raise(anchor)
            delay = _lognorm(rng, math.log(2.5 * DAY), 0.9)
            t_set = anchor + min(28 * DAY, max(2 * HOUR, delay))
            self.add(t_set, "appointment_set", dict(agent))
            if rng.random() < 0.75:
                t_held = t_set + rng.uniform(1.0, 7.0) * DAY
                self.add(t_held, "appointment_held", dict(agent))
                if rng.random() < 0.55:
                    t_sign = t_held + _lognorm(rng, math.log(7 * DAY), 0.6)
                    self.add(t_sign, "agreement_signed", dict(agent))
                    if rng.random() < 0.8:
                        j = self.shortlist[-1] if self.shortlist else self.last_prop
                        price = self.estimate if self.side == "seller" else self.cat.prop_price[j]
                        t_close = t_sign + rng.uniform(30.0, 60.0) * DAY
                        self.add(t_close, "closed", {**agent, "price": price})
            return
        if self.ni_times:
            if rng.random() < 0.7:
                t_lost = min(self.ni_times) + rng.uniform(1.0, 10.0) * DAY
                self.add(t_lost, "lost", {**agent, "props": {"reason": "not_interested"}})
            return
        if rng.random() < 0.3 + 0.35 * (1.0 - intent):
            last = max(
                (r[0] / 1000.0 for r in self.rows if r[2] in _LEAD_ORIGINATED),
                default=self.created,
            )
            t_lost = last + rng.uniform(21.0, 60.0) * DAY
            reason = rng.choice(_LOST_REASONS)
            self.add(t_lost, "lost", {**agent, "props": {"reason": reason}})

    def anonymous(self) -> None:
        """Browsing as a visitor before sign-up (own RNG: leaves the rest unchanged)."""
        arng = random.Random(f"leadpulse-sim:{self.cfg.seed}:lead:{self.index}:anon")
        if arng.random() >= self.cfg.anonymous_share:
            return
        self.visitor_id = f"V{(self.index * 0x9E3779B1 + self.cfg.seed) & 0xFFFFFFFFFF:010x}"
        first = self.created - arng.uniform(0.3, 6.0) * DAY
        n_sessions = arng.randint(1, 4)
        for s in sorted(arng.uniform(first, self.created - 600.0) for _ in range(n_sessions)):
            dwell = round(_lognorm(arng, math.log(20.0), 0.7), 1)
            self.add(s, "page_view", {"dwell_s": dwell}, anon=True)
            c = s + dwell
            for _ in range(arng.randint(1, 4)):
                j = self.pick_property(arng)
                view_dwell = round(_lognorm(arng, math.log(30.0), 0.8), 1)
                self.add(c, "property_view", {**self.prop_fields(j), "dwell_s": view_dwell}, True)
                c += view_dwell + arng.uniform(2.0, 20.0)
        self.add(self.created + 0.001, "identify", {"visitor_id": self.visitor_id})

    # -- assembly ---------------------------------------------------------------

    def run(self) -> tuple[LeadTruth, list[_Out]]:
        fields: dict[str, Any] = {
            "source": self.source,
            "side": self.side,
            "timeline": self.timeline,
            "channel": "web",
        }
        if self.side != "buyer":
            fields["area"] = self.cat.area_ids[self.pref_areas[0]]
        self.add(self.created, "lead_created", fields)
        self.anonymous()
        self.sessions()
        self.agent()
        self.emails()
        self.outcomes()
        return self.finish()

    def finish(self) -> tuple[LeadTruth, list[_Out]]:
        """Time-order the lead's events, apply consent and dormancy, cut to the span."""
        self.rows.sort()  # (ts_ms, insertion order) is unique: fields are never compared
        frng = random.Random(f"leadpulse-sim:{self.cfg.seed}:lead:{self.index}:consent")
        start_ms = round(self.cfg.start_ts * 1000.0)
        end_ms = round(self.end * 1000.0)
        dorm_lo = self.dorm_start * 1000.0
        dorm_hi = self.dorm_end * 1000.0
        off: set[str] = set()  # channels closed so far (opt-out, unsubscribe, bounce...)
        not_interested = False
        out: list[_Out] = []
        seq = vseq = 0
        outcome_ts: float | None = None
        for ts_ms, _, etype, fields, anon in self.rows:
            if ts_ms >= end_ms or ts_ms < start_ms:
                continue
            if anon:
                eid = f"{self.visitor_id}-{vseq}"
                out.append((ts_ms, self.index, seq + vseq, "visitor_id", self.visitor_id,
                            eid, etype, fields))  # fmt: skip
                vseq += 1
                continue
            if etype in _LEAD_ORIGINATED and dorm_lo <= ts_ms < dorm_hi:
                continue
            channel = fields.get("channel")
            if channel in off or (not_interested and _thinned(etype, frng)):
                continue
            out.append((ts_ms, self.index, seq + vseq, "lead_id", self.lead_id,
                        f"{self.lead_id}-{seq}", etype, fields))  # fmt: skip
            seq += 1
            not_interested |= _closes(etype, channel, off)
            if etype == "appointment_set" and outcome_ts is None:
                outcome_ts = ts_ms / 1000.0
        truth = LeadTruth(
            lead_id=self.lead_id,
            intent=self.intent,
            side=self.side,
            timeline=self.rows_timeline(),
            source=self.source,
            converted=outcome_ts is not None,
            outcome_ts=outcome_ts,
        )
        return truth, out

    def rows_timeline(self) -> str:
        """The timeline stated at creation (later profile updates do not change it)."""
        for _, _, etype, fields, _ in self.rows:
            if etype == "lead_created":
                return str(fields["timeline"])
        return "unknown"


def _thinned(etype: str, frng: random.Random) -> bool:
    """After ``not_interested``: the lead's own activity mostly stops (dropped, or 80 % of
    its behaviour dropped at random)."""
    return etype in _AFTER_NI_DROP or (etype in _AFTER_NI_THIN and frng.random() < 0.8)


def _closes(etype: str, channel: Any, off: set[str]) -> bool:
    """The channels ``etype`` closes go into ``off``; True for ``not_interested``."""
    if etype in ("unsubscribe", "bounce") or (etype == "opt_out" and channel == "email"):
        off.add("email")
    elif etype == "opt_out" and channel == "sms":
        off.add("sms")
    elif etype == "invalid_contact":
        off.update(("call", "sms"))
    return etype == "not_interested"


def _simulate(config: SimConfig) -> tuple[list[LeadTruth], list[_Out]]:
    cat = _Catalogue(config)
    leads: list[LeadTruth] = []
    rows: list[_Out] = []
    for i in range(config.leads):
        truth, out = _Lead(config, cat, i).run()
        leads.append(truth)
        rows.extend(out)
    rows.sort()  # (ts_ms, lead index, seq) is unique: fields are never compared
    return leads, rows


def generate(config: SimConfig) -> Iterator[dict[str, Any]]:
    """All events of the simulation, sorted by ts (ties: lead index, then lead order)."""
    _, rows = _simulate(config)
    tenant = config.tenant
    for ts_ms, _, _, id_key, ident, event_id, etype, fields in rows:
        event: dict[str, Any] = {
            "event_id": event_id,
            id_key: ident,
            "type": etype,
            "ts": ts_ms / 1000.0,
            "tenant": tenant,
        }
        event.update(fields)
        yield event


def truths(config: SimConfig) -> list[LeadTruth]:
    """The latent truth per lead (same seed -> same leads as :func:`generate`)."""
    return _simulate(config)[0]


def write_jsonl(path: str | os.PathLike[str], events: Iterable[dict[str, Any]]) -> int:
    """Write events one JSON object per line (``-`` is stdout); returns the count."""
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    count = 0
    if os.fspath(path) == "-":
        for event in events:
            sys.stdout.write(dumps(event) + "\n")
            count += 1
        sys.stdout.flush()
        return count
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        buf: list[str] = []
        for event in events:
            buf.append(dumps(event))
            count += 1
            if len(buf) >= 4096:
                fh.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            fh.write("\n".join(buf) + "\n")
    return count


def events_for_count(n_events: int, seed: int = 7, **kw: Any) -> SimConfig:
    """A config whose :func:`generate` yields roughly ``n_events`` (within +-20 %).

    Lead ``i`` does not depend on the lead count, so leads are simulated one by one
    until ``min(n_events, 50_000)`` events are seen: exact below that, otherwise the
    mean events per lead of that sample is extrapolated.
    """
    if n_events < 1:
        raise ValueError(f"n_events must be >= 1, got {n_events}")
    if "leads" in kw:
        raise TypeError("events_for_count chooses `leads` itself")
    base = SimConfig(seed=seed, leads=1, **kw)
    cat = _Catalogue(base)
    sample = min(n_events, 50_000)
    seen = leads = 0
    while seen < sample and leads < 1_000_000:
        seen += len(_Lead(base, cat, leads).run()[1])
        leads += 1
    if seen < n_events and seen > 0:
        leads = max(1, round(n_events * leads / seen))
    return replace(base, leads=max(1, leads))


@dataclass(frozen=True)
class OpenLoopStats:
    """How an open-loop send went: whether the producer itself kept to the schedule."""

    sent: int
    seconds: float  # wall time from the first send to the last
    achieved_rate: float  # sent / seconds
    max_behind_s: float  # worst delay of a send behind its scheduled time


def open_loop(
    items: Sequence[Any],
    rate: float,
    send: Callable[[Sequence[Any]], object],
    *,
    tick_s: float = 0.005,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    on_progress: Callable[[int], object] | None = None,
) -> OpenLoopStats:
    """Send ``items`` at ``rate`` per second on a fixed schedule (open loop).

    Item ``k`` is due at ``start + k / rate``. Every ``tick_s`` everything due so far
    is handed to ``send`` in one call (a pipelined XADD, say); nothing waits for the
    consumer, so a slow engine shows up as latency and lag, never as a lower offered
    rate. ``max_behind_s`` says whether the *producer* kept up with its own schedule.
    """
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    total = len(items)
    start = clock()
    sent = 0
    behind = 0.0
    while sent < total:
        now = clock()
        due = min(total, int((now - start) * rate) + 1)
        if due > sent:
            behind = max(behind, now - (start + sent / rate))
            send(items[sent:due])
            sent = due
            if on_progress is not None:
                on_progress(sent)
        if sent < total:
            sleep(max(0.0, min(tick_s, start + sent / rate - clock())))
    seconds = max(clock() - start, 1e-9)
    return OpenLoopStats(sent, seconds, sent / seconds, behind)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write a simulated event stream as JSONL and print how many events."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.simulator",
        description="Write a seeded, simulated IDX event stream (contract v1) as JSONL.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--leads", type=int, help="number of leads (default 50)")
    size.add_argument("--events", type=int, help="pick the lead count for about this many events")
    parser.add_argument("--days", type=float, default=30.0, help="event-time span in days")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--start-ts", type=float, default=SimConfig.start_ts)
    parser.add_argument("--properties", type=int, default=SimConfig.properties)
    parser.add_argument("--areas", type=int, default=SimConfig.areas)
    parser.add_argument("--anonymous-share", type=float, default=0.0)
    parser.add_argument("--out", default="events.jsonl", help="output file, or - for stdout")
    args = parser.parse_args(argv)
    common: dict[str, Any] = {
        "days": args.days,
        "tenant": args.tenant,
        "start_ts": args.start_ts,
        "properties": args.properties,
        "areas": args.areas,
        "anonymous_share": args.anonymous_share,
    }
    began = time.perf_counter()
    try:
        if args.events is not None:
            config = events_for_count(args.events, seed=args.seed, **common)
        else:
            leads = 50 if args.leads is None else args.leads
            config = SimConfig(seed=args.seed, leads=leads, **common)
    except ValueError as exc:
        parser.error(str(exc))
    count = write_jsonl(args.out, generate(config))
    elapsed = time.perf_counter() - began
    where = "stdout" if args.out == "-" else args.out
    print(
        f"{count} events, {config.leads} leads, {config.days:g} days, seed {config.seed} "
        f"-> {where} in {elapsed:.2f} s",
        file=sys.stderr if args.out == "-" else sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
