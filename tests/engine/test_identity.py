"""Identity through the stream (engine/identity.py) on a real server, two partitions.

Each partition has its own worker (its own processor and lead cache). A visitor ``~V``
and its lead ``L`` on different partitions: the identify on L's partition sends a
request to V's partition, whose worker hands V's state over; the final state of L is
the one a single partition folding in one place gives, for any interleaving of the
visitor's events, the identify and the batch splits (hypothesis). A worker SIGKILLed
between the request and the hand-over loses nothing and folds once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.app import build_parts
from engine.dataflow import EngineParts
from engine.events import partition_of
from engine.merge_cli import queue_merge
from engine.records import read_score
from engine.streams import Producer, committed_positions, unprocessed
from features.state import LeadFeatures, eid_hash, read_record
from features.store import lead_key

T0 = 1_767_225_600.0
TENANT = "t"
VISITOR, LEAD, SAME_LEAD = "v0", "L4", "L0"  # ~v0 is on partition 1, L4 on 0, L0 on 1


def test_the_ids_sit_where_the_tests_need_them() -> None:
    assert partition_of(TENANT, f"~{VISITOR}", 2) != partition_of(TENANT, LEAD, 2)
    assert partition_of(TENANT, f"~{VISITOR}", 2) == partition_of(TENANT, SAME_LEAD, 2)


def visitor_events(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        etype = ("property_view", "property_save", "search")[i % 3]
        out.append({"event_id": f"v{i}", "lead_id": "", "visitor_id": VISITOR, "type": etype,
                    "ts": T0 + 60 * i, "tenant": TENANT, "property_id": f"P{i % 2}",
                    "area": "z1"})  # fmt: skip
    return out


def lead_events(lead: str, n: int, identify_at: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        etype = "lead_created" if i == 0 else "property_view"
        out.append({"event_id": f"l{i}", "lead_id": lead, "type": etype, "ts": T0 + 30 + 60 * i,
                    "tenant": TENANT, "property_id": "P1", "source": "portal"})  # fmt: skip
    ident = {"event_id": "id1", "lead_id": lead, "visitor_id": VISITOR, "type": "identify",
             "ts": T0 + 45 + 60 * identify_at, "tenant": TENANT}  # fmt: skip
    out.insert(identify_at, ident)
    return out


class Cluster:
    """One worker per partition, stepped by hand: which partition runs, and how much."""

    def __init__(self, settings: Any, client: Any) -> None:
        self.client = client
        self.prefix = settings.redis.key_prefix
        p = settings.streams.partitions
        self.workers: list[EngineParts] = [build_parts(settings, client) for _ in range(p)]
        self.names = self.workers[0].names
        self.producer = Producer(client, self.names, maxlen=10**9)

    def append(self, event: dict[str, Any], gateway: bool = False) -> None:
        """Append as the gateway does (``gateway``: following a written alias)."""
        if gateway and not event["lead_id"]:
            alias = self.client.hget(f"{{{self.prefix}}}:alias:{TENANT}", f"~{event['visitor_id']}")
            if alias is not None:
                event = {**event, "lead_id": alias.decode()}
        self.producer.send([event])

    def step(self, partition: int, count: int) -> int:
        """The partition's worker processes up to ``count`` of its next entries (one batch)."""
        after = committed_positions(self.client, self.names)[partition]
        rows = self.client.xread({self.names.events(partition): after}, count=count)
        if not rows:
            return 0
        batch = [(partition, sid, fields) for sid, fields in rows[0][1]]
        self.workers[partition].processor.process_retrying(batch)
        return len(batch)

    def drain(self) -> None:
        for _ in range(50):
            left = unprocessed(self.client, self.names)
            if not left:
                return
            for p in left:
                self.step(p, 1000)
        raise AssertionError("the partitions never drained")

    def lead(self, lead: str) -> LeadFeatures:
        return read_record(self.client.get(lead_key(self.prefix, TENANT, lead, "f")))


def _view(f: LeadFeatures, hids: tuple[str, ...] = ()) -> dict[str, Any]:
    """What folding must not change (gap and comeback times record arrival, by design)."""
    times = {k: v for k, v in f.times.items() if k not in ("gap_s", "react_ts")}
    marks = {eid_hash(f"handover:{h}") for h in hids}
    return {"counts": f.counts, "times": times, "texts": f.texts, "blocked": f.blocked,
            "profile": f.profile, "views": f.views, "pids": f.pids, "areas": f.areas,
            "contacts": f.contacts, "seen": f.seen_set - marks}  # fmt: skip


def _reference(make_settings: Any, client: Any, prefix: str, events: list[dict[str, Any]],
               lead: str) -> dict[str, Any]:  # fmt: skip
    """One partition, one batch: the fold happens in one place."""
    s = make_settings(redis={"key_prefix": prefix}, streams={"partitions": 1})
    one = Cluster(s, client)
    for e in events:
        one.append(e)
    one.drain()
    return _view(one.lead(lead))


def _wipe(client: Any, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
    if keys:
        client.delete(*keys)


def _assert_folded_once(c: Cluster, lead: str, expected: dict[str, Any], hid: str) -> None:
    assert _view(c.lead(lead), (hid,)) == expected
    assert c.client.exists(lead_key(c.prefix, TENANT, f"~{VISITOR}", "f")) == 0
    assert c.client.hget(f"{{{c.prefix}}}:alias:{TENANT}", f"~{VISITOR}") == lead.encode()


def test_cross_partition_identify_hands_the_visitor_over(
    client: Any, make_settings: Any, prefix: str
) -> None:
    events = visitor_events(4) + lead_events(LEAD, 3, 1)
    expected = _reference(make_settings, client, prefix + "r", events, LEAD)
    c = Cluster(make_settings(streams={"partitions": 2}), client)
    for e in events:
        c.append(e)
    assert c.step(0, 100) == 4  # L's worker: identify -> a request on V's partition
    assert c.lead(LEAD).counts["saves"] == 0
    requests = c.client.xrange(c.names.events(1))[4:]
    assert [fields.keys() for _, fields in requests] == [{b"c"}]
    assert msgpack.unpackb(requests[0][1][b"c"], raw=False)["k"] == "request"
    c.step(1, 100)  # V's worker: its state leaves, the alias is written
    assert c.client.exists(lead_key(prefix, TENANT, f"~{VISITOR}", "f")) == 0
    c.append(visitor_events(5)[-1])  # a visitor event still sent to V's partition
    c.drain()
    expected_late = _reference(make_settings, client, prefix + "q",
                               events + [visitor_events(5)[-1]], LEAD)  # fmt: skip
    _assert_folded_once(c, LEAD, expected_late, "identify:id1")
    assert expected_late != expected
    record = read_score(TENANT, LEAD, c.client.get(lead_key(prefix, TENANT, LEAD, "f")))
    assert record is not None  # the hand-over was scored as L's identify
    _wipe(client, prefix + "r")
    _wipe(client, prefix + "q")


def test_same_partition_identify_folds_at_once(
    client: Any, make_settings: Any, prefix: str
) -> None:
    events = visitor_events(3) + lead_events(SAME_LEAD, 2, 1)
    expected = _reference(make_settings, client, prefix + "r", events, SAME_LEAD)
    c = Cluster(make_settings(streams={"partitions": 2}), client)
    for e in events:
        c.append(e)
    c.step(1, 100)
    assert unprocessed(client, c.names) == []  # nothing travelled: one worker owns both
    _assert_folded_once(c, SAME_LEAD, expected, "-")
    _wipe(client, prefix + "r")


def test_merge_is_queued_and_folded_by_the_engine_once(
    client: Any, make_settings: Any, prefix: str
) -> None:
    a = [{**e, "lead_id": "L4", "event_id": f"a{i}"} for i, e in enumerate(lead_events("", 3, 1))
         if e["type"] != "identify"]  # fmt: skip
    b = [{**e, "lead_id": "L0", "event_id": f"b{i}", "ts": e["ts"] + 7} for i, e in
         enumerate(lead_events("", 2, 1)) if e["type"] != "identify"]  # fmt: skip
    ref = Cluster(make_settings(redis={"key_prefix": prefix + "r"},
                                streams={"partitions": 1}), client)  # fmt: skip
    for e in a + b:
        ref.append(e)
    ref.drain()
    queue_merge(client, ref.names, TENANT, "L4", "L0")
    ref.drain()
    expected = _view(ref.lead("L4"), ("merge:L0>L4",))
    c = Cluster(make_settings(streams={"partitions": 2}), client)
    for e in a + b:
        c.append(e)
    c.drain()
    queue_merge(client, c.names, TENANT, "L4", "L0")
    queue_merge(client, c.names, TENANT, "L4", "L0")  # run twice: folds once
    assert c.lead("L4").counts["n"] == len(a)  # queued, not folded: the engine folds
    c.drain()
    assert _view(c.lead("L4"), ("merge:L0>L4",)) == expected
    assert c.lead("L4").counts["n"] == len(a) + len(b)
    assert (
        client.exists(lead_key(prefix, TENANT, "L0", "f"), lead_key(prefix, TENANT, "L0", "r")) == 0
    )
    assert client.zscore(f"{{{prefix}}}:hot:{TENANT}", "L0") is None
    c.append({**b[0], "event_id": "b9", "ts": b[0]["ts"] + 99})  # L0's later event follows
    c.drain()
    assert c.lead("L4").counts["n"] == len(a) + len(b) + 1
    _wipe(client, prefix + "r")


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    n_visitor=st.integers(0, 5),
    n_lead=st.integers(1, 3),
    identify_at=st.integers(0, 3),
    steps=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 4), st.booleans()), max_size=14),
)
def test_any_interleaving_and_batch_split_gives_the_one_place_fold(
    client: Any, make_settings: Any, prefix: str, n_visitor: int, n_lead: int,
    identify_at: int, steps: list[tuple[int, int, bool]],
) -> None:  # fmt: skip
    vis = visitor_events(n_visitor)
    lead = lead_events(LEAD, n_lead, min(identify_at, n_lead))
    base = f"h{os.urandom(5).hex()}"
    try:
        expected = _reference(make_settings, client, base + "r", vis + lead, LEAD)
        c = Cluster(make_settings(redis={"key_prefix": base}, streams={"partitions": 2}), client)
        for kind, count, gateway in steps:
            if kind == 0 and vis:
                c.append(vis.pop(0), gateway)
            elif kind == 1 and lead:
                c.append(lead.pop(0))
            elif kind >= 2:
                c.step(kind - 2, count)
        for e in vis + lead:
            c.append(e)
        c.drain()
        _assert_folded_once(c, LEAD, expected, "identify:id1")
    finally:
        _wipe(client, base)
        _wipe(client, base + "r")


_KILLED = r"""
import os, signal, sys
from engine.settings import load_settings
from tests.engine.test_identity import Cluster
stage, url, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
from engine.redis_client import connect
client = connect(url)
s = load_settings(overrides={"redis": {"key_prefix": prefix}, "streams": {"partitions": 2}},
                  environ={})
c = Cluster(s, client)
c.step(0, 100)  # L's worker: identify -> the request is committed
if stage == "handing":  # V's worker dies inside its hand-over transaction, before EXEC
    import redis.client
    def die(self, *a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    redis.client.Pipeline.execute = die
if stage in ("handing", "handed"):
    c.step(1, 100)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_sigkill_between_request_and_hand_over_loses_nothing(
    client: Any, make_settings: Any, prefix: str, redis_url: str
) -> None:
    """Killed with the request committed; inside the hand-over's transaction; with the
    hand-over committed and not yet folded. A restarted pair of workers ends as one
    place would, every event counted once."""
    events = visitor_events(4) + lead_events(LEAD, 3, 1)
    expected = _reference(make_settings, client, prefix + "r", events, LEAD)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root}
    runs: dict[str, tuple[Cluster, subprocess.Popen[bytes]]] = {}
    for stage in ("requested", "handing", "handed"):  # the three processes run at once
        run = f"{prefix}{stage[0]}{len(stage)}"
        c = Cluster(make_settings(redis={"key_prefix": run}, streams={"partitions": 2}), client)
        for e in events:
            c.append(e)
        proc = subprocess.Popen([sys.executable, "-c", _KILLED, stage, redis_url, run], env=env,
                                cwd=root, stderr=subprocess.PIPE)  # fmt: skip
        runs[stage] = (c, proc)
    for stage, (c, proc) in runs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        kinds = [msgpack.unpackb(f[b"c"], raw=False)["k"] for p in (0, 1)
                 for _, f in client.xrange(c.names.events(p)) if b"c" in f]  # fmt: skip
        assert kinds == (["handover", "request"] if stage == "handed" else ["request"]), stage
        restarted = Cluster(c.workers[0].processor._s, client)  # a fresh process's state
        restarted.drain()
        _assert_folded_once(restarted, LEAD, expected, "identify:id1")
        assert restarted.lead(LEAD).counts["n"] == len(events)  # every event once
        _wipe(client, c.prefix)
    _wipe(client, prefix + "r")
