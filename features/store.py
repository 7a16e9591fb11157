"""The feature store: partition-owned lead state, cached in process, written once per batch.

A lead's feature state is one record (``{tenant:lead}:f``, msgpack, see
:mod:`features.state`). The worker that processes a lead's events keeps the state in a
bounded in-process cache; a batch loads the leads it does not hold in one pipelined
read, applies its events in Python (:meth:`FeatureStore.apply`) and hands back
:class:`FeatureWrites`: one record per touched lead, written by the committer inside the
batch's one MULTI/EXEC with the stream positions. Nothing is written before the commit,
so a crash (or a failed commit) drops only the cache: the batch is read again and
applied to the state Redis committed, which gives exactly what an uninterrupted run
gives. Redis stays the system of record: the gateway, delivery and the CLI read it.

A ``leadpulse merge`` run outside the engine bumps the store generation; a batch whose
commit sees another generation than it started with is refused (WATCH) and redone
with an empty cache.

All keys of a lead share the hash tag ``{tenant:lead}`` so they live in one slot.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import msgpack
import redis

from engine.events import OUTCOME_TYPES, Event, partition_of
from engine.keys import alias_key, due_key, generation_key, hot_key, lead_key
from engine.records import ScoreRecord, score_state, unpack_record
from engine.settings import FeatureSettings
from features.spec import FeatureSpec
from features.state import APPLIED, DUPLICATE, LATE, LeadFeatures, from_legacy, unpack

__all__ = [
    "APPLIED", "DUPLICATE", "FeatureReply", "FeatureStore", "FeatureWrites", "Fold", "LATE",
    "LEGACY_PARTS", "LEGACY_SCORE", "STATE_FIELDS", "alias_key", "due_key", "generation_key",
    "hot_key", "lead_key", "queue_writes", "read_state",
]  # fmt: skip

#: Schema 0 keys of a lead (hash, sorted sets, reply cache): read once, then deleted.
LEGACY_PARTS = ("h", "e", "v", "a", "x", "p")
_OUTCOMES = frozenset(OUTCOME_TYPES)
Lead = tuple[str, str]


@dataclass(frozen=True, slots=True)
class FeatureReply:
    """What the store says about one event."""

    status: int
    features: dict[str, float | str]
    context: dict[str, Any]
    score_state: dict[str, str]
    snapshots: list[bytes]


@dataclass(frozen=True, slots=True)
class Fold:
    """One lead folded into another in a batch (identify, merge): the Redis side of it."""

    tenant: str
    source: str
    target: str
    had_state: bool
    snapshots: tuple[bytes, ...] = ()
    source_partition: int = 0
    target_partition: int = 0


@dataclass
class FeatureWrites:
    """What a batch changed in feature state, for the batch's transaction."""

    records: dict[Lead, bytes] = field(default_factory=dict)
    folds: list[Fold] = field(default_factory=list)
    legacy: set[Lead] = field(default_factory=set)  # schema 0 keys to delete
    generation: int = 0


#: Marks a score state read from schema 0's score hash (the commit deletes the hash).
LEGACY_SCORE = "legacy_score"

#: Score-state fields read with a lead (for the alert rules), as the score record stores them.
STATE_FIELDS = (
    "score", "bucket", "last_alert_ts", "jump_base", "jump_base_ts", "moment", "outcome",
    "outcome_ts", "bucket_by",
)  # fmt: skip


@dataclass(slots=True)
class _Held:
    features: LeadFeatures
    state: dict[str, str]


class FeatureStore:
    """Applies events to cached lead state; one pipelined read per batch for cache misses."""

    def __init__(
        self,
        client: redis.Redis,
        settings: FeatureSettings,
        prefix: str,
        partitions: int = 1,
        cache_leads: int = 200_000,
    ) -> None:
        self._r = client
        self._prefix = prefix
        self.spec = FeatureSpec.from_settings(settings)
        self._partitions = partitions
        self._cap = cache_leads
        self._cache: OrderedDict[Lead, _Held] = OrderedDict()
        self._lock = threading.RLock()
        self._gen: int | None = None

    # -- cache -----------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget every cached lead (after a failed batch, a stale generation, a restart)."""
        with self._lock:
            self._cache.clear()
            self._gen = None

    def forget(self, leads: Iterable[Lead]) -> None:
        with self._lock:
            for lead in leads:
                self._cache.pop(lead, None)

    def committed(self, records: Mapping[Lead, ScoreRecord]) -> None:
        """The batch landed: cached score state follows the score records it wrote."""
        with self._lock:
            for lead, record in records.items():
                held = self._cache.get(lead)
                if held is not None:
                    held.state = score_state(record)

    @property
    def cached(self) -> int:
        return len(self._cache)

    def generation(self) -> int:
        """The store generation the cache is valid for (read once after each clear)."""
        with self._lock:
            if self._gen is None:
                self._gen = int(cast(bytes | None, self._r.get(generation_key(self._prefix))) or 0)
            return self._gen

    # -- aliases ---------------------------------------------------------------------------
    def resolve_aliases(self, events: list[Event]) -> list[Event]:
        """Anonymous events of a visitor already folded into a lead go to that lead.

        The visitor's events and its ``identify`` travel on different partitions, so
        some anonymous events can be applied after the fold; without this they would
        start a new anonymous state. One round trip, only when the batch has ``~`` ids.
        """
        wanted = {(e.tenant, e.lead_id) for e in events if e.lead_id.startswith("~")}
        if not wanted:
            return events
        pairs = sorted(wanted)
        pipe = self._r.pipeline(transaction=False)
        for tenant, lead in pairs:
            pipe.hget(alias_key(self._prefix, tenant), lead)
        found = {
            pair: target.decode()
            for pair, target in zip(pairs, pipe.execute(), strict=True)
            if target is not None
        }
        if not found:
            return events
        return [
            replace(e, lead_id=found[(e.tenant, e.lead_id)])
            if (e.tenant, e.lead_id) in found and e.type != "identify"
            else e
            for e in events
        ]

    # -- a batch -----------------------------------------------------------------------------
    def apply(self, events: Sequence[Event]) -> tuple[list[FeatureReply], FeatureWrites]:
        """Apply a batch in order: the replies (one per event) and the batch's writes."""
        writes = FeatureWrites(generation=self.generation())
        if not events:
            return [], writes
        with self._lock:
            touched, snaps = self._load(events, writes)
            replies = [self._apply_one(ev, touched, snaps, writes) for ev in events]
            spec = self.spec
            for lead, held in touched.items():
                if held.features.empty:
                    continue  # a folded-away source with no later event: deleted by its fold
                writes.records[lead] = held.features.pack(spec)
        return replies, writes

    def _apply_one(
        self, ev: Event, touched: dict[Lead, _Held], snaps: dict[Lead, list[bytes]],
        writes: FeatureWrites,
    ) -> FeatureReply:  # fmt: skip
        lead = (ev.tenant, ev.lead_id)
        if ev.type == "identify" and ev.visitor_id and ev.lead_id != f"~{ev.visitor_id}":
            self._fold(ev.tenant, f"~{ev.visitor_id}", ev.lead_id, touched, snaps, writes)
        held = touched[lead]
        status, reactivated = held.features.apply(self.spec, ev)
        if status in (DUPLICATE, LATE):
            return FeatureReply(status, {}, {}, {}, [])
        feats, context = held.features.features(self.spec, reactivated)
        moments = snaps.get(lead, []) if ev.type in _OUTCOMES else []
        return FeatureReply(status, feats, context, dict(held.state), list(moments))

    def _fold(
        self, tenant: str, source: str, target: str, touched: dict[Lead, _Held],
        snaps: dict[Lead, list[bytes]], writes: FeatureWrites,
    ) -> None:  # fmt: skip
        src, dst = touched[(tenant, source)], touched[(tenant, target)]
        moved = tuple(snaps.pop((tenant, source), []))
        had = not src.features.empty
        if had:
            dst.features.fold(self.spec, src.features)
            snaps.setdefault((tenant, target), []).extend(moved)
        touched[(tenant, source)] = _Held(LeadFeatures(), {})
        self._cache.pop((tenant, source), None)
        writes.records.pop((tenant, source), None)
        p = self._partitions
        writes.folds.append(
            Fold(
                tenant,
                source,
                target,
                had,
                moved if had else (),
                partition_of(tenant, source, p),
                partition_of(tenant, target, p),
            )
        )

    def _load(
        self, events: Sequence[Event], writes: FeatureWrites
    ) -> tuple[dict[Lead, _Held], dict[Lead, list[bytes]]]:
        """The batch's leads: cached ones as they are, the others in one pipelined read."""
        leads: dict[Lead, None] = {}
        moments: set[Lead] = set()
        for ev in events:
            leads[(ev.tenant, ev.lead_id)] = None
            if ev.type == "identify" and ev.visitor_id:
                leads[(ev.tenant, f"~{ev.visitor_id}")] = None
                moments.add((ev.tenant, f"~{ev.visitor_id}"))
            elif ev.type in _OUTCOMES:
                moments.add((ev.tenant, ev.lead_id))
        cache = self._cache
        touched: dict[Lead, _Held] = {}
        for lead in leads:
            held = cache.get(lead)
            if held is not None:
                cache.move_to_end(lead)
                touched[lead] = held
        missing = [lead for lead in leads if lead not in touched]
        loaded, snaps = read_state(self._r, self._prefix, self.spec, missing, sorted(moments))
        for lead, (held_features, state, legacy) in loaded.items():
            held = _Held(held_features, state)
            touched[lead] = cache[lead] = held
            if legacy:
                writes.legacy.add(lead)
        while len(cache) > self._cap:
            cache.popitem(last=False)
        return touched, snaps

    # -- outside the engine --------------------------------------------------------------------
    def merge(self, tenant: str, keep: str, other: str) -> bool:
        """Fold lead ``other`` into ``keep`` (the same person from two sources) and leave a
        pointer; True if there was state to fold. Idempotent; atomic (WATCH), and bumps the
        store generation so running engines reload the leads they cache."""
        p = self._prefix
        watched = [lead_key(p, tenant, lead, part) for lead in (keep, other) for part in "fsn"]
        with self._r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(*watched)
                    leads = [(tenant, keep), (tenant, other)]
                    loaded, snaps = read_state(self._r, p, self.spec, leads, [(tenant, other)])
                    touched = {k: _Held(v[0], v[1]) for k, v in loaded.items()}
                    writes = FeatureWrites()
                    self._fold(tenant, other, keep, touched, snaps, writes)
                    kept = touched[(tenant, keep)].features
                    if not kept.empty:
                        writes.records[(tenant, keep)] = kept.pack(self.spec)
                    writes.legacy |= {k for k, v in loaded.items() if v[2]}
                    pipe.multi()
                    queue_writes(pipe, p, writes, self.spec.idle_s)
                    pipe.incr(generation_key(p))
                    pipe.execute()
                    return writes.folds[0].had_state
                except redis.WatchError:
                    continue

    def read(self, tenant: str, lead_id: str) -> dict[str, str]:
        """A lead's committed feature state as schema 0's field names (inspection, tests)."""
        loaded, _ = read_state(self._r, self._prefix, self.spec, [(tenant, lead_id)], [])
        features = loaded[(tenant, lead_id)][0]
        return {} if features.empty else features.legacy_view()

    def record(self, tenant: str, lead_id: str) -> LeadFeatures:
        """A lead's committed feature state (empty if none)."""
        loaded, _ = read_state(self._r, self._prefix, self.spec, [(tenant, lead_id)], [])
        return loaded[(tenant, lead_id)][0]


def read_state(
    client: Any, prefix: str, spec: FeatureSpec, leads: Sequence[Lead], moments: Sequence[Lead]
) -> tuple[dict[Lead, tuple[LeadFeatures, dict[str, str], bool]], dict[Lead, list[bytes]]]:
    """Committed state of ``leads`` (features, score state, whether schema 0 keys exist) and
    the learning moments of ``moments``: one pipelined round trip (two for schema 0 leads)."""
    if not leads and not moments:
        return {}, {}
    pipe = client.pipeline(transaction=False)
    for tenant, lead_id in leads:
        pipe.get(lead_key(prefix, tenant, lead_id, "f"))
        pipe.exists(lead_key(prefix, tenant, lead_id, "h"))
        pipe.get(lead_key(prefix, tenant, lead_id, "r"))
        pipe.hmget(lead_key(prefix, tenant, lead_id, "s"), list(STATE_FIELDS))  # schema 0
    for tenant, lead_id in moments:
        pipe.lrange(lead_key(prefix, tenant, lead_id, "n"), 0, -1)
    replies = pipe.execute()
    out: dict[Lead, tuple[LeadFeatures, dict[str, str], bool]] = {}
    legacy: list[Lead] = []
    for i, lead in enumerate(leads):
        blob, old, packed, state = replies[4 * i : 4 * i + 4]
        st = _score_state(lead, packed, state)
        features = LeadFeatures()
        if blob is not None:
            try:
                features = unpack(blob)
            except ValueError:
                features = LeadFeatures()  # unreadable: the lead starts over (never crash)
        elif old:
            legacy.append(lead)
        out[lead] = (features, st, bool(old))
    for lead in legacy:
        out[lead] = (_migrate(client, prefix, spec, lead), out[lead][1], True)
    snaps = {lead: list(r) for lead, r in zip(moments, replies[4 * len(leads) :], strict=True)}
    return out, snaps


def _score_state(lead: Lead, packed: bytes | None, legacy: list[Any]) -> dict[str, str]:
    """The alert state of the lead's score record; from schema 0's hash (``:s``) if it has
    no ``:r`` yet, marked ``LEGACY_SCORE`` so the next commit deletes that hash."""
    record = unpack_record(lead[0], lead[1], packed) if packed is not None else None
    if record is not None:
        return score_state(record)
    st = {k: _s(v) for k, v in zip(STATE_FIELDS, legacy, strict=True) if v is not None}
    if st:
        st[LEGACY_SCORE] = "1"
    return st


def _migrate(client: Any, prefix: str, spec: FeatureSpec, lead: Lead) -> LeadFeatures:
    """Schema 0 -> 1: the hash and sorted sets of a lead become its record."""
    tenant, lead_id = lead
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(lead_key(prefix, tenant, lead_id, "h"))
    for part in ("e", "v", "a"):
        pipe.zrange(lead_key(prefix, tenant, lead_id, part), 0, -1, withscores=True)
    h, e, v, a = pipe.execute()

    def members(rows: list[tuple[bytes, float]]) -> list[tuple[str, float]]:
        return [(_s(m), float(ts)) for m, ts in rows]

    fields = {_s(k): _s(x) for k, x in h.items()}
    return from_legacy(spec, fields, members(e), members(v), members(a))


def queue_writes(pipe: Any, prefix: str, writes: FeatureWrites, idle_s: int) -> None:
    """Queue a batch's feature writes on a transaction: folds first, then one SET per lead."""
    for fold in writes.folds:
        _queue_fold(pipe, prefix, fold, idle_s)
    for tenant, lead in writes.legacy:
        pipe.delete(*(lead_key(prefix, tenant, lead, part) for part in LEGACY_PARTS))
    for (tenant, lead), blob in writes.records.items():
        pipe.set(lead_key(prefix, tenant, lead, "f"), blob, ex=idle_s)


def _queue_fold(pipe: Any, prefix: str, fold: Fold, idle_s: int) -> None:
    tenant, source, target = fold.tenant, fold.source, fold.target
    pipe.hset(alias_key(prefix, tenant), source, target)
    if not fold.had_state:
        return
    if fold.snapshots:  # learning moments move with the person
        nkey = lead_key(prefix, tenant, target, "n")
        pipe.rpush(nkey, *fold.snapshots)
        pipe.expire(nkey, idle_s)
        oldest = min(float(msgpack.unpackb(b, raw=False)["ts"]) for b in fold.snapshots)
        member = f"{tenant}\x1f{target}"
        pipe.zadd(due_key(prefix, fold.target_partition), {member: oldest}, lt=True)
    pipe.zrem(hot_key(prefix, tenant), source)
    pipe.zrem(due_key(prefix, fold.source_partition), f"{tenant}\x1f{source}")
    parts = ("f", "r", "s", "n", *LEGACY_PARTS)
    pipe.delete(*(lead_key(prefix, tenant, source, part) for part in parts))


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
