"""Delivery in both key layouts (issue 13): the same engine-written data read in the
deployment layout and in the slot-per-partition layout (4 partitions, ``tests/layouts.py``).

The consumer reads one lane per shard (alerts, bucket changes), keeps each lead's commit
order, acknowledges on the entry's own stream; the board merges the hot list's shards;
a lead's profile is read at its home; the backlog sums the shards' alerts streams.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from engine.delivery.board import read_board
from engine.delivery.cli import backlog
from engine.delivery.consumer import DeliveryService
from engine.delivery.leads import read_profile
from engine.records import RecordReader
from engine.shards import alert_streams, bucket_streams
from engine.views import read_alerts
from tests.engine.delivery.conftest import Clock, wait_for
from tests.layouts import PARTITIONS, Layouts, both_layouts


@pytest.fixture
def layouts(client: Any, make_settings: Any) -> Iterator[Layouts]:
    yield from both_layouts(client, make_settings)


def _read_everything(svc: DeliveryService) -> list[tuple[str, Any]]:
    """Every run read until nothing is left: ("alerts"|"changes", item) in read order."""
    out: list[tuple[str, Any]] = []
    while runs := svc.read_merged(None):
        out.extend((kind, item) for kind, items in runs for item in items)
    return out


def _by_lead(read: list[tuple[str, Any]]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Per lead, what was read for it in order: ("alerts", alert id) / ("changes", bucket)."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for kind, item in read:
        if kind == "alerts":
            lead, what = (item[1]["tenant"], item[1]["lead_id"]), item[1]["alert_id"]
        else:
            lead, what = (item.tenant, item.lead_id), f"{item.bucket}@{item.entry_id}"
        out.setdefault(lead, []).append((kind, what))
    return out


def test_the_consumer_reads_each_leads_alerts_and_changes_in_commit_order(
    client: Any, layouts: Layouts
) -> None:
    read = []
    for settings in (layouts.deployment, layouts.partition):
        svc = DeliveryService(settings, client, clock=Clock(1_767_225_600.0))
        svc.ensure_group()
        read.append(_read_everything(svc))
        assert svc.read_merged(None) == []
    assert len(DeliveryService(layouts.partition, client).lanes) == PARTITIONS
    kinds = {kind for kind, _ in read[0]}
    assert kinds == {"alerts", "changes"}
    assert _by_lead(read[0]) == _by_lead(read[1])


def test_alerts_handled_the_same_and_acknowledged_on_their_own_stream(
    client: Any, layouts: Layouts
) -> None:
    delivered = []
    for settings in (layouts.deployment, layouts.partition):
        svc = DeliveryService(settings, client, clock=Clock(1_767_225_600.0))

        async def main(svc: DeliveryService = svc) -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(svc.run(stop))
            await asyncio.to_thread(wait_for, lambda: _all_acked(client, svc), 30.0)
            stop.set()
            await task

        asyncio.run(main())
        delivered.append(sorted(_feed(client, svc, t) for t in "tu"))
    assert delivered[0] == delivered[1]
    assert sum(len(rows) for rows in delivered[0]) > 10


def _feed(client: Any, svc: DeliveryService, tenant: str) -> list[tuple[str, ...]]:
    """What the tenant's feed got: (kind, alert id, lead, bucket) per entry, sorted."""
    out = []
    for _, f in client.xrange(svc.keys.feed(tenant)):
        d = json.loads(f[b"d"])
        out.append((f[b"k"].decode(), *(str(d.get(k)) for k in ("alert_id", "lead_id", "bucket"))))
    return sorted(out)


def _all_acked(client: Any, svc: DeliveryService) -> bool:
    group = svc.d.consumer_group
    for stream in [*alert_streams(svc.names), *bucket_streams(svc.names)]:
        if not client.exists(stream):
            continue
        info = {g["name"].decode(): g for g in client.xinfo_groups(stream)}.get(group)
        if info is None or info["pending"] or info["lag"]:
            return False
    return True


def test_profiles_boards_and_backlog_read_the_same_in_both_layouts(
    client: Any, layouts: Layouts
) -> None:
    names = layouts.names
    alerts = read_alerts(client, names[0])
    assert alerts == read_alerts(client, names[1]) and alerts
    for alert in alerts[::7]:
        assert read_profile(client, names[0], alert) == read_profile(client, names[1], alert)
    boards = []
    for settings, n in zip((layouts.deployment, layouts.partition), names, strict=True):
        reader = RecordReader(settings)
        boards.append([read_board(client, n.prefix, t, reader=reader, now=1.0) for t in "tu"])
    assert boards[0] == boards[1]
    assert sum(len(rows) for b in boards[1] for rows in b["buckets"].values()) > 10
    lags = []
    for settings in (layouts.deployment, layouts.partition):
        DeliveryService(settings, client).ensure_group()
        group = settings.delivery.consumer_group
        lags.append(backlog(client, alert_streams(stream_names_of(settings)), group)())
    assert lags[0] == lags[1] == len(alerts)


def stream_names_of(settings: Any) -> Any:
    from engine.streams import stream_names

    return stream_names(settings)
