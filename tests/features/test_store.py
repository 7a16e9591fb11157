"""The feature store against a real server: windows, idempotency, bounds, folds.

``apply`` computes in the process; ``commit`` writes the batch's records the way the
engine's transaction does (features/store.py ``queue_writes``).
"""

from __future__ import annotations

from typing import Any

import pytest

from engine import identity
from engine.events import Event
from features.state import LeadFeatures
from features.store import (
    APPLIED,
    DUPLICATE,
    LATE,
    FeatureReply,
    FeatureStore,
    lead_key,
    queue_after,
    queue_writes,
)  # fmt: skip

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
H = 3600.0


def ev(eid: str, etype: str, ts: float, lead: str = "L1", **kw: Any) -> Event:
    return Event(event_id=eid, lead_id=lead, type=etype, ts=ts, tenant="acme", **kw)


class Store(FeatureStore):
    """The store as a test drives it: every ``apply`` is one committed batch."""

    def apply_committed(self, events: list[Event]) -> list[FeatureReply]:
        replies, writes = self.apply(events)
        pipe = self._r.pipeline(transaction=True)
        queue_writes(pipe, self._prefix, writes, self.spec.idle_s)
        queue_after(pipe, self._prefix, writes)
        pipe.execute()
        assert not writes.outbox  # one partition: every fold is local
        return replies

    def merge(self, tenant: str, keep: str, other: str) -> None:
        """What the engine does with the entry ``leadpulse merge`` queues."""
        control = identity.merge_control(tenant, keep, other, T0)
        self.apply_committed([identity.wrap(control)])


@pytest.fixture
def store(client: Any, make_settings: Any, prefix: str) -> Store:
    return Store(client, make_settings().features, prefix)


def last(store: Store, *events: Event) -> dict[str, Any]:
    replies = store.apply_committed(list(events))
    return replies[-1].features


def test_repeat_views_within_48h_counts_the_exact_boundary(store: Store) -> None:
    f = last(
        store,
        ev("a", "property_view", T0, property_id="P1"),
        ev("b", "property_view", T0 + 48 * H, property_id="P1"),
    )
    assert f["repeat_views_48h"] == 2  # the lower edge of the window is included


def test_repeat_views_one_second_past_the_window_do_not_count(store: Store) -> None:
    f = last(
        store,
        ev("a", "property_view", T0, property_id="P1"),
        ev("b", "property_view", T0 + 48 * H + 1, property_id="P1"),
        ev("c", "property_view", T0 + 48 * H + 2, property_id="P2"),
    )
    assert f["repeat_views_48h"] == 1
    assert f["views_7d"] == 3
    assert f["distinct_properties_30d"] == 2


def test_repeat_views_take_the_maximum_over_properties(store: Store) -> None:
    events = [ev(f"p1-{i}", "property_view", T0 + i * H, property_id="P1") for i in range(3)]
    events += [ev(f"p2-{i}", "property_view", T0 + i * H, property_id="P2") for i in range(2)]
    replies = store.apply_committed(events)
    assert replies[-1].features["repeat_views_48h"] == 3
    assert replies[-1].context["repeat_property"] == "P1"


def test_out_of_order_events_give_the_same_features_as_in_order(
    client: Any, make_settings: Any, prefix: str
) -> None:
    settings = make_settings()
    events = [
        ev("1", "property_view", T0, property_id="P1", area="z1"),
        ev("2", "property_view", T0 + 5 * H, property_id="P1", area="z1"),
        ev("3", "property_save", T0 + 6 * H, property_id="P1", area="z1"),
        ev("4", "property_view", T0 + 30 * H, property_id="P2", area="z2"),
        ev("5", "reply", T0 + 31 * H, channel="sms"),
        ev("6", "lead_created", T0 - H, source="giveaway", timeline="0-3m"),
    ]
    in_order = Store(client, settings.features, prefix + "a").apply_committed(events)[-1]
    shuffled = [events[i] for i in (3, 0, 5, 2, 4, 1)]
    out_of_order = Store(client, settings.features, prefix + "b").apply_committed(shuffled)[-1]
    for k in out_of_order.features:
        if k != "days_silent_before":  # the gap before the newest event depends on arrival
            assert out_of_order.features[k] == in_order.features[k], k
    for p in (prefix + "a", prefix + "b"):
        for key in client.scan_iter(match=f"{{{p}}}:*"):
            client.delete(key)


def test_a_duplicated_event_id_changes_nothing(store: Store, client: Any, prefix: str) -> None:
    store.apply_committed([ev("a", "property_save", T0, property_id="P1")])
    before = store.read("acme", "L1")
    (dup,) = store.apply_committed([ev("a", "property_save", T0, property_id="P1")])
    assert dup.status == DUPLICATE
    assert store.read("acme", "L1") == before
    assert before["saves"] == "1"


def test_an_uncommitted_batch_is_applied_again_from_what_redis_holds(
    client: Any, make_settings: Any, prefix: str
) -> None:
    """A batch that never committed (a crash) leaves nothing: replayed, it gives the same."""
    settings = make_settings().features
    batch = [ev("a", "property_view", T0, property_id="P1"),
             ev("b", "property_view", T0 + H, property_id="P1")]  # fmt: skip
    first, _ = Store(client, settings, prefix).apply(batch)  # computed, never committed
    assert client.exists(lead_key(prefix, "acme", "L1", "f")) == 0
    again = Store(client, settings, prefix).apply_committed(batch)  # a restarted worker
    assert [r.status for r in again] == [APPLIED, APPLIED]
    assert [r.features for r in again] == [r.features for r in first]


def test_a_dropped_cache_reloads_exactly_what_was_committed(store: Store) -> None:
    store.apply_committed([ev(f"v{i}", "property_view", T0 + i * H, property_id=f"P{i % 3}",
                              area=f"z{i % 2}", agent_id="ag") for i in range(9)])  # fmt: skip
    (cached,) = store.apply_committed([ev("s", "property_save", T0 + 10 * H)])
    store.clear()
    (reloaded,) = Store.apply_committed(store, [ev("s2", "property_save", T0 + 10 * H)])
    assert reloaded.features["saves"] == cached.features["saves"] + 1
    for k in cached.features:
        if k != "saves":
            assert reloaded.features[k] == cached.features[k], k


def test_old_window_members_expire_by_event_time(store: Store) -> None:
    store.apply_committed(
        [ev(f"v{i}", "property_view", T0 + i * H, property_id=f"P{i}") for i in range(3)]
    )
    (late,) = store.apply_committed([ev("z", "property_view", T0 + 31 * 24 * H, property_id="PZ")])
    assert late.features["views_30d"] == 1
    assert late.features["views_7d"] == 1
    assert store.record("acme", "L1").views == [(T0 + 31 * 24 * H, "PZ")]  # trimmed


def test_events_older_than_the_dedup_horizon_are_late(store: Store) -> None:
    store.apply_committed([ev("new", "page_view", T0 + 40 * 24 * H)])
    (old,) = store.apply_committed([ev("old", "property_save", T0)])
    assert old.status == LATE


def test_window_sets_are_capped(client: Any, make_settings: Any, prefix: str) -> None:
    settings = make_settings(features={"max_window_members": 10})
    store = Store(client, settings.features, prefix)
    store.apply_committed(
        [ev(f"v{i}", "property_view", T0 + i, property_id=f"P{i}") for i in range(50)]
    )
    state = store.record("acme", "L1")
    assert len(state.views) == 10 and len(state.pids) == 10
    assert client.ttl(lead_key(prefix, "acme", "L1", "f")) > 0  # idle leads expire


def test_dedup_remembers_a_bounded_number_of_event_ids(
    client: Any, make_settings: Any, prefix: str
) -> None:
    store = Store(client, make_settings(features={"dedup_ids": 16}).features, prefix)
    store.apply_committed([ev(f"e{i}", "page_view", T0 + i) for i in range(40)])
    assert len(store.record("acme", "L1").seen) == 16
    (recent,) = store.apply_committed([ev("e39", "page_view", T0 + 39)])
    assert recent.status == DUPLICATE


def test_reactivation_after_thirty_silent_days(store: Store) -> None:
    (a, b, c) = store.apply_committed(
        [
            ev("a", "property_view", T0, property_id="P1"),
            ev("b", "property_view", T0 + 31 * 24 * H, property_id="P1"),
            ev("c", "property_view", T0 + 31 * 24 * H + 60, property_id="P1"),
        ]
    )
    assert not a.context["reactivated_now"]
    assert b.context["reactivated_now"] and b.features["reactivated"] == 1
    assert b.features["days_silent_before"] == pytest.approx(31)
    assert not c.context["reactivated_now"] and c.features["reactivated"] == 1


def test_profile_newest_event_time_wins(store: Store) -> None:
    store.apply_committed([ev("a", "profile_update", T0 + H, timeline="0-3m")])
    (r,) = store.apply_committed([ev("b", "lead_created", T0, timeline="18m+", source="referral")])
    assert r.features["timeline"] == "0-3m"
    assert r.features["source"] == "referral"


def test_consent_blocks_channels(store: Store) -> None:
    replies = store.apply_committed(
        [
            ev("a", "opt_out", T0, channel="sms"),
            ev("b", "unsubscribe", T0 + 1),
            ev("c", "reply", T0 + 2, channel="call"),
        ]
    )
    assert replies[-1].context["blocked"] == ("email", "sms")


def test_stop_reply_blocks_texting(store: Store) -> None:
    (r,) = store.apply_committed([ev("a", "reply", T0, channel="sms", props={"text": " stop "})])
    assert r.context["blocked"] == ("sms",)
    assert r.features["replies"] == 0


def test_unanswered_agent_contacts_reset_on_reply(store: Store) -> None:
    replies = store.apply_committed(
        [
            ev("a", "agent_contact", T0, agent_id="ag1"),
            ev("b", "call_missed", T0 + 60),
            ev("c", "reply", T0 + 120, channel="sms"),
            ev("d", "agent_contact", T0 + 180, agent_id="ag1"),
        ]
    )
    assert replies[1].features["agent_contacts_unanswered"] == 2
    assert replies[3].features["agent_contacts_unanswered"] == 1
    assert replies[3].context["agent_id"] == "ag1"


def test_leads_are_isolated_by_tenant(client: Any, make_settings: Any, prefix: str) -> None:
    store = Store(client, make_settings().features, prefix)
    store.apply_committed([Event("a", "L1", "property_save", T0, tenant="one")])
    (other,) = store.apply_committed(
        [Event("b", "L1", "property_view", T0, tenant="two", property_id="P")]
    )
    assert other.features["saves"] == 0


def test_identify_folds_anonymous_history_into_the_lead(
    store: Store, client: Any, prefix: str
) -> None:
    """A view before sign-up and one after are two views of one property within 48 h."""
    anon = Event("v1", "~vis9", "property_view", T0, tenant="acme", visitor_id="vis9",
                 property_id="P7", area="z1")  # fmt: skip
    store.apply_committed(
        [anon, ev("v0", "property_save", T0 - 10, lead="~vis9", property_id="P7")]
    )
    ident = Event("i1", "L9", "identify", T0 + 3600, tenant="acme", visitor_id="vis9")
    after = ev("v2", "property_view", T0 + 7200, lead="L9", property_id="P7", area="z1")
    replies = store.apply_committed([ident, after])
    assert replies[-1].features["repeat_views_48h"] == 2
    assert replies[-1].features["saves"] == 1
    assert client.exists(lead_key(prefix, "acme", "~vis9", "f")) == 0
    assert client.hget(f"{{{prefix}}}:alias:acme", "~vis9") == b"L9"
    # idempotent: a replayed identify folds nothing twice
    store.apply_committed(
        [Event("i2", "L9", "identify", T0 + 7300, tenant="acme", visitor_id="vis9")]
    )
    assert store.read("acme", "L9")["saves"] == "1"


def test_merge_keeps_one_lead_and_leaves_a_pointer(store: Store, client: Any, prefix: str) -> None:
    store.apply_committed(
        [
            ev("a", "property_save", T0, lead="A1"),
            ev("b", "reply", T0 + 5, lead="B1", channel="sms"),
        ]
    )
    store.apply_committed([ev("c", "opt_out", T0 + 6, lead="B1", channel="email")])
    store.merge("acme", keep="A1", other="B1")
    kept = store.read("acme", "A1")
    assert kept["saves"] == "1" and kept["replies"] == "1" and kept["blocked"] == "email"
    assert client.hget(f"{{{prefix}}}:alias:acme", "B1") == b"A1"
    store.merge("acme", keep="A1", other="B1")  # a second merge folds nothing twice
    assert store.read("acme", "A1") == kept
    assert client.exists(lead_key(prefix, "acme", "B1", "f")) == 0


def test_anonymous_events_after_the_fold_go_to_the_lead(store: Store) -> None:
    """The visitor's own events can still be in its partition after the identify."""
    store.apply_committed([ev("s0", "property_save", T0 - 5, lead="~v5", visitor_id="v5")])
    store.apply_committed([Event("i1", "L5", "identify", T0, tenant="acme", visitor_id="v5")])
    late = Event("v1", "~v5", "property_save", T0 + 1, tenant="acme", visitor_id="v5")
    (reply,) = store.apply_committed([late])
    assert reply.routed is not None and reply.routed.lead_id == "L5"
    assert reply.features["saves"] == 2
    assert store.read("acme", "L5")["saves"] == "2"
    assert isinstance(store.record("acme", "~v5"), LeadFeatures)
    assert store.read("acme", "~v5") == {}


def test_merge_by_contact_hash_keeps_the_known_lead(store: Store, client: Any, prefix: str) -> None:
    """The gateway indexes keyed contact hashes; `leadpulse merge --contact-hash` queues a
    merge per other lead, which the engine folds."""
    from engine.gateway.store import contact_index_key
    from engine.merge_cli import merge_by_contact
    from engine.streams import CONTROL, StreamNames

    store.apply_committed(
        [ev("a", "property_save", T0, lead="W1"), ev("b", "property_save", T0, lead="P2")]
    )
    client.sadd(contact_index_key(prefix, "acme", "h" * 32), "W1", "P2", "~anon")
    names = StreamNames(prefix, 1)
    keep, queued = merge_by_contact(client, names, "acme", "h" * 32)
    assert keep == "P2" and [q[0] for q in queued] == ["W1", "~anon"]
    assert store.read("acme", "P2")["saves"] == "1"  # nothing folded yet: the engine does
    entries = client.xrange(names.events(0))
    wrapped = [identity.decode(fields[CONTROL]) for _, fields in entries]
    store.apply_committed([w for w in wrapped if isinstance(w, Event)])
    assert store.read("acme", "P2")["saves"] == "2"
    assert client.hget(f"{{{prefix}}}:alias:acme", "W1") == b"P2"
    _, again = merge_by_contact(client, names, "acme", "h" * 32)
    assert again == []  # both are merged already


def test_every_counter_of_the_spec_counts_its_event_type(store: Store) -> None:
    from features.definitions import COUNTERS

    events = [ev(f"c{i}", etype, T0 + i) for i, etype in enumerate(COUNTERS)]
    f = last(store, *events)
    for etype, counter in COUNTERS.items():
        assert f[counter] >= 1, (etype, counter)


def test_declared_profile_fields_come_from_props_newest_wins(
    client: Any, make_settings: Any, prefix: str
) -> None:
    s = Store(client, make_settings(features={"profile": ["props.origin"]}).features, prefix)
    f = last(
        s,
        ev("a", "lead_created", T0 + 10, props={"origin": "lead_add_form"}),
        ev("b", "page_view", T0 + 20),  # no origin: keeps the stored one
        ev("c", "profile_update", T0 + 5, props={"origin": "older"}),  # older event: ignored
    )
    assert f["props.origin"] == "lead_add_form"
