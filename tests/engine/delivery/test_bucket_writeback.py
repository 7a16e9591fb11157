"""Bucket-change write-back: the engine emits each change with the batch that made it;
delivery writes it in commit order with the alerts, exactly once in effect across a
SIGKILL of ``leadpulse deliver`` (a real process, a local Follow Up Boss)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytest

from benchmarks.fault_webhook import pending
from engine.delivery.consumer import DeliveryService
from engine.delivery.targets import BucketChange, parse_change
from tests.engine.delivery.conftest import free_port, run_engine, send, wait_for
from tests.engine.delivery.crm_receiver import FUB_KEY, SYSTEM_KEY, CrmReceiver, fub_problem

VIEWS = ["property_view"] * 3 + ["property_save"]  # P4 from nothing: no alert


def _steps(settings: Any, client: Any, leads: list[str], steps: list[list[str]]) -> None:
    """Each step's events of every lead through the engine as their own batch."""
    start = time.time() - 120
    for n, types in enumerate(steps):
        events = [{"event_id": f"w{lead}-{n}-{i}", "lead_id": lead, "type": t,
                   "ts": start + n * 10 + i, "property_id": "P1", "source": "portal"}
                  for lead in leads for i, t in enumerate(types)]  # fmt: skip
        send(settings, client, events)
        run_engine(settings, client)


def _changes(client: Any, stream: str) -> list[BucketChange]:
    out = [parse_change(sid.decode(), fields) for sid, fields in client.xrange(stream)]
    assert None not in out
    return [c for c in out if c is not None]


def test_the_engine_emits_each_bucket_change_with_its_batch(
    client: Any, make_settings: Any
) -> None:
    settings = make_settings()
    leads = ["7", "~v7", "8"]
    _steps(settings, client, leads[:2], [VIEWS, ["showing_request"], ["lost"]])
    _steps(settings, client, leads[2:], [["not_interested"]])
    svc = DeliveryService(settings, client)
    changes = _changes(client, svc.names.bucket_changes)
    moves = [(c.lead_id, c.bucket_before, c.bucket, c.bucket_by) for c in changes]
    assert moves == [
        ("7", "", "P4", "score"),
        ("7", "P4", "P1", "hand_raise"),
        ("7", "P1", "P4", "lost"),  # marked lost: no longer hot, written back
    ]  # a visitor (~v7) is never written; lead 8 went from nothing to P5: nothing to correct
    (alert,) = [c for c in changes if c.alert_id]  # the hand-raise alert carries P1 too
    assert alert.bucket == "P1" and alert.emit_ms > 0
    (sid, _), *_ = client.xrange(svc.names.alerts)
    assert changes[0].after == "0-0" and changes[1].after == changes[2].after == sid.decode()
    assert changes[1].top_reason and isinstance(changes[1].score, int)


def test_delivery_reads_changes_and_alerts_in_commit_order(client: Any, make_settings: Any) -> None:
    settings = make_settings()
    _steps(settings, client, ["9"], [VIEWS, ["showing_request"], ["not_interested"]])
    svc = DeliveryService(settings, client)
    svc.ensure_group()
    runs = svc.read_merged(None)
    assert [k for k, _ in runs] == ["changes", "alerts", "changes"]
    assert [c.bucket for c in runs[0][1]] == ["P4"]
    assert [c.bucket for c in runs[2][1]] == ["P1", "P5"]  # after the alert of their batch


def _spawn(url: str, prefix: str, fub_url: str, log: str) -> subprocess.Popen[bytes]:
    t = "LEADPULSE__DELIVERY__TENANTS__DEFAULT__TARGETS__FUB__"
    env = {
        **os.environ, "REDIS_URL": url, "LEADPULSE__REDIS__KEY_PREFIX": prefix,
        "LEADPULSE__DELIVERY__METRICS_PORT": "0", "LEADPULSE__DELIVERY__BACKOFF_BASE_S": "0.05",
        "LEADPULSE__DELIVERY__BACKOFF_CAP_S": "0.2", "LEADPULSE__DELIVERY__MAX_ATTEMPTS": "100",
        f"{t}KIND": '"fub"', f"{t}URL": f'"{fub_url}"', f"{t}SECRET": f'"{FUB_KEY}"',
        f"{t}SYSTEM_KEY": f'"{SYSTEM_KEY}"',
    }  # fmt: skip
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "deliver", "--consumer", "wb-0"],
            env=env, stdout=f, stderr=subprocess.STDOUT,
        )  # fmt: skip


@pytest.mark.slow
def test_bucket_changes_survive_a_sigkill_of_deliver_written_exactly_once(
    client: Any, make_settings: Any, prefix: str, redis_url: str
) -> None:
    crm = CrmReceiver(free_port())
    refusing = [True]
    crm.check = lambda m, p, h, b: "503 down" if refusing[0] else fub_problem(m, p, h, b)
    crm.start()
    settings = make_settings()
    leads = [str(n) for n in range(81, 87)]
    _steps(settings, client, leads, [VIEWS, ["showing_request"], ["not_interested"]])
    changes = _changes(client, f"{{{prefix}}}:buckets")
    written = {c.delivery_id: c for c in changes if not c.alert_id}  # alerts write the rest
    assert len(written) == 2 * len(leads) and len(changes) == 3 * len(leads)
    group = settings.delivery.consumer_group
    log = tempfile.NamedTemporaryFile(prefix="wb_", suffix=".log", delete=False).name
    proc = _spawn(redis_url, prefix, crm.url, log)
    try:  # read, write-backs refused and retrying, nothing acknowledged: then SIGKILL
        wait_for(lambda: pending(client, f"{{{prefix}}}:buckets", group) == (12, 0), timeout=20)
        wait_for(lambda: pending(client, f"{{{prefix}}}:alerts", group)[0] == len(leads))
        wait_for(lambda: len(crm.hits) >= 3 * len(leads))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        refusing[0] = False
        proc = _spawn(redis_url, prefix, crm.url, log)
        wait_for(lambda: pending(client, f"{{{prefix}}}:buckets", group) == (0, 0), timeout=20)
        wait_for(lambda: pending(client, f"{{{prefix}}}:alerts", group) == (0, 0))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        crm.stop()
    accepted = crm.accepted()
    keys = [h.headers["x-leadpulse-delivery-id"] for h in accepted]
    bucket_keys = [k for k in keys if k in written]
    assert sorted(bucket_keys) == sorted(written)  # every change once, none twice
    per_lead: dict[str, list[str]] = {}
    for h in accepted:
        per_lead.setdefault(h.path.rsplit("/", 1)[1], []).append(
            json.loads(h.body)["customLeadpulseBucket"]
        )
    assert per_lead == {lead: ["P4", "P1", "P5"] for lead in leads}  # in order, drop last


@pytest.mark.parametrize("bad", [{b"t": b"x"}, {b"junk": b"1"}])
def test_an_entry_that_is_not_a_bucket_change_is_refused(bad: dict[bytes, bytes]) -> None:
    assert parse_change("1-0", bad) is None


def test_a_change_whose_alert_is_gone_from_the_stream_is_not_held_for_ever(
    client: Any, make_settings: Any
) -> None:
    settings = make_settings()
    svc = DeliveryService(settings, client)
    svc.ensure_group()
    fields = {"t": "default", "l": "5", "from": "P2", "to": "P3", "by": "score", "s": "40",
              "after": "9999999999999-0"}  # fmt: skip  # an alert trimmed before it was read
    client.xadd(svc.names.bucket_changes, fields)
    ((kind, (change,)),) = svc.read_merged(None)  # no alert is left unread: not held
    assert kind == "changes" and change.bucket == "P3" and change.score == 40


def test_after_a_restart_each_pending_entry_is_read_again_once(
    client: Any, make_settings: Any
) -> None:
    settings = make_settings()
    _steps(settings, client, ["11"], [VIEWS, ["showing_request"], ["not_interested"]])
    crashed = DeliveryService(settings, client, consumer="c1")
    crashed.ensure_group()
    first = crashed.read_merged(None)  # read, never acknowledged: the process died
    restarted = DeliveryService(settings, client, consumer="c1")
    again = restarted.read_merged(None)
    assert [(k, len(v)) for k, v in again] == [(k, len(v)) for k, v in first]
    assert restarted.read_merged(None) == []  # not handed out a second time while in flight
