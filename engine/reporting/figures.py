"""A period's figures from the per-day counters: one pipelined read, then arithmetic.

``read_counts(client, names, tenant, since, until)`` sums the day hashes of the
period (one ``HGETALL`` per day and report prefix, in one round trip: in the
slot-per-partition key layout each partition tag holds the engine's share of a day and
the deployment prefix delivery's, ``engine/shards.py``); ``compute(counts, ...)`` turns the
sums into a :class:`Report`. A figure over fewer than :data:`MIN_N` leads or responses
is ``None`` with a note saying so, never a misleading number.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import date, timedelta
from typing import Any

from engine.keys import StreamNames
from engine.reporting.aggregates import NO_ALERT, QUALITY_BINS, STL_EDGES_S
from engine.reporting.keys import day_key
from engine.shards import report_prefixes

__all__ = [
    "MIN_N", "AgentSla", "FunnelRow", "PlanRow", "Quality", "Ratio", "Report", "SpeedRow",
    "StepRow", "TimingRow", "compute", "days_between", "percentile", "read_counts", "weekly",
]  # fmt: skip

#: Fewest leads (or responses, or labels) a rate, a percentile or a quality figure needs.
MIN_N = 20
BUCKETS = ("P1", "P2", "P3", "P4", "P5")


@dataclass(frozen=True)
class Ratio:
    num: int
    den: int
    value: float | None
    note: str = ""


@dataclass(frozen=True)
class SpeedRow:
    """Speed to lead: first response after an alert, from the alert's event."""

    name: str
    clocks: int | None  # alerts that started a clock (None for agents: unknown owner)
    responses: int
    median_s: float | None
    p90_s: float | None
    within_sla: Ratio
    note: str = ""


@dataclass(frozen=True)
class FunnelRow:
    name: str
    leads: int
    contacted: Ratio
    appointments: Ratio
    converted: Ratio
    lift: float | None


@dataclass(frozen=True)
class AgentSla:
    agent: str
    responses: int
    within_sla: int
    late: int
    sla_missed: int  # escalations away from the agent (delivery's SLA misses)
    redistributed_to: int
    missed_on_clock: int = 0  # every miss on delivery's wall clock (the last step too)


@dataclass(frozen=True)
class Quality:
    labels: int
    positives: int
    auc: float | None
    log_loss: float | None
    ece: float | None
    calibration: list[dict[str, float | int | None]]
    note: str = ""


@dataclass(frozen=True)
class PlanRow:
    """A follow-up plan in the period: runs entered, completed (every step done), ended
    another way (lost, moved up, no channel left); completion = completed / finished."""

    plan: str
    entered: int
    completed: int
    ended: int
    completion: Ratio


@dataclass(frozen=True)
class StepRow:
    """One step of a plan (``<plan>.<index>.<channel>``): sent, the first replies after
    it, the channels closed after it; reply rate = replies / sent."""

    step: str
    sent: int
    replies: int
    optouts: int
    reply_rate: Ratio


@dataclass(frozen=True)
class TimingRow:
    """Automatic messages by timing (send time that learns): ``learned``, ``holdout`` (the
    comparison group: could have moved, kept the plan's time), ``planned`` (too few
    signals yet); the first replies after them and the reply rate."""

    timing: str
    sent: int
    replies: int
    reply_rate: Ratio


@dataclass(frozen=True)
class Report:
    tenant: str
    since: str
    until: str
    days_with_data: int
    total: FunnelRow
    speed: dict[str, list[SpeedRow]]
    funnel: dict[str, list[FunnelRow]]
    sla_by_agent: list[AgentSla]
    optouts: dict[str, dict[str, int]]
    quality: Quality
    agent: str = ""  # set when the report is one agent's own rows
    notes: list[str] = field(default_factory=list)
    cadence_plans: list[PlanRow] = field(default_factory=list)  # follow-up cadences
    cadence_steps: list[StepRow] = field(default_factory=list)
    send_time: list[TimingRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def for_agent(self, agent: str) -> Report:
        """Only the agent's own rows: no colleague, no team-wide figure."""
        mine = [r for r in self.speed.get("agent", []) if r.name == agent]
        funnel = [r for r in self.funnel.get("agent", []) if r.name == agent]
        empty_q = Quality(0, 0, None, None, None, [], "team-wide: server keys only")
        total = funnel[0] if funnel else _row(agent, Counter(), "agent", agent, None)
        return replace(
            self, agent=agent, speed={"agent": mine}, funnel={"agent": funnel},
            sla_by_agent=[r for r in self.sla_by_agent if r.agent == agent], optouts={},
            quality=empty_q, total=total, cadence_plans=[], cadence_steps=[], send_time=[],
        )  # fmt: skip


def days_between(since: date, until: date) -> list[str]:
    n = (until - since).days
    return [(since + timedelta(days=i)).isoformat() for i in range(n + 1)]


def weekly(today: date) -> tuple[date, date]:
    """The default period: the seven days ending today."""
    return today - timedelta(days=6), today


def read_counts(
    client: Any, names: StreamNames | str, tenant: str, since: date, until: date
) -> tuple[Counter[str], int]:
    """Summed counters of the period and how many of its days had any (``names``: the
    deployment's key names; a bare prefix reads the deployment layout)."""
    days = days_between(since, until)
    prefixes = report_prefixes(names) if isinstance(names, StreamNames) else [names]
    pipe = client.pipeline(transaction=False)
    for day in days:
        for prefix in prefixes:
            pipe.hgetall(day_key(prefix, tenant, day))
    replies = pipe.execute()
    total: Counter[str] = Counter()
    with_data = 0
    for i in range(0, len(replies), len(prefixes)):
        day_raw = replies[i : i + len(prefixes)]
        with_data += any(day_raw)
        for raw in day_raw:
            for k, v in raw.items():
                total[k.decode() if isinstance(k, bytes) else str(k)] += int(v)
    return total, with_data


def _ratio(num: int, den: int) -> Ratio:
    if den < MIN_N:
        return Ratio(num, den, None, f"too little data ({den} < {MIN_N})")
    return Ratio(num, den, round(num / den, 4))


def _values(c: Counter[str], metric: str, dim: str) -> list[str]:
    head = f"{metric}|{dim}|"
    return sorted({k[len(head) :].split("|", 1)[0] for k in c if k.startswith(head)})


def _get(c: Counter[str], metric: str, dim: str = "all", value: str = "") -> int:
    return c.get(f"{metric}|{dim}|{value}", 0)


def percentile(hist: list[int], q: float) -> float | None:
    """The q-quantile (seconds) of a speed-to-lead histogram, linear within its bin;
    None when it falls in the open last bin (slower than the last edge)."""
    n = sum(hist)
    if n == 0:
        return None
    target, seen = q * n, 0
    for i, count in enumerate(hist):
        if count and seen + count >= target:
            if i >= len(STL_EDGES_S):
                return None
            lo = STL_EDGES_S[i - 1] if i else 0.0
            return round(lo + (STL_EDGES_S[i] - lo) * (target - seen) / count, 1)
        seen += count
    return None


def _speed(c: Counter[str], dim: str, value: str) -> SpeedRow:
    hist = [_get(c, "stl", dim, f"{value}|{b}") for b in range(len(STL_EDGES_S) + 1)]
    responses = _get(c, "responses", dim, value)
    clocks = _get(c, "clocks", dim, value) if dim != "agent" else None
    within = _get(c, "within", dim, value)
    note = "" if responses >= MIN_N else f"too little data ({responses} responses < {MIN_N})"
    enough = responses >= MIN_N
    return SpeedRow(
        name=value or "all", clocks=clocks, responses=responses,
        median_s=percentile(hist, 0.5) if enough else None,
        p90_s=percentile(hist, 0.9) if enough else None,
        within_sla=_ratio(within, clocks if clocks is not None else responses), note=note,
    )  # fmt: skip


def _row(name: str, c: Counter[str], dim: str, value: str, base: float | None) -> FunnelRow:
    """Contact, appointment and conversion rates of one group of leads, and its lift."""
    if dim == "bucket":
        den = (
            _get(c, "leads") - _get(c, "alerted")
            if value == NO_ALERT
            else _get(c, "alerted", dim, value)
        )
    elif dim == "agent":
        den = _get(c, "assigned", dim, value)
    else:
        den = _get(c, "leads", dim, value)
    conv = _ratio(_get(c, "converted", dim, value), den)
    lift = round(conv.value / base, 2) if conv.value is not None and base else None
    return FunnelRow(
        name=name, leads=den, contacted=_ratio(_get(c, "contacted", dim, value), den),
        appointments=_ratio(_get(c, "appointments", dim, value), den), converted=conv,
        lift=lift,
    )  # fmt: skip


def _funnel(c: Counter[str], base: float | None) -> dict[str, list[FunnelRow]]:
    out: dict[str, list[FunnelRow]] = {}
    out["source"] = [_row(s, c, "source", s, base) for s in _values(c, "leads", "source")]
    out["bucket"] = [_row(b, c, "bucket", b, base) for b in (*BUCKETS, NO_ALERT)]
    out["agent"] = [_row(a, c, "agent", a, base) for a in _values(c, "assigned", "agent")]
    return out


def _agents_sla(c: Counter[str]) -> list[AgentSla]:
    names = set(_values(c, "responses", "agent")) | set(_values(c, "escalated", "from"))
    names |= set(_values(c, "escalated", "to")) | set(_values(c, "missed", "agent"))
    rows = []
    for a in sorted(names):
        responses, within = _get(c, "responses", "agent", a), _get(c, "within", "agent", a)
        rows.append(
            AgentSla(
                a,
                responses,
                within,
                responses - within,
                _get(c, "escalated", "from", a),
                _get(c, "escalated", "to", a),
                _get(c, "missed", "agent", a),
            )
        )
    return rows


def _quality(c: Counter[str]) -> Quality:
    pos = [_get(c, "qn", "y", f"1|{b}") for b in range(QUALITY_BINS)]
    neg = [_get(c, "qn", "y", f"0|{b}") for b in range(QUALITY_BINS)]
    n, npos = sum(pos) + sum(neg), sum(pos)
    if n < MIN_N or npos == 0 or npos == n:
        note = f"too little data ({n} labels, {npos} positive; need {MIN_N} and both kinds)"
        return Quality(n, npos, None, None, None, [], note)
    # AUC over the binned scores: a positive beats every negative in lower bins, ties 1/2
    below, wins = 0, 0.0
    for p, q in zip(pos, neg, strict=True):
        wins += p * (below + q / 2)
        below += q
    auc = wins / (npos * (n - npos))
    calib: list[dict[str, float | int | None]] = []
    ece = 0.0
    for b in range(QUALITY_BINS):
        k = pos[b] + neg[b]
        if not k:
            continue
        predicted = _get(c, "qp", "bin", f"|{b}") / 1e6 / k
        observed = pos[b] / k
        ece += k / n * abs(predicted - observed)
        calib.append({"bin": b, "n": k, "predicted": round(predicted, 4),
                      "observed": round(observed, 4)})  # fmt: skip
    log_loss = _get(c, "qll") / 1e6 / n
    return Quality(n, npos, round(auc, 4), round(log_loss, 4), round(ece, 4), calib)


def _step_order(step: str) -> tuple[str, int, str]:
    plan, _, rest = step.partition(".")
    index, _, channel = rest.partition(".")
    return (plan, int(index) if index.isdigit() else -1, channel)


def _cadence(c: Counter[str]) -> tuple[list[PlanRow], list[StepRow]]:
    """Plan completion, and replies and opt-outs by step (engine/reporting/cadence.py)."""
    plans = sorted(
        set(_values(c, "cad_entered", "plan")) | set(_values(c, "cad_completed", "plan"))
        | set(_values(c, "cad_ended", "plan"))
    )  # fmt: skip
    plan_rows = []
    for p in plans:
        done, ended = _get(c, "cad_completed", "plan", p), _get(c, "cad_ended", "plan", p)
        plan_rows.append(PlanRow(p, _get(c, "cad_entered", "plan", p), done, ended,
                                 _ratio(done, done + ended)))  # fmt: skip
    steps = set(_values(c, "cad_sent", "step")) | set(_values(c, "cad_replies", "step"))
    steps |= set(_values(c, "cad_optouts", "step"))
    step_rows = []
    for st in sorted(steps, key=_step_order):
        sent, replies = _get(c, "cad_sent", "step", st), _get(c, "cad_replies", "step", st)
        step_rows.append(StepRow(st, sent, replies, _get(c, "cad_optouts", "step", st),
                                 _ratio(replies, sent)))  # fmt: skip
    return plan_rows, step_rows


def _send_time(c: Counter[str]) -> list[TimingRow]:
    rows = []
    for t in ("learned", "holdout", "planned"):
        sent, replies = _get(c, "cad_sent", "timing", t), _get(c, "cad_replies", "timing", t)
        if sent or replies:
            rows.append(TimingRow(t, sent, replies, _ratio(replies, sent)))
    return rows


def compute(c: Counter[str], tenant: str, since: date, until: date, days: int) -> Report:
    leads = _get(c, "leads")
    base = _get(c, "converted") / leads if leads >= MIN_N and _get(c, "converted") else None
    speed = {"all": [_speed(c, "all", "")]}
    speed["trigger"] = [_speed(c, "trigger", t) for t in _values(c, "clocks", "trigger")]
    speed["source"] = [_speed(c, "source", s) for s in _values(c, "clocks", "source")]
    speed["agent"] = [_speed(c, "agent", a) for a in _values(c, "responses", "agent")]
    optouts = {
        dim: {v: _get(c, "optout", dim, v) for v in _values(c, "optout", dim)}
        for dim in ("channel", "type")
    }
    plans, steps = _cadence(c)
    notes = []
    if not days:
        notes.append("no data for this tenant in the period")
    elif leads < MIN_N:
        notes.append(f"too little data: {leads} new leads in the period (rates need {MIN_N})")
    return Report(
        tenant=tenant, since=since.isoformat(), until=until.isoformat(), days_with_data=days,
        total=_row("all", c, "all", "", base), speed=speed, funnel=_funnel(c, base),
        sla_by_agent=_agents_sla(c), optouts=optouts, quality=_quality(c), notes=notes,
        cadence_plans=plans, cadence_steps=steps, send_time=_send_time(c),
    )  # fmt: skip
