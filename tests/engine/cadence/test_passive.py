"""The engine's fast path for events that cannot move a plan (``decide.passive``).

For every event it says is passive, the full decision (:func:`decide.on_event`) must give
the state it was given and log nothing; the property test checks that over generated
histories (every event type the decisions name, closed channels, triggers, reactivations,
the holdout, marked conversations).
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
    Signal,
    Transition,
    fire,
    on_event,
    passive,
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
        stop=kind == "reply" and draw(st.booleans()), visitor=False,
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
def test_a_passive_event_changes_nothing(case: tuple[CadenceState, Signal]) -> None:
    s, g = case
    if not _passive(s, g):
        return
    log: list[Transition] = []
    assert on_event(s, g, BOOK, NY, log) == s
    assert log == []


def test_views_of_a_lead_in_a_plan_are_passive_and_leave_its_state_as_it_was() -> None:
    """A view names another home: the plan state holds no personalisation fields (a step
    reads them from the lead's features when it is emitted), so it stays the same."""
    s = on_event(CadenceState(), _sig("lead_created"), BOOK, NY)
    assert s.status == "active"
    view = _sig("property_view")
    assert _passive(s, view)
    assert on_event(s, view, BOOK, NY) is s


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


def _sig(kind: str) -> Signal:
    return Signal(
        type=kind, ts=T0, tier="long-term", bucket="P4", source="website", side="buyer",
        triggers=(), blocked=(), reactivated=False,
    )  # fmt: skip
