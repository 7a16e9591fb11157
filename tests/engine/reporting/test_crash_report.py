"""Exactly once under crashes: ``leadpulse run`` SIGKILLed mid-stream twice and restarted
leaves the same report counters and lead marks as an uninterrupted run.

The counters are written in the batch's MULTI/EXEC with its stream positions, so a
batch killed before its commit is read again and counted once; one killed after it is
not read again. (``benchmarks/fault_crash.py`` does the killing, as in
``tests/engine/test_crash.py``.)
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.fault_crash import crash_dataflow
from engine.reporting.aggregates import LeadMark
from engine.reporting.keys import tenants_key
from features.record import unpack_record
from tests.engine.reporting.conftest import drop, sim_events

pytestmark = pytest.mark.slow


def _report_state(client: Any, prefix: str) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for key in client.scan_iter(match=f"{{{prefix}}}:rpt:*", count=1000):
        name = key.decode()[len(prefix) + 2 :]
        if client.type(key) == b"hash":
            state[name] = client.hgetall(key)
    for key in client.scan_iter(match=f"{{{prefix}}}:{{*}}:f", count=1000):
        _, rest = unpack_record(client.get(key))  # the lead's marks live in its record
        if rest is not None and rest.marks is not None:
            state[key.decode()[len(prefix) + 2 :]] = LeadMark.from_list(rest.marks)
    state["tenants"] = client.smembers(tenants_key(prefix))
    return state


def test_sigkill_and_restart_counts_everything_once(
    client: Any, prefix: str, redis_url: str
) -> None:
    events = sim_events(leads=90, seed=4)
    try:
        result = crash_dataflow(client, redis_url, events, kills=2, seed=3, base=prefix)
        reference = _report_state(client, prefix + "r")
        crashed = _report_state(client, prefix + "c")
    finally:
        drop(client, prefix)
    assert result["kills"] == 2
    assert result["identical"], result.get("differing_examples")
    days = [k for k in reference if k.startswith(":rpt:sim:")]
    assert len(days) >= 28
    assert sum(int(reference[d].get(b"leads|all|", 0)) for d in days) == 90
    marks = [k for k in reference if k.endswith(":f")]
    assert len(marks) == 90
    assert crashed == reference
