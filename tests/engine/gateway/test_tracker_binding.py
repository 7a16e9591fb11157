"""A public tracker key cannot make a lead id an agent's lead (issue 16, item 1).

Only a lead a server key has sent an event for (``lead_created``, ``identify``, ...)
is *bound*; a tracker key's events for any other lead id are stored visitor-level
(``~<visitor_id>``, or ``~<lead_id>`` without one).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest
import redis

from engine.gateway.identify import identify_token, verify_identify_token
from engine.gateway.store import bound_key
from tests.engine.gateway.conftest import ACME, ACME_TRACKER, BETA, Gateway, ev, stream_events

_BROWSING = ("property_view", "property_save", "search", "mortgage_calc", "share")


def probe(leads: int = 17, per_lead: int = 27, visitor: bool = False) -> list[dict[str, Any]]:
    """The outside probe's request: browsing for made-up lead ids (459 events)."""
    t0 = time.time() - 3 * 86_400
    out = []
    for k in range(leads):
        for j in range(per_lead):
            n = k * per_lead + j
            e = ev(f"probe-{n}", f"made-up-{k}", _BROWSING[j % 5], ts=t0 + n * 60,
                   property_id=f"P{j % 4}")  # fmt: skip
            if visitor:
                e["visitor_id"] = f"v{k}"
            out.append(e)
    return out


def test_the_probe_reaches_no_lead(gateway: Gateway, client: redis.Redis, prefix: str) -> None:
    events = probe()
    assert len(events) == 459
    body = gateway.post_events(events, key=ACME_TRACKER).json()
    assert body["accepted"] == 459
    assert all(r["notes"][0].startswith("visitor_level:lead_id made-up-") for r in body["results"])
    stored = stream_events(client, prefix)
    assert len(stored) == 459
    assert {e["lead_id"] for e in stored} == {f"~made-up-{k}" for k in range(17)}
    assert not list(client.scan_iter(match=f"{{{prefix}}}:gw:bound:*"))


def test_with_a_visitor_id_the_visitor_keeps_the_events(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    assert gateway.post_events(probe(2, 3, visitor=True), key=ACME_TRACKER).json()["accepted"] == 6
    assert {e["lead_id"] for e in stream_events(client, prefix)} == {"~v0", "~v1"}


def test_a_server_key_binds_the_lead_for_the_tracker(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    created = ev("c1", "lead-42", "lead_created", source="website")
    assert gateway.post_events([created]).json()["accepted"] == 1
    assert client.ttl(bound_key(prefix, "acme", "lead-42")) > 86_400
    events = [
        ev("t1", "lead-42", visitor_id="v9"),
        ev("t2", "lead-42", "identify", visitor_id="v9"),
        ev("t3", "lead-7", "identify", visitor_id="v9"),  # not bound: stays the visitor's
    ]
    body = gateway.post_events(events, key=ACME_TRACKER).json()
    assert body["accepted"] == 3
    assert "notes" not in body["results"][0] and "notes" not in body["results"][1]
    assert body["results"][2]["notes"] == [
        "visitor_level:lead_id lead-7 is not bound by a server key; stored as ~v9"
    ]
    by_id = {e["event_id"]: e for e in stream_events(client, prefix)}
    assert (by_id["t1"]["lead_id"], by_id["t2"]["lead_id"]) == ("lead-42", "lead-42")
    assert (by_id["t3"]["lead_id"], by_id["t3"]["visitor_id"]) == ("~v9", "v9")
    # a tracker never binds: lead-7 is still unknown after its identify
    assert client.exists(bound_key(prefix, "acme", "lead-7")) == 0


def test_a_binding_is_per_tenant(gateway: Gateway, client: redis.Redis, prefix: str) -> None:
    assert gateway.post_events([ev("b1", "lead-42")], key=BETA).json()["accepted"] == 1
    gateway.post_events([ev("t1", "lead-42")], key=ACME_TRACKER)
    (stored,) = [e for e in stream_events(client, prefix) if e["event_id"] == "t1"]
    assert stored["lead_id"] == "~lead-42"


def test_an_alias_of_a_bound_lead_counts_as_bound(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    from features.store import alias_key

    gateway.post_events([ev("c1", "kept", "lead_created")])
    client.hset(alias_key(prefix, "acme"), mapping={"old": "kept", "~v5": "kept"})
    body = gateway.post_events(
        [ev("t1", "old"), ev("t2", "nobody", visitor_id="v5")], key=ACME_TRACKER
    ).json()
    assert body["accepted"] == 2
    by_id = {e["event_id"]: e for e in stream_events(client, prefix)}
    assert by_id["t1"]["lead_id"] == "kept"
    assert by_id["t2"]["lead_id"] == "kept"  # the visitor was identified as a bound lead


def test_a_visitor_level_id_too_long_is_rejected(gateway: Gateway) -> None:
    long_id = "x" * 128
    (result,) = gateway.post_events([ev("t1", long_id)], key=ACME_TRACKER).json()["results"]
    assert result["status"] == "rejected" and result["reason"].startswith("too_long:lead_id")


@pytest.mark.slow
def test_the_probe_through_the_engine_makes_no_alert(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    from engine.app import build_parts
    from engine.dataflow import build_flow, run_flow

    assert gateway.post_events(probe(), key=ACME_TRACKER).json()["accepted"] == 459
    run_flow(build_flow(build_parts(gateway.settings, client), bounded=True))
    assert client.xlen(f"{{{prefix}}}:alerts") == 0


# -- identify tokens: the site's server signs, the page's identify binds ------------------


def test_an_identify_token_binds_the_lead_for_the_tracker(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    token = identify_token(ACME, "acme", "lead-77")
    events = [
        ev("i1", "lead-77", "identify", visitor_id="v7", identify_token=token),
        ev("i2", "lead-77", "property_view", visitor_id="v7"),  # same request: bound now
    ]
    body = gateway.post_events(events, key=ACME_TRACKER).json()
    assert body["accepted"] == 2 and all("notes" not in r for r in body["results"]), body
    by_id = {e["event_id"]: e for e in stream_events(client, prefix)}
    assert by_id["i1"]["lead_id"] == by_id["i2"]["lead_id"] == "lead-77"
    assert "identify_token" not in json.dumps(by_id["i1"])  # proof, never stored
    assert client.exists(bound_key(prefix, "acme", "lead-77")) == 1
    later = gateway.post_events([ev("i3", "lead-77")], key=ACME_TRACKER).json()
    assert "notes" not in later["results"][0]


@pytest.mark.parametrize(
    "why,token",
    [
        ("another lead", identify_token(ACME, "acme", "lead-78")),
        ("another tenant's key", identify_token(BETA, "acme", "lead-77")),
        ("a tracker key", identify_token(ACME_TRACKER, "acme", "lead-77")),
        ("expired", identify_token(ACME, "acme", "lead-77", ttl_s=-1)),
        ("forged", "lpid1.9999999999.AAAAAAAAAAAAAAAAAAAAAAAA"),
        ("junk", "lpid1.x.y"),
        ("not text", 12345),
        ("long", "lpid1." + "9" * 200),
    ],
    ids=lambda v: v if isinstance(v, str) and not v.startswith("lpid1.") else "token",
)
def test_a_bad_identify_token_leaves_the_visitor_anonymous(
    gateway: Gateway, client: redis.Redis, prefix: str, why: str, token: Any
) -> None:
    e = ev("i1", "lead-77", "identify", visitor_id="v7", identify_token=token)
    (result,) = gateway.post_events([e], key=ACME_TRACKER).json()["results"]
    assert result["status"] == "accepted", why
    assert result["notes"][0].startswith("dropped:identify_token"), why
    (stored,) = stream_events(client, prefix)
    assert stored["lead_id"] == "~v7" and "identify_token" not in stored.get("props", {})
    assert client.exists(bound_key(prefix, "acme", "lead-77")) == 0


def test_verify_identify_token_never_raises() -> None:
    digests = [hashlib.sha256(ACME.encode()).digest()]
    for token in (None, "", "lpid1..", "lpid1.1.\udc80", "\u0661" * 10, b"bytes", ["x"]):
        assert verify_identify_token(digests, "acme", "L1", token) is False
    assert verify_identify_token(digests, "acme", "L1", identify_token(ACME, "acme", "L1"))
