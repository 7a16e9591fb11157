"""Properties of the pure-Python feature state: order, batch splits, the record.

- Any arrival order of the same events gives the same state (but the two values that
  record arrival on purpose: the gap before the newest event, and when the lead came
  back), as long as no event is late (older than the dedup horizon than the newest).
- Any split of a stream into batches, with the state packed and unpacked between
  batches (a dropped cache reloaded from Redis), gives the same replies and record as
  one uninterrupted pass: what makes a crash invisible.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.events import Event
from features.spec import FeatureSpec
from features.state import (
    SCHEMA,
    TEXT_FIELDS,
    LeadFeatures,
    Personal,
    from_legacy,
    personal_of,
    unpack,
)  # fmt: skip

T0 = 1_767_225_600.0
H = 3600.0
SPEC = FeatureSpec(
    w_short=24 * H, w_mid=168 * H, w_long=720 * H, w_repeat=48 * H, w_distinct=720 * H,
    silence=30 * 24 * H, flag_window=7 * 24 * H, horizon=720 * H, max_members=12,
    dedup_ids=64, idle_s=86_400, profile=("props.origin",),
)  # fmt: skip
TYPES = (
    "page_view", "property_view", "property_save", "search", "inquiry", "reply", "call_answered",
    "agent_contact", "call_missed", "unsubscribe", "opt_out", "invalid_contact",
    "not_interested", "profile_update", "email_open", "showing_request",
)  # fmt: skip


@st.composite
def streams(draw: Any) -> list[Event]:
    n = draw(st.integers(1, 40))
    times = draw(st.lists(st.integers(0, 40 * 24), min_size=n, max_size=n, unique=True))
    out = []
    for i, hour in enumerate(times):
        out.append(Event(
            event_id=f"e{i}", lead_id="L", tenant="t", type=draw(st.sampled_from(TYPES)),
            ts=T0 + hour * H / 2, property_id=draw(st.sampled_from(["", "P1", "P2", "P3", "P4"])),
            area=draw(st.sampled_from(["", "z1", "z2"])),
            source=draw(st.sampled_from(["", "portal", "referral"])),
            timeline=draw(st.sampled_from(["", "unknown", "0-3m"])),
            channel=draw(st.sampled_from(["", "sms", "email", "web"])),
            dwell_s=float(draw(st.integers(0, 300))),
            agent_id=draw(st.sampled_from(["", "a1", "a2"])),
            props={"origin": draw(st.sampled_from(["", "ads"])),
                   "text": draw(st.sampled_from(["hi", "STOP"])),
                   "address": draw(st.sampled_from(["", "1 Main St", "2 Oak Ave"]))},
        ))  # fmt: skip
    return out


def run(events: list[Event], state: LeadFeatures | None = None) -> tuple[LeadFeatures, list[Any]]:
    s = state or LeadFeatures()
    replies = []
    for ev in events:
        status, react = s.apply(SPEC, ev)
        replies.append((status, s.features(SPEC, react)))
    return s, replies


def canon(s: LeadFeatures) -> dict[str, Any]:
    """The state, leaving out the two arrival-order values and the dedup list's order."""
    times = {k: v for k, v in s.times.items() if k not in ("gap_s", "react_ts")}
    return {
        "counts": s.counts, "times": times, "texts": s.texts, "blocked": s.blocked,
        "profile": s.profile, "views": s.views, "pids": s.pids, "areas": s.areas,
        "seen": set(s.seen), "unanswered": s.unanswered(),
    }  # fmt: skip


def in_horizon(events: list[Event]) -> list[Event]:
    newest = max(e.ts for e in events)
    return [e for e in events if e.ts >= newest - SPEC.horizon]


@settings(max_examples=150, deadline=None)
@given(streams(), st.randoms(use_true_random=False))
def test_any_order_gives_the_same_state(events: list[Event], rnd: Any) -> None:
    events = in_horizon(events)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    a, _ = run(events)
    b, _ = run(shuffled + events[:3])  # redeliveries change nothing either
    assert canon(a) == canon(b)


@settings(max_examples=150, deadline=None)
@given(streams(), st.lists(st.integers(1, 39), max_size=6))
def test_any_batch_split_gives_the_same_replies_and_record(
    events: list[Event], cuts: list[int]
) -> None:
    whole, expected = run(events)
    state, got = None, []
    bounds = [0, *sorted(set(c for c in cuts if c < len(events))), len(events)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        reloaded = unpack(state.pack(SPEC)) if state is not None else None
        state, replies = run(events[lo:hi], reloaded)
        got += replies
    assert got == expected
    assert state is not None and state.pack(SPEC) == whole.pack(SPEC)


@settings(max_examples=60, deadline=None)
@given(streams(), streams())
def test_a_fold_is_a_merge_of_both_histories(mine: list[Event], theirs: list[Event]) -> None:
    theirs = [replace(e, event_id="x" + e.event_id, ts=e.ts + 1) for e in theirs]
    both = in_horizon(mine + theirs)
    if len(both) != len(mine) + len(theirs):
        return  # a late event would be refused by one side and not the other
    a, _ = run(mine)
    b, _ = run(theirs)
    a.fold(SPEC, b)
    together, _ = run(both)
    ca, ct = canon(a), canon(together)
    for key in ("counts", "blocked", "views", "pids", "areas", "seen", "unanswered", "profile"):
        assert ca[key] == ct[key], key
    assert a.personal() == together.personal()


# -- the personalisation fields of follow-up steps (engine/cadence) ---------------------------
@settings(max_examples=150, deadline=None)
@given(streams())
def test_the_fields_are_what_the_features_read(events: list[Event]) -> None:
    """``personal()`` of the state (a due lead's, read from the store) is what the reply to
    its last event gives (``personal_of``), after every event."""
    s = LeadFeatures()
    for ev in events:
        status, react = s.apply(SPEC, ev)
        if status == 1:
            assert s.personal() == personal_of(*s.features(SPEC, react))


def _ev(i: int, kind: str, **kw: Any) -> Event:
    return Event(f"e{i}", "L", kind, T0 + i * 60, tenant="t", **kw)


def test_the_address_belongs_to_its_property() -> None:
    """Shown while the lead's last property is the one its event named: back on that
    property, it is back (it is that home's address)."""
    s, _ = run([_ev(1, "property_view", property_id="P1", props={"address": "1 Main St"})])
    assert (s.personal().property_id, s.personal().address) == ("P1", "1 Main St")
    run([_ev(2, "property_view", property_id="P2")], s)
    assert (s.personal().property_id, s.personal().address) == ("P2", "")
    run([_ev(3, "search"), _ev(4, "property_view", property_id="P1")], s)
    assert (s.personal().property_id, s.personal().address) == ("P1", "1 Main St")
    run([_ev(5, "inquiry", props={"address": "9 Elm St"})], s)  # naming no property: the
    assert (s.personal().property_id, s.personal().address) == ("P1", "9 Elm St")  # lead's
    run([_ev(6, "property_view", property_id="P1")], s)  # until an event names one after it
    assert (s.personal().property_id, s.personal().address) == ("P1", "")


def test_the_area_is_the_one_the_newest_event_naming_one_named() -> None:
    """Any event type (a valuation's area is the seller's own), not only the browsing
    that ``last_area`` follows; the newest by event time, whatever the arrival order."""
    s, _ = run([_ev(1, "search", area="north"), _ev(2, "valuation_view", area="east"),
                _ev(3, "page_view")])  # fmt: skip
    assert s.personal().area == "east" and s.features(SPEC)[1]["last_area"] == "north"
    run([_ev(0, "lead_created", area="west")], s)  # older, arriving late: not newer
    assert s.personal().area == "east"


def test_the_fields_resolve_to_the_newest_event_whatever_the_arrival_order() -> None:
    s, _ = run([_ev(2, "property_view", property_id="P2", area="z2", agent_id="a2",
                    timeline="0-3m"),
                _ev(1, "property_view", property_id="P1", area="z1", agent_id="a1",
                    timeline="3-6m")])  # fmt: skip
    assert s.personal() == Personal("P2", "", "z2", "0-3m", "unknown", "unknown", "a2")


def test_a_view_naming_no_property_leaves_the_step_none() -> None:
    """As the lead's features say (``last_property``): its newest view named no home."""
    s, _ = run([_ev(1, "property_view", property_id="P1"), _ev(2, "property_view")])
    assert s.personal().property_id == ""


def test_a_record_without_the_new_fields_packs_as_before() -> None:
    """The fields were appended to the record's texts and clocks: a lead with no address
    and no area packs no more than before they existed."""
    s, _ = run([_ev(1, "page_view"), _ev(2, "property_view", property_id="P1")])
    texts = msgpack.unpackb(s.pack(SPEC), raw=False)[3]
    assert texts == ["", "", "", "P1"] and len(TEXT_FIELDS) == 7


def test_the_record_is_versioned_and_compact() -> None:
    s, _ = run([Event(f"e{i}", "L", "property_view", T0 + i * 600, tenant="t",
                      property_id=f"P{i % 4}", area="z1", source="portal")
                for i in range(10)])  # fmt: skip
    blob = s.pack(SPEC)
    assert blob[1] == SCHEMA and len(blob) < 400
    assert unpack(blob).pack(SPEC) == blob


def test_schema_zero_migrates() -> None:
    h = {"n": "3", "saves": "2", "last_ts": str(T0 + 60), "source": "portal", "source_ts": str(T0),
         "blocked": "sms,email", "unanswered": "1", "pp1": "ads", "pp1_ts": str(T0)}  # fmt: skip
    s = from_legacy(SPEC, h, [("a", T0), ("b", T0 + 60)], [("a|P1", T0)], [("z1", T0)])
    f, ctx = s.features(SPEC)
    assert f["saves"] == 2 and f["source"] == "portal" and f["props.origin"] == "ads"
    assert f["views_30d"] == 1 and f["distinct_areas_30d"] == 1
    assert f["agent_contacts_unanswered"] == 1 and ctx["blocked"] == ("email", "sms")
    assert s.apply(SPEC, Event("a", "L", "page_view", T0, tenant="t"))[0] == 0  # seen


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=64),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers(-(2**62), 2**62)
            | st.floats()
            | st.text(max_size=4)
            | st.binary(max_size=8),
            lambda kids: (
                st.lists(kids, max_size=12) | st.dictionaries(st.text(max_size=3), kids, max_size=3)
            ),
            max_leaves=40,
        ).map(
            lambda v: msgpack.packb([SCHEMA, *v] if isinstance(v, list) else v, use_bin_type=True)
        ),
    )
)
def test_a_damaged_record_is_refused_never_a_crash(blob: bytes) -> None:
    try:
        state = unpack(blob)
    except ValueError:
        return
    state.features(SPEC)  # whatever it read is usable
    assert unpack(state.pack(SPEC)).pack(SPEC) == state.pack(SPEC)
