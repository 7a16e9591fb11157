"""``leadpulse migrate`` with ``redis.key_layout = "partition"``: a deployment written in
the one-slot layout, moved under its partitions' tags, reads and continues exactly as a
deployment written in the partition layout from the start."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import redis

from benchmarks.fault_crash import snapshot
from benchmarks.harness import delete_prefix
from benchmarks.simulator import SimConfig, generate
from engine.cli import main
from engine.errors import LeadpulseError
from engine.keys import every_pattern, pattern
from engine.migrate_cli import check_layout
from engine.records import RecordReader
from engine.redis_client import connect
from engine.relayout import relayout
from engine.replay import replay_file
from engine.reporting.figures import read_counts
from engine.streams import stream_names
from engine.views import read_scores
from tests.cluster import LocalCluster


def _replay(tmp_path: Path, events: list[dict[str, Any]], url: str, settings: Any) -> None:
    src = tmp_path / f"{settings.redis.key_prefix}.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in events))
    out = str(tmp_path / f"{settings.redis.key_prefix}-scores.jsonl")
    assert replay_file(str(src), out, redis_url=url, settings=settings) == 0


def test_the_one_slot_layout_moved_reads_as_the_partition_layout(
    tmp_path: Path, redis_url: str, make_settings: Any, client: redis.Redis, prefix: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    events = list(generate(SimConfig(seed=3, leads=40, days=45.0, tenant="sim")))
    leads = sorted({("sim", e["lead_id"]) for e in events})
    other = prefix + "p"
    flat = make_settings(streams={"partitions": 4})
    layout = {"key_prefix": prefix, "key_layout": "partition"}
    sharded = make_settings(streams={"partitions": 4}, redis=layout)
    fresh = make_settings(streams={"partitions": 4},
                          redis={"key_prefix": other, "key_layout": "partition"})  # fmt: skip
    try:
        _replay(tmp_path, events, redis_url, flat)
        client.xgroup_create(stream_names(flat).alerts, "delivery", id="0")
        _replay(tmp_path, events, redis_url, fresh)
        with pytest.raises(LeadpulseError, match="run `leadpulse migrate`"):
            check_layout(client, sharded)  # one-slot data, partition layout configured
        monkeypatch.setenv("LEADPULSE__REDIS__KEY_PREFIX", prefix)
        monkeypatch.setenv("LEADPULSE__REDIS__KEY_LAYOUT", "partition")
        monkeypatch.setenv("LEADPULSE__STREAMS__PARTITIONS", "4")
        assert main(["migrate", "--redis-url", redis_url]) == 0
        out = capsys.readouterr().out
        moved, expected = snapshot(client, prefix, "sim"), snapshot(client, other, "sim")
        scores = read_scores(client, RecordReader(sharded), leads)
        want = read_scores(client, RecordReader(fresh), leads)
        left = {k.decode().split("}:", 1)[1] for k in client.scan_iter(match=pattern(prefix))}
        period = (date(2025, 12, 1), date(2026, 4, 30))
        counts = read_counts(client, stream_names(sharded), "sim", *period)
        want_counts = read_counts(client, stream_names(fresh), "sim", *period)
        groups = client.xinfo_groups(stream_names(sharded).of(0).alerts)
        check_layout(client, sharded)  # migrated: fine
        with pytest.raises(LeadpulseError, match="set redis.key_layout = 'partition'"):
            check_layout(client, flat)
        again = relayout(client, stream_names(sharded))
    finally:
        delete_prefix(client, other)
    assert "to the tags of 4 partitions" in out
    assert moved == expected and scores == want and any(s for s in scores)
    # the model, its labels and the report counters stay (reports add the deployment's own)
    assert all(k == "labels" or k.startswith(("model:", "rpt:")) for k in left), left
    assert counts == want_counts and counts[0]
    assert groups[0]["name"] == b"delivery"
    assert (again.renamed, again.split, again.kept) == (0, 0, [])  # twice: nothing to do


def test_a_dry_run_counts_and_moves_nothing(
    tmp_path: Path, redis_url: str, make_settings: Any, client: redis.Redis, prefix: str
) -> None:
    events = list(generate(SimConfig(seed=4, leads=10, days=20.0, tenant="sim")))
    _replay(tmp_path, events, redis_url, make_settings(streams={"partitions": 2}))
    before = sorted(client.scan_iter(match=every_pattern(prefix)))
    layout = {"key_prefix": prefix, "key_layout": "partition"}
    names = stream_names(make_settings(streams={"partitions": 2}, redis=layout))
    done = relayout(client, names, dry_run=True)
    assert done.renamed > 10 and done.split >= 3
    assert sorted(client.scan_iter(match=every_pattern(prefix))) == before


def test_relayout_refuses_a_cluster(redis_cluster: LocalCluster, make_settings: Any) -> None:
    cluster = connect(redis_cluster.url, retries=0)
    names = stream_names(make_settings(redis={"key_layout": "partition"}))
    try:
        with pytest.raises(LeadpulseError, match="single server"):
            relayout(cluster, names)
    finally:
        cluster.close()
