"""The engine's fast path for events that cannot move a plan (``decide.passive``).

For every event it says is passive, the full decision (:func:`decide.on_event`) must give
exactly :func:`decide.with_personal` of it and log nothing; the property test checks that
over generated histories (every event type the decisions name, closed channels, triggers,
reactivations, the holdout, marked conversations, changing personalisation fields).
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cadence.decide import (
    CONVERSATIONS,
    ENDINGS,
    ENGAGEMENTS,
    HAND_RAISES,
    CadenceState,
    Personal,
    Signal,
    Transition,
    fields_of,
    fire,
    merge_fields,
    on_event,
    passive,
    with_personal,
)  # fmt: skip
from engine.cadence.plans import Book, Hours, compile_book
from engine.settings import load_settings

BOOK: Book = compile_book(load_settings(environ={}).cadence)
NY = Hours("America/New_York", 21, 8)
T0 = 1_748_872_800.0  # 2025-06-02 10:00 New York
TYPES = sorted(
    {*ENDINGS, *CONVERSATIONS, *ENGAGEMENTS, *HAND_RAISES, "agent_contact", "property_view",
     "page_view", "search", "call_missed", "lead_created", "assigned", "unsubscribe"}
)  # fmt: skip
TRIGGERS = ("jump", "hand_raise", "entered:P1", "entered:P2", "reactivation", "silence")


def _personal(draw: st.DrawFn) -> Personal:
    pick = st.sampled_from(["", "a", "b"])
    return Personal(*(draw(pick) for _ in range(7)))


@st.composite
def signals(draw: st.DrawFn, ts: float) -> Signal:
    kind = draw(st.sampled_from(TYPES))
    return Signal(
        type=kind, ts=ts, tier=draw(st.sampled_from(["hot", "warm", "long-term"])),
        bucket=draw(st.sampled_from(["P1", "P3", "P5"])),
        source=draw(st.sampled_from(["website", "database"])), side="buyer",
        triggers=tuple(draw(st.lists(st.sampled_from(TRIGGERS), max_size=2))),
        blocked=tuple(draw(st.lists(st.sampled_from(["sms", "email", "call"]), max_size=2))),
        reactivated=draw(st.booleans()), holdout=draw(st.booleans()),
        conversation_marked=draw(st.booleans()),
        stop=kind == "reply" and draw(st.booleans()), visitor=False, personal=_personal(draw),
    )  # fmt: skip


@st.composite
def histories(draw: st.DrawFn) -> tuple[CadenceState, Signal]:
    """A state reached by a generated history (events and clock readings), and the next event."""
    s, ts = CadenceState(), T0
    for _ in range(draw(st.integers(0, 12))):
        ts += draw(st.floats(1.0, 4 * 86_400.0))
        if draw(st.booleans()):
            s, _ = fire(s, ts, BOOK, NY)
        else:
            s = on_event(s, draw(signals(ts)), BOOK, NY)
    if draw(st.booleans()):  # states the decisions never make, but a stored value could hold
        s = replace(s, blocked=tuple(draw(st.lists(st.sampled_from(["sms", "email"]), max_size=3))))
    return s, draw(signals(ts + draw(st.floats(1.0, 86_400.0))))


def _passive(s: CadenceState, g: Signal) -> bool:
    return passive(s, g.type, g.triggers, g.blocked, g.reactivated, g.holdout,
                   g.conversation_marked)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(histories())
def test_a_passive_event_only_merges_the_personalisation_fields(
    case: tuple[CadenceState, Signal],
) -> None:
    s, g = case
    if not _passive(s, g):
        return
    log: list[Transition] = []
    assert on_event(s, g, BOOK, NY, log) == with_personal(s, fields_of(g.personal))
    assert log == []


def test_views_of_a_lead_in_a_plan_are_passive_and_keep_the_latest_property() -> None:
    s = on_event(CadenceState(), _sig("lead_created", Personal(property_id="p1")), BOOK, NY)
    assert s.status == "active"
    view = _sig("property_view", Personal(property_id="p2", address="1 Main St"))
    assert _passive(s, view)
    after = with_personal(s, fields_of(view.personal))
    assert after == on_event(s, view, BOOK, NY)
    assert (after.personal.property_id, after.personal.address) == ("p2", "1 Main St")
    assert with_personal(after, fields_of(view.personal)) is after  # nothing new: the same state


def test_what_can_move_a_plan_is_never_passive() -> None:
    s = on_event(CadenceState(), _sig("lead_created"), BOOK, NY)
    assert not _passive(CadenceState(), _sig("property_view"))  # never entered: rules
    for kind in sorted(ENDINGS | CONVERSATIONS | ENGAGEMENTS | HAND_RAISES):
        assert not _passive(s, _sig(kind)), kind
    assert not _passive(s, replace(_sig("agent_contact"), conversation_marked=True))
    assert _passive(s, _sig("agent_contact"))  # an attempt, not a conversation
    assert not _passive(s, replace(_sig("page_view"), triggers=("jump:20",)))
    assert _passive(s, replace(_sig("page_view"), triggers=("silence",)))
    assert not _passive(s, replace(_sig("page_view"), blocked=("sms",)))
    assert not _passive(s, replace(_sig("page_view"), holdout=True))
    assert _passive(replace(s, holdout=True), replace(_sig("page_view"), holdout=True))
    lost = on_event(s, _sig("lost"), BOOK, NY)
    assert not _passive(lost, replace(_sig("page_view"), reactivated=True))


def _sig(kind: str, personal: Personal | None = None) -> Signal:
    return Signal(
        type=kind, ts=T0, tier="long-term", bucket="P4", source="website", side="buyer",
        triggers=(), blocked=(), reactivated=False, personal=personal or Personal(),
    )  # fmt: skip


@given(st.lists(st.tuples(*(st.sampled_from(["", "a", "b"]) for _ in range(7))), max_size=6))
def test_fields_merge_as_the_personalisation_does(news: list[tuple[str, ...]]) -> None:
    """Merging plain tuples (the engine's pending fields) gives what merging the states'
    :class:`Personal` values one event at a time gives."""
    s, fields = CadenceState(plan="p", status="active"), fields_of(Personal())
    for new in news:
        g = replace(_sig("page_view"), personal=Personal(*new))
        s = on_event(s, g, BOOK, NY)
        fields = merge_fields(fields, fields_of(Personal(*new)))
    assert fields_of(s.personal) == fields
