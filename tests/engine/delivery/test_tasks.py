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
    handled = svc.handle_steps(svc.steps_in.read(None))
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
