"""The lead record (schema 2, ``features/record.py``): one key a lead, every part in it,
and the migration from schema 1's four keys (``:f`` features, ``:r``, ``:n``, ``:rp``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.simulator import SimConfig, generate
from engine.app import build_parts
from engine.events import Event
from engine.keys import lead_key
from engine.records import RecordReader, ScoreRecord, read_score
from engine.reporting.aggregates import LeadMark
from features.record import LEGACY_PARTS, RECORD, LeadRecord, pack_record, unpack_record
from features.spec import FeatureSpec
from features.state import (
    COUNT_FIELDS,
    TEXT_FIELDS,
    TIME_FIELDS,
    LeadFeatures,
    read_record,
    unpack,
)
from features.store import (
    FeatureStore,
    FeatureWrites,
    HeldLead,
    LeadChanges,
    queue_writes,
    read_state,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _features(spec: FeatureSpec, n: int = 3) -> LeadFeatures:
    f = LeadFeatures()
    for i in range(n):
        f.apply(spec, Event(event_id=f"e{i}", lead_id="L", type="property_view",
                            ts=T0 + 60 * i, tenant="t", property_id=f"P{i % 2}"))  # fmt: skip
    return f


def _score(ts: float = T0, eid: str = "e2", moment: str = "l") -> ScoreRecord:
    return ScoreRecord("t", "L", 41, 0.41, "P3", "warm", ("views",), ("source",), 0.3, 0.25,
                       0.5, ts, eid, T0 - 5, 40.0, T0 - 5, moment)  # fmt: skip


def _moment(ts: float, kind: str) -> bytes:
    snap = {"ts": ts, "f": [1, 2], "seg": "all", "pb": 0.1, "pp": 0.1, "pr": 0.1, "pm": None,
            "bk": "P3", "k": kind}  # fmt: skip
    return msgpack.packb(snap, use_bin_type=True)


def test_the_record_round_trips_every_part(make_settings: Any) -> None:
    spec = FeatureSpec.from_settings(make_settings().features)
    features = _features(spec)
    mark = LeadMark(day="2026-01-01", source="web", done={"a:A1"})
    rest = LeadRecord(_score().items(), [_moment(T0, "h"), _moment(T0 + 60, "l")], mark.to_list())
    blob = pack_record(spec, features, rest)
    got, back = unpack_record(blob)
    assert msgpack.unpackb(blob)[0] == RECORD
    assert back == rest and got.pack(spec) == features.pack(spec)
    assert unpack(blob).pack(spec) == features.pack(spec)  # feature readers read either schema
    assert read_score("t", "L", blob) == _score()
    assert LeadMark.from_list(back.marks) == mark


def test_a_schema_1_features_blob_reads_with_no_other_parts(make_settings: Any) -> None:
    spec = FeatureSpec.from_settings(make_settings().features)
    features, rest = unpack_record(_features(spec).pack(spec))
    assert rest is None and features.counts["n"] == 3


@pytest.mark.parametrize("blob", [b"\xc1 junk", msgpack.packb([2, 1]), msgpack.packb([9] * 14)])
def test_an_unreadable_record_raises_value_error_and_readers_start_over(blob: bytes) -> None:
    with pytest.raises(ValueError):
        unpack_record(blob)
    assert read_record(blob).empty
    assert read_score("t", "L", blob) is None


def _schema_1_lead(client: Any, prefix: str, spec: FeatureSpec) -> None:
    """A lead as the engine before schema 2 left it: four keys."""
    client.set(lead_key(prefix, "t", "L", "f"), _features(spec).pack(spec), ex=3600)
    client.set(lead_key(prefix, "t", "L", "r"), _score(T0 + 120).pack(), ex=3600)
    client.rpush(lead_key(prefix, "t", "L", "n"), _moment(T0, "h"), _moment(T0 + 120, "l"))
    marks = LeadMark(day="2026-01-01", source="web", agent="A1", done={"contacted"})
    client.hset(lead_key(prefix, "t", "L", "rp"), mapping=marks.to_hash())


def test_a_schema_1_lead_is_read_then_written_as_one_record(
    client: Any, make_settings: Any
) -> None:
    settings = make_settings()
    prefix = settings.redis.key_prefix
    spec = FeatureSpec.from_settings(settings.features)
    _schema_1_lead(client, prefix, spec)
    reader = RecordReader(settings)
    assert reader.read(client, [("t", "L")])[0]["last_event_id"] == "e2"  # readers: as it is
    parts = build_parts(settings, client)
    view = {"event_id": "e9", "tenant": "t", "lead_id": "L", "type": "property_view",
            "ts": T0 + 600, "property_id": "P1"}  # fmt: skip
    parts.processor.process([(0, b"1-1", {b"e": msgpack.packb(view)})])
    keys = [lead_key(prefix, "t", "L", part) for part in LEGACY_PARTS]
    assert client.exists(*keys) == 0  # the old layout's keys went in the same transaction
    features, rest = unpack_record(client.get(lead_key(prefix, "t", "L", "f")))
    assert rest is not None and features.counts["n"] == 4
    score = read_score("t", "L", client.get(lead_key(prefix, "t", "L", "f")))
    assert score is not None and score.last_event_id == "e9"
    assert score.last_alert_ts == T0 - 5  # the alert state moved with the lead
    stored = [msgpack.unpackb(m)["ts"] for m in rest.moments]
    assert stored[0] == T0 and stored[-1] == T0 + 600  # the pinned moment stayed, latest replaced
    assert T0 + 120 not in stored
    mark = LeadMark.from_list(rest.marks)
    assert (mark.day, mark.source, mark.agent) == ("2026-01-01", "web", "A1")
    assert "contacted" in mark.done
    assert (
        0 < client.ttl(lead_key(prefix, "t", "L", "f")) <= settings.features.idle_expire_d * 86_400
    )
    assert reader.read(client, [("t", "L")])[0]["last_event_id"] == "e9"


def test_one_key_a_lead_after_traffic(client: Any, make_settings: Any) -> None:
    settings = make_settings()
    prefix = settings.redis.key_prefix
    parts = build_parts(settings, client)
    entries = []
    for i, etype in enumerate(["lead_created", "property_view", "save", "tour_request"]):
        ev = {"event_id": f"e{i}", "tenant": "t", "lead_id": "L", "type": etype,
              "ts": T0 + 60 * i, "property_id": "P1"}  # fmt: skip
        entries.append((0, f"1-{i}".encode(), {b"e": msgpack.packb(ev)}))
    parts.processor.process(entries)
    lead_keys = list(client.scan_iter(match=f"{{{prefix}}}:{{t:L}}:*"))
    assert lead_keys == [lead_key(prefix, "t", "L", "f").encode()]
    _, rest = unpack_record(client.get(lead_keys[0]))
    assert rest is not None and rest.score is not None and rest.moments and rest.marks


def test_a_lead_changed_without_events_keeps_its_ttl_and_stays_gone_if_expired(
    client: Any, make_settings: Any
) -> None:
    """The learning sweep rewrites moments of leads the batch has no events of: read
    before the transaction (``FeatureWrites.hold``), written with SET XX KEEPTTL."""
    settings = make_settings()
    prefix = settings.redis.key_prefix
    store = FeatureStore(client, settings.features, prefix)
    view = Event(event_id="e1", lead_id="L", type="property_view", ts=T0, tenant="t",
                 property_id="P1")  # fmt: skip
    for lead in ("L", "M"):
        _, writes = store.apply([replace(view, lead_id=lead)])
        pipe = client.pipeline(transaction=True)
        queue_writes(pipe, prefix, writes, 3600)
        pipe.execute()
    client.expire(lead_key(prefix, "t", "L", "f"), 100)
    client.delete(lead_key(prefix, "t", "M", "f"))  # M expired since the sweep read it
    store.clear()
    _, writes = store.apply([])
    moments = {lead: ("rewrite", [_moment(T0, "h")]) for lead in (("t", "L"), ("t", "M"))}
    pipe = client.pipeline(transaction=True)
    queue_writes(pipe, prefix, writes, 3600, LeadChanges(moments=moments))
    pipe.execute()
    _, rest = unpack_record(client.get(lead_key(prefix, "t", "L", "f")))
    assert rest is not None and rest.moments == [_moment(T0, "h")]
    assert 0 < client.ttl(lead_key(prefix, "t", "L", "f")) <= 100
    assert not client.exists(lead_key(prefix, "t", "M", "f"))


def test_the_cache_holds_what_redis_holds_after_every_batch(
    client: Any, make_settings: Any
) -> None:
    """The committer folds score records, moment effects and marks into the cached records
    before it writes them: a restart (records read again) must see the same records, or
    a crash would not give what an uninterrupted run gives."""
    settings = make_settings()
    prefix = settings.redis.key_prefix
    parts = build_parts(settings, client)
    store = parts.processor._store  # the worker's cache, against what Redis committed
    pack = msgpack.Packer(use_bin_type=True).pack
    events = list(generate(SimConfig(seed=11, leads=40, days=40.0, tenant="t")))
    entries = [(0, f"1-{i}".encode(), {b"e": pack(ev)}) for i, ev in enumerate(events)]
    with_moments = with_marks = 0
    for lo in range(0, len(entries), 113):  # batches that split leads' events
        parts.processor.process(entries[lo : lo + 113])
        cached = {lead: h for lead, h in store._cache.items() if not h.alias}
        stored, _ = read_state(client, prefix, store.spec, sorted(cached))
        for lead, held in cached.items():
            again = stored[lead]
            assert again.features.pack(store.spec) == held.features.pack(store.spec), lead
            assert (again.rest, again.state) == (held.rest, held.state), lead
            with_moments += bool(held.rest.moments)
            with_marks += held.rest.marks is not None
    assert with_moments > 0 and with_marks > 0  # the parts the committer adds were there


@pytest.mark.parametrize(
    ("effect", "want"),
    [
        (("append", [b"c"]), [b"a", b"b", b"c"]),
        (("append", [b"c", b"d"]), [b"b", b"c", b"d"]),  # the newest max_moments stay
        (("replace_tail", [b"c"]), [b"a", b"c"]),
        (("replace_tail", []), [b"a"]),
        (("rewrite", [b"c"]), [b"c"]),
        (("rewrite", []), []),
    ],
)
def test_moment_effects_do_what_the_list_commands_did(
    client: Any, make_settings: Any, effect: tuple[str, list[bytes]], want: list[bytes]
) -> None:
    """Schema 1 applied ``learning.Moments.effect`` to the ``:n`` list (DEL / RPOP, RPUSH,
    LTRIM to the newest ``max_snapshots``); the record's moments follow the same rules."""
    settings = make_settings()
    prefix = settings.redis.key_prefix
    spec = FeatureSpec.from_settings(settings.features)
    lead = ("t", "L")
    held = HeldLead(_features(spec), {}, rest=LeadRecord(moments=[b"a", b"b"]))
    writes = FeatureWrites(touched={lead}, held={lead: held}, spec=spec)
    mark = LeadMark(day="2026-01-01")
    changes = LeadChanges({lead: _score()}, {lead: effect}, {lead: mark.to_list()}, 3)
    pipe = client.pipeline(transaction=True)
    queue_writes(pipe, prefix, writes, 3600, changes)
    pipe.execute()
    _, rest = unpack_record(client.get(lead_key(prefix, "t", "L", "f")))
    assert rest is not None and rest.moments == want
    assert rest.score == _score().items() and rest.marks == ["2026-01-01"]
    assert held.rest == rest  # the worker holds what it wrote


def _items_as_they_were(f: LeadFeatures) -> list[Any]:
    """``LeadFeatures.items(None)`` before it was made faster (the reference for the bytes)."""

    def num(v: float) -> float | int:
        x = float(v)
        return int(x) if -(2.0**62) < x < 2.0**62 and x.is_integer() else x

    def strip(values: list[Any], zero: Any) -> list[Any]:
        while values and values[-1] == zero:
            values.pop()
        return values

    def flat(pairs: list[tuple[float, str]]) -> list[Any]:
        return [x for ts, key in pairs for x in (num(ts), key)]

    return [
        strip([f.counts[k] for k in COUNT_FIELDS], 0),
        strip([num(f.times[k]) for k in TIME_FIELDS], 0),
        strip([f.texts[k] for k in TEXT_FIELDS], ""),
        sorted(f.blocked), {k: [v, num(ts)] for k, (v, ts) in f.profile.items()},
        flat(f.views), flat(sorted((ts, k) for k, ts in f.pids.items())),
        flat(sorted((ts, k) for k, ts in f.areas.items())), b"".join(f.seen),
        [num(ts) for ts in f.contacts],
    ]  # fmt: skip


# timestamps with and without a fraction, ints, and beyond int64 (those stay floats)
_TS = st.one_of(
    st.floats(min_value=0, max_value=2e9, allow_nan=False), st.integers(0, 2_000_000_000),
    st.sampled_from([0.0, -0.0, 1.0, 2.0**62, -(2.0**62), 2.0**63, 1e300, float("inf")]),
)  # fmt: skip
_KEY = st.text(max_size=4)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.fixed_dictionaries({k: st.integers(0, 3) for k in COUNT_FIELDS}),
    st.fixed_dictionaries({k: _TS for k in TIME_FIELDS}),
    st.fixed_dictionaries({k: st.sampled_from(["", "x"]) for k in TEXT_FIELDS}),
    st.dictionaries(_KEY, st.tuples(_KEY, _TS), max_size=3),
    st.lists(st.tuples(_TS, _KEY), max_size=12),
    st.dictionaries(_KEY, _TS, max_size=6), st.dictionaries(_KEY, _TS, max_size=6),
    st.lists(_TS, max_size=5), st.lists(st.binary(min_size=6, max_size=6), max_size=4),
)  # fmt: skip
def test_the_packed_features_are_the_bytes_they_were(
    counts: dict[str, int], times: dict[str, float], texts: dict[str, str],
    profile: dict[str, tuple[str, float]], views: list[tuple[float, str]],
    pids: dict[str, float], areas: dict[str, float], contacts: list[float], seen: list[bytes],
) -> None:  # fmt: skip
    f = LeadFeatures()
    f.counts, f.times, f.texts, f.profile = counts, times, texts, profile
    f.views, f.pids, f.areas, f.contacts, f.seen = sorted(views), pids, areas, contacts, seen
    f.blocked = {"sms", "email"} if counts["n"] else set()
    rest = LeadRecord([1, "x"], [b"m"], None)
    want = msgpack.packb([RECORD, *_items_as_they_were(f), rest.score, rest.moments, None],
                         use_bin_type=True)  # fmt: skip
    assert pack_record(None, f, rest) == want
