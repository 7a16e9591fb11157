"""Webhooks to a real local receiver: signatures, outages with retries, dead letters."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import httpx
import pytest

from engine.delivery.consumer import DeliveryService, run_in_thread
from engine.delivery.webhooks import (
    RetryPolicy,
    WebhookSender,
    read_dead_letters,
    sign,
    verify,
)
from tests.engine.delivery.conftest import (
    SECRET,
    Receiver,
    run_engine,
    send,
    tenant_config,
    wait_for,
)


def _settings(make_settings: Any, url: str, **delivery: Any) -> Any:
    tenant = tenant_config(
        webhook_url=url, secret=SECRET, agents={"cy": {"webhook_url": url + "/agent"}}
    )
    return make_settings(
        delivery={
            "backoff_base_s": 0.05,
            "backoff_cap_s": 0.2,
            "tick_ms": 50,
            "tenants": {"default": tenant},
            **delivery,
        }  # fmt: skip
    )


def _hand_raises(n: int, start: int = 0) -> list[dict[str, Any]]:
    now = time.time()
    return [
        {"event_id": f"sr{i}", "lead_id": f"L{i}", "type": "showing_request", "ts": now - 1,
         "property_id": f"P{i}", "area": "02139", "side": "buyer", "source": "portal"}
        for i in range(start, start + n)
    ]  # fmt: skip


def _pending(client: Any, svc: DeliveryService) -> int:
    info = client.xpending(svc.names.alerts, svc.d.consumer_group)
    return int(info["pending"])


def test_signature_scheme_round_trip() -> None:
    body = b'{"alert_id":"abc"}'
    ts = int(time.time())
    sig = sign(SECRET, ts, body)
    assert sig.startswith("v1=") and len(sig) == 3 + 64
    assert verify(SECRET, body, str(ts), sig)
    assert not verify("another-secret-0123456789", body, str(ts), sig)
    assert not verify(SECRET, body + b" ", str(ts), sig)
    assert not verify(SECRET, body, str(ts - 600), sign(SECRET, ts - 600, body))  # replayed
    assert not verify(SECRET, body, "not-a-number", sig)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    p = RetryPolicy(max_attempts=10, base_s=0.5, cap_s=8, timeout_s=1)
    assert [p.backoff(n, lambda: 1.0) for n in (1, 2, 3, 4, 5, 6)] == [0.5, 1, 2, 4, 8, 8]
    assert [p.backoff(n, lambda: 0.0) for n in (1, 2, 6)] == [0.25, 0.5, 4]


def test_delivered_webhook_is_signed_and_verifies(
    client: Any, make_settings: Any, receiver: Receiver
) -> None:
    receiver.start()
    settings = _settings(make_settings, receiver.url)
    send(settings, client, _hand_raises(1))
    run_engine(settings, client)
    svc = DeliveryService(settings, client)
    stop = threading.Event()
    thread = run_in_thread(svc, stop)
    try:
        wait_for(lambda: len(receiver.got) >= 2)  # tenant + the assigned agent (cy)
        wait_for(lambda: _pending(client, svc) == 0)
    finally:
        stop.set()
        thread.join(10)
    paths = sorted(r.path for r in receiver.got)
    assert paths == ["/hook", "/hook/agent"]
    for got in receiver.got:
        h = {k.lower(): v for k, v in got.headers.items()}
        assert verify(SECRET, got.body, h["x-leadpulse-timestamp"], h["x-leadpulse-signature"])
        payload = got.json()
        assert h["x-leadpulse-alert-id"] == payload["alert_id"] == payload["delivery_id"]
        assert payload["assignment"]["agent"] == "cy"
        assert "blocked_reasons" in payload and payload["script"]["kind"] == "showing"
    receipts = svc.receipts.read(receiver.got[0].json()["alert_id"])
    assert {r["target"] for r in receipts} == {"tenant", "agent:cy"}
    assert all(r["status"] == "delivered" and r["attempts"] == 1 for r in receipts)
    assert all(r["http_status"] == 200 and r["latency_ms"] >= 0 for r in receipts)
    assert all(r["ingest_to_done_ms"] is not None for r in receipts)


def test_receiver_down_for_a_while_then_all_delivered_once(
    client: Any, make_settings: Any, receiver: Receiver
) -> None:
    settings = _settings(make_settings, receiver.url, max_attempts=100)
    n = 20
    send(settings, client, _hand_raises(n))
    run_engine(settings, client)
    svc = DeliveryService(settings, client)
    stop = threading.Event()
    thread = run_in_thread(svc, stop)
    try:
        alert_ids = wait_for(lambda: [k for k in client.scan_iter(f"{svc.keys.base}:rcpt:*")])
        time.sleep(1.0)  # the receiver is down: attempts fail and back off
        tenant_receipts = [
            r for a in alert_ids for r in svc.receipts.read(a.decode().rsplit(":", 1)[1])
        ]
        assert tenant_receipts and all(r["status"] == "pending" for r in tenant_receipts)
        assert max(r["attempts"] for r in tenant_receipts) >= 2
        assert _pending(client, svc) == n  # nothing acknowledged while undelivered
        receiver.start()
        wait_for(lambda: len({r.json()["alert_id"] for r in receiver.got
                              if r.path == "/hook"}) == n, timeout=10)  # fmt: skip
        wait_for(lambda: _pending(client, svc) == 0, timeout=10)
    finally:
        stop.set()
        thread.join(10)
    tenant_hits = [r.json()["alert_id"] for r in receiver.got if r.path == "/hook"]
    assert len(tenant_hits) == n and len(set(tenant_hits)) == n  # none lost, none twice
    for alert_id in tenant_hits:
        (tenant_receipt,) = [r for r in svc.receipts.read(alert_id) if r["target"] == "tenant"]
        assert tenant_receipt["status"] == "delivered" and tenant_receipt["attempts"] >= 2
    # a restarted consumer finds nothing left to send
    again = DeliveryService(settings, client, consumer="deliver-1")
    stop2 = threading.Event()
    t2 = run_in_thread(again, stop2)
    time.sleep(0.3)
    stop2.set()
    t2.join(10)
    assert len([r for r in receiver.got if r.path == "/hook"]) == n


@pytest.mark.parametrize(("status", "attempts"), [(500, 3), (410, 1)])
def test_permanent_failure_goes_to_the_dead_letter_with_the_last_error(
    client: Any, make_settings: Any, receiver: Receiver, status: int, attempts: int
) -> None:
    receiver.status = status
    receiver.start()
    settings = _settings(make_settings, receiver.url, max_attempts=3)
    send(settings, client, _hand_raises(1, start=7))
    run_engine(settings, client)
    svc = DeliveryService(settings, client)
    stop = threading.Event()
    thread = run_in_thread(svc, stop)
    try:
        wait_for(lambda: len(read_dead_letters(client, svc.keys)) >= 1)
        wait_for(lambda: _pending(client, svc) == 0)
    finally:
        stop.set()
        thread.join(10)
    (dead,) = [d for d in read_dead_letters(client, svc.keys) if d["target"] == "tenant"]
    assert dead["last_error"] == f"HTTP {status}: receiver says no"
    assert int(dead["attempts"]) == attempts
    assert json.loads(dead["body"])["lead_id"] == "L7"
    (receipt,) = [r for r in svc.receipts.read(dead["alert_id"]) if r["target"] == "tenant"]
    assert receipt["status"] == "dead" and receipt["http_status"] == status
    assert len([r for r in receiver.got if r.path == "/hook"]) == attempts


def test_unacknowledged_alert_after_a_crash_is_not_sent_twice(
    client: Any, make_settings: Any, receiver: Receiver
) -> None:
    receiver.start()
    settings = _settings(make_settings, receiver.url)
    send(settings, client, _hand_raises(1, start=3))
    run_engine(settings, client)
    first = DeliveryService(settings, client, consumer="crashy")
    first.ensure_group()
    ((sid, alert),) = first.read_alerts(None)
    prepared = first.handle(alert)

    async def deliver_without_ack() -> None:
        async with httpx.AsyncClient() as http:
            sender = WebhookSender(
                http, first.receipts, client, first.keys, RetryPolicy(3, 0.01, 0.05, 2),
                first.metrics, max_in_flight=4, dead_letter_maxlen=1000,
            )  # fmt: skip
            for job in prepared.jobs:
                await sender.deliver(job)

    asyncio.run(deliver_without_ack())  # ... and the process dies before XACK
    assert len(receiver.got) == 2 and _pending(client, first) == 1
    restarted = DeliveryService(settings, client, consumer="crashy")
    stop = threading.Event()
    thread = run_in_thread(restarted, stop)
    try:
        wait_for(lambda: _pending(client, restarted) == 0)
    finally:
        stop.set()
        thread.join(10)
    assert len(receiver.got) == 2  # receipts said delivered: not sent again
    owner = restarted.assigner.read("default", "L3")
    assert owner is not None and prepared.payload is not None
    assert owner.agent == prepared.payload["assignment"]["agent"]


def test_alerts_left_pending_by_a_dead_consumer_are_taken_over(
    client: Any, make_settings: Any, receiver: Receiver
) -> None:
    receiver.start()
    settings = _settings(make_settings, receiver.url, reclaim_idle_s=0.2)
    send(settings, client, _hand_raises(3, start=20))
    run_engine(settings, client)
    dead = DeliveryService(settings, client, consumer="dead-one")
    dead.ensure_group()
    assert len(dead.read_alerts(None)) == 3  # read, never handled: the process died
    time.sleep(0.3)
    survivor = DeliveryService(settings, client, consumer="survivor")
    stop = threading.Event()
    thread = run_in_thread(survivor, stop)
    try:
        wait_for(lambda: _pending(client, survivor) == 0, timeout=10)
    finally:
        stop.set()
        thread.join(10)
    hits = sorted(r.json()["lead_id"] for r in receiver.got if r.path == "/hook")
    assert hits == ["L20", "L21", "L22"]
