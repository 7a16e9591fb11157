"""Tenant isolation: tenant A's key can neither write to nor read tenant B's leads."""

from __future__ import annotations

import redis

from engine.gateway.store import find_leads_by_contact_hash
from features.store import lead_key
from tests.engine.gateway.conftest import ACME, ACME_TRACKER, BETA, Gateway, ev, stream_events
from tests.engine.gateway.test_app import seed_score


def test_a_key_cannot_write_to_or_read_another_tenants_leads(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    seed_score(client, prefix, "beta", "B1", 97)
    client.hset(lead_key(prefix, "beta", "B1", "h"), mapping={"saves": "4"})

    # read: beta's lead does not exist for acme, by id or on acme's hot list
    assert gateway.get("/v1/leads/B1", key=ACME).status_code == 404
    assert gateway.get("/v1/hotlist?limit=100", key=ACME).json() == {"tenant": "acme", "leads": []}
    assert gateway.get("/v1/leads/B1", key=BETA).json()["score"]["score"] == 97
    assert [x["lead_id"] for x in gateway.get("/v1/hotlist", key=BETA).json()["leads"]] == ["B1"]

    # write: naming beta is refused for acme's keys; without a tenant it is acme's own lead B1
    for key in (ACME, ACME_TRACKER):
        r = gateway.post_events([ev(f"x-{key[-4:]}", "B1", tenant="beta")], key=key)
        assert r.json()["results"][0]["reason"].startswith("forbidden:tenant")
    assert gateway.post_events([ev("same-id", "B1")], key=ACME).json()["accepted"] == 1
    stored = stream_events(client, prefix)
    assert [(e["tenant"], e["lead_id"]) for e in stored] == [("acme", "B1")]
    # beta's keys are untouched: its lead's hashes, its hot list
    assert client.hgetall(lead_key(prefix, "beta", "B1", "h")) == {b"saves": b"4"}
    assert client.zrange(f"{{{prefix}}}:hot:beta", 0, -1) == [b"B1"]

    # idempotency is per tenant: beta may use the same event id
    assert gateway.post_events([ev("same-id", "B1")], key=BETA).json()["accepted"] == 1
    assert gateway.post_events([ev("same-id", "B1")], key=BETA).json()["duplicate"] == 1
    tenants = sorted(e["tenant"] for e in stream_events(client, prefix))
    assert tenants == ["acme", "beta"]


def test_contact_hashes_and_their_index_are_per_tenant(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    e = {"email": "one.person@example.com"}
    gateway.post_events([ev("c1", "A1", props=e)], key=ACME)
    gateway.post_events([ev("c1", "B1", props=e)], key=BETA)
    a, b = (x["props"]["email_hash"] for x in stream_events(client, prefix))
    assert a != b  # the same person is unlinkable across tenants
    assert find_leads_by_contact_hash(client, prefix, "acme", a) == ["A1"]
    assert find_leads_by_contact_hash(client, prefix, "beta", b) == ["B1"]
    assert find_leads_by_contact_hash(client, prefix, "beta", a) == []
    assert find_leads_by_contact_hash(client, prefix, "acme", b) == []


def test_every_gateway_key_is_tenant_scoped(
    gateway: Gateway, client: redis.Redis, prefix: str
) -> None:
    gateway.post_events([ev("k1", "L1", props={"phone": "+44 20 7946 0958"})], key=ACME)
    gateway.post_events([ev("k1", "L1", props={"phone": "+44 20 7946 0958"})], key=BETA)
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{{{prefix}}}:gw:*"))
    idem = [k for k in keys if ":gw:idem:" in k]
    contact = [k for k in keys if ":gw:contact:" in k]
    assert idem == [f"{{{prefix}}}:gw:idem:acme:k1", f"{{{prefix}}}:gw:idem:beta:k1"]
    assert [k.split(":")[3] for k in contact] == ["acme", "beta"]
    rate = [k for k in keys if ":gw:rl:" in k]
    assert ACME not in "".join(rate) and BETA not in "".join(rate)  # key ids, never keys
