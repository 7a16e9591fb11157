"""Cadences in the engine, on a real Redis: events move plans, due steps are found by time
and emitted once, in the batch's transaction (a failed commit emits nothing; the redo
emits each step once)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest
import redis

from engine.app import build_parts
from engine.cadence.runner import describe, step_entries
from engine.keys import cadence_due_key, lead_key
from engine.streams import StreamNames

T0 = datetime(2025, 6, 2, 10, 0, tzinfo=ZoneInfo("America/New_York")).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ev(eid: str, lead: str, etype: str, ts: float, **kw: Any) -> dict[str, Any]:
    return {"event_id": eid, "lead_id": lead, "type": etype, "ts": ts, "tenant": "t", **kw}


def entries(events: list[dict[str, Any]], start: int) -> list[Any]:
    return [
        (0, f"{start + i}-0".encode(), {b"e": msgpack.packb(e, use_bin_type=True)})
        for i, e in enumerate(events)
    ]


TICK = [(0, b"", {})]


@pytest.fixture
def engine(client: Any, make_settings: Any) -> tuple[Any, Clock, StreamNames]:
    settings = make_settings(streams={"partitions": 1}, cadence={"enabled": True})
    parts = build_parts(settings, client)
    clock = Clock(T0 + 1)
    parts.processor._cadence.clock = clock
    return parts.processor, clock, parts.names


def steps(client: Any, names: StreamNames) -> list[dict[str, Any]]:
    return step_entries(client.xrange(names.cadence))


def test_a_hand_raise_enters_the_plan_and_due_steps_fire_on_ticks(
    client: Any, engine: Any, prefix: str
) -> None:
    proc, clock, names = engine
    proc.process_retrying(entries([ev("a1", "L42", "showing_request", T0, source="portal",
                                      property_id="p9", area="east",
                                      props={"address": "1 Main St"})], 1))  # fmt: skip
    out = steps(client, names)
    assert [(s["channel"], s["kind"]) for s in out] == [("email", "message"), ("call", "task")]
    first = out[0]
    assert first["plan"] == "cadence_14d" and first["day"] == 0 and first["due_ts"] == T0
    assert first["fields"]["address"] == "1 Main St" and first["fields"]["area"] == "east"
    assert "phone" not in str(first) and "text" not in first  # no contact details, no text
    due = client.zrange(cadence_due_key(prefix, 0), 0, -1, withscores=True)
    assert due == [(b"t\x1fL42", T0 + 600)]
    proc.process_retrying(TICK)
    assert len(steps(client, names)) == 2  # nothing due yet
    clock.now = T0 + 20 * 60  # twenty minutes later, no event on the partition
    proc.process_retrying(TICK)
    assert [s["channel"] for s in steps(client, names)[2:]] == ["voicemail", "sms"]
    view = describe(client.get(lead_key(prefix, "t", "L42", "c")))
    assert view is not None and view["step"] == 4 and view["next_due_ts"] == T0 + 86_400
    ids = [s["step_id"] for s in steps(client, names)]
    assert len(set(ids)) == len(ids)


def test_a_reply_pauses_within_the_batch_and_opt_out_removes_the_channel(
    client: Any, engine: Any
) -> None:
    proc, clock, names = engine
    proc.process_retrying(entries([ev("a1", "A", "inquiry", T0),
                                   ev("b1", "B", "inquiry", T0)], 1))  # fmt: skip
    proc.process_retrying(entries([ev("a2", "A", "reply", T0 + 60, channel="sms"),
                                   ev("b2", "B", "opt_out", T0 + 60)], 3))  # fmt: skip
    clock.now = T0 + 3 * 86_400
    proc.process_retrying(TICK)
    out = steps(client, names)
    a = [s for s in out if s["lead_id"] == "A"]
    b = [s for s in out if s["lead_id"] == "B"]
    assert len(a) == 2  # day 0's email and call, then paused by the reply
    assert b[2:] == []  # opt_out with no channel: email, sms and call are all closed
    assert len(b) == 2


def test_a_failed_commit_emits_nothing_and_the_redo_emits_once(
    client: Any, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, clock, names = engine
    proc.process_retrying(entries([ev("a1", "A", "inquiry", T0)], 1))
    clock.now = T0 + 20 * 60
    real = redis.client.Pipeline.execute
    calls = {"n": 0}

    def flaky(self: Any, *a: Any, **kw: Any) -> Any:
        if self.transaction and calls["n"] == 0:
            calls["n"] += 1
            raise redis.ConnectionError("lost")
        return real(self, *a, **kw)

    monkeypatch.setattr(redis.client.Pipeline, "execute", flaky)
    batch = entries([ev("a2", "A", "page_view", T0 + 20 * 60)], 2)
    proc.process_retrying(batch)
    proc.process_retrying(batch)  # delivered again: already committed
    monkeypatch.undo()
    out = steps(client, names)
    assert [s["channel"] for s in out] == ["email", "call", "voicemail", "sms"]


def test_the_send_time_holdout_is_a_stable_share_of_leads(engine: Any) -> None:
    proc, _, _ = engine
    cad = proc._cadence
    picks = [cad._holdout(("t", f"L{i}")) for i in range(2_000)]
    assert 0.17 < sum(picks) / len(picks) < 0.23  # send_time_holdout = 0.2
    assert picks == [cad._holdout(("t", f"L{i}")) for i in range(2_000)]  # the same each time
