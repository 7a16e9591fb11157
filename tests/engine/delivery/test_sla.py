"""SLA clocks: tenant-local deadlines, stops by events, misses, redistribution, report."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.delivery.consumer import DeliveryService
from engine.delivery.local import LocalRules
from engine.delivery.sla import response_time
from engine.settings import load_settings
from tests.engine.delivery.conftest import Clock, business_now, handle_all, send, tenant_config

LA = ZoneInfo("America/Los_Angeles")


def _at(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=LA).timestamp()


def _west(make_settings: Any, **delivery: Any) -> Any:
    west = tenant_config(timezone="America/Los_Angeles", business_open_h=8, business_close_h=20,
                         quiet_start_h=21, quiet_end_h=8)  # fmt: skip
    return make_settings(delivery={"tenants": {"west": west, "default": tenant_config()},
                                   **delivery})  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "at", "deadline", "after_hours"),
    [
        ("portal", _at(2024, 3, 5, 10, 0), _at(2024, 3, 5, 10, 5), False),
        ("portal", _at(2024, 3, 5, 21, 30), _at(2024, 3, 5, 21, 45), True),
        ("valuation_request", _at(2024, 3, 5, 14, 0), _at(2024, 3, 5, 14, 15), False),
        ("valuation_request", _at(2024, 3, 5, 21, 30), _at(2024, 3, 6, 9, 0), True),
        ("valuation_request", _at(2024, 3, 6, 6, 30), _at(2024, 3, 6, 9, 0), True),
        ("open_house", _at(2024, 3, 5, 23, 0), _at(2024, 3, 6, 10, 0), True),
        ("referral", _at(2024, 3, 5, 19, 30), _at(2024, 3, 5, 20, 30), False),
        # spring forward: the night of 2024-03-10 is an hour short, 9:00 is PDT
        ("valuation_request", _at(2024, 3, 9, 22, 0), _at(2024, 3, 10, 9, 0), True),
    ],
)
def test_deadlines_in_the_tenants_time_zone(
    make_settings: Any, rule: str, at: float, deadline: float, after_hours: bool
) -> None:
    local = LocalRules(_west(make_settings), _west(make_settings).delivery.tenant("west"))
    assert local.deadline(at, rule) == (deadline, after_hours)


def test_dst_night_is_an_hour_short() -> None:
    assert _at(2024, 3, 10, 9, 0) - _at(2024, 3, 9, 22, 0) == 10 * 3600


def test_quiet_hours_per_tenant_keep_texts_and_calls_out(make_settings: Any) -> None:
    settings = _west(make_settings)
    west = LocalRules(settings, settings.delivery.tenant("west"))
    east = LocalRules(settings, settings.delivery.tenant("default"))
    at = _at(2024, 3, 5, 19, 0)  # 19:00 in LA, 22:00 in New York
    assert west.first_touch(at, "portal", (), call_first=True) == "call"
    assert east.first_touch(at, "portal", (), call_first=True) == "email"  # NY quiet hours
    assert west.first_touch(at, "portal", ("call",), call_first=True) == "sms"


def _alert(lead: str, ts: float, rule: str = "portal", tenant: str = "default") -> dict[str, Any]:
    return {
        "alert_id": f"{tenant}{lead}", "tenant": tenant, "lead_id": lead,
        "triggers": ["hand_raise:inquiry"], "score_after": 92, "bucket": "P1", "tier": "hot",
        "reasons": ["asked about a home"],
        "event": {"event_id": f"ev{lead}", "type": "inquiry", "ts": ts, "area": "02139"},
        "first_touch": "call", "blocked_channels": [],
        "sla": {"rule": rule, "deadline_ts": ts + 300, "after_hours": False},
        "agent_id": "", "ingest_ms": int(ts * 1000), "emit_ms": int(ts * 1000),
    }  # fmt: skip


def test_alert_of_a_west_tenant_gets_its_local_after_hours_deadline(
    make_settings: Any, client: Any
) -> None:
    at = _at(2024, 3, 5, 21, 30)
    clock = Clock(at + 1)
    svc = DeliveryService(_west(make_settings), client, clock=clock)
    payload = svc.handle(_alert("W1", at, "valuation_request", tenant="west")).payload
    assert payload is not None
    assert payload["sla"]["deadline_ts"] == _at(2024, 3, 6, 9, 0)  # not NY's "+300 s"
    assert payload["sla"]["after_hours"] is True
    assert payload["clock"]["deadline_ts"] == _at(2024, 3, 6, 9, 0)
    assert payload["first_touch"] == "email"  # 21:30 in LA: quiet hours


def test_ack_event_stops_the_clock_and_counts_within_sla(make_settings: Any, client: Any) -> None:
    now = business_now()
    clock = Clock(now - 460)  # alerts are emitted 60 s and 460 s before the responses arrive
    settings = make_settings(delivery={"tenants": {"default": tenant_config()}})
    svc = DeliveryService(settings, client, clock=clock)
    svc.handle(_alert("K2", now - 460))
    clock.t = now - 60
    svc.handle(_alert("K1", now - 60))
    clock.t = now
    send(settings, client, [
        {"event_id": "ack1", "lead_id": "K1", "type": "alert_ack", "ts": now, "agent_id": "dee"},
        {"event_id": "con2", "lead_id": "K2", "type": "agent_contact", "ts": now,
         "agent_id": "cy", "channel": "call"},
    ])  # fmt: skip
    assert svc.drain_events() == 4  # the two responses and routing's two `assigned` events
    k1, k2 = svc.clocks.read("default", "K1"), svc.clocks.read("default", "K2")
    assert k1 is not None and k2 is not None
    assert (k1["status"], k1["stopped_by"]) == ("met", "dee")
    assert k1["response_s"] == pytest.approx(60.0, abs=2)  # arrival: the entry's id
    assert k2["status"] == "late"  # after the 5-minute deadline
    assert k2["response_s"] == pytest.approx(460.0, abs=2)
    assert svc.drain_events() == 0  # the cursor moved on
    report = svc.clocks.report("default")
    dee = report["by_agent"]["dee"]
    assert (dee["responses"], dee["within_sla"]) == (1, 1)
    assert dee["median_first_response_s"] == pytest.approx(60.0, abs=2)
    row = report["by_source"]["unknown"]
    assert row["clocks"] == 2 and row["within_sla"] == 1 and row["within_sla_rate"] == 0.5
    assert row["median_first_response_s"] == pytest.approx(260.0, abs=2)
    assert row["late_on_arrival"] == 0 and row["pond_missed"] == 0
    feed = client.xrange(svc.keys.feed("default"))
    assert [f[b"k"] for _, f in feed].count(b"sla") == 2


def test_a_response_seen_before_the_alert_stops_the_clock_at_once(
    make_settings: Any, client: Any
) -> None:
    now = business_now()
    settings = make_settings(delivery={"tenants": {"default": tenant_config()}})
    svc = DeliveryService(settings, client, clock=Clock(now))
    send(settings, client, [{"event_id": "c0", "lead_id": "Q1", "type": "agent_contact",
                             "ts": now - 10, "agent_id": "cy", "channel": "call"}])  # fmt: skip
    svc.drain_events()
    svc.handle(_alert("Q1", now - 30))
    c = svc.clocks.read("default", "Q1")
    assert c is not None and c["status"] == "met" and c["response_s"] == 20.0


def test_miss_redistributes_to_the_next_agent_then_the_pond(
    make_settings: Any, client: Any
) -> None:
    at = _at(2024, 3, 5, 10, 0)  # business hours in LA
    clock = Clock(at)
    svc = DeliveryService(_west(make_settings), client, clock=clock)
    first = svc.handle(_alert("M1", at, "portal", tenant="west")).payload
    assert first is not None and first["assignment"]["agent"] == "cy"
    assert first["sla"]["deadline_ts"] == at + 300
    clock.advance(299)
    assert svc.tick() == []
    clock.advance(2)  # 10:05:01: cy missed it
    svc.tick()
    a = svc.assigner.read("west", "M1")
    assert a is not None and (a.state, a.agent, a.how) == ("assigned", "dee", "escalation")
    assert a.reason == "SLA missed by cy: reassigned to the next agent in north, dee"
    c = svc.clocks.read("west", "M1")
    assert c is not None and c["status"] == "open" and c["agent"] == "dee"
    assert c["deadline_ts"] == clock() + 300 and c["missed_by"] == ["cy"]
    assert svc.metrics.sla_missed.labels("unknown")._value.get() == 1
    kinds = [f[b"k"] for _, f in client.xrange(svc.keys.feed("west"))]
    assert kinds == [b"alert", b"assignment", b"escalated"]
    clock.advance(301)  # dee missed it too: the pond
    svc.tick()
    a = svc.assigner.read("west", "M1")
    assert a is not None and (a.state, a.group) == ("pond", "pond")
    assert a.reason == "SLA missed by dee: returned to the pond (shared queue)"
    assert a.missed_by == ("cy", "dee")
    clock.advance(301)  # no step left: the clock closes as missed
    svc.tick()
    c = svc.clocks.read("west", "M1")
    assert c is not None and c["status"] == "missed" and c["misses"] == 3
    report = svc.clocks.report("west")
    assert report["by_source"]["unknown"]["missed"] == 1  # one lead missed (three times)
    assert report["by_agent"]["cy"]["missed"] == 1 and report["by_agent"]["dee"]["missed"] == 1
    assert svc.metrics.escalations.labels("next_agent")._value.get() == 1
    assert svc.metrics.escalations.labels("pond")._value.get() == 1


def test_a_miss_late_in_the_day_gives_the_next_agent_an_after_hours_deadline(
    make_settings: Any, client: Any
) -> None:
    at = _at(2024, 3, 5, 19, 56)
    clock = Clock(at)
    svc = DeliveryService(_west(make_settings), client, clock=clock)
    svc.handle(_alert("N1", at, "portal", tenant="west"))
    clock.advance(301)  # 20:01: after hours, the portal row gives 15 minutes
    svc.tick()
    c = svc.clocks.read("west", "N1")
    assert c is not None and c["deadline_ts"] == clock() + 15 * 60


def test_handle_all_through_the_stream_keeps_one_clock_per_lead(
    make_settings: Any, client: Any
) -> None:
    now = time.time()
    settings = make_settings(delivery={"tenants": {"default": tenant_config()}})
    svc = DeliveryService(settings, client, clock=Clock(now))
    a1 = svc.handle(_alert("O1", now - 20)).payload
    a2 = svc.handle({**_alert("O1", now - 10), "alert_id": "second"}).payload
    assert a1 is not None and a2 is not None
    assert a2["clock"]["alert_id"] == a1["alert_id"]  # the open clock is kept
    assert a2["assignment"]["how"] == "sticky"
    assert handle_all(svc) == []


# -- wall-clock arrival (issue 14 item 4) -----------------------------------------------


def _pond_settings(make_settings: Any) -> Any:
    return make_settings(delivery={"tenants": {"default": {"default_group": "pond"}}})


def test_an_old_event_is_late_on_arrival_and_its_clock_starts_at_emission(
    make_settings: Any, client: Any
) -> None:
    now = business_now()
    settings = make_settings(delivery={"tenants": {"default": tenant_config()}})
    clock = Clock(now)
    svc = DeliveryService(settings, client, clock=clock)
    alert = {**_alert("A1", now - 35 * 60), "emit_ms": int(now * 1000)}  # posted 35 min late
    payload = svc.handle(alert).payload
    assert payload is not None
    sla = payload["sla"]
    assert (sla["start_ts"], sla["deadline_ts"]) == (now, now + 300)  # full window on arrival
    assert sla["late_on_arrival"] is True and sla["arrival_delay_s"] == 35 * 60
    c = svc.clocks.read("default", "A1")
    assert c is not None and c["late_on_arrival"] and c["start_ts"] == now
    clock.advance(1)
    assert svc.tick() == []  # not expired on arrival: nobody escalated at once
    c = svc.clocks.read("default", "A1")
    assert c is not None and (c["status"], c["misses"], c["missed_by"]) == ("open", 0, [])
    report = svc.clocks.report("default")
    assert report["by_source"]["unknown"]["late_on_arrival"] == 1
    assert all(row["missed"] == 0 for row in report["by_agent"].values())


def test_a_fresh_event_is_not_late_on_arrival(make_settings: Any, client: Any) -> None:
    now = business_now()
    svc = DeliveryService(_pond_settings(make_settings), client, clock=Clock(now + 0.02))
    payload = svc.handle(_alert("A2", now)).payload
    assert payload is not None and payload["sla"]["late_on_arrival"] is False


def test_a_delivery_backlog_starts_the_clock_when_delivery_gets_the_alert(
    make_settings: Any, client: Any
) -> None:
    now = business_now()
    svc = DeliveryService(_pond_settings(make_settings), client, clock=Clock(now))
    payload = svc.handle(_alert("A3", now - 600)).payload  # emitted 10 min ago: delivery was down
    assert payload is not None
    assert payload["sla"]["start_ts"] == now and payload["sla"]["deadline_ts"] == now + 300
    assert payload["sla"]["late_on_arrival"] is True


def test_contact_25_s_after_a_later_alert_about_old_events_is_met(
    make_settings: Any, client: Any
) -> None:
    """Found: events posted 35 min late, a showing request, contact 25 s later: `late`."""
    now = business_now()
    settings = make_settings(delivery={"tenants": {"default": tenant_config()}})
    clock = Clock(now - 30)
    svc = DeliveryService(settings, client, clock=clock)
    first = {**_alert("A4", now - 2150), "emit_ms": int((now - 30) * 1000)}
    svc.handle(first)
    clock.t = now - 25
    event = {"event_id": "evA4b", "type": "showing_request", "ts": now - 2140}
    showing = {**_alert("A4", now - 2140), "alert_id": "A4-showing", "event": event,
               "emit_ms": int((now - 25) * 1000)}  # fmt: skip
    svc.handle(showing)
    clock.t = now
    send(settings, client, [{"event_id": "c-a4", "lead_id": "A4", "type": "agent_contact",
                             "ts": now, "agent_id": "cy", "channel": "call"}])  # fmt: skip
    svc.drain_events()
    c = svc.clocks.read("default", "A4")
    assert c is not None and c["status"] == "met" and c["stopped_by"] == "cy"
    assert c["response_s"] == pytest.approx(30.0, abs=2)  # from the first alert's arrival
    cy = svc.clocks.report("default")["by_agent"]["cy"]
    assert (cy["responses"], cy["within_sla"], cy["missed"]) == (1, 1, 0)


def test_a_contact_before_the_alert_does_not_stop_its_clock(
    make_settings: Any, client: Any
) -> None:
    now = business_now()
    svc = DeliveryService(_pond_settings(make_settings), client, clock=Clock(now))
    assert svc.clocks.note_response("default", "A5", now - 100, "cy", "agent_contact", "old",
                                    at=now - 100) is None  # fmt: skip
    svc.handle(_alert("A5", now))
    c = svc.clocks.read("default", "A5")
    assert c is not None and c["status"] == "open"
    stopped = svc.clocks.note_response("default", "A5", now + 40, "cy", "agent_contact", "new",
                                       at=now + 41)  # fmt: skip
    assert stopped is not None and stopped["status"] == "met" and stopped["response_s"] == 40


def test_a_pond_miss_blames_no_agent(make_settings: Any, client: Any) -> None:
    now = business_now()
    clock = Clock(now)
    svc = DeliveryService(_pond_settings(make_settings), client, clock=clock)
    first = svc.handle(_alert("A6", now)).payload
    assert first is not None and first["assignment"]["state"] == "pond"
    clock.advance(301)
    svc.tick()
    c = svc.clocks.read("default", "A6")
    assert c is not None and c["misses"] == 1 and c["missed_by"] == []
    a = svc.assigner.read("default", "A6")
    assert a is not None and a.missed_by == ()
    assert a.reason == "SLA missed while unclaimed in the pond: still in the pond (shared queue)"
    assert "nobody" not in a.reason
    report = svc.clocks.report("default")
    assert report["by_agent"] == {}  # no "unassigned", no agent charged
    assert report["by_source"]["unknown"]["pond_missed"] == 1
    for _, f in client.xrange(svc.keys.feed("default")):
        data = f[b"d"].decode()
        assert "unassigned" not in data and "nobody" not in data and "another agent" not in data


def test_after_an_escalation_the_new_owner_is_judged_on_its_own_deadline(
    make_settings: Any, client: Any
) -> None:
    at = _at(2024, 3, 5, 10, 0)
    clock = Clock(at)
    svc = DeliveryService(_west(make_settings), client, clock=clock)
    svc.handle(_alert("A7", at, "portal", tenant="west"))  # cy
    clock.advance(301)
    svc.tick()  # cy missed: dee, a fresh 5 minutes from now
    handed = clock()
    clock.advance(120)
    stopped = svc.clocks.note_response("west", "A7", clock(), "dee", "agent_contact", "c7",
                                       at=clock())  # fmt: skip
    assert stopped is not None and stopped["status"] == "late"  # the lead waited past 5 min
    report = svc.clocks.report("west")
    dee, cy = report["by_agent"]["dee"], report["by_agent"]["cy"]
    assert (dee["clocks"], dee["responses"], dee["within_sla"], dee["missed"]) == (1, 1, 1, 0)
    assert dee["median_first_response_s"] == clock() - handed == 120
    assert (cy["clocks"], cy["responses"], cy["missed"]) == (1, 0, 1)
    assert report["by_source"]["unknown"]["within_sla"] == 0


def test_a_response_by_someone_else_is_not_counted_for_them(
    make_settings: Any, client: Any
) -> None:
    now = business_now()
    settings = make_settings(delivery={"tenants": {"default": tenant_config()}})
    svc = DeliveryService(settings, client, clock=Clock(now))
    svc.handle(_alert("A8", now))  # cy's
    svc.clocks.note_response("default", "A8", now + 30, "eli", "agent_contact", "c8", at=now + 30)
    report = svc.clocks.report("default")
    assert "eli" not in report["by_agent"]
    assert report["by_agent"]["cy"]["responses"] == 0
    assert report["by_source"]["unknown"]["within_sla"] == 1  # the lead was answered in time


# -- properties of the arrival rules (pure) ---------------------------------------------

_T0 = 1_767_607_200.0  # Mon 5 Jan 2026 10:00 EST


@settings(max_examples=200, deadline=None)
@given(
    event_age=st.floats(0, 30 * 86_400),
    emit_lag=st.floats(0, 7200),
    rule=st.sampled_from(["portal", "valuation_request", "open_house", "referral", "default"]),
    tz=st.sampled_from(["America/Los_Angeles", "America/New_York"]),
)
def test_a_clock_never_starts_expired_and_late_means_the_event_was(
    event_age: float, emit_lag: float, rule: str, tz: str
) -> None:
    settings = load_settings(overrides={"delivery": {"tenants": {"t": {"timezone": tz}}}},
                             environ={})  # fmt: skip
    local = LocalRules(settings, settings.delivery.tenant("t"))
    now = _T0 + 3 * 86_400
    emitted = now - emit_lag
    alert = {"event": {"ts": emitted - event_age}, "sla": {"rule": rule},
             "emit_ms": emitted * 1000}  # fmt: skip
    a = local.arrival(alert, now)
    assert a.deadline_ts > now  # the agent always has time left when the alert arrives
    assert a.start_ts in (pytest.approx(emitted), now)
    assert a.late_on_arrival == (local.deadline(a.event_ts, rule)[0] <= a.start_ts)
    assert a.arrival_delay_s == pytest.approx(max(0.0, a.start_ts - a.event_ts))


@settings(max_examples=300, deadline=None)
@given(
    start=st.floats(_T0, _T0 + 1000),
    event_back=st.floats(0, 5000),
    ts_off=st.floats(-5000, 5000),
    at_off=st.floats(-5000, 5000),
)
def test_a_response_counts_only_after_the_alert_and_never_before_the_start(
    start: float, event_back: float, ts_off: float, at_off: float
) -> None:
    clock = {"start_ts": start, "event_ts": start - event_back}
    ts, at = start + ts_off, start + at_off
    when = response_time(clock, ts, at)
    after = at >= start - 5 or ts >= start - event_back - 5
    assert (when is not None) == after
    if when is not None:
        assert when >= start
        assert when <= max(at, start) + 1e-6  # never later than it arrived
