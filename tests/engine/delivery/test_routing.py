"""Routing: rules, round-robin fairness, sticky owners, first-to-claim with a timeout."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import msgpack

from engine.delivery.consumer import DeliveryService
from engine.delivery.leads import LeadProfile
from engine.delivery.routing import Assignment, match_rule, next_in_turn
from engine.events import partition_of
from engine.records import RecordReader
from tests.engine.delivery.conftest import Clock, handle_all, run_engine, send, tenant_config


def _svc(make_settings: Any, client: Any, clock: Clock, **tenant: Any) -> DeliveryService:
    settings = make_settings(
        delivery={"claim_timeout_s": 60, "tenants": {"default": tenant_config(**tenant)}}
    )
    return DeliveryService(settings, client, clock=clock)


def _alert(lead: str, ts: float, n: int = 0, bucket: str = "P1") -> dict[str, Any]:
    return {
        "alert_id": f"a{lead}x{n}", "tenant": "default", "lead_id": lead,
        "triggers": ["hand_raise:inquiry"], "score_after": 91, "bucket": bucket, "tier": "hot",
        "reasons": [], "event": {"event_id": f"e{lead}{n}", "type": "inquiry", "ts": ts},
        "first_touch": "call", "blocked_channels": [],
        "sla": {"rule": "portal", "deadline_ts": ts + 300, "after_hours": False},
        "agent_id": "", "ingest_ms": int(ts * 1000), "emit_ms": int(ts * 1000),
    }  # fmt: skip


def _read(svc: DeliveryService, lead: str) -> Assignment:
    a = svc.assigner.read("default", lead)
    assert a is not None
    return a


def _assigned_events(svc: DeliveryService, lead: str) -> list[dict[str, Any]]:
    p = partition_of("default", lead, svc.names.partitions)
    out = []
    for _, fields in svc._r.xrange(svc.names.events(p)):
        ev = msgpack.unpackb(fields[b"e"], raw=False)
        if ev["type"] == "assigned" and ev["lead_id"] == lead:
            out.append(ev)
    return out


def test_rules_pick_the_group_in_order(make_settings: Any) -> None:
    cfg = make_settings(delivery={"tenants": {"default": tenant_config()}}).delivery.tenant(
        "default"
    )
    seller = LeadProfile(side="seller", area="02139", price=2_000_000)
    assert match_rule(cfg, "P1", seller).group == "listing"  # first rule wins
    assert "side seller/both" in match_rule(cfg, "P1", seller).why
    luxury = LeadProfile(side="buyer", area="02139", price=1_500_000)
    assert match_rule(cfg, "P2", luxury).group == "luxury"
    north = LeadProfile(side="buyer", area="02139", price=650_000)
    assert match_rule(cfg, "P2", north).group == "north"
    unknown_price = LeadProfile(side="buyer", area="90210")
    m = match_rule(cfg, "P2", unknown_price)
    assert (m.group, m.rule) == ("pond", None)  # no price: the price band cannot match


def test_next_in_turn_skips_excluded_agents() -> None:
    assert next_in_turn(["a", "b", "c"], 4, set()) == "b"
    assert next_in_turn(["a", "b", "c"], 4, {"b"}) == "c"
    assert next_in_turn(["a", "b", "c"], 0, {"a", "b", "c"}) is None


def test_round_robin_is_fair_and_shared_in_redis(make_settings: Any, client: Any) -> None:
    clock = Clock(time.time())
    svc = _svc(make_settings, client, clock)
    other = _svc(make_settings, client, clock)  # a second process: same turn order
    north = LeadProfile(side="buyer", area="02140", price=500_000)
    owners = []
    for i in range(30):
        assigner = (svc if i % 2 else other).assigner
        a = assigner.route(_alert(f"B{i}", clock()), north)
        owners.append(a.agent)
        assert a.state == "assigned" and a.group == "north" and a.how == "rule"
        assert a.reason.startswith("rule 3 (area 02139/02140) -> north, round robin -> ")
    assert Counter(owners) == {"cy": 10, "dee": 10, "eli": 10}
    assert owners[:4] == ["cy", "dee", "eli", "cy"]
    assert svc.assigner.load("default") == {"cy": 10, "dee": 10, "eli": 10}
    (ev,) = _assigned_events(svc, "B0")
    assert ev["agent_id"] == "cy" and ev["props"]["reason"] == _read(svc, "B0").reason


def test_a_lead_stays_with_its_agent_and_replays_do_not_advance_the_turn(
    make_settings: Any, client: Any
) -> None:
    clock = Clock(time.time())
    svc = _svc(make_settings, client, clock)
    north = LeadProfile(side="buyer", area="02139")
    first = svc.assigner.route(_alert("S1", clock()), north)
    again = svc.assigner.route(_alert("S1", clock()), north)  # the same alert, replayed
    later = svc.assigner.route(_alert("S1", clock(), n=1), north)  # a new alert
    assert first.agent == again.agent == later.agent == "cy"
    assert later.how == "sticky" and later.reason.startswith("already assigned to cy")
    assert svc.assigner.route(_alert("S2", clock()), north).agent == "dee"
    assert len(_assigned_events(svc, "S1")) == 1
    history = svc.assigner.history("default", "S1")
    assert history[0]["reason"] == first.reason


def test_real_engine_seller_goes_to_listing_specialists(make_settings: Any, client: Any) -> None:
    settings = make_settings(delivery={"tenants": {"default": tenant_config()}})
    now = time.time()
    send(settings, client, [
        {"event_id": "v1", "lead_id": "home1", "type": "valuation_request", "ts": now - 5,
         "area": "02139", "side": "seller", "source": "valuation_funnel"},
        {"event_id": "v2", "lead_id": "buy1", "type": "showing_request", "ts": now - 4,
         "area": "02140", "side": "buyer", "source": "portal", "price": 1_250_000,
         "property_id": "P77"},
    ])  # fmt: skip
    run_engine(settings, client)
    svc = DeliveryService(settings, client)
    by_lead = {p["lead_id"]: p for p in handle_all(svc)}
    assert by_lead["home1"]["assignment"]["group"] == "listing"
    assert by_lead["home1"]["assignment"]["agent"] == "ava"
    assert by_lead["buy1"]["assignment"]["agent"] == "fay"  # price band 1M+ -> luxury
    assert by_lead["buy1"]["lead"]["price"] == 1_250_000
    run_engine(settings, client)  # the assigned events reach the engine: it knows the agent
    rec = RecordReader(settings).read(client, [("default", "home1")])[0]
    assert rec["agent_id"] == "ava"


def test_first_to_claim_then_timeout_to_round_robin(make_settings: Any, client: Any) -> None:
    clock = Clock(time.time())
    rules = [{"group": "north", "areas": ["02139"], "first_to_claim": True}]
    svc = _svc(make_settings, client, clock, rules=rules)
    p = LeadProfile(side="buyer", area="02139")
    offered = svc.assigner.route(_alert("C1", clock()), p)
    assert offered.state == "offered" and offered.offered_to == ("cy", "dee", "eli")
    assert offered.claim_deadline == clock() + 60 and "first to claim" in offered.reason
    assert _assigned_events(svc, "C1") == []  # nothing assigned yet
    won, _, msg = svc.assigner.claim("default", "C1", "ava")
    assert not won and "offered to another group" in msg
    won, a, _ = svc.assigner.claim("default", "C1", "dee")
    assert won and a is not None and a.agent == "dee" and a.how == "claim"
    won, holder, msg = svc.assigner.claim("default", "C1", "eli")
    assert not won and msg == "C1 is already assigned to dee"
    assert [e["agent_id"] for e in _assigned_events(svc, "C1")] == ["dee"]
    # nobody claims the next one: after the timeout it goes round robin
    svc.assigner.route(_alert("C2", clock()), p)
    clock.advance(59)
    assert svc.tick() == [] and _read(svc, "C2").state == "offered"
    clock.advance(2)
    svc.tick()
    c2 = _read(svc, "C2")
    assert c2.state == "assigned" and c2.how == "claim_timeout" and c2.agent == "cy"
    assert c2.reason == "nobody claimed within 60 s: north, round robin -> cy"
    assert svc.metrics.assignments.labels("claim_timeout")._value.get() == 1


def test_a_batch_reads_once_and_keeps_a_lead_with_one_agent(
    make_settings: Any, client: Any
) -> None:
    clock = Clock(time.time())
    svc = _svc(make_settings, client, clock)
    settings = svc.settings
    send(settings, client, [
        {"event_id": f"q{i}", "lead_id": lead, "type": "inquiry", "ts": clock() - 10 + i,
         "area": "02139", "side": "buyer"}
        for i, lead in enumerate(["Z1", "Z2", "Z1", "Z3"])
    ])  # fmt: skip
    run_engine(settings, client)
    svc.ensure_group()
    batch = svc.read_alerts(None)
    assert len(batch) == 4
    out = svc.handle_many([a for _, a in batch])
    owners: dict[str, list[str]] = {"Z1": [], "Z2": [], "Z3": []}
    for p in out:
        assert p.payload is not None
        owners[p.payload["lead_id"]].append(p.payload["assignment"]["agent"])
    assert len(set(owners["Z1"])) == 1  # the second alert of Z1 is sticky to the first
    assert sorted(a for agents in owners.values() for a in set(agents)) == ["cy", "dee", "eli"]
    assert svc.assigner.load("default") == {"cy": 1, "dee": 1, "eli": 1}


def test_assigned_events_carry_the_leads_event_time_not_the_wall_clock(
    make_settings: Any, client: Any
) -> None:
    """Alerts from a replay of old events, delivered today: the `assigned` events stay in
    the leads' era (the alert's event time, moved on by the wall time since), so the
    engine does not see those leads jump to today and reject their next events as late."""
    clock = Clock(time.time())
    old = clock() - 200 * 86_400  # the triggering event happened 200 days ago
    rules = [{"group": "north", "areas": ["02139"], "first_to_claim": True}]
    svc = _svc(make_settings, client, clock, rules=rules)
    p = LeadProfile(side="buyer", area="02139")
    svc.assigner.route(_alert("R1", old), p)  # offered to north: no event yet
    clock.advance(61)
    svc.tick()  # nobody claimed: round robin, 61 s later in the lead's time too
    (timeout,) = _assigned_events(svc, "R1")
    assert timeout["ts"] == old + 61
    svc.assigner.route(_alert("R2", old), LeadProfile(side="buyer", area="99999"))
    (direct,) = _assigned_events(svc, "R2")
    assert direct["ts"] == old and _read(svc, "R2").ts == clock()  # SLA clocks: wall time
