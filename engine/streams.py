"""Redis Streams: the partitioned ingestion log, and the other streams we append to.

Layout (prefix ``lp``): every key starts with the hash tag ``{lp}`` (engine/keys.py)

- ``{lp}:events:{p}``   P partitions; every event of a lead lands on ``partition_of``
- ``{lp}:pos``          hash partition -> last stream id whose batch committed
- ``{lp}:deadletter``   rejected events with their reason
- ``{lp}:alerts``       score-jump alerts for delivery
- ``{lp}:cadence``      due follow-up steps (agent tasks, automatic messages) for delivery
- ``{lp}:buckets``      bucket changes (old -> new bucket of a lead) for CRM write-back,
                      appended in the transaction that commits the batch

An entry holds ``e`` (the event, msgpack) and the stream id, whose millisecond
part is the ingest time used for event -> alert latency. A **control entry** holds
``c`` instead (:data:`CONTROL`): an identity hand-over step (``engine/identity.py``)
appended by the engine in a batch's transaction, or a merge appended by ``leadpulse
merge``. The gateway only ever writes ``e``, so no client can send one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import msgpack
import redis
from redis.cluster import RedisCluster

from engine.events import partition_of
from engine.keys import StreamNames, forwarded_key, outbox_key, processed_key

if TYPE_CHECKING:
    from engine.settings import Settings

__all__ = [
    "CONTROL",
    "PartitionReader",
    "Producer",
    "StreamNames",
    "committed_positions",
    "forward_outbox",
    "ingest_ms",
    "processed_key",
    "queue_control",
    "queue_outbox",
    "queue_outbox_label",
    "stream_lag",
    "stream_names",
    "unprocessed",
]

#: The field of a control entry (contract events are ``e``, or ``j`` for raw JSON lines).
CONTROL = b"c"
_TO = b"to"  # an outbox entry's partition
_LABEL = b"l"  # an outbox entry's labelled example


def ingest_ms(stream_id: bytes | str) -> int:
    """The millisecond time Redis gave an entry when it was appended."""
    sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(sid.split("-", 1)[0])


def _lead_of(event: dict[str, Any]) -> tuple[str, str]:
    tenant = event.get("tenant") or "default"
    lead = event.get("lead_id") or (f"~{event['visitor_id']}" if event.get("visitor_id") else "")
    return str(tenant), str(lead)


class Producer:
    """Appends events to their lead's partition, pipelined (one round trip per call)."""

    def __init__(self, client: redis.Redis, names: StreamNames, maxlen: int) -> None:
        self._r = client
        self._names = names
        self._maxlen = maxlen

    def partition(self, event: dict[str, Any]) -> int:
        tenant, lead = _lead_of(event)
        return partition_of(tenant, lead, self._names.partitions)

    def send(self, events: Iterable[dict[str, Any]]) -> list[bytes]:
        """XADD each event (msgpack) to its partition; returns the stream ids."""
        pipe = self._r.pipeline(transaction=False)
        n = 0
        for ev in events:
            payload = msgpack.packb(ev, use_bin_type=True)
            self.send_raw(payload, self.partition(ev), pipe)
            n += 1
        return list(pipe.execute()) if n else []

    def send_json(self, line: bytes, pipe: Any = None) -> Any:
        """Append a raw JSON line that did not decode to an object (partition 0).

        It will be rejected with its reason by the engine; appending it keeps that
        rejection visible in the dead letter instead of silently skipping the line.
        """
        target = pipe if pipe is not None else self._r
        return target.xadd(
            self._names.events(0), {"j": line}, maxlen=self._maxlen or None, approximate=True
        )

    def send_raw(self, payload: bytes, partition: int, pipe: Any = None) -> Any:
        """Append already-encoded bytes (for undecodable input that must still be seen)."""
        target = pipe if pipe is not None else self._r
        return target.xadd(
            self._names.events(partition),
            {"e": payload},
            maxlen=self._maxlen or None,
            approximate=True,
        )


def stream_names(settings: Settings) -> StreamNames:
    """The deployment's key names from its settings (prefix, partitions, key layout)."""
    return StreamNames(
        settings.redis.key_prefix, settings.streams.partitions, settings.redis.key_layout
    )


def queue_control(target: Any, names: StreamNames, partition: int, payload: bytes) -> Any:
    """Append a control entry to a partition (on a transaction, or at once). Never trimmed
    by length: an entry no worker has processed yet must not be dropped (retention trims
    behind the committed position only)."""
    return target.xadd(names.events(partition), {CONTROL: payload})


def queue_outbox(pipe: Any, names: StreamNames, partition: int, payload: bytes) -> Any:
    """Slot-per-partition layout: a control entry for ``partition``, kept in the batch's
    own partition's outbox (its slot) by the batch's transaction; :func:`forward_outbox`
    appends it to ``partition`` once the batch committed, exactly once."""
    return pipe.xadd(outbox_key(names), {CONTROL: payload, _TO: str(partition)})


def queue_outbox_label(pipe: Any, names: StreamNames, label: bytes) -> Any:
    """Slot-per-partition layout: a labelled example for the trainer's one labels stream
    (under the deployment's tag), kept in the partition's outbox like a control entry."""
    return pipe.xadd(outbox_key(names), {_LABEL: label})


def forward_outbox(
    client: Any, names: StreamNames, partition: int, labels: str, labels_maxlen: int,
    count: int = 1_000,
) -> int:  # fmt: skip
    """Append the entries in ``partition``'s outbox where they go (control entries to
    their partitions, labels to the ``labels`` stream), then delete them: exactly once,
    as each destination's entries go in one transaction with the id of the last one
    (:func:`_forward`). Returns how many moved."""
    key, moved = outbox_key(names.of(partition)), 0
    while rows := cast(list[Any], client.xrange(key, count=count)):
        groups: dict[str, list[Any]] = {}  # destination tag -> its entries, in order
        for row in rows:
            fields = row[1]
            dest = names.prefix if _LABEL in fields else names.shard(int(fields[_TO]))
            groups.setdefault(dest, []).append(row)
        for dest, entries in groups.items():
            _forward(client, names, dest, str(partition), entries, labels, labels_maxlen)
        client.xdel(key, *(sid for sid, _ in rows))
        moved += len(rows)
        if len(rows) < count:  # that was all: no read to find the outbox empty
            break
    return moved


def _forward(
    client: Any, names: StreamNames, dest: str, source: str, entries: list[Any], labels: str,
    labels_maxlen: int,
) -> None:  # fmt: skip
    """Outbox entries of partition ``source`` to one destination tag, in one transaction
    with the id of the last (``forwarded_key``): after a crash between this and the
    outbox's XDEL, the entries up to that id are not appended again."""
    fwd = forwarded_key(dest)
    done = client.hget(fwd, source)
    after = _id(done) if done else (0, 0)
    fresh = [(sid, fields) for sid, fields in entries if _id(sid) > after]
    if not fresh:
        return
    pipe = client.pipeline(transaction=True)
    for _, fields in fresh:
        if _LABEL in fields:
            pipe.xadd(labels, {"l": fields[_LABEL]}, maxlen=labels_maxlen, approximate=True)
        else:
            queue_control(pipe, names, int(fields[_TO]), fields[CONTROL])
    pipe.hset(fwd, source, fresh[-1][0])
    pipe.execute()


def unprocessed(client: redis.Redis, names: StreamNames) -> list[int]:
    """Partitions holding entries after their committed position (a bounded run that
    appended control entries to a partition it had already finished). One round trip."""
    positions = committed_positions(client, names)
    pipe = client.pipeline(transaction=False)
    for p in range(names.partitions):
        pipe.xrevrange(names.events(p), count=1)
    out = []
    for p, last in enumerate(pipe.execute()):
        if last and _id(last[0][0]) > _id(positions[p]):
            out.append(p)
    return out


def _id(sid: bytes | str) -> tuple[int, int]:
    ms, _, seq = (sid.decode() if isinstance(sid, bytes) else sid).partition("-")
    return int(ms), int(seq or 0)


def stream_lag(
    client: redis.Redis, names: StreamNames, partitions: Iterable[int]
) -> dict[int, int]:
    """Entries appended to each partition but not yet committed by the dataflow.

    ``entries-added`` (Redis 7 XINFO) counts every append ever, trimmed or not; the
    engine counts what it processed in the same transaction as its positions. One
    round trip.
    """
    parts = list(partitions)
    pipe = client.pipeline(transaction=False)
    for p in parts:
        pipe.xinfo_stream(names.events(p))
    for p in parts:
        pipe.hget(processed_key(names.of(p)), str(p))
    replies = pipe.execute(raise_on_error=False)
    done = replies[len(parts) :]
    out = {}
    for p, info, processed in zip(parts, replies[: len(parts)], done, strict=True):
        added = int(info.get("entries-added", 0)) if isinstance(info, dict) else 0
        out[p] = max(0, added - int(processed or 0))
    return out


def committed_positions(client: redis.Redis, names: StreamNames) -> dict[int, str]:
    """Last committed stream id per partition ("0-0" where nothing committed yet)."""
    keys = list(dict.fromkeys(names.of(p).positions for p in range(names.partitions)))
    pipe = client.pipeline(transaction=False)
    for key in keys:  # one hash, or one a partition (slot-per-partition layout)
        pipe.hgetall(key)
    out = {p: "0-0" for p in range(names.partitions)}
    for raw in cast(list[dict[bytes, bytes]], pipe.execute()):
        for k, v in raw.items():
            out[int(k)] = v.decode() if isinstance(v, bytes) else str(v)
    return out


class PartitionReader:
    """Non-blocking reads of one partition after a position (XREAD without BLOCK)."""

    def __init__(self, client: redis.Redis, names: StreamNames, partition: int, count: int) -> None:
        self._r = client
        self._key = names.events(partition)
        self._count = count

    def read(self, after: str) -> Sequence[tuple[bytes, dict[bytes, bytes]]]:
        if isinstance(self._r, RedisCluster):
            # Sent to the key's node from the client's slot map: redis-py would otherwise ask
            # a node for XREAD's keys (COMMAND GETKEYS) on every read, and during a failover
            # that lookup fails with AttributeError instead of ConnectionError (redis-py 6.4).
            # A dropped node still raises ConnectionError (the dataflow's outage backoff
            # retries) and the client re-reads the slot map.
            node = self._r.get_node_from_key(self._key)
            args = ("XREAD", "COUNT", self._count, "STREAMS", self._key, after)
            reply = cast(list[Any], self._r.execute_command(*args, target_nodes=node))
        else:
            reply = cast(list[Any], self._r.xread({self._key: after}, count=self._count))
        return reply[0][1] if reply else []

    def last_id(self) -> str:
        """The id of the newest entry now ("0-0" if empty): the end of a bounded replay."""
        info = cast(
            dict[str, Any] | None,
            self._r.xinfo_stream(self._key) if self._r.exists(self._key) else None,
        )
        if not info:
            return "0-0"
        last = info["last-generated-id"]
        return last.decode() if isinstance(last, bytes) else str(last)
