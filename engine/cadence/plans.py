"""The ``[cadence]`` settings compiled into typed, immutable plans and rules (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from engine.cadence.settings import CadenceSettings, RuleSettings, offset_s

__all__ = ["Book", "Fact", "Hours", "Plan", "Rule", "Step", "compile_book"]


@dataclass(frozen=True, slots=True)
class Step:
    offset: float  # seconds from the plan's start
    channel: str  # call | voicemail | sms | email
    template: str
    goal: str
    kind: str  # task | message
    day: int  # the offset's day, as an agent reads it ("day 2")


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    label: str
    heat: int
    next: str
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    plan: str
    sources: frozenset[str]
    tiers: frozenset[str]
    sides: frozenset[str]
    buckets: frozenset[str]
    events: frozenset[str]
    triggers: tuple[str, ...]
    reactivated: bool | None

    def matches(self, fact: Mapping[str, object]) -> bool:
        """Every criterion the rule names holds (an empty criterion matches anything)."""
        if (
            (self.sources and fact["source"] not in self.sources)
            or (self.tiers and fact["tier"] not in self.tiers)
            or (self.sides and fact["side"] not in self.sides)
            or (self.buckets and fact["bucket"] not in self.buckets)
            or (self.events and fact["event"] not in self.events)
        ):  # written out: the rules are read for every event of a lead without a plan
            return False
        if self.reactivated is not None and bool(fact["reactivated"]) != self.reactivated:
            return False
        if self.triggers:
            fired = fact["triggers"]
            assert isinstance(fired, tuple)
            return any(str(t).startswith(p) for t in fired for p in self.triggers)
        return True

    def why(self) -> str:
        """The rule in words: "tier hot", "event showing_request or call_request"."""
        return _why(self)  # (built once per rule: every plan entered says it)

    def _words(self) -> str:
        parts = [
            f"{name} {' or '.join(sorted(values))}"
            for name, values in (
                ("source", self.sources),
                ("tier", self.tiers),
                ("side", self.sides),
                ("bucket", self.buckets),
                ("event", self.events),
                ("trigger", frozenset(self.triggers)),
            )  # fmt: skip
            if values
        ]
        if self.reactivated is not None:
            parts.append("reactivated" if self.reactivated else "not reactivated")
        return ", ".join(parts) or "every lead"


@lru_cache(maxsize=1_024)
def _why(rule: Rule) -> str:
    return rule._words()


@dataclass(frozen=True, slots=True)
class Hours:
    """A tenant's quiet hours in its own zone (start == end: none)."""

    tz: str
    quiet_start_h: int
    quiet_end_h: int

    def quiet(self, ts: float) -> bool:
        return self._quiet_hour(datetime.fromtimestamp(ts, ZoneInfo(self.tz)).hour)

    def _quiet_hour(self, hour: int) -> bool:
        s, e = self.quiet_start_h, self.quiet_end_h
        if s == e:
            return False
        return (hour >= s or hour < e) if s > e else s <= hour < e

    def allowed_at(self, ts: float) -> float:
        """``ts`` itself outside quiet hours, else the end of the quiet hours that hold it."""
        local = datetime.fromtimestamp(ts, ZoneInfo(self.tz))
        hour, e = local.hour, self.quiet_end_h
        if not self._quiet_hour(hour):
            return ts
        # the end is a function of the local date, the fold and whether the hour is past
        # the end (``end <= local``: the same tzinfo, so a comparison of the local fields):
        # remembered per those (~8 µs each to compute; most quiet steps share a night)
        key = (self.tz, e, local.year, local.month, local.day, local.fold, hour >= e)
        end_ts = _ENDS.get(key)
        if end_ts is None:
            end = local.replace(hour=e, minute=0, second=0, microsecond=0)
            if end <= local:
                end = (local + timedelta(days=1)).replace(hour=e, minute=0, second=0, microsecond=0)
            if len(_ENDS) >= 4_096:
                _ENDS.clear()
            end_ts = _ENDS[key] = end.timestamp()
        return end_ts


#: What the rules read of an event: (source, tier, side, bucket, event type, reactivated,
#: alert triggers); :meth:`Book.chosen`.
Fact = tuple[str, str, str, str, str, bool, tuple[str, ...]]

#: (zone, end hour, local date, fold, past the end hour) -> the end of the quiet hours
_ENDS: dict[tuple[str, int, int, int, int, int, bool], float] = {}


@dataclass(frozen=True, slots=True)
class Book:
    """Every plan and rule, and the knobs the decisions use."""

    plans: Mapping[str, Plan]
    rules: tuple[Rule, ...]
    quiet_channels: frozenset[str]
    resume_after_s: float
    rerun_after_s: float = 30 * 86_400.0  # no move up into a plan entered within this time
    learn_min: int = 0  # engagements before automatic messages move (0: never)
    learn_max_s: float = 0.0  # the most a message moves forward
    # what :meth:`chosen` found per fact (a fact is a few short words: few distinct ones)
    _chosen: dict[Fact, tuple[Plan, Rule] | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    def choose(self, fact: Mapping[str, object]) -> tuple[Plan, Rule] | None:
        """The first rule that matches, and its plan."""
        for rule in self.rules:
            if rule.matches(fact):
                return self.plans[rule.plan], rule
        return None

    def chosen(self, fact: Fact) -> tuple[Plan, Rule] | None:
        """:meth:`choose` of the fact ``(source, tier, side, bucket, event, reactivated,
        triggers)``, remembered: the rules are read for every event that could move a
        lead into a plan, and the answer depends on these words only."""
        memo = self._chosen
        try:
            return memo[fact]
        except KeyError:
            pass
        source, tier, side, bucket, event, reactivated, triggers = fact
        found = self.choose({"source": source, "tier": tier, "side": side, "bucket": bucket,
                             "event": event, "reactivated": reactivated,
                             "triggers": triggers})  # fmt: skip
        if len(memo) >= 4_096:
            memo.clear()
        memo[fact] = found
        return found


def _rule(r: RuleSettings) -> Rule:
    return Rule(
        plan=r.plan, sources=frozenset(r.sources), tiers=frozenset(r.tiers),
        sides=frozenset(r.sides), buckets=frozenset(r.buckets), events=frozenset(r.events),
        triggers=r.triggers, reactivated=r.reactivated,
    )  # fmt: skip


def compile_book(s: CadenceSettings) -> Book:
    plans = {}
    for name, p in s.plans.items():
        steps = tuple(
            Step(
                offset_s(st.at),
                st.channel,
                st.template,
                st.goal,
                st.kind,
                int(offset_s(st.at) // 86_400),
            )  # fmt: skip
            for st in p.steps
        )
        plans[name] = Plan(name, p.label, p.heat, p.next, steps)
    return Book(plans, tuple(_rule(r) for r in s.rules), frozenset(s.quiet_channels),
                s.resume_after_d * 86_400.0, s.rerun_after_d * 86_400.0,
                s.send_time_min_signals, s.send_time_max_shift_h * 3_600.0)  # fmt: skip
