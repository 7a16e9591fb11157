"""Test data in the slot-per-partition key layout (``redis.key_layout = "partition"``).

:func:`to_partition_layout` copies a deployment-layout dataset (what the engine wrote
under ``{src}``) to where the partition layout keeps the same data under another prefix:
a lead's keys at its home, hot lists and aliases split into per-partition shards, the
alerts, buckets, cadence and dead-letter streams split by the entry's lead (same
ids; a bucket change's ``after`` re-pointed at its own shard's alerts, as the engine
writes it there), positions per partition. The readers must give the same answers from
either copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from engine.events import partition_of
from engine.keys import (
    ModelKeys,
    StreamNames,
    alias_key,
    every_pattern,
    hot_key,
    lead_key,
    root,
)
from engine.settings import Settings
from engine.streams import stream_names

__all__ = ["Layouts", "both_layouts", "drop", "to_partition_layout"]

PARTITIONS = 4


@dataclass
class Layouts:
    """The same engine-written data in both layouts: ``deployment`` settings (the
    engine's prefix) and ``partition`` settings (another prefix, 4 partitions)."""

    deployment: Settings
    partition: Settings
    leads: list[tuple[str, str]]  # every lead the engine scored, sorted

    @property
    def names(self) -> tuple[StreamNames, StreamNames]:
        return stream_names(self.deployment), stream_names(self.partition)


def both_layouts(
    client: Any, make_settings: Callable[..., Settings], n_leads: int = 40,
    tenants: tuple[str, ...] = ("t", "u"), **sections: Any,
) -> Iterator[Layouts]:  # fmt: skip
    """Run the engine over simulated traffic of ``tenants`` (some lines malformed: dead
    letters) in the deployment layout, copy it to the partition layout; drop both after.
    ``sections``: more settings of both (``make_settings``'s, the prefix's fixture)."""
    from engine.app import build_parts

    deployment = make_settings(streams={"partitions": PARTITIONS}, **sections)
    prefix = deployment.redis.key_prefix
    redis_section = {"key_prefix": prefix + "p", "key_layout": "partition"}
    partition = make_settings(redis=redis_section, streams={"partitions": PARTITIONS},
                              **sections)  # fmt: skip
    try:
        leads = _run_engine(client, build_parts(deployment, client), n_leads, tenants)
        to_partition_layout(client, stream_names(deployment), stream_names(partition))
        yield Layouts(deployment, partition, leads)
    finally:
        drop(client, prefix)
        drop(client, prefix + "p")


def _run_engine(
    client: Any, parts: Any, n_leads: int, tenants: tuple[str, ...]
) -> list[tuple[str, str]]:
    from benchmarks.simulator import SimConfig, generate

    pack = msgpack.Packer(use_bin_type=True).pack
    sims = [SimConfig(seed=5, leads=n_leads, days=20.0, tenant=t) for t in tenants]
    events = [ev for sim in sims for ev in generate(sim)]
    events.sort(key=lambda ev: ev["ts"])
    entries = [(0, f"1-{i}".encode(), {b"e": pack(ev)}) for i, ev in enumerate(events)]
    entries[5:5] = [(1, b"0-1", {b"e": b"junk"}), (2, b"0-2", {b"e": pack({"type": "x"})})]
    for lo in range(0, len(entries), 97):  # batches that split leads' events
        parts.processor.process(entries[lo : lo + 97])
    return sorted({(str(ev["tenant"]), _lead(ev)) for ev in events})


def _lead(ev: dict[str, Any]) -> str:
    return str(ev.get("lead_id") or f"~{ev.get('visitor_id')}")


def drop(client: Any, prefix: str) -> None:
    """Delete every key of a deployment, either layout."""
    keys = list(client.scan_iter(match=every_pattern(prefix), count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


def to_partition_layout(client: Any, src: StreamNames, dst: StreamNames) -> None:
    """Copy ``src`` (deployment layout) to ``dst`` (partition layout, another prefix)."""
    assert dst.sharded and not src.sharded and src.prefix != dst.prefix
    head = root(src.prefix) + ":"
    streams = _streams(src, dst)
    for raw in list(client.scan_iter(match=f"{head}*", count=1000)):
        key = raw.decode()
        rest = key[len(head) :]
        if rest.startswith("{"):
            tenant, lead = rest[1 : rest.index("}")].split(":", 1)
            part = rest[rest.index("}") + 2 :]
            _copy(client, key, lead_key(dst.home(tenant, lead), tenant, lead, part))
        elif rest.startswith("hot:") and rest != "hotidx":
            _split_zset(client, key, dst, rest[4:])
        elif rest.startswith("alias:"):
            _split_aliases(client, key, dst, rest[6:])
        elif key == ModelKeys(src.prefix).labels:  # the trainer's one stream: as it is
            _copy(client, key, ModelKeys(dst.prefix).labels)
        elif key == src.positions:
            for field, value in client.hgetall(key).items():
                client.hset(dst.of(int(field)).positions, field, value)
    for key, name_of in streams.items():  # alerts first: a bucket change points at one
        if client.exists(key):
            _split_stream(client, key, dst, name_of)


def _streams(src: StreamNames, dst: StreamNames) -> dict[str, Any]:
    return {
        src.alerts: lambda n: n.alerts,
        src.bucket_changes: lambda n: n.bucket_changes,
        src.cadence: lambda n: n.cadence,
        src.dead_letter: lambda n: n.dead_letter,
    }


def _copy(client: Any, key: str, target: str) -> None:
    client.restore(target, 0, client.dump(key), replace=True)


def _split_zset(client: Any, key: str, dst: StreamNames, tenant: str) -> None:
    for member, score in client.zrange(key, 0, -1, withscores=True):
        client.zadd(hot_key(dst.home(tenant, member.decode()), tenant), {member: score})


def _split_aliases(client: Any, key: str, dst: StreamNames, tenant: str) -> None:
    for src_lead, target in client.hgetall(key).items():
        client.hset(alias_key(dst.home(tenant, src_lead.decode()), tenant), src_lead, target)


def _split_stream(client: Any, key: str, dst: StreamNames, name_of: Any) -> None:
    for i, (sid, fields) in enumerate(client.xrange(key)):
        p = _partition(fields, dst.partitions, i)
        if b"after" in fields:  # a bucket change: its shard's last alert before it
            fields = {**fields, b"after": _last_before(client, dst.of(p).alerts, fields[b"after"])}
        client.xadd(name_of(dst.of(p)), fields, id=sid)


def _last_before(client: Any, alerts: str, after: bytes) -> bytes:
    rows = client.xrevrange(alerts, max=after.decode(), count=1)
    return rows[0][0] if rows else b"0-0"


def _partition(fields: dict[bytes, bytes], partitions: int, index: int) -> int:
    for tenant, lead in _leads(fields):
        if lead:
            return partition_of(tenant or "default", lead, partitions)
    if b"partition" in fields:
        return int(fields[b"partition"]) % partitions
    return index % partitions


def _leads(fields: dict[bytes, bytes]) -> Iterator[tuple[str, str]]:
    if b"l" in fields and b"t" in fields:
        yield fields[b"t"].decode(), fields[b"l"].decode()
    for name in (b"a", b"c", b"l"):
        if name in fields:
            try:
                body = msgpack.unpackb(fields[name], raw=False)
            except (ValueError, msgpack.UnpackException):
                continue
            if isinstance(body, dict):
                yield str(body.get("tenant") or ""), str(body.get("lead_id") or "")
