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

Identity (``identify``, ``leadpulse merge``) moves a lead's state between workers only
through the streams (:mod:`engine.identity`): a worker folds a lead it owns, hands a
lead it owns over on request, and forwards the events of a lead it handed over. No
worker reads or writes the state of a lead on another partition, so the cache is
never stale.

All keys of a lead share the hash tag ``{tenant:lead}`` so they live in one slot.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import redis

from engine.events import OUTCOME_TYPES, Event, partition_of
from engine.identity import (
    HANDOVER,
    MAX_HOPS,
    REQUEST,
    Control,
    as_scored,
    control_of,
    forward_event,
    handover,
    hops,
    pack,
    readdress,
    request,
    source_of,
)  # fmt: skip
from engine.keys import alias_key, due_key, hot_key, lead_key
from engine.records import ScoreRecord, score_state, unpack_record
from engine.settings import FeatureSettings
from features.spec import FeatureSpec
from features.state import APPLIED, DUPLICATE, LATE, LeadFeatures, eid_hash, from_legacy, unpack

__all__ = [
    "APPLIED", "DUPLICATE", "FeatureReply", "FeatureStore", "FeatureWrites", "Fold", "LATE",
    "LEGACY_PARTS", "LEGACY_SCORE", "SKIPPED", "STATE_FIELDS", "alias_key", "due_key",
    "hot_key", "lead_key", "queue_after", "queue_writes", "read_state",
]  # fmt: skip

#: Schema 0 keys of a lead (hash, sorted sets, reply cache): read once, then deleted.
LEGACY_PARTS = ("h", "e", "v", "a", "x", "p")
_OUTCOMES = frozenset(OUTCOME_TYPES)
#: Reply status of an entry this worker does not score: a control entry handled here (a
#: request, a merge) or an entry forwarded to the lead it belongs to now.
SKIPPED = 4
Lead = tuple[str, str]


@dataclass(frozen=True, slots=True)
class FeatureReply:
    """What the store says about one event."""

    status: int
    features: dict[str, float | str]
    context: dict[str, Any]
    score_state: dict[str, str]
    snapshots: list[bytes]
    routed: Event | None = None  # the event as applied, if not the entry's own (identity)


@dataclass(frozen=True, slots=True)
class Fold:
    """One lead folded into another (identify, merge): the Redis side of it. In
    ``FeatureWrites.folds`` the target's side (moments arrive), in ``cleared`` the
    source's (alias written, keys deleted); a local fold is in both."""

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
    cleared: list[Fold] = field(default_factory=list)  # sources folded away (queue_after)
    outbox: list[tuple[int, bytes]] = field(default_factory=list)  # control entries to append
    legacy: set[Lead] = field(default_factory=set)  # schema 0 keys to delete


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
    alias: str = ""  # the lead this one was folded into (only its own worker writes it)


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

    # -- cache -----------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget every cached lead (after a failed batch, a restart)."""
        with self._lock:
            self._cache.clear()

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

    # -- a batch -----------------------------------------------------------------------------
    def apply(self, events: Sequence[Event]) -> tuple[list[FeatureReply], FeatureWrites]:
        """Apply a batch in order: the replies (one per event) and the batch's writes."""
        writes = FeatureWrites()
        if not events:
            return [], writes
        with self._lock:
            touched, snaps = self._load(events, writes)
            replies = [self._apply_one(ev, touched, snaps, writes) for ev in events]
            spec = self.spec
            for lead, held in touched.items():
                if held.features.empty:
                    continue  # a folded-away source: deleted by its fold
                writes.records[lead] = held.features.pack(spec)
        return replies, writes

    def _apply_one(
        self, ev: Event, touched: dict[Lead, _Held], snaps: dict[Lead, list[bytes]],
        writes: FeatureWrites,
    ) -> FeatureReply:  # fmt: skip
        c = control_of(ev)
        if c is not None and c.kind == REQUEST:
            return self._hand_over(c, touched, snaps, writes)
        routed = self._route(ev, touched, writes)
        if routed is None:
            return _SKIP
        lead = (routed.tenant, routed.lead_id)
        held = touched[lead]
        c = control_of(routed)
        if c is not None and c.kind == HANDOVER:
            return self._take_over(c, held, snaps, writes)
        applied = c.event if c is not None and c.event is not None else routed
        source = source_of(applied)
        if source:
            self._identify(applied, source, touched, snaps, writes)
        if control_of(applied) is not None:  # a merge: folded (or requested) above
            return _SKIP
        status, reactivated = held.features.apply(self.spec, applied)
        if status in (DUPLICATE, LATE):
            return FeatureReply(status, {}, {}, {}, [])
        feats, context = held.features.features(self.spec, reactivated)
        moments = snaps.get(lead, []) if applied.type in _OUTCOMES else []
        routed_ev = applied if applied is not ev else None
        return FeatureReply(status, feats, context, dict(held.state), list(moments), routed_ev)

    def _route(self, ev: Event, touched: dict[Lead, _Held], writes: FeatureWrites) -> Event | None:
        """``ev`` addressed to the lead it lives on now: along aliases on this partition, or
        sent on to the partition of the lead it was folded into (None). A cycle of aliases
        ends after ``MAX_HOPS``: the entry stays where it got to."""
        p, tenant = self._partitions, ev.tenant
        here = partition_of(tenant, ev.lead_id, p)
        held = touched[(tenant, ev.lead_id)]
        local = 0
        while held.alias and local < MAX_HOPS and hops(ev) < MAX_HOPS:
            target = held.alias
            if partition_of(tenant, target, p) != here or (tenant, target) not in touched:
                self._send(writes, forward_event(ev, target))
                return None
            ev, held = readdress(ev, target), touched[(tenant, target)]
            local += 1
        return ev

    # -- identity (engine/identity.py decides; the writes go on the batch's transaction) ------
    def _send(self, writes: FeatureWrites, c: Control) -> None:
        writes.outbox.append((partition_of(c.tenant, c.address, self._partitions), pack(c)))

    def _identify(
        self, ev: Event, source: str, touched: dict[Lead, _Held],
        snaps: dict[Lead, list[bytes]], writes: FeatureWrites,
    ) -> None:  # fmt: skip
        """Fold ``source`` into ``ev``'s lead: here if this worker owns it, else ask its owner."""
        tenant, target, p = ev.tenant, ev.lead_id, self._partitions
        if partition_of(tenant, source, p) != partition_of(tenant, target, p):
            self._send(writes, request(ev, source))
            return
        if touched[(tenant, source)].alias:
            return  # folded already (into this lead, or first into another)
        self._fold(tenant, source, target, touched, snaps, writes)

    def _hand_over(
        self, req: Control, touched: dict[Lead, _Held], snaps: dict[Lead, list[bytes]],
        writes: FeatureWrites,
    ) -> FeatureReply:  # fmt: skip
        """The owner of ``req.source`` gives its state away: alias, delete, hand-over entry."""
        key = (req.tenant, req.source)
        held = touched[key]
        if held.alias or req.source == req.target:
            return _SKIP  # handed over before: nothing is left here
        moved = snaps.pop(key, [])
        had = not held.features.empty
        blob = held.features.pack(self.spec) if had else None
        touched[key] = self._cache[key] = _Held(LeadFeatures(), {}, alias=req.target)
        p = self._partitions
        fold = Fold(req.tenant, req.source, req.target, had, (),
                    partition_of(*key, p), partition_of(req.tenant, req.target, p))  # fmt: skip
        writes.cleared.append(fold)
        if had or moved:
            self._send(writes, handover(req, blob, moved))
        return _SKIP

    def _take_over(
        self, c: Control, held: _Held, snaps: dict[Lead, list[bytes]], writes: FeatureWrites
    ) -> FeatureReply:
        """The owner of ``c.target`` folds a hand-over in, once (its id joins the dedup hashes)."""
        mark = eid_hash(f"handover:{c.hid}")
        features = held.features
        if mark in features.seen_set:
            return FeatureReply(DUPLICATE, {}, {}, {}, [])
        if c.state is not None:
            try:
                features.fold(self.spec, unpack(c.state))
            except ValueError:
                pass  # unreadable: nothing to fold (never crash on an entry)
        features._remember(self.spec, mark)  # the store owns the dedup hashes
        if c.moments:
            snaps.setdefault((c.tenant, c.target), []).extend(c.moments)
        p = self._partitions
        writes.folds.append(Fold(c.tenant, c.source, c.target, True, c.moments,
                                 partition_of(c.tenant, c.source, p),
                                 partition_of(c.tenant, c.target, p)))  # fmt: skip
        feats, context = features.features(self.spec)
        return FeatureReply(APPLIED, feats, context, dict(held.state), [], as_scored(c))

    def _fold(
        self, tenant: str, source: str, target: str, touched: dict[Lead, _Held],
        snaps: dict[Lead, list[bytes]], writes: FeatureWrites,
    ) -> None:  # fmt: skip
        """Both leads are this worker's: fold at once."""
        src, dst = touched[(tenant, source)], touched[(tenant, target)]
        moved = tuple(snaps.pop((tenant, source), []))
        had = not src.features.empty
        if had:
            dst.features.fold(self.spec, src.features)
            snaps.setdefault((tenant, target), []).extend(moved)
        touched[(tenant, source)] = self._cache[(tenant, source)] = _Held(
            LeadFeatures(), {}, alias=target
        )
        p = self._partitions
        fold = Fold(tenant, source, target, had, moved if had else (),
                    partition_of(tenant, source, p), partition_of(tenant, target, p))  # fmt: skip
        writes.folds.append(fold)
        writes.cleared.append(fold)

    def _load(
        self, events: Sequence[Event], writes: FeatureWrites
    ) -> tuple[dict[Lead, _Held], dict[Lead, list[bytes]]]:
        """The batch's leads: cached ones as they are, the others in one pipelined read."""
        leads: dict[Lead, None] = {}
        moments: set[Lead] = set()
        p = self._partitions
        for ev in events:
            lead = (ev.tenant, ev.lead_id)
            leads[lead] = None
            c = control_of(ev)
            inner = c.event if c is not None and c.event is not None else ev
            source = source_of(inner)
            if source and partition_of(ev.tenant, source, p) == partition_of(*lead, p):
                leads[(ev.tenant, source)] = None  # a local fold (never another worker's lead)
                moments.add((ev.tenant, source))
            if inner.type in _OUTCOMES or (c is not None and c.kind == REQUEST):
                moments.add(lead)
        cache = self._cache
        touched: dict[Lead, _Held] = {}
        for lead in leads:
            held = cache.get(lead)
            if held is not None:
                cache.move_to_end(lead)
                touched[lead] = held
        missing = [lead for lead in leads if lead not in touched]
        loaded, snaps = read_state(self._r, self._prefix, self.spec, missing, sorted(moments))
        for lead, (held_features, state, legacy, alias) in loaded.items():
            held = _Held(held_features, state, alias)
            touched[lead] = cache[lead] = held
            if legacy:
                writes.legacy.add(lead)
        self._load_targets(touched, snaps, writes)
        while len(cache) > self._cap:
            cache.popitem(last=False)
        return touched, snaps

    def _load_targets(
        self, touched: dict[Lead, _Held], snaps: dict[Lead, list[bytes]], writes: FeatureWrites
    ) -> None:
        """Leads of this partition that folded leads of the batch live on now (rare: one more
        round trip per alias hop), so their events are applied here at once."""
        p = self._partitions
        for _ in range(MAX_HOPS):
            wanted = sorted(
                {(t, h.alias) for (t, lead), h in touched.items() if h.alias
                 and partition_of(t, h.alias, p) == partition_of(t, lead, p)}
                - touched.keys()
            )  # fmt: skip
            if not wanted:
                return
            loaded, more = read_state(self._r, self._prefix, self.spec, wanted, wanted)
            for lead, (features, state, legacy, alias) in loaded.items():
                touched[lead] = self._cache[lead] = _Held(features, state, alias)
                if legacy:
                    writes.legacy.add(lead)
            snaps.update(more)

    # -- readers -------------------------------------------------------------------------------
    def read(self, tenant: str, lead_id: str) -> dict[str, str]:
        """A lead's committed feature state as schema 0's field names (inspection, tests)."""
        loaded, _ = read_state(self._r, self._prefix, self.spec, [(tenant, lead_id)], [])
        features = loaded[(tenant, lead_id)][0]
        return {} if features.empty else features.legacy_view()

    def record(self, tenant: str, lead_id: str) -> LeadFeatures:
        """A lead's committed feature state (empty if none)."""
        loaded, _ = read_state(self._r, self._prefix, self.spec, [(tenant, lead_id)], [])
        return loaded[(tenant, lead_id)][0]


_SKIP = FeatureReply(SKIPPED, {}, {}, {}, [])


def read_state(
    client: Any, prefix: str, spec: FeatureSpec, leads: Sequence[Lead], moments: Sequence[Lead]
) -> tuple[dict[Lead, tuple[LeadFeatures, dict[str, str], bool, str]], dict[Lead, list[bytes]]]:
    """Committed state of ``leads`` (features, score state, whether schema 0 keys exist, the
    lead it was folded into) and the learning moments of ``moments``: one pipelined round
    trip (two for schema 0 leads)."""
    if not leads and not moments:
        return {}, {}
    pipe = client.pipeline(transaction=False)
    for tenant, lead_id in leads:
        pipe.get(lead_key(prefix, tenant, lead_id, "f"))
        pipe.exists(lead_key(prefix, tenant, lead_id, "h"))
        pipe.get(lead_key(prefix, tenant, lead_id, "r"))
        pipe.hmget(lead_key(prefix, tenant, lead_id, "s"), list(STATE_FIELDS))  # schema 0
        pipe.hget(alias_key(prefix, tenant), lead_id)
    for tenant, lead_id in moments:
        pipe.lrange(lead_key(prefix, tenant, lead_id, "n"), 0, -1)
    replies = pipe.execute()
    out: dict[Lead, tuple[LeadFeatures, dict[str, str], bool, str]] = {}
    legacy: list[Lead] = []
    for i, lead in enumerate(leads):
        blob, old, packed, state, alias = replies[5 * i : 5 * i + 5]
        st = _score_state(lead, packed, state)
        features = LeadFeatures()
        if blob is not None:
            try:
                features = unpack(blob)
            except ValueError:
                features = LeadFeatures()  # unreadable: the lead starts over (never crash)
        elif old:
            legacy.append(lead)
        out[lead] = (features, st, bool(old), _s(alias) if alias is not None else "")
    for lead in legacy:
        _, st, _, alias = out[lead]
        out[lead] = (_migrate(client, prefix, spec, lead), st, True, alias)
    snaps = {lead: list(r) for lead, r in zip(moments, replies[5 * len(leads) :], strict=True)}
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
    """Queue a batch's feature writes on a transaction: moments moved in by folds, then one
    SET per lead. The sources' side of folds goes last (:func:`queue_after`)."""
    for fold in writes.folds:
        _queue_arrival(pipe, prefix, fold, idle_s)
    for tenant, lead in writes.legacy:
        pipe.delete(*(lead_key(prefix, tenant, lead, part) for part in LEGACY_PARTS))
    for (tenant, lead), blob in writes.records.items():
        pipe.set(lead_key(prefix, tenant, lead, "f"), blob, ex=idle_s)


def queue_after(pipe: Any, prefix: str, writes: FeatureWrites) -> None:
    """The sources folded away in the batch, after everything else it writes (a score record
    or moments the batch made for a source before its fold go with it): the alias, then
    every key of the source deleted."""
    for fold in writes.cleared:
        tenant, source = fold.tenant, fold.source
        pipe.hset(alias_key(prefix, tenant), source, fold.target)
        pipe.zrem(hot_key(prefix, tenant), source)
        pipe.zrem(due_key(prefix, fold.source_partition), f"{tenant}\x1f{source}")
        parts = ("f", "r", "s", "n", *LEGACY_PARTS)
        pipe.delete(*(lead_key(prefix, tenant, source, part) for part in parts))


def _queue_arrival(pipe: Any, prefix: str, fold: Fold, idle_s: int) -> None:
    """Learning moments move with the person: before the target's own (its newest moment
    stays the list's tail, as its score record says)."""
    if not fold.snapshots:
        return
    tenant, target = fold.tenant, fold.target
    nkey = lead_key(prefix, tenant, target, "n")
    pipe.lpush(nkey, *reversed(fold.snapshots))
    pipe.expire(nkey, idle_s)
    oldest = min(float(msgpack.unpackb(b, raw=False)["ts"]) for b in fold.snapshots)
    member = f"{tenant}\x1f{target}"
    pipe.zadd(due_key(prefix, fold.target_partition), {member: oldest}, lt=True)


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
