"""``Hours.allowed_at`` remembers the end of a night's quiet hours (engine/cadence/plans.py):
it must give exactly what computing it each time gives, in every zone, across DST changes
(the end hour inside a skipped or a repeated hour too)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cadence.plans import Hours

ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata",
         "America/St_Johns", "Pacific/Chatham", "UTC"]  # fmt: skip
T0 = 1_577_836_800.0  # 2020-01-01 UTC


def _computed(h: Hours, ts: float) -> float:
    """The end of the quiet hours as computed before it was remembered."""
    if not h.quiet(ts):
        return ts
    local = datetime.fromtimestamp(ts, ZoneInfo(h.tz))
    end = local.replace(hour=h.quiet_end_h, minute=0, second=0, microsecond=0)
    if end <= local:
        end = (local + timedelta(days=1)).replace(
            hour=h.quiet_end_h, minute=0, second=0, microsecond=0
        )
    return end.timestamp()


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(ZONES), st.integers(0, 23), st.integers(0, 23),
    st.lists(st.floats(0, 10 * 365 * 86_400.0), min_size=1, max_size=30),
)  # fmt: skip
def test_allowed_at_is_what_computing_it_gives(
    tz: str, start: int, end: int, offsets: list[float]
) -> None:
    h = Hours(tz, start, end)
    for off in offsets:  # several per night and zone: the remembered ends are read back
        for ts in (T0 + off, T0 + off + 600.0, T0 + off + 86_400.0):
            assert h.allowed_at(ts) == _computed(h, ts)


def test_allowed_at_around_a_dst_change() -> None:
    """New York's spring-forward (2:00 -> 3:00) and fall-back (2:00 -> 1:00), end hours in
    the skipped and in the repeated hour, every 5 minutes of those nights."""
    for end_h in (1, 2, 3, 8):
        h = Hours("America/New_York", 0, end_h)
        for night in (1_710_043_200.0, 1_730_602_800.0):  # 2024-03-10, 2024-11-03 04:00 UTC
            for i in range(-36, 144):
                ts = night + i * 300.0
                assert h.allowed_at(ts) == _computed(h, ts)
