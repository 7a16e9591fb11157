"""Round 3 of the cadence CPU work: the plan state stored as msgpack (the JSON form written
before is still read: no migration), and the batch's states and steps written by one
script call in its transaction (``runner._WRITE``)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings

from engine.app import build_parts
from engine.cadence.decide import CadenceState, Personal, decode, encode, with_
from engine.cadence.runner import CadenceEffects, step_entries
from engine.events import Event
from engine.keys import lead_key, pattern
from engine.redis_client import connect, without_retry
from tests.cluster import LocalCluster
from tests.engine.cadence.test_passive import histories


def _json_form(s: CadenceState) -> str:
    """The ``:c`` value as the JSON codec before msgpack wrote it."""
    p = s.personal
    return json.dumps(
        [s.plan, s.status, s.step, s.start, s.shift, s.due, s.since, s.cycle, s.why,
         s.end_reason, list(s.blocked),
         [p.property_id, p.address, p.area, p.timeline, p.side, p.source, p.agent_id],
         [[name, ts] for name, ts in s.ran], [s.last, s.replied, s.last_timing],
         [list(s.engaged), s.holdout, s.timing]],
        separators=(",", ":"),
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(histories())
def test_both_forms_decode_to_the_state(case: Any) -> None:
    s = case[0]
    raw = encode(s)
    assert isinstance(raw, bytes) and raw[:1] != b"["
    assert decode(raw) == s
    assert decode(_json_form(s)) == s == decode(_json_form(s).encode())


def test_odd_text_and_junk() -> None:
    s = CadenceState(plan="p", status="active", personal=Personal(address="a\ud800 \u00e9"))
    assert decode(encode(s)) == s == decode(_json_form(s).encode())
    for junk in (b"", b"{", b"[1,2]", b"\x93\x01\x02\x03", b"\xc1", b"\x91", b"null", b"\xff"):
        assert decode(junk) == CadenceState()


def test_a_json_state_is_read_and_rewritten_as_msgpack(
    client: Any, make_settings: Any, prefix: str
) -> None:
    settings_ = make_settings(streams={"partitions": 1}, cadence={"enabled": True})
    parts = build_parts(settings_, client)
    cad = parts.processor._cadence
    key, at = ("t", "L1"), lead_key(prefix, "t", "L1", "c")
    old = CadenceState(plan="cadence_14d", status="active", due=10.0, personal=Personal("p1"))
    client.set(at, _json_form(old))
    events = [Event(event_id="e", lead_id="L1", type="page_view", ts=1.0, tenant="t")]
    fx = cad.begin([(0, b"", {})], events)
    assert fx.loaded[key] == old
    new = with_(old, due=20.0)
    fx.states[key] = (0, old, new)
    fx.steps = [{"step_id": "s1", "kind": "task"}, {"step_id": "s2", "kind": "message"}]
    pipe = client.pipeline(transaction=True)
    fx.apply(pipe, parts.names, 100, 60)
    assert fx.writes == {}  # finish fills writes; apply alone writes the steps
    assert len(pipe.command_stack) == 1
    pipe.execute()
    assert [s["step_id"] for s in step_entries(client.xrange(parts.names.cadence))] == ["s1", "s2"]
    cad.finish(fx, (), 0)
    fx.steps = []
    pipe = client.pipeline(transaction=True)
    fx.apply(pipe, parts.names, 100, 60)
    pipe.execute()
    raw = client.get(at)
    assert raw == encode(new) and decode(raw) == new and 0 < client.ttl(at) <= 60
    assert len(client.xrange(parts.names.cadence)) == 2


def test_nothing_to_write_queues_no_script(client: Any, make_settings: Any) -> None:
    settings_ = make_settings(streams={"partitions": 1}, cadence={"enabled": True})
    parts = build_parts(settings_, client)
    pipe = client.pipeline(transaction=True)
    CadenceEffects().apply(pipe, parts.names, 100, 60)
    assert len(pipe.command_stack) == 0


def test_the_script_writes_states_and_steps_on_a_cluster(
    redis_cluster: LocalCluster, make_settings: Any, prefix: str
) -> None:
    """Every key it names has the prefix's hash tag: one slot, one node, inside MULTI."""
    settings_ = make_settings(streams={"partitions": 1}, cadence={"enabled": True})
    cluster = connect(redis_cluster.url, retries=0)
    try:
        names = build_parts(settings_, cluster).names
        fx = CadenceEffects()
        states = {("t", f"L{i}"): CadenceState(plan="p", status="active", due=i + 1.0)
                  for i in range(20)}  # fmt: skip
        fx.writes = {key: encode(s) for key, s in states.items()}
        fx.steps = [{"step_id": f"s{i}", "kind": "task"} for i in range(3)]
        pipe = without_retry(cluster).pipeline(transaction=True)
        fx.apply(pipe, names, 100, 60)
        pipe.execute()
        for (tenant, lead), s in states.items():
            assert decode(cluster.get(lead_key(prefix, tenant, lead, "c"))) == s
        assert [s["step_id"] for s in step_entries(cluster.xrange(names.cadence))] == [
            "s0", "s1", "s2"]  # fmt: skip
        for key in cluster.scan_iter(match=pattern(prefix), count=1000):
            cluster.delete(key)
    finally:
        cluster.close()
