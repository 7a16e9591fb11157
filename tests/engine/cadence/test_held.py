"""Round 2 of the cadence CPU work: the hand-written state copy, the worker's held decoded
states (``Cadences._decoded``: reused only when Redis returns the very bytes they came
from) and the due-set writes grouped per partition."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.app import build_parts
from engine.cadence.decide import (
    CadenceState,
    decode,
    encode,
    fire,
    on_event,
    with_,
)  # fmt: skip
from engine.cadence.runner import CadenceEffects
from engine.events import Event
from engine.keys import cadence_due_key, lead_key
from tests.engine.cadence.test_passive import BOOK, NY, histories

NAMES = [f.name for f in dataclasses.fields(CadenceState)]


def _values(data: st.DataObject) -> dict[str, Any]:
    """A value of each field of the right type, different from the defaults."""
    return {
        "plan": "p2", "status": "paused", "step": data.draw(st.integers(1, 9)),
        "start": data.draw(st.floats(1.0, 2e9)), "shift": 5.0,
        "due": data.draw(st.floats(1.0, 2e9)),
        "since": 7.5, "cycle": 3, "why": "w", "end_reason": "lost", "blocked": ("sms",),
        "ran": (("p2", 1.0),), "last": "p2.1.sms",
        "replied": True, "last_timing": "learned", "engaged": (9, 10), "holdout": True,
        "timing": "holdout",
    }  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_with_is_dataclasses_replace(data: st.DataObject) -> None:
    s = data.draw(histories())[0]
    values = _values(data)
    changed = {n: values[n] for n in data.draw(st.sets(st.sampled_from(NAMES)))}
    assert with_(s, **changed) == dataclasses.replace(s, **changed)
    assert with_(s) == s


@settings(max_examples=200, deadline=None)
@given(histories(), st.floats(1.0, 30 * 86_400.0))
def test_no_decision_changes_a_state_it_is_given(case: Any, later: float) -> None:
    """The state records are not frozen (engine/cadence/decide.py) and states are shared
    (held by the worker, a batch's before and after): the decisions copy, never assign."""
    s, signal = case
    was = dataclasses.astuple(s)
    after = on_event(s, signal, BOOK, NY, [])
    fire(s, signal.ts + later, BOOK, NY, [])
    fire(after, signal.ts + later, BOOK, NY, [])
    assert dataclasses.astuple(s) == was


@settings(max_examples=300, deadline=None)
@given(histories())
def test_a_stored_state_decodes_to_the_state_it_was(case: Any) -> None:
    """What lets the worker hold the state it wrote instead of decoding its bytes again."""
    s = case[0]
    assert decode(encode(s)) == s


def _fx_with(cad: Any, key: tuple[str, str], state: CadenceState) -> CadenceEffects:
    fx = CadenceEffects()
    fx.states[key] = (0, CadenceState(), state)
    cad.finish(fx, (), 0)
    return fx


def test_held_states_follow_the_bytes_redis_returns(
    client: Any, make_settings: Any, prefix: str
) -> None:
    settings_ = make_settings(streams={"partitions": 1}, cadence={"enabled": True})
    cad = build_parts(settings_, client).processor._cadence
    key, at = ("t", "L1"), lead_key(prefix, "t", "L1", "c")
    one = CadenceState(plan="cadence_14d", status="active", due=10.0)
    fx = _fx_with(cad, key, one)  # written by this worker: held, not decoded again
    client.set(at, fx.writes[key])
    events = [Event(event_id="e", lead_id="L1", type="page_view", ts=1.0, tenant="t")]
    assert cad.begin([(0, b"", {})], events).loaded[key] is one
    _fx_with(cad, key, with_(one, due=20.0))  # a batch that never committed: Redis has `one`
    assert cad.begin([(0, b"", {})], events).loaded[key] == one
    other = with_(one, status="paused", due=30.0)  # another writer
    client.set(at, encode(other))
    assert cad.begin([(0, b"", {})], events).loaded[key] == other


def test_held_states_are_bounded(client: Any, make_settings: Any) -> None:
    settings_ = make_settings(streams={"partitions": 1}, cadence={"enabled": True})
    cad = build_parts(settings_, client).processor._cadence
    cad._held_max = 16
    for i in range(100):
        _fx_with(cad, ("t", f"L{i}"), CadenceState(plan="p", status="active", due=float(i + 1)))
    assert len(cad._held) <= 16 and ("t", "L99") in cad._held


def test_due_writes_are_grouped_per_partition(client: Any, make_settings: Any, prefix: str) -> None:
    settings_ = make_settings(streams={"partitions": 2}, cadence={"enabled": True})
    parts = build_parts(settings_, client)
    client.zadd(cadence_due_key(prefix, 0), {"t\x1fgone": 1.0, "t\x1fkept": 2.0})
    fx = CadenceEffects()
    fx.due = {(0, "t\x1fa"): 5.0, (0, "t\x1fgone"): None, (1, "t\x1fb"): 6.0,
              (0, "t\x1fc"): 7.0, (1, "t\x1fnever"): None}  # fmt: skip
    pipe = client.pipeline(transaction=True)
    fx.apply(pipe, parts.names, 100, 60)
    assert len(pipe.command_stack) == 4  # one ZREM and one ZADD per partition
    pipe.execute()
    assert client.zrange(cadence_due_key(prefix, 0), 0, -1, withscores=True) == [
        (b"t\x1fkept", 2.0), (b"t\x1fa", 5.0), (b"t\x1fc", 7.0)]  # fmt: skip
    assert client.zrange(cadence_due_key(prefix, 1), 0, -1, withscores=True) == [(b"t\x1fb", 6.0)]


def test_a_committed_state_is_not_read_again_within_its_ttl(
    client: Any, make_settings: Any, prefix: str, monkeypatch: Any
) -> None:
    """The worker holds the states its commits wrote (or renewed): the next batch takes
    them without reading Redis, until their TTL may have run out (nine tenths of it), a
    failed batch (``forget``), or a batch whose commit failed (it confirms nothing)."""
    settings_ = make_settings(streams={"partitions": 1}, cadence={"enabled": True})
    parts = build_parts(settings_, client)
    proc, cad = parts.processor, parts.processor._cadence
    now = [1_748_872_800.0]
    cad.clock = lambda: now[0]
    key, at = ("t", "L1"), lead_key(prefix, "t", "L1", "c")
    proc.process_retrying(_entries([_ev("a1", "inquiry", now[0])], 1))
    committed = cad.begin([(0, b"", {})], [_event()]).loaded[key]
    assert committed.status == "active" and decode(client.get(at)) == committed
    ended = encode(with_(committed, status="ended"))  # a write no engine makes
    client.set(at, ended)
    assert cad.begin([(0, b"", {})], [_event()]).loaded[key] is committed  # not read
    cad.forget()
    assert cad.begin([(0, b"", {})], [_event()]).loaded[key].status == "ended"  # read
    client.set(at, encode(committed))
    proc.process_retrying(_entries([_ev("a2", "page_view", now[0] + 60)], 2))  # TTL renewed
    client.set(at, ended)
    assert cad.begin([(0, b"", {})], [_event()]).loaded[key] == committed
    client.set(at, encode(committed))
    real = redis.client.Pipeline.execute

    def failing(self: Any, *a: Any, **kw: Any) -> Any:
        if self.transaction:
            raise redis.ResponseError("the batch's transaction failed")
        return real(self, *a, **kw)

    monkeypatch.setattr(redis.client.Pipeline, "execute", failing)
    with pytest.raises(redis.ResponseError):  # its state held, not confirmed: read again
        proc.process(_entries([_ev("a3", "lost", now[0] + 120)], 3))
    monkeypatch.undo()
    assert cad.begin([(0, b"", {})], [_event()]).loaded[key] == committed
    proc.process_retrying(_entries([_ev("a4", "page_view", now[0] + 180)], 4))
    client.set(at, ended)
    now[0] += settings_.features.idle_expire_d * 86_400 * 0.9  # its TTL may be running out
    assert cad.begin([(0, b"", {})], [_event()]).loaded[key].status == "ended"


def _event() -> Event:
    return Event(event_id="e", lead_id="L1", type="page_view", ts=1.0, tenant="t")


def _ev(eid: str, kind: str, ts: float) -> dict[str, Any]:
    return {"event_id": eid, "lead_id": "L1", "type": kind, "ts": ts, "tenant": "t"}


def _entries(events: list[dict[str, Any]], start: int) -> list[Any]:
    return [(0, f"{start + i}-0".encode(), {b"e": msgpack.packb(e, use_bin_type=True)})
            for i, e in enumerate(events)]  # fmt: skip
