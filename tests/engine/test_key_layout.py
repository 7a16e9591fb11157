"""The slot-per-partition key layout (``redis.key_layout = "partition"``, issue 13).

A simulator file replayed in both layouts gives the same score records, alerts, labels
and lead state (keys compared without their hash tag); in the partition layout every
key a batch writes is under its partition's tag, so on a Redis Cluster a batch stays
one MULTI/EXEC, and a deployment's keys spread over the masters.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest
from redis.crc import key_slot

from benchmarks.fault_crash import snapshot
from benchmarks.harness import delete_prefix
from benchmarks.simulator import SimConfig, generate
from engine.keys import every_pattern
from engine.redis_client import connect
from engine.streams import stream_names
from tests.cluster import LocalCluster
from tests.engine.test_cluster_results import _replay as _run


def _source(tmp_path: Path, leads: int) -> Path:
    events = list(generate(SimConfig(seed=7, leads=leads, days=60.0, tenant="sim")))
    src = tmp_path / "events.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in events))
    return src


def _labels(client: Any, prefix: str) -> list[dict[str, Any]]:
    return [msgpack.unpackb(f[b"l"], raw=False) for _, f in client.xrange(f"{{{prefix}}}:labels")]


def test_both_layouts_give_the_same_scores_alerts_labels_and_state(
    tmp_path: Path, client: Any, redis_url: str, make_settings: Any, prefix: str
) -> None:
    src = _source(tmp_path, leads=60)
    other = prefix + "p"
    flat = make_settings(streams={"partitions": 4})
    sharded = make_settings(streams={"partitions": 4},
                            redis={"key_prefix": other, "key_layout": "partition"})  # fmt: skip
    try:
        one = _run(tmp_path, "one", src, redis_url, flat)
        one.update(labels=_labels(client, prefix), state=snapshot(client, prefix, "sim"))
        per = _run(tmp_path, "per", src, redis_url, sharded)
        per.update(labels=_labels(client, other), state=snapshot(client, other, "sim"))
        tags = Counter(k.decode().split("}", 1)[0] for k in client.scan_iter(
            match=every_pattern(other), count=1000))  # fmt: skip
        outbox = [client.xlen(f"{{{s}}}:outbox") for s in stream_names(sharded).shards()]
        root = {k.decode().split("}:", 1)[1] for k in client.scan_iter(match=f"{{{other}}}:*")}
    finally:
        delete_prefix(client, other)
    assert one["alerts"] and one["labels"] and len(one["scores"]) == 60
    for part in ("scores", "alerts", "labels", "state"):
        assert per[part] == one[part], part
    # every partition's tag holds keys, its outbox drained; under the deployment's own
    # tag only the trainer's labels stream (and what was forwarded to it) and the model
    assert len([t for t in tags if t != "{" + other]) == 4 and all(n == 0 for n in outbox)
    assert "labels" in root and all(k in ("labels", "fwd") or k.startswith("model:")
                                    for k in root), root  # fmt: skip


@pytest.mark.slow
def test_on_a_cluster_the_partition_layout_matches_one_server_and_spreads(
    tmp_path: Path, redis_cluster: LocalCluster, client: Any, redis_url: str,
    make_settings: Any, prefix: str,
) -> None:  # fmt: skip
    src = _source(tmp_path, leads=90)
    layout = {"key_layout": "partition"}
    settings = make_settings(streams={"partitions": 6}, redis={"key_prefix": prefix, **layout})
    cluster = connect(redis_cluster.url, retries=0)
    try:
        one = _run(tmp_path, "one", src, redis_url, settings)
        one.update(labels=_labels(client, prefix), state=snapshot(client, prefix, "sim"))
        on = _run(tmp_path, "cluster", src, redis_cluster.url, settings)
        on.update(labels=_labels(cluster, prefix), state=snapshot(cluster, prefix, "sim"))
        slots = [key_slot(k) for k in cluster.scan_iter(match=every_pattern(prefix), count=1000)]
        masters = {n.name: n for n in cluster.get_primaries()}
        per_master = Counter(cluster.nodes_manager.get_node_from_slot(s).name for s in slots)
    finally:
        delete_prefix(cluster, prefix)
        cluster.close()
    for part in ("scores", "alerts", "labels", "state"):
        assert on[part] == one[part], part
    counts = [per_master.get(name, 0) for name in masters]
    mean = sum(counts) / len(counts)
    assert all(abs(n - mean) <= 0.2 * mean for n in counts), counts  # +-20 %
