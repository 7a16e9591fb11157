"""Delivered alerts speak like an agent: the home by its address, the bucket's rule, the
deadline in the tenant's time with its date (real engine, real Redis)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from engine.delivery.consumer import DeliveryService
from engine.delivery.scripts import FALLBACK_HOME
from tests.engine.delivery.conftest import (
    Clock,
    business_now,
    handle_all,
    run_engine,
    send,
    tenant_config,
)

#: 11:00 in Los Angeles on a weekday: a call is the first touch (at 21:30 there it is an
#: email: quiet hours), whatever the hour the test runs at
NOW = business_now() + 3 * 3600


def _showing(lead: str, **props: Any) -> dict[str, Any]:
    return {"event_id": f"s-{lead}", "lead_id": lead, "type": "showing_request",
            "ts": NOW - 5, "area": "02139", "property_id": "P77", "source": "portal",
            "props": props}  # fmt: skip


def test_a_delivered_alert_names_the_home_and_the_rule_in_local_time(
    make_settings: Any, client: Any
) -> None:
    west = tenant_config(timezone="America/Los_Angeles")
    settings = make_settings(delivery={"tenants": {"default": west}})
    send(settings, client, [_showing("T1", address="12 Elm St", title="Sunny 3-bed"),
                            _showing("T2", title="Sunny 3-bed near the park"),
                            _showing("T3")])  # fmt: skip
    run_engine(settings, client)
    svc = DeliveryService(settings, client, clock=Clock(NOW))
    out = {p["lead_id"]: p for p in handle_all(svc)}
    t1, t2, t3 = out["T1"], out["T2"], out["T3"]
    assert "12 Elm St" in t1["script"]["text"] and "P77" not in t1["script"]["text"]
    assert t1["event"]["address"] == "12 Elm St" and t1["lead"]["address"] == "12 Elm St"
    assert t1["why_now"] == "Asked to see 12 Elm St"
    assert "Sunny 3-bed near the park" in t2["script"]["text"]
    assert FALLBACK_HOME in t3["script"]["text"] and "P77" not in t3["script"]["text"]
    assert t3["why_now"] == "Asked to see the home they viewed"
    for p in (t1, t2, t3):
        assert p["bucket"] == "P1"
        if p.get("bucket_by", "score") == "hand_raise":
            assert p["bucket_label"] == "P1 · hand-raise"
        assert p["text"].startswith(p["bucket_label"] + " · lead ")
        due = datetime.fromtimestamp(p["sla"]["deadline_ts"], ZoneInfo("America/Los_Angeles"))
        assert f"{due.day} {due:%b %Y, %H:%M} {due.tzname()}" in p["text"]
        assert p["sla"]["timezone"] == "America/Los_Angeles"
    assert "lead T1: Asked to see 12 Elm St · call by " in t1["text"]


def test_the_engines_bucket_by_is_shown_when_it_lands(make_settings: Any, client: Any) -> None:
    now = time.time()
    settings = make_settings(delivery={"tenants": {"default": tenant_config()}})
    svc = DeliveryService(settings, client)
    alert = {
        "alert_id": "bb1", "tenant": "default", "lead_id": "T9", "triggers": ["entered:P1"],
        "score_after": 40, "bucket": "P1", "bucket_by": "hand_raise", "tier": "hot",
        "reasons": [], "first_touch": "call", "blocked_channels": [],
        "event": {"event_id": "e9", "type": "property_view", "ts": now, "property_id": "P9",
                  "address": "9 Oak Ave", "title": ""},
        "sla": {"rule": "portal", "deadline_ts": now + 300, "after_hours": False},
        "agent_id": "", "ingest_ms": 0, "emit_ms": int(now * 1000),
    }  # fmt: skip
    p = svc.handle(alert).payload
    assert p is not None
    assert p["bucket_label"] == "P1 · hand-raise" and p["text"].startswith("P1 · hand-raise · ")
    assert p["why_now"] == "Viewed 9 Oak Ave" and "P9" not in p["script"]["text"]
    old = svc.handle({**alert, "alert_id": "bb2", "lead_id": "T10", "bucket_by": None}).payload
    assert old is not None and old["bucket_label"] == "P1" and old["bucket_by"] == "score"


def test_the_demo_prints_the_rule_the_home_and_dated_local_times() -> None:
    from engine.demo import format_alert

    at = datetime(2026, 1, 5, 15, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    alert = {"lead_id": "L7", "score_before": 40, "score_after": 45, "bucket": "P1",
             "bucket_by": "hand_raise", "tier": "hot", "triggers": ["hand_raise:showing_request"],
             "event": {"type": "showing_request", "ts": at, "property_id": "P77",
                       "address": "12 Elm St"},
             "first_touch": "call", "sla": {"deadline_ts": at + 300},
             "blocked_channels": ["sms"], "reasons": ["asked to see a home"]}  # fmt: skip
    text = format_alert(alert, "America/Chicago")
    assert text.startswith("ALERT ") and "P1 · hand-raise" in text
    assert "Asked to see 12 Elm St" in text and "P77" not in text
    assert "at Mon 5 Jan 2026, 09:00 CST -> call by Mon 5 Jan 2026, 09:05 CST" in text
    assert "UTC" not in text and "blocked: sms" in text
    assert format_alert({}).startswith("ALERT ")  # odd input never raises
