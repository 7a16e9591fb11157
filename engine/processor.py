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

import itertools
import logging
import operator
import threading
import time
from collections.abc import Sequence
from typing import Any

from engine import alerts as rules
from engine import identity
from engine.cadence.runner import Cadences
from engine.errors import StoreError
from engine.events import Event
from engine.learning import Learner, Moments
from engine.metrics import Metrics, observe_all
from engine.redis_client import UNREACHABLE, outage_backoff
from engine.reporting.batch import gather as report_batch
from engine.settings import Settings
from engine.sinks import BatchEffects, Committer
from engine.stages.alert import alert_payload
from engine.stages.batch import (
    LABEL_KINDS,
    OUTCOMES,
    BatchResult,
    Entry,
    LeadInBatch,
    Scored,
    first_and_last,
)  # fmt: skip
from engine.stages.commit import Observer, commit_batch
from engine.stages.decode import Decoder, dead_letter
from engine.stages.learn import Teacher
from engine.stages.score import Scorer
from engine.streams import ingest_ms
from features.store import DUPLICATE, LATE, SKIPPED, FeatureReply, FeatureStore

__all__ = ["LABEL_KINDS", "BatchResult", "Entry", "Processor"]

log = logging.getLogger(__name__)

Leads = dict[tuple[str, str], LeadInBatch]
_PARTITION, _TS = operator.itemgetter(0), operator.attrgetter("ts")  # (an entry's, an event's)


def _newest(origin: Sequence[Entry], events: Sequence[Event]) -> dict[int, float]:
    """The newest event time of each partition of the batch (loops in C: a batch has
    thousands of events and a few partitions)."""
    parts = list(map(_PARTITION, origin))
    times = list(map(_TS, events))
    return {p: max(itertools.compress(times, map(p.__eq__, parts))) for p in set(parts)}


def _combined(results: Sequence[BatchResult]) -> BatchResult:
    """One result of a batch committed in parts."""
    if len(results) == 1:
        return results[0]
    return BatchResult(
        tuple(a for r in results for a in r.alerts),
        sum(r.processed for r in results),
        sum(r.rejected for r in results),
        sum(r.duplicates for r in results),
    )


class Processor:
    """Runs the stages (``engine/stages/``) over batches of stream entries. Thread-safe:
    workers of a process share one."""

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
        self._clock = clock
        self._decoder = Decoder(settings.validation)
        self._scorer = Scorer(settings, learner)
        self._teacher = Teacher(settings, learner, committer, metrics)
        self._observer = Observer(metrics, committer, learner)
        self.health = metrics.health  # the dataflow's reads report here too
        for kind in LABEL_KINDS:  # every series exists from the start: rate() sees the first
            metrics.labels.labels(kind)
        self.outage_backoff = outage_backoff(settings.redis.outage_backoff_cap_s)
        # engine/cadence: a step's personalisation fields are the lead's features' (the store's)
        self._cadence = Cadences(settings, committer.client, clock, fields=store.personal)
        store.keep_personal = self._cadence.enabled
        self._sharded = committer.names.sharded

    # -- the batch -------------------------------------------------------------------------
    def process_retrying(
        self, entries: Sequence[Entry], stop: threading.Event | None = None
    ) -> BatchResult:
        """:meth:`process`, redone with capped exponential backoff while Redis is unreachable
        (in the slot-per-partition layout, each partition's part of the batch on its own)."""
        return _combined([self._retrying(part, stop) for part in self._parts(entries)])

    def _parts(self, entries: Sequence[Entry]) -> list[Sequence[Entry]]:
        """The batch as it commits: whole, or in the slot-per-partition layout one part
        per partition (a transaction stays in one hash slot), in order of first entry."""
        if not self._sharded:
            return [entries]
        parts: dict[int, list[Entry]] = {}
        for entry in entries:
            parts.setdefault(entry[0], []).append(entry)
        return list(parts.values())

    def _retrying(self, entries: Sequence[Entry], stop: threading.Event | None) -> BatchResult:
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
                        if self._sharded and entries:  # its outbox may not have gone on
                            self._commit.flush_outbox(entries[0][0])
                        self.health.ok()
                        return BatchResult((), len(entries), 0, 0)
                result = self.process(entries)
                self.health.ok()
                return result
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
        self._teacher.forget()
        self._cadence.forget()
        self._store.clear()
        self.learner.reload()

    def _landed(self, entries: Sequence[Entry]) -> bool:
        """Whether this batch's commit is in Redis already (its reply was lost)."""
        last: dict[int, tuple[int, int]] = {}
        for partition, sid, _ in entries:
            if not sid:  # a clock tick: no position
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
            return _combined([self._process(part) for part in self._parts(entries)])
        except BaseException:
            self._store.clear()  # it may hold state of the batch that never committed
            raise

    def _process(self, entries: Sequence[Entry]) -> BatchResult:
        """decode -> identity -> features -> (sweep, label, score, alert) per event -> leads'
        records and moments -> reporting -> commit -> metrics."""
        started = time.perf_counter()
        if entries and not any(sid for _, sid, _ in entries):
            return self._ticks(entries)
        fx = BatchEffects(partition=entries[0][0] if self._sharded else -1)
        if self._sharded:
            self._commit.recover_outbox(fx.partition)
        self.learner.refresh()
        # the trainer reads other processes' labels in each commit (Learner.caught_up);
        # in the slot-per-partition layout they are in another slot: a read of its own
        learned = self.learner.catch_up() if self._sharded else self.learner.catch_up_pending()
        events, origin, rejected = self._decoder.decode_all(entries, fx)
        # (cadences: the fields before the batch only of leads a step may fall due for)
        wanted = self._cadence.fields_wanted(events) if self._cadence.enabled else None
        replies, fx.features = self._store.apply(events, wanted)  # with identity
        events, origin, replies = identity.scored(events, origin, replies, SKIPPED)
        if self._cadence.enabled:  # follow-up plans of the batch's leads (engine/cadence)
            fx.cadence = self._cadence.begin(entries, events, fx.features.before)
        scores: list[int] = []  # observed once a batch (the same counts as one by one)
        try:
            leads, learned_now, late, duplicates = self._events(events, origin, replies, fx, scores)
        finally:
            observe_all(self._metrics.scores, scores)
        if fx.cadence is not None:  # the scored events move the leads' plans
            self._cadence.events(fx.cadence)
        learned |= learned_now
        rejected += late
        self._finish_leads(leads, fx)
        # brokerage reporting: per-day counters, committed with the batch (engine/reporting)
        shard = self._commit.names.shard(fx.partition) if self._sharded else ""
        fx.report = report_batch(self._s, self._commit.client, events, fx, shard)
        emit_ms = int(self._clock() * 1000)
        for alert in fx.alerts:
            alert.emit_ms = emit_ms
        if fx.cadence is not None:  # due follow-up steps, emitted with this batch
            self._cadence.finish(fx.cadence, _newest(origin, events).items(), emit_ms)
        if not self._sharded:
            fx.labels_from = self.learner.catch_up_in_commit()
        commit_batch(self._commit, self.learner, fx, learned)
        if fx.labels_after is not None and fx.labels_from is not None:
            self.learner.caught_up(fx.labels_after, fx.labels_from)
        self._store.committed(fx.score_records)
        if fx.cadence is not None:
            self._cadence.committed(fx.cadence)
        real = sum(1 for _, sid, _ in entries if sid)
        self._observer.observe(real, fx, duplicates, emit_ms, learned, started)
        return BatchResult(tuple(a.wire() for a in fx.alerts), len(entries), rejected, duplicates)

    def _events(
        self, events: Sequence[Event], origin: Sequence[Entry], replies: Sequence[FeatureReply],
        fx: BatchEffects, scores: list[int],
    ) -> tuple[Leads, bool, int, int]:  # fmt: skip
        """(sweep, label, score, alert) per event in stream order: the batch's leads, whether
        the model learned, the late events and the duplicates."""
        leads: Leads = {}
        learned = False
        late = 0
        checked: dict[int, int] = {}  # partition -> the latest event-time day swept up to
        duplicates = 0
        first, last_of = first_and_last(events)
        done, score_event = fx.done, self._score_event
        for i, (event, entry, reply) in enumerate(zip(events, origin, replies, strict=True)):
            status = reply.status
            if status == DUPLICATE or not first[i]:
                duplicates += 1
                continue
            if status == LATE:
                late += 1
                self._metrics.late.inc()
                fx.dead_letters.append(dead_letter("late: older than the dedup horizon", entry))
                continue
            partition, key = entry[0], (event.tenant, event.lead_id)
            day = int(event.ts // 86_400)
            if day > checked.get(partition, -1):  # a day the sweep may not have seen yet
                checked[partition] = day
                learned |= self._teacher.sweep_if_new_day(partition, event.ts, leads, fx)
            done.append((event.tenant, event.lead_id, event.event_id))
            lead = leads.get(key)
            if lead is None or lead.placeholder:
                lead = self._lead_for(leads, partition, reply, key)
            if event.type in OUTCOMES:
                learned |= self._teacher.label_outcome(event, lead, reply, fx, partition)
            score_event(event, entry, reply, lead, fx, last_of[key] == i, scores)
        return leads, learned, late, duplicates

    def _ticks(self, entries: Sequence[Entry]) -> BatchResult:
        """Only clock ticks (idle live partitions): fire due follow-up steps, commit if any."""
        if self._cadence.enabled:
            fx = BatchEffects(cadence=self._cadence.begin(entries))
            if self._sharded:
                fx.partition = entries[0][0]
                self._commit.recover_outbox(fx.partition)
            assert fx.cadence is not None
            self._cadence.finish(fx.cadence, (), int(self._clock() * 1000))
            if fx.cadence.work:
                self._commit.commit(fx)
                self._cadence.committed(fx.cadence)
        return BatchResult((), 0, 0, 0)

    def _lead_for(
        self, leads: Leads, partition: int, reply: FeatureReply, key: tuple[str, str]
    ) -> LeadInBatch:
        """The lead's state in this batch (made from the store's reply on first touch)."""
        lead = leads.get(key) or self._lead_state(partition, reply)
        if lead.placeholder:  # the sweep touched it first: take its real state now
            fresh = self._lead_state(partition, reply)
            lead.alert, lead.outcome, lead.outcome_ts = fresh.alert, fresh.outcome, fresh.outcome_ts
            lead.stored_bucket = fresh.stored_bucket
            if not lead.snaps.loaded:
                lead.snaps.tail_latest = fresh.snaps.tail_latest
            lead.placeholder = False
        leads[key] = lead
        return lead

    def _lead_state(self, partition: int, reply: FeatureReply) -> LeadInBatch:
        st = reply.score_state
        return LeadInBatch(
            partition=partition,
            alert=rules.AlertState.from_hash(st),
            snaps=Moments(self._s.scoring.max_snapshots, tail_latest=st.get("moment") == "l"),
            outcome=st.get("outcome", ""),
            outcome_ts=float(st.get("outcome_ts") or 0.0),
            stored_bucket=(st.get("bucket", ""), st.get("bucket_by", "") or "score"),
        )

    def _score_event(
        self, event: Event, entry: Entry, reply: FeatureReply, lead: LeadInBatch,
        fx: BatchEffects, is_last: bool, scores: list[int],
    ) -> None:  # fmt: skip
        """Score, alert rules, the learning moment; reasons only where read."""
        s = self._scorer.score(event, reply, lead)
        before = lead.alert
        decision = rules.evaluate(event, s.score, before, reply.context, self._s.alerts)
        lead.alert = decision.state
        self._teacher.take_moment(event, reply.features, s.segment, s.score, lead)
        scores.append(s.score.score)
        if fx.cadence is not None:  # (a call each cost more than the list: Cadences.events)
            fx.cadence.scored.append((lead.partition, event, s.score, decision.triggers, reply))
        if decision.triggers or is_last:
            s = s.with_score(self._scorer.explained(s, lead, bool(decision.triggers)))
        if is_last:
            self._scorer.store(s, lead, fx)
        else:
            lead.latest = s
        if decision.triggers:
            alert = alert_payload(self._s.alerts, event, s.score, decision, reply,
                                  ingest_ms(entry[1]))  # fmt: skip
            # a jump names the score it is measured from (the window's low), not the last
            if decision.jump_from is not None:
                alert.score_before = decision.jump_from
            else:
                alert.score_before = before.score if before.bucket else None
            fx.alerts.append(alert)

    def _finish_leads(self, leads: Leads, fx: BatchEffects) -> None:
        """Each touched lead's score record, bucket move, learning moments and due entry."""
        for key, lead in leads.items():
            if key not in fx.score_records and lead.latest is not None:
                # its last event was a duplicate or late: store the last one that counted
                latest: Scored = lead.latest
                explained = latest.with_score(self._scorer.explained(latest, lead, False))
                self._scorer.store(explained, lead, fx)
            if key in fx.score_records:
                self._scorer.bucket_move(key, lead, fx)
            self._teacher.flush_moment(lead)
            snaps = lead.snaps
            effect = snaps.effect()
            if effect is not None:
                fx.snapshots[key] = effect
            if snaps.loaded or snaps.taken:
                member = f"{key[0]}\x1f{key[1]}"
                oldest = snaps.oldest_ts()
                if snaps.loaded:  # the whole list is known: set (or drop) exactly
                    fx.due[(lead.partition, member)] = None if oldest is None else ("set", oldest)
                elif oldest is not None:  # only new moments known: lower the score if older
                    fx.due[(lead.partition, member)] = ("lt", oldest)
