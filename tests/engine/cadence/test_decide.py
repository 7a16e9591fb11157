"""Cadence decisions, pure: enter, fire, pause, resume, end, opt-outs and quiet hours.

The property test drives a lead through generated histories (events and clock readings
in any mix) and checks every emission against the history up to its due time: never a
blocked channel, never a quiet channel in quiet hours, never a step twice, never while
paused or after the end.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cadence.decide import (
    CadenceState,
    Emission,
    Signal,
    Transition,
    decode,
    encode,
    fire,
    on_event,
)  # fmt: skip
from engine.cadence.plans import Book, Hours, compile_book
from engine.settings import load_settings

BOOK: Book = compile_book(load_settings(environ={}).cadence)
NY = Hours("America/New_York", 21, 8)
# 2025-06-02 10:00 New York (a Monday)
T0 = datetime(2025, 6, 2, 10, 0, tzinfo=ZoneInfo("America/New_York")).timestamp()
DAY = 86_400.0


def sig(type_: str = "lead_created", ts: float = T0, **kw: object) -> Signal:
    base: dict[str, object] = dict(
        type=type_, ts=ts, tier="long-term", bucket="P4", source="website", side="buyer",
        triggers=(), blocked=(), reactivated=False,
    )  # fmt: skip
    base.update(kw)
    return Signal(**base)  # type: ignore[arg-type]


def test_hand_raise_enters_the_14_day_cadence_and_fires_day_0() -> None:
    s = on_event(CadenceState(), sig("showing_request", tier="hot"), BOOK, NY)
    assert (s.plan, s.status, s.step, s.due) == ("cadence_14d", "active", 0, T0)
    assert "event" in s.why
    s, out = fire(s, T0 + 60, BOOK, NY)
    assert [e.step.channel for e in out] == ["email", "call"]
    s, out = fire(s, T0 + 20 * 60, BOOK, NY)
    assert [e.step.channel for e in out] == ["voicemail", "sms"]
    assert s.due == T0 + DAY  # day 1's call


def test_rules_choose_by_tier_and_source() -> None:
    assert on_event(CadenceState(), sig(tier="hot"), BOOK, NY).plan == "hot_week"
    assert on_event(CadenceState(), sig(tier="warm"), BOOK, NY).plan == "warm_week"
    assert on_event(CadenceState(), sig(source="database"), BOOK, NY).plan == "reactivation"
    assert on_event(CadenceState(), sig(), BOOK, NY).plan == "long_term_week"
    assert on_event(CadenceState(), sig(visitor=True), BOOK, NY) == CadenceState()


def test_a_hand_raise_or_a_jump_moves_a_lead_to_a_hotter_track() -> None:
    s = on_event(CadenceState(), sig(), BOOK, NY)
    s = on_event(s, sig("page_view", T0 + DAY, triggers=("jump",)), BOOK, NY)
    assert (s.plan, s.start, s.cycle) == ("hot_week", T0 + DAY, 2)
    assert s.why.startswith("entered hot track: moved up")
    s = on_event(s, sig("call_request", T0 + 2 * DAY), BOOK, NY)
    assert s.plan == "cadence_14d"
    colder = on_event(s, sig("page_view", T0 + 3 * DAY, triggers=("jump",)), BOOK, NY)
    assert colder.plan == "cadence_14d"  # never down to a colder plan


def test_a_conversation_pauses_and_silence_resumes_shifted() -> None:
    s = on_event(CadenceState(), sig("inquiry"), BOOK, NY)
    s, _ = fire(s, T0 + 3600, BOOK, NY)  # day 0 done
    s = on_event(s, sig("reply", T0 + 2 * 3600), BOOK, NY)
    assert (s.status, s.due) == ("paused", T0 + 2 * 3600 + 7 * DAY)
    s2, out = fire(s, T0 + 5 * DAY, BOOK, NY)
    assert out == [] and s2.status == "paused"  # nothing while the conversation goes on
    s, out = fire(s, T0 + 7 * DAY + 2 * 3600, BOOK, NY)
    assert s.status == "active" and s.why.startswith("resumed")
    assert out == []  # day 1's call is now due 7 days (the pause) later than planned
    assert s.due == NY.allowed_at(T0 + DAY + 7 * DAY)


def test_endings_and_stop() -> None:
    s = on_event(CadenceState(), sig("inquiry"), BOOK, NY)
    for kind in ("lost", "not_interested", "closed", "agreement_signed"):
        ended = on_event(s, sig(kind, T0 + 60), BOOK, NY)
        assert (ended.status, ended.end_reason, ended.due) == ("ended", kind, 0.0)
        assert fire(ended, T0 + 30 * DAY, BOOK, NY)[1] == []
    stopped = on_event(s, sig("reply", T0 + 1, stop=True, blocked=("sms",)), BOOK, NY)
    assert stopped.status == "active" and stopped.blocked == ("sms",)


def test_an_agent_contact_is_an_attempt_unless_marked_a_conversation() -> None:
    s = on_event(CadenceState(), sig("inquiry"), BOOK, NY)
    assert on_event(s, sig("agent_contact", T0 + 60), BOOK, NY).status == "active"
    marked = on_event(s, sig("agent_contact", T0 + 60, conversation_marked=True), BOOK, NY)
    assert marked.status == "paused"


def test_opt_out_removes_the_channel_from_every_remaining_step() -> None:
    s = on_event(CadenceState(), sig("inquiry"), BOOK, NY)
    s = on_event(s, sig("opt_out", T0 + 1, blocked=("call", "sms")), BOOK, NY)
    s, out = fire(s, T0 + 20 * DAY, BOOK, NY)
    assert out and {e.step.channel for e in out} == {"email"}


def test_quiet_hours_move_a_step_to_the_next_allowed_time() -> None:
    late = T0 + 12 * 3600  # 22:00 New York
    s = on_event(CadenceState(), sig(ts=late, tier="hot"), BOOK, NY)
    morning = datetime(2025, 6, 3, 8, 0, tzinfo=ZoneInfo("America/New_York")).timestamp()
    assert s.due == morning  # hot track's first step is an SMS: not at 22:00
    early = datetime(2025, 6, 3, 3, 0, tzinfo=ZoneInfo("America/New_York")).timestamp()
    assert NY.allowed_at(early) == morning
    assert NY.allowed_at(T0) == T0


def test_state_round_trips_and_junk_reads_as_new() -> None:
    s = on_event(CadenceState(), sig("inquiry", blocked=("sms",)), BOOK, NY)
    assert decode(encode(s)) == s
    for junk in ("", "{", "[1,2]", '"x"', "null"):
        assert decode(junk) == CadenceState()


# -- the property: generated histories ----------------------------------------------------------
KINDS = [
    "email_open", "email_click", "page_view", "inquiry", "showing_request", "reply",
    "reply_stop", "call_answered",
    "opt_out_sms", "opt_out_call", "opt_out_email", "unsubscribe", "agent_contact",
    "appointment_set", "lost", "not_interested", "jump", "tick", "tick", "tick",
]  # fmt: skip
BLOCKS = {"opt_out_sms": ("sms",), "opt_out_call": ("call",), "opt_out_email": ("email",),
          "unsubscribe": ("email",), "reply_stop": ("sms",)}  # fmt: skip

history = st.lists(
    st.tuples(st.sampled_from(KINDS), st.floats(min_value=0, max_value=6 * DAY)),
    min_size=1, max_size=40,
)  # fmt: skip
zones = st.sampled_from([NY, Hours("Europe/Berlin", 22, 7), Hours("Asia/Tokyo", 20, 9)])


def _signal(kind: str, ts: float, blocked: tuple[str, ...]) -> Signal:
    type_ = {"reply_stop": "reply", "jump": "page_view"}.get(kind, kind)
    type_ = "opt_out" if kind.startswith("opt_out") else type_
    return sig(type_, ts, tier="warm", blocked=blocked, stop=kind == "reply_stop",
               triggers=("jump",) if kind == "jump" else ())  # fmt: skip


def _check(e: Emission, blocked: set[str], hours: Hours, seen: set[tuple[str, int, int]]) -> None:
    channel = "call" if e.step.channel == "voicemail" else e.step.channel
    assert channel not in blocked, (e, blocked)
    if e.step.channel in BOOK.quiet_channels:
        assert not hours.quiet(e.due), e
    key = (e.plan, e.cycle, e.index)
    assert key not in seen, e
    seen.add(key)


@settings(max_examples=300, deadline=None)
@given(history, zones, st.floats(min_value=0, max_value=DAY))
def test_never_blocked_never_quiet_never_twice(
    steps: list[tuple[str, float]], hours: Hours, offset: float
) -> None:
    s = on_event(CadenceState(), sig(ts=T0 + offset, tier="warm"), BOOK, hours)
    blocked: set[str] = set()
    seen: set[tuple[str, int, int]] = set()
    now = T0 + offset
    for kind, gap in steps:
        now += gap
        if kind == "tick":
            before = s
            s, out = fire(s, now, BOOK, hours)
            for e in out:
                _check(e, blocked, hours, seen)
                assert e.due <= now
            if before.status not in ("active", "paused"):
                assert out == []
            continue
        blocked |= set(BLOCKS.get(kind, ()))
        if kind == "lost" or kind == "not_interested":
            s = on_event(s, _signal(kind, now, tuple(sorted(blocked))), BOOK, hours)
            assert s.status == "ended" or s.status == ""
            continue
        s = on_event(s, _signal(kind, now, tuple(sorted(blocked))), BOOK, hours)
        if kind in ("reply", "call_answered", "appointment_set") and s.end_reason == "":
            assert s.status in ("paused", "")
    s, out = fire(s, now + 400 * DAY, BOOK, hours)
    for e in out:
        _check(e, blocked, hours, seen)
    assert replace(s, why="") == replace(decode(encode(s)), why="")


# -- moving up: at most once per track per period -----------------------------------------------
def test_a_jump_does_not_send_a_lead_back_into_a_track_it_ran_recently() -> None:
    s = on_event(CadenceState(), sig(), BOOK, NY)  # long-term track
    s = on_event(s, sig("page_view", T0 + DAY, triggers=("jump",)), BOOK, NY)
    assert s.plan == "hot_week"
    s, _ = fire(s, T0 + 9 * DAY, BOOK, NY)  # the hot track is done: on to the long-term cycle
    assert s.plan == "long_term_cycle"
    again = on_event(s, sig("page_view", T0 + 10 * DAY, triggers=("jump",)), BOOK, NY)
    assert again.plan == "long_term_cycle"  # hot track entered 9 days ago: not again
    later = T0 + DAY + BOOK.rerun_after_s
    s, _ = fire(s, later, BOOK, NY)
    moved = on_event(s, sig("page_view", later, triggers=("jump",)), BOOK, NY)
    assert moved.plan == "hot_week" and moved.why.startswith("entered hot track: moved up")
    assert decode(encode(moved)).ran == moved.ran


MOVES = ["jump", "jump", "showing_request", "tick", "tick", "page_view"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(MOVES), st.floats(min_value=0, max_value=20 * DAY)),
        min_size=1,
        max_size=40,
    ),  # fmt: skip
    st.sampled_from(["long-term", "warm"]),
)
def test_moves_up_at_most_once_per_track_per_period(
    steps: list[tuple[str, float]], tier: str
) -> None:
    period = BOOK.rerun_after_s
    now = T0
    s = on_event(CadenceState(), sig(ts=now, tier=tier), BOOK, NY)
    entered: dict[str, list[float]] = {s.plan: [now]}
    for kind, gap in steps:
        now += gap
        if kind == "tick":
            s, _ = fire(s, now, BOOK, NY)
            continue
        before = s
        s = on_event(s, _signal(kind, now, ()), BOOK, NY)
        moved = s.cycle != before.cycle and s.start == now and "moved up" in s.why
        if moved:
            last = dict(before.ran).get(s.plan)
            assert last is None or now - last >= period, (s.plan, now - (last or 0))
            assert BOOK.plans[s.plan].heat > BOOK.plans[before.plan].heat
            entered.setdefault(s.plan, []).append(now)
    for plan, times in entered.items():
        assert all(b - a >= period for a, b in zip(times[1:], times[2:], strict=False)), plan


# -- send time that learns ----------------------------------------------------------------------
def _engaged_lead(holdout: bool, hours_local: tuple[float, ...]) -> CadenceState:
    """A long-term lead (all automatic emails) that opened emails at these local hours."""
    s = on_event(CadenceState(), sig(holdout=holdout), BOOK, NY)
    s, out = fire(s, T0, BOOK, NY)  # day 0's welcome
    assert [e.step.template for e in out] == ["lt.d0.welcome"]
    for h in hours_local:
        s = on_event(s, sig("email_open", T0 + (h - 10) * 3600, holdout=holdout), BOOK, NY)
    return s


def test_automatic_messages_move_toward_the_hour_the_lead_engages() -> None:
    assert BOOK.learn_min == 2 and BOOK.learn_max_s == 12 * 3600
    once = _engaged_lead(False, (20.2,))
    assert (once.due, once.timing) == (T0 + DAY, "planned")  # one signal: not yet
    s = _engaged_lead(False, (20.2, 20.7))
    assert s.engaged == (20, 20) and s.timing == "learned"
    assert s.due == T0 + DAY + 10 * 3600  # Tuesday 20:00 instead of 10:00
    s, out = fire(s, T0 + DAY + 10 * 3600, BOOK, NY)
    assert [e.step.template for e in out] == ["lt.d1.market_point"] and s.last_timing == "learned"
    held = _engaged_lead(True, (20.2, 20.7))
    assert (held.due, held.timing) == (T0 + DAY, "holdout")  # the comparison group
    early = _engaged_lead(False, (8.1, 8.5))  # 08:00 is 22 h after 10:00: beyond the bound
    assert (early.due, early.timing) == (T0 + DAY, "learned")
    log: list[Transition] = []
    s = on_event(s, sig("reply", T0 + DAY + 11 * 3600), BOOK, NY, log)
    assert [(t.kind, t.step, t.reason) for t in log] == [
        ("reply", "long_term_week.1.email", "learned")
    ]
    assert decode(encode(s)) == s


def test_a_learned_time_in_quiet_hours_keeps_the_planned_time() -> None:
    from engine.cadence.settings import CadenceSettings

    texts = CadenceSettings(enabled=True, rules=({"plan": "t"},), plans={"t": {
        "label": "texts", "steps": [
            {"at": "0m", "channel": "sms", "template": "t0", "goal": "g", "kind": "message"},
            {"at": "1d", "channel": "sms", "template": "t1", "goal": "g", "kind": "message"},
            {"at": "2d", "channel": "email", "template": "t2", "goal": "g", "kind": "message"},
        ]}})  # type: ignore[arg-type]  # fmt: skip
    book = compile_book(texts)
    s = on_event(CadenceState(), sig(), book, NY)
    s, _ = fire(s, T0, book, NY)
    for h in (22.1, 22.5):  # engaged at 22:00: quiet hours in New York (21-8)
        s = on_event(s, sig("email_click", T0 + (h - 10) * 3600), book, NY)
    assert (s.timing, s.due) == ("learned", T0 + DAY)  # an SMS at 22:00 would wait till 08:00
    s, out = fire(s, T0 + DAY, book, NY)
    assert [e.step.template for e in out] == ["t1"]
    assert s.due == T0 + 2 * DAY + 12 * 3600  # the email goes at 22:00 (email has no quiet)
