"""Sinks: everything one batch changes, committed in a single MULTI/EXEC.

Lead records (one SET per lead the batch touched or changed: features, score record,
learning moments, report marks; ``features/record.py``), the per-tenant hot lists,
alerts, dead letters, the model *and the partition read positions* go in one
transaction. Either the whole batch's effects land with
its position, or none do and the batch is read again from the state Redis committed:
exactly-once effect on at-least-once input. Identity hand-overs ride on the same
transaction (``engine/identity.py``): the control entries a batch sends to other
partitions (requests, hand-overs, forwarded events) are appended in it, and the
sources it folded away are cleared last.

Bucket changes for CRM write-back go in the same transaction: the processor compares
each lead's stored bucket with the one its new score record holds, and
:data:`_BUCKET_CHANGES` appends a compact entry to ``<prefix>:buckets`` per change (a
drop to P5 or to lost included; a first score of P5 is not a change). Delivery reads that stream
in a consumer group and acknowledges an entry once its write-backs finished, so a
change lands exactly when its batch does and is written at least once, idempotently.

(One transaction spans keys of many leads and streams: every key carries the prefix's
hash tag (``engine/keys.py``), so on a Redis Cluster they all live in one slot and the
transaction stays one MULTI/EXEC; see README "Design decisions".)
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack
import redis

from engine.cadence.runner import CadenceEffects
from engine.keys import hot_index_key, lost_seen_key, watermark_key
from engine.model_store import ModelKeys, label_rows, publish_commands, queue_labels_after
from engine.records import Alert, ScoreRecord
from engine.redis_client import without_retry
from engine.reporting.batch import ReportDelta
from engine.streams import (
    StreamNames,
    committed_positions,
    forward_outbox,
    processed_key,
    queue_control,
    queue_outbox,
    queue_outbox_label,
    stream_lag,
)  # fmt: skip
from features.store import (
    FeatureWrites,
    LeadChanges,
    due_key,
    hot_key,
    queue_after,
    queue_writes,
    read_moments,
)  # fmt: skip

__all__ = [
    "BatchEffects", "Committer", "due_key", "hot_index_key", "hot_key", "lost_seen_key",
    "watermark_key",
]  # fmt: skip


#: Drop from the hot lists leads whose last score record is older than the cutoff (their
#: feature keys have expired by now): one atomic pass of at most ARGV[3] leads. ARGV[1] is
#: a hot list's key less its tenant (``hot_key(prefix, "")``), in the index's slot.
_PRUNE_HOT = r"""
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])
for _, m in ipairs(gone) do
  local sep = string.find(m, '\31', 1, true)
  redis.call('ZREM', ARGV[1] .. string.sub(m, 1, sep - 1), string.sub(m, sep + 1))
  redis.call('ZREM', KEYS[1], m)
end
return #gone
"""


#: Bucket changes of a batch, inside its MULTI/EXEC: KEYS[1] the bucket-changes stream,
#: KEYS[2] the alerts stream; ARGV[1] maxlen, then one per changed lead, 0x1f-separated:
#: tenant, lead, bucket before, its bucket_by, bucket, bucket_by, score, probability,
#: event ts, the batch's alert id and emit ms when an alert of the batch carries the same
#: bucket ("" otherwise), the top reason (text never holds 0x1f). The processor found the
#: changes (it holds each lead's stored bucket); the script only names ``after``: the
#: alerts stream's last id once this batch's alerts are in, so delivery writes a change
#: only after it has read the alerts up to there (one lead's writes stay in order).
_BUCKET_CHANGES = r"""
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local after = last[1] and last[1][1] or '0-0'
for i = 2, #ARGV do
  local f = {}
  for part in string.gmatch(ARGV[i] .. '\31', '([^\31]*)\31') do f[#f + 1] = part end
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    't', f[1], 'l', f[2], 'from', f[3], 'from_by', f[4], 'to', f[5], 'by', f[6],
    's', f[7], 'p', f[8], 'r', f[12], 'ts', f[9], 'alert', f[10], 'emit_ms', f[11],
    'after', after)
end
return #ARGV - 1
"""


@dataclass(frozen=True, slots=True)
class BucketMove:
    """A lead whose stored bucket the batch's score record changes (found by the processor)."""

    tenant: str
    lead_id: str
    bucket_before: str
    by_before: str
    top_reason: str


@dataclass
class BatchEffects:
    """The writes a batch wants; built by the processor, applied by :class:`Committer`."""

    score_records: dict[tuple[str, str], ScoreRecord] = field(default_factory=dict)
    bucket_changes: list[BucketMove] = field(default_factory=list)  # for CRM write-back
    # lead -> ("rewrite" | "append" | "replace_tail", moments): see learning.Moments.effect
    snapshots: dict[tuple[str, str], tuple[str, list[bytes]]] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    done: list[tuple[str, str, str]] = field(default_factory=list)  # events that counted
    positions: dict[int, str] = field(default_factory=dict)
    processed: dict[int, int] = field(default_factory=dict)  # entries per partition
    labels: list[bytes] = field(default_factory=list)
    due: dict[tuple[int, str], tuple[str, float] | None] = field(default_factory=dict)
    watermarks: dict[int, int] = field(default_factory=dict)
    lost_seen: set[int] = field(default_factory=set)
    model_work: bytes | None = None
    learned_to: str = "0-0"  # labels stream id the checkpointed model has learned up to
    publish: tuple[int, bytes, dict[str, Any]] | None = None
    report: ReportDelta | None = None  # brokerage reporting counters (engine/reporting)
    features: FeatureWrites | None = None  # lead feature records (features/store.py)
    cadence: CadenceEffects | None = None  # follow-up plans and due steps (engine/cadence)
    partition: int = -1  # the batch's one partition (slot-per-partition layout), else -1
    # the trainer's catch-up, read in the batch's transaction: the labels after this id
    # (``Learner.catch_up_in_commit``), and what the transaction found there
    labels_from: str | None = None
    labels_after: list[tuple[str, bytes]] | None = None


def _zset_writes(pipe: Any, key: str, gone: list[str], scores: dict[str, float]) -> None:
    """Members out of, and members with their scores into, one sorted set (members distinct)."""
    if gone:
        pipe.zrem(key, *gone)
    if scores:
        pipe.zadd(key, scores)


class Committer:
    """Applies :class:`BatchEffects` atomically (one round trip)."""

    def __init__(
        self,
        client: redis.Redis,
        names: StreamNames,
        *,
        alerts_maxlen: int,
        dead_letter_maxlen: int,
        max_snapshots: int,
        idle_expire_s: int,
        labels_maxlen: int = 1_000_000,
        retain_processed_s: float = 3_600,
    ) -> None:
        self._r = client
        self.names = names
        # never re-sent by redis-py: a lost EXEC reply must not commit a batch twice
        self._tx = without_retry(client)
        self._names = names
        self._prefix = names.prefix
        self._alerts_maxlen = alerts_maxlen
        self._dead_maxlen = dead_letter_maxlen
        self._max_snapshots = max_snapshots
        self._idle = idle_expire_s
        self._labels_maxlen = labels_maxlen
        self._retain_ms = int(retain_processed_s * 1000)
        self.model_keys = ModelKeys(names.prefix)
        self._prune_hot = client.register_script(_PRUNE_HOT)
        self._outbox_checked: set[int] = set()
        self._next_prune = 0.0

    @property
    def client(self) -> redis.Redis:
        """The client reads go through (engine/reporting reads its marks with it)."""
        return self._r

    def prune_hot(self, now: float | None = None, limit: int = 1_000) -> int:
        """Take leads idle longer than ``features.idle_expire_d`` off the hot lists.

        Their features and score record expire then; without this they would stay on
        the hot list at their last score for ever (and the zset would grow with every
        lead a brokerage ever had). Idempotent; returns how many went.
        """
        now = time.time() if now is None else now
        cutoff_ms = int((now - self._idle) * 1000)
        gone = 0
        for p in self._names.shards():  # one script a shard: its keys share a slot
            gone += int(self._prune_hot(keys=[hot_index_key(p)],
                                        args=[hot_key(p, ""), cutoff_ms, limit]))  # fmt: skip
        return gone

    def commit(self, fx: BatchEffects) -> None:
        if time.monotonic() >= self._next_prune:  # once a minute, outside the transaction
            self._next_prune = time.monotonic() + 60
            self.prune_hot()
        changes = self._changes(fx)
        if fx.features is None and changes.leads():
            raise ValueError("a batch that changes lead records needs its FeatureWrites")
        if fx.features is not None:  # leads the batch changes without events: read first
            fx.features.hold(changes.leads())
        names = self._batch_names(fx)
        outbox = fx.features.outbox if fx.features is not None else []
        with self._tx.pipeline(transaction=True) as pipe:
            if fx.features is not None:
                queue_writes(pipe, names.prefix, fx.features, self._idle, changes)
            self._queue(pipe, fx, names)
            if fx.features is not None:
                queue_after(pipe, names.prefix, fx.features)
            for partition, blob in outbox:  # another partition's slot: via the outbox
                queue = queue_outbox if self._names.sharded else queue_control
                queue(pipe, names, partition, blob)
            read_labels = fx.labels_from is not None and not self._names.sharded
            if read_labels:  # last: after this batch's own labels (the trainer skips those)
                queue_labels_after(pipe, self.model_keys, cast(str, fx.labels_from))
            replies = pipe.execute()
        if read_labels:
            fx.labels_after = label_rows(replies[-1])
        if self._names.sharded:
            self._after_sharded(fx, names, bool(outbox))

    def _batch_names(self, fx: BatchEffects) -> StreamNames:
        """The names the batch writes: the deployment's, or its partition's own."""
        if not self._names.sharded:
            return self._names
        if fx.partition < 0:
            raise ValueError("in the slot-per-partition layout a batch names its partition")
        return self._names.of(fx.partition)

    def _after_sharded(self, fx: BatchEffects, names: StreamNames, sent: bool) -> None:
        """Slot-per-partition layout: the model's writes (under the deployment's tag) in a
        transaction of their own, then the batch's outbox entries on to where they go."""
        if fx.model_work is not None or fx.publish is not None:
            with self._tx.pipeline(transaction=True) as pipe:
                self._queue_model(pipe, fx)
                pipe.execute()
        if sent or fx.labels:
            self._forward(fx.partition)

    def recover_outbox(self, partition: int) -> None:
        """Before a partition's first batch (slot-per-partition layout): what a crash left
        in its outbox goes on first, so the trainer's catch-up sees every committed label
        and the other partitions every hand-over, as if the crash came after the forward."""
        if self._names.sharded and partition not in self._outbox_checked:
            self._forward(partition)
            self._outbox_checked.add(partition)

    def flush_outbox(self, partition: int) -> None:
        """A batch whose commit landed but whose reply was lost: its outbox goes on now."""
        if self._names.sharded:
            self._forward(partition)

    def _forward(self, partition: int) -> None:
        forward_outbox(self._r, self._names, partition, self.model_keys.labels, self._labels_maxlen)

    def _changes(self, fx: BatchEffects) -> LeadChanges:
        """What the batch changes in its leads' records besides features (one SET a lead:
        ``features/record.py``)."""
        marks = {} if fx.report is None else {k: m.to_list() for k, m in fx.report.marks.items()}
        return LeadChanges(fx.score_records, fx.snapshots, marks, self._max_snapshots)

    def _queue(self, pipe: Any, fx: BatchEffects, names: StreamNames) -> None:
        """Every write of the batch, in an order that matters only where said."""
        for alert in fx.alerts:  # first: a bucket change names the last alert before it
            pipe.xadd(
                names.alerts,
                {"a": msgpack.packb(alert.wire(), use_bin_type=True)},
                maxlen=self._alerts_maxlen,
                approximate=True,
            )
        self._queue_bucket_changes(pipe, fx, names)  # after the alerts: it names the last one
        self._queue_leads(pipe, fx, names.prefix)
        for dead in fx.dead_letters:
            pipe.xadd(
                names.dead_letter,
                {k: v if isinstance(v, bytes) else str(v) for k, v in dead.items()},
                maxlen=self._dead_maxlen,
                approximate=True,
            )
        self._queue_learning(pipe, fx, names.prefix)
        if not self._names.sharded:
            self._queue_model(pipe, fx)
        if fx.report is not None:
            fx.report.apply(pipe)
        if fx.cadence is not None:
            fx.cadence.apply(pipe, names, self._alerts_maxlen, self._idle)
        self._queue_positions(pipe, fx, names)

    def _queue_leads(self, pipe: Any, fx: BatchEffects, p: str) -> None:
        """Hot lists and the learning moments' due index (score records and moments are
        in the leads' records: :func:`features.store.queue_writes`)."""
        now_ms = int(time.time() * 1000)
        # one ZREM / ZADD per key with all its members (each lead once: a dict's keys), the
        # same sets as a command per member gave
        hot: dict[str, tuple[list[str], dict[str, float]]] = {}
        index: tuple[list[str], dict[str, float]] = ([], {})
        for (tenant, lead), record in fx.score_records.items():
            gone, scores = hot.get(tenant) or hot.setdefault(tenant, ([], {}))
            indexed = f"{tenant}\x1f{lead}"
            if record.bucket == "P5" or lead.startswith("~"):  # visitor-level: not a lead yet
                gone.append(lead)
                index[0].append(indexed)
            else:
                scores[lead] = record.score
                index[1][indexed] = now_ms
        for tenant, members in hot.items():
            _zset_writes(pipe, hot_key(p, tenant), *members)
        _zset_writes(pipe, hot_index_key(p), *index)
        due: dict[int, tuple[list[str], dict[str, float], dict[str, float]]] = {}
        for (partition, member), plan in fx.due.items():
            gone, exact, lower = due.get(partition) or due.setdefault(partition, ([], {}, {}))
            if plan is None:
                gone.append(member)
            else:  # "set": exact; "lt": only if older than what is there
                (lower if plan[0] == "lt" else exact)[member] = plan[1]
        for partition, (gone, exact, lower) in due.items():
            _zset_writes(pipe, due_key(p, partition), gone, exact)
            if lower:
                pipe.zadd(due_key(p, partition), lower, lt=True)

    def _queue_learning(self, pipe: Any, fx: BatchEffects, p: str) -> None:
        """Labels, sweep watermarks, pacing."""
        if fx.watermarks:
            pipe.hset(watermark_key(p), mapping={str(k): v for k, v in fx.watermarks.items()})
        if fx.lost_seen:
            pipe.sadd(lost_seen_key(p), *sorted(fx.lost_seen))
        for label in fx.labels:  # one stream for the trainer, under the deployment's tag
            if self._names.sharded:  # via the partition's outbox (its slot)
                queue_outbox_label(pipe, self._names.of(fx.partition), label)
            else:
                pipe.xadd(self.model_keys.labels, {"l": label}, maxlen=self._labels_maxlen,
                          approximate=True)  # fmt: skip

    def _queue_model(self, pipe: Any, fx: BatchEffects) -> None:
        """The model's checkpoint and publication (under the deployment's tag)."""
        if fx.model_work is not None:
            pipe.set(self.model_keys.work, fx.model_work)
            # Retention: the trainer restarts from this checkpoint and reads only labels
            # after ``learned_to``, so older ones may go once past the retention window
            # too (an audit trail for an hour, and never a label the model has not seen).
            learned_ms = int(fx.learned_to.split("-", 1)[0])
            ms = min(learned_ms, int(time.time() * 1000) - self._retain_ms)
            if learned_ms > 0 and ms > 0:
                pipe.xtrim(self.model_keys.labels, minid=f"{ms}-0", approximate=True)
        if fx.publish is not None:
            publish_commands(pipe, self.model_keys, *fx.publish)

    def _queue_positions(self, pipe: Any, fx: BatchEffects, names: StreamNames) -> None:
        """The partitions' committed positions and counts, and the streams' retention."""
        if not fx.positions:
            return
        pipe.hset(names.positions, mapping={str(k): v for k, v in fx.positions.items()})
        for partition, n in fx.processed.items():
            pipe.hincrby(processed_key(names), str(partition), n)
        # Retention: only entries older than the committed position by the retention
        # window go; an entry the dataflow has not processed is never trimmed.
        for partition, sid in fx.positions.items():
            ms = int(str(sid).split("-", 1)[0]) - self._retain_ms
            if ms > 0:
                pipe.xtrim(self._names.events(partition), minid=f"{ms}-0", approximate=True)

    def _queue_bucket_changes(self, pipe: Any, fx: BatchEffects, names: StreamNames) -> None:
        """One script call: a ``<prefix>:buckets`` entry per lead whose bucket changed
        (:data:`_BUCKET_CHANGES`; the processor found them, visitors never among them)."""
        args: list[Any] = [self._alerts_maxlen]
        alerted = {(a.tenant, a.lead_id): a for a in fx.alerts}  # the last one wins
        for change in fx.bucket_changes:
            key = (change.tenant, change.lead_id)
            r, a = fx.score_records[key], alerted.get(key)
            same = a is not None and a.bucket == r.bucket and a.bucket_by == r.bucket_by
            args.append("\x1f".join((
                change.tenant, change.lead_id, change.bucket_before, change.by_before,
                r.bucket, r.bucket_by, str(r.score), str(r.probability), str(r.ts),
                a.alert_id if same and a else "", str(a.emit_ms) if same and a else "",
                change.top_reason.replace("\x1f", " "),
            )))  # fmt: skip
        if len(args) > 1:  # EVAL, not EVALSHA: a cluster node may not hold the script yet,
            # and a NOSCRIPT inside MULTI would abort the whole batch
            # (redis-py's cluster pipeline has no ``eval``; the raw command routes by its keys)
            pipe.execute_command("EVAL", _BUCKET_CHANGES, 2, names.bucket_changes,
                                 names.alerts, *args)  # fmt: skip

    def committed(self) -> dict[int, str]:
        """The committed position per partition (did a batch whose reply was lost land?)."""
        return committed_positions(self._r, self._names)

    def lag(self, partitions: Iterable[int]) -> dict[int, int]:
        """Unprocessed entries per partition (for the lag metric)."""
        return stream_lag(self._r, self._names, partitions)

    def watermarks(self) -> dict[int, int]:
        pipe = self._r.pipeline(transaction=False)
        for p in self._names.shards():
            pipe.hgetall(watermark_key(p))
        raws = cast(list[dict[bytes, bytes]], pipe.execute())
        return {int(k): int(v) for raw in raws for k, v in raw.items()}

    def lost_seen(self) -> set[int]:
        """Partitions that have committed an explicit ``lost`` outcome."""
        pipe = self._r.pipeline(transaction=False)
        for p in self._names.shards():
            pipe.smembers(lost_seen_key(p))
        return {int(m) for seen in cast(list[set[bytes]], pipe.execute()) for m in seen}

    def due_leads(self, partition: int, cutoff: float) -> list[tuple[str, list[bytes]]]:
        """Leads of ``partition`` holding a snapshot older than ``cutoff``, with their snapshots.

        Two round trips; runs at most once per partition per event-time day.
        """
        p = self._names.shard(partition)
        members = cast(list[bytes], self._r.zrangebyscore(due_key(p, partition), "-inf", cutoff))
        if not members:
            return []
        names = [m.decode() for m in members]
        leads = [cast(tuple[str, str], tuple(m.split("\x1f", 1))) for m in names]
        return list(zip(names, read_moments(self._r, p, leads), strict=True))
