"""Stream retention: processed entries are trimmed, unprocessed ones never are."""

from __future__ import annotations

from typing import Any

import redis

from engine.app import build_parts
from engine.dataflow import build_flow, run_flow
from engine.keys import StreamNames
from engine.streams import CONTROL, Producer, committed_positions, stream_lag

T0 = 1_767_225_600.0


def _events(start: int, n: int) -> list[dict[str, Any]]:
    return [
        {"event_id": f"e{i}", "lead_id": f"L{i % 7}", "type": "page_view", "ts": T0 + i}
        for i in range(start, start + n)
    ]


def test_committed_entries_are_trimmed_and_pending_ones_kept(
    client: Any, make_settings: Any
) -> None:
    settings = make_settings(streams={"partitions": 1, "retain_processed_s": 0})
    parts = build_parts(settings, client)
    producer = Producer(client, parts.names, settings.streams.maxlen)
    for i in range(0, 1_000, 250):
        producer.send(_events(i, 250))
    run_flow(build_flow(parts, bounded=True))
    stream = parts.names.events(0)
    assert client.xlen(stream) < 1_000 // 2  # most of what was processed is gone
    committed = committed_positions(client, parts.names)[0]
    producer.send(_events(1_000, 300))  # appended, not yet processed
    pending = client.xrange(stream, min=f"({committed}", max="+")
    assert len(pending) == 300  # nothing unprocessed was trimmed
    run_flow(build_flow(build_parts(settings, client), bounded=True))
    assert client.xlen(stream) < 1_300 // 2  # trimmed again (approximately: whole nodes)


def test_no_cap_at_append_by_default(make_settings: Any) -> None:
    assert make_settings().streams.maxlen == 0


def test_stream_lag_counts_what_is_not_committed(client: Any, make_settings: Any) -> None:
    from engine.streams import stream_lag

    settings = make_settings(streams={"partitions": 1})
    parts = build_parts(settings, client)
    producer = Producer(client, parts.names, settings.streams.maxlen)
    producer.send(_events(0, 40))
    assert stream_lag(client, parts.names, [0]) == {0: 40}
    run_flow(build_flow(parts, bounded=True))
    assert stream_lag(client, parts.names, [0]) == {0: 0}
    producer.send(_events(40, 5))
    assert stream_lag(client, parts.names, [0]) == {0: 5}


def _labelled_run(client: Any, make_settings: Any, retain_s: float) -> tuple[Any, int, int]:
    """A bounded run that learns (labels at the horizon), checkpointing every batch."""
    from benchmarks.simulator import SimConfig, generate

    settings = make_settings(
        streams={"partitions": 1, "retain_processed_s": retain_s, "read_count": 200},
        scoring={"checkpoint_every_s": 0},
    )
    parts = build_parts(settings, client)
    producer = Producer(client, parts.names, settings.streams.maxlen)
    events = list(generate(SimConfig(seed=5, leads=60, days=60.0, tenant="sim")))
    for i in range(0, len(events), 1_000):
        producer.send(events[i : i + 1_000])
    run_flow(build_flow(parts, bounded=True))
    labels = f"{{{settings.redis.key_prefix}}}:labels"
    added = int(client.xinfo_stream(labels)["entries-added"])
    return settings, added, int(client.xlen(labels))


def test_learned_labels_are_trimmed_after_the_checkpoint(client: Any, make_settings: Any) -> None:
    from engine.learning import Learner
    from engine.model_store import ModelStore

    settings, added, kept = _labelled_run(client, make_settings, retain_s=0)
    assert added > 20
    assert kept < added // 2  # what the checkpointed model has learned is gone
    # ... and nothing it still needed: a trainer restarted from the checkpoint has them all
    store = ModelStore(client, settings.redis.key_prefix)
    assert Learner(settings, store, 0).live.labels_seen == added


def test_labels_within_the_retention_window_are_kept(client: Any, make_settings: Any) -> None:
    _, added, kept = _labelled_run(client, make_settings, retain_s=3_600)
    assert added > 20 and kept == added


def test_leads_gone_idle_leave_the_hot_list(client: Any, make_settings: Any) -> None:
    """A lead idle past ``idle_expire_d`` loses its features, so it leaves the hot list too
    (found by the soak: with new leads every day the hot zset grew for ever)."""
    import time

    from engine.sinks import hot_index_key, hot_key

    settings = make_settings(streams={"partitions": 1}, features={"idle_expire_d": 2 / 86_400})
    prefix = settings.redis.key_prefix

    def hand_raise(eid: str, lead: str) -> dict[str, Any]:
        return {"event_id": eid, "lead_id": lead, "tenant": "t1", "type": "showing_request",
                "ts": time.time(), "property_id": "P1"}  # fmt: skip

    def run(events: list[dict[str, Any]]) -> None:
        parts = build_parts(settings, client)
        Producer(client, parts.names, 0).send(events)
        run_flow(build_flow(parts, bounded=True))

    run([hand_raise("a", "L1"), hand_raise("b", "L2")])
    assert {m.decode() for m in client.zrange(hot_key(prefix, "t1"), 0, -1)} == {"L1", "L2"}
    time.sleep(2.2)  # both idle past the expiry: their keys are gone
    assert not client.exists(f"{{{prefix}}}:{{t1:L1}}:r", f"{{{prefix}}}:{{t1:L1}}:f")
    run([hand_raise("c", "L2")])  # L2 is back; the next commit prunes L1
    assert [m.decode() for m in client.zrange(hot_key(prefix, "t1"), 0, -1)] == ["L2"]
    assert [m.decode() for m in client.zrange(hot_index_key(prefix), 0, -1)] == ["t1\x1fL2"]


def test_sigterm_stops_at_a_batch_boundary_not_after_the_backlog(
    client: Any, make_settings: Any
) -> None:
    """`run` on SIGTERM stops at the next batch; the demo's end drains (drain=True)."""
    import threading

    settings = make_settings(streams={"partitions": 1, "read_count": 100})
    parts = build_parts(settings, client)
    Producer(client, parts.names, settings.streams.maxlen).send(_events(0, 2_000))
    stop = threading.Event()
    stop.set()  # SIGTERM before the first read
    run_flow(build_flow(parts, stop=stop, drain=False))
    assert stream_lag(client, parts.names, [0]) == {0: 2_000}  # nothing read, nothing lost
    run_flow(build_flow(build_parts(settings, client), stop=stop, drain=True))
    assert stream_lag(client, parts.names, [0]) == {0: 0}  # drained


def test_the_outbox_forwards_each_entry_exactly_once_across_a_crash(
    client: redis.Redis, prefix: str
) -> None:
    """A crash after an outbox entry was appended where it goes, before it was deleted from
    the outbox: the next forward skips it (the destination's ``fwd`` hash holds its id)."""
    from engine.keys import ModelKeys, outbox_key
    from engine.streams import forward_outbox, queue_outbox, queue_outbox_label

    names = StreamNames(prefix, 4, "partition")
    labels = ModelKeys(prefix).labels
    pipe = client.pipeline(transaction=True)
    queue_outbox(pipe, names.of(1), 3, b"hand-over")
    queue_outbox_label(pipe, names.of(1), b"example-1")
    pipe.execute()

    class CrashBeforeDelete:  # the process dies between the appends and the XDEL
        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

        def xdel(self, *_: Any) -> int:
            return 0

    assert forward_outbox(CrashBeforeDelete(), names, 1, labels, 1_000) == 2
    assert client.xlen(outbox_key(names.of(1))) == 2  # still there after the "crash"
    queue_outbox_label(client, names.of(1), b"example-2")
    assert forward_outbox(client, names, 1, labels, 1_000) == 3
    assert [f[b"l"] for _, f in client.xrange(labels)] == [b"example-1", b"example-2"]
    assert [f[CONTROL] for _, f in client.xrange(names.events(3))] == [b"hand-over"]
    assert client.xlen(outbox_key(names.of(1))) == 0
