"""Readers in both key layouts (issue 13): the same data written in the deployment layout
and in the slot-per-partition layout (4 partitions, ``tests/layouts.py``) reads the same.

Hot lists merge by score as one zset orders them (ties included), streams by id, aliases
over every shard; views, replay's dead letters, backtest's labels and merge's alias check
go through them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from engine.backtest import _rejections, read_labels
from engine.keys import StreamNames, alias_key, contact_index_key, hot_key
from engine.merge_cli import merge_by_contact
from engine.records import RecordReader
from engine.replay import _rejects
from engine.shards import (
    dead_letter_streams,
    label_streams,
    merge_entries,
    read_aliases,
    read_hot,
    shard_names,
)
from engine.views import read_alerts, read_hot_list, read_scores
from tests.layouts import PARTITIONS, Layouts, both_layouts, drop


@pytest.fixture
def layouts(client: Any, make_settings: Any) -> Iterator[Layouts]:
    yield from both_layouts(client, make_settings)


@pytest.fixture
def names(client: Any, prefix: str) -> Iterator[tuple[StreamNames, StreamNames]]:
    yield StreamNames(prefix, PARTITIONS), StreamNames(prefix + "p", PARTITIONS, "partition")
    drop(client, prefix + "p")


def test_the_deployment_layout_reads_its_one_key(prefix: str) -> None:
    names = StreamNames(prefix, PARTITIONS)
    assert shard_names(names) == [names]
    assert dead_letter_streams(names) == [names.dead_letter]


def test_a_sharded_hot_list_reads_as_one_zset_ties_included(
    client: Any, names: tuple[StreamNames, StreamNames]
) -> None:
    one, sharded = names
    scores = {f"L{i}": float(i % 5) for i in range(40)} | {"~v": 2.0, "Z": 4.0, "a": 4.0}
    client.zadd(hot_key(one.prefix, "t"), scores)
    for lead, score in scores.items():
        client.zadd(hot_key(sharded.home("t", lead), "t"), {lead: score})
    assert len({sharded.home("t", lead) for lead in scores}) == PARTITIONS  # really spread
    for limit in (1, 3, 10, 43, 100, 0):
        want = [x.decode() for x in client.zrevrange(hot_key(one.prefix, "t"), 0, limit - 1)]
        assert read_hot(client, sharded, "t", limit) == want
        assert read_hot(client, one, "t", limit) == want
    assert read_hot(client, sharded, "nobody", 5) == []


def test_entries_merge_by_id_ties_in_stream_order() -> None:
    a = [(b"1-0", {b"x": b"a1"}), (b"5-0", {b"x": b"a5"})]
    b = [(b"1-0", {b"x": b"b1"}), (b"2-0", {b"x": b"b2"}), (b"10-0", {b"x": b"b10"})]
    merged = [f[b"x"] for _, f in merge_entries([a, b])]
    assert merged == [b"a1", b"b1", b"b2", b"a5", b"b10"]
    assert [f[b"x"] for _, f in merge_entries([a, b], count=2)] == [b"a1", b"b1"]


def test_views_read_the_same_in_both_layouts(client: Any, layouts: Layouts) -> None:
    d, p = layouts.names
    assert len(shard_names(p)) == PARTITIONS
    readers = RecordReader(layouts.deployment), RecordReader(layouts.partition)
    assert readers[1].names.sharded and not readers[0].names.sharded
    for tenant in ("t", "u"):
        for limit in (1, 7, 500):
            hot = [read_hot_list(client, r, tenant, limit) for r in readers]
            assert hot[0] == hot[1] and 0 < len(hot[0]) <= limit
    scores = [read_scores(client, r, layouts.leads) for r in readers]
    assert scores[0] == scores[1] and len(scores[0]) > 40
    alerts = [read_alerts(client, n) for n in (d, p)]
    assert alerts[0] == alerts[1] and len(alerts[0]) > 10
    middle = alerts[0][len(alerts[0]) // 2]["stream_id"]
    assert read_alerts(client, p, middle, 5) == read_alerts(client, d, middle, 5)


def test_dead_letters_and_labels_read_the_same_in_both_layouts(
    client: Any, layouts: Layouts
) -> None:
    d, p = layouts.names
    rejects = [_rejects(client, n, None, "", None) for n in (d, p)]
    assert rejects[0] == rejects[1] and sum(rejects[0].values()) == 2
    assert _rejections(client, dead_letter_streams(d)) == _rejections(
        client, dead_letter_streams(p)
    )
    labels = [read_labels(client, *label_streams(n)) for n in (d, p)]
    assert labels[0] == labels[1] and labels[0]
    assert label_streams(p) == label_streams(d.__class__(p.prefix, PARTITIONS))  # one stream


def test_aliases_are_found_in_any_shard_the_home_first(
    client: Any, names: tuple[StreamNames, StreamNames]
) -> None:
    one, sharded = names
    folded = {f"~v{i}": f"L{i}" for i in range(12)}
    client.hset(alias_key(one.prefix, "t"), mapping=folded)
    for src, dst in folded.items():
        client.hset(alias_key(sharded.home("t", src), "t"), src, dst)
    asked = [*folded, "L1", "nobody"]
    assert (
        read_aliases(client, sharded, "t", asked) == folded == read_aliases(client, one, "t", asked)
    )
    home = sharded.home("t", "~v0")
    other = next(s for s in sharded.shards() if s != home)
    client.hset(alias_key(other, "t"), "~v0", "stale")  # the home shard's answer wins
    assert read_aliases(client, sharded, "t", ["~v0"]) == {"~v0": "L0"}
    client.hset(alias_key(other, "t"), "~lone", "L9")  # one shard elsewhere has it
    assert read_aliases(client, sharded, "t", ["~lone"]) == {"~lone": "L9"}


def test_merge_by_contact_skips_leads_folded_in_any_shard(
    client: Any, names: tuple[StreamNames, StreamNames]
) -> None:
    for n in names:
        client.sadd(contact_index_key(n.prefix, "t", "h1"), "A", "B", "C", "~v")
        for lead in ("B", "~v"):
            client.hset(alias_key(n.home("t", lead), "t"), lead, "A")
        keep, queued = merge_by_contact(client, n, "t", "h1")
        assert keep == "A" and [q[0] for q in queued] == ["C"]
