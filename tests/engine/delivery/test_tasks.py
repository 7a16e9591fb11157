"""Follow-up steps delivered: agent tasks on the feed and the agent's task list, automatic
messages to the tenant's signed webhook with the template id and fields; a step on a
channel delivery knows to be closed is not sent."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgpack

from engine.app import build_parts
from engine.delivery.consumer import DeliveryService
from engine.delivery.tasks import task_text

SECRET = "test-secret-0123456789abcdef"
T0 = datetime(2025, 6, 2, 10, 0, tzinfo=ZoneInfo("America/New_York")).timestamp()
DAY = 86_400.0


def _ev(eid: str, lead: str, etype: str, ts: float, **kw: Any) -> dict[str, Any]:
    return {"event_id": eid, "lead_id": lead, "type": etype, "ts": ts, "tenant": "acme", **kw}


def _run(parts: Any, events: list[dict[str, Any]], start: int) -> None:
    parts.processor.process_retrying([
        (0, f"{start + i}-0".encode(), {b"e": msgpack.packb(e, use_bin_type=True)})
        for i, e in enumerate(events)
    ])  # fmt: skip


def test_tasks_go_to_the_feed_and_messages_to_the_webhook(
    client: Any, make_settings: Any, prefix: str
) -> None:
    settings = make_settings(
        streams={"partitions": 1}, cadence={"enabled": True},
        delivery={"tenants": {"acme": {"webhook_url": "http://127.0.0.1:9/hook",
                                       "secret": SECRET}}},
    )  # fmt: skip
    parts = build_parts(settings, client)
    parts.processor._cadence.clock = lambda: T0 + 1
    hand = _ev("a1", "L42", "showing_request", T0, agent_id="cy", area="east",
               props={"address": "1 Main St"})  # fmt: skip
    _run(parts, [hand, _ev("b1", "L7", "inquiry", T0), _ev("b2", "L7", "unsubscribe", T0)], 1)
    svc = DeliveryService(settings, client, clock=lambda: T0 + 30)
    svc.ensure_group()
    handled = svc.handle_steps(svc.lanes[0].steps_in.read(None))
    assert len(handled) == 3  # L42: email + call; L7: the call (its email closed at once)
    feed = client.xrange(svc.keys.feed("acme"))
    tasks = [json.loads(f[b"d"]) for _, f in feed if f[b"k"] == b"task"]
    assert [t["lead_id"] for t in tasks] == ["L42", "L7"]
    assert tasks[0]["text"] == (
        "call L42 now — day 0 of the 14-day hot cadence: connect fast: first call attempt"
    )
    assert [f[b"to"] for _, f in feed if f[b"k"] == b"task"] == [b"cy", b"*"]
    assert [t["step_id"] for t in svc.steps.today("acme", "cy", T0 + 30, "America/New_York")] \
        == [tasks[0]["step_id"]]  # fmt: skip
    jobs = [j for _, js in handled for j in js]
    assert len(jobs) == 1 and jobs[0].url == "http://127.0.0.1:9/hook" and jobs[0].signed
    body = json.loads(jobs[0].body)
    assert body["type"] == "cadence.message" and body["template"] == "c14.d0.email.confirm"
    assert body["fields"]["address"] == "1 Main St" and body["delivery_id"] == body["step_id"]
    reg = svc.metrics.registry
    sent = {
        k: reg.get_sample_value(
            "leadpulse_delivery_cadence_steps_total", {"kind": k, "outcome": "sent"}
        )
        for k in ("task", "message")
    }
    assert sent == {"task": 2.0, "message": 1.0}  # fmt: skip
    assert reg.get_sample_value("leadpulse_delivery_cadence_steps_total",
                                {"kind": "message", "outcome": "blocked"}) == 0.0  # fmt: skip


def test_a_step_on_a_channel_delivery_knows_is_closed_is_not_sent(
    client: Any, make_settings: Any
) -> None:
    settings = make_settings(streams={"partitions": 1}, cadence={"enabled": True})
    svc = DeliveryService(settings, client, clock=lambda: T0)
    svc.consent.record([])
    key = svc.keys.consent("acme", "L1")
    client.hset(key, "sms", json.dumps({"channel": "sms", "why": "opt_out", "ts": T0,
                                        "event_id": "x", "text": "opted out"}))  # fmt: skip
    step = {"step_id": "s1", "tenant": "acme", "lead_id": "L1", "kind": "message",
            "channel": "sms", "due_ts": T0}  # fmt: skip
    assert svc.steps.handle(step, T0) == [] and svc.steps.counts["blocked"] == 1


def test_task_text_names_a_later_time_in_the_tenant_zone() -> None:
    step = {"channel": "call", "lead_id": "L42", "day": 2, "plan_label": "hot track",
            "goal": "offer two time options", "due_ts": T0 + 3600}  # fmt: skip
    assert task_text({**step, "due_ts": T0}, T0, "America/New_York") == (
        "call L42 now — day 2 of the hot track: offer two time options"
    )
    assert "at Mon 11:00 EDT" in task_text(step, T0, "America/New_York")


def test_get_tasks_shows_today_per_agent_and_an_agent_key_only_its_own(
    client: Any, make_settings: Any
) -> None:
    import httpx
    from fastapi import FastAPI

    from engine.delivery.deps import current_agent
    from engine.delivery.metrics import DeliveryMetrics
    from engine.delivery.page import page_router
    from engine.delivery.sse import sse_router
    from tests.engine.delivery.conftest import Server

    tz = "America/New_York"
    settings = make_settings(
        streams={"partitions": 1}, cadence={"enabled": True},
        delivery={"tenants": {"acme": {"timezone": tz, "groups": {"north": ["cy", "ava"]}}}},
    )  # fmt: skip
    svc = DeliveryService(settings, client, clock=lambda: T0)
    base = {"tenant": "acme", "kind": "task", "channel": "call", "plan": "hot_week",
            "plan_label": "hot track", "goal": "personal check-in", "day": 3}  # fmt: skip
    for sid, lead, agent, due in (
        ("s1", "L1", "cy", T0 + 3600),
        ("s2", "L2", "ava", T0),
        ("s3", "L3", "", T0 + 60),
        ("s4", "L4", "cy", T0 + 2 * DAY),
    ):
        svc.steps.handle({**base, "step_id": sid, "lead_id": lead, "agent_id": agent,
                          "due_ts": due}, T0)  # fmt: skip
    svc.steps.handle(
        {**base, "step_id": "s1", "lead_id": "L1", "agent_id": "cy", "due_ts": T0 + 3600}, T0 + 5
    )  # a redelivery: still one task
    app, m = FastAPI(), DeliveryMetrics.create()
    app.include_router(sse_router(settings, client, m))
    app.include_router(page_router(settings, client, m, clock=lambda: T0))
    with Server(app) as server, httpx.Client(base_url=server.url) as http:
        got = http.get("/v1/tasks", params={"tenant": "acme", "agent": "cy"}).json()
        assert [t["step_id"] for t in got["tasks"]] == ["s3", "s1"]  # s4 is due in 2 days
        assert got["day"] == "2025-06-02" and got["timezone"] == tz
        one = got["tasks"][1]
        assert (one["lead_id"], one["due_local"]) == ("L1", "11:00 EDT")
        assert one["text"] == "call L1 at Mon 11:00 EDT — day 3 of the hot track: personal check-in"
        assert got["tasks"][0]["unassigned"] is True
        every = http.get("/v1/tasks", params={"tenant": "acme"}).json()
        assert [t["step_id"] for t in every["tasks"]] == ["s2", "s3", "s1"]
        app.dependency_overrides[current_agent] = lambda: "ava"
        mine = http.get("/v1/tasks", params={"tenant": "acme"}).json()
        assert mine["agent"] == "ava" and [t["step_id"] for t in mine["tasks"]] == ["s2", "s3"]
        other = http.get("/v1/tasks", params={"tenant": "acme", "agent": "cy"})
        assert other.status_code == 403 and "cannot view agent cy" in other.json()["detail"]
        page = http.get("/hotlist").text
        assert 'data-tasks-url="/v1/tasks"' in page and "Today's tasks" in page


def test_messages_go_to_targets_that_opted_in_with_the_cadence_trigger(
    client: Any, make_settings: Any
) -> None:
    import pytest

    from engine.errors import ConfigError

    targets = {
        "sender": {"kind": "http", "url": "http://127.0.0.1:9/send/{crm_id}", "on": ["cadence"],
                   "auth": "bearer", "secret": "tok-0123", "lead_prefix": "acme-"},
        "team": {"kind": "slack", "url": "https://hooks.slack.example/T1/B1/x",
                 "on": ["alert", "cadence"]},
        "alerts_only": {"kind": "teams", "url": "https://teams.example/hook"},
        "crm": {"kind": "fub", "secret": "fub-key"},
    }  # fmt: skip
    settings = make_settings(streams={"partitions": 1}, cadence={"enabled": True},
                             delivery={"tenants": {"acme": {"targets": targets}}})  # fmt: skip
    svc = DeliveryService(settings, client, clock=lambda: T0)
    step = {"step_id": "s9", "tenant": "acme", "lead_id": "acme-42", "kind": "message",
            "channel": "email", "template": "hot.d1.local_data", "goal": "local data",
            "plan": "hot_week", "plan_label": "hot track", "day": 1, "due_ts": T0,
            "agent_id": "cy", "emit_ms": 5,
            "fields": {"property_id": "P1", "address": "1 Main St", "area": "east",
                       "timeline": "0-3 months", "side": "buyer", "source": "portal"}}  # fmt: skip
    jobs = {j.target: j for j in svc.steps.handle(step, T0)}
    assert sorted(jobs) == ["http:sender", "slack:team"]  # opted in; no webhook_url here
    sent = jobs["http:sender"]
    assert sent.url == "http://127.0.0.1:9/send/42" and not sent.signed
    assert ("Authorization", "Bearer tok-0123") in sent.headers
    assert (sent.delivery_id, sent.order_key) == ("s9", "acme/acme-42")
    body = json.loads(sent.body)
    assert body == {"type": "cadence.message", "step_id": "s9", "tenant": "acme",
                    "lead_id": "acme-42", "crm_id": "42", "template": "hot.d1.local_data",
                    "channel": "email", "goal": "local data", "plan": "hot track", "day": 1,
                    "fields": {"property_id": "P1", "address": "1 Main St", "area": "east",
                               "timeline": "0-3 months"}}  # fmt: skip
    chat = jobs["slack:team"].body.decode()
    assert "hot.d1.local_data" in chat and "day 1 of the hot track" in chat
    assert "1 Main St" in chat and "Automatic email" in chat
    # an opted-out channel: nothing to any target
    client.hset(
        svc.keys.consent("acme", "acme-42"),
        "email",
        json.dumps(
            {"channel": "email", "why": "unsubscribe", "ts": T0, "event_id": "u", "text": "x"}
        ),
    )
    assert svc.steps.handle({**step, "step_id": "s10"}, T0) == []
    with pytest.raises(ConfigError) as err:
        make_settings(delivery={"tenants": {"acme": {"targets": {
            "crm": {"kind": "fub", "secret": "k", "on": ["cadence"]}}}}})  # fmt: skip
    assert "Follow Up Boss has no API that sends" in str(err.value)
