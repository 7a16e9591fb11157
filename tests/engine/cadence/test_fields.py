"""A step's personalisation fields, on a real Redis: read from the lead's features when the
step is emitted (never kept in the plan state), as of the lead's last event before it,
whatever the batch split; the newest by event time. A batch of events that cannot move a
plan leaves its stored state as it was (not rewritten), its TTL renewed."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from engine.cadence.decide import CadenceState, decode
from engine.cadence.runner import CadenceEffects
from engine.events import Event
from engine.keys import lead_key
from engine.streams import StreamNames
from tests.engine.cadence.test_runner import T0, TICK, Clock, engine, entries, ev, steps

__all__ = ["engine"]  # the fixture, used by name

MIN = 60.0


def _run(proc: Any, batches: list[list[dict[str, Any]]]) -> None:
    at = 1
    for batch in batches:
        proc.process_retrying(entries(batch, at))
        at += len(batch)


def _fields(client: Any, names: StreamNames, lead: str) -> list[tuple[str, str, str]]:
    """(channel, property, address) of the lead's steps, in order."""
    return [(s["channel"], s["fields"]["property_id"], s["fields"]["address"])
            for s in steps(client, names) if s["lead_id"] == lead]  # fmt: skip


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize(
    ("views", "expected"), [(["p2", "p9"], ("p9", "1 Main St")), (["p2"], ("p2", ""))]
)
def test_the_address_goes_with_its_property_whatever_the_batch_split(
    client: Any, engine: tuple[Any, Clock, StreamNames], split: bool, views: list[str],
    expected: tuple[str, str],
) -> None:  # fmt: skip
    """Back on the home whose address it was, a step has that address again (before, a
    plan state kept the fields merged event by event, and the address stayed lost)."""
    proc, clock, names = engine
    first = ev("a1", "L", "showing_request", T0, property_id="p9", props={"address": "1 Main St"})
    later = [ev(f"v{i}", "L", "property_view", T0 + (i + 1) * MIN, property_id=p)
             for i, p in enumerate(views)]  # fmt: skip
    _run(proc, [[first], *([e] for e in later)] if split else [[first], later])
    clock.now = T0 + 20 * MIN  # the voicemail and the SMS, due at 10 and 15 minutes: a tick
    proc.process_retrying(TICK)
    out = _fields(client, names, "L")
    assert out[:2] == [("email", "p9", "1 Main St"), ("call", "p9", "1 Main St")]
    assert out[2:] == [("voicemail", *expected), ("sms", *expected)]


@pytest.mark.parametrize("split", [False, True])
def test_a_step_due_before_an_event_has_the_fields_of_the_event_before_it(
    client: Any, engine: tuple[Any, Clock, StreamNames], split: bool
) -> None:
    """The voicemail due at 10 minutes fires before the view at 12 minutes (the clock never
    got there): with the property of the view at 5 minutes, never the 12-minute one's,
    whether that view was in the same batch (its reply) or the one before (the lead's
    record before the batch)."""
    proc, _, names = engine
    views = [ev("v1", "L", "property_view", T0 + 5 * MIN, property_id="p3"),
             ev("v2", "L", "property_view", T0 + 12 * MIN, property_id="p2")]  # fmt: skip
    first = [ev("a1", "L", "inquiry", T0, property_id="p1")]
    _run(proc, [first, views[:1], views[1:]] if split else [first, views])
    out = _fields(client, names, "L")
    assert [(c, p) for c, p, _ in out] == [
        ("email", "p1"), ("call", "p1"), ("voicemail", "p3")]  # fmt: skip


def test_out_of_order_events_resolve_to_the_newest_by_event_time(
    client: Any, engine: tuple[Any, Clock, StreamNames]
) -> None:
    """A view older than one already processed does not name the step's property (before,
    the last to arrive did): as every feature, the newest event time wins."""
    proc, clock, names = engine
    _run(proc, [[ev("a1", "L", "inquiry", T0, property_id="p1")],
                [ev("v1", "L", "property_view", T0 + 5 * MIN, property_id="p2"),
                 ev("v2", "L", "property_view", T0 + 3 * MIN, property_id="p3")]])  # fmt: skip
    clock.now = T0 + 20 * MIN
    proc.process_retrying(TICK)
    assert [p for _, p, _ in _fields(client, names, "L")[2:]] == ["p2", "p2"]


def test_the_area_is_the_newest_event_naming_one(
    client: Any, engine: tuple[Any, Clock, StreamNames]
) -> None:
    """A valuation request names the seller's own area: its steps keep it after an event
    naming none (before, such an event brought back the last area browsed)."""
    proc, clock, names = engine
    _run(proc, [[ev("s1", "S", "search", T0 - MIN, area="north"),
                 ev("a1", "S", "valuation_request", T0, area="east")],
                [ev("p1", "S", "page_view", T0 + MIN)]])  # fmt: skip
    clock.now = T0 + 20 * MIN
    proc.process_retrying(TICK)
    out = [(s["plan"], s["fields"]["area"]) for s in steps(client, names)]
    assert out[0] == ("long_term_week", "north")  # the search's plan: its welcome
    assert out[1:] == [("cadence_14d", "east")] * 4


def test_events_that_cannot_move_a_plan_leave_its_state_and_renew_its_ttl(
    client: Any, engine: tuple[Any, Clock, StreamNames], prefix: str
) -> None:
    proc, _, _ = engine
    _run(proc, [[ev("a1", "L", "inquiry", T0, property_id="p1")]])
    at = lead_key(prefix, "t", "L", "c")
    stored = client.get(at)
    client.expire(at, 30)
    _run(proc, [[ev("v1", "L", "property_view", T0 + MIN, property_id="p2",
                    props={"address": "2 Oak Ave"}),
                 ev("v2", "L", "page_view", T0 + 2 * MIN)]])  # fmt: skip
    assert client.get(at) == stored  # not rewritten: nothing of it changed
    assert client.ttl(at) > 30  # it expires with the lead (features.idle_expire_d)


def test_a_state_stored_with_its_fields_keeps_its_plan_and_takes_the_leads(
    client: Any, engine: tuple[Any, Clock, StreamNames], prefix: str
) -> None:
    """A plan state written while states held the fields (index 11): its plan goes on,
    and its steps carry the fields of the lead's record, not the stored ones."""
    proc, clock, names = engine
    _run(proc, [[ev("a1", "L", "inquiry", T0, property_id="p7", area="west")]])
    at = lead_key(prefix, "t", "L", "c")
    items = msgpack.unpackb(client.get(at), raw=False)
    items[11] = ["p1", "1 Main St", "east", "0-3m", "buyer", "web", "ag1"]
    client.set(at, msgpack.packb(items, use_bin_type=True))
    proc._cadence.forget()  # (as a restart on the new version: nothing held)
    state = decode(client.get(at))
    assert state.status == "active" and state.step == 2
    clock.now = T0 + 20 * MIN
    proc.process_retrying(TICK)
    out = steps(client, names)[2:]
    assert [s["channel"] for s in out] == ["voicemail", "sms"]
    assert {(s["fields"]["property_id"], s["fields"]["area"]) for s in out} == {("p7", "west")}


def test_fields_before_the_batch_are_kept_only_where_a_step_may_fall_due_first(
    engine: tuple[Any, Clock, StreamNames],
) -> None:
    """A lead's fields before the batch are read only for a step due before its first event
    in the batch: not kept for a lead whose state this worker committed and which is due
    at none or not before the batch's newest event; kept for one due before it, one whose
    state was only read (not committed here), and for every lead of a batch with an
    identity entry (its event lands on a lead, at a time, known only once applied)."""
    proc, _, _ = engine
    cad = proc._cadence
    states = {"soon": T0 + 5 * MIN, "later": T0 + 60 * MIN, "none": 0.0, "read": T0 + 60 * MIN}
    for lead, due in states.items():
        cad._hold(("t", lead), lead.encode(), CadenceState(plan="p", status="active", due=due))
    cad.committed(CadenceEffects(writes={("t", lead): b"" for lead in states if lead != "read"}))
    batch = [Event(f"e{i}", lead, "property_view", T0 + 10 * MIN, "t")
             for i, lead in enumerate([*states, "new"])]  # fmt: skip
    wanted = cad.fields_wanted(batch)
    assert {lead for lead in [*states, "new"] if wanted(("t", lead))} == {"soon", "read", "new"}
    identify = Event("i", "later", "identify", T0 + 10 * MIN, "t")
    assert cad.fields_wanted([*batch, identify])(("t", "later"))
