"""Reading a deployment in either key layout (``redis.key_layout``, engine/keys.py).

In the slot-per-partition layout a tenant's hot list, the alerts, bucket-change,
cadence and dead-letter streams and the report counters are split into one shard per
partition tag (:meth:`StreamNames.shards`); a reader merges the shards into what the one
key of the deployment layout holds. In the deployment layout every list here has one
element, so the merged answer is the key's own.

- hot lists: the top ``limit`` of each shard (one round trip), merged by score, highest
  first, ties in ZREVRANGE's order (member, bytewise, descending): a single zset's answer
- streams: each shard's entries, merged by stream id (ties: shard order)
- aliases (folded leads): every shard's alias hash, the lead's home shard first
- report counters: the shards plus the deployment prefix (delivery writes there)

Keys are built in engine/keys.py only; this module decides which of them a reader reads.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

from engine.keys import ModelKeys, StreamNames, alias_key, hot_key

__all__ = [
    "Entry", "alert_streams", "bucket_streams", "cadence_streams", "dead_letter_streams",
    "label_streams", "merge_aliases", "merge_entries", "merge_hot", "queue_aliases",
    "queue_hot", "read_aliases", "read_entries", "read_hot", "report_prefixes", "shard_names",
]  # fmt: skip

#: A stream entry as redis-py returns it: (id, fields).
Entry = tuple[Any, dict[bytes, bytes]]


def _bytes(x: Any) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode()


def _sid(x: Any) -> tuple[int, int]:
    ms, _, seq = (x.decode() if isinstance(x, bytes) else str(x)).partition("-")
    return int(ms), int(seq or 0)


def shard_names(names: StreamNames) -> list[StreamNames]:
    """The names of each distinct shard's streams, in partition order (``[names]`` in the
    deployment layout)."""
    if not names.sharded:
        return [names]
    out: dict[str, StreamNames] = {}
    for p in range(names.partitions):
        out.setdefault(names.shard(p), names.of(p))
    return list(out.values())


def alert_streams(names: StreamNames) -> list[str]:
    return [n.alerts for n in shard_names(names)]


def bucket_streams(names: StreamNames) -> list[str]:
    return [n.bucket_changes for n in shard_names(names)]


def cadence_streams(names: StreamNames) -> list[str]:
    return [n.cadence for n in shard_names(names)]


def dead_letter_streams(names: StreamNames) -> list[str]:
    return [n.dead_letter for n in shard_names(names)]


def label_streams(names: StreamNames) -> list[str]:
    """The labels stream (``ModelKeys.labels``): one for the trainer in either layout,
    under the deployment's own tag (the partition layout's batches send their labels there
    through their outboxes: ``engine/sinks.py``)."""
    return [ModelKeys(names.prefix).labels]


def report_prefixes(names: StreamNames) -> list[str]:
    """Prefixes whose report counters (``day_key``, ``tenants_key``) a report sums: every
    shard's (the engine's counters) and the deployment's own (delivery's)."""
    return list(dict.fromkeys([*names.shards(), names.prefix]))


# -- hot lists -----------------------------------------------------------------------------


def queue_hot(pipe: Any, names: StreamNames, tenant: str, limit: int) -> int:
    """Queue the top ``limit`` (with scores) of each shard of the tenant's hot list; returns
    how many replies :func:`merge_hot` takes."""
    shards = names.shards()
    for prefix in shards:
        pipe.zrevrange(hot_key(prefix, tenant), 0, limit - 1, withscores=True)
    return len(shards)


def merge_hot(replies: Sequence[Sequence[tuple[Any, float]]], limit: int) -> list[str]:
    """Lead ids of the top ``limit`` over the shards' replies, as one zset's ZREVRANGE
    orders them (score descending, then member bytewise descending); a lead found in two
    shards counts once, at its best place."""
    rows = sorted(
        ((float(score), _bytes(m)) for reply in replies for m, score in reply), reverse=True
    )
    out: list[str] = []
    seen: set[bytes] = set()
    for _, member in rows:
        if member not in seen:
            seen.add(member)
            out.append(member.decode())
            if len(out) == limit:
                break
    return out


def read_hot(client: Any, names: StreamNames, tenant: str, limit: int) -> list[str]:
    """The tenant's top ``limit`` lead ids, best first (one round trip)."""
    pipe = client.pipeline(transaction=False)
    queue_hot(pipe, names, tenant, limit)
    return merge_hot(pipe.execute(), limit)


# -- aliases (folded leads) ---------------------------------------------------------------


def queue_aliases(pipe: Any, names: StreamNames, tenant: str, leads: Sequence[str]) -> None:
    """Queue an HMGET of ``leads`` on every shard's alias hash of the tenant."""
    for prefix in names.shards():
        pipe.hmget(alias_key(prefix, tenant), list(leads))


def merge_aliases(
    names: StreamNames, tenant: str, leads: Sequence[str], replies: Sequence[Sequence[Any]]
) -> dict[str, str]:
    """The lead each of ``leads`` was folded into, for those folded: the lead's home shard
    wins, then the first shard that has one."""
    by_shard = dict(zip(names.shards(), replies, strict=True))
    out: dict[str, str] = {}
    for i, lead in enumerate(leads):
        for prefix in (names.home(tenant, lead), *by_shard):
            dst = by_shard[prefix][i]
            if dst:
                out[lead] = dst.decode() if isinstance(dst, bytes) else str(dst)
                break
    return out


def read_aliases(
    client: Any, names: StreamNames, tenant: str, leads: Sequence[str]
) -> dict[str, str]:
    """:func:`merge_aliases` in one round trip ({} for no leads)."""
    if not leads:
        return {}
    pipe = client.pipeline(transaction=False)
    queue_aliases(pipe, names, tenant, leads)
    return merge_aliases(names, tenant, leads, pipe.execute())


# -- streams -------------------------------------------------------------------------------


def merge_entries(replies: Sequence[Sequence[Entry]], count: int | None = None) -> list[Entry]:
    """Entries of several streams (each in id order) in one id order; ties keep the order
    of ``replies``. The first ``count`` only, if given."""
    keyed = ([(_sid(sid), i, n, (sid, f)) for n, (sid, f) in enumerate(rows)]
             for i, rows in enumerate(replies))  # fmt: skip
    merged = [row for *_, row in heapq.merge(*keyed, key=lambda t: t[:3])]
    return merged if count is None else merged[:count]


def read_entries(
    client: Any, streams: Sequence[str], start: str = "-", end: str = "+",
    count: int | None = None,
) -> list[Entry]:  # fmt: skip
    """XRANGE ``start``..``end`` of each stream (one round trip), merged by id."""
    if len(streams) == 1:
        return list(client.xrange(streams[0], min=start, max=end, count=count))
    pipe = client.pipeline(transaction=False)
    for key in streams:
        pipe.xrange(key, min=start, max=end, count=count)
    return merge_entries(pipe.execute(), count)
