"""Alert rules, SLA deadlines and first touch: pure functions over event time."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.alerts import AlertState, evaluate, first_touch, sla_deadline, sla_rule_for
from engine.events import CHANNELS, Event
from engine.scoring import Score
from engine.settings import load_settings

S = load_settings(environ={})
A = S.alerts
NY = ZoneInfo("America/New_York")
T0 = datetime(2024, 5, 14, 12, 0, tzinfo=NY).timestamp()
HOUR = 3600.0


def at(hour: int, minute: int = 0, day: int = 14, month: int = 5) -> float:
    return datetime(2024, month, day, hour, minute, tzinfo=NY).timestamp()


def ev(etype: str = "property_view", ts: float = T0, event_id: str = "e1", **kw: Any) -> Event:
    return Event(event_id=event_id, lead_id=kw.pop("lead_id", "lead-1"), type=etype, ts=ts, **kw)


def sc(value: int, bucket: str | None = None) -> Score:
    if bucket is None:
        bucket = "P1" if value >= 90 else "P2" if value >= 70 else "P3" if value >= 50 else "P4"
    return Score(value, value / 100, bucket, "warm", (), 0.0, value / 100, None)


def state(
    score: int,
    bucket: str,
    last_alert_ts: float = 0.0,
    base: float | None = None,
    base_ts: float = T0 - HOUR,
) -> AlertState:
    return AlertState(score, bucket, last_alert_ts, float(score if base is None else base), base_ts)


NO_CTX: dict[str, Any] = {}


# --------------------------------------------------------------------------- hand-raises


@pytest.mark.parametrize(
    "etype", ["inquiry", "showing_request", "valuation_request", "call_request"]
)
def test_hand_raise_always_alerts(etype: str) -> None:
    d = evaluate(ev(etype), sc(30), state(30, "P4"), NO_CTX, A)
    assert d.triggers == (f"hand_raise:{etype}",)
    assert d.alert_id


def test_hand_raise_alerts_even_in_cooldown() -> None:
    prev = state(30, "P4", last_alert_ts=T0 - 60)  # alerted a minute ago
    d = evaluate(ev("showing_request"), sc(35), prev, NO_CTX, A)
    assert d.triggers == ("hand_raise:showing_request",)
    assert d.state.last_alert_ts == T0


def test_hand_raise_alerts_even_for_p5() -> None:
    d = evaluate(ev("inquiry"), sc(95, "P5"), state(20, "P5"), NO_CTX, A)
    assert d.triggers == ("hand_raise:inquiry",)


def test_non_hand_raise_types_are_not_hand_raises() -> None:
    for etype in ("property_view", "reply", "property_save", "appointment_set"):
        assert evaluate(ev(etype), sc(30), state(30, "P4"), NO_CTX, A).triggers == ()


def test_hand_raise_types_are_configured() -> None:
    a = A.model_copy(update={"hand_raise_types": ("showing_request",)})
    assert evaluate(ev("inquiry"), sc(30), state(30, "P4"), NO_CTX, a).triggers == ()


# --------------------------------------------------------------------------- bucket entry


def test_entering_p2_from_p3_alerts_once() -> None:
    first = evaluate(ev(), sc(72), state(60, "P3"), NO_CTX, A)
    assert first.triggers == ("entered:P2",)
    assert first.state.bucket == "P2" and first.state.last_alert_ts == T0
    # two hours later (cooldown over), still P2: no new alert
    later = evaluate(ev(ts=T0 + 2 * HOUR, event_id="e2"), sc(73), first.state, NO_CTX, A)
    assert later.triggers == ()
    assert later.alert_id == ""
    assert later.state.last_alert_ts == T0


def test_entering_p1_from_p2_alerts() -> None:
    d = evaluate(ev(), sc(91), state(80, "P2"), NO_CTX, A)
    assert d.triggers == ("entered:P1",)


def test_entering_p3_does_not_alert_by_default() -> None:
    assert evaluate(ev(), sc(55), state(45, "P4"), NO_CTX, A).triggers == ()


def test_dropping_a_bucket_does_not_alert() -> None:
    assert evaluate(ev(), sc(85), state(92, "P1"), NO_CTX, A).triggers == ()


def test_a_brand_new_lead_in_p1_alerts() -> None:
    d = evaluate(ev(), sc(93), AlertState(), NO_CTX, A)
    assert d.triggers == ("entered:P1",)


# --------------------------------------------------------------------------- jumps


def test_jump_within_window_alerts_at_or_above_min_score() -> None:
    prev = state(40, "P4", base=40, base_ts=T0 - 3 * HOUR)
    d = evaluate(ev(), sc(40 + int(A.jump_points)), prev, NO_CTX, A)  # 55: exactly +15
    assert d.triggers == ("jump",)
    assert (d.state.jump_base, d.state.jump_base_ts) == (55, T0)  # a new window starts here


def test_jump_below_jump_points_does_not_alert() -> None:
    prev = state(40, "P4", base=40, base_ts=T0 - 3 * HOUR)
    assert evaluate(ev(), sc(54), prev, NO_CTX, A).triggers == ()


def test_jump_landing_below_min_score_does_not_alert() -> None:
    prev = state(25, "P4", base=25, base_ts=T0 - 3 * HOUR)
    assert A.jump_min_score == 50
    assert evaluate(ev(), sc(49), prev, NO_CTX, A).triggers == ()  # +24 but lands at 49
    assert evaluate(ev(), sc(50), prev, NO_CTX, A).triggers == ("jump",)


def test_jump_counts_from_the_lowest_score_in_the_window() -> None:
    prev = state(48, "P4", base=35, base_ts=T0 - 3 * HOUR)  # dipped to 35 earlier today
    d = evaluate(ev(), sc(52), prev, NO_CTX, A)
    assert d.triggers == ("jump",)
    assert d.jump_from == 35  # the alert names the score it jumped from, not the last (48)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.integers(0, 100), st.integers(0, 100), st.integers(0, 100), st.floats(0, 30)
)  # fmt: skip
def test_a_jump_is_a_jump_from_the_score_it_names(
    last: int, low: int, now: int, hours_ago: float
) -> None:
    """Whatever the history, a reported jump rose by at least jump_points from jump_from."""
    prev = state(last, "P4", base=min(low, last), base_ts=T0 - hours_ago * HOUR)
    d = evaluate(ev(), sc(now), prev, NO_CTX, A)
    if "jump" in d.triggers:
        assert d.jump_from is not None and now - d.jump_from >= A.jump_points
    else:
        assert d.jump_from is None


def test_jump_base_expires_with_the_window() -> None:
    old = T0 - (A.jump_window_h + 1) * HOUR
    prev = state(48, "P4", base=35, base_ts=old)
    d = evaluate(ev(), sc(52), prev, NO_CTX, A)
    assert d.triggers == ()  # window restarted from the last score (48): only +4
    assert (d.state.jump_base, d.state.jump_base_ts) == (48, T0)


def test_jump_tracks_the_minimum_across_events() -> None:
    s1 = evaluate(ev(ts=T0), sc(45), AlertState(), NO_CTX, A).state
    s2 = evaluate(ev(ts=T0 + HOUR, event_id="e2"), sc(38), s1, NO_CTX, A).state
    assert s2.jump_base == 38
    d = evaluate(ev(ts=T0 + 2 * HOUR, event_id="e3"), sc(53), s2, NO_CTX, A)
    assert d.triggers == ("jump",)


def test_first_score_never_jumps() -> None:
    assert evaluate(ev(), sc(60), AlertState(), NO_CTX, A).triggers == ()


def test_entering_and_jumping_make_one_alert_with_both_triggers() -> None:
    d = evaluate(ev(), sc(75), state(55, "P3"), NO_CTX, A)
    assert d.triggers == ("entered:P2", "jump")


# --------------------------------------------------------------------------- cooldown, reactivation


def test_cooldown_suppresses_non_hand_raise_triggers() -> None:
    prev = state(55, "P3", last_alert_ts=T0 - (A.cooldown_min - 1) * 60)
    d = evaluate(ev(), sc(75), prev, {"reactivated_now": True}, A)
    assert d.triggers == ()
    assert d.state.last_alert_ts == prev.last_alert_ts


def test_after_cooldown_triggers_fire_again() -> None:
    prev = state(55, "P3", last_alert_ts=T0 - A.cooldown_min * 60)
    d = evaluate(ev(), sc(75), prev, NO_CTX, A)
    assert d.triggers == ("entered:P2", "jump")


def test_reactivation_alerts() -> None:
    d = evaluate(ev(), sc(30), state(30, "P4"), {"reactivated_now": True}, A)
    assert d.triggers == ("reactivation",)
    assert evaluate(ev(), sc(30), state(30, "P4"), {"reactivated_now": False}, A).triggers == ()


def test_p5_never_gets_bucket_jump_or_reactivation_alerts() -> None:
    prev = state(20, "P4", base=20)
    d = evaluate(ev(), sc(95, "P5"), prev, {"reactivated_now": True}, A)
    assert d.triggers == ()
    assert d.state.bucket == "P5"
    assert evaluate(ev(), sc(95, "P5"), AlertState(), NO_CTX, A).triggers == ()


# --------------------------------------------------------------------------- alert ids


def test_alert_id_is_stable_for_the_same_inputs() -> None:
    args = (ev("inquiry"), sc(75), state(55, "P3"), NO_CTX, A)
    assert evaluate(*args).alert_id == evaluate(*args).alert_id


def test_alert_id_differs_for_different_events() -> None:
    prev = state(30, "P4")
    ids = {
        evaluate(ev("inquiry", event_id="e1"), sc(30), prev, NO_CTX, A).alert_id,
        evaluate(ev("inquiry", event_id="e2"), sc(30), prev, NO_CTX, A).alert_id,
        evaluate(ev("inquiry", event_id="e1", lead_id="lead-2"), sc(30), prev, NO_CTX, A).alert_id,
        evaluate(ev("inquiry", event_id="e1", tenant="other"), sc(30), prev, NO_CTX, A).alert_id,
        evaluate(ev(ts=T0, event_id="e3"), sc(75), state(60, "P3"), NO_CTX, A).alert_id,
        evaluate(ev(ts=T0 + 5, event_id="e4"), sc(75), state(60, "P3"), NO_CTX, A).alert_id,
    }
    assert len(ids) == 6 and "" not in ids


def test_no_trigger_means_no_alert_id() -> None:
    assert evaluate(ev(), sc(30), state(30, "P4"), NO_CTX, A).alert_id == ""


def test_alert_state_from_hash() -> None:
    h = {"score": "72", "bucket": "P2", "last_alert_ts": "1700000000.5", "jump_base": "40"}
    assert AlertState.from_hash(h) == AlertState(72, "P2", 1_700_000_000.5, 40.0, 0.0)
    assert AlertState.from_hash({}) == AlertState()


# --------------------------------------------------------------------------- SLA


def test_sla_rule_by_request_type_first_then_source() -> None:
    assert sla_rule_for(ev("showing_request"), "website", A)[0] == "showing_request"
    assert sla_rule_for(ev("valuation_request"), "portal", A)[0] == "valuation_request"
    assert sla_rule_for(ev("property_view"), "referral", A)[0] == "referral"
    assert sla_rule_for(ev("inquiry"), "giveaway", A)[0] == "default"
    key, rule = sla_rule_for(ev("inquiry"), "portal", A)
    assert key == "portal" and rule.minutes == 5


def test_portal_lead_in_business_hours_is_5_minutes() -> None:
    rule = A.sla["portal"]
    assert sla_deadline(at(10), rule, A) == (at(10, 5), False)


def test_portal_lead_after_hours_is_15_minutes() -> None:
    rule = A.sla["portal"]
    assert sla_deadline(at(23), rule, A) == (at(23, 15), True)


def test_valuation_request_late_at_night_is_next_morning_9() -> None:
    rule = A.sla["valuation_request"]
    assert sla_deadline(at(23), rule, A) == (at(9, day=15), True)
    assert sla_deadline(at(10), rule, A) == (at(10, 15), False)


def test_referral_early_morning_is_10_the_same_day() -> None:
    rule = A.sla["referral"]
    assert sla_deadline(at(6), rule, A) == (at(10), True)
    assert sla_deadline(at(19, 30), rule, A) == (at(20, 30), False)


def test_business_hour_boundaries() -> None:
    rule = A.sla["portal"]
    assert sla_deadline(at(8), rule, A)[1] is False
    assert sla_deadline(at(7, 59), rule, A)[1] is True
    assert sla_deadline(at(19, 59), rule, A)[1] is False
    assert sla_deadline(at(20), rule, A)[1] is True


def test_next_morning_across_spring_forward_is_local_9am() -> None:
    rule = A.sla["valuation_request"]
    deadline, after = sla_deadline(at(23, day=9, month=3), rule, A)  # 2024-03-10 is DST day
    assert after
    assert deadline == at(9, day=10, month=3)
    assert deadline - at(23, day=9, month=3) == 9 * HOUR  # an hour fewer than the wall clock


def test_sla_uses_the_tenant_time_zone() -> None:
    la = A.model_copy(update={"timezone": "America/Los_Angeles"})
    ts = at(6)  # 06:00 New York == 03:00 Los Angeles
    assert (
        sla_deadline(ts, A.sla["referral"], la)[0]
        == datetime(2024, 5, 14, 10, tzinfo=ZoneInfo("America/Los_Angeles")).timestamp()
    )


# --------------------------------------------------------------------------- first touch


def test_first_touch_follows_the_rule_order() -> None:
    assert first_touch(at(10), A.sla["portal"], (), A, False) == "call"
    assert first_touch(at(10), A.sla["valuation_request"], (), A, False) == "sms"


def test_first_touch_never_returns_a_blocked_channel() -> None:
    assert first_touch(at(10), A.sla["portal"], ("call",), A, False) == "sms"
    assert first_touch(at(10), A.sla["portal"], ("call", "sms"), A, False) == "email"


def test_repeat_viewer_gets_a_call_first() -> None:
    rule = A.sla["valuation_request"]  # sms, email, call
    assert first_touch(at(10), rule, (), A, True) == "call"
    assert first_touch(at(10), rule, ("call",), A, True) == "sms"


@pytest.mark.parametrize("hour", [21, 23, 0, 3, 7])
def test_no_call_or_text_in_quiet_hours(hour: int) -> None:
    assert first_touch(at(hour), A.sla["portal"], (), A, True) == "email"
    assert first_touch(at(hour), A.sla["chat"], (), A, True) == "chat"


def test_quiet_hours_end_at_quiet_end() -> None:
    assert first_touch(at(8), A.sla["portal"], (), A, False) == "call"
    assert first_touch(at(20, 59), A.sla["portal"], (), A, False) == "call"


def test_first_touch_is_none_when_everything_is_blocked() -> None:
    assert first_touch(at(10), A.sla["portal"], ("call", "sms", "email"), A, False) == "none"
    assert first_touch(at(22), A.sla["portal"], ("email",), A, False) == "none"


QUIET = set(range(A.quiet_start_h, 24)) | set(range(0, A.quiet_end_h))


@settings(max_examples=200, deadline=None, database=None)
@given(
    rule_key=st.sampled_from(sorted(A.sla)),
    blocked=st.sets(st.sampled_from(sorted(CHANNELS))),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    day=st.integers(1, 28),
    month=st.integers(1, 12),
    repeat=st.booleans(),
)
def test_first_touch_is_never_blocked_nor_noisy_at_night(
    rule_key: str, blocked: set[str], hour: int, minute: int, day: int, month: int, repeat: bool
) -> None:
    rule = A.sla[rule_key]
    ts = datetime(2024, month, day, hour, minute, tzinfo=NY).timestamp()
    local_hour = datetime.fromtimestamp(ts, NY).hour  # a DST gap moves the wall clock
    quiet = local_hour in QUIET
    got = first_touch(ts, rule, tuple(sorted(blocked)), A, repeat)
    open_ = [
        c
        for c in (*rule.first_touch, "email")
        if c not in blocked and not (quiet and c in ("call", "sms"))
    ]
    if got == "none":
        assert not open_
    else:
        assert got in open_
        assert got not in blocked
        assert not (quiet and got in ("call", "sms"))
        if repeat and "call" in open_:
            assert got == "call"
        elif not repeat:
            assert got == open_[0]


def test_a_visitor_level_lead_is_scored_but_never_alerted() -> None:
    visitor = Event(event_id="e1", lead_id="~v1", type="showing_request", ts=T0, tenant="t")
    d = evaluate(visitor, sc(95), AlertState(), NO_CTX, A)
    assert d.triggers == () and d.alert_id == "" and d.state.score == 95
