"""Learning: labelled examples from the moments that predict, one trainer, versioned models.

A *moment* is a lead's feature vector as it was served, with what was served. Every
event (but an outcome) replaces the lead's latest moment; a hand-raise also pins its
moment, so it is kept. An outcome therefore labels the vector as it stood just
before the outcome (plus the pinned hand-raise moments of the horizon H before it):
the model learns from the vectors it scores, never from an empty one taken at sign-up.

- An explicit outcome (positive, or ``lost``) is learned at once, in the batch that
  carries it. The lead's first outcome wins: later outcomes, and later events, make no
  example (a converted or lost lead's behaviour would teach the model its own label).
- Leads that never get an outcome: when H passes after a moment with no outcome, the
  moment is learned as a negative (the expiry sweep, in event time, at the first event
  of each new event-time day of a partition, so a replay learns exactly what an
  uninterrupted run learns).
- Pacing: a stream that sends only positives (a funnel with won dates and no ``lost``)
  would teach the model positives at once and their negatives only H later: recent
  positives against old negatives, a model that starts far too high and confuses
  "recent" with "converts". Until a partition has seen an explicit ``lost``, a positive
  is therefore held and learned at its moment's horizon, with the negatives of its
  period (the pace of the negatives). From the first ``lost`` on, explicit outcomes are
  learned at once.

Every labelled example goes to the ``labels`` stream in the batch transaction. The
trainer process learns its own partitions' examples inline and the other processes'
examples from the stream; it keeps its working copy in Redis with each batch and
publishes a version every ``publish_every_labels`` labels or ``publish_every_s``
seconds. Every other process scores with the newest published version, or the pinned
one after a rollback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from engine.model import ModelSet
from engine.model_store import LABELS_READ, ModelStore
from engine.settings import Settings
from features.definitions import FEATURE_NAMES, model_input, unpack_features

__all__ = ["Learner", "Moments", "Snapshots", "example"]

log = logging.getLogger(__name__)


def _stream_id(sid: str) -> tuple[int, int]:
    """A stream id (``ms-seq``) as a pair that orders as Redis orders them."""
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


def example(
    example_id: str,
    snap: Mapping[str, Any],
    y: bool,
    at: float,
    who: tuple[str, str],
    proc: int,
    names: Sequence[str] = FEATURE_NAMES,
) -> dict[str, Any]:
    """One labelled example: the moment's model input, segment, what was served, y."""
    x = snap["x"] if "x" in snap else model_input(unpack_features(snap["f"]), names)
    return {
        "id": example_id,
        "seg": snap["seg"],
        "x": x,
        "outcome": snap.get("outcome"),
        "outcome_at": snap.get("outcome_at"),
        "pb": snap["pb"],
        "pp": snap.get("pp"),
        "pr": snap.get("pr"),
        "pm": snap.get("pm"),
        "bucket": snap.get("bk"),
        "kind": "hand_raise" if snap.get("k") == "h" else "latest",
        "ts": snap["ts"],
        "y": y,
        "at": at,
        "tenant": who[0],
        "lead": who[1],
        "proc": proc,
    }


def _pinned(blob: bytes) -> bool:
    return bool(msgpack.unpackb(blob, raw=False).get("k") == "h")


@dataclass
class Moments:
    """A lead's learning moments while its events in one batch are processed.

    The stored list ends with the lead's latest moment; ``tail_latest`` says whether that
    last moment is a plain "latest" one (replaced by the next event) rather than a pinned
    hand-raise. ``loaded`` once the stored list is known (outcome events and the sweep
    read it); then ``current`` is the whole list and ``rewrite`` replaces it at commit.
    Not loaded, ``taken`` is appended at commit, after dropping the stored tail if
    ``drop_tail`` (it was superseded in this batch).
    """

    limit: int
    tail_latest: bool = False
    current: list[bytes] = field(default_factory=list)
    loaded: bool = False
    rewrite: bool = False
    drop_tail: bool = False
    taken: list[bytes] = field(default_factory=list)

    def load(self, stored: list[bytes]) -> None:
        if self.loaded:
            return
        base = [] if self.rewrite else list(stored)
        if self.drop_tail and base:
            base = base[:-1]
        self.current = (base + self.taken)[-self.limit :]
        self.loaded, self.rewrite, self.drop_tail, self.taken = True, True, False, []
        self.tail_latest = bool(self.current) and not _pinned(self.current[-1])

    def take(self, blob: bytes, pinned: bool) -> None:
        """The lead's newest moment: replaces a plain latest one, or is added after a pin."""
        if self.tail_latest:
            if self.current:
                self.current.pop()
                if self.taken:
                    self.taken.pop()
            elif not self.loaded:
                self.drop_tail = True  # the superseded moment is the stored tail
        self.current = (self.current + [blob])[-self.limit :]
        if not self.loaded:
            self.taken.append(blob)
        self.tail_latest = not pinned

    def expire(self, cutoff: float) -> list[dict[str, Any]]:
        """Remove and return the moments taken before ``cutoff``."""
        gone: list[dict[str, Any]] = []
        keep: list[bytes] = []
        for blob in self.current:
            snap = msgpack.unpackb(blob, raw=False)
            if snap["ts"] < cutoff:
                gone.append(snap)
            else:
                keep.append(blob)
        if not gone:
            return []
        if self.loaded:
            self.replace(keep)
        else:  # only this batch's moments are known: they are dropped from what is appended
            self.current = keep
            self.taken = [b for b in self.taken if b in keep]
        return gone

    def replace(self, keep: list[bytes]) -> None:
        """After labelling: only ``keep`` remains (needs :meth:`load` first)."""
        self.current = keep
        self.taken = []
        self.rewrite = True
        self.tail_latest = bool(keep) and not _pinned(keep[-1])

    def oldest_ts(self) -> float | None:
        if not self.current:
            return None
        return min(float(msgpack.unpackb(b, raw=False)["ts"]) for b in self.current)

    def effect(self) -> tuple[str, list[bytes]] | None:
        """What the commit does to the stored list: rewrite, append or replace its tail."""
        if self.rewrite:
            return "rewrite", self.current
        if self.taken:
            return ("replace_tail" if self.drop_tail else "append"), self.taken
        return None


Snapshots = Moments  # the older name, kept for readers of earlier versions


class Learner:
    """Owns the models of one process: the live (learning) copy and the serving copy."""

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        process_id: int,
        on_drift: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        sc = settings.scoring
        self._s = sc
        self._store = store
        self.process_id = process_id
        self.trainer = process_id == sc.trainer_process
        self._clock = clock
        self._on_drift = on_drift or (lambda: None)
        self.lock = threading.RLock()
        blob = store.working_copy() if self.trainer else None
        self.live = ModelSet.loads(blob) if blob else self._fresh()
        self.serving = self.live
        self.serving_version: int | None = None
        self._next_check = 0.0
        self._moved = False  # the position moved after a batch's commit (caught_up)
        self._more = False  # ... and that read was full: read on before the next batch
        self._last_publish = clock()
        self._last_checkpoint = clock()
        self.catch_up()  # examples learned after the last checkpoint, before a restart
        self.refresh(force=True)

    def _fresh(self) -> ModelSet:
        sc = self._s
        return ModelSet(sc.segments, sc.learning_rate, sc.model, sc.evidence_window)

    def reload(self) -> None:
        """Back to what Redis holds, as at a restart: the checkpoint, then the labels after it.

        After a batch failed half-way (Redis unreachable) the live model may have learned
        examples that were never committed; the batch's retry teaches them again, once,
        at the same point of the stream.
        """
        blob = self._store.working_copy() if self.trainer else None
        live = ModelSet.loads(blob) if blob else self._fresh()
        with self.lock:
            self.live = live
            self.serving, self.serving_version = live, None
        self.catch_up()
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        """Pick up a pinned or newer published version (at most every ``model_check_s``)."""
        now = self._clock()
        if not force and now < self._next_check:
            return
        self._next_check = now + self._s.model_check_s
        info = self._store.info()
        target = info.pinned if info.pinned is not None else None
        if target is None and not self.trainer and info.current:
            target = info.current
        with self.lock:
            if target is None:
                self.serving, self.serving_version = self.live, None
            elif target != self.serving_version:
                blob = self._store.version_blob(target)
                if blob is not None:
                    self.serving, self.serving_version = ModelSet.loads(blob), target
                    log.info("scoring with model version %d", target)

    def learn(self, ex: Mapping[str, Any]) -> bool:
        """Learn one example if this process is the trainer (exactly once per id)."""
        if not self.trainer:
            return False
        with self.lock:
            learned, drifted = self.live.learn(ex)
        if drifted:
            log.warning(
                "model drift: ADWIN saw the served score's log loss change after %d labels; "
                "check `leadpulse model status` and consider `leadpulse model rollback`",
                self.live.served.labels,
            )
            self._on_drift()
        return learned

    def catch_up(self) -> bool:
        """Trainer: learn every example on the labels stream after the model's position.

        Examples this process already learned inline are skipped by id; the others (from
        other processes, or learned after the last checkpoint before a restart) are
        learned now, in stream order. True if the position moved.
        """
        if not self.trainer:
            return False
        with self.lock:
            moved, self._moved, self._more = self._moved, False, False
        while True:
            rows = self._store.labels_after(self.live.position)
            moved |= self._learn_rows(rows)
            if len(rows) < LABELS_READ:
                return moved

    def _learn_rows(self, rows: Sequence[tuple[str, bytes]], since: str | None = None) -> bool:
        """Learn the labels stream's ``rows`` (in stream order; by id, exactly once) and move
        the position past them, never back. ``since``: the position the rows were read after;
        if the live model is behind it (a worker :meth:`reload`-ed it meanwhile) they are left
        to that reload's catch-up, which reads from the older position. True if it moved."""
        with self.lock:  # (workers of a process share the model)
            live = self.live
            if since is not None and _stream_id(live.position) < _stream_id(since):
                return False
            moved = False
            for sid, blob in rows:
                self.learn(msgpack.unpackb(blob, raw=False))
                if _stream_id(sid) > _stream_id(live.position):
                    live.position, moved = sid, True
            return moved

    def catch_up_in_commit(self) -> str | None:
        """The position the batch's transaction reads the labels stream after (None: not the
        trainer). The read rides in the commit instead of a round trip of its own before
        each batch (``Committer.commit``); :meth:`caught_up` learns what it found, and the
        next batch's :meth:`catch_up_pending` reports that (and reads on if the read was
        full). What the read taught the model is checkpointed and published with the next
        batch's commit (``engine/stages/commit.py``)."""
        return self.live.position if self.trainer else None

    def caught_up(self, rows: Sequence[tuple[str, bytes]], since: str) -> None:
        """The labels after ``since`` (:meth:`catch_up_in_commit`'s position), as the batch's
        committed transaction read them (its own, learned inline: skipped by id; the other
        processes'). A full read leaves the rest to the next :meth:`catch_up_pending`."""
        moved = self._learn_rows(rows, since)
        with self.lock:
            self._moved |= moved
            self._more |= len(rows) >= LABELS_READ

    def catch_up_pending(self) -> bool:
        """Before a batch whose previous commit read the labels (:meth:`caught_up`): whether
        the position moved since, reading the stream only if that read was full."""
        with self.lock:
            more, moved = self._more, self._moved
            self._more = self._moved = False
        return self.catch_up() or moved if more else moved

    def checkpoint_due(self) -> bool:
        """Whether to save the working copy with this batch.

        Not every batch: a checkpoint costs ~4 ms to serialise and ~1 MB written in the
        batch's transaction once the model remembers 20,000 learned ids (two segments,
        full quality windows; measured 2026-12-07), and the labels stream already holds
        every example since the last one (:meth:`catch_up` relearns them after a
        restart), so the model never loses a label between checkpoints.
        """
        return self._clock() - self._last_checkpoint >= self._s.checkpoint_every_s

    def checkpointed(self) -> None:
        self._last_checkpoint = self._clock()

    def publication(self) -> tuple[int, bytes, dict[str, Any]] | None:
        """A new version to publish now, if enough labels or time have passed."""
        live = self.live
        new = live.labels_seen - live.labels_at_publish
        if not self.trainer or new <= 0:
            return None
        elapsed = self._clock() - self._last_publish
        if new < self._s.publish_every_labels and elapsed < self._s.publish_every_s:
            return None
        with self.lock:
            live.version += 1
            live.labels_at_publish = live.labels_seen
            self._last_publish = self._clock()
            status = live.publication_status()
            meta = {
                "version": live.version,
                "river_version": status["river_version"],
                "labels_seen": status["labels_seen"],
                "published_unix": time.time(),
                "quality": status["served_score"],
                "model_quality": status["model_alone"],
            }
            return live.version, live.dumps(), meta
