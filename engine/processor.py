"""One batch through the whole data path: validate -> features -> score -> alert -> sinks.

This is the engine; the Bytewax dataflow (``engine/dataflow.py``) is a thin shell
that feeds it batches of stream entries, live (``run``) or from a file (``replay``).

Per batch: decode and validate every entry (bad ones become dead letters with a
reason), apply the valid ones to the feature store in one pipelined round trip,
score them in stream order (threading each lead's alert state and snapshots
through the batch), learn from outcome events, evaluate alert rules, and commit
all effects with the partition positions in one transaction.

That one transaction is also what lets the live dataflow ride out a Redis restart:
``process_retrying`` redoes a batch that failed because Redis was unreachable.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from engine import alerts as rules
from engine.cadence.runner import Cadences
from engine.errors import StoreError
from engine.events import HAND_RAISE_TYPES, OUTCOME_TYPES, POSITIVE_OUTCOMES, Event
from engine.learning import Learner, Moments, example
from engine.metrics import Metrics
from engine.model import OnlineModel
from engine.reasons import explain, low_reasons
from engine.redis_client import UNREACHABLE, outage_backoff
from engine.reporting.batch import gather as report_batch
from engine.scoring import Score, assess, prior
from engine.settings import Settings
from engine.sinks import BatchEffects, Committer, StaleCache
from engine.streams import ingest_ms
from engine.validate import Rejection, Validator
from features.definitions import model_input, pack_features
from features.store import DUPLICATE, LATE, FeatureReply, FeatureStore

__all__ = ["Entry", "Processor", "BatchResult"]

log = logging.getLogger(__name__)

OUTCOMES = frozenset(OUTCOME_TYPES)
#: ``leadpulse_labels_total{label}``: examples learned (positive, negative: an explicit
#: ``lost``, expired: the horizon passed with no outcome) and outcome events that taught
#: nothing (repeat_outcome: the lead's first outcome already counted; no_moment: nothing
#: to label, e.g. an outcome for an unknown lead).
LABEL_KINDS = ("positive", "negative", "expired", "repeat_outcome", "no_moment")

#: One stream entry as the source hands it over: (partition, stream id, fields).
Entry = tuple[int, bytes, dict[bytes, bytes]]


@dataclass
class _Lead:
    """A lead's mutable state while its events in one batch are scored."""

    partition: int
    alert: rules.AlertState
    snaps: Moments
    outcome: str = ""  # the lead's first outcome: no example is made after it
    outcome_ts: float = 0.0
    placeholder: bool = False  # made by the expiry sweep before any event of the lead
    pending: dict[str, Any] | None = None  # the latest moment, packed only when it lasts
    latest: tuple[Event, Score, FeatureReply, dict[str, float] | None, OnlineModel] | None = None


@dataclass(frozen=True)
class BatchResult:
    """What a batch produced, for callers that print or count (demo, replay, tests)."""

    alerts: tuple[dict[str, Any], ...]
    processed: int
    rejected: int
    duplicates: int


class Processor:
    """Processes batches of stream entries. Thread-safe: workers of a process share one."""

    def __init__(
        self,
        settings: Settings,
        store: FeatureStore,
        committer: Committer,
        learner: Learner,
        metrics: Metrics,
        clock: Any = time.time,
    ) -> None:
        self._s = settings
        self._store = store
        self._commit = committer
        self.learner = learner
        self._metrics = metrics
        self._validator = Validator(settings.validation)
        self._clock = clock
        self._horizon = settings.scoring.label_horizon_d * 86_400.0
        self._hand = frozenset(settings.alerts.hand_raise_types)
        self._watermarks: dict[int, int] | None = None  # partition -> swept event-time day
        self._lost: dict[int, bool] = {}  # partition -> an explicit `lost` was committed
        self._wm_lock = threading.Lock()
        self._next_model_metrics = 0.0
        self._next_lag = 0.0
        self.health = metrics.health  # the dataflow's reads report here too
        for kind in LABEL_KINDS:  # every series exists from the start: rate() sees the first
            metrics.labels.labels(kind)
        self.outage_backoff = outage_backoff(settings.redis.outage_backoff_cap_s)
        self._cadence = Cadences(settings, committer.client, clock)  # engine/cadence

    # -- decode + validate ---------------------------------------------------------------
    def _decode(self, fields: dict[bytes, bytes]) -> Event | Rejection:
        if b"e" in fields:
            return self._validator.check_bytes(fields[b"e"], "msgpack")
        if b"j" in fields:
            return self._validator.check_bytes(fields[b"j"], "json")
        return Rejection("malformed_entry: no event field")

    # -- the batch -------------------------------------------------------------------------
    def process_retrying(
        self, entries: Sequence[Entry], stop: threading.Event | None = None
    ) -> BatchResult:
        """:meth:`process`, redone with capped exponential backoff while Redis is unreachable.

        Redoing a batch is safe because it commits in one MULTI/EXEC with its stream
        positions: a failed attempt left only feature updates behind, and the store
        replays those with the same replies. Two things could still differ, and are
        handled before each retry: in-memory state that ran ahead of Redis (the sweep
        watermarks, what the model learned) is reloaded from Redis as a restart would,
        and a batch whose commit landed but whose reply was lost is not applied again.
        Gives up only when ``stop`` is set (SIGTERM during an outage): the batch stays
        uncommitted and is read again at the next start.
        """
        failures = 0
        while True:
            try:
                if failures:
                    self._resync()
                    if self._landed(entries):
                        self.health.ok()
                        return BatchResult((), len(entries), 0, 0)
                result = self.process(entries)
                self.health.ok()
                return result
            except StaleCache:  # a merge outside the engine changed leads: reload, redo
                self._resync()
            except UNREACHABLE as exc:
                failures += 1
                self.health.failed(f"{exc.__class__.__name__}: {exc}")
                delay = self.outage_backoff.compute(failures)
                log.info("batch of %d redone in %.2f s (try %d): %s", len(entries), delay,
                         failures + 1, exc)  # fmt: skip
                if stop is not None and stop.wait(delay):
                    msg = "stopped while Redis was unreachable: the batch was not committed"
                    raise StoreError(msg) from exc
                if stop is None:
                    time.sleep(delay)

    def _resync(self) -> None:
        """Forget what may have run ahead of Redis in a failed batch; reload it from Redis."""
        with self._wm_lock:
            self._watermarks = None
            self._lost = {}
        self._cadence.forget()
        self._store.clear()
        self.learner.reload()

    def _landed(self, entries: Sequence[Entry]) -> bool:
        """Whether this batch's commit is in Redis already (its reply was lost)."""
        last: dict[int, tuple[int, int]] = {}
        for partition, sid, _ in entries:
            if not sid:  # a clock tick (engine/dataflow.py): no position
                continue
            ms, _, seq = (sid.decode() if isinstance(sid, bytes) else sid).partition("-")
            last[partition] = (int(ms), int(seq or 0))
        committed = self._commit.committed()
        for partition, at in last.items():
            ms, _, seq = committed[partition].partition("-")
            if (int(ms), int(seq or 0)) < at:
                return False
        return True

    def process(self, entries: Sequence[Entry]) -> BatchResult:
        """One batch, committed; a failure leaves nothing of it behind (the cache is dropped)."""
        try:
            return self._process(entries)
        except BaseException:
            self._store.clear()  # it may hold state of the batch that never committed
            raise

    def _process(self, entries: Sequence[Entry]) -> BatchResult:
        """decode -> identity -> features -> (sweep, label, score, alert) per event -> leads'
        records and moments -> reporting -> commit -> metrics."""
        started = time.perf_counter()
        if entries and not any(sid for _, sid, _ in entries):
            return self._ticks(entries)
        fx = BatchEffects()
        if self._cadence.enabled:
            fx.cadence = self._cadence.begin(entries)
        self.learner.refresh()
        learned = self.learner.catch_up()
        events, origin, rejected = self._decode_all(entries, fx)
        events = self._store.resolve_aliases(events)
        replies, fx.features = self._store.apply(events)
        leads: dict[tuple[str, str], _Lead] = {}
        duplicates = 0
        first, last_of = _first_and_last(events)
        for i, (event, entry, reply) in enumerate(zip(events, origin, replies, strict=True)):
            if reply.status == DUPLICATE or not first[i]:
                duplicates += 1
                continue
            if reply.status == LATE:
                rejected += 1
                self._metrics.late.inc()
                fx.dead_letters.append(self._dead("late: older than the dedup horizon", entry))
                continue
            learned |= self._sweep_if_new_day(entry[0], event.ts, leads, fx)
            fx.done.append((event.tenant, event.lead_id, event.event_id))
            lead = self._lead_for(leads, entry[0], event, reply)
            if event.type in OUTCOMES:
                learned |= self._label_outcome(event, lead, reply, fx, entry[0])
            is_last = last_of[(event.tenant, event.lead_id)] == i
            self._score_event(event, entry, reply, lead, fx, is_last)
        self._finish_leads(leads, fx)
        # brokerage reporting: per-day counters, committed with the batch (engine/reporting)
        fx.report = report_batch(self._s, self._commit.client, events, fx)
        emit_ms = int(self._clock() * 1000)
        for alert in fx.alerts:
            alert["emit_ms"] = emit_ms
        if fx.cadence is not None:  # due follow-up steps, emitted with this batch
            times = ((entry[0], event.ts) for event, entry in zip(events, origin, strict=True))
            self._cadence.finish(fx.cadence, fx.score_records, times, emit_ms)
        self._commit_batch(fx, learned)
        self._store.committed(fx.score_records)
        if fx.cadence is not None:
            self._store.committed(fx.cadence.writes)
        real = sum(1 for _, sid, _ in entries if sid)
        self._observe(real, fx, duplicates, emit_ms, learned, started)
        return BatchResult(tuple(fx.alerts), len(entries), rejected, duplicates)

    def _ticks(self, entries: Sequence[Entry]) -> BatchResult:
        """Only clock ticks (idle live partitions): fire due follow-up steps, commit if any."""
        if self._cadence.enabled:
            fx = BatchEffects(cadence=self._cadence.begin(entries))
            assert fx.cadence is not None
            self._cadence.finish(fx.cadence, fx.score_records, (), int(self._clock() * 1000))
            if fx.cadence.work:
                self._commit.commit(fx)
                self._store.committed(fx.cadence.writes)
        return BatchResult((), 0, 0, 0)

    def _decode_all(
        self, entries: Sequence[Entry], fx: BatchEffects
    ) -> tuple[list[Event], list[Entry], int]:
        """Valid events with the entries they came from; bad ones become dead letters."""
        events: list[Event] = []
        origin: list[Entry] = []
        rejected = 0
        for entry in entries:
            partition, sid, fields = entry
            if not sid:  # a clock tick: checks due follow-up steps, is not an event
                continue
            fx.positions[partition] = sid.decode() if isinstance(sid, bytes) else sid
            fx.processed[partition] = fx.processed.get(partition, 0) + 1
            checked = self._decode(fields)
            if isinstance(checked, Rejection):
                rejected += 1
                fx.dead_letters.append(self._dead(checked.reason, entry))
            else:
                events.append(checked)
                origin.append(entry)
        return events, origin, rejected

    def _lead_for(
        self, leads: dict[tuple[str, str], _Lead], partition: int, event: Event, reply: FeatureReply
    ) -> _Lead:
        """The lead's state in this batch (made from the store's reply on first touch)."""
        key = (event.tenant, event.lead_id)
        lead = leads.get(key) or self._lead_state(partition, reply)
        if lead.placeholder:  # the sweep touched it first: take its real state now
            fresh = self._lead_state(partition, reply)
            lead.alert, lead.outcome, lead.outcome_ts = fresh.alert, fresh.outcome, fresh.outcome_ts
            if not lead.snaps.loaded:
                lead.snaps.tail_latest = fresh.snaps.tail_latest
            lead.placeholder = False
        leads[key] = lead
        return lead

    def _score_event(
        self,
        event: Event,
        entry: Entry,
        reply: FeatureReply,
        lead: _Lead,
        fx: BatchEffects,
        is_last: bool,
    ) -> None:
        """Score (serving model), alert rules, the learning moment; reasons only where read."""
        models = self.learner.serving
        segment = models.segment_of(str(reply.features.get("side", "")))
        model = models.model(segment)
        raw_prior, _ = prior(reply.features, self._s)
        x = self._model_input(reply, model.ready)
        p_model = model.probability(x) if x is not None else None
        score = assess(
            reply.features, reply.context, self._s, p_model, models.model_weight(segment),
            models.calibrated_prior, raw_prior, outcome=lead.outcome,
        )  # fmt: skip
        before = lead.alert
        decision = rules.evaluate(event, score, before, reply.context, self._s.alerts)
        lead.alert = decision.state
        self._take_moment(event, reply.features, segment, score, lead)
        self._metrics.scores.observe(score.score)
        if fx.cadence is not None:
            self._cadence.on_event(fx.cadence, lead.partition, event, score, decision.triggers,
                                   reply)  # fmt: skip
        if decision.triggers or is_last:
            score = self._explained(score, reply, x, model, lead)
        if is_last:
            fx.score_records[(event.tenant, event.lead_id)] = self._record(
                event, score, lead, reply
            )
        else:
            lead.latest = (event, score, reply, x, model)
        if decision.triggers:
            alert = self._alert(event, score, decision, reply, ingest_ms(entry[1]))
            # a jump names the score it is measured from (the window's low), not the last
            if decision.jump_from is not None:
                alert["score_before"] = decision.jump_from
            else:
                alert["score_before"] = before.score if before.bucket else None
            fx.alerts.append(alert)

    def _finish_leads(self, leads: dict[tuple[str, str], _Lead], fx: BatchEffects) -> None:
        """Each touched lead's score record, learning moments and due-index entry."""
        for key, lead in leads.items():
            if key not in fx.score_records and lead.latest is not None:
                # its last event was a duplicate or late: store the last one that counted
                event, score, reply, x, model = lead.latest
                fx.score_records[key] = self._record(
                    event, self._explained(score, reply, x, model, lead), lead, reply
                )
            self._flush_moment(lead)
            snaps = lead.snaps
            effect = snaps.effect()
            if effect is not None:
                fx.snapshots[key] = effect
            if snaps.loaded or snaps.taken:
                member = f"{key[0]}\x1f{key[1]}"
                oldest = snaps.oldest_ts()
                if snaps.loaded:  # the whole list is known: set (or drop) exactly
                    fx.due[(lead.partition, member)] = None if oldest is None else ("set", oldest)
                elif oldest is not None:  # only new snapshots known: lower the score if older
                    fx.due[(lead.partition, member)] = ("lt", oldest)

    def _commit_batch(self, fx: BatchEffects, learned: bool) -> None:
        learner = self.learner
        if learned and learner.trainer:
            # Workers share the model: dump and commit under one lock, or an older dump
            # committed after a newer one would roll the saved model back.
            with learner.lock:
                fx.publish = learner.publication()
                if fx.publish is not None or learner.checkpoint_due():
                    fx.model_work = fx.publish[1] if fx.publish else learner.live.dumps()
                    fx.learned_to = learner.live.position
                    learner.checkpointed()
                self._commit.commit(fx)
        else:
            self._commit.commit(fx)

    def _observe(
        self,
        n: int,
        fx: BatchEffects,
        duplicates: int,
        emit_ms: int,
        learned: bool,
        started: float,
    ) -> None:
        """Metrics after the commit: they count what really landed."""
        m = self._metrics
        m.events_in.inc(n)
        m.batch_size.observe(n)
        m.duplicates.inc(duplicates)
        for dead in fx.dead_letters:
            m.rejected.labels(dead["reason"].split(":", 1)[0]).inc()
        for alert in fx.alerts:
            m.alert_latency.observe(max(0.0, (emit_ms - alert["ingest_ms"]) / 1000.0))
            for trigger in alert["triggers"]:
                m.alerts.labels(trigger.split(":", 1)[0]).inc()
        now = time.monotonic()
        if now >= self._next_lag:  # one round trip, at most once a second
            self._next_lag = now + 1.0
            for partition, lag in self._commit.lag(fx.positions).items():
                m.stream_lag.labels(str(partition)).set(lag)
        if learned and now >= self._next_model_metrics:  # status() costs ms: once a second
            self._next_model_metrics = now + 1.0
            with self.learner.lock:
                status = self.learner.live.status()
            m.observe_model(status, self.learner.serving_version)
        m.batch_seconds.observe(time.perf_counter() - started)

    # -- steps -------------------------------------------------------------------------------
    @staticmethod
    def _dead(reason: str, entry: Entry) -> dict[str, Any]:
        partition, sid, fields = entry
        payload = fields.get(b"e") or fields.get(b"j") or b""
        return {"reason": reason, "payload": payload[:4096], "partition": partition, "id": sid}

    def _lead_state(self, partition: int, reply: FeatureReply) -> _Lead:
        st = reply.score_state
        return _Lead(
            partition=partition,
            alert=rules.AlertState.from_hash(st),
            snaps=Moments(self._s.scoring.max_snapshots, tail_latest=st.get("moment") == "l"),
            outcome=st.get("outcome", ""),
            outcome_ts=float(st.get("outcome_ts") or 0.0),
        )

    def _model_input(self, reply: FeatureReply, model_ready: bool) -> dict[str, float] | None:
        """The model's input, built only when the model can use it."""
        if model_ready:
            return model_input(reply.features, self._s.features.model_names)
        return None

    def _explained(
        self,
        score: Score,
        reply: FeatureReply,
        x: dict[str, float] | None,
        model: OnlineModel,
        lead: _Lead,
    ) -> Score:
        """Add reasons (only for scores someone reads: alerts and stored records)."""
        contributions = model.contributions(x) if x is not None and score.model_weight else {}
        _, points = prior(reply.features, self._s)
        low = low_reasons(reply.context, lead.outcome, lead.outcome_ts, self._s)
        pros, cons = explain(
            reply.features, reply.context, self._s, points, contributions, score.model_weight, low
        )
        return replace(score, reasons=pros, concerns=cons)

    def _label_outcome(
        self, event: Event, lead: _Lead, reply: FeatureReply, fx: BatchEffects, partition: int
    ) -> bool:
        """Label the lead's open moments with its first outcome; True if something was learned.

        The latest moment (the vector just before the outcome) and the pinned hand-raise
        moments within the horizon get the outcome's label (older ones: negative, no
        positive came within their horizon). Learned at once, in stream order, except a
        positive in a partition that has never seen ``lost`` (see ``engine/learning.py``):
        it is marked and learned at its moment's horizon, with the negatives of its period.
        A later outcome changes nothing.
        """
        m = self._metrics
        if lead.outcome:
            m.labels.labels("repeat_outcome").inc()
            return False
        y = event.type in POSITIVE_OUTCOMES
        lead.outcome, lead.outcome_ts = event.type, event.ts
        self._flush_moment(lead)
        lead.snaps.load(reply.snapshots)
        hold = y and self._paced(partition)
        if not y:
            self._mark_lost(partition, fx)
        examples: list[dict[str, Any]] = []
        marked: list[bytes] = []
        for blob in lead.snaps.current:
            snap = msgpack.unpackb(blob, raw=False)
            label = y and snap["ts"] <= event.ts <= snap["ts"] + self._horizon
            snap["outcome"], snap["outcome_at"] = event.type, event.ts
            if hold:
                snap["y"] = label
                marked.append(msgpack.packb(snap, use_bin_type=True))
            else:
                eid = f"outcome:{event.tenant}:{event.lead_id}:{snap['ts']}"
                who = (event.tenant, event.lead_id)
                names = self._s.features.model_names
                examples.append(example(eid, snap, label, event.ts, who, self.learner.process_id,
                                        names))  # fmt: skip
        lead.snaps.replace(marked)
        if not examples and not marked:
            m.labels.labels("no_moment").inc()
        learned = False
        for ex in examples:
            fx.labels.append(msgpack.packb(ex, use_bin_type=True))
            m.labels.labels("positive" if ex["y"] else "negative").inc()
            learned |= self.learner.learn(ex)
        return learned

    def _paced(self, partition: int) -> bool:
        """Positives wait for their horizon until the partition has seen an explicit ``lost``."""
        return not self._lost_seen(partition)

    def _lost_seen(self, partition: int) -> bool:
        with self._wm_lock:
            if partition not in self._lost:
                self._lost[partition] = partition in self._commit.lost_seen()
            return self._lost[partition]

    def _mark_lost(self, partition: int, fx: BatchEffects) -> None:
        if not self._lost_seen(partition):
            with self._wm_lock:
                self._lost[partition] = True
            fx.lost_seen.add(partition)

    def _sweep_if_new_day(
        self, partition: int, ts: float, leads: dict[tuple[str, str], _Lead], fx: BatchEffects
    ) -> bool:
        """At the first event of a new event-time day in a partition, settle old snapshots.

        A snapshot whose horizon has passed is learned: positive if an outcome marked it
        so, negative otherwise. Runs at a point fixed by the stream (not by batch
        boundaries) so replays learn the same.
        """
        day = int(ts // 86_400)
        with self._wm_lock:
            if self._watermarks is None:
                self._watermarks = self._commit.watermarks()
            swept = self._watermarks.get(partition)
            if swept is not None and day <= swept:
                return False
            self._watermarks[partition] = day
        fx.watermarks[partition] = day
        if swept is None:
            return False  # first event ever seen here: nothing can be due yet
        cutoff = ts - self._horizon
        learned = False
        proc = self.learner.process_id
        expired: list[dict[str, Any]] = []
        due = dict(self._commit.due_leads(partition, cutoff))
        members = set(due)
        for (tenant, lead_id), known in leads.items():  # snapshots known only in this batch
            if known.partition == partition and known.snaps.current:
                members.add(f"{tenant}\x1f{lead_id}")
        for member in sorted(members):
            tenant, lead_id = member.split("\x1f", 1)
            key = (tenant, lead_id)
            lead = leads.get(key)
            if lead is None:
                snaps = Moments(self._s.scoring.max_snapshots)
                lead = _Lead(partition, rules.AlertState(), snaps, placeholder=True)
                leads[key] = lead
            if member in due:
                lead.snaps.load(due[member])
            # Not in the due index: nothing stored is old enough to expire, so only the
            # snapshots known here are looked at, and the stored list is left alone.
            for snap in lead.snaps.expire(cutoff):
                eid = f"settled:{tenant}:{lead_id}:{snap['ts']}"
                y = bool(snap.get("y", False))
                expired.append(example(eid, snap, y, ts, key, proc, self._s.features.model_names))
        # learn in an order fixed by the data, not by how the due index happens to rank leads
        for ex in sorted(expired, key=lambda e: (e["ts"], e["id"])):
            fx.labels.append(msgpack.packb(ex, use_bin_type=True))
            kind = "positive" if ex["y"] else "negative" if ex.get("outcome") else "expired"
            self._metrics.labels.labels(kind).inc()
            if self.learner.learn(ex):
                learned = True
        return learned

    def _take_moment(
        self,
        event: Event,
        features: Mapping[str, float | str],
        segment: str,
        score: Score,
        lead: _Lead,
    ) -> None:
        """Every event but an outcome replaces the lead's latest moment; a hand-raise pins it.

        No moment after the lead's first outcome: what a converted or lost lead does next
        would teach the model its own label.
        """
        if event.type in OUTCOMES or lead.outcome:
            return
        pinned = event.type in HAND_RAISE_TYPES
        snap = {
            "ts": event.ts,
            "f": features,
            "seg": segment,
            "pb": score.probability,  # what was served
            "pp": score.prior_probability,  # the points prior alone (as served: calibrated)
            "pr": score.raw_prior_probability,  # the raw points prior (calibration input)
            "pm": score.model_probability,  # the model alone (None before it is ready)
            "bk": score.bucket,
            "k": "h" if pinned else "l",
        }
        lead.pending = snap  # a later event of the batch may supersede it: packed at flush
        if pinned:
            self._flush_moment(lead)

    @staticmethod
    def _flush_moment(lead: _Lead) -> None:
        snap, lead.pending = lead.pending, None
        if snap is not None:
            snap["f"] = pack_features(snap["f"])
            lead.snaps.take(msgpack.packb(snap, use_bin_type=True), snap["k"] == "h")

    def _record(
        self, event: Event, score: Score, lead: _Lead, reply: FeatureReply
    ) -> dict[str, Any]:
        a = lead.alert
        return {
            "tenant": event.tenant,
            "lead_id": event.lead_id,
            "score": score.score,
            "probability": score.probability,
            "bucket": score.bucket,
            "tier": score.tier,
            "reasons": json.dumps(score.reasons),
            "concerns": json.dumps(score.concerns),
            "prior_probability": score.prior_probability,
            "raw_prior_probability": score.raw_prior_probability or 0.0,
            "model_weight": score.model_weight,
            "ts": event.ts,
            "last_event_id": event.event_id,
            "agent_id": reply.context.get("agent_id", ""),
            "blocked": ",".join(reply.context.get("blocked", ())),
            "last_alert_ts": a.last_alert_ts,
            "jump_base": a.jump_base,
            "jump_base_ts": a.jump_base_ts,
            "moment": "l" if lead.pending is not None or lead.snaps.tail_latest else "",
            "outcome": lead.outcome,
            "outcome_ts": lead.outcome_ts,
            "bucket_by": score.bucket_by,
        }

    def _alert(
        self,
        event: Event,
        score: Score,
        decision: rules.Decision,
        reply: FeatureReply,
        ingested: int,
    ) -> dict[str, Any]:
        ctx = reply.context
        sla_key, rule = rules.sla_rule_for(event, str(reply.features.get("source")), self._s.alerts)
        deadline, after_hours = rules.sla_deadline(event.ts, rule, self._s.alerts)
        repeat = float(reply.features.get("repeat_views_48h", 0)) >= 3
        hand = event.type in self._hand
        touch = rules.first_touch(event.ts, rule, ctx["blocked"], self._s.alerts, repeat or hand)
        return {
            "alert_id": decision.alert_id,
            "tenant": event.tenant,
            "lead_id": event.lead_id,
            "triggers": list(decision.triggers),
            "score_before": None,
            "score_after": score.score,
            "probability": score.probability,
            "bucket": score.bucket,
            "bucket_by": score.bucket_by,
            "tier": score.tier,
            "reasons": list(score.reasons),
            "concerns": list(score.concerns),
            "event": {
                "event_id": event.event_id,
                "type": event.type,
                "ts": event.ts,
                "property_id": event.property_id or ctx.get("last_property", ""),
                "area": event.area or ctx.get("last_area", ""),
                "address": _text_prop(event, "address"),
                "title": _text_prop(event, "title"),
            },
            "first_touch": touch,
            "blocked_channels": list(ctx["blocked"]),
            "sla": {
                "rule": sla_key,
                "deadline_ts": deadline,
                "after_hours": after_hours,
            },
            "agent_id": ctx.get("agent_id", ""),
            "ingest_ms": ingested,
        }


def _text_prop(event: Event, name: str) -> str:
    """A listing's address or title as the event carried it in ``props`` (else empty)."""
    value = event.props.get(name)
    return value[:200] if isinstance(value, str) else ""


def _first_and_last(events: Sequence[Event]) -> tuple[list[bool], dict[tuple[str, str], int]]:
    """Which events are the first of their id in the batch, and each lead's last one (its
    score is stored, so it gets reasons at once, with the model as it is at that moment,
    whatever the batch boundaries)."""
    seen: set[tuple[str, str]] = set()
    first: list[bool] = []
    last_of: dict[tuple[str, str], int] = {}
    for i, event in enumerate(events):
        first.append((event.tenant, event.event_id) not in seen)
        seen.add((event.tenant, event.event_id))
        if first[-1]:
            last_of[(event.tenant, event.lead_id)] = i
    return first, last_of
