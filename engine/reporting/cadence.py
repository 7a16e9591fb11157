"""The follow-up cadence rows of the reports: plan completion, replies and opt-outs by step.

The cadence runner (``engine/cadence/runner.py``) logs what a batch did to its leads'
plans (:class:`engine.cadence.decide.Transition`); :func:`increments` turns that log
into counter increments on the tenant's day hashes (the day of each transition in the
tenant's zone). They go into the batch's MULTI/EXEC with the plan states and the emitted
steps (``CadenceEffects.apply``), so each is counted exactly once: a batch that did not
commit is decided again from the same states and logs the same transitions.

Fields (``metric|dim|value``):

- ``cad_entered|plan|<plan>``, ``cad_completed|plan|<plan>`` (every step done),
  ``cad_ended|plan|<plan>`` (ended another way: lost, not interested, signed, moved up
  to a hotter plan, no allowed channel left);
- ``cad_sent|step|<plan>.<index>.<channel>`` steps emitted;
- ``cad_replies|step|<step>`` the lead's first reply after that step (a STOP is not one);
- ``cad_optouts|step|<step>`` channels closed after that step (``none``: before any);
- ``cad_sent|timing|<t>``, ``cad_replies|timing|<t>`` automatic messages sent, and the
  first replies after them, by timing: ``learned`` (moved toward the hour the lead
  engages), ``holdout`` (could have moved; kept the plan's time: the comparison group),
  ``planned`` (too few signals yet).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from engine.cadence.decide import Transition
from engine.reporting.batch import ReportDelta, day_of_for, retention_d, tenant_zone
from engine.reporting.keys import day_key, field, tenants_key

if TYPE_CHECKING:
    from engine.settings import Settings

__all__ = ["NO_STEP", "TIMINGS", "increments"]

NO_STEP = "none"
#: How an automatic message was timed (send time that learns, engine/cadence/decide.py).
TIMINGS = ("learned", "holdout", "planned")
_METRIC = {"entered": "cad_entered", "completed": "cad_completed", "ended": "cad_ended",
           "sent": "cad_sent", "reply": "cad_replies", "optout": "cad_optouts"}  # fmt: skip
_BY_STEP = frozenset({"sent", "reply", "optout"})  # counted by step (the rest by plan)


def increments(
    settings: Settings, log: Iterable[tuple[str, Transition]], prefix: str = ""
) -> ReportDelta:
    """The report increments of one batch's cadence log (``(tenant, transition)``), under
    ``prefix`` (the batch's partition's in the slot-per-partition layout)."""
    prefix = prefix or settings.redis.key_prefix
    delta = ReportDelta(tenants_key=tenants_key(prefix), ttl_s=retention_d(settings) * 86_400)
    days: dict[str, Callable[[float], str]] = {}
    keys: dict[tuple[str, str], str] = {}  # (tenant, day) -> its key (a batch has few)
    quarters: dict[tuple[str, int], str] = {}  # (tenant, quarter hour) -> its day's key
    names: dict[tuple[str, str], str] = {}  # (kind, step or plan) -> the counter's field
    timings: dict[tuple[str, str], str] = {}  # (kind, timing) -> the counter's field
    counts = delta.counts
    for tenant, t in log:
        kind = t.kind
        metric = _METRIC.get(kind)
        if metric is None:
            continue
        quarter = (tenant, int(t.ts // 900))  # (the local day is one per quarter hour: day_of_for)
        day = quarters.get(quarter)
        if day is None:
            day_of = days.get(tenant) or days.setdefault(
                tenant, day_of_for(tenant_zone(settings, tenant))
            )
            local = (tenant, day_of(t.ts))
            day = keys.get(local) or keys.setdefault(local, day_key(prefix, *local))
            quarters[quarter] = day
        by_step = kind in _BY_STEP
        what = (kind, t.step or NO_STEP if by_step else t.plan)
        name = names.get(what) or names.setdefault(
            what, field(metric, "step" if by_step else "plan", what[1])
        )
        counts[(day, name)] = counts.get((day, name), 0) + 1
        if kind in ("sent", "reply") and t.reason in TIMINGS:  # automatic messages only
            how = (kind, t.reason)  # (the timing's field, once a batch: most steps are sent)
            timing = timings.get(how) or timings.setdefault(how, field(metric, "timing", how[1]))
            counts[(day, timing)] = counts.get((day, timing), 0) + 1
        delta.tenants.add(tenant)
    return delta
