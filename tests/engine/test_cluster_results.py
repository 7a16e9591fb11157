"""Replay and the crash test on a 3-master Redis Cluster give one server's results (issue 13).

Both against the session's real local cluster (``tests/cluster.py``, 3 masters + 3
replicas) and the test server:

- a simulator file replayed on the cluster and on one server: the same score records
  (every field), alerts (all but the stream id and the wall-clock stamps), labels
  (every field of every labelled example, in order) and everything else a run leaves
  behind that ``benchmarks.fault_crash.snapshot`` compares (features, snapshots, the
  hot list, what a restarted trainer has learned);
- ``leadpulse run`` against the cluster SIGKILLed three times mid-stream and restarted
  ends exactly where an uninterrupted run on one server ends (one partition, so the
  online model learns in one order in both; see ``tests/engine/test_crash.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

from benchmarks.fault_crash import crash_dataflow, snapshot
from benchmarks.harness import delete_prefix
from benchmarks.simulator import SimConfig, generate
from engine.redis_client import connect, is_cluster
from engine.replay import replay_file
from tests.cluster import LocalCluster
from tests.engine.crash_results import assert_same_as_uninterrupted

pytestmark = pytest.mark.slow

_VOLATILE = ("stream_id", "ingest_ms", "emit_ms")  # where and when, not what


def _sim(seed: int, leads: int) -> list[dict[str, Any]]:
    events = list(generate(SimConfig(seed=seed, leads=leads, days=60.0, tenant="sim")))
    assert any(e["type"] == "appointment_set" for e in events)  # outcomes: labels, learning
    return events


def _labels(client: Any, prefix: str) -> list[dict[str, Any]]:
    rows = client.xrange(f"{{{prefix}}}:labels")
    return [msgpack.unpackb(fields[b"l"], raw=False) for _, fields in rows]


def _replay(tmp_path: Path, name: str, src: Path, url: str, settings: Any) -> dict[str, Any]:
    scores, alerts = tmp_path / f"{name}-scores.jsonl", tmp_path / f"{name}-alerts.jsonl"
    code = replay_file(str(src), str(scores), alerts_out=str(alerts), redis_url=url,
                       settings=settings)  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in alerts.read_text().splitlines()]
    return {
        "scores": [json.loads(line) for line in scores.read_text().splitlines()],
        "alerts": sorted(
            ({k: v for k, v in a.items() if k not in _VOLATILE} for a in rows),
            key=lambda a: a["alert_id"],
        ),
    }


def test_replay_on_the_cluster_gives_one_servers_scores_alerts_and_labels(
    tmp_path: Path, redis_cluster: LocalCluster, redis_url: str, make_settings: Any,
    client: Any, prefix: str,
) -> None:  # fmt: skip
    sim = _sim(seed=5, leads=80)
    src = tmp_path / "events.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in sim))
    settings = make_settings(streams={"partitions": 4})
    cluster = connect(redis_cluster.url, retries=0)
    try:
        assert is_cluster(cluster) and not is_cluster(client)
        one = _replay(tmp_path, "one", src, redis_url, settings)
        one.update(labels=_labels(client, prefix), state=snapshot(client, prefix, "sim"))
        on_cluster = _replay(tmp_path, "cluster", src, redis_cluster.url, settings)
        on_cluster.update(labels=_labels(cluster, prefix), state=snapshot(cluster, prefix, "sim"))
    finally:
        delete_prefix(cluster, prefix)
        cluster.close()
    assert len(one["scores"]) == 80 and one["alerts"] and one["labels"]
    assert one["state"]["labels_learned"] == len(one["labels"])
    for part in ("scores", "alerts", "labels", "state"):
        assert on_cluster[part] == one[part], part


def test_sigkill_on_the_cluster_and_restart_gives_one_servers_result(
    redis_cluster: LocalCluster, client: Any, prefix: str
) -> None:
    """Reference: the flow in process on one server. Crash run: ``leadpulse run`` with
    ``REDIS_URL`` naming a cluster node, SIGKILLed 3 times at random committed positions,
    restarted, drained; everything compared key by key."""
    events = _sim(seed=5, leads=120)
    cluster = connect(redis_cluster.url, retries=0)
    try:
        result = crash_dataflow(cluster, redis_cluster.url, events, kills=3, seed=1,
                                base=prefix, reference_client=client)  # fmt: skip
        crash_keys = len(list(cluster.scan_iter(match=f"{{{prefix}c}}:*", count=1000)))
    finally:
        delete_prefix(cluster, prefix + "c")
        cluster.close()
        delete_prefix(client, prefix + "r")
    assert crash_keys > 100  # the crash run's keys were on the cluster, not on the server
    assert not list(client.scan_iter(match=f"{{{prefix}c}}:*"))
    assert_same_as_uninterrupted(result, kills=3)


def test_sigkill_on_the_cluster_in_the_partition_layout_gives_one_servers_result(
    redis_cluster: LocalCluster, client: Any, prefix: str
) -> None:
    """The crash test with ``redis.key_layout = "partition"``: every batch commits in its
    partition's slot and its labels leave through the partition's outbox; SIGKILLs between
    a commit and the outbox's forwarding lose and repeat nothing."""
    events = _sim(seed=6, leads=120)
    cluster = connect(redis_cluster.url, retries=0)
    try:
        result = crash_dataflow(cluster, redis_cluster.url, events, kills=3, seed=2,
                                base=prefix, reference_client=client,
                                layout="partition")  # fmt: skip
    finally:
        delete_prefix(cluster, prefix + "c")
        cluster.close()
        delete_prefix(client, prefix + "r")
    assert_same_as_uninterrupted(result, kills=3)
