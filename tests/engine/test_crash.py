"""Crash safety: ``leadpulse run`` SIGKILLed mid-stream and restarted ends exactly where an
uninterrupted run ends: same features, same score records, same alerts, none twice.

Real processes, real Redis. One partition, so the online model learns in one order in
both runs (with several partitions the learning order is arrival order; see README).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import msgpack
import pytest

from benchmarks.simulator import SimConfig, generate
from engine.app import build_parts
from engine.dataflow import build_flow, run_flow
from engine.learning import Learner
from engine.model_store import ModelStore
from engine.settings import load_settings
from engine.streams import Producer, StreamNames, committed_positions

pytestmark = pytest.mark.slow


def _load(client: Any, settings: Any, events: list[dict[str, Any]]) -> str:
    names = StreamNames(settings.redis.key_prefix, settings.streams.partitions)
    producer = Producer(client, names, maxlen=10**9)
    for i in range(0, len(events), 1000):
        producer.send(events[i : i + 1000])
    last = client.xinfo_stream(names.events(0))["last-generated-id"]
    return last.decode() if isinstance(last, bytes) else str(last)


def _snapshot(client: Any, prefix: str) -> dict[str, Any]:
    """Everything a run leaves behind that must not depend on crashes."""
    state: dict[str, Any] = {}
    for key in client.scan_iter(match=f"{prefix}:{{*", count=1000):
        k = key.decode()[len(prefix) :]
        kind = client.type(key).decode()
        if k.endswith(":h") or k.endswith(":s"):
            state[k] = client.hgetall(key)
        elif kind == "zset":
            state[k] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            state[k] = client.lrange(key, 0, -1)
        elif kind == "hash":  # reply caches must be empty after a clean finish
            state[k] = client.hgetall(key)
    alerts = []
    for _, fields in client.xrange(f"{prefix}:alerts"):
        alert = msgpack.unpackb(fields[b"a"], raw=False)
        for volatile in ("ingest_ms", "emit_ms"):
            alert.pop(volatile)
        alerts.append(alert)
    state["alerts"] = sorted(alerts, key=lambda a: a["alert_id"])
    state["hot"] = client.zrange(f"{prefix}:hot:sim", 0, -1, withscores=True)
    # labelled examples: each learned exactly once, in the same order
    state["labels"] = [
        (msgpack.unpackb(f[b"l"], raw=False)["id"], msgpack.unpackb(f[b"l"], raw=False)["y"])
        for _, f in client.xrange(f"{prefix}:labels")
    ]
    # the trainer as it restarts from its checkpoint and catches up on the labels stream
    settings = load_settings(overrides={"redis": {"key_prefix": prefix}}, environ={})
    state["labels_learned"] = Learner(settings, ModelStore(client, prefix), 0).live.labels_seen
    return state


def _spawn(redis_url: str, prefix: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "LEADPULSE__REDIS__KEY_PREFIX": prefix,
        "LEADPULSE__STREAMS__PARTITIONS": "1",
        "LEADPULSE__STREAMS__READ_COUNT": "50",
        "LEADPULSE__METRICS__PORT": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _position(client: Any, names: StreamNames) -> tuple[int, int]:
    ms, _, seq = committed_positions(client, names)[0].partition("-")
    return int(ms), int(seq)


def _key(sid: str) -> tuple[int, int]:
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq)


def test_sigkill_and_restart_changes_nothing(
    client: Any, make_settings: Any, prefix: str, redis_url: str
) -> None:
    events = list(generate(SimConfig(seed=5, leads=120, days=60.0, tenant="sim")))
    assert any(e["type"] == "appointment_set" for e in events)

    # the reference: one uninterrupted run in this process
    ref_settings = make_settings(streams={"partitions": 1}, redis={"key_prefix": prefix + "r"})
    _load(client, ref_settings, events)
    run_flow(build_flow(build_parts(ref_settings, client), bounded=True))
    reference = _snapshot(client, prefix + "r")

    # the crash run: `leadpulse run` killed with SIGKILL at three points, then finished
    settings = make_settings(streams={"partitions": 1}, redis={"key_prefix": prefix + "c"})
    names = StreamNames(prefix + "c", 1)
    end = _key(_load(client, settings, events))
    start = _position(client, names)
    kills = 0
    for fraction in (0.2, 0.45, 0.7):
        proc = _spawn(redis_url, prefix + "c")
        target = start[0] + (end[0] - start[0]) * fraction
        deadline = time.monotonic() + 60
        while _position(client, names) < (target, 0) and time.monotonic() < deadline:
            assert proc.poll() is None, "leadpulse run exited early"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        assert _position(client, names) < end, "the run finished before it could be killed"
    proc = _spawn(redis_url, prefix + "c")
    deadline = time.monotonic() + 120
    while _position(client, names) < end and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert kills == 3
    assert reference["labels"] and reference["labels_learned"] == len(reference["labels"])
    crashed = _snapshot(client, prefix + "c")

    ids = [{a["alert_id"]: a for a in run["alerts"]} for run in (reference, crashed)]
    assert sorted(ids[1]) == sorted(ids[0]), (
        [ids[0][k] for k in set(ids[0]) - set(ids[1])],
        [ids[1][k] for k in set(ids[1]) - set(ids[0])],
    )
    for k in ids[0]:
        assert ids[1][k] == ids[0][k]
    assert crashed["alerts"] == reference["alerts"]  # none lost, none twice
    assert len({a["alert_id"] for a in crashed["alerts"]}) == len(crashed["alerts"])
    assert crashed.keys() == reference.keys()
    for key in reference:
        assert crashed[key] == reference[key], key
    for p in (prefix + "r", prefix + "c"):
        for key in client.scan_iter(match=f"{p}:*"):
            client.delete(key)
