"""The validator's one-pass path for common events (``Validator._quick``) must give exactly
what the full checks give: the same event, or step aside (None) so they name the problem."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidEventError
from engine.settings import ValidationSettings
from engine.validate import Rejection, Validator

NOW = 1_800_000_000.0
BASE: dict[str, Any] = {
    "event_id": "e1", "lead_id": "L1", "type": "property_view", "ts": NOW - 10,
    "tenant": "acme", "visitor_id": "v1", "property_id": "P1", "price": 350_000,
    "area": "z1", "source": "portal", "side": "buyer", "timeline": "0-3m",
    "channel": "email", "dwell_s": 12.5, "agent_id": "a1", "props": {"k": "v"},
}  # fmt: skip

#: values that each field may carry: valid, empty, odd types, edge numbers, bad text
ODD: list[Any] = [
    None, "", 0, 1, -0.0, 0.0, True, False, [], {}, [1], 2**70, -1, 1e10, 1e10 + 1, 86_400,
    86_401, math.nan, math.inf, NOW - 10, int(NOW - 10), NOW + 2 * 86_400, 946_684_799,
    "~v", "~", "..", "a b", "a@b.c", "x" * 128, "x" * 129, "é", "\u200b", "2026-01-01T00:00:00Z",
    "portal", "buyer", "0-3m", "email", "property_view", "identify", "unknown", b"raw",
]  # fmt: skip


def _both(obj: Any) -> tuple[Any, Any]:
    quick = Validator(ValidationSettings(), now=NOW)
    full = Validator(ValidationSettings(), now=NOW)
    for v in (quick, full):  # the tenants seen before (the quick path takes only those)
        v.check(dict(BASE))
        v.check({**BASE, "tenant": None})
    return _run(quick._quick, obj), _run(full.parse, obj)


def _run(check: Any, obj: Any) -> Any:
    try:
        return check(obj)
    except InvalidEventError as exc:  # its reason is compared
        return Rejection(exc.reason)


def _same(fast: Any, slow: Any) -> None:
    if fast is None:
        return  # the full checks decide
    if isinstance(fast, Rejection):  # props are checked last, by the same code
        assert fast == slow
        return
    assert not isinstance(slow, Rejection), slow
    assert fast == slow
    for a, b in zip(fast.__slots__, slow.__slots__, strict=True):  # -0.0 vs 0.0 too
        assert repr(getattr(fast, a)) == repr(getattr(slow, b)), a


def test_a_plain_event_takes_the_quick_path_and_matches() -> None:
    fast, slow = _both(dict(BASE))
    assert fast is not None
    _same(fast, slow)


def test_each_field_with_each_odd_value() -> None:
    taken = 0
    for name in BASE:
        for value in ODD:
            obj = {**BASE, name: value}
            fast, slow = _both(obj)
            _same(fast, slow)
            taken += fast is not None
            fast, slow = _both({k: v for k, v in obj.items() if k != name or value is not None})
            _same(fast, slow)
    assert taken > 100  # the quick path does take many of them


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*BASE, "extra"]), st.sampled_from(ODD), max_size=16))
def test_random_mixtures(changes: dict[str, Any]) -> None:
    fast, slow = _both({**BASE, **changes})
    _same(fast, slow)
