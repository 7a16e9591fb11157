"""Learning: labelled examples from snapshots, one trainer, versioned models for scorers.

Labels the way a brokerage defines them: a scored moment (a *snapshot*: at most one
per lead per ``snapshot_every_h``, plus one at every hand-raise) is positive if a
positive outcome follows within the horizon H, negative on ``lost`` or when H passes
with no outcome. Expiry is swept per partition in event time, at the first event of
each new event-time day, so it happens at the same point of the stream whatever the
batch boundaries (and a crash-and-replay learns exactly what an uninterrupted run
learns).

Every labelled example goes to the ``labels`` stream in the batch transaction. The
trainer process learns its own partitions' examples inline (at the outcome event,
score first, then learn) and the other processes' examples from the stream; it keeps
its working copy in Redis with each batch and publishes a version every
``publish_every_labels`` labels or ``publish_every_s`` seconds. Every other process
scores with the newest published version, or the pinned one after a rollback.
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
from engine.model_store import ModelStore
from engine.scoring import PRIOR_INPUT, prior_logit
from engine.settings import Settings
from features.definitions import FEATURE_NAMES, model_input, unpack_features

__all__ = ["Learner", "Snapshots", "example"]

log = logging.getLogger(__name__)


def example(
    example_id: str,
    snap: Mapping[str, Any],
    y: bool,
    at: float,
    who: tuple[str, str],
    proc: int,
    names: Sequence[str] = FEATURE_NAMES,
) -> dict[str, Any]:
    """One labelled example: the snapshot's model input, segment, served probability, y."""
    x = snap["x"] if "x" in snap else model_input(unpack_features(snap["f"]), names)
    if snap.get("pr") is not None:
        x[PRIOR_INPUT] = prior_logit(float(snap["pr"]))
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
        "ts": snap["ts"],
        "y": y,
        "at": at,
        "tenant": who[0],
        "lead": who[1],
        "proc": proc,
    }


@dataclass
class Snapshots:
    """A lead's learning snapshots while its events in one batch are processed.

    ``stored`` is what Redis held at the start of the batch (known only once loaded:
    the store returns it with outcome events, the sweep reads it itself); ``taken``
    are snapshots taken in this batch. ``rewrite`` means the stored list must be
    replaced by ``current`` at commit.
    """

    limit: int
    current: list[bytes] = field(default_factory=list)
    loaded: bool = False
    rewrite: bool = False
    taken: list[bytes] = field(default_factory=list)

    def load(self, stored: list[bytes]) -> None:
        if not self.loaded:
            base = [] if self.rewrite else list(stored)
            self.current = (base + self.current)[-self.limit :]
            self.loaded = True

    def take(self, blob: bytes) -> None:
        self.current = (self.current + [blob])[-self.limit :]
        self.taken.append(blob)

    def expire(self, cutoff: float) -> list[dict[str, Any]]:
        """Remove and return the snapshots taken before ``cutoff``.

        Loaded: the whole list is known and is rewritten. Not loaded: only snapshots
        taken in this batch are known; they are dropped from what will be appended.
        """
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
        else:
            self.current = keep
            self.taken = [b for b in self.taken if b in keep]
        return gone

    def replace(self, keep: list[bytes]) -> None:
        """After labelling: only ``keep`` remains (needs :meth:`load` first)."""
        self.current = keep
        self.taken = []
        self.rewrite = True

    def oldest_ts(self) -> float | None:
        if not self.current:
            return None
        return min(float(msgpack.unpackb(b, raw=False)["ts"]) for b in self.current)


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
        self.live = ModelSet.loads(blob) if blob else ModelSet(sc.segments, sc.learning_rate)
        self.serving = self.live
        self.serving_version: int | None = None
        self._next_check = 0.0
        self._last_publish = clock()
        self._last_checkpoint = clock()
        self.catch_up()  # examples learned after the last checkpoint, before a restart
        self.refresh(force=True)

    def reload(self) -> None:
        """Back to what Redis holds, as at a restart: the checkpoint, then the labels after it.

        After a batch failed half-way (Redis unreachable) the live model may have learned
        examples that were never committed; the batch's retry teaches them again, once,
        at the same point of the stream.
        """
        blob = self._store.working_copy() if self.trainer else None
        live = ModelSet.loads(blob) if blob else ModelSet(self._s.segments, self._s.learning_rate)
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
        moved = False
        while True:
            rows = self._store.labels_after(self.live.position)
            for sid, blob in rows:
                self.learn(msgpack.unpackb(blob, raw=False))
                self.live.position = sid
            moved |= bool(rows)
            if len(rows) < 1_000:
                return moved

    def checkpoint_due(self) -> bool:
        """Whether to save the working copy with this batch.

        Not every batch: a checkpoint costs ~40 ms and ~400 KB, and the labels stream
        already holds every example since the last one (:meth:`catch_up` relearns them
        after a restart), so the model never loses a label between checkpoints.
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
            status = live.status()
            meta = {
                "version": live.version,
                "river_version": status["river_version"],
                "labels_seen": status["labels_seen"],
                "published_unix": time.time(),
                "quality": status["served_score"],
                "model_quality": status["model_alone"],
            }
            return live.version, live.dumps(), meta
