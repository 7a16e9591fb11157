"""Stage 7: every effect of the batch in one transaction, then the metrics of what landed."""

from __future__ import annotations

import operator
import time
from collections import Counter

from engine.learning import Learner
from engine.metrics import Metrics
from engine.sinks import BatchEffects, Committer

__all__ = ["Observer", "commit_batch"]

_KIND = operator.itemgetter("kind")  # of a step's ``lp:cadence`` entry (engine/cadence/runner.py)


def commit_batch(committer: Committer, learner: Learner, fx: BatchEffects, learned: bool) -> None:
    """Commit ``fx``; with what the model learned (published or checkpointed) if it learned."""
    if learned and learner.trainer:
        # Workers share the model: dump and commit under one lock, or an older dump
        # committed after a newer one would roll the saved model back.
        with learner.lock:
            fx.publish = learner.publication()
            if fx.publish is not None or learner.checkpoint_due():
                fx.model_work = fx.publish[1] if fx.publish else learner.live.dumps()
                fx.learned_to = learner.live.position
                learner.checkpointed()
            committer.commit(fx)
    else:
        committer.commit(fx)


class Observer:
    """Metrics after the commit: they count what really landed."""

    def __init__(self, metrics: Metrics, committer: Committer, learner: Learner) -> None:
        self._m = metrics
        self._commit = committer
        self._learner = learner
        self._model_changed = False
        self._next_lag = 0.0
        metrics.scrape_hooks.append(self.refresh_model_gauges)

    def refresh_model_gauges(self) -> None:
        """The model's quality gauges, computed when /metrics is scraped (``status()`` costs
        milliseconds with full windows) and only if the model learned since the last one."""
        if not self._model_changed:
            return
        self._model_changed = False
        with self._learner.lock:
            status = self._learner.live.status()
        self._m.observe_model(status, self._learner.serving_version)

    def observe(
        self, n: int, fx: BatchEffects, duplicates: int, emit_ms: int, learned: bool,
        started: float,
    ) -> None:  # fmt: skip
        m = self._m
        m.events_in.inc(n)
        m.batch_size.observe(n)
        m.duplicates.inc(duplicates)
        for dead in fx.dead_letters:
            m.rejected.labels(dead["reason"].split(":", 1)[0]).inc()
        if fx.cadence is not None and fx.cadence.steps:  # one label lookup per kind, not step
            kinds = Counter(map(_KIND, fx.cadence.steps))  # (every entry has its kind)
            for kind, n in kinds.items():
                m.cadence_steps.labels(kind).inc(n)
        for alert in fx.alerts:
            m.alert_latency.observe(max(0.0, (emit_ms - alert.ingest_ms) / 1000.0))
            for trigger in alert.triggers:
                m.alerts.labels(trigger.split(":", 1)[0]).inc()
        now = time.monotonic()
        if now >= self._next_lag:  # one round trip, at most once a second
            self._next_lag = now + 1.0
            for partition, lag in self._commit.lag(fx.positions).items():
                m.stream_lag.labels(str(partition)).set(lag)
        if learned:
            self._model_changed = True  # the gauges follow at the next scrape
        m.batch_seconds.observe(time.perf_counter() - started)
