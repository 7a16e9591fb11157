"""The routers over real HTTP (uvicorn): SSE with resume, the hot-list JSON, actions, API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engine.delivery.consumer import DeliveryService
from tests.engine.delivery.conftest import (
    Clock,
    Server,
    handle_all,
    make_app,
    run_engine,
    send,
    tenant_config,
)


@pytest.fixture
def setup(make_settings: Any, client: Any) -> Iterator[tuple[Any, DeliveryService, Server]]:
    rules = [{"group": "north", "areas": ["02139"]}]  # other areas: the pond
    settings = make_settings(
        delivery={"sse_keepalive_s": 0.3, "tenants": {"default": tenant_config(rules=rules)}}
    )
    svc = DeliveryService(settings, client, clock=Clock(time.time()))
    with Server(make_app(settings, client)) as server:
        yield settings, svc, server


def _hand_raise(lead: str, area: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"h-{lead}-{time.time_ns()}", "lead_id": lead, "type": "showing_request",
            "ts": time.time() - 1, "area": area, "property_id": f"P-{lead}",
            "source": "portal", **extra}  # fmt: skip


def _sse(url: str, headers: dict[str, str] | None = None, want: int = 1) -> list[dict[str, Any]]:
    """Read ``want`` events (id, event, data) from an SSE stream, then hang up."""
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] = {}
    deadline = time.monotonic() + 10
    with httpx.stream("GET", url, headers=headers or {}, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(out)} events")
            if line.startswith(("id:", "event:", "data:")):
                k, _, v = line.partition(":")
                cur[k] = v.strip()
            elif line == "" and "data" in cur:
                cur["data"] = json.loads(cur["data"])
                out.append(cur)
                cur = {}
                if len(out) >= want:
                    return out
    return out


def test_sse_per_agent_and_resumable_with_last_event_id(
    setup: tuple[Any, DeliveryService, Server], client: Any
) -> None:
    settings, svc, server = setup
    send(settings, client, [_hand_raise("A1", "02139")])
    run_engine(settings, client)
    since = svc.feed.last_id("default")
    handle_all(svc)  # A1 -> north, round robin -> cy
    (first,) = _sse(f"{server.url}/v1/alerts/stream?agent=cy&last_event_id={since}")
    assert first["event"] == "alert" and first["data"]["lead_id"] == "A1"
    assert first["data"]["assignment"]["agent"] == "cy"
    send(settings, client, [_hand_raise("A2", "02139"), _hand_raise("A3", "90210")])
    run_engine(settings, client)
    handle_all(svc)  # A2 -> dee (not for cy), A3 -> the pond (for everyone)
    # cy reconnects with the id it saw last: gets only what is for cy, and nothing twice
    resumed = _sse(f"{server.url}/v1/alerts/stream?agent=cy", {"Last-Event-ID": first["id"]})
    assert [e["data"]["lead_id"] for e in resumed] == ["A3"]
    assert resumed[0]["data"]["assignment"]["state"] == "pond"
    team = _sse(f"{server.url}/v1/alerts/stream?last_event_id={first['id']}", want=2)
    assert sorted(e["data"]["lead_id"] for e in team) == ["A2", "A3"]  # two partitions
    bad = httpx.get(f"{server.url}/v1/alerts/stream", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400


def test_hot_list_claim_ack_contact_and_lead_api(
    setup: tuple[Any, DeliveryService, Server], client: Any
) -> None:
    settings, svc, server = setup
    send(settings, client, [
        _hand_raise("B1", "90210"),
        {"event_id": "stop-B2", "lead_id": "B2", "type": "reply", "channel": "sms",
         "ts": time.time() - 3, "props": {"text": "STOP"}},
        _hand_raise("B2", "02139"),
    ])  # fmt: skip
    run_engine(settings, client)
    handle_all(svc)
    board = httpx.get(f"{server.url}/v1/board").json()
    rows = {r["lead_id"]: r for rows in board["buckets"].values() for r in rows}
    assert set(rows) == {"B1", "B2"} and board["feed_id"] != "0-0"
    assert rows["B2"]["blocked_reasons"]["sms"].startswith("replied STOP to a text")
    assert rows["B2"]["alert"]["script"]["kind"] == "showing"
    assert rows["B1"]["assignment"]["state"] == "pond"
    assert rows["B2"]["clock"]["status"] == "open"
    mine = httpx.get(f"{server.url}/v1/board?agent=dee").json()
    assert {r["lead_id"] for rows in mine["buckets"].values() for r in rows} == {"B1"}  # pond

    claimed = httpx.post(f"{server.url}/v1/leads/B1/claim", json={"agent_id": "dee"})
    assert claimed.status_code == 200 and claimed.json()["assignment"]["agent"] == "dee"
    taken = httpx.post(f"{server.url}/v1/leads/B1/claim", json={"agent_id": "eli"})
    assert taken.status_code == 409 and taken.json()["detail"] == "B1 is already assigned to dee"
    assert (
        httpx.post(f"{server.url}/v1/leads/B1/claim", json={"agent_id": "x y"}).status_code == 422
    )

    ack = httpx.post(f"{server.url}/v1/leads/B2/ack", json={"agent_id": "cy"})
    assert ack.status_code == 202 and ack.json()["type"] == "alert_ack"
    contact = httpx.post(
        f"{server.url}/v1/leads/B2/contact", json={"agent_id": "cy", "channel": "sms"}
    )
    assert contact.status_code == 202
    assert contact.json()["warning"].startswith("sms is blocked for this lead: replied STOP")
    assert contact.json()["warning"].endswith(("EST", "EDT"))  # the tenant's zone, not UTC
    assert rows["B2"]["blocked_reasons"]["sms"].endswith(("EST", "EDT"))
    svc.drain_events()
    detail = httpx.get(f"{server.url}/v1/leads/B2/delivery").json()
    assert detail["clock"]["status"] == "met" and detail["clock"]["stop_kind"] == "alert_ack"
    assert detail["assignment"]["reason"] == "rule 1 (area 02139) -> north, round robin -> cy"
    assert detail["consent"]["channels"]["sms"]["allowed"] is False
    assert detail["history"][0]["agent"] == "cy"
    b1 = httpx.get(f"{server.url}/v1/leads/B1/delivery").json()
    assert [h["how"] for h in b1["history"]] == ["claim", "default"]
    report = httpx.get(f"{server.url}/v1/sla/report").json()
    assert report["by_agent"]["cy"]["within_sla"] == 1
    receipts = httpx.get(f"{server.url}/v1/alerts/{detail['alert']['alert_id']}/receipts")
    assert receipts.status_code == 200 and receipts.json()["receipts"] == []  # no webhook set
    other = httpx.get(f"{server.url}/v1/leads/B2/delivery?tenant=other").json()
    assert other["assignment"] is None and other["alert"] is None  # tenants are separate
    page = httpx.get(f"{server.url}/hotlist?agent=cy")
    assert page.status_code == 200 and 'data-stream-url="/v1/alerts/stream"' in page.text
    assert httpx.get(f"{server.url}/hotlist/hotlist.js").status_code == 200
    assert httpx.get(f"{server.url}/hotlist/secrets.txt").status_code == 404


def test_many_open_streams_share_a_handful_of_redis_connections(
    setup: tuple[Any, DeliveryService, Server], client: Any
) -> None:
    """One reader per feed per process, fanned out: 200 streams, not 200 connections."""
    import asyncio

    settings, svc, server = setup

    def connections() -> int:
        return len(client.client_list())

    before = connections()
    url = f"{server.url}/v1/alerts/stream?last_event_id=0-0"

    async def many(n: int) -> tuple[int, list[str]]:
        limits = httpx.Limits(max_connections=n + 10)
        async with httpx.AsyncClient(timeout=20, limits=limits) as http:
            streams = [http.stream("GET", url) for _ in range(n)]
            responses = [await s.__aenter__() for s in streams]
            try:
                assert all(r.status_code == 200 for r in responses)
                await asyncio.sleep(1.0)  # every stream is waiting on the hub now
                during = connections()
                send(settings, client, [_hand_raise("M1", "02139")])
                run_engine(settings, client)
                handle_all(svc)
                firsts = []
                for r in responses[:5]:  # a new alert reaches the streams, fanned out
                    async for line in r.aiter_lines():
                        if line.startswith("data: ") and "M1" in line:
                            firsts.append(line)
                            break
                return during, firsts
            finally:
                for s in streams:
                    await s.__aexit__(None, None, None)

    during, firsts = asyncio.run(many(200))
    assert len(firsts) == 5
    assert during - before <= 5, (before, during)
