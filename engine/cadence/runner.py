"""The engine's side of cadences: the lead's events move its plan state, and due steps
are emitted, both committed in the batch's one MULTI/EXEC.

Per batch (:class:`Cadences`, called by ``engine/processor.py``):

1. **events**: each scored event of a lead first fires the lead's own steps due before it,
   then moves its state (:func:`decide.on_event`), so what a lead gets does not depend on
   where batches begin and end; the batch's leads' states (``{tenant:lead}:c``) are read
   in one MGET when the batch starts (those this worker's own commits wrote or renewed
   within their TTL are held, not read: :meth:`Cadences._trusted`). Most events of a
   lead in a plan (views, searches, missed calls) cannot move it (:func:`decide.passive`):
   they build no ``Signal`` and change nothing; the state is written only when it
   changes (else its TTL is renewed).
2. **time**: each partition of the batch has a cadence clock, its **event-time watermark**
   (the newest event time it has processed) **advanced by the wall time elapsed since that
   event was processed**. At live rate (event time = wall time) this is the wall clock; in a
   replay of old events it is event time, moving with the wall clock only while the
   partition is idle. The leads whose next step is due by then come from the partition's
   sorted set ``cad:{p}`` (member ``tenant<0x1f>lead``, score: due time), never from a scan
   of the leads; each fires (:func:`decide.fire`). The live source (``engine/dataflow.py``)
   hands the processor an empty *tick* every ``cadence.tick_ms`` while a partition is
   idle, so due steps fire at live rate without new events on that partition.
3. **personalisation**: an emitted step carries the lead's :class:`Personal` fields as
   of the lead's last event before it (never in the plan state): from the store's reply
   to that event in this batch, else from the lead's record before the batch
   (``FeatureWrites.before``), else (a due lead with no event in the batch) from the
   feature store, which holds the partition's leads (one read for those it does not).
4. **effects** (:class:`CadenceEffects`): the states (``:c``, the lead's TTL), the due set,
   the emitted steps (``lp:cadence``), the watermarks and the report counters (plan
   completion, replies and opt-outs by step: ``engine/reporting/cadence.py``) go into
   the batch's transaction with the stream positions: a step is emitted, and counted,
   exactly once, whatever crashes.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import operator
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from typing import Any, cast
from zoneinfo import ZoneInfo

import msgpack

from engine.cadence.decide import (
    HOTTER,
    MOVERS,
    CadenceState,
    Emission,
    Signal,
    Transition,
    decode,
    encode,
    fire,
    on_event,
    packer,
    passive,
    step_id,
)  # fmt: skip
from engine.cadence.plans import Book, Hours, compile_book
from engine.events import Event
from engine.identity import CONTROL_TYPES
from engine.keys import StreamNames, cadence_clock_key, cadence_due_key, lead_key
from engine.reporting.batch import ReportDelta
from engine.reporting.cadence import increments as cadence_counts
from engine.scoring import Score
from engine.settings import Settings
from engine.streams import stream_names
from features.spec import is_stop
from features.state import Personal, personal_of
from features.store import FeatureReply

__all__ = ["CadenceEffects", "Cadences", "describe", "entry_of", "step_entries"]

Lead = tuple[str, str]
#: The personalisation fields of leads as the engine holds them (``FeatureStore.personal``).
FieldsLookup = Callable[[Sequence[Lead]], Mapping[Lead, Personal]]
_NO_PERSONAL = Personal()  # (read-only: shared)
#: One scored event as the processor hands it over: (partition, event, score, the alert
#: triggers it fired, the store's reply to it).
ScoredEvent = tuple[int, Event, Score, tuple[str, ...], FeatureReply]


@dataclass
class CadenceEffects:
    """What one batch changes in cadences; applied inside the batch's transaction."""

    loaded: dict[Lead, CadenceState] = field(default_factory=dict)  # the batch's leads
    states: dict[Lead, tuple[int, CadenceState, CadenceState]] = field(default_factory=dict)
    writes: dict[Lead, bytes] = field(default_factory=dict)  # lead -> its new state (``:c``)
    due: dict[tuple[int, str], float | None] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    # steps fired, with the lead's fields (:meth:`Cadences._personal`): entries at finish
    fired: list[tuple[Lead, Emission, Personal]] = field(default_factory=list)
    clock: dict[int, str] = field(default_factory=dict)  # partition -> "watermark:wall"
    partitions: set[int] = field(default_factory=set)  # checked for due steps
    log: list[tuple[str, Transition]] = field(default_factory=list)  # (tenant, what) for reports
    report: ReportDelta | None = None  # the log's report counters (engine/reporting/cadence.py)
    keys: dict[Lead, str] = field(default_factory=dict)  # the loaded (stored) states' keys
    replies: dict[Lead, FeatureReply] = field(default_factory=dict)  # each lead's last event's
    before: Mapping[Lead, Personal] = field(default_factory=dict)  # fields before the batch
    expire: list[str] = field(default_factory=list)  # stored states unchanged: TTL renewed
    # the batch's scored events, handed over by the processor (:meth:`Cadences.events`)
    scored: list[ScoredEvent] = field(default_factory=list)
    renewed: list[Lead] = field(default_factory=list)  # (their leads)

    @property
    def work(self) -> bool:
        return bool(
            self.writes or self.due or self.steps or self.clock or self.report or self.expire
        )

    def apply(self, pipe: Any, names: StreamNames, maxlen: int, idle_s: int) -> None:
        p = names.prefix
        if self.writes or self.steps or self.expire:  # one command, not one each (_WRITE)
            keys = [self.keys.get(k) or lead_key(p, *k, "c") for k in self.writes]
            pack = packer().pack  # (msgpack.packb(step, use_bin_type=True), cheaper)
            steps = [pack(step) for step in self.steps]
            pipe.execute_command("EVAL", _WRITE, len(keys) + len(self.expire) + 1, names.cadence,
                                 *keys, *self.expire, idle_s, maxlen, len(keys),
                                 *self.writes.values(), *steps)  # fmt: skip
        adds: dict[int, dict[str, float]] = {}
        drops: dict[int, list[str]] = {}
        for (partition, member), due in self.due.items():  # one ZADD / ZREM per partition
            if due is None:
                drops.setdefault(partition, []).append(member)
            else:
                adds.setdefault(partition, {})[member] = due
        for partition, members in sorted(drops.items()):
            pipe.zrem(cadence_due_key(p, partition), *members)
        for partition, scored in sorted(adds.items()):
            pipe.zadd(cadence_due_key(p, partition), scored)
        if self.clock:
            pipe.hset(cadence_clock_key(p), mapping={str(k): v for k, v in self.clock.items()})
        if self.report is not None:  # plan completion, replies and opt-outs by step
            self.report.apply(pipe)


#: The batch's plan states and emitted steps in one script call inside its MULTI/EXEC (a
#: command each cost the engine ~4 µs of redis-py packing and parsing; the script ~0.6).
#: KEYS: the cadence stream, the changed states' keys, then the keys of stored states the
#: batch's events left as they were (their TTL renewed: a state expires with its lead);
#: ARGV: the TTL (s), the stream's MAXLEN (approximate), the number n of changed states,
#: the n states, then the steps (msgpack, field ``c``). EVAL, not EVALSHA: a NOSCRIPT
#: inside MULTI would lose the batch's steps and commit the rest. Every key has the
#: prefix's hash tag: one slot on a cluster too.
_WRITE = """
local n = tonumber(ARGV[3])
for i = 1, n do redis.call('SET', KEYS[i + 1], ARGV[i + 3], 'EX', ARGV[1]) end
for i = n + 2, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
for i = n + 4, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'c', ARGV[i])
end
return n
"""


def entry_of(
    tenant: str, lead: str, e: Emission, emit_ms: int, sid: str, p: Personal
) -> dict[str, Any]:
    """The ``lp:cadence`` entry of one due step, with its id ``sid`` and the lead's fields
    ``p``: no contact details, no rendered text."""
    s = e.step
    return {
        "kind": s.kind, "step_id": sid, "tenant": tenant, "lead_id": lead,
        "plan": e.plan, "plan_label": e.label, "cycle": e.cycle, "step": e.index,
        "day": s.day, "channel": s.channel, "template": s.template, "goal": s.goal,
        "due_ts": e.due, "agent_id": p.agent_id, "emit_ms": emit_ms,
        "fields": {"property_id": p.property_id, "address": p.address, "area": p.area,
                   "timeline": p.timeline, "side": p.side, "source": p.source},
    }  # fmt: skip


def _member(key: Lead) -> str:
    return f"{key[0]}\x1f{key[1]}"


class Cadences:
    """Per-batch cadence work for the processor (thread-safe; partitions are disjoint)."""

    def __init__(
        self,
        settings: Settings,
        client: Any,
        clock: Callable[[], float] = time.time,
        held_max: int = 50_000,
        fields: FieldsLookup | None = None,
    ) -> None:
        """``fields``: the personalisation fields of leads with no event in the batch
        (``FeatureStore.personal``; without it, such a lead's steps carry none)."""
        self.enabled = settings.cadence.enabled
        self._fields = fields
        self._s = settings
        self._r = client
        self._names = stream_names(settings)
        self._book: Book = compile_book(settings.cadence)
        self._limit = settings.cadence.max_due_per_batch
        self._share = settings.cadence.send_time_holdout  # of leads in the send-time holdout
        self.clock = clock  # wall clock (tests drive it)
        self._hours: dict[str, Hours] = {}
        self._wm: dict[int, tuple[float, float]] | None = None  # partition -> (event ts, wall)
        self._lock = threading.Lock()
        # lead -> (its ``:c`` bytes, that state decoded, wall time a commit last wrote it or
        # renewed its TTL; 0: not known to be in Redis): see _decoded and _trusted
        # (partitions disjoint: a lead is only ever held by the worker of its partition)
        self._held: dict[Lead, tuple[bytes, CadenceState, float]] = {}
        self._held_max = held_max
        self._held_lock = threading.Lock()
        # a committed state is read from Redis again only this long after its commit (its
        # TTL, ``features.idle_expire_d``, less a tenth: it may have expired by then)
        self._trust_s = settings.features.idle_expire_d * 86_400 * 0.9
        self._holdouts: dict[Lead, bool] = {}  # lead -> in the holdout share (_holdout)
        self._keys: dict[Lead, str] = {}  # lead -> its state's key (_key)

    def hours(self, tenant: str) -> Hours:
        """The tenant's quiet hours: ``[delivery.tenants.<t>]`` overrides, else ``[alerts]``."""
        h = self._hours.get(tenant)
        if h is None:
            a, t = self._s.alerts, self._s.delivery.tenant(tenant)
            h = Hours(
                t.timezone or a.timezone,
                a.quiet_start_h if t.quiet_start_h is None else t.quiet_start_h,
                a.quiet_end_h if t.quiet_end_h is None else t.quiet_end_h,
            )
            self._hours[tenant] = h
        return h

    def forget(self) -> None:
        """After a failed batch: reload the watermarks and the plan states from Redis."""
        with self._lock:
            self._wm = None
        with self._held_lock:
            self._held.clear()

    def committed(self, fx: CadenceEffects) -> None:
        """The batch committed: the states it wrote or whose TTL it renewed are what Redis
        holds now, and are not read again before their TTL may run out (:meth:`_trusted`)."""
        now = self.clock()
        with self._held_lock:
            held = self._held
            for key in itertools.chain(fx.writes, fx.renewed):
                h = held.get(key)
                if h is not None:
                    held[key] = (h[0], h[1], now)

    # -- events ----------------------------------------------------------------------------
    def events(self, fx: CadenceEffects) -> None:
        """The scored events the processor handed over (``fx.scored``, in stream order; it
        hands them over after its loop over the batch: nothing there reads what they do
        here). Most (views, searches, missed calls of a lead in a plan, with no trigger that
        could move it up) cannot move its plan: they take the short way here, checked inline
        (the rest of :func:`decide.passive`, stricter: a reactivation or closed channels
        that are not exactly the state's own take the full check, as does a holdout the
        state does not know yet); the rest: :meth:`_decide`. Each event's reply is kept:
        the lead's fields as of that event (:meth:`_personal`)."""
        states, loaded, replies, holdouts = fx.states, fx.loaded, fx.replies, self._holdouts
        for partition, event, score, triggers, reply in fx.scored:
            key = (event.tenant, event.lead_id)
            held = states.get(key)
            if held is None:
                before = now = loaded.get(key, _NEVER)
            else:
                before, now = held[1], held[2]
            kind, status, ctx = event.type, now.status, reply.context
            if (
                status and not (now.due and now.due < event.ts) and kind not in MOVERS
                and (not triggers or status != "active" or not _hot(triggers))
                and (kind != "agent_contact" or event.props.get("conversation") is not True)
                and ((b := ctx.get("blocked")) == now.blocked or not (b or now.blocked))
                and not ctx.get("reactivated_now")
                and (now.holdout or holdouts.get(key) is False or not self._holdout(key))
            ):  # (a visitor is never in a plan: no status)  # fmt: skip
                if held is None or held[0] != partition:
                    states[key] = (partition, before, now)
            else:
                self._decide(fx, partition, key, held, before, now, event, score, triggers,
                             reply)  # fmt: skip
            replies[key] = reply
        fx.scored.clear()

    def _decide(
        self, fx: CadenceEffects, partition: int, key: Lead,
        held: tuple[int, CadenceState, CadenceState] | None, before: CadenceState,
        now: CadenceState, event: Event, score: Score, triggers: tuple[str, ...],
        reply: FeatureReply,
    ) -> None:  # fmt: skip
        """An event that may move the lead's plan: its steps due before it fire first (with
        the fields as of the lead's previous event), then :func:`decide.passive` (hot
        triggers too), else the full decision."""
        start = now
        log: list[Transition] | None = None  # made only for a decision (most events make none)
        if now.due and now.due < event.ts:  # the lead's own steps due before this event
            log = []
            now, out = fire(now, math.nextafter(event.ts, 0.0), self._book,
                            self.hours(event.tenant), log)  # fmt: skip
            if out:
                personal = self._personal(fx, key)
                fx.fired.extend(zip(repeat(key), out, repeat(personal)))
        if event.lead_id[:1] != "~":  # a visitor's events move no plan
            holdout = now.holdout or self._holdout(key)
            if (not now.status or event.type in MOVERS
                    or not self._passive(now, event, score, triggers, reply, holdout)):  # fmt: skip
                if log is None:
                    log = []
                signal = self._signal(event, score, triggers, reply, holdout)
                now = on_event(now, signal, self._book, self.hours(event.tenant), log)
        if held is None or now is not start or held[0] != partition:
            fx.states[key] = (partition, before, now)  # (unchanged: held as it is)
        if log:
            fx.log.extend(zip(repeat(event.tenant), log))  # (each with its tenant)

    def _personal(self, fx: CadenceEffects, key: Lead) -> Personal:
        """The lead's personalisation fields as of its last event so far: the reply to its
        last event in this batch, else its fields before the batch, else the store's."""
        reply = fx.replies.get(key)
        if reply is not None:
            return personal_of(reply.features, reply.context)
        known = fx.before.get(key)
        if known is None and self._fields is not None:
            known = self._fields([key]).get(key)
        return _NO_PERSONAL if known is None else known

    def _passive(
        self, now: CadenceState, event: Event, score: Score, triggers: tuple[str, ...],
        reply: FeatureReply, holdout: bool,
    ) -> bool:  # fmt: skip
        """:func:`decide.passive` of the event for the lead's state ``now``."""
        ctx, kind = reply.context, event.type
        blocked = ctx.get("blocked") or ()
        # (``passive`` reads ``marked`` only for an agent_contact)
        marked = kind == "agent_contact" and event.props.get("conversation") is True
        reactivated = bool(ctx.get("reactivated_now"))
        fact = None
        if triggers:  # what the rules read, if a hot trigger meets an active plan
            f = reply.features
            fact = (str(f.get("source") or ""), score.tier, str(f.get("side") or ""),
                    score.bucket, kind, reactivated, triggers)  # fmt: skip
        return passive(now, kind, triggers, tuple(blocked), reactivated, holdout, marked,
                       self._book, fact, event.ts)  # fmt: skip

    def _holdout(self, key: Lead) -> bool:
        """The lead is in the send-time holdout share (a stable hash of tenant and lead),
        remembered per lead (a plain dict: cheaper than the hash's ``lru_cache``)."""
        known = self._holdouts.get(key)
        if known is None:
            if len(self._holdouts) >= 1 << 16:
                self._holdouts.clear()
            known = self._holdouts[key] = self._share > 0 and _in_holdout(key, self._share)
        return known

    def _key(self, lead: Lead) -> str:
        """The key of the lead's plan state, under its partition's prefix, remembered per
        lead (built for each of the batch's leads twice a batch, it cost ~0.15 µs an event)."""
        key = self._keys.get(lead)
        if key is None:
            if len(self._keys) >= 1 << 16:
                self._keys.clear()
            key = self._keys[lead] = lead_key(self._names.home(*lead), *lead, "c")
        return key

    @staticmethod
    def _signal(
        event: Event, score: Score, triggers: tuple[str, ...], reply: FeatureReply,
        holdout: bool = False,
    ) -> Signal:  # fmt: skip
        f, ctx = reply.features, reply.context
        return Signal(
            type=event.type, ts=event.ts, tier=score.tier, bucket=score.bucket,
            source=str(f.get("source") or ""), side=str(f.get("side") or ""), triggers=triggers,
            blocked=tuple(ctx.get("blocked") or ()), reactivated=bool(ctx.get("reactivated_now")),
            holdout=holdout,
            conversation_marked=event.props.get("conversation") is True, stop=is_stop(event),
            visitor=event.lead_id.startswith("~"),
        )  # fmt: skip

    # -- the batch -----------------------------------------------------------------------------
    def begin(
        self, entries: Iterable[tuple[int, Any, Any]], events: Iterable[Event] = (),
        before: Mapping[Lead, Personal] | None = None,
    ) -> CadenceEffects:  # fmt: skip
        """A batch's effects, with the plan states of its leads (one MGET) and their
        personalisation fields before the batch (``before``: ``FeatureWrites.before``);
        every partition it read (events or a tick) is checked for due steps."""
        fx = CadenceEffects(partitions=set(map(_FIRST, entries)))
        if before is not None:
            fx.before = before
        events = list(events)  # (the batch's leads, with the loops in C)
        both = set(zip(map(_TENANT, events), map(_LEAD, events), strict=True))
        leads = sorted(k for k in both if k[1][:1] != "~")
        fx.loaded = self._trusted(leads)
        known = self._keys  # (the keys: each lead's built once, _key)
        fx.keys = {k: known.get(k) or self._key(k) for k in fx.loaded}
        leads = [key for key in leads if key not in fx.loaded]
        if leads:
            keys = [self._key(key) for key in leads]
            for key, at, text in zip(leads, keys, self._r.mget(keys), strict=True):
                if text is not None:
                    fx.loaded[key] = self._decoded(key, text)
                    fx.keys[key] = at
        return fx

    def fields_wanted(self, events: Sequence[Event]) -> Callable[[Lead], bool]:
        """Whether a lead of the batch ``events`` may have a step fall due before one of its
        events in it, the one case its fields before the batch are read (``FeatureWrites.
        before``: :meth:`_personal`). Not if :meth:`begin` will hold its state without a
        read (:meth:`_trusted`) and that state is due at none or not before the batch's
        newest event; always if the batch has an identity entry (the time of the event it
        carries, or the lead it lands on, is known only once it is applied)."""
        if not events or not _RELAYED.isdisjoint(map(_TYPE, events)):
            return _ALWAYS
        newest = max(map(_TS, events))
        since = self.clock() - self._trust_s
        held = self._held

        def wanted(lead: Lead) -> bool:
            h = held.get(lead)  # (one dict read, atomic: no lock for each of the batch's leads)
            # (a state trusted here and not at begin after all is read: the same bytes)
            return h is None or h[2] <= since or bool(h[1].due and h[1].due < newest)

        return wanted

    def _trusted(self, leads: Iterable[Lead]) -> dict[Lead, CadenceState]:
        """The states of ``leads`` this worker committed (or renewed) itself within their
        TTL: what Redis holds (only the worker of a lead's partition writes its state; a
        failed batch confirms nothing and :meth:`forget` drops them all), so not read."""
        since = self.clock() - self._trust_s
        out: dict[Lead, CadenceState] = {}
        with self._held_lock:
            held = self._held
            for key in leads:
                h = held.pop(key, None)
                if h is not None:
                    held[key] = h  # most recent last
                    if h[2] > since:
                        out[key] = h[1]
        return out

    def _decoded(self, key: Lead, raw: bytes) -> CadenceState:
        """The state ``raw`` holds: the one this worker wrote or read last for the lead when
        the bytes are the same (no JSON decode per lead and batch), else decoded. Keyed by
        what Redis returns, so a batch that did not commit, or another writer, only costs
        a decode: never a stale state."""
        with self._held_lock:
            held = self._held.pop(key, None)
            if held is not None and held[0] == raw:
                self._held[key] = held  # most recent last
                return held[1]
        state = decode(raw)
        self._hold(key, raw, state)
        return state

    def _hold(self, key: Lead, raw: bytes, state: CadenceState) -> None:
        with self._held_lock:
            if len(self._held) >= self._held_max:
                for old in list(itertools.islice(self._held, self._held_max // 8 or 1)):
                    self._held.pop(old, None)  # the least recently used eighth
            self._held[key] = (raw, state, 0.0)

    def finish(self, fx: CadenceEffects, events: Iterable[tuple[int, float]], emit_ms: int) -> None:
        """Fire the due steps of the batch's partitions; every changed state, due time and
        watermark goes into ``fx`` (and the stored states the batch's events left as they
        were, to renew their TTL)."""
        newest: dict[int, float] = {}
        for partition, ts in events:  # (event times are finite: engine/validate.py)
            if ts > newest.get(partition, -math.inf):
                newest[partition] = ts
        cutoffs = self._cutoffs(fx, newest)
        self._fire_due(fx, cutoffs)
        for (tenant, lead), e, personal in fx.fired:
            sid = step_id(tenant, lead, e.plan, e.cycle, e.index)
            fx.steps.append(entry_of(tenant, lead, e, emit_ms, sid, personal))
        writes = fx.writes
        for key, (partition, before, after) in fx.states.items():
            if after is before:  # (the decisions copy a state only to change it)
                continue
            raw = writes[key] = encode(after)
            self._hold(key, raw, after)  # (decode(encode(s)) == s)
            if after.due != before.due:
                fx.due[(partition, _member(key))] = after.due or None
        keys = fx.keys
        fx.renewed = [k for k in fx.replies if k in keys and k not in writes]
        fx.expire = [keys[k] for k in fx.renewed]
        if fx.log:
            shard = self._names.shard(min(fx.partitions)) if fx.partitions else ""
            fx.report = cadence_counts(self._s, fx.log, shard)

    def _cutoffs(self, fx: CadenceEffects, newest: Mapping[int, float]) -> dict[int, float]:
        """Each partition's cadence clock: its event-time watermark, advanced by the wall time
        since (never past the wall clock on an event's word: a skewed event cannot fire the
        partition's steps early)."""
        now = self.clock()
        with self._lock:
            if self._wm is None:
                self._wm = self._load_watermarks(now)
            out: dict[int, float] = {}
            for p in sorted(fx.partitions):
                held = self._wm.get(p)
                clock = held[0] + (now - held[1]) if held else None
                if p in newest:
                    seen = min(newest[p], now)
                    clock = seen if clock is None else max(clock, seen)
                    self._wm[p] = (clock, now)
                    fx.clock[p] = f"{clock!r}:{now!r}"
                if clock is not None:
                    out[p] = clock
            return out

    def _load_watermarks(self, now: float) -> dict[int, tuple[float, float]]:
        pipe = self._r.pipeline(transaction=False)
        for shard in self._names.shards():
            pipe.hgetall(cadence_clock_key(shard))
        raws = cast(list[dict[bytes, bytes]], pipe.execute())
        out = {}
        for k, v in ((k, v) for raw in raws for k, v in raw.items()):
            try:
                clock, wall = (float(x) for x in v.decode().split(":", 1))
            except ValueError:
                continue
            out[int(k)] = (clock + max(0.0, now - wall), now)
        return out

    def _fire_due(self, fx: CadenceEffects, cutoffs: Mapping[int, float]) -> None:
        found = self._due_members(fx, cutoffs)
        for key, (partition, _, now) in fx.states.items():  # a step may be due at once
            if now.due and partition in cutoffs and now.due <= cutoffs[partition]:
                found.setdefault(key, partition)
        fired: list[tuple[Lead, Emission]] = []
        for key, partition in sorted(found.items(), key=_PARTITION_LEAD):
            held = fx.states.get(key)
            if held is None:
                continue
            _, before, now = held
            log: list[Transition] = []
            after, out = fire(now, cutoffs[partition], self._book, self.hours(key[0]), log)
            fx.states[key] = (partition, before, after)
            fired.extend(zip(repeat(key), out))
            fx.log.extend(zip(repeat(key[0]), log))
        if fired:
            fx.fired.extend(self._personalised(fx, fired))

    def _personalised(
        self, fx: CadenceEffects, fired: list[tuple[Lead, Emission]]
    ) -> list[tuple[Lead, Emission, Personal]]:
        """Steps fired after the batch's events, each with its lead's fields as of its last
        event: the reply to it in this batch, else the store's (one lookup for all)."""
        replies = fx.replies
        known: dict[Lead, Personal] = {}
        missing = sorted({key for key, _ in fired if key not in replies})
        if missing and self._fields is not None:
            known.update(self._fields(missing))
        out = []
        for key, e in fired:
            personal = known.get(key)
            if personal is None:
                reply = replies.get(key)
                personal = (_NO_PERSONAL if reply is None
                            else personal_of(reply.features, reply.context))  # fmt: skip
                known[key] = personal
            out.append((key, e, personal))
        return out

    def _due_members(self, fx: CadenceEffects, cutoffs: Mapping[int, float]) -> dict[Lead, int]:
        """Leads whose next step is due, from the partitions' sorted sets (two round trips at
        most: the due members, then the states of those this batch has not loaded)."""
        if not cutoffs:
            return {}
        names = self._names
        order = sorted(cutoffs)
        pipe = self._r.pipeline(transaction=False)
        for p in order:
            pipe.zrangebyscore(cadence_due_key(names.shard(p), p), "-inf", cutoffs[p], start=0,
                               num=self._limit)  # fmt: skip
        found: dict[Lead, int] = {}
        for p, members in zip(order, pipe.execute(), strict=True):
            for m in members:
                tenant, lead = m.decode().split("\x1f", 1)
                found[(tenant, lead)] = p
        missing = [k for k in found if k not in fx.states]
        for key, state in self._trusted(missing).items():
            fx.states[key] = (found[key], state, state)
        missing = [k for k in missing if k not in fx.states]
        if missing:
            raw_states = self._r.mget([self._key(key) for key in missing])
            for key, raw in zip(missing, raw_states, strict=True):
                if raw is None:  # the lead's record expired (idle): its plan goes with it
                    fx.due[(found.pop(key), _member(key))] = None
                    continue
                state = self._decoded(key, raw)
                fx.states[key] = (found[key], state, state)
        return found


_NEVER = CadenceState()  # a lead never in a plan (immutable: one shared instance)
_FIRST = operator.itemgetter(0)
_TENANT, _LEAD = operator.attrgetter("tenant"), operator.attrgetter("lead_id")
_TS, _TYPE = operator.attrgetter("ts"), operator.attrgetter("type")
_PARTITION_LEAD = operator.itemgetter(1, 0)  # (lead, partition) -> by partition, then lead
_RELAYED = CONTROL_TYPES | {"identify"}  # entries that may land on another lead, another time


def _ALWAYS(lead: Lead) -> bool:
    return True


def _hot(triggers: tuple[str, ...]) -> bool:
    """A trigger that makes the rules look for a hotter plan (``decide.HOTTER``)."""
    return any(t.startswith(HOTTER) for t in triggers)


@functools.lru_cache(maxsize=1 << 15)
def _in_holdout(key: Lead, share: float) -> bool:
    """Whether the lead falls in the holdout ``share``: a stable hash of tenant and lead,
    cached (a lead's events come in runs)."""
    digest = hashlib.blake2b(_member(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def step_entries(rows: Iterable[tuple[Any, Mapping[bytes, bytes]]]) -> list[dict[str, Any]]:
    """Decode ``lp:cadence`` rows (delivery, tests, benchmarks); unreadable rows are skipped."""
    out = []
    for sid, fields in rows:
        try:
            step = msgpack.unpackb(fields[b"c"], raw=False)
        except (KeyError, ValueError, msgpack.UnpackException):
            continue
        if isinstance(step, dict):
            step["stream_id"] = sid.decode() if isinstance(sid, bytes) else str(sid)
            out.append(step)
    return out


def describe(
    raw: str | bytes | None, book: Book | None = None, tz: str = "UTC"
) -> dict[str, Any] | None:
    """A lead's plan for people (``GET /v1/leads/{id}``): plan, step, next due time (epoch
    seconds and in the tenant's zone ``tz``), the next step, and why it is where it is."""
    state = decode(raw)
    if not state.status:
        return None
    plan = book.plans.get(state.plan) if book is not None else None
    nxt = None
    if plan is not None and state.status == "active" and state.step < len(plan.steps):
        s = plan.steps[state.step]
        nxt = {"channel": s.channel, "kind": s.kind, "template": s.template, "goal": s.goal,
               "day": s.day}  # fmt: skip
    local = None
    if state.due:
        local = datetime.fromtimestamp(state.due, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")
    return {
        "plan": state.plan, "label": plan.label if plan else state.plan,
        "status": state.status, "step": state.step, "steps": len(plan.steps) if plan else None,
        "cycle": state.cycle, "next_due_ts": state.due or None, "next_due_local": local,
        "next_step": nxt, "why": state.why, "ended": state.end_reason or None,
        "blocked_channels": list(state.blocked),
    }  # fmt: skip
