"""Simulator traffic with known outcomes through the real engine, once per session.

``sim_run`` replays a month of seeded simulator traffic (plus a few escalation
``assigned`` events, as delivery writes them after an SLA miss) through the bounded
dataflow on one partition, under its own key prefix (deleted afterwards).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest

from benchmarks.fault_crash import load
from benchmarks.simulator import SimConfig, generate
from engine.app import build_parts
from engine.dataflow import build_flow, run_flow
from engine.redis_client import connect
from engine.settings import Settings, load_settings

TENANT = "sim"


@dataclass(frozen=True)
class SimRun:
    client: Any
    prefix: str
    settings: Settings
    events: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    labels: list[dict[str, Any]]


def sim_events(leads: int = 150, seed: int = 11) -> list[dict[str, Any]]:
    events = list(
        generate(SimConfig(seed=seed, leads=leads, days=30.0, tenant=TENANT, anonymous_share=0.2))
    )
    # delivery's escalations (an SLA miss moved the lead): from the owner to the next agent,
    # and one to the pond
    created = [e for e in events if e["type"] == "lead_created"][:6]
    for i, e in enumerate(created):
        props = {"how": "escalation", "reason": "SLA missed by someone: reassigned"}
        esc = {"event_id": f"esc-{i}", "lead_id": e["lead_id"], "tenant": TENANT,
               "type": "assigned", "ts": e["ts"] + 3_600.0, "props": props}  # fmt: skip
        if i < 5:
            esc["agent_id"] = "Z01"
        events.append(esc)
    events.sort(key=lambda e: e["ts"])
    return events


def drop(client: Any, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{{{prefix}}}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


@pytest.fixture(scope="session")
def sim_run(redis_url: str) -> Iterator[SimRun]:
    client: Any = connect(redis_url)
    prefix = "t" + uuid.uuid4().hex[:10]
    events = sim_events()
    load(client, prefix, events)
    settings = load_settings(
        overrides={"redis": {"key_prefix": prefix}, "streams": {"partitions": 1}}, environ={}
    )
    try:
        run_flow(build_flow(build_parts(settings, client), bounded=True))
        alerts = [
            msgpack.unpackb(f[b"a"], raw=False) for _, f in client.xrange(f"{{{prefix}}}:alerts")
        ]
        labels = [
            msgpack.unpackb(f[b"l"], raw=False) for _, f in client.xrange(f"{{{prefix}}}:labels")
        ]
        yield SimRun(client, prefix, settings, events, alerts, labels)
    finally:
        drop(client, prefix)
        client.close()
