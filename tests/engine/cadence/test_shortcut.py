"""The runner's short way for events that cannot move a plan (``Cadences.on_event``) and
the hot-trigger case of :func:`decide.passive` give exactly what deciding every event in
full gives: the same states, logged transitions and fired steps, over generated batches
(several leads, every event type the decisions name, triggers, closed channels,
reactivations, the holdout, marked conversations). A step due before an event carries the
lead's personalisation fields as of its previous event (the reply to it), never the
event's own."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cadence import decide
from engine.cadence.decide import CadenceState, Transition, fire, on_event
from engine.cadence.runner import CadenceEffects, Cadences
from engine.events import Event
from engine.scoring import Score
from engine.settings import load_settings
from features.state import Personal, personal_of
from features.store import FeatureReply

T0 = 1_748_872_800.0  # 2025-06-02 10:00 New York
TYPES = sorted(
    {*decide.MOVERS, "agent_contact", "property_view", "page_view", "search", "call_missed",
     "lead_created", "assigned", "unsubscribe"}
)  # fmt: skip
TRIGGERS = ("jump", "hand_raise:inquiry", "entered:P1", "entered:P2", "reactivation", "silence")
LEADS = ("L1", "L2", "~v1")  # (a visitor too)
WORDS = st.sampled_from(["", "a", "b"])


@st.composite
def scored(draw: st.DrawFn, ts: float) -> tuple[Event, Score, tuple[str, ...], FeatureReply]:
    kind = draw(st.sampled_from(TYPES))
    props: dict[str, Any] = {"address": draw(WORDS)}
    if kind == "agent_contact":
        props["conversation"] = draw(st.booleans())
    if kind == "reply":
        props["text"] = draw(st.sampled_from(["hi", "STOP"]))
    event = Event(event_id=f"e{ts}", lead_id=draw(st.sampled_from(LEADS)), type=kind, ts=ts,
                  tenant="t", property_id=draw(WORDS), area=draw(WORDS), props=props)  # fmt: skip
    score = Score(50, 0.5, draw(st.sampled_from(["P1", "P3", "P5"])),
                  draw(st.sampled_from(["hot", "warm", "long-term"])), (), 0.0, 0.5,
                  None)  # fmt: skip
    source = draw(st.sampled_from(["website", "database", ""]))
    features: dict[str, float | str] = {"timeline": draw(WORDS), "side": draw(WORDS),
                                        "source": source}  # fmt: skip
    blocked = tuple(sorted(set(draw(st.lists(st.sampled_from(["sms", "email"]), max_size=2)))))
    context = {"blocked": blocked, "reactivated_now": draw(st.booleans()),
               "last_property": draw(WORDS), "last_area": draw(WORDS),
               "named_area": draw(WORDS), "address": draw(WORDS),
               "agent_id": draw(WORDS)}  # fmt: skip
    triggers = tuple(draw(st.lists(st.sampled_from(TRIGGERS), max_size=2)))
    return event, score, triggers, FeatureReply(0, features, context, {}, [])


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[Event, Score, tuple[str, ...], FeatureReply]]:
    out, ts = [], T0
    for _ in range(draw(st.integers(1, 30))):
        ts += draw(st.sampled_from([1.0, 600.0, 3_600.0, 86_400.0, 8 * 86_400.0]))
        out.append(draw(scored(ts)))
    return out


#: Each lead's fields before the batch (``FeatureWrites.before``).
BEFORE = {("t", "L1"): Personal("p0", "0 Old Rd", "west", "0-3m", "buyer", "web", "ag0")}


def _one_by_one(
    cad: Cadences, calls: list[Any], loaded: dict[tuple[str, str], CadenceState]
) -> tuple[Any, ...]:
    """Every event decided in full, in order (what the runner did before its short way);
    a step fired before an event has the fields of the lead's previous event."""
    states = dict(loaded)
    log: list[Transition] = []
    fired = []
    last: dict[tuple[str, str], Personal] = dict(BEFORE)
    for event, score, triggers, reply in calls:
        key = (event.tenant, event.lead_id)
        s = states.get(key, CadenceState())
        hours = cad.hours(event.tenant)
        if s.due and s.due < event.ts:
            s, out = fire(s, math.nextafter(event.ts, 0.0), cad._book, hours, log)
            p = last.get(key, Personal())
            fired += [(key, e, p) for e in out]
        last[key] = personal_of(reply.features, reply.context)
        if not event.lead_id.startswith("~"):
            held = s.holdout or cad._holdout(key)
            signal = cad._signal(event, score, triggers, reply, held)
            s = on_event(s, signal, cad._book, hours, log)
        states[key] = s
    return states, log, fired


#: L1 in a plan, stored before the lead fell in the send-time holdout (``holdout`` false)
_ENTERED = Event(event_id="e0", lead_id="L1", type="lead_created", ts=T0, tenant="t")


@settings(max_examples=300, deadline=None)
@given(batches(), st.sampled_from([0.0, 0.5, 1.0]), st.booleans())
def test_the_short_way_gives_what_deciding_every_event_gives(
    calls: Any, share: float, stored: bool
) -> None:
    _same_either_way(calls, share, stored)


def _same_either_way(calls: Any, share: float, stored: bool) -> None:
    over = {"cadence": {"enabled": True, "send_time_holdout": share}}
    cad = Cadences(load_settings(overrides=over, environ={}), None)
    loaded = {}
    if stored:
        reply = FeatureReply(0, {}, {}, {}, [])
        score = Score(50, 0.5, "P3", "warm", (), 0.0, 0.5, None)
        sig = cad._signal(_ENTERED, score, (), reply, holdout=False)
        entered = on_event(CadenceState(), sig, cad._book, cad.hours("t"))
        loaded[("t", "L1")] = fire(entered, T0, cad._book, cad.hours("t"))[0]  # next: later
    fx = CadenceEffects(loaded=dict(loaded), before=BEFORE)
    fx.scored += [(0, event, score, triggers, reply) for event, score, triggers, reply in calls]
    cad.events(fx)  # (the batch handed over at once, as the processor does)
    states, log, fired = _one_by_one(cad, calls, loaded)
    assert {k: v[2] for k, v in fx.states.items()} == {k: states[k] for k in fx.states}
    assert [t for _, t in fx.log] == log
    assert fx.fired == fired


def test_a_lead_stored_before_the_holdout_takes_it_on_its_first_view() -> None:
    """A view of a lead in a plan stored with ``holdout`` false, now in the holdout share:
    not the short way (the full decision records the holdout), as one by one."""
    view = Event(event_id="v", lead_id="L1", type="page_view", ts=T0 + 1, tenant="t",
                 props={"address": ""})  # fmt: skip
    reply = FeatureReply(0, {"timeline": "", "side": "", "source": ""},
                         {"blocked": (), "reactivated_now": False, "last_property": "",
                          "last_area": "", "agent_id": ""}, {}, [])  # fmt: skip
    score = Score(50, 0.5, "P3", "warm", (), 0.0, 0.5, None)
    _same_either_way([(view, score, (), reply)], 1.0, True)
