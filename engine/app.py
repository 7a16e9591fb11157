"""Wiring: settings + a Redis client -> the engine's parts, ready for a dataflow.

Every entry point (``run``, ``replay``, ``demo``, tests) builds the engine here, so
they all run the same code.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine.dataflow import EngineParts
from engine.learning import Learner
from engine.metrics import Metrics
from engine.model_store import ModelStore
from engine.processor import Processor
from engine.settings import Settings
from engine.sinks import Committer
from engine.streams import stream_names
from features.store import FeatureStore

if TYPE_CHECKING:  # redis-py is used by the store and stream modules, not here
    import redis

__all__ = ["build_parts"]

log = logging.getLogger(__name__)


def build_parts(
    settings: Settings,
    client: redis.Redis,
    metrics: Metrics | None = None,
    process_id: int = 0,
) -> EngineParts:
    """Assemble store, committer, model (resumed from Redis if saved) and processor."""
    names = stream_names(settings)
    committer = Committer(
        client,
        names,
        alerts_maxlen=settings.streams.alerts_maxlen,
        dead_letter_maxlen=settings.streams.dead_letter_maxlen,
        max_snapshots=settings.scoring.max_snapshots,
        idle_expire_s=int(settings.features.idle_expire_d * 86_400),
        retain_processed_s=settings.streams.retain_processed_s,
    )
    metrics = metrics or Metrics.create()
    learner = Learner(
        settings,
        ModelStore(client, settings.redis.key_prefix),
        process_id,
        on_drift=metrics.model_drift.inc,
    )
    if learner.live.labels_seen:
        log.info("resumed model with %d labels", learner.live.labels_seen)
    store = FeatureStore(client, settings.features, names, settings.streams.partitions)
    processor = Processor(settings, store, committer, learner, metrics)
    return EngineParts(
        processor=processor,
        client=client,
        names=names,
        read_count=settings.streams.read_count,
        idle_poll_ms=settings.streams.idle_poll_ms,
        tick_ms=settings.cadence.tick_ms if settings.cadence.enabled else 0,
    )
