"""The IDX event simulator: deterministic, contract-v1, and faithful to its latent truth."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.simulator import (
    LeadTruth,
    SimConfig,
    events_for_count,
    generate,
    main,
    truths,
    write_jsonl,
)

# Contract v1 as written in DESIGN.md (independent of the simulator's own constants).
CONTRACT_TYPES = {
    "page_view", "property_view", "property_save", "property_unsave", "search",
    "saved_search", "share", "mortgage_calc", "valuation_view",
    "inquiry", "showing_request", "valuation_request", "call_request",
    "email_open", "email_click", "reply", "call_answered", "call_missed",
    "unsubscribe", "bounce", "opt_out", "invalid_contact", "not_interested",
    "lead_created", "profile_update", "identify", "assigned", "agent_contact", "alert_ack",
    "appointment_set", "appointment_held", "agreement_signed", "closed", "lost",
}  # fmt: skip
CONTRACT_FIELDS = {
    "event_id", "lead_id", "type", "ts", "tenant", "visitor_id", "property_id", "price",
    "area", "source", "side", "timeline", "channel", "dwell_s", "agent_id", "props",
}  # fmt: skip
SOURCES = {
    "portal", "website", "listing_ad", "valuation_funnel", "open_house", "referral",
    "giveaway", "database", "social", "paid_search", "chat", "other",
}  # fmt: skip
SIDES = {"buyer", "seller", "both", "unknown"}
TIMELINES = {"0-3m", "3-6m", "6-18m", "18m+", "unknown"}
CHANNELS = {"email", "sms", "call", "chat", "web"}
HAND_RAISES = {"inquiry", "showing_request", "valuation_request", "call_request"}
FORBIDDEN = {
    "name", "first_name", "last_name", "full_name", "race", "colour", "color", "ethnicity",
    "religion", "national_origin", "nationality", "language", "gender", "sex", "age",
    "birth_date", "dob", "familial_status", "marital_status", "children", "disability",
    "email_address", "phone", "address", "demographics",
}  # fmt: skip

SMALL = SimConfig(seed=11, leads=300, days=75, anonymous_share=0.25)


def _lines(events: Iterator[dict[str, Any]]) -> list[str]:
    return [json.dumps(e, separators=(",", ":")) for e in events]


def _by_lead(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if "lead_id" in e:
            out[e["lead_id"]].append(e)
    return out


def _keys(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield str(key)
            yield from _keys(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _keys(value)


@pytest.fixture(scope="module")
def small() -> list[dict[str, Any]]:
    return list(generate(SMALL))


@pytest.fixture(scope="module")
def small_truths() -> list[LeadTruth]:
    return truths(SMALL)


@pytest.fixture(scope="module")
def big_config() -> SimConfig:
    return events_for_count(100_000, seed=7, days=60.0)


@pytest.fixture(scope="module")
def big(big_config: SimConfig) -> list[dict[str, Any]]:
    return list(generate(big_config))


def test_same_seed_gives_identical_events(
    small: list[dict[str, Any]], small_truths: list[LeadTruth]
) -> None:
    assert _lines(generate(SMALL)) == _lines(iter(small))
    assert truths(SMALL) == small_truths


def test_different_seed_gives_different_events() -> None:
    one = _lines(generate(SimConfig(seed=11, leads=60, days=20)))
    other = _lines(generate(SimConfig(seed=12, leads=60, days=20)))
    assert one != other
    assert len(set(one) & set(other)) < len(one) // 10


def test_lead_does_not_depend_on_lead_count() -> None:
    few = list(generate(SimConfig(seed=3, leads=20, days=20)))
    many = [e for e in generate(SimConfig(seed=3, leads=40, days=20)) if e["lead_id"] <= "L00020"]
    assert few == many


def test_events_sorted_by_ts(small: list[dict[str, Any]], big: list[dict[str, Any]]) -> None:
    for events in (small, big):
        assert all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:], strict=False))


def test_event_ids_unique(small: list[dict[str, Any]], big: list[dict[str, Any]]) -> None:
    for events in (small, big):
        ids = [e["event_id"] for e in events]
        assert len(set(ids)) == len(ids)
        assert all(isinstance(i, str) and 0 < len(i) <= 128 for i in ids)


def test_events_follow_contract(small: list[dict[str, Any]]) -> None:
    start, end = SMALL.start_ts, SMALL.start_ts + SMALL.days * 86_400
    seen_types = set()
    for e in small:
        assert set(e) <= CONTRACT_FIELDS, e
        assert isinstance(e["event_id"], str)
        assert ("lead_id" in e) or ("visitor_id" in e), e
        assert e["type"] in CONTRACT_TYPES, e
        seen_types.add(e["type"])
        ts = e["ts"]
        assert isinstance(ts, float) and start <= ts < end, e
        assert round(ts, 3) == ts
        assert e["tenant"] == SMALL.tenant
        assert e.get("source", "portal") in SOURCES
        assert e.get("side", "buyer") in SIDES
        assert e.get("timeline", "0-3m") in TIMELINES
        assert e.get("channel", "web") in CHANNELS
        if "price" in e:
            assert isinstance(e["price"], int) and e["price"] > 0
        if "dwell_s" in e:
            assert isinstance(e["dwell_s"], float) and e["dwell_s"] >= 0
        if e["type"] in {"agent_contact", "call_answered", "call_missed", "appointment_set"}:
            assert e["agent_id"].startswith("A")
        if e["type"] in {"property_view", "property_save", "showing_request"}:
            assert e["property_id"].startswith("P") and e["area"].startswith("z")
        if e["type"] in {"reply", "opt_out"}:
            assert e["channel"] in {"sms", "email"}
        if e["type"] in {"unsubscribe", "bounce"}:
            assert e["channel"] == "email"
        if e["type"] in {"search", "saved_search"}:
            props = e["props"]
            assert props["min_price"] < props["max_price"] and props["areas"]
    # the generative model exercises every kind of event (the short span rarely closes)
    assert CONTRACT_TYPES - {"alert_ack", "closed"} <= seen_types


def test_every_lead_starts_with_lead_created(
    small: list[dict[str, Any]], small_truths: list[LeadTruth]
) -> None:
    by_lead = _by_lead(small)
    assert set(by_lead) == {t.lead_id for t in small_truths}
    for t in small_truths:
        first = by_lead[t.lead_id][0]
        assert first["type"] == "lead_created"
        assert (first["source"], first["side"], first["timeline"]) == (
            t.source,
            t.side,
            t.timeline,
        )
        assert 0.0 <= t.intent <= 1.0
        assert sum(e["type"] == "lead_created" for e in by_lead[t.lead_id]) == 1


def test_anonymous_browsing_then_identify(small: list[dict[str, Any]]) -> None:
    identify = {e["visitor_id"]: e for e in small if e["type"] == "identify"}
    assert 40 < len(identify) < 110  # about a quarter of 300 leads
    anonymous = [e for e in small if "lead_id" not in e]
    assert anonymous
    for e in anonymous:
        assert e["visitor_id"] in identify
        assert e["ts"] < identify[e["visitor_id"]]["ts"]
        assert e["type"] in {"page_view", "property_view"}
    for e in identify.values():
        assert e["lead_id"].startswith("L")
    plain = generate(SimConfig(seed=11, leads=100, days=30))
    assert all("visitor_id" not in e for e in plain)


def test_events_for_count_within_20_percent(
    big_config: SimConfig, big: list[dict[str, Any]]
) -> None:
    assert big_config.days == 60.0 and big_config.seed == 7
    assert 80_000 <= len(big) <= 120_000
    small_cfg = events_for_count(3_000, seed=5)
    assert 2_400 <= sum(1 for _ in generate(small_cfg)) <= 3_600
    with pytest.raises(ValueError):
        events_for_count(0)


def test_converters_have_more_intent_and_hand_raises(
    big_config: SimConfig, big: list[dict[str, Any]]
) -> None:
    leads = truths(big_config)
    converted = [t for t in leads if t.converted]
    others = [t for t in leads if not t.converted]
    assert 0.05 <= len(converted) / len(leads) <= 0.15
    assert (
        statistics.mean(t.intent for t in converted)
        > statistics.mean(t.intent for t in others) + 0.1
    )
    raises: dict[str, int] = defaultdict(int)
    for e in big:
        if e["type"] in HAND_RAISES:
            raises[e["lead_id"]] += 1
    mean_conv = statistics.mean(raises[t.lead_id] for t in converted)
    mean_other = statistics.mean(raises[t.lead_id] for t in others)
    assert mean_conv > 2 * mean_other


def test_outcomes_follow_hand_raises(
    small: list[dict[str, Any]], small_truths: list[LeadTruth]
) -> None:
    by_lead = _by_lead(small)
    assert any(t.converted for t in small_truths)
    for t in small_truths:
        events = by_lead[t.lead_id]
        sets = [e for e in events if e["type"] == "appointment_set"]
        if not t.converted:
            assert not sets and t.outcome_ts is None
            continue
        assert sets[0]["ts"] == t.outcome_ts
        assert any(e["type"] in HAND_RAISES and e["ts"] < t.outcome_ts for e in events)
        for later in ("appointment_held", "agreement_signed", "closed"):
            assert all(e["ts"] > t.outcome_ts for e in events if e["type"] == later)
        assert not any(e["type"] in {"not_interested", "lost"} for e in events)


def test_no_sms_reply_after_sms_opt_out(big: list[dict[str, Any]]) -> None:
    opted_sms: set[str] = set()
    opted_email: set[str] = set()
    checked = 0
    for e in big:
        lead = e.get("lead_id")
        if lead is None:
            continue
        channel = e.get("channel")
        if lead in opted_sms and channel == "sms":
            pytest.fail(f"sms event after sms opt-out: {e}")
        if lead in opted_email and channel == "email":
            pytest.fail(f"email event after unsubscribe/bounce/opt-out: {e}")
        if e["type"] == "opt_out" and channel == "sms":
            opted_sms.add(lead)
        email_off = e["type"] in {"unsubscribe", "bounce"} or e["type"] == "opt_out"
        if email_off and channel == "email":
            opted_email.add(lead)
        if e["type"] == "reply" and channel == "sms":
            checked += 1
    assert len(opted_sms) > 10 and len(opted_email) > 10 and checked > 100  # not vacuous


def test_negative_signals_and_reactivation(small: list[dict[str, Any]]) -> None:
    types = {e["type"] for e in small}
    assert {"unsubscribe", "bounce", "opt_out", "not_interested", "lost"} <= types
    lead_side = {"page_view", "property_view", "email_open", "reply", "call_answered"}
    reactivated = 0
    for events in _by_lead(small).values():
        ts = [e["ts"] for e in events if e["type"] in lead_side]
        gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
        if any(g >= 30 * 86_400 for g in gaps):
            reactivated += 1
    assert reactivated >= 5


def test_high_intent_leads_narrow_and_repeat(
    small: list[dict[str, Any]], small_truths: list[LeadTruth]
) -> None:
    intent = {t.lead_id: t.intent for t in small_truths}
    searches: dict[str, list[dict[str, Any]]] = defaultdict(list)
    views: dict[str, list[str]] = defaultdict(list)
    for e in small:
        if "lead_id" not in e:
            continue
        if e["type"] == "search":
            searches[e["lead_id"]].append(e["props"])
        elif e["type"] == "property_view":
            views[e["lead_id"]].append(e["property_id"])

    def narrowing(lead: str) -> float:
        first, last = searches[lead][0], searches[lead][-1]
        width = float(last["max_price"] - last["min_price"])
        return width / float(first["max_price"] - first["min_price"])

    def repeat_share(lead: str) -> float:
        return 1 - len(set(views[lead])) / len(views[lead])

    hot = [k for k in searches if intent[k] > 0.55 and len(searches[k]) >= 4]
    cold = [k for k in searches if intent[k] < 0.3 and len(searches[k]) >= 4]
    assert hot and cold
    assert statistics.mean(map(narrowing, hot)) < statistics.mean(map(narrowing, cold)) - 0.15
    hot_v = [k for k in views if intent[k] > 0.55 and len(views[k]) >= 5]
    cold_v = [k for k in views if intent[k] < 0.3 and len(views[k]) >= 5]
    assert statistics.mean(map(repeat_share, hot_v)) > statistics.mean(map(repeat_share, cold_v))


def test_no_protected_characteristics(
    small: list[dict[str, Any]], big: list[dict[str, Any]]
) -> None:
    keys = {k.lower() for events in (small, big) for e in events for k in _keys(e)}
    assert not keys & FORBIDDEN
    allowed_props = {"min_price", "max_price", "areas", "campaign", "reason", "down_payment_pct"}
    assert keys <= CONTRACT_FIELDS | allowed_props


def test_jsonl_round_trip(tmp_path: Path, small: list[dict[str, Any]]) -> None:
    path = tmp_path / "events.jsonl"
    assert write_jsonl(path, small) == len(small)
    back = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert back == small
    again = tmp_path / "again.jsonl"
    assert write_jsonl(str(again), iter(back)) == len(small)
    assert again.read_bytes() == path.read_bytes()


def test_cli_writes_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.jsonl"
    assert main(["--leads", "25", "--days", "10", "--seed", "3", "--out", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines and capsys.readouterr().out.startswith(f"{len(lines)} events")
    expected = _lines(generate(SimConfig(seed=3, leads=25, days=10)))
    assert lines == expected
    out2 = tmp_path / "cli2.jsonl"
    assert main(["--events", "2000", "--days", "10", "--out", str(out2)]) == 0
    assert 1_600 <= len(out2.read_text(encoding="utf-8").splitlines()) <= 2_400


def test_config_is_validated() -> None:
    for bad in ({"leads": -1}, {"days": 0}, {"anonymous_share": 1.5}, {"areas": 0}):
        with pytest.raises(ValueError):
            SimConfig(**bad)
    assert list(generate(SimConfig(leads=0))) == []
