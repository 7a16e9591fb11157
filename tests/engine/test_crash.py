"""Crash safety on real processes (``benchmarks/fault_crash.py`` runs the full size).

- ``leadpulse run`` SIGKILLed mid-stream three times and restarted ends exactly where
  an uninterrupted run ends: same features, score records, snapshots, hot list, alerts
  (none lost, none twice), labels, and what a restarted trainer has learned. One
  partition, so the online model learns in one order in both runs (with several the
  learning order is arrival order; see README).
- ``leadpulse serve`` SIGKILLed twice during ingest: every event it acknowledged with a
  2xx is in the stream, and none twice although unanswered batches were sent again.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.fault_crash import crash_dataflow, crash_gateway
from benchmarks.simulator import SimConfig, generate
from tests.engine.crash_results import assert_same_as_uninterrupted

pytestmark = pytest.mark.slow


def _drop(client: Any, prefix: str) -> None:
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)


def test_sigkill_and_restart_changes_nothing(client: Any, prefix: str, redis_url: str) -> None:
    events = list(generate(SimConfig(seed=5, leads=120, days=60.0, tenant="sim")))
    assert any(e["type"] == "appointment_set" for e in events)
    try:
        result = crash_dataflow(client, redis_url, events, kills=3, seed=1, base=prefix)
    finally:
        _drop(client, prefix)
    assert_same_as_uninterrupted(result, kills=3)


def test_sigkill_serve_loses_no_acknowledged_event(
    client: Any, prefix: str, redis_url: str
) -> None:
    events = list(generate(SimConfig(seed=8, leads=150, tenant="sim")))[:4_000]
    try:
        result = crash_gateway(client, redis_url, events, kills=2, seed=2, prefix=prefix)
    finally:
        _drop(client, prefix)
    assert result["kills"] == 2
    assert result["batches_resent_after_no_answer"] > 0  # the kills did cut requests off
    assert result["acknowledged"] == len({e["event_id"] for e in events})
    assert result["acknowledged_missing_from_stream"] == 0
    assert result["duplicated_in_stream"] == 0
    assert result["in_stream"] == result["acknowledged"]
