"""Redis restarted mid-stream: engine and gateway ride it out, say so, and lose nothing.

Real processes on a private ``redis-server`` with AOF (``appendfsync always``) on its
own port: ``leadpulse run`` and ``leadpulse serve``, simulator events POSTed to the
gateway, Redis stopped with SIGTERM and started again on the same port and directory
a few seconds later. The machinery is ``benchmarks/fault_redis.py`` (which runs the
same scenario at 50,000 events with a SIGKILL too); the reference is the same stream
entries through an uninterrupted in-process run on the test server, as in
``test_crash.py``. One partition, so the online model learns in one order in both runs.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from benchmarks.fault_redis import Outage, run_scenario
from benchmarks.simulator import SimConfig, generate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


def test_redis_restart_mid_stream_loses_and_doubles_nothing(
    client: Any, prefix: str, tmp_path: Any
) -> None:
    events = list(generate(SimConfig(seed=5, leads=120, days=60.0, tenant="sim")))
    out = run_scenario(
        events, [Outage(at=0.4, down_s=4.0)], client, prefix, rate=1_500, workdir=tmp_path
    )
    logs = f"logs in {out['logs']}"

    # the gateway: 503 + Retry-After while Redis was down, every acknowledged event stored once
    ev = out["events"]
    assert ev["http"].get("503", 0) > 0 and ev["http_503_without_retry_after"] == 0, ev
    assert ev["acked"] == ev["sent"] == len(events), ev  # every request retried until 2xx
    assert ev["acked_lost"] == 0 and ev["stream_duplicates"] == 0, ev
    # the engine: every entry committed exactly once (the counter is in the batch transaction)
    assert ev["engine_committed"] == ev["stream_entries"], ev
    # run and serve both stop cleanly on SIGTERM (serve used to die of the re-raised signal)
    assert out["processes"] == {"alive_at_end": True, "exit_codes": [0, 0]}, logs

    (outage,) = out["outages"]
    during = outage["during"]
    assert during["samples"] > 10, outage
    assert during["engine_healthz_503"] == during["samples"], (outage, logs)
    assert during["gateway_healthz_503"] == during["samples"], outage
    recovery = outage["recovery_s"]
    assert all(v is not None and v < 10 for v in recovery.values()), (outage, logs)

    # the result equals the uninterrupted reference: none lost, none twice, none different
    cmp = out["comparison"]
    assert cmp["alerts_reference"] > 0 and cmp["labels_reference"] > 0, cmp
    assert cmp["alerts_lost"] == cmp["alerts_extra"] == cmp["alerts_duplicated"] == 0, cmp
    assert cmp["alerts_differing"] == 0 and cmp["state_keys_differing"] == 0, cmp
    assert cmp["labels_equal"] and cmp["labels_duplicated"] == 0, cmp
    assert out["run_state"] == out["reference"]
