"""The aggregate rules (pure) and the figures computed from their counters."""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

from engine.events import Event
from engine.reporting.aggregates import AlertSeen, LeadMark, Seen, observe, quality, stl_bin
from engine.reporting.batch import ReportDelta, day_of_for
from engine.reporting.figures import MIN_N, compute, percentile

DAY = day_of_for("America/New_York")
T0 = 1_767_621_600.0  # Mon 5 Jan 2026 09:00 EST


def _ev(etype: str, dt: float = 0.0, **kw: Any) -> Event:
    return Event(event_id=f"{etype}-{dt}", lead_id="L1", type=etype, ts=T0 + dt, tenant="t", **kw)


def _feed(mark: LeadMark, *steps: tuple[Event, AlertSeen | None]) -> Counter[str]:
    out: Counter[str] = Counter()
    for ev, alert in steps:
        for _day, name, n in observe(mark, Seen(ev, ev.source, "", (), alert), DAY):
            out[name] += n
    return out


def test_a_lead_counts_once_and_moves_to_its_source_and_first_bucket() -> None:
    mark = LeadMark()
    got = _feed(
        mark,
        (_ev("page_view"), None),  # anonymous-looking first event: no source yet
        (_ev("agent_contact", 10, agent_id="ava"), None),  # contacted before any alert
        (_ev("lead_created", 20, source="portal"), None),
        (_ev("showing_request", 30), AlertSeen("P1", T0 + 330, hand_raise=True)),
        (_ev("page_view", 40), AlertSeen("P3", T0 + 9_999)),  # a later alert: bucket stays P1
    )
    assert got["leads|all|"] == 1 and got["leads|source|portal"] == 1
    assert got["leads|source|unknown"] == 0 and got["contacted|source|unknown"] == 0
    assert got["contacted|bucket|none"] == 0 and got["contacted|bucket|P1"] == 1
    assert got["alerted|bucket|P1"] == 1 and got["alerted|bucket|P3"] == 0
    assert got["clocks|all|"] == 1 and got["clocks|trigger|hand_raise"] == 1
    assert mark.bucket == "P1" and mark.source == "portal"


def test_speed_to_lead_is_the_first_response_after_the_alert() -> None:
    mark = LeadMark(day="2026-01-05", source="portal", bucket="P1")
    got = _feed(
        mark,
        (_ev("alert_ack", -600, agent_id="ava"), None),  # before any alert: no clock
        (_ev("inquiry", 0), AlertSeen("P1", T0 + 300, True)),
        (_ev("showing_request", 60), AlertSeen("P1", T0 + 200, True)),  # keeps the clock
        (_ev("agent_contact", 240, agent_id="ava"), None),  # 240 s > the earlier 200 s deadline
        (_ev("agent_contact", 250, agent_id="ava"), None),  # the clock is stopped already
    )
    assert got["clocks|all|"] == 1 and got["responses|all|"] == 1
    assert got["within|all|"] == 0
    assert got[f"stl|agent|ava|{stl_bin(240)}"] == 1 and stl_bin(240) == 4
    assert got["contacted|agent|ava"] == 1


def test_escalations_outcomes_and_opt_outs() -> None:
    mark = LeadMark()
    esc = {"how": "escalation"}
    got = _feed(
        mark,
        (_ev("lead_created", source="website"), None),
        (_ev("assigned", 1, props=esc), None),  # from the pond
        (_ev("assigned", 2, agent_id="cy", props={"how": "rule"}), None),
        (_ev("assigned", 3, agent_id="dee", props=esc), None),  # cy missed: to dee
        (_ev("appointment_set", 4, agent_id="dee"), None),
        (_ev("lost", 5), None),  # the first outcome won: no change
        (_ev("closed", 6, agent_id="dee"), None),
    )
    assert got["escalated|from|(pond)"] == 1 and got["escalated|from|cy"] == 1
    assert got["escalated|to|dee"] == 1 and got["assigned|agent|cy"] == 1
    assert got["converted|agent|dee"] == 1 and got["lost|all|"] == 0
    assert got["appointments|all|"] == 1 and got["signed|all|"] == 1
    out = observe(mark, Seen(_ev("opt_out", 7), "", "", ("sms", "call"), None), DAY)
    again = observe(mark, Seen(_ev("opt_out", 8), "", "", ("sms",), None), DAY)
    assert sorted(n for _, n, _ in out) == [
        "optout|channel|call", "optout|channel|sms", "optout|type|opt_out",
    ]  # fmt: skip
    assert again == []


def test_percentiles_from_bins_and_too_little_data() -> None:
    hist = [0] * 14
    hist[4] = 10  # 10 responses in (180 s, 300 s]
    assert percentile(hist, 0.5) == 240.0
    hist[13] = 30  # most slower than a day: the open bin has no number
    assert percentile(hist, 0.9) is None
    c: Counter[str] = Counter({"leads|all|": MIN_N - 1, "converted|all|": 3})
    report = compute(c, "t", date(2026, 1, 1), date(2026, 1, 7), 7)
    assert report.total.converted.value is None
    assert "too little data" in report.total.converted.note
    assert report.notes == [f"too little data: {MIN_N - 1} new leads in the period (rates need 20)"]


def test_quality_counts_give_auc_and_calibration() -> None:
    c: Counter[str] = Counter()
    for i in range(40):
        y = i % 2
        for _, name, n in quality({"pb": 0.9 if y else 0.1, "y": bool(y), "at": T0}, DAY):
            c[name] += n
    q = compute(c, "t", date(2026, 1, 1), date(2026, 1, 7), 1).quality
    assert (q.labels, q.positives, q.auc) == (40, 20, 1.0)
    assert q.ece is not None and abs(q.ece - 0.1) < 1e-6


def test_counters_expire_after_the_retention(client: Any, prefix: str) -> None:
    delta = ReportDelta(ttl_s=400 * 86_400, tenants_key=f"{{{prefix}}}:rpt:tenants")
    delta.counts[(f"{{{prefix}}}:rpt:t:2026-01-05", "leads|all|")] = 2
    delta.marks[("t", "L1")] = LeadMark(day="2026-01-05")
    delta.tenants.add("t")
    pipe = client.pipeline(transaction=True)
    delta.apply(pipe)
    pipe.execute()
    assert client.hget(f"{{{prefix}}}:rpt:t:2026-01-05", "leads|all|") == b"2"
    assert 399 * 86_400 < client.ttl(f"{{{prefix}}}:rpt:t:2026-01-05") <= 400 * 86_400
    # marks are the lead record's (written by the committer, with the lead's TTL), not here
    assert not client.exists(f"{{{prefix}}}:{{t:L1}}:rp", f"{{{prefix}}}:{{t:L1}}:f")


def test_lead_marks_round_trip_as_the_record_keeps_them() -> None:
    mark = LeadMark(day="2026-01-05", source="web", bucket="P2", agent="A1",
                    clock_ts=T0 + 0.25, clock_deadline=T0 + 300, clock_day="2026-01-05",
                    clock_kind="score", done={"a:A1", "contacted"}, blocked={"sms"})  # fmt: skip
    assert LeadMark.from_list(mark.to_list()) == mark
    assert LeadMark(day="2026-01-05").to_list() == ["2026-01-05"]  # empty tail left off
    assert LeadMark.from_list(None) == LeadMark() == LeadMark.from_list(b"junk")
