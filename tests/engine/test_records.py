"""The score record: compact, versioned, its reasons put into words at read time.

The words a reader gets must be the words the engine would have written: the test runs
simulated traffic with the engine rendering every stored record too, and compares.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.simulator import SimConfig, generate
from engine.app import build_parts
from engine.keys import lead_key
from engine.records import (
    Alert,
    AlertEvent,
    AlertSla,
    RecordReader,
    ScoreRecord,
    read_score,
    unpack_record,
)
from engine.stages.score import Scorer

_TEXT = st.text(max_size=12)
_NUM = st.floats(min_value=0, max_value=2e9, allow_nan=False)


@given(
    st.builds(
        ScoreRecord,
        tenant=st.just("t"),
        lead_id=st.just("L"),
        score=st.integers(0, 100),
        probability=st.floats(0.001, 0.999),
        bucket=st.sampled_from(["P1", "P2", "P5"]),
        tier=_TEXT,
        pros=st.tuples(_TEXT),
        cons=st.tuples(),
        prior_probability=_NUM,
        raw_prior_probability=_NUM,
        model_weight=st.floats(0, 1),
        ts=_NUM,
        last_event_id=_TEXT,
        last_alert_ts=_NUM,
        jump_base=_NUM,
        jump_base_ts=_NUM,
        moment=st.sampled_from(["", "l"]),
        outcome=_TEXT,
        outcome_ts=_NUM,
        bucket_by=_TEXT,
    )  # fmt: skip
)
def test_a_record_round_trips(record: ScoreRecord) -> None:
    assert unpack_record("t", "L", record.pack()) == record


def test_unreadable_or_unknown_values_are_none() -> None:
    assert unpack_record("t", "L", b"\xc1 junk") is None
    assert unpack_record("t", "L", msgpack.packb([99, 1, 2])) is None  # a newer schema
    assert unpack_record("t", "L", msgpack.packb({"score": 3})) is None


def _events(n_leads: int) -> list[dict[str, Any]]:
    return list(generate(SimConfig(seed=5, leads=n_leads, days=20.0, tenant="t")))


def test_words_at_read_time_are_the_words_of_the_engine(
    client: Any, make_settings: Any, monkeypatch: Any
) -> None:
    settings = make_settings()
    written: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {}
    explained, record = Scorer.explained, Scorer.record

    def words_always(self: Scorer, s: Any, lead: Any, words: bool) -> Any:
        return explained(self, s, lead, True)

    def keep(event: Any, score: Any, lead: Any) -> Any:
        written[(event.tenant, event.lead_id)] = (score.reasons, score.concerns)
        return record(event, score, lead)

    monkeypatch.setattr(Scorer, "explained", words_always)
    monkeypatch.setattr(Scorer, "record", staticmethod(keep))
    parts = build_parts(settings, client)
    pack = msgpack.Packer(use_bin_type=True).pack
    events = _events(60)
    entries = [(0, f"1-{i}".encode(), {b"e": pack(ev)}) for i, ev in enumerate(events)]
    for lo in range(0, len(entries), 97):  # batches that split leads' events
        parts.processor.process(entries[lo : lo + 97])
    leads = sorted(written)
    read = RecordReader(settings).read(client, leads)
    assert len(leads) == 60
    said = 0
    for lead, raw in zip(leads, read, strict=True):
        pros, cons = written[lead]
        assert (json.loads(raw["reasons"]), json.loads(raw["concerns"])) == (list(pros), list(cons))
        said += len(pros) + len(cons)
    assert said > 60  # the records do say things


def test_a_schema_0_score_hash_is_read_then_replaced(client: Any, make_settings: Any) -> None:
    settings = make_settings()
    prefix = settings.redis.key_prefix
    old = lead_key(prefix, "t", "L", "s")
    client.hset(old, mapping={
        "tenant": "t", "lead_id": "L", "score": "71", "probability": "0.71", "bucket": "P2",
        "tier": "hot", "reasons": '["asked to see a home"]', "concerns": "[]",
        "prior_probability": "0.7", "model_weight": "0", "ts": "1767225600",
        "last_event_id": "e0", "last_alert_ts": "1767225600", "jump_base": "71",
        "jump_base_ts": "1767225600",
    })  # fmt: skip
    reader = RecordReader(settings)
    assert reader.read(client, [("t", "L")])[0]["reasons"] == '["asked to see a home"]'
    parts = build_parts(settings, client)
    view = {"event_id": "e1", "tenant": "t", "lead_id": "L", "type": "property_view",
            "ts": 1767225660.0,
            "property_id": "P1"}  # fmt: skip
    parts.processor.process([(0, b"1-1", {b"e": msgpack.packb(view)})])
    assert not client.exists(old)
    record = read_score("t", "L", client.get(lead_key(prefix, "t", "L", "f")))
    assert record is not None and record.last_alert_ts == 1767225600  # the alert state moved
    assert reader.read(client, [("t", "L")])[0]["last_event_id"] == "e1"


@given(
    st.builds(AlertEvent, _TEXT, _TEXT, _NUM, _TEXT, _TEXT, _TEXT, _TEXT),
    st.builds(AlertSla, _TEXT, _NUM, st.booleans()),
)
def test_the_alert_wire_carries_every_field_of_its_event_and_sla(
    event: AlertEvent, sla: AlertSla
) -> None:
    """``wire`` is written out for speed: it must stay what ``dataclasses.asdict`` gives
    (a field added to the event or the SLA and not to its wire fails here)."""
    alert = Alert("a", "t", "L", ("jump",), 70, 0.7, "P2", "score", "hot", ("r",), (), event,
                  "call", ("sms",), sla, "A1", 5, 40.0, 9)  # fmt: skip
    wire = alert.wire()
    assert wire["event"] == asdict(event) and list(wire["event"]) == list(asdict(event))
    assert wire["sla"] == asdict(sla) and list(wire["sla"]) == list(asdict(sla))
    assert set(wire) == {f.name for f in fields(Alert)}
