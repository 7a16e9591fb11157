"""Crash safety of cadences on real processes: ``leadpulse run`` with cadences on, SIGKILLed
mid-stream twice and restarted, emits every due step exactly once: the same step ids as
an uninterrupted run, none twice (a step, its plan state and its due time commit in the
batch's one transaction with the stream position)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest

from benchmarks.fault_crash import load
from benchmarks.simulator import SimConfig, generate
from engine.cadence.runner import step_entries
from engine.settings import load_settings
from engine.streams import StreamNames, committed_positions

pytestmark = pytest.mark.slow


def _steps(client: Any, prefix: str) -> list[dict[str, Any]]:
    out = step_entries(client.xrange(f"{{{prefix}}}:cadence"))
    for s in out:
        s.pop("emit_ms"), s.pop("stream_id")
    return out


def _spawn(url: str, prefix: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": url, "LEADPULSE__REDIS__KEY_PREFIX": prefix,
           "LEADPULSE__STREAMS__PARTITIONS": "1", "LEADPULSE__METRICS__PORT": "0",
           "LEADPULSE__CADENCE__ENABLED": "true", "LEADPULSE__CADENCE__TICK_MS": "60000",
           "LEADPULSE__STREAMS__READ_COUNT": "50"}  # fmt: skip
    env.pop("LEADPULSE_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def _pos(client: Any, prefix: str) -> tuple[int, int]:
    ms, _, seq = committed_positions(client, StreamNames(prefix, 1))[0].partition("-")
    return int(ms), int(seq or 0)


def test_sigkill_and_restart_emit_every_step_once(client: Any, prefix: str, redis_url: str) -> None:
    from engine.app import build_parts
    from engine.dataflow import build_flow, run_flow

    events = list(generate(SimConfig(seed=5, leads=80, days=20.0, tenant="sim")))
    ref = prefix + "r"
    load(client, ref, events)
    over = {"redis": {"key_prefix": ref}, "streams": {"partitions": 1},
            "cadence": {"enabled": True}}  # fmt: skip
    run_flow(build_flow(build_parts(load_settings(overrides=over, environ={}), client),
                        bounded=True))  # fmt: skip
    reference = _steps(client, ref)
    crash = prefix + "c"
    end = load(client, crash, events)
    first_ms = int(client.xrange(f"{{{crash}}}:events:0", count=1)[0][0].decode().split("-")[0])
    try:
        for fraction in (0.3, 0.6):
            proc = _spawn(redis_url, crash)
            target = (int(first_ms + (end[0] - first_ms) * fraction), 0)
            while _pos(client, crash) < target:
                assert proc.poll() is None, "leadpulse run exited early"
                time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert _pos(client, crash) < end
        proc = _spawn(redis_url, crash)
        deadline = time.monotonic() + 120
        while _pos(client, crash) < end and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        crashed = _steps(client, crash)
    finally:
        for key in client.scan_iter(match=f"{ref}*"):
            client.delete(key)
    assert len(reference) > 200
    counts = Counter(s["step_id"] for s in crashed)
    assert max(counts.values()) == 1  # none twice
    assert {s["step_id"] for s in crashed} == {s["step_id"] for s in reference}  # none lost
    key = lambda s: s["step_id"]  # noqa: E731
    assert sorted(crashed, key=key) == sorted(reference, key=key)
