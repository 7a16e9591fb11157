"""The aggregate rules: from what the engine saw of one event to counter increments.

Pure: no Redis, no clock. ``observe(mark, seen, day_of)`` takes a lead's report mark
(what the reports already know of it), one counted event as the engine saw it (its
lead's source, agent and blocked channels after the event, and the alert it raised)
and returns ``(day, field, increment)`` triples, updating the mark. ``quality(example,
day_of)`` does the same for a labelled example (the model's live quality).

Two kinds of day:

- **lead counts** (``leads``, ``alerted``, ``assigned``, ``contacted``, ``appointments``,
  ``converted``, ``signed``, ``lost``) go to the lead's **first day** (the day the
  engine first saw it): a period's figures are about the leads that arrived in it, and
  their outcomes so far (a cohort);
- **clock and activity counts** (``clocks``, ``responses``, ``within``, the speed-to-lead
  histogram ``stl``, ``escalated``, ``optout``, model quality) go to the day their clock
  started or the thing happened.

Each lead count happens once per lead (the mark remembers it). Dimensions: ``all``,
``source`` (the lead's source when first seen), ``bucket`` (the bucket of the lead's
first alert, recorded once; ``none`` before any alert) and ``agent``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.events import OUTCOME_TYPES, POSITIVE_OUTCOMES, Event
from engine.reporting.keys import field as fname

__all__ = [
    "AlertSeen", "Increment", "LeadMark", "NO_ALERT", "POND", "QUALITY_BINS", "STL_EDGES_S",
    "Seen", "observe", "quality", "stl_bin",
]  # fmt: skip

#: Speed-to-lead histogram: bin i counts responses within ``STL_EDGES_S[i]`` seconds
#: (and above the previous edge); the last bin is everything slower than a day.
STL_EDGES_S: tuple[float, ...] = (
    30, 60, 120, 180, 300, 600, 900, 1_800, 3_600, 7_200, 14_400, 28_800, 86_400,
)  # fmt: skip
#: Served-probability bins of the live-quality counters (equal width).
QUALITY_BINS = 20
#: A response this much before its alert's event still answers it (clocks drift).
SKEW_S = 5.0
NO_ALERT = "none"
POND = "(pond)"
UNASSIGNED = "(unassigned)"
UNKNOWN = "unknown"
#: Lead counts with a source dimension (moved when a lead's source becomes known).
LEAD_COUNTS = ("leads", "alerted", "contacted", "appointments", "converted", "signed", "lost")

RESPONSES = frozenset({"agent_contact", "alert_ack"})
CONSENT = frozenset({"opt_out", "unsubscribe", "bounce", "invalid_contact", "reply"})
OUTCOMES = frozenset(OUTCOME_TYPES)
POSITIVE = frozenset(POSITIVE_OUTCOMES)
APPOINTMENTS = frozenset({"appointment_set", "appointment_held"})
SIGNED = frozenset({"agreement_signed", "closed"})

#: (day, field, increment)
Increment = tuple[str, str, int]
DayOf = Callable[[float], str]


@dataclass(frozen=True)
class AlertSeen:
    """The alert an event raised: its bucket and its event-time SLA deadline."""

    bucket: str
    deadline_ts: float
    hand_raise: bool = False


@dataclass(frozen=True)
class Seen:
    """One counted event as the engine saw it: the lead's source as the event states it
    (empty if it does not), the channels the event closes, the alert it raised."""

    event: Event
    source: str
    agent: str
    blocked: tuple[str, ...]
    alert: AlertSeen | None = None


@dataclass
class LeadMark:
    """What the reports know of a lead (kept in Redis, ``keys.mark_key``)."""

    day: str = ""
    source: str = ""
    bucket: str = ""
    agent: str = ""
    clock_ts: float = 0.0  # open speed-to-lead clock: its first alert's event time
    clock_deadline: float = 0.0
    clock_day: str = ""
    clock_kind: str = ""  # "hand_raise" | "score": what the alert that opened it was
    done: set[str] = field(default_factory=set)  # lead counts already made
    blocked: set[str] = field(default_factory=set)  # opt-outs already counted, by channel

    def to_hash(self) -> dict[str, str]:
        return {
            "day": self.day, "source": self.source, "bucket": self.bucket,
            "agent": self.agent, "clock_ts": repr(self.clock_ts),
            "clock_deadline": repr(self.clock_deadline), "clock_day": self.clock_day,
            "clock_kind": self.clock_kind,
            "done": ",".join(sorted(self.done)), "blocked": ",".join(sorted(self.blocked)),
        }  # fmt: skip

    def to_list(self) -> list[Any]:
        """The marks as the lead record keeps them (``features/record.py``): positional,
        trailing empty fields left off."""
        out: list[Any] = [
            self.day, self.source, self.bucket, self.agent, _n(self.clock_ts),
            _n(self.clock_deadline), self.clock_day, self.clock_kind, sorted(self.done),
            sorted(self.blocked),
        ]  # fmt: skip
        while out and out[-1] in ("", 0, []):
            out.pop()
        return out

    @classmethod
    def from_list(cls, raw: Any) -> LeadMark:
        """:meth:`to_list` back (anything unreadable: no marks)."""
        if not isinstance(raw, list):
            return cls()
        r = [*raw, *([None] * (10 - len(raw)))]
        try:
            return cls(
                day=str(r[0] or ""), source=str(r[1] or ""), bucket=str(r[2] or ""),
                agent=str(r[3] or ""), clock_ts=float(r[4] or 0.0),
                clock_deadline=float(r[5] or 0.0), clock_day=str(r[6] or ""),
                clock_kind=str(r[7] or ""), done={str(x) for x in r[8] or ()},
                blocked={str(x) for x in r[9] or ()},
            )  # fmt: skip
        except (TypeError, ValueError):
            return cls()

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> LeadMark:
        h = {_s(k): _s(v) for k, v in raw.items()}
        return cls(
            day=h.get("day", ""), source=h.get("source", ""), bucket=h.get("bucket", ""),
            agent=h.get("agent", ""), clock_ts=_f(h.get("clock_ts")),
            clock_deadline=_f(h.get("clock_deadline")), clock_day=h.get("clock_day", ""),
            clock_kind=h.get("clock_kind", ""), done={x for x in h.get("done", "").split(",") if x},
            blocked={x for x in h.get("blocked", "").split(",") if x},
        )  # fmt: skip


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _n(v: float) -> float | int:
    return int(v) if float(v).is_integer() and abs(v) < 2**62 else float(v)


def _f(x: str | None) -> float:
    try:
        return float(x) if x else 0.0
    except ValueError:
        return 0.0


def stl_bin(seconds: float) -> int:
    """The speed-to-lead histogram bin of a response time."""
    return bisect.bisect_left(STL_EDGES_S, seconds)


def observe(mark: LeadMark, seen: Seen, day_of: DayOf) -> list[Increment]:
    """Increments for one counted event; updates ``mark``."""
    ev = seen.event
    out: list[Increment] = []
    if not mark.day:
        mark.day, mark.source = day_of(ev.ts), seen.source or UNKNOWN
        out += [(mark.day, fname("leads"), 1), (mark.day, fname("leads", "source", mark.source), 1)]
    elif mark.source == UNKNOWN and seen.source not in ("", UNKNOWN):
        out += _source_known(mark, seen.source)
    if ev.type == "assigned":
        out += _assigned(mark, ev, day_of)
    if seen.alert is not None:
        out += _alerted(mark, seen.alert, ev, day_of)
    if ev.type in RESPONSES:
        out += _responded(mark, ev, seen.agent)
    who = ev.agent_id or mark.agent or seen.agent or UNASSIGNED
    if ev.type == "agent_contact":
        out += _once(mark, "contacted", who)
    if ev.type in OUTCOMES:
        out += _outcome(mark, ev.type, who)
    if ev.type in CONSENT:
        out += _opted_out(mark, ev, seen.blocked, day_of)
    return out


def _outcome(mark: LeadMark, kind: str, who: str) -> list[Increment]:
    """An outcome event: the lead's first outcome (converted or lost), and appointments
    and signings, each once per lead."""
    out: list[Increment] = []
    if "outcome" not in mark.done:
        out += _once(mark, "converted" if kind in POSITIVE else "lost", who)
        mark.done.add("outcome")
    if kind in APPOINTMENTS:
        out += _once(mark, "appointments", who)
    if kind in SIGNED:
        out += _once(mark, "signed", who)
    return out


def _source_known(mark: LeadMark, source: str) -> list[Increment]:
    """A lead first seen without a source names it later (a ``lead_created`` after
    anonymous browsing): its lead counts move from ``unknown`` to that source."""
    out: list[Increment] = []
    for metric in LEAD_COUNTS:
        done = metric == "leads" or (metric == "alerted" and mark.bucket) or metric in mark.done
        if done:
            out.append((mark.day, fname(metric, "source", UNKNOWN), -1))
            out.append((mark.day, fname(metric, "source", source), 1))
    mark.source = source
    return out


def _once(mark: LeadMark, metric: str, agent: str) -> list[Increment]:
    """A lead count, once per lead, on its first day, in every dimension."""
    if metric in mark.done:
        return []
    mark.done.add(metric)
    d = mark.day
    return [
        (d, fname(metric), 1),
        (d, fname(metric, "source", mark.source), 1),
        (d, fname(metric, "bucket", mark.bucket or NO_ALERT), 1),
        (d, fname(metric, "agent", agent), 1),
    ]


def _assigned(mark: LeadMark, ev: Event, day_of: DayOf) -> list[Increment]:
    """A new owner: counted once per (lead, agent); an escalation (SLA miss) also counts
    against the previous owner (the pond when it had none) on the event's day."""
    new = ev.agent_id
    out: list[Increment] = []
    props = ev.props if isinstance(ev.props, dict) else {}
    if props.get("how") == "escalation":
        day = day_of(ev.ts)
        out.append((day, fname("escalated", "from", mark.agent or POND), 1))
        out.append((day, fname("escalated", "to", new or POND), 1))
    if new and f"a:{new}" not in mark.done:
        mark.done.add(f"a:{new}")
        out.append((mark.day, fname("assigned", "agent", new), 1))
    mark.agent = new
    return out


def _alerted(mark: LeadMark, alert: AlertSeen, ev: Event, day_of: DayOf) -> list[Increment]:
    out: list[Increment] = []
    if not mark.bucket:
        mark.bucket = alert.bucket or NO_ALERT
        d = mark.day
        out += [
            (d, fname("alerted"), 1),
            (d, fname("alerted", "source", mark.source), 1),
            (d, fname("alerted", "bucket", mark.bucket), 1),
        ]
        for metric in LEAD_COUNTS[2:]:  # counted before the first alert: move them
            if metric in mark.done:
                out.append((d, fname(metric, "bucket", NO_ALERT), -1))
                out.append((d, fname(metric, "bucket", mark.bucket), 1))
    if mark.clock_ts:  # one clock per lead: a later alert keeps it, with the earlier deadline
        if alert.deadline_ts and alert.deadline_ts < mark.clock_deadline:
            mark.clock_deadline = alert.deadline_ts
        return out
    mark.clock_ts, mark.clock_deadline = ev.ts, alert.deadline_ts or ev.ts
    mark.clock_day = day_of(ev.ts)
    mark.clock_kind = "hand_raise" if alert.hand_raise else "score"
    d = mark.clock_day
    return out + [
        (d, fname("clocks"), 1),
        (d, fname("clocks", "source", mark.source), 1),
        (d, fname("clocks", "trigger", mark.clock_kind), 1),
    ]


def _responded(mark: LeadMark, ev: Event, lead_agent: str) -> list[Increment]:
    """The first response after an alert stops its clock: speed to lead, within SLA."""
    if not mark.clock_ts or ev.ts < mark.clock_ts - SKEW_S:
        return []
    seconds = max(0.0, ev.ts - mark.clock_ts)
    within = ev.ts <= mark.clock_deadline
    agent = ev.agent_id or mark.agent or lead_agent or UNASSIGNED
    d, b = mark.clock_day, stl_bin(seconds)
    kind = mark.clock_kind or "score"
    mark.clock_ts = mark.clock_deadline = 0.0
    mark.clock_day = mark.clock_kind = ""
    out: list[Increment] = []
    dims = (("all", ""), ("source", mark.source), ("agent", agent), ("trigger", kind))
    for dim, value in dims:
        out.append((d, fname("responses", dim, value), 1))
        out.append((d, fname("stl", dim, value, b), 1))
        if within:
            out.append((d, fname("within", dim, value), 1))
    return out


def _opted_out(
    mark: LeadMark, ev: Event, blocked: tuple[str, ...], day_of: DayOf
) -> list[Increment]:
    """Channels this event closed (consent rules), each counted once per lead."""
    new = sorted(set(blocked) - mark.blocked)
    if not new:
        return []
    mark.blocked.update(new)
    day = day_of(ev.ts)
    out: list[Increment] = [(day, fname("optout", "type", ev.type), 1)]
    out += [(day, fname("optout", "channel", ch), 1) for ch in new]
    return out


def quality(example: Mapping[str, Any], day_of: DayOf) -> list[Increment]:
    """A labelled example (what was served, then what happened), on its label's day:
    counts by served-probability bin and label, and log-loss and probability sums (in
    millionths), from which AUC, calibration and log loss are computed for any period."""
    try:
        p = min(1.0, max(0.0, float(example["pb"])))
        y = 1 if example["y"] else 0
        at = float(example.get("at") or example["ts"])
    except (KeyError, TypeError, ValueError):
        return []
    day = day_of(at)
    b = min(QUALITY_BINS - 1, int(p * QUALITY_BINS))
    q = min(1 - 1e-6, max(1e-6, p))
    loss = -math.log(q if y else 1 - q)
    return [
        (day, fname("qn", "y", str(y), b), 1),
        (day, fname("qp", "bin", "", b), round(p * 1e6)),
        (day, fname("qll"), round(loss * 1e6)),
    ]
