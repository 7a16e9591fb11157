"""Contract tests for every gateway route, including every error path, on a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest
import redis

from engine.events import partition_of
from engine.gateway.auth import key_digest
from engine.gateway.store import contact_index_key, find_leads_by_contact_hash
from engine.sinks import hot_key
from features.store import lead_key
from tests.engine.gateway.conftest import (
    ACME,
    ACME_TRACKER,
    BETA,
    Gateway,
    encode,
    ev,
    stream_events,
)


def seed_score(
    client: redis.Redis, prefix: str, tenant: str, lead: str, score: int, **extra: str
) -> None:
    """A score record and hot-list entry in the engine's layout (engine/sinks.py, views.py)."""
    record = {
        "tenant": tenant, "lead_id": lead, "score": str(score), "probability": str(score / 100),
        "bucket": "P1" if score >= 90 else "P3", "tier": "hot", "reasons": json.dumps(["why"]),
        "prior_probability": "0.5", "model_weight": "0", "ts": "1767225600", "last_event_id": "e9",
        "agent_id": "", "blocked": "sms", **extra,
    }  # fmt: skip
    client.hset(lead_key(prefix, tenant, lead, "s"), mapping=record)
    client.zadd(hot_key(prefix, tenant), {lead: score})


# -- POST /v1/events: accepted ---------------------------------------------------------------


def test_accepted_events_are_in_their_partition_before_the_response(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    events = [ev("e1", "L1", property_id="P1", price=450_000, area="94110"), ev("e2", "L2")]
    r = gateway.post_events(events)
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "accepted": 2, "duplicate": 0, "rejected": 0,
        "results": [
            {"index": 0, "status": "accepted", "event_id": "e1"},
            {"index": 1, "status": "accepted", "event_id": "e2"},
        ],
    }  # fmt: skip
    for e in events:
        p = partition_of("acme", str(e["lead_id"]), 4)
        rows = client.xrange(f"{{{prefix}}}:events:{p}")
        stored = [msgpack.unpackb(f[b"e"], raw=False) for _, f in rows]
        match = [s for s in stored if s["event_id"] == e["event_id"]]
        assert len(match) == 1
        assert match[0]["tenant"] == "acme"  # set from the key
        assert match[0]["lead_id"] == e["lead_id"]
    first = next(s for s in stream_events(client, prefix) if s["event_id"] == "e1")
    assert (first["property_id"], first["price"], first["area"]) == ("P1", 450_000.0, "94110")


@pytest.mark.parametrize(
    "content_type",
    ["application/msgpack", "application/x-msgpack", "application/vnd.msgpack"],
)
def test_msgpack_content_types_are_accepted(
    gateway: Gateway, client: redis.Redis, prefix: str, content_type: str
) -> None:
    body = msgpack.packb([ev("m1")], use_bin_type=True)
    r = gateway.post_raw(body, content_type)
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert [e["event_id"] for e in stream_events(client, prefix)] == ["m1"]


def test_text_plain_is_read_as_json_for_beacons(gateway: Gateway) -> None:
    r = gateway.post_raw(json.dumps([ev("b1")]).encode(), "text/plain;charset=UTF-8")
    assert r.status_code == 200 and r.json()["accepted"] == 1


def test_empty_array_is_fine(gateway: Gateway) -> None:
    r = gateway.post_events([])
    assert r.status_code == 200
    assert r.json() == {"accepted": 0, "duplicate": 0, "rejected": 0, "results": []}


def test_anonymous_visitor_event_lands_on_the_visitor_lead_partition(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    e = ev("v1", "", visitor_id="vis42")
    del e["lead_id"]
    assert gateway.post_events([e]).json()["accepted"] == 1
    p = partition_of("acme", "~vis42", 4)
    stored = msgpack.unpackb(client.xrange(f"{{{prefix}}}:events:{p}")[0][1][b"e"], raw=False)
    assert stored["lead_id"] == "~vis42" and stored["visitor_id"] == "vis42"


def test_identify_event_carries_visitor_and_lead(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    r = gateway.post_events([ev("i1", "L7", "identify", visitor_id="vis42")])
    assert r.json()["accepted"] == 1
    (stored,) = stream_events(client, prefix)
    assert (stored["type"], stored["lead_id"], stored["visitor_id"]) == ("identify", "L7", "vis42")
    p = partition_of("acme", "L7", 4)
    assert client.xlen(f"{{{prefix}}}:events:{p}") == 1  # on the lead's partition


# -- idempotency -----------------------------------------------------------------------------


def test_repeated_event_id_is_a_duplicate_and_not_appended(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    assert gateway.post_events([ev("d1")]).json()["accepted"] == 1
    r = gateway.post_events([ev("d1"), ev("d2"), ev("d2")])
    assert [x["status"] for x in r.json()["results"]] == ["duplicate", "accepted", "duplicate"]
    assert r.json()["duplicate"] == 2
    assert [e["event_id"] for e in stream_events(client, prefix)] == ["d1", "d2"]


def test_duplicate_window_expires(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway(idempotency_window_h=0.3 / 3600)  # 300 ms
    assert gateway.post_events([ev("w1")]).json()["accepted"] == 1
    assert gateway.post_events([ev("w1")]).json()["duplicate"] == 1
    time.sleep(0.4)
    assert gateway.post_events([ev("w1")]).json()["accepted"] == 1


# -- rejected events -------------------------------------------------------------------------


def test_each_bad_event_is_rejected_with_its_index_and_reason(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    events: list[Any] = [
        ev("ok1"),
        {"lead_id": "L1", "type": "page_view", "ts": time.time()},
        ev("r2", etype="teleport"),
        ev("r3", ts="yesterday"),
        "not an event",
        ev("r5", props={"n": 2**70}),  # valid JSON, but no 64-bit encoding
        ev("r6", props={"blob": ["x" * 200] * 400}),  # over validation.max_event_bytes packed
        ev("ok7"),
    ]
    body = gateway.post_events(events).json()
    assert (body["accepted"], body["rejected"]) == (2, 6)
    reasons = {x["index"]: x.get("reason", "") for x in body["results"]}
    assert reasons[0] == "" and reasons[7] == ""
    assert reasons[1] == "missing_field:event_id"
    assert reasons[2].startswith("unknown_type:teleport")
    assert reasons[3].startswith("bad_value:ts")
    assert reasons[4].startswith("not_a_map")
    assert reasons[5].startswith("bad_value:props")
    assert reasons[6].startswith("too_large")
    assert all("event_id" not in x for x in body["results"] if x["status"] == "rejected")
    assert [e["event_id"] for e in stream_events(client, prefix)] == ["ok1", "ok7"]


def test_body_tenant_that_disagrees_with_the_key_is_rejected(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    r = gateway.post_events([ev("t1", tenant="beta"), ev("t2", tenant="acme"), ev("t3", tenant="")])
    results = r.json()["results"]
    assert results[0]["status"] == "rejected"
    assert results[0]["reason"].startswith("forbidden:tenant")
    assert [x["status"] for x in results[1:]] == ["accepted", "accepted"]
    assert {e["tenant"] for e in stream_events(client, prefix)} == {"acme"}


def test_tracker_key_may_only_send_browsing_events_without_profile_fields(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    events = [
        ev("k1", etype="property_view"),
        ev("k2", etype="identify", visitor_id="v1"),
        ev("k3", etype="showing_request"),
        ev("k4", etype="appointment_set"),
        ev("k5", etype="page_view", timeline="0-3m"),
        ev("k6", etype="page_view", agent_id="agent7"),
    ]
    results = gateway.post_events(events, key=ACME_TRACKER).json()["results"]
    assert [x["status"] for x in results] == ["accepted"] * 2 + ["rejected"] * 4
    assert results[2]["reason"].startswith("forbidden:type showing_request")
    assert results[3]["reason"].startswith("forbidden:type appointment_set")
    assert results[4]["reason"].startswith("forbidden:timeline")
    assert results[5]["reason"].startswith("forbidden:agent_id")
    # a server key may send all of them
    events = [{**e, "event_id": "s" + str(e["event_id"])} for e in events]
    assert gateway.post_events(events).json()["accepted"] == 6


# -- privacy ---------------------------------------------------------------------------------


def test_emails_and_phones_are_stored_only_as_keyed_hashes(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    e = ev(
        "p1", "L9", "identify", visitor_id="v9",
        props={
            "email": " Jane.Doe@Example.COM ", "phone": "(555) 123-4567",
            "question": "Call me on +1 555 123 4567 or write to jane.doe@example.com",
            "nested": {"to": ["agent@example.org"]}, "mls": "20261234567",
        },
    )  # fmt: skip
    r = gateway.post_events([e])
    assert r.json()["accepted"] == 1
    raw = b"".join(
        f[b"e"] for p in range(4) for _, f in client.xrange(f"{{{prefix}}}:events:{p}")
    ).lower()
    for clear in (b"jane.doe", b"example.com", b"example.org", b"555", b"123-4567"):
        assert clear not in raw
    (stored,) = stream_events(client, prefix)
    props = stored["props"]
    assert "email" not in props and "phone" not in props
    assert len(props["email_hash"]) == len(props["phone_hash"]) == 32
    assert props["question"].startswith("Call me on [phone:")
    assert f"[email:{props['email_hash']}]" in props["question"]  # same normalised address
    assert f"[phone:{props['phone_hash']}]" in props["question"]
    assert props["nested"]["to"][0].startswith("[email:")
    assert props["mls"] == "20261234567"  # a bare number is not a phone in free text
    # the per-tenant index: hash -> leads, for the engine's merge
    for h in (props["email_hash"], props["phone_hash"]):
        assert find_leads_by_contact_hash(client, prefix, "acme", h) == ["L9"]
        assert client.ttl(contact_index_key(prefix, "acme", h)) > 0
    # nothing clear anywhere in Redis under this prefix
    for key in client.scan_iter(match=f"{{{prefix}}}:*"):
        assert b"jane" not in key.lower()


def test_invalid_contact_values_are_dropped_with_a_note(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    r = gateway.post_events([ev("n1", props={"email": "not-an-address", "phone": "12"})])
    (result,) = r.json()["results"]
    assert result["status"] == "accepted"
    assert sorted(result["notes"]) == [
        "dropped:props.email is not a valid email",
        "dropped:props.phone is not a valid phone",
    ]
    (stored,) = stream_events(client, prefix)
    assert stored.get("props", {}) == {}


@pytest.mark.parametrize(
    "field,value", [("lead_id", "jane@example.com"), ("visitor_id", "+1 555 123 4567"),
                    ("property_id", "(555) 123-4567"), ("event_id", "x-jane@example.com")],
)  # fmt: skip
def test_ids_that_look_like_contact_data_are_rejected(
    gateway: Gateway, client: redis.Redis, prefix: str, field: str, value: str
) -> None:
    e = ev("c1", visitor_id="v1")
    e[field] = value
    (result,) = gateway.post_events([e]).json()["results"]
    assert result["status"] == "rejected"
    assert result["reason"].startswith(f"bad_value:{field} looks like a")
    assert value not in result["reason"]
    assert stream_events(client, prefix) == []


# -- POST /v1/events: request errors ----------------------------------------------------------


def _error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and body["detail"]
    return dict(body)


def test_401_without_a_key_or_with_an_unknown_one(gateway: Gateway) -> None:
    for r in (
        gateway.post_events([ev("a1")], key=None),
        gateway.post_events([ev("a1")], key="lpk_wrong"),
        gateway.post_events([ev("a1")], key=None, headers={"Authorization": "Bearer lpk_wrong"}),
        gateway.post_events([ev("a1")], key=None, headers={"Authorization": "Basic Zm9vOmJhcg=="}),
    ):
        _error(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"] == "Bearer"


def test_key_in_the_query_string_only_for_tracker_keys(gateway: Gateway) -> None:
    body, ctype = encode([ev("q1")])
    r = gateway.request(
        "POST", f"/v1/events?key={ACME}", content=body, headers={"Content-Type": ctype}
    )
    assert "never in the URL" in _error(r, 401, "unauthorized")["detail"]
    r = gateway.request(
        "POST", f"/v1/events?key={ACME_TRACKER}", content=body, headers={"Content-Type": ctype}
    )
    assert r.status_code == 200 and r.json()["accepted"] == 1


def test_tracker_key_limited_to_origins(make_gateway: Callable[..., Gateway], prefix: str) -> None:
    from tests.engine.gateway.conftest import gateway_overrides

    keys = gateway_overrides(prefix)["gateway"]["api_keys"]
    keys[key_digest(ACME_TRACKER)] = {
        "tenant": "acme", "role": "tracker", "origins": ["https://acme-homes.example"],
    }  # fmt: skip
    gateway = make_gateway(api_keys=keys)
    ok = gateway.post_events([ev("o1")], key=ACME_TRACKER,
                             headers={"Origin": "https://acme-homes.example"})  # fmt: skip
    assert ok.status_code == 200
    for headers in ({"Origin": "https://evil.example"}, {}):
        r = gateway.post_events([ev("o2")], key=ACME_TRACKER, headers=headers)
        _error(r, 403, "forbidden")


@pytest.mark.parametrize("ctype", [None, "text/html", "application/xml", "multipart/form-data"])
def test_415_for_other_content_types(gateway: Gateway, ctype: str | None) -> None:
    headers = {"Authorization": f"Bearer {ACME}"}
    if ctype:
        headers["Content-Type"] = ctype
    r = gateway.request("POST", "/v1/events", content=b"[]", headers=headers)
    assert "application/json" in _error(r, 415, "unsupported_media_type")["detail"]


@pytest.mark.parametrize(
    "body,ctype,code",
    [
        (b"[{", "application/json", "malformed_json"),
        (b"\xff\xfe", "application/json", "malformed_json"),
        (b"\xc1", "application/msgpack", "malformed_msgpack"),
        (b"\x91", "application/msgpack", "malformed_msgpack"),  # truncated
        (b'{"event_id": "x"}', "application/json", "not_an_array"),
        (b"42", "application/json", "not_an_array"),
        (b"", "application/json", "malformed_json"),
    ],
)
def test_400_when_the_body_is_not_an_array(
    gateway: Gateway, body: bytes, ctype: str, code: str
) -> None:
    _error(gateway.post_raw(body, ctype), 400, code)


def test_413_for_too_many_events(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway(max_events=3)
    assert gateway.post_events([ev(f"x{i}") for i in range(3)]).status_code == 200
    _error(gateway.post_events([ev(f"y{i}") for i in range(4)]), 413, "too_many_events")


def test_413_for_a_body_too_large_declared_or_streamed(
    make_gateway: Callable[..., Gateway], client: redis.Redis, prefix: str
) -> None:
    gateway = make_gateway(max_body_bytes=2048)
    big = [ev(f"z{i}", props={"pad": "x" * 200}) for i in range(20)]
    _error(gateway.post_events(big), 413, "too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read until over the limit
        body = json.dumps(big).encode()
        for i in range(0, len(body), 500):
            yield body[i : i + 500]

    r = gateway.request(
        "POST", "/v1/events", content=chunks(),
        headers={"Content-Type": "application/json", "X-Api-Key": ACME},
    )  # fmt: skip
    _error(r, 413, "too_large")
    assert stream_events(client, prefix) == []


def test_429_with_retry_after_per_key(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway(rate_per_s=0.5, rate_burst=2)
    assert gateway.post_events([]).status_code == 200
    assert gateway.get("/v1/hotlist").status_code == 200
    r = gateway.post_events([ev("r1")])
    body = _error(r, 429, "rate_limited")
    assert int(r.headers["Retry-After"]) in (1, 2)
    assert "retry in" in body["detail"]
    assert gateway.post_events([], key=BETA).status_code == 200  # another key, its own bucket
    text = gateway.request("GET", "/metrics").text
    assert "leadpulse_gateway_rate_limited_total 1.0" in text


def test_503_with_retry_after_when_redis_is_down(prefix: str) -> None:
    from engine.settings import load_settings
    from tests.engine.gateway.conftest import free_port, gateway_overrides

    overrides = gateway_overrides(prefix)
    overrides["redis"].update(retries=0, socket_timeout_s=0.5)
    settings = load_settings(overrides=overrides, environ={})
    down = Gateway(settings, f"redis://127.0.0.1:{free_port()}/0")
    try:
        for r in (
            down.post_events([ev("u1")]),
            down.get("/v1/leads/L1"),
            down.get("/v1/hotlist"),
        ):
            _error(r, 503, "unavailable")
            assert r.headers["Retry-After"] == "1"
            assert "127.0.0.1" not in r.text  # no connection details leak
        r = down.request("GET", "/healthz")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable" and r.headers["Retry-After"] == "1"
        assert down.request("GET", "/metrics").status_code == 200
        assert down.request("GET", "/tracker.js").status_code == 200
    finally:
        down.close()


# -- GET /v1/leads/{lead_id} -----------------------------------------------------------------


def test_lead_read_gives_the_score_record_and_counters(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    seed_score(client, prefix, "acme", "L1", 93)
    client.hset(
        lead_key(prefix, "acme", "L1", "h"),
        mapping={"saves": "2", "searches": "5", "unanswered": "1", "dwell_s": "600",
                 "source": "portal", "last_ts": "1767225600", "blocked": "sms"},
    )  # fmt: skip
    r = gateway.get("/v1/leads/L1")
    assert r.status_code == 200
    body = r.json()
    assert body["tenant"] == "acme" and body["lead_id"] == "L1"
    assert body["score"]["score"] == 93 and body["score"]["bucket"] == "P1"
    assert body["score"]["reasons"] == ["why"] and body["score"]["blocked_channels"] == ["sms"]
    f = body["features"]
    assert (f["saves"], f["searches"], f["agent_contacts_unanswered"]) == (2, 5, 1)
    assert f["dwell_min"] == 10 and f["source"] == "portal" and f["timeline"] == "unknown"
    assert f["inquiries"] == 0
    assert "blocked" not in f and "last_ts" not in f  # only named features
    assert body["last_event_ts"] == 1767225600


def test_lead_with_features_but_no_score_yet(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    client.hset(lead_key(prefix, "acme", "L2", "h"), mapping={"saves": "1"})
    body = gateway.get("/v1/leads/L2").json()
    assert body["score"] is None and body["features"]["saves"] == 1


def test_lead_read_errors(gateway: Gateway, client: redis.Redis, prefix: str) -> None:
    seed_score(client, prefix, "acme", "L1", 50)
    _error(gateway.get("/v1/leads/nobody"), 404, "not_found")
    _error(gateway.get("/v1/leads/L1", key=None), 401, "unauthorized")
    _error(gateway.get("/v1/leads/L1", key="nope"), 401, "unauthorized")
    _error(gateway.get("/v1/leads/L1", key=ACME_TRACKER), 403, "forbidden")
    _error(gateway.get(f"/v1/leads/{'x' * 129}"), 422, "bad_request")
    assert gateway.get("/v1/leads/L1", key=None, headers={"X-Api-Key": ACME}).status_code == 200
    r = gateway.request("GET", f"/v1/leads/L1?key={ACME_TRACKER}")
    _error(r, 401, "unauthorized")  # the query key is never read for reads


# -- GET /v1/hotlist ---------------------------------------------------------------------------


def test_hotlist_is_ordered_limited_and_skips_expired_records(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    for lead, score in (("A", 40), ("B", 95), ("C", 70), ("D", 80)):
        seed_score(client, prefix, "acme", lead, score)
    client.zadd(hot_key(prefix, "acme"), {"GONE": 99})  # its score hash expired
    body = gateway.get("/v1/hotlist?limit=3").json()
    assert body["tenant"] == "acme"
    assert [x["lead_id"] for x in body["leads"]] == ["B", "D"]  # GONE is skipped, not padded
    leads = gateway.get("/v1/hotlist").json()["leads"]
    assert [x["lead_id"] for x in leads] == ["B", "D", "C", "A"]


def test_hotlist_errors(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway(hotlist_max=50)
    for q in ("limit=0", "limit=51", "limit=ten", "limit=-1"):
        _error(gateway.get(f"/v1/hotlist?{q}"), 422, "bad_request")
    assert gateway.get("/v1/hotlist?limit=50").status_code == 200
    _error(gateway.get("/v1/hotlist", key=None), 401, "unauthorized")
    _error(gateway.get("/v1/hotlist", key=ACME_TRACKER), 403, "forbidden")


# -- /healthz, /metrics, /tracker.js, /openapi.json, unknown routes --------------------------


def test_healthz_reports_lag_after_the_committed_position(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    body = gateway.request("GET", "/healthz").json()
    assert body["status"] == "ok" and body["redis"] == "ok" and body["lag"] == 0
    assert [p["partition"] for p in body["partitions"]] == [0, 1, 2, 3]
    ids = [client.xadd(f"{{{prefix}}}:events:1", {"e": b"x"}) for _ in range(3)]
    client.hset(f"{{{prefix}}}:pos", "1", ids[0])
    body = gateway.request("GET", "/healthz").json()
    p1 = body["partitions"][1]
    assert (body["lag"], p1["lag"], p1["lag_capped"]) == (2, 2, False)
    assert p1["committed"] == ids[0].decode()
    assert 0 <= p1["oldest_age_s"] < 60
    assert body["partitions"][0]["oldest_age_s"] is None


def test_metrics_count_requests_and_events_without_caller_values(gateway: Gateway) -> None:
    gateway.post_events([ev("m1", props={"email": "secret@example.com"}), ev("m2", etype="zzz")])
    gateway.get("/v1/leads/nobody")
    r = gateway.request("GET", "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "leadpulse_gateway_events_accepted_total 1.0" in text
    assert 'leadpulse_gateway_events_rejected_total{reason="unknown_type"} 1.0' in text
    assert (
        'leadpulse_gateway_requests_total{method="POST",route="/v1/events",status="200"} 1.0'
        in text
    )
    assert 'route="/v1/leads/{lead_id}",status="404"' in text
    assert "nobody" not in text and "secret" not in text and "zzz" not in text


def test_tracker_js_is_served(gateway: Gateway) -> None:
    r = gateway.request("GET", "/tracker.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/javascript")
    assert "max-age" in r.headers["cache-control"]
    assert "sendBeacon" in r.text and "keepalive" in r.text and "identify" in r.text


def test_openapi_describes_every_route_body_and_error(gateway: Gateway) -> None:
    spec = gateway.request("GET", "/openapi.json").json()
    paths = spec["paths"]
    assert set(paths) == {
        "/v1/events", "/v1/leads/{lead_id}", "/v1/hotlist", "/healthz", "/metrics", "/tracker.js",
        # alert delivery, mounted on the gateway
        "/hotlist", "/hotlist/{name}", "/v1/board", "/v1/alerts/stream",
        "/v1/leads/{lead_id}/claim", "/v1/leads/{lead_id}/ack", "/v1/leads/{lead_id}/contact",
        "/v1/leads/{lead_id}/delivery", "/v1/alerts/{alert_id}/receipts", "/v1/sla/report",
        "/v1/delivery/dead", "/v1/tasks",  # today's follow-up tasks (engine/cadence)
        # brokerage reports (engine/gateway/reports.py)
        "/v1/reports/weekly",
        "/v1/crm/{tenant}/{target}",  # CRM webhooks in (engine/gateway/crm.py)
    }  # fmt: skip
    post = paths["/v1/events"]["post"]
    assert set(post["requestBody"]["content"]) == {
        "application/json", "application/msgpack", "text/plain",
    }  # fmt: skip
    assert set(post["responses"]) == {"200", "400", "401", "403", "413", "415", "422", "429", "503"}
    assert set(paths["/v1/leads/{lead_id}"]["get"]["responses"]) >= {"200", "401", "403", "404"}
    assert set(paths["/v1/hotlist"]["get"]["responses"]) >= {"200", "401", "403", "422", "429"}
    assert set(paths["/healthz"]["get"]["responses"]) == {"200", "503"}
    assert "Retry-After" in post["responses"]["429"]["headers"]
    schemas = spec["components"]["schemas"]
    assert {"Event", "IngestOut", "ErrorOut", "LeadOut", "HotListOut", "HealthOut"} <= set(schemas)
    assert set(schemas["Event"]["required"]) == {"event_id", "type", "ts"}
    schemes = spec["components"]["securitySchemes"]
    assert {"HTTPBearer", "APIKeyHeader", "APIKeyQuery"} <= set(schemes)


def test_unknown_route_and_method_use_the_error_shape(gateway: Gateway) -> None:
    _error(gateway.request("GET", "/v2/nothing"), 404, "not_found")
    _error(gateway.request("DELETE", "/v1/events"), 405, "method_not_allowed")


def test_cors_lets_browser_pages_post(gateway: Gateway) -> None:
    r = gateway.request(
        "OPTIONS", "/v1/events",
        headers={"Origin": "https://site.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"},
    )  # fmt: skip
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] in ("*", "https://site.example")
    r = gateway.post_events([ev("c1")], headers={"Origin": "https://site.example"})
    assert r.headers["access-control-allow-origin"] == "*"


def test_ids_folded_by_the_engine_are_rewritten_at_ingest(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    # the engine's pointers: visitor v1 identified as L5, and L5 later merged into L9
    client.hset(f"{{{prefix}}}:alias:acme", mapping={"~v1": "L5", "L5": "L9"})
    client.hset(f"{{{prefix}}}:alias:beta", mapping={"L1": "L-other"})
    e1 = ev("a1", "", visitor_id="v1")
    del e1["lead_id"]
    events = [e1, ev("a2", "L5"), ev("a3", "L1"), ev("a4", "L9", visitor_id="v1")]
    assert gateway.post_events(events).json()["accepted"] == 4
    stored = {e["event_id"]: e for e in stream_events(client, prefix)}
    assert [stored[x]["lead_id"] for x in ("a1", "a2", "a3", "a4")] == ["L9", "L9", "L1", "L9"]
    assert stored["a1"]["visitor_id"] == "v1"
    p = partition_of("acme", "L9", 4)
    assert client.xlen(f"{{{prefix}}}:events:{p}") >= 3  # on the lead that holds the state now


def test_an_unreadable_score_record_is_skipped_not_a_500(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    seed_score(client, prefix, "acme", "OK", 80)
    client.hset(lead_key(prefix, "acme", "BAD", "s"), mapping={"score": "x", "tenant": "acme"})
    client.hset(lead_key(prefix, "acme", "BAD", "h"), mapping={"saves": "1"})
    client.zadd(hot_key(prefix, "acme"), {"BAD": 99})
    assert [x["lead_id"] for x in gateway.get("/v1/hotlist").json()["leads"]] == ["OK"]
    body = gateway.get("/v1/leads/BAD").json()
    assert body["score"] is None and body["features"]["saves"] == 1


def test_mounted_routers_can_use_the_key_to_tenant_dependency(gateway: Gateway) -> None:
    from fastapi import APIRouter, Depends

    router = APIRouter()
    dependency = Depends(gateway.app.state.current_tenant)

    @router.get("/v1/whoami")
    async def whoami(tenant: str = dependency) -> str:  # (a string annotation: no Annotated)
        return tenant

    gateway.app.include_router(router)
    assert gateway.get("/v1/whoami", key=BETA).json() == "beta"
    _error(gateway.get("/v1/whoami", key=None), 401, "unauthorized")
    _error(gateway.get("/v1/whoami", key=ACME_TRACKER), 403, "forbidden")
