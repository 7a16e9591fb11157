"""The feature store: partition-owned lead state, cached in process, written once per batch.

A lead's state is one record (``{tenant:lead}:f``, msgpack, :mod:`features.record`):
its features (:mod:`features.state`), score record, learning moments and report marks.
The worker that processes a lead's events keeps the record, decoded, in a bounded
in-process cache; a batch loads the leads it does not hold in one pipelined read,
applies its events in Python (:meth:`FeatureStore.apply`) and hands back
:class:`FeatureWrites`: the leads it holds, whose records the committer writes (one SET
per lead, :func:`queue_writes`, with the batch's score records, moments and marks as
:class:`LeadChanges`) inside the batch's one MULTI/EXEC with the stream positions.
Nothing is written before the commit, so a crash (or a failed commit) drops only the
cache: the batch is read again and applied to the state Redis committed, which gives
exactly what an uninterrupted run gives. Redis stays the system of record: the
gateway, delivery and the CLI read it.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import redis

from engine.events import OUTCOME_TYPES, Event, partition_of
from engine.identity import (
    CONTROL_TYPES,
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
from engine.keys import StreamNames, alias_key, due_key, home_of, hot_key, lead_key
from engine.records import ScoreRecord, record_from_items, score_state, unpack_record
from engine.reporting.aggregates import LeadMark
from engine.settings import FeatureSettings
from features.record import LEGACY_PARTS, LeadRecord, pack_record
from features.record import unpack_record as unpack_lead
from features.spec import FeatureSpec
from features.state import (
    APPLIED,
    DUPLICATE,
    LATE,
    LeadFeatures,
    Personal,
    eid_hash,
    from_legacy,
    unpack,
)  # fmt: skip

__all__ = [
    "APPLIED", "DUPLICATE", "FeatureReply", "FeatureStore", "FeatureWrites", "Fold", "LATE",
    "HeldLead", "LEGACY_PARTS", "LeadChanges", "SKIPPED", "STATE_FIELDS",
    "alias_key", "due_key", "hot_key", "lead_key", "queue_after", "queue_writes", "read_moments",
    "read_state",
]  # fmt: skip

_OUTCOMES = frozenset(OUTCOME_TYPES)
#: Reply status of an entry this worker does not score: a control entry handled here (a
#: request, a merge) or an entry forwarded to the lead it belongs to now.
SKIPPED = 4
Lead = tuple[str, str]


@dataclass(slots=True)
class FeatureReply:
    """What the store says about one event. Read-only by convention (not ``frozen``: one
    is made per event, and a frozen dataclass's ``__init__`` costs ~3x a plain one)."""

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
    """The batch's leads, for the batch's transaction: ``touched`` the ones its events
    changed (each written with a fresh TTL), ``held`` every lead the batch holds (more are
    added by :meth:`hold` when the batch changes leads its events did not touch)."""

    touched: set[Lead] = field(default_factory=set)
    held: dict[Lead, HeldLead] = field(default_factory=dict)
    folds: list[Fold] = field(default_factory=list)
    cleared: list[Fold] = field(default_factory=list)  # sources folded away (queue_after)
    outbox: list[tuple[int, bytes]] = field(default_factory=list)  # control entries to append
    spec: FeatureSpec | None = None  # the windows the records are trimmed to when packed
    loader: Callable[[Sequence[Lead]], dict[Lead, HeldLead]] | None = None
    # each lead's personalisation fields before the batch (``FeatureStore.keep_personal``)
    before: dict[Lead, Personal] = field(default_factory=dict)

    def hold(self, leads: Iterable[Lead]) -> dict[Lead, HeldLead]:
        """``leads`` as held (loaded from the store's cache or Redis if the batch does not
        hold them yet: one round trip, before the transaction)."""
        missing = sorted(set(leads) - self.held.keys())
        if missing:
            if self.loader is None:  # never drop a change: a record is written whole
                raise LookupError(f"{len(missing)} leads to write that the batch does not hold")
            self.held.update(self.loader(missing))
        return self.held


@dataclass(frozen=True, slots=True)
class LeadChanges:
    """What the rest of the batch changes in its leads' records (the committer's part):
    score records, learning-moment effects (``learning.Moments.effect``), report marks."""

    scores: Mapping[Lead, ScoreRecord] = field(default_factory=dict)
    moments: Mapping[Lead, tuple[str, list[bytes]]] = field(default_factory=dict)
    marks: Mapping[Lead, list[Any]] = field(default_factory=dict)
    max_moments: int = 64

    def leads(self) -> set[Lead]:
        return {*self.scores, *self.moments, *self.marks}


#: Score-state fields read with a lead (for the alert rules), as the score record stores them.
STATE_FIELDS = (
    "score", "bucket", "last_alert_ts", "jump_base", "jump_base_ts", "moment", "outcome",
    "outcome_ts", "bucket_by",
)  # fmt: skip


@dataclass(slots=True)
class HeldLead:
    """A lead as its worker holds it: the stored record, decoded (``features/record.py``)."""

    features: LeadFeatures
    state: dict[str, str]  # the score record's alert state (``STATE_FIELDS``)
    alias: str = ""  # the lead this one was folded into (only its own worker writes it)
    rest: LeadRecord = field(default_factory=LeadRecord)  # score record, moments, marks
    legacy: bool = False  # keys of schema 0/1 exist: deleted when the record is written


class FeatureStore:
    """Applies events to cached lead state; one pipelined read per batch for cache misses."""

    def __init__(
        self,
        client: redis.Redis,
        settings: FeatureSettings,
        prefix: str | StreamNames,
        partitions: int = 1,
        cache_leads: int = 200_000,
    ) -> None:
        """``prefix``: the deployment's key prefix, or its :class:`StreamNames` (the
        slot-per-partition layout reads each lead under its partition's tag)."""
        self._r = client
        self._prefix = prefix
        self.spec = FeatureSpec.from_settings(settings)
        self._partitions = partitions
        self._cap = cache_leads
        self._cache: OrderedDict[Lead, HeldLead] = OrderedDict()
        self._lock = threading.RLock()
        #: keep each batch lead's :class:`Personal` as it was before the batch
        #: (``FeatureWrites.before``: follow-up steps due before a lead's first event)
        self.keep_personal = False

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
    def apply(
        self, events: Sequence[Event], wanted: Callable[[Lead], bool] | None = None
    ) -> tuple[list[FeatureReply], FeatureWrites]:
        """Apply a batch in order: the replies (one per event) and the batch's writes
        (``wanted``: whether anyone will ask for a lead's fields before the batch, kept in
        ``FeatureWrites.before``; without it, every lead's are kept)."""
        writes = FeatureWrites(spec=self.spec, loader=self.hold)
        if not events:
            return [], writes
        with self._lock:
            touched, snaps = self._load(events, writes)
            if self.keep_personal:
                writes.before = {lead: h.features.personal() for lead, h in touched.items()
                                 if wanted is None or wanted(lead)}  # fmt: skip
            replies = [self._apply_one(ev, touched, snaps, writes) for ev in events]
            writes.held.update(touched)
            writes.touched.update(lead for lead, h in touched.items() if not h.alias)
        return replies, writes

    def hold(self, leads: Sequence[Lead]) -> dict[Lead, HeldLead]:
        """``leads`` as this worker holds them: cached, else read (one round trip) and
        cached. For the commit of leads a batch changes without their events (the
        learning sweep's moments)."""
        with self._lock:
            out = {lead: self._cache[lead] for lead in leads if lead in self._cache}
            missing = [lead for lead in leads if lead not in out]
            loaded, _ = read_state(self._r, self._prefix, self.spec, missing, [])
            for lead, held in loaded.items():
                out[lead] = self._cache[lead] = held
            return out

    def personal(self, leads: Sequence[Lead]) -> dict[Lead, Personal]:
        """The personalisation fields of ``leads`` as this worker holds them (cached, else
        read in one round trip, :meth:`hold`): a lead folded into another of this
        partition has that lead's (the same person's)."""
        with self._lock:
            held = self.hold(leads)
            return {lead: self._person(lead, h).features.personal() for lead, h in held.items()}

    def _person(self, lead: Lead, h: HeldLead) -> HeldLead:
        """``h``, or the lead of this partition it was folded into (along its aliases)."""
        if not h.alias:  # (the usual lead: no partition to compute)
            return h
        tenant, p = lead[0], self._partitions
        here = partition_of(tenant, lead[1], p)
        for _ in range(MAX_HOPS):
            if not h.alias or partition_of(tenant, h.alias, p) != here:
                break
            target = (tenant, h.alias)
            h = self.hold([target])[target]
        return h

    def _apply_one(
        self, ev: Event, touched: dict[Lead, HeldLead], snaps: dict[Lead, list[bytes]],
        writes: FeatureWrites,
    ) -> FeatureReply:  # fmt: skip
        """One event applied: a contract event here, a control entry in :meth:`_apply_control`."""
        if ev.type in CONTROL_TYPES:
            return self._apply_control(ev, touched, snaps, writes)
        held = touched[(ev.tenant, ev.lead_id)]
        routed = ev
        if held.alias:  # folded into another lead: its events go there
            moved = self._route(ev, touched, writes)
            if moved is None:
                return _SKIP
            routed, held = moved, touched[(moved.tenant, moved.lead_id)]
        if routed.type == "identify":
            source = source_of(routed)
            if source:
                self._identify(routed, source, touched, snaps, writes)
        return self._reply(ev, routed, held, snaps)

    def _reply(
        self, ev: Event, applied: Event, held: HeldLead, snaps: dict[Lead, list[bytes]]
    ) -> FeatureReply:
        """``applied`` (``ev`` or what it became) applied to its lead's state, and the
        features that follow. The reply shares the held score state: it is replaced, never
        changed in place (a batch's commit, :func:`_change`; :meth:`committed`)."""
        status, reactivated = held.features.apply(self.spec, applied)
        if status == DUPLICATE or status == LATE:
            return FeatureReply(status, {}, {}, {}, [])
        feats, context = held.features.features(self.spec, reactivated)
        moments: list[bytes] = []
        if applied.type in _OUTCOMES:
            moments = list(snaps.get((applied.tenant, applied.lead_id), ()))
        routed = applied if applied is not ev else None
        return FeatureReply(status, feats, context, held.state, moments, routed)

    def _apply_control(
        self, ev: Event, touched: dict[Lead, HeldLead], snaps: dict[Lead, list[bytes]],
        writes: FeatureWrites,
    ) -> FeatureReply:  # fmt: skip
        """A control entry (identity hand-over steps, merges: ``engine/identity.py``)."""
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
        return self._reply(ev, applied, held, snaps)

    def _route(
        self, ev: Event, touched: dict[Lead, HeldLead], writes: FeatureWrites
    ) -> Event | None:
        """``ev`` addressed to the lead it lives on now: along aliases on this partition, or
        sent on to the partition of the lead it was folded into (None). A cycle of aliases
        ends after ``MAX_HOPS``: the entry stays where it got to."""
        p, tenant = self._partitions, ev.tenant
        held = touched[(tenant, ev.lead_id)]
        if not held.alias:
            return ev
        here = partition_of(tenant, ev.lead_id, p)
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
        self, ev: Event, source: str, touched: dict[Lead, HeldLead],
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
        self, req: Control, touched: dict[Lead, HeldLead], snaps: dict[Lead, list[bytes]],
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
        touched[key] = self._cache[key] = HeldLead(LeadFeatures(), {}, alias=req.target)
        p = self._partitions
        fold = Fold(req.tenant, req.source, req.target, had, (),
                    partition_of(*key, p), partition_of(req.tenant, req.target, p))  # fmt: skip
        writes.cleared.append(fold)
        if had or moved:
            self._send(writes, handover(req, blob, moved))
        return _SKIP

    def _take_over(
        self, c: Control, held: HeldLead, snaps: dict[Lead, list[bytes]], writes: FeatureWrites
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
        self, tenant: str, source: str, target: str, touched: dict[Lead, HeldLead],
        snaps: dict[Lead, list[bytes]], writes: FeatureWrites,
    ) -> None:  # fmt: skip
        """Both leads are this worker's: fold at once."""
        src, dst = touched[(tenant, source)], touched[(tenant, target)]
        moved = tuple(snaps.pop((tenant, source), []))
        had = not src.features.empty
        if had:
            dst.features.fold(self.spec, src.features)
            snaps.setdefault((tenant, target), []).extend(moved)
        touched[(tenant, source)] = self._cache[(tenant, source)] = HeldLead(
            LeadFeatures(), {}, alias=target
        )
        p = self._partitions
        fold = Fold(tenant, source, target, had, moved if had else (),
                    partition_of(tenant, source, p), partition_of(tenant, target, p))  # fmt: skip
        writes.folds.append(fold)
        writes.cleared.append(fold)

    def _load(
        self, events: Sequence[Event], writes: FeatureWrites
    ) -> tuple[dict[Lead, HeldLead], dict[Lead, list[bytes]]]:
        """The batch's leads: cached ones as they are, the others in one pipelined read."""
        leads: dict[Lead, None] = {}
        moments: set[Lead] = set()
        p = self._partitions
        for ev in events:
            lead = (ev.tenant, ev.lead_id)
            leads[lead] = None
            etype = ev.type
            if etype not in CONTROL_TYPES and etype != "identify":  # the usual event
                if etype in _OUTCOMES:
                    moments.add(lead)
                continue
            c = control_of(ev)
            inner = c.event if c is not None and c.event is not None else ev
            source = source_of(inner)
            if source and partition_of(ev.tenant, source, p) == partition_of(*lead, p):
                leads[(ev.tenant, source)] = None  # a local fold (never another worker's lead)
                moments.add((ev.tenant, source))
            if inner.type in _OUTCOMES or (c is not None and c.kind == REQUEST):
                moments.add(lead)
        cache = self._cache
        touched: dict[Lead, HeldLead] = {}
        for lead in leads:
            held = cache.get(lead)
            if held is not None:
                cache.move_to_end(lead)
                touched[lead] = held
        missing = [lead for lead in leads if lead not in touched]
        loaded, _ = read_state(self._r, self._prefix, self.spec, missing, [])
        for lead, held in loaded.items():
            touched[lead] = cache[lead] = held
        moments.update(self._load_targets(touched))
        snaps = {lead: list(touched[lead].rest.moments) for lead in sorted(moments)}
        while len(cache) > self._cap:
            cache.popitem(last=False)
        return touched, snaps

    def _load_targets(self, touched: dict[Lead, HeldLead]) -> list[Lead]:
        """Leads of this partition that folded leads of the batch live on now (rare: one more
        round trip per alias hop), so their events are applied here at once."""
        p = self._partitions
        done: list[Lead] = []
        for _ in range(MAX_HOPS):
            wanted = sorted(
                {(t, h.alias) for (t, lead), h in touched.items() if h.alias
                 and partition_of(t, h.alias, p) == partition_of(t, lead, p)}
                - touched.keys()
            )  # fmt: skip
            if not wanted:
                break
            loaded, _ = read_state(self._r, self._prefix, self.spec, wanted, [])
            for lead, held in loaded.items():
                touched[lead] = self._cache[lead] = held
            done += wanted
        return done

    # -- readers -------------------------------------------------------------------------------
    def read(self, tenant: str, lead_id: str) -> dict[str, str]:
        """A lead's committed feature state as schema 0's field names (inspection, tests)."""
        loaded, _ = read_state(self._r, self._prefix, self.spec, [(tenant, lead_id)], [])
        features = loaded[(tenant, lead_id)].features
        return {} if features.empty else features.legacy_view()

    def record(self, tenant: str, lead_id: str) -> LeadFeatures:
        """A lead's committed feature state (empty if none)."""
        loaded, _ = read_state(self._r, self._prefix, self.spec, [(tenant, lead_id)], [])
        return loaded[(tenant, lead_id)].features


_SKIP = FeatureReply(SKIPPED, {}, {}, {}, [])


def read_state(
    client: Any, prefix: str | StreamNames, spec: FeatureSpec, leads: Sequence[Lead],
    moments: Sequence[Lead] = (),
) -> tuple[dict[Lead, HeldLead], dict[Lead, list[bytes]]]:  # fmt: skip
    """Committed state of ``leads`` and the learning moments of ``moments``: one pipelined
    round trip (GET of the record, EXISTS of the older layouts' keys, the alias); one more
    for a lead that still has keys of schema 0 or 1 (:func:`_read_legacy`)."""
    want = list(dict.fromkeys([*leads, *moments]))
    if not want:
        return {}, {}
    pipe = client.pipeline(transaction=False)
    for tenant, lead_id in want:
        home = home_of(prefix, tenant, lead_id)
        pipe.get(lead_key(home, tenant, lead_id, "f"))
        pipe.exists(*(lead_key(home, tenant, lead_id, part) for part in LEGACY_PARTS))
        pipe.hget(alias_key(home, tenant), lead_id)
    replies = pipe.execute()
    out: dict[Lead, HeldLead] = {}
    old: dict[Lead, bool] = {}  # lead -> whether it has no record at all
    for i, lead in enumerate(want):
        blob, n_old, alias = replies[3 * i : 3 * i + 3]
        held, current = _decode(lead, blob)
        held.alias = _s(alias) if alias is not None else ""
        held.legacy = bool(n_old)
        if n_old and not current:
            old[lead] = blob is None
        out[lead] = held
    if old:
        _read_legacy(client, prefix, spec, old, out)
    return {lead: out[lead] for lead in leads}, {m: list(out[m].rest.moments) for m in moments}


def _decode(lead: Lead, blob: bytes | None) -> tuple[HeldLead, bool]:
    """A stored ``:f`` value as held, and whether it is schema 2 (all parts in it)."""
    if blob is None:
        return HeldLead(LeadFeatures(), {}), False
    try:
        features, rest = unpack_lead(blob)
    except ValueError:
        return HeldLead(LeadFeatures(), {}), False  # unreadable: the lead starts over
    if rest is None:
        return HeldLead(features, {}), False
    record = record_from_items(lead[0], lead[1], rest.score) if rest.score else None
    return HeldLead(features, score_state(record) if record else {}, rest=rest), True


def _read_legacy(
    client: Any, prefix: str | StreamNames, spec: FeatureSpec, leads: Mapping[Lead, bool],
    out: dict[Lead, HeldLead],
) -> None:  # fmt: skip
    """Leads on schema 1 (``:r``, ``:n``, ``:rp`` beside ``:f``) or 0 (``:s`` and the hash
    and sorted sets of features): their parts read into the held record."""
    pipe = client.pipeline(transaction=False)
    for tenant, lead_id in leads:
        home = home_of(prefix, tenant, lead_id)
        pipe.get(lead_key(home, tenant, lead_id, "r"))
        pipe.hmget(lead_key(home, tenant, lead_id, "s"), list(STATE_FIELDS))
        pipe.lrange(lead_key(home, tenant, lead_id, "n"), 0, -1)
        pipe.hgetall(lead_key(home, tenant, lead_id, "rp"))
        pipe.exists(lead_key(home, tenant, lead_id, "h"))
    replies = pipe.execute()
    for i, (lead, bare) in enumerate(leads.items()):
        packed, state, moments, marks, has_h = replies[5 * i : 5 * i + 5]
        held = out[lead]
        record = unpack_record(lead[0], lead[1], packed) if packed is not None else None
        held.state = _score_state(record, state)
        held.rest = LeadRecord(
            record.items() if record is not None else None,
            [bytes(m) for m in moments],
            LeadMark.from_hash(marks).to_list() if marks else None,
        )
        if bare and has_h:
            held.features = _migrate(client, prefix, spec, lead)


def _score_state(record: ScoreRecord | None, legacy: list[Any]) -> dict[str, str]:
    """The alert state of the lead's score record; from schema 0's hash (``:s``) if it has
    no ``:r`` yet (the lead's next record write deletes that hash: :func:`queue_writes`)."""
    if record is not None:
        return score_state(record)
    return {k: _s(v) for k, v in zip(STATE_FIELDS, legacy, strict=True) if v is not None}


def read_moments(
    client: Any, prefix: str | StreamNames, leads: Sequence[Lead]
) -> list[list[bytes]]:
    """The committed learning moments of ``leads`` (the learning sweep): one round trip."""
    pipe = client.pipeline(transaction=False)
    for tenant, lead_id in leads:
        home = home_of(prefix, tenant, lead_id)
        pipe.get(lead_key(home, tenant, lead_id, "f"))
        pipe.lrange(lead_key(home, tenant, lead_id, "n"), 0, -1)  # schema 1
    replies = pipe.execute()
    out: list[list[bytes]] = []
    for i, lead in enumerate(leads):
        held, current = _decode(lead, replies[2 * i])
        out.append(list(held.rest.moments) if current else [bytes(m) for m in replies[2 * i + 1]])
    return out


def _migrate(client: Any, where: str | StreamNames, spec: FeatureSpec, lead: Lead) -> LeadFeatures:
    """Schema 0 -> 1: the hash and sorted sets of a lead become its record."""
    tenant, lead_id = lead
    prefix = home_of(where, tenant, lead_id)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(lead_key(prefix, tenant, lead_id, "h"))
    for part in ("e", "v", "a"):
        pipe.zrange(lead_key(prefix, tenant, lead_id, part), 0, -1, withscores=True)
    h, e, v, a = pipe.execute()

    def members(rows: list[tuple[bytes, float]]) -> list[tuple[str, float]]:
        return [(_s(m), float(ts)) for m, ts in rows]

    fields = {_s(k): _s(x) for k, x in h.items()}
    return from_legacy(spec, fields, members(e), members(v), members(a))


def queue_writes(
    pipe: Any, prefix: str, writes: FeatureWrites, idle_s: int, changes: LeadChanges | None = None
) -> None:
    """Queue the batch's lead records on its transaction: one SET per lead it touched or
    changed (moments moved in by folds, then ``changes``, go into the record first).
    A lead only ``changes`` name (the learning sweep) keeps its TTL (and is not written
    if it expired meanwhile). The sources' side of folds goes last (:func:`queue_after`)."""
    changes = changes or LeadChanges()
    held = writes.hold(changes.leads())
    for fold in writes.folds:
        _arrive(pipe, prefix, fold, held)
    gone = {(f.tenant, f.source) for f in writes.cleared}
    for lead in [*writes.touched, *(changes.leads() - writes.touched)]:
        h = held.get(lead)
        if lead in gone or h is None or h.alias:
            continue
        _change(h, lead, changes)
        if h.features.empty and h.rest.empty:
            continue
        key = lead_key(prefix, lead[0], lead[1], "f")
        blob = pack_record(writes.spec, h.features, h.rest)
        if lead in writes.touched or h.legacy:
            pipe.set(key, blob, ex=idle_s)
        else:
            pipe.set(key, blob, xx=True, keepttl=True)
        if h.legacy:  # the older layouts' keys go (schema 0's score hash once it is replaced)
            parts = [p for p in LEGACY_PARTS if p != "s" or h.rest.score is not None]
            pipe.delete(*(lead_key(prefix, lead[0], lead[1], part) for part in parts))
            h.legacy = False


def _change(h: HeldLead, lead: Lead, changes: LeadChanges) -> None:
    """The batch's score record, moments effect and report marks into a held record (the
    moments effect as the list commands of schema 1 did it: DEL / RPOP, RPUSH, LTRIM)."""
    record = changes.scores.get(lead)
    if record is not None:
        h.rest.score, h.state = record.items(), score_state(record)
    effect = changes.moments.get(lead)
    if effect is not None:
        mode, push = effect
        moments = h.rest.moments
        if mode == "rewrite":
            moments = []
        elif mode == "replace_tail":
            moments = moments[:-1]
        if push:
            moments = [*moments, *push][-changes.max_moments :]
        h.rest.moments = list(moments)
    marks = changes.marks.get(lead)
    if marks is not None:
        h.rest.marks = marks


def queue_after(pipe: Any, prefix: str, writes: FeatureWrites) -> None:
    """The sources folded away in the batch, after everything else it writes (a score record
    or moments the batch made for a source before its fold go with it): the alias, then
    every key of the source deleted."""
    for fold in writes.cleared:
        tenant, source = fold.tenant, fold.source
        pipe.hset(alias_key(prefix, tenant), source, fold.target)
        pipe.zrem(hot_key(prefix, tenant), source)
        pipe.zrem(due_key(prefix, fold.source_partition), f"{tenant}\x1f{source}")
        parts = ("f", *LEGACY_PARTS)
        pipe.delete(*(lead_key(prefix, tenant, source, part) for part in parts))


def _arrive(pipe: Any, prefix: str, fold: Fold, held: Mapping[Lead, HeldLead]) -> None:
    """Learning moments move with the person: before the target's own (its newest moment
    stays the list's tail, as its score record says)."""
    if not fold.snapshots:
        return
    tenant, target = fold.tenant, fold.target
    h = held.get((tenant, target))
    if h is not None:
        h.rest.moments = [*fold.snapshots, *h.rest.moments]
    oldest = min(float(msgpack.unpackb(b, raw=False)["ts"]) for b in fold.snapshots)
    member = f"{tenant}\x1f{target}"
    pipe.zadd(due_key(prefix, fold.target_partition), {member: oldest}, lt=True)


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
