"""Redis memory per lead, on a dedicated server (INFO memory ``used_memory`` deltas).

Method (bounded, so the 1,000,000-lead point fits in a few minutes and a few GiB).
Each point runs on its own fresh private ``redis-server`` with no persistence:

1. ``used_memory`` of the empty server is the base.
2. ``sample`` simulated leads (2,000 in the full run) get realistic traffic through
   the engine's own :class:`engine.processor.Processor` — the same code as
   ``leadpulse run``, fed batches directly instead of through the streams, so stream
   memory is not counted: all of each lead's 60 days of events (~55 a lead) for the
   100,000-lead point, and only each lead's first ``per_lead`` events (10: creation,
   assignment, a first session — the lighter, far more common lead) for the
   1,000,000-lead point. Keys that are not per lead (alerts and dead-letter streams,
   positions, model, label queues) are deleted; the per-tenant hot list stays (one
   member per lead). ``MEMORY USAGE`` of every key gives the split by key part, and the
   lead records' values are split by their parts (features, score record, moments,
   marks: ``features/record.py``).
3. The server is filled to the target count by copying the sample leads' keys
   (DUMP / RESTORE, same TTL and encodings) under new lead ids, plus their hot-list
   entries, and per lead = (used_memory - base) / leads. This is the per-lead state
   the engine really produces, at the key count where the server's own overheads
   (main and expires dictionaries) are paid, without replaying 55 million events.
   A point whose estimate exceeds ``budget_bytes``
   (8 GiB; the machine is shared) is skipped and says so.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, cast

import msgpack
import redis

from benchmarks.harness import DedicatedServer, settings_for
from benchmarks.simulator import SimConfig, generate
from engine.app import build_parts
from engine.events import partition_of

__all__ = ["measure_memory"]

_PREFIX = "lp"
_TENANT = "demo"


def _used(client: redis.Redis) -> int:
    return int(cast(dict[str, Any], client.info("memory"))["used_memory"])


def _replay_sample(
    client: redis.Redis,
    leads: int,
    per_lead: int | None,
    progress: Callable[[int, int], object] | None,
) -> int:
    settings = settings_for(_PREFIX)
    parts = build_parts(settings, client)
    partitions = settings.streams.partitions
    events = list(generate(SimConfig(seed=7, leads=leads, days=60.0, tenant=_TENANT)))
    if per_lead is not None:  # a lighter lead: only its first ``per_lead`` events
        seen: dict[str, int] = defaultdict(int)
        kept = []
        for ev in events:
            who = str(ev.get("lead_id") or ev.get("visitor_id"))
            seen[who] += 1
            if seen[who] <= per_lead:
                kept.append(ev)
        events = kept
    pack = msgpack.Packer(use_bin_type=True).pack
    base_ms = int(time.time() * 1000)
    batch = settings.streams.read_count
    for lo in range(0, len(events), batch):
        entries = []
        for i, ev in enumerate(events[lo : lo + batch], start=lo):
            lead = ev.get("lead_id") or f"~{ev['visitor_id']}"
            p = partition_of(_TENANT, str(lead), partitions)
            entries.append((p, f"{base_ms}-{i}".encode(), {b"e": pack(ev)}))
        parts.processor.process(entries)
        if progress is not None:
            progress(min(len(events), lo + batch), len(events))
    return len(events)


def _lead_keys(client: redis.Redis) -> dict[str, list[bytes]]:
    """Lead tag ``{tenant:lead}`` -> its keys; deletes keys that are not per lead."""
    by_lead: dict[str, list[bytes]] = defaultdict(list)
    other: list[bytes] = []
    root = f"{{{_PREFIX}}}:"  # every key's head: the prefix as a hash tag
    hot = f"{root}hot:".encode()
    for key in client.scan_iter(match=f"{root}*", count=2_000):
        rest = key.decode()[len(root) :]
        if rest.startswith("{"):  # a lead's key: {prefix}:{tenant:lead}:part
            by_lead[rest[: rest.index("}") + 1]].append(key)
        elif not key.startswith(hot):
            other.append(key)
    if other:
        client.delete(*other)
    return by_lead


def _split(client: redis.Redis, by_lead: dict[str, list[bytes]]) -> dict[str, Any]:
    """Average MEMORY USAGE per lead by key part (h, e, v, ...), keys per lead, and the
    bytes of the lead records' own parts (:func:`_record_split`)."""
    total: dict[str, int] = defaultdict(int)
    present: dict[str, int] = defaultdict(int)
    pipe = client.pipeline(transaction=False)
    order: list[str] = []
    for keys in by_lead.values():
        for key in keys:
            pipe.memory_usage(key, samples=0)
            order.append(key.decode().rsplit(":", 1)[1])
    for part, used in zip(order, pipe.execute(), strict=True):
        total[part] += int(used or 0)
        present[part] += 1
    n = max(1, len(by_lead))
    return {
        "bytes_per_lead_by_part": {k: round(v / n, 1) for k, v in sorted(total.items())},
        "leads_with_part": {k: present[k] for k in sorted(present)},
        "keys_per_lead": round(sum(present.values()) / n, 2),
        "record_bytes_per_lead": _record_split(client, by_lead),
    }


#: The lead record's parts (``features/record.py``, schema 2) by array index.
_RECORD_PARTS = (("features", 1, 11), ("score", 11, 12), ("moments", 12, 13), ("marks", 13, 14))


def _record_split(client: redis.Redis, by_lead: dict[str, list[bytes]]) -> dict[str, float]:
    """Average bytes a lead of each part of its ``:f`` value (msgpack of the part alone):
    where the value's bytes go. Schema 1 values count as ``features`` only."""
    keys = [k for keys in by_lead.values() for k in keys if k.endswith(b":f")]
    total: dict[str, int] = defaultdict(int)
    for lo in range(0, len(keys), 500):
        for blob in cast(list[bytes | None], client.mget(keys[lo : lo + 500])):
            if blob is None:
                continue
            r = msgpack.unpackb(blob, raw=False)
            total["value"] += len(blob)
            for name, a, b in _RECORD_PARTS:
                total[name] += sum(len(msgpack.packb(x, use_bin_type=True)) for x in r[a:b])
    n = max(1, len(by_lead))
    return {k: round(v / n, 1) for k, v in total.items()}


def _clone(
    client: redis.Redis,
    by_lead: dict[str, list[bytes]],
    start: int,
    stop: int,
    progress: Callable[[int, int], object] | None,
) -> None:
    """Copies of the sample leads as leads ``start .. stop-1`` (DUMP/RESTORE + hot list)."""
    templates: list[tuple[str, list[tuple[str, int, bytes]], float | None]] = []
    hot = f"{{{_PREFIX}}}:hot:{_TENANT}"
    for tag, keys in by_lead.items():
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.dump(key)
            pipe.pttl(key)
        raw = pipe.execute()
        lead = tag[1:-1].split(":", 1)[1]
        parts = [
            (key.decode().rsplit(":", 1)[1], max(0, int(raw[2 * i + 1])), raw[2 * i])
            for i, key in enumerate(keys)
            if raw[2 * i] is not None
        ]
        templates.append((tag, parts, cast(float | None, client.zscore(hot, lead))))
    chunk = 2_000
    for lo in range(start, stop, chunk):
        pipe = client.pipeline(transaction=False)
        scores: dict[str, float] = {}
        for j in range(lo, min(stop, lo + chunk)):
            _, parts, score = templates[j % len(templates)]
            lead = f"C{j:07d}"
            for part, ttl, blob in parts:
                pipe.restore(f"{{{_PREFIX}}}:{{{_TENANT}:{lead}}}:{part}", ttl, blob, replace=True)
            if score is not None:
                scores[lead] = score
        if scores:
            pipe.zadd(hot, scores)
        pipe.execute()
        if progress is not None:
            progress(min(stop, lo + chunk), stop)


def measure_memory(
    sample: int,
    points: Sequence[tuple[int, int | None]],
    progress: Callable[[str, int, int], object] | None = None,
    budget_bytes: int = 8 << 30,
) -> dict[str, Any]:
    """Bytes of Redis memory per lead at each (lead count, events per lead or None = all).

    Each point gets its own fresh dedicated server. A point whose estimate (sample's
    bytes per lead x leads) exceeds ``budget_bytes`` is skipped and says so: the
    machine is shared.
    """
    out: dict[str, Any] = {"points": []}

    def step(name: str) -> Callable[[int, int], object] | None:
        if progress is None:
            return None
        return lambda done, total: progress(name, done, total)

    for target, per_lead in points:
        label = f"{target:,} leads" + (f", {per_lead} ev/lead" if per_lead else "")
        with DedicatedServer() as server:
            client = server.client
            out["server"] = f"{server.kind} {server.version} (dedicated, no persistence)"
            base = _used(client)
            n_events = _replay_sample(client, sample, per_lead, step(f"{label}: replay"))
            by_lead = _lead_keys(client)
            leads = len(by_lead)
            split = _split(client, by_lead)
            per = sum(split["bytes_per_lead_by_part"].values())
            row: dict[str, Any] = {
                "leads": target,
                "events_per_lead": per_lead or "all (60 days)",
                "sample": {
                    "leads": leads,
                    "events": n_events,
                    "events_per_lead": round(n_events / max(1, leads), 1),
                    "memory_usage_bytes_per_lead": round(per, 1),
                    **split,
                },
            }
            estimate = per * target
            if estimate > budget_bytes:
                row["skipped"] = f"estimate {estimate / 2**30:.1f} GiB > budget"
                out["points"].append(row)
                continue
            if target > leads:
                _clone(client, by_lead, leads, target, step(f"{label}: copy"))
            used = _used(client) - base
            row["used_memory_delta"] = used
            row["bytes_per_lead"] = round(used / max(target, leads), 1)
            out["points"].append(row)
    return out
