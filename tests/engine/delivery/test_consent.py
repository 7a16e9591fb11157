"""Consent through the real engine: opt-outs and STOP replies never get a text recommended."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from engine.delivery.consent import ConsentBook, blocked_reasons, blocks_from
from engine.delivery.consumer import DeliveryService
from engine.events import Event
from engine.streams import stream_names
from engine.views import read_alerts
from tests.engine.delivery.conftest import (
    Clock,
    business_now,
    handle_all,
    run_engine,
    send,
    tenant_config,
)

NY = ZoneInfo("America/New_York")
# a Tuesday, 14:00 in New York: business hours, no quiet hours, so texts are allowed
T0 = datetime(2025, 6, 3, 14, 0, tzinfo=NY).timestamp()
HAND_RAISES = ("valuation_request", "showing_request", "call_request", "inquiry")


def _lead_events(lead: str, first: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, ev in enumerate(first):
        out.append({"event_id": f"{lead}-b{i}", "lead_id": lead, "ts": T0 + i, **ev})
    for i, etype in enumerate(HAND_RAISES):
        out.append({"event_id": f"{lead}-h{i}", "lead_id": lead, "type": etype,
                    "ts": T0 + 100 + 120 * i, "property_id": "P1", "area": "02139",
                    "source": "portal"})  # fmt: skip
    return out


def _run(make_settings: Any, client: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    settings = make_settings(delivery={"tenants": {"default": tenant_config()}})
    send(settings, client, events)
    run_engine(settings, client)
    svc = DeliveryService(settings, client, clock=Clock(business_now()))  # daytime: no quiet hours
    payloads = handle_all(svc)
    names = stream_names(settings)
    engine_alerts = read_alerts(client, names)
    assert len(engine_alerts) == len(payloads)
    return payloads


def test_after_an_sms_opt_out_no_alert_recommends_a_text(make_settings: Any, client: Any) -> None:
    payloads = _run(make_settings, client, [
        # both leads said no calls, so a hand-raise would get a text next
        *_lead_events("optout", [{"type": "opt_out", "channel": "call"},
                                 {"type": "opt_out", "channel": "sms"}]),
        *_lead_events("control", [{"type": "opt_out", "channel": "call"}]),
    ])  # fmt: skip
    opted = [p for p in payloads if p["lead_id"] == "optout"]
    control = [p for p in payloads if p["lead_id"] == "control"]
    assert len(opted) == len(HAND_RAISES) and len(control) == len(HAND_RAISES)
    assert {p["first_touch"] for p in control} == {"sms"}  # texts are recommended otherwise
    for p in opted:
        assert p["first_touch"] == "email"
        assert p["blocked_channels"] == ["call", "sms"]
        assert p["blocked_reasons"] == {  # in the tenant's time zone (America/New_York)
            "call": "opted out of phone calls on 2025-06-03 14:00 EDT",
            "sms": "opted out of text on 2025-06-03 14:00 EDT",
        }


def test_after_a_stop_reply_no_alert_recommends_a_text(make_settings: Any, client: Any) -> None:
    payloads = _run(make_settings, client, _lead_events("stopper", [
        {"type": "opt_out", "channel": "call"},
        {"type": "reply", "channel": "sms", "props": {"text": " stop "}},
    ]))  # fmt: skip
    assert len(payloads) == len(HAND_RAISES)
    for p in payloads:
        assert p["first_touch"] == "email" and p["blocked_channels"] == ["call", "sms"]
        assert p["blocked_reasons"]["sms"].startswith("replied STOP to a text on 2025-06-03")


def test_every_channel_blocked_says_why_for_each(make_settings: Any, client: Any) -> None:
    payloads = _run(make_settings, client, _lead_events("gone", [
        {"type": "unsubscribe", "channel": "email"},
        {"type": "invalid_contact"},  # no channel: the phone number (call and text)
    ]))  # fmt: skip
    for p in payloads:
        assert p["first_touch"] == "none"
        assert set(p["blocked_reasons"]) == {"call", "email", "sms"}
        assert p["blocked_reasons"]["email"].startswith("unsubscribed from email")
        assert p["blocked_reasons"]["call"].startswith("phone calls contact details reported")


def test_blocks_mirror_the_engine_channel_rules() -> None:
    def ev(etype: str, channel: str = "", **props: Any) -> Event:
        return Event("e1", "L", etype, T0, channel=channel, props=props)

    assert [b.channel for b in blocks_from(ev("opt_out"))] == ["email", "sms", "call"]
    assert [b.channel for b in blocks_from(ev("opt_out", "web"))] == ["email", "sms", "call"]
    assert [b.channel for b in blocks_from(ev("bounce"))] == ["email"]
    assert [b.channel for b in blocks_from(ev("reply", text="STOPALL"))] == ["sms"]
    assert blocks_from(ev("reply", "sms", text="stop by at 5?")) == []
    assert [b.why for b in blocks_from(ev("reply", "chat", text="quit"))] == ["stop_reply"]
    assert blocked_reasons(["sms"], {})["sms"].startswith("text blocked by an earlier")


def test_consent_book_keeps_the_first_block(client: Any, prefix: str) -> None:
    from engine.delivery.keys import DeliveryKeys

    book = ConsentBook(client, DeliveryKeys(prefix), ttl_s=600)
    first = Event("x1", "L9", "reply", T0, channel="sms", props={"text": "STOP"})
    later = Event("x2", "L9", "opt_out", T0 + 50, channel="sms")
    assert book.record([first, later]) == 2
    assert book.reasons("default", "L9")["sms"]["why"] == "stop_reply"
    state = book.state("default", "L9", ["email"])
    assert state["channels"]["sms"]["allowed"] is False
    assert state["channels"]["call"] == {"allowed": True, "why": ""}
    assert "email" in state["blocked_reasons"]
