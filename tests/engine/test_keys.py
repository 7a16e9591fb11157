"""engine/keys.py: the slot-per-partition layout's tags and names."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from engine.events import partition_of
from engine.keys import StreamNames, every_pattern, hot_key, root, shard_tag


@settings(max_examples=60, deadline=None)
@given(partitions=st.integers(1, 64), data=st.data())
def test_a_partitions_tag_hashes_into_its_band_of_slots(
    partitions: int, data: st.DataObject
) -> None:
    n = data.draw(st.integers(0, partitions - 1))
    slot = key_slot(f"{{{shard_tag('lp', n, partitions)}}}:x".encode())
    assert n * REDIS_CLUSTER_HASH_SLOTS // partitions <= slot
    assert slot < (n + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions


def test_twelve_partitions_split_evenly_over_three_even_masters() -> None:
    names = StreamNames("lp", 12, "partition")
    masters = [key_slot(f"{root(s)}:x".encode()) * 3 // REDIS_CLUSTER_HASH_SLOTS
               for s in names.shards()]  # fmt: skip
    assert sorted(masters.count(m) for m in range(3)) == [4, 4, 4]


def test_the_deployment_layout_keeps_one_prefix() -> None:
    names = StreamNames("lp", 4)
    assert names.shards() == ["lp"] and names.of(2) is names
    assert names.home("t", "l") == "lp" and names.events(3) == "{lp}:events:3"


def test_a_partitions_names_share_its_slot_and_leads_live_on_their_partition() -> None:
    names = StreamNames("lp", 8, "partition")
    for p in range(8):
        part = names.of(p)
        keys = [part.alerts, part.positions, part.cadence, part.dead_letter,
                part.bucket_changes, names.events(p), hot_key(part.prefix, "t")]  # fmt: skip
        assert len({key_slot(k.encode()) for k in keys}) == 1
        assert part.events(5) == names.events(5)  # another partition's stream stays its own
    for lead in ("a", "b", "c", "~v1"):
        assert names.home("t", lead) == names.shard(partition_of("t", lead, 8))


def test_every_pattern_matches_both_layouts_and_no_other_prefix() -> None:
    import fnmatch

    pat = every_pattern("lp")  # Redis and fnmatch read [..] and * alike
    for key in ("{lp}:hot:t", "{lp.3.0}:alerts", "{lp.10.7}:{t:l}:f"):
        assert fnmatch.fnmatchcase(key, pat)
    for key in ("{lpx}:hot:t", "{lp2.1.0}:alerts", "lp:hot:t"):
        assert not fnmatch.fnmatchcase(key, pat)


def test_an_unknown_layout_or_partition_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown key layout"):
        StreamNames("lp", 4, "slot")
    with pytest.raises(ValueError, match="outside"):
        shard_tag("lp", 4, 4)
