"""Every count and figure reconciles with a direct computation from the events file.

The simulator's month of traffic (known outcomes, agents, opt-outs) went through the
real engine; here the same events (and the alerts the engine raised, for the bucket
at first alert and the SLA deadline) are counted again by a plain loop over the file,
in the tenant's time zone, and compared with what the engine's per-day counters say.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from engine.keys import lead_key
from engine.reporting.aggregates import STL_EDGES_S, LeadMark
from engine.reporting.figures import MIN_N, compute, read_counts
from features.record import unpack_record
from tests.engine.reporting.conftest import TENANT, SimRun

POSITIVE = {"appointment_set", "appointment_held", "agreement_signed", "closed"}
CLOSES = {"opt_out": ("email", "sms", "call"), "unsubscribe": ("email",), "bounce": ("email",),
          "invalid_contact": ("call", "sms")}  # fmt: skip


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo("America/New_York")).strftime("%Y-%m-%d")


def _bin(seconds: float) -> int:
    return next((i for i, edge in enumerate(STL_EDGES_S) if seconds <= edge), len(STL_EDGES_S))


def expected(events: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> Counter[str]:
    """Totals over the whole run, field -> count, by a plain loop over the file."""
    by_event = {a["event"]["event_id"]: a for a in alerts}
    out: Counter[str] = Counter()
    leads: dict[str, dict[str, Any]] = {}
    for e in events:
        lead = e.get("lead_id")
        if not lead:
            continue  # anonymous browsing: not a lead yet
        st = leads.get(lead)
        if st is None:
            st = leads[lead] = {"source": e.get("source") or "unknown", "bucket": "", "done": set(),
                                "clock": None, "agent": "", "blocked": set()}  # fmt: skip
            out["leads"] += 1
        a = by_event.get(e["event_id"])
        if a is not None:
            _alerted(st, e, a, out)
        _responses(st, e, out)
        _firsts(st, e["type"])
        _optouts(st, e, out)
    for st in leads.values():  # lead counts under the bucket of the first alert (or none)
        for name in st.get("counted", []):
            out[f"{name}|bucket|{st['bucket'] or 'none'}"] += 1
            out[f"{name}|source|{st['source']}"] += 1
        out[f"leads|source|{st['source']}"] += 1
    return out


def _alerted(st: dict[str, Any], e: dict[str, Any], a: dict[str, Any], out: Counter[str]) -> None:
    """An alert: the lead's first bucket; its SLA clock starts (or its deadline tightens)."""
    if not st["bucket"]:
        st["bucket"] = a["bucket"]
        out[f"alerted|bucket|{a['bucket']}"] += 1
    if st["clock"] is None:
        st["clock"] = (e["ts"], a["sla"]["deadline_ts"], st["source"])
        out[f"clocks|source|{st['source']}"] += 1
    else:
        st["clock"] = (st["clock"][0], min(st["clock"][1], a["sla"]["deadline_ts"]),
                       st["clock"][2])  # fmt: skip


def _responses(st: dict[str, Any], e: dict[str, Any], out: Counter[str]) -> None:
    """Assignments (escalations counted against the previous owner) and the response that
    stops a running SLA clock."""
    t = e["type"]
    if t == "assigned":
        if (e.get("props") or {}).get("how") == "escalation":
            out[f"escalated|from|{st['agent'] or '(pond)'}"] += 1
        st["agent"] = e.get("agent_id", "")
    if t in ("agent_contact", "alert_ack") and st["clock"] and e["ts"] >= st["clock"][0] - 5:
        start, deadline, _ = st["clock"]
        out[f"stl|{_bin(max(0.0, e['ts'] - start))}"] += 1
        out["within"] += e["ts"] <= deadline
        out["responses"] += 1
        st["clock"] = None


_FIRSTS = {"agent_contact": "contacted", "appointment_set": "appointments",
           "appointment_held": "appointments", "agreement_signed": "signed",
           "closed": "signed"}  # fmt: skip


def _firsts(st: dict[str, Any], t: str) -> None:
    """Lead counts, once per lead: its first outcome and its first of each milestone."""
    names = [_FIRSTS[t]] if t in _FIRSTS else []
    if t in POSITIVE | {"lost"} and "outcome" not in st["done"]:
        st["done"].add("outcome")
        names.append("converted" if t in POSITIVE else "lost")
    for name in names:
        if name not in st["done"]:
            st["done"].add(name)
            st.setdefault("counted", []).append(name)


def _optouts(st: dict[str, Any], e: dict[str, Any], out: Counter[str]) -> None:
    """Each channel the event closes for the first time (a STOP reply closes its own)."""
    t = e["type"]
    closed = CLOSES.get(t, ())
    if e.get("channel") and closed:
        closed = (e["channel"],)
    if t == "reply" and str((e.get("props") or {}).get("text", "")).upper() == "STOP":
        closed = (e.get("channel") or "sms",)
    for ch in set(closed) - st["blocked"]:
        out[f"optout|channel|{ch}"] += 1
    st["blocked"] |= set(closed)


def _engine_totals(run: SimRun) -> Counter[str]:
    counts, days = read_counts(run.client, run.prefix, TENANT, date(2025, 1, 1), date(2027, 1, 1))
    assert days >= 28
    return counts


def test_counts_reconcile_with_the_events_file(sim_run: SimRun) -> None:
    got = _engine_totals(sim_run)
    want = expected(sim_run.events, sim_run.alerts)
    assert want["leads"] == got["leads|all|"] == 150
    for field, n in want.items():
        if field.startswith("stl|"):
            assert got[f"stl|all||{field[4:]}"] == n, field
        elif field in ("within", "responses"):
            assert got[f"{field}|all|"] == n, field
        elif field != "leads":
            assert got[field] == n, field
    # nothing counted that the file does not have
    for metric in ("converted", "appointments", "contacted", "lost", "signed", "alerted"):
        by_bucket = {k: v for k, v in got.items() if k.startswith(f"{metric}|bucket|") and v}
        assert by_bucket == {k: v for k, v in want.items() if k.startswith(f"{metric}|bucket|")}
    assert got["optout|channel|sms"] > 0 and got["escalated|from|(pond)"] >= 0
    assert sum(got[f"escalated|to|{a}"] for a in ("Z01", "(pond)")) == 6
    # every labelled example the engine wrote is in the quality counters, once
    assert sum(v for k, v in got.items() if k.startswith("qn|")) == len(sim_run.labels)


def test_figures_reconcile_with_the_counts(sim_run: SimRun) -> None:
    want = expected(sim_run.events, sim_run.alerts)
    counts = _engine_totals(sim_run)
    report = compute(counts, TENANT, date(2025, 1, 1), date(2027, 1, 1), 30)
    assert report.total.leads == 150
    converted = sum(v for k, v in want.items() if k.startswith("converted|bucket|"))
    assert report.total.converted.num == converted
    assert report.total.converted.value == round(converted / 150, 4)
    for row in report.funnel["bucket"]:
        den = (
            want[f"alerted|bucket|{row.name}"]
            if row.name != "none"
            else 150 - sum(v for k, v in want.items() if k.startswith("alerted|bucket|"))
        )
        assert (row.leads, row.converted.num) == (den, want[f"converted|bucket|{row.name}"])
        if den < MIN_N:
            assert row.converted.value is None and "too little data" in row.converted.note
        else:
            rate = want[f"converted|bucket|{row.name}"] / den
            assert row.converted.value == round(rate, 4)
            base = converted / 150
            assert row.lift == (round(round(rate, 4) / base, 2) if base else None)
    everyone = report.speed["all"][0]
    assert everyone.responses == want["responses"]
    assert everyone.within_sla.num == want["within"]
    assert everyone.clocks == sum(v for k, v in want.items() if k.startswith("clocks|"))
    assert report.quality.labels == len(sim_run.labels)
    assert report.quality.positives == sum(1 for ex in sim_run.labels if ex["y"])


def test_a_lead_mark_remembers_the_bucket_of_its_first_alert(sim_run: SimRun) -> None:
    first: dict[str, str] = {}
    for a in sim_run.alerts:
        first.setdefault(a["lead_id"], a["bucket"])
    lead, bucket = next(iter(first.items()))
    _, rest = unpack_record(sim_run.client.get(lead_key(sim_run.prefix, TENANT, lead, "f")))
    assert rest is not None  # the lead's marks live in its record (features/record.py)
    assert LeadMark.from_list(rest.marks).bucket == bucket
