"""Round 3 of the cadence CPU work: the plan state stored as msgpack (the JSON form written
before is still read: no migration), and the batch's states and steps written by one
script call in its transaction (``runner._WRITE``). States stored while they still held
the personalisation fields (index 11) are read, those fields left aside."""

from __future__ import annotations

import json
from typing import Any

import msgpack
from hypothesis import given, settings

from engine.app import build_parts
from engine.cadence.decide import CadenceState, decode, encode, with_
from engine.cadence.runner import CadenceEffects, step_entries
from engine.events import Event
from engine.keys import lead_key, pattern
from engine.redis_client import connect, without_retry
from tests.cluster import LocalCluster
from tests.engine.cadence.test_passive import histories

#: The personalisation fields a stored state held before they left it (index 11).
_FIELDS = ["p1", "1 Main St", "east", "0-3m", "buyer", "web", "ag1"]


def _old_items(s: CadenceState) -> list[Any]:
    """A state as the codecs before this one laid it out: its fields at index 11."""
    return [s.plan, s.status, s.step, s.start, s.shift, s.due, s.since, s.cycle, s.why,
            s.end_reason, list(s.blocked), _FIELDS, [[name, ts] for name, ts in s.ran],
            [s.last, s.replied, s.last_timing], [list(s.engaged), s.holdout, s.timing]]  # fmt: skip


def _json_form(s: CadenceState) -> str:
    """The ``:c`` value as the JSON codec before msgpack wrote it."""
    return json.dumps(_old_items(s), separators=(",", ":"))


def _old_msgpack(s: CadenceState) -> bytes:
    """The ``:c`` value as the msgpack codec wrote it while states held their fields."""
    return bytes(msgpack.packb(_old_items(s), use_bin_type=True))


@settings(max_examples=300, deadline=None)
@given(histories())
def test_every_form_decodes_to_the_state(case: Any) -> None:
    s = case[0]
    raw = encode(s)
    assert isinstance(raw, bytes) and raw[:1] != b"["
    assert decode(raw) == s
    assert decode(_json_form(s)) == s == decode(_json_form(s).encode())
    assert decode(_old_msgpack(s)) == s


def test_the_layout_keeps_an_empty_index_11() -> None:
    """Code from before reads a state written now (a rollback): its fields, empty."""
    s = CadenceState(plan="p", status="active", due=5.0, ran=(("p", 1.0),), last="p.0.sms")
    items = msgpack.unpackb(encode(s), raw=False)
    assert items[11] == [] and items[:11] == _old_items(s)[:11]
    assert items[12:] == _old_items(s)[12:]


def test_odd_text_and_junk() -> None:
    s = CadenceState(plan="p", status="active", why="a\ud800 \u00e9")
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
    old = CadenceState(plan="cadence_14d", status="active", due=10.0)
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
