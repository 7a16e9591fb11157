"""The ``[cadence]`` configuration: shipped plans load; bad plans are refused with a reason."""

from __future__ import annotations

import pytest

from engine.cadence.plans import compile_book
from engine.cadence.settings import offset_s
from engine.errors import ConfigError
from engine.settings import load_settings


def test_shipped_plans_compile() -> None:
    book = compile_book(load_settings(environ={}).cadence)
    c14 = book.plans["cadence_14d"]
    assert sorted({s.day for s in c14.steps}) == [0, 1, 2, 4, 6, 8, 11, 14]
    assert {s.channel for s in c14.steps} == {"call", "voicemail", "sms", "email"}
    assert all(s.goal for s in c14.steps)
    assert {"hot_week", "warm_week", "long_term_week", "long_term_cycle", "reactivation"} <= set(
        book.plans
    )
    assert book.plans["hot_week"].heat > book.plans["warm_week"].heat


@pytest.mark.parametrize(
    ("text", "seconds"), [("0m", 0.0), ("15m", 900.0), ("2h", 7200.0), ("1d2h30m", 95_400.0)]
)
def test_offsets(text: str, seconds: float) -> None:
    assert offset_s(text) == seconds


def _plan(**step: str) -> dict[str, object]:
    base = {"at": "0m", "channel": "sms", "template": "t", "goal": "g", "kind": "message"}
    return {"cadence": {"plans": {"p": {"label": "P", "steps": [base | step]}}}}


@pytest.mark.parametrize(
    ("override", "words"),
    [
        (_plan(at="2 days"), "offset '2 days'"),
        (_plan(channel="call"), "cannot be an automatic message"),
        (_plan(channel="fax"), "cadence.plans.p.steps.0.channel"),
        ({"cadence": {"rules": [{"plan": "nope"}]}}, "unknown plan 'nope'"),
        ({"cadence": {"plans": {"p": {"label": "P", "next": "gone", "steps": [
            {"at": "0m", "channel": "sms", "template": "t", "goal": "g", "kind": "message"}]}}}},
         "unknown plan 'gone'"),
    ],
)  # fmt: skip
def test_bad_plans_are_refused(override: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_settings(environ={}, overrides=override)
