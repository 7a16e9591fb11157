"""Stage 5: learning from outcomes, at the moment that predicts (``engine/learning.py``).

Every event but an outcome replaces the lead's latest *moment* (a hand-raise pins it);
the lead's first outcome labels its open moments and they are learned at once (a
positive in a partition that has never seen ``lost`` waits for its horizon: pacing);
at the first event of a new event-time day the horizon settles old moments.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import msgpack

from engine import alerts as rules
from engine.events import HAND_RAISE_TYPES, POSITIVE_OUTCOMES, Event
from engine.learning import Learner, Moments, example
from engine.metrics import Metrics
from engine.scoring import Score
from engine.settings import Settings
from engine.sinks import BatchEffects, Committer
from engine.stages.batch import OUTCOMES, LeadInBatch
from features.definitions import pack_features
from features.store import FeatureReply

__all__ = ["Teacher"]

Leads = dict[tuple[str, str], LeadInBatch]


class Teacher:
    """Labels and settles learning moments; holds the per-partition sweep watermarks and
    pacing flags (reloaded from Redis after a failed batch: :meth:`forget`)."""

    def __init__(
        self, settings: Settings, learner: Learner, committer: Committer, metrics: Metrics
    ) -> None:
        self._s = settings
        self.learner = learner
        self._commit = committer
        self._metrics = metrics
        self._horizon = settings.scoring.label_horizon_d * 86_400.0
        self._watermarks: dict[int, int] | None = None  # partition -> swept event-time day
        self._lost: dict[int, bool] = {}  # partition -> an explicit `lost` was committed
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Drop what may have run ahead of Redis in a failed batch (reloaded when needed)."""
        with self._lock:
            self._watermarks = None
            self._lost = {}

    # -- outcomes ------------------------------------------------------------------------------
    def label_outcome(
        self, event: Event, lead: LeadInBatch, reply: FeatureReply, fx: BatchEffects,
        partition: int,
    ) -> bool:  # fmt: skip
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
        self.flush_moment(lead)
        lead.snaps.load(reply.snapshots)
        hold = y and self._paced(partition)
        if not y:
            self._mark_lost(partition, fx)
        examples, marked = self._labelled(event, lead, y, hold)
        lead.snaps.replace(marked)
        if not examples and not marked:
            m.labels.labels("no_moment").inc()
        learned = False
        for ex in examples:
            fx.labels.append(msgpack.packb(ex, use_bin_type=True))
            m.labels.labels("positive" if ex["y"] else "negative").inc()
            learned |= self.learner.learn(ex)
        return learned

    def _labelled(
        self, event: Event, lead: LeadInBatch, y: bool, hold: bool
    ) -> tuple[list[dict[str, Any]], list[bytes]]:
        """(examples to learn now, moments marked to learn at their horizon)."""
        examples: list[dict[str, Any]] = []
        marked: list[bytes] = []
        who = (event.tenant, event.lead_id)
        names = self._s.features.model_names
        for blob in lead.snaps.current:
            snap = msgpack.unpackb(blob, raw=False)
            label = y and snap["ts"] <= event.ts <= snap["ts"] + self._horizon
            snap["outcome"], snap["outcome_at"] = event.type, event.ts
            if hold:
                snap["y"] = label
                marked.append(msgpack.packb(snap, use_bin_type=True))
            else:
                eid = f"outcome:{event.tenant}:{event.lead_id}:{snap['ts']}"
                examples.append(example(eid, snap, label, event.ts, who, self.learner.process_id,
                                        names))  # fmt: skip
        return examples, marked

    def _paced(self, partition: int) -> bool:
        """Positives wait for their horizon until the partition has seen an explicit ``lost``."""
        return not self._lost_seen(partition)

    def _lost_seen(self, partition: int) -> bool:
        with self._lock:
            if partition not in self._lost:
                self._lost[partition] = partition in self._commit.lost_seen()
            return self._lost[partition]

    def _mark_lost(self, partition: int, fx: BatchEffects) -> None:
        if not self._lost_seen(partition):
            with self._lock:
                self._lost[partition] = True
            fx.lost_seen.add(partition)

    # -- the horizon ---------------------------------------------------------------------------
    def sweep_if_new_day(self, partition: int, ts: float, leads: Leads, fx: BatchEffects) -> bool:
        """At the first event of a new event-time day in a partition, settle old moments.

        A moment whose horizon has passed is learned: positive if an outcome marked it
        so, negative otherwise. Runs at a point fixed by the stream (not by batch
        boundaries) so replays learn the same.
        """
        day = int(ts // 86_400)
        with self._lock:
            if self._watermarks is None:
                self._watermarks = self._commit.watermarks()
            swept = self._watermarks.get(partition)
            if swept is not None and day <= swept:
                return False
            self._watermarks[partition] = day
        fx.watermarks[partition] = day
        if swept is None:
            return False  # first event ever seen here: nothing can be due yet
        expired = self._expired(partition, ts, leads)
        learned = False
        # learn in an order fixed by the data, not by how the due index happens to rank leads
        for ex in sorted(expired, key=lambda e: (e["ts"], e["id"])):
            fx.labels.append(msgpack.packb(ex, use_bin_type=True))
            kind = "positive" if ex["y"] else "negative" if ex.get("outcome") else "expired"
            self._metrics.labels.labels(kind).inc()
            if self.learner.learn(ex):
                learned = True
        return learned

    def _expired(self, partition: int, ts: float, leads: Leads) -> list[dict[str, Any]]:
        """The examples of every moment in ``partition`` whose horizon ended before ``ts``."""
        cutoff = ts - self._horizon
        proc, names = self.learner.process_id, self._s.features.model_names
        expired: list[dict[str, Any]] = []
        due = dict(self._commit.due_leads(partition, cutoff))
        members = set(due)
        for (tenant, lead_id), known in leads.items():  # moments known only in this batch
            if known.partition != partition:
                continue
            # The lead's latest moment, still pending (its next event in the batch could
            # supersede it): taken now, as a batch boundary before this event would have,
            # so a moment that event time superseded is never settled instead.
            self.flush_moment(known)
            if known.snaps.current:
                members.add(f"{tenant}\x1f{lead_id}")
        for member in sorted(members):
            tenant, lead_id = member.split("\x1f", 1)
            key = (tenant, lead_id)
            lead = leads.get(key)
            if lead is None:
                snaps = Moments(self._s.scoring.max_snapshots)
                lead = LeadInBatch(partition, rules.AlertState(), snaps, placeholder=True)
                leads[key] = lead
            if member in due:
                lead.snaps.load(due[member])
            # Not in the due index: nothing stored is old enough to expire, so only the
            # moments known here are looked at, and the stored list is left alone.
            for snap in lead.snaps.expire(cutoff):
                eid = f"settled:{tenant}:{lead_id}:{snap['ts']}"
                y = bool(snap.get("y", False))
                expired.append(example(eid, snap, y, ts, key, proc, names))
        return expired

    # -- moments -------------------------------------------------------------------------------
    def take_moment(
        self, event: Event, features: Mapping[str, float | str], segment: str, score: Score,
        lead: LeadInBatch,
    ) -> None:  # fmt: skip
        """Every event but an outcome replaces the lead's latest moment; a hand-raise pins it.

        No moment after the lead's first outcome: what a converted or lost lead does next
        would teach the model its own label.
        """
        if event.type in OUTCOMES or lead.outcome:
            return
        pinned = event.type in HAND_RAISE_TYPES
        lead.pending = {  # a later event of the batch may supersede it: packed at flush
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
        if pinned:
            self.flush_moment(lead)

    @staticmethod
    def flush_moment(lead: LeadInBatch) -> None:
        snap, lead.pending = lead.pending, None
        if snap is not None:
            snap["f"] = pack_features(snap["f"])
            lead.snaps.take(msgpack.packb(snap, use_bin_type=True), snap["k"] == "h")
