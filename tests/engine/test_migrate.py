"""``leadpulse migrate``: data of the layout before hash tags is read the same after it.

A replay writes the current layout; its keys are renamed back to the old names
(``lp:…``), as an older leadpulse left them; ``migrate`` renames them again and every
score record, the hot list and the consumer group on the alerts stream read as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.cli import main
from engine.errors import LeadpulseError
from engine.keys import StreamNames, hot_key, pattern, root
from engine.migrate_cli import migrate
from engine.records import RecordReader
from engine.redis_client import connect
from engine.replay import replay_file
from engine.views import read_scores
from tests.cluster import LocalCluster


def _to_old_layout(client: redis.Redis, prefix: str) -> int:
    keys = list(client.scan_iter(match=pattern(prefix), count=1000))
    for key in keys:
        client.rename(key, prefix + key.decode()[len(root(prefix)) :])
    return len(keys)


def test_migrate_renames_the_old_layout_and_nothing_changes(
    tmp_path: Path, redis_url: str, make_settings: Any, client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from tests.engine.test_redis_cluster import _sim_events

    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in _sim_events(15)))
    settings = make_settings(streams={"partitions": 2})
    prefix = settings.redis.key_prefix
    assert replay_file(str(events), str(tmp_path / "s.jsonl"), redis_url=redis_url,
                       settings=settings) == 0  # fmt: skip
    leads = sorted(
        {("sim", json.loads(line)["lead_id"]) for line in events.read_text().splitlines()}
    )
    names = StreamNames(prefix, 2)
    client.xgroup_create(names.alerts, "delivery", id="0")
    before = read_scores(client, RecordReader(settings), leads)
    hot = client.zrange(hot_key(prefix, "sim"), 0, -1, withscores=True)
    ttl = client.ttl(f"{root(prefix)}:{{sim:{leads[0][1]}}}:f")
    n = _to_old_layout(client, prefix)
    assert read_scores(client, RecordReader(settings), leads) != before  # not found now

    monkeypatch.setenv("LEADPULSE__REDIS__KEY_PREFIX", prefix)
    assert main(["migrate", "--redis-url", redis_url, "--dry-run"]) == 0
    assert f"would rename {n} keys" in capsys.readouterr().out
    assert main(["migrate", "--redis-url", redis_url]) == 0
    assert capsys.readouterr().out.startswith(f"renamed {n} keys from {prefix}:")
    assert read_scores(client, RecordReader(settings), leads) == before
    assert client.zrange(hot_key(prefix, "sim"), 0, -1, withscores=True) == hot
    assert 0 < client.ttl(f"{root(prefix)}:{{sim:{leads[0][1]}}}:f") <= ttl
    assert client.xinfo_groups(names.alerts)[0]["name"] == b"delivery"
    assert not list(client.scan_iter(match=f"{prefix}:*"))
    assert migrate(client, prefix).renamed == 0  # twice: nothing left to do


def test_migrate_keeps_a_key_whose_new_name_exists(client: redis.Redis, prefix: str) -> None:
    client.set(f"{prefix}:wm", "old")
    client.set(f"{root(prefix)}:wm", "new")
    client.set(f"{prefix}:lostseen", "x")
    done = migrate(client, prefix)
    assert (done.renamed, done.kept) == (1, [f"{prefix}:wm"])
    assert client.get(f"{root(prefix)}:wm") == b"new"
    client.delete(f"{prefix}:wm")


def test_migrate_refuses_a_cluster(redis_cluster: LocalCluster) -> None:
    cluster = connect(redis_cluster.url, retries=0)
    try:
        with pytest.raises(LeadpulseError, match="never ran on a Redis Cluster"):
            migrate(cluster, "lp")
    finally:
        cluster.close()


def test_services_refuse_to_start_beside_data_of_the_old_layout(
    redis_url: str, make_settings: Any, client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from engine.migrate_cli import check_layout

    settings = make_settings()
    prefix = settings.redis.key_prefix
    check_layout(client, settings)  # nothing of the old layout: fine
    client.hset(f"{prefix}:pos", "0", "1-0")  # what an older leadpulse left
    with pytest.raises(LeadpulseError, match="leadpulse migrate"):
        check_layout(client, settings)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("LEADPULSE__REDIS__KEY_PREFIX", prefix)
    monkeypatch.setenv("LEADPULSE__METRICS__PORT", "0")
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "leadpulse migrate" in err[0], err
    assert migrate(client, prefix).renamed == 1
    check_layout(client, settings)  # migrated: fine
