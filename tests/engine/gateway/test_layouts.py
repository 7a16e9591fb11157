"""The gateway's reads in both key layouts (issue 13): the same engine-written data (cadence
on) read in the deployment layout and in the slot-per-partition layout (4 partitions,
``tests/layouts.py``): the hot list merges its shards, a lead and its plan (``:c``) are
read at the lead's home, aliases in every shard, lag per partition's positions hash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop

from engine.gateway.store import GatewayStore
from engine.keys import alias_key
from engine.settings import Settings, load_settings
from engine.streams import Producer, stream_names
from tests.engine.gateway.conftest import Gateway, gateway_overrides
from tests.layouts import PARTITIONS, Layouts, both_layouts


@pytest.fixture
def layouts(client: Any, make_settings: Any) -> Iterator[Layouts]:
    yield from both_layouts(client, make_settings, 30, ("acme",), cadence={"enabled": True})


@pytest.fixture
def gateways(layouts: Layouts, redis_url: str) -> Iterator[tuple[Gateway, Gateway]]:
    made = tuple(Gateway(_gateway_settings(s), redis_url)
                 for s in (layouts.deployment, layouts.partition))  # fmt: skip
    yield made[0], made[1]
    for gw in made:
        gw.close()


def _gateway_settings(engine: Settings) -> Settings:
    overrides = gateway_overrides(engine.redis.key_prefix)
    overrides["redis"] = engine.redis.model_dump()
    overrides["streams"] = {"partitions": PARTITIONS}
    overrides["cadence"] = {"enabled": True}
    return load_settings(overrides=overrides, environ={})


def test_hot_list_and_leads_read_the_same_in_both_layouts(
    gateways: tuple[Gateway, Gateway], layouts: Layouts
) -> None:
    d, p = gateways
    assert p.settings.redis.key_layout == "partition"
    for limit in (1, 5, 100):
        rows = d.get(f"/v1/hotlist?limit={limit}").json()
        assert rows == p.get(f"/v1/hotlist?limit={limit}").json() and rows
    plans = 0
    for _, lead in layouts.leads:
        one, other = d.get(f"/v1/leads/{lead}"), p.get(f"/v1/leads/{lead}")
        assert (one.status_code, one.json()) == (other.status_code, other.json())
        plans += bool(one.status_code == 200 and one.json()["cadence"])
    assert plans > 5  # the follow-up plans (``:c``) were read too


def test_aliases_and_lag_read_the_same_in_both_layouts(
    client: Any, layouts: Layouts, redis_url: str
) -> None:
    got = []
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as run:
        for settings in (layouts.deployment, layouts.partition):
            got.append(run.run(_aliases_and_lag(client, settings, redis_url)))
    assert got[0] == got[1]
    aliases, lags = got[0]
    assert aliases == {"~v1": "L2", "~v0": "L2"}
    assert [lag[2] for lag in lags] == [3] * PARTITIONS


async def _aliases_and_lag(
    client: Any, settings: Settings, url: str
) -> tuple[dict[str, str], list[tuple[int, str, int]]]:
    names = stream_names(settings)
    for src, dst in (("~v0", "~v1"), ("~v1", "L2")):  # a chain, each at its source's home
        client.hset(alias_key(names.home("acme", src), "acme"), src, dst)
    events = [{"tenant": "acme", "lead_id": f"L{i}"} for i in range(40)]
    per = {p: [e for e in events if Producer(client, names, 0).partition(e) == p][:3]
           for p in range(PARTITIONS)}  # fmt: skip
    Producer(client, names, 0).send([e for rows in per.values() for e in rows])
    store = GatewayStore(url, names, maxlen=0, idempotency_ms=1_000, contact_ttl_s=60)
    try:
        aliases = await store.resolve_aliases("acme", ["~v0", "~v1", "L2", "L3"])
        lags = [(x.partition, x.committed, x.lag) for x in await store.stream_lag()]
    finally:
        await store.close()
    return aliases, lags
