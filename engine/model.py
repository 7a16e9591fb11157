"""The online model: River, learning one labelled example at a time.

A ``StandardScaler | LogisticRegression`` pipeline: cheap to predict (~4 us),
linear so every score decomposes into per-feature contributions an agent can
read, and learnable one example at a time. The model is scored before it learns
from an example (progressive validation), and learning is idempotent: each
example has an id and an id already learned is skipped, so an outcome replayed
after a crash never teaches the model twice.
"""

from __future__ import annotations

import pickle
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from river import compose, linear_model, metrics, optim, preprocessing

__all__ = ["OnlineModel"]


_REMEMBERED_IDS = 20_000  # learned-example ids kept for idempotency (far more than a replay window)


class OnlineModel:
    """Thread-safe wrapper around the River pipeline, with its progressive metrics."""

    def __init__(self, learning_rate: float = 0.05) -> None:
        self._pipeline = compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), l2=1e-4),
        )
        self.labels_seen = 0
        self.positives = 0
        self.log_loss = metrics.LogLoss()
        self.auc = metrics.ROCAUC()
        self._learned: deque[str] = deque(maxlen=_REMEMBERED_IDS)
        self._learned_set: set[str] = set()
        self._lock = threading.Lock()
        self.dirty = False

    @property
    def ready(self) -> bool:
        """True once both classes were seen: before that the model cannot rank."""
        return self.positives > 0 and self.labels_seen > self.positives

    def predict(self, x: Mapping[str, float]) -> tuple[float | None, dict[str, float]]:
        """(probability, log-odds contribution per input) or (None, {}) if not ready."""
        p = self.probability(x)
        return (None, {}) if p is None else (p, self.contributions(x))

    def probability(self, x: Mapping[str, float]) -> float | None:
        """P(positive outcome), or None before the model is ready (the hot path: ~5 us)."""
        if not self.ready:
            return None
        with self._lock:
            p = self._pipeline.predict_proba_one(x)  # type: ignore[arg-type]
            return float(p.get(True, 0.0))

    def contributions(self, x: Mapping[str, float]) -> dict[str, float]:
        """Log-odds contribution of each input: weight x standardised value."""
        if not self.ready:
            return {}
        with self._lock:
            scaled = self._scaler.transform_one(dict(x))
            weights = self._lr.weights
            return {k: weights.get(k, 0.0) * v for k, v in scaled.items() if v}

    @property
    def _lr(self) -> Any:
        return self._pipeline["LogisticRegression"]

    @property
    def _scaler(self) -> Any:
        return self._pipeline["StandardScaler"]

    def learn(self, example_id: str, x: Mapping[str, float], y: bool) -> bool:
        """Score, update metrics, then learn; False if this example was already learned."""
        with self._lock:
            if example_id in self._learned_set:
                return False
            if self.ready:
                p = self._pipeline.predict_proba_one(dict(x)).get(True, 0.0)
                self.log_loss.update(y, {True: p, False: 1 - p})
                self.auc.update(y, {True: p, False: 1 - p})
            self._pipeline.learn_one(dict(x), y)
            self.labels_seen += 1
            self.positives += int(y)
            if len(self._learned) == self._learned.maxlen:
                self._learned_set.discard(self._learned[0])
            self._learned.append(example_id)
            self._learned_set.add(example_id)
            self.dirty = True
            return True

    def dumps(self) -> bytes:
        """The whole model, metrics and learned ids, for Redis."""
        with self._lock:
            state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "dirty")}
            return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def loads(cls, blob: bytes) -> OnlineModel:
        """Rebuild from :meth:`dumps` (trusted: written only by leadpulse into its own Redis)."""
        model = cls.__new__(cls)
        state: dict[str, Any] = pickle.loads(blob)  # noqa: S301
        model.__dict__.update(state)
        model._lock = threading.Lock()
        model.dirty = False
        return model

    def status(self) -> dict[str, float | int | None]:
        with self._lock:
            return {
                "labels_seen": self.labels_seen,
                "positives": self.positives,
                "log_loss": self.log_loss.get() if self.labels_seen else None,
                "auc": self.auc.get() if self.labels_seen else None,
            }
