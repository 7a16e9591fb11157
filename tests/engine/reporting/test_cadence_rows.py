"""Report rows of follow-up cadences, counted by the engine in the batch's transaction:
plan completion, replies by step and opt-outs by step, each exactly once (a failed
commit counts nothing; the redo counts once)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from engine.app import build_parts
from engine.reporting.cli import build_report
from engine.reporting.render import markdown
from tests.engine.cadence.test_runner import TICK, Clock, entries, ev

T0 = datetime(2025, 6, 2, 10, 0, tzinfo=ZoneInfo("America/New_York")).timestamp()
DAY = date(2025, 6, 2)
QUICK = {"label": "quick track", "steps": [
    {"at": "0m", "channel": "email", "template": "q.0", "goal": "hello", "kind": "message"},
    {"at": "1m", "channel": "email", "template": "q.1", "goal": "again", "kind": "message"},
]}  # fmt: skip


def test_plan_completion_replies_and_opt_outs_by_step_counted_once(
    client: Any, make_settings: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(streams={"partitions": 1}, cadence={
        "enabled": True, "plans": {"quick": QUICK},
        "rules": [{"plan": "quick", "sources": ["open_house"]}, {"plan": "cadence_14d"}],
    })  # fmt: skip
    parts = build_parts(settings, client)
    proc, clock = parts.processor, Clock(T0 + 1)
    proc._cadence.clock = clock
    proc.process_retrying(entries([
        ev("a1", "A", "inquiry", T0), ev("b1", "B", "inquiry", T0),
        ev("c1", "C", "inquiry", T0), ev("d1", "D", "lead_created", T0, source="open_house"),
    ], 1))  # fmt: skip
    real = redis.client.Pipeline.execute
    calls = {"n": 0}

    def flaky(self: Any, *a: Any, **kw: Any) -> Any:
        if self.transaction and calls["n"] == 0:
            calls["n"] += 1
            raise redis.ConnectionError("lost")
        return real(self, *a, **kw)

    monkeypatch.setattr(redis.client.Pipeline, "execute", flaky)
    batch = entries([
        ev("a2", "A", "reply", T0 + 60, channel="sms"),
        ev("a3", "A", "reply", T0 + 70, channel="sms"),  # a second reply: the step got one
        ev("b2", "B", "opt_out", T0 + 60, channel="sms"), ev("c2", "C", "lost", T0 + 60),
    ], 5)  # fmt: skip
    proc.process_retrying(batch)  # the first commit fails; the retry commits once
    proc.process_retrying(batch)  # delivered again: duplicates, nothing counted
    monkeypatch.undo()
    assert calls["n"] == 1
    clock.now = T0 + 5 * 60
    proc.process_retrying(TICK)  # D's second email: the quick track is complete
    r = build_report(client, prefix, "t", DAY, DAY)
    plans = {p.plan: (p.entered, p.completed, p.ended) for p in r.cadence_plans}
    assert plans == {"cadence_14d": (3, 0, 1), "quick": (1, 1, 0)}
    steps = {s.step: (s.sent, s.replies, s.optouts) for s in r.cadence_steps}
    assert steps["cadence_14d.0.email"] == (3, 0, 0)
    assert steps["cadence_14d.1.call"] == (3, 1, 1)  # A's reply, B's SMS opt-out
    assert steps["quick.0.email"] == (1, 0, 0) and steps["quick.1.email"] == (1, 0, 0)
    # automatic messages by timing: no lead opened or clicked yet, so all at planned times
    assert [(t.timing, t.sent, t.replies) for t in r.send_time] == [("planned", 5, 0)]
    text = markdown(r)
    assert "## Follow-up cadences" in text and "| cadence_14d.1.call | 3 | 1 |" in text
    assert r.for_agent("cy").cadence_steps == []  # team-wide rows: server keys only
