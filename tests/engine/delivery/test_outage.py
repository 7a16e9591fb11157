"""Webhook outage: a receiver down, then 503, then slow. Alerts arrive after it recovers,
in order per lead, none lost, none twice, nothing dead-lettered, nothing left pending.

The end-to-end case runs a real ``leadpulse deliver`` process and the real engine; the
receiver is ``benchmarks.fault_webhook.FaultyReceiver`` (the full-size run is
``python -m benchmarks.fault_webhook``). The sender-level cases pin the two mechanisms
that make it work: one delivery at a time per lead and receiver, and a success waking
the retries that wait for the same receiver.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.fault_webhook import (
    SECRET,
    FaultyReceiver,
    analyse,
    pending,
    spawn_deliver,
    stream_alerts,
)
from engine.delivery.keys import DeliveryKeys
from engine.delivery.metrics import DeliveryMetrics
from engine.delivery.webhooks import Job, Receipts, RetryPolicy, WebhookSender
from engine.settings import load_settings
from tests.engine.delivery.conftest import free_port, run_engine, send, wait_for


def _events(round_: int, leads: int) -> list[dict[str, Any]]:
    now = time.time()
    return [
        {"event_id": f"o{round_}-{i}", "lead_id": f"OL{i}", "type": "showing_request",
         "ts": now, "property_id": f"P{i}", "area": "02139", "side": "buyer",
         "source": "portal"}
        for i in range(leads)
    ]  # fmt: skip


@pytest.mark.slow
def test_deliver_process_rides_out_an_outage_then_a_slow_receiver(
    client: Any, make_settings: Any, prefix: str, redis_url: str
) -> None:
    settings = make_settings()
    stream, group = f"{{{prefix}}}:alerts", settings.delivery.consumer_group
    leads, rounds = 6, 0
    receiver = FaultyReceiver(free_port(), slow_s=(0.2, 0.5))
    receiver.set_mode("up")
    with tempfile.NamedTemporaryFile(prefix="outage_", suffix=".log", delete=False) as f:
        log = f.name

    def alerts_round() -> None:
        nonlocal rounds
        send(settings, client, _events(rounds, leads))
        run_engine(settings, client)
        rounds += 1

    proc = spawn_deliver(redis_url, prefix, receiver.url, log)
    try:
        alerts_round()
        wait_for(lambda: len(receiver.arrivals()) >= leads, timeout=30)  # the process is up
        receiver.set_mode("down")  # connection refused
        for _ in range(2):
            alerts_round()
            time.sleep(1.0)
        receiver.set_mode("503")
        for _ in range(2):
            alerts_round()
            time.sleep(1.0)
        assert pending(client, stream, group)[0] == 4 * leads  # nothing acked undelivered
        receiver.set_mode("slow")
        alerts_round()
        sent = stream_alerts(client, stream)
        assert len(sent) == rounds * leads
        wait_for(lambda: analyse(sent, receiver.arrivals())["lost"] == 0, timeout=30, every=0.1)
        wait_for(lambda: pending(client, stream, group) == (0, 0), timeout=10, every=0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        receiver.close()
        output = Path(log).read_text(errors="replace")
        os.unlink(log)
    got = receiver.arrivals()
    counts = analyse(sent, got)
    assert counts == {
        "sent": rounds * leads, "received": rounds * leads, "lost": 0, "duplicated": 0,
        "out_of_order_leads": 0, "out_of_order_pairs": 0, "unexpected": 0,
        "other_deliveries": 0,
    }, output  # fmt: skip
    assert receiver.rejected > 0 and receiver.bad_signatures == 0
    assert max(a.attempt for a in got) >= 2  # the outage was real: retried deliveries
    assert client.xlen(f"{{{prefix}}}:dlv:dead") == 0
    assert "Traceback" not in output


# -- the sender: one delivery at a time per lead and receiver; a success wakes retries ----


def _job(n: int, lead: str, url: str) -> Job:
    return Job(
        alert_id=f"a{n}", delivery_id=f"a{n}", target="tenant", url=url, secret=SECRET,
        body=(f'{{"alert_id":"a{n}","delivery_id":"a{n}","lead_id":"{lead}",'
              f'"type":"alert"}}').encode(),
        ingest_ms=0, order_key=f"default/{lead}",
    )  # fmt: skip


def _sender(http: httpx.AsyncClient, client: Any, prefix: str, policy: RetryPolicy) -> Any:
    keys = DeliveryKeys(prefix)
    return WebhookSender(
        http, Receipts(client, keys, 60), client, keys, policy, DeliveryMetrics.create(),
        max_in_flight=8, dead_letter_maxlen=1000,
    )  # fmt: skip


def test_a_retried_alert_is_not_overtaken_by_a_later_one_for_the_same_lead(
    client: Any, prefix: str
) -> None:
    receiver = FaultyReceiver(free_port(), slow_s=(0.0, 0.02))
    receiver.set_mode("down")

    async def scenario() -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            sender = _sender(http, client, prefix, RetryPolicy(50, 0.05, 0.3, 2))
            first = asyncio.create_task(sender.deliver(_job(1, "L1", receiver.url)))
            await asyncio.sleep(0.4)  # a1 failed and is backing off
            receiver.set_mode("slow")
            later = [sender.deliver(_job(n, "L1", receiver.url)) for n in (2, 3, 4)]
            other = sender.deliver(_job(5, "L2", receiver.url))
            return list(await asyncio.gather(first, *later, other))

    try:
        receipts = asyncio.run(scenario())
    finally:
        receiver.close()
    assert all(r["status"] == "delivered" for r in receipts)
    order = [a.alert_id for a in receiver.arrivals() if a.lead_id == "L1"]
    assert order == ["a1", "a2", "a3", "a4"]
    assert receipts[0]["attempts"] >= 2 and all(r["attempts"] == 1 for r in receipts[1:])


def test_a_success_wakes_the_retries_waiting_for_the_same_receiver(
    client: Any, prefix: str
) -> None:
    receiver = FaultyReceiver(free_port())
    receiver.set_mode("down")

    async def scenario() -> tuple[float, dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            # after the first failure a1 would wait 5-10 s: the cap is far away
            sender = _sender(http, client, prefix, RetryPolicy(5, 10.0, 10.0, 2))
            first = asyncio.create_task(sender.deliver(_job(1, "L1", receiver.url)))
            await asyncio.sleep(0.3)
            receiver.set_mode("up")
            started = time.monotonic()
            await sender.deliver(_job(2, "L2", receiver.url))  # a new lead: goes at once
            receipt = await first
            return time.monotonic() - started, receipt

    try:
        took, receipt = asyncio.run(scenario())
    finally:
        receiver.close()
    assert receipt["status"] == "delivered" and receipt["attempts"] == 2
    assert took < 2.0  # woken by a2's success, not after its 5-10 s backoff


def test_default_retries_outlast_a_one_minute_outage() -> None:
    d = load_settings(environ={}).delivery
    p = RetryPolicy(d.max_attempts, d.backoff_base_s, d.backoff_cap_s, d.timeout_s)
    shortest = sum(p.backoff(n, lambda: 0.0) for n in range(1, d.max_attempts))
    assert shortest >= 120  # every jitter draw at its minimum still retries for 2 minutes
