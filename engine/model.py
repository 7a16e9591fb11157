"""The online model: River, learning one labelled example at a time.

A ``StandardScaler | LogisticRegression`` pipeline: cheap to predict (~4 us),
linear so every score decomposes into per-feature contributions an agent can
read, and learnable one example at a time. The model is scored before it learns
from an example (progressive validation), and learning is idempotent: each
example has an id and an id already learned is skipped, so an outcome replayed
after a crash never teaches the model twice.
"""

from __future__ import annotations

import math
import pickle
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

import river
from river import compose, drift, linear_model, metrics, optim, preprocessing, utils

__all__ = ["ModelSet", "OnlineModel", "Quality"]


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


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


class Quality:
    """Progressive quality over a rolling window of labelled examples (score first, then learn).

    Tracks what agents act on: AUC, log loss, precision in the top ``top_share`` of
    scores, calibration by score band and expected calibration error (ECE), and an
    ADWIN drift detector on the per-example log loss.
    """

    BANDS = ((0, 50, "P4"), (50, 70, "P3"), (70, 90, "P2"), (90, 101, "P1"))

    def __init__(self, window: int = 2_000, top_share: float = 0.15) -> None:
        self.window = window
        self.top_share = top_share
        self.auc: Any = utils.Rolling(metrics.ROCAUC, window_size=window)
        self.log_loss: Any = utils.Rolling(metrics.LogLoss, window_size=window)
        self.recent: deque[tuple[float, bool]] = deque(maxlen=window)
        self.adwin = drift.ADWIN(delta=0.002)
        self.labels = 0
        self.drifts = 0

    def update(self, p: float, y: bool) -> bool:
        """Add one (probability, outcome); True when ADWIN detects a change in the loss."""
        p = min(max(p, 1e-6), 1 - 1e-6)
        self.auc.update(y, {True: p, False: 1 - p})
        self.log_loss.update(y, {True: p, False: 1 - p})
        self.recent.append((p, y))
        self.labels += 1
        loss = -math.log(p if y else 1 - p)
        self.adwin.update(loss)
        if self.adwin.drift_detected:
            self.drifts += 1
            return True
        return False

    def precision_at_top(self) -> float | None:
        """Share of positives among the top ``top_share`` scores of the window."""
        recent = list(self.recent)  # a copy: other worker threads keep appending
        if len(recent) < 20:
            return None
        ranked = sorted(recent, key=lambda py: -py[0])
        top = ranked[: max(1, int(len(ranked) * self.top_share))]
        return sum(y for _, y in top) / len(top)

    def calibration(self) -> list[dict[str, Any]]:
        """Per score band: examples, mean predicted probability, observed positive rate."""
        out = []
        recent = list(self.recent)
        for lo, hi, name in self.BANDS:
            rows = [(p, y) for p, y in recent if lo <= p * 100 < hi]
            if rows:
                mean_p = sum(p for p, _ in rows) / len(rows)
                rate = sum(y for _, y in rows) / len(rows)
                out.append({"band": name, "n": len(rows), "mean_p": mean_p, "rate": rate})
            else:
                out.append({"band": name, "n": 0, "mean_p": None, "rate": None})
        return out

    def ece(self, bins: int = 10) -> float | None:
        """Expected calibration error: mean |predicted - observed| over equal-width bins."""
        recent = list(self.recent)
        if not recent:
            return None
        total = len(recent)
        err = 0.0
        for b in range(bins):
            lo, hi = b / bins, (b + 1) / bins
            rows = [(p, y) for p, y in recent if lo <= p < hi or (b == bins - 1 and p >= hi)]
            if rows:
                err += (
                    len(rows)
                    / total
                    * abs(sum(p for p, _ in rows) / len(rows) - sum(y for _, y in rows) / len(rows))
                )
        return err

    def snapshot(self) -> dict[str, Any]:
        n = self.labels
        return {
            "labels": n,
            "window": len(self.recent),
            "auc": self.auc.get() if n else None,
            "log_loss": self.log_loss.get() if n else None,
            "precision_top15": self.precision_at_top(),
            "ece": self.ece(),
            "calibration": self.calibration(),
            "drifts": self.drifts,
        }


class ModelSet:
    """The models a deployment scores with: one per segment (e.g. buyer / seller).

    Learning goes through :meth:`learn`, which first measures the served probability
    (recorded when the snapshot was taken) and the model's own prediction, then learns,
    exactly once per example id. ``position`` is how far this model has consumed the
    labels stream (so the trainer resumes exactly), ``version`` the last published
    version.
    """

    def __init__(self, segments: tuple[str, ...] = ("all",), learning_rate: float = 0.05) -> None:
        self.models = {seg: OnlineModel(learning_rate) for seg in segments}
        # Platt scaling of the points prior: starts as the identity (weight 1, intercept 0)
        # and learns from every label, so the prior's probabilities become honest long
        # before the model carries the score; ranking (AUC) is unchanged by it.
        self.prior_calibration = linear_model.LogisticRegression(
            optimizer=optim.SGD(0.05), initializer=optim.initializers.Constant(1.0), l2=0.0
        )
        self.prior_labels = 0
        self.served = Quality()
        self.model_only = Quality()
        self.position = "0-0"
        self.version = 0
        self.labels_at_publish = 0

    def segment_of(self, side: str) -> str:
        """Seller leads score on the seller model when there is one; everyone else on the first."""
        if side == "seller" and "seller" in self.models:
            return "seller"
        if "buyer" in self.models:
            return "buyer"
        return next(iter(self.models))

    def model(self, segment: str) -> OnlineModel:
        return self.models.get(segment) or next(iter(self.models.values()))

    @property
    def labels_seen(self) -> int:
        return sum(m.labels_seen for m in self.models.values())

    def learn(self, example: Mapping[str, Any]) -> tuple[bool, bool]:
        """Learn one labelled example; returns (learned, drift detected)."""
        model = self.model(example["seg"])
        y = bool(example["y"])
        p_model = model.probability(example["x"])
        if not model.learn(example["id"], example["x"], y):
            return False, False
        drifted = self.served.update(float(example["pb"]), y)
        if p_model is not None:
            self.model_only.update(p_model, y)
        raw_prior = example.get("pr", example.get("pp"))
        if raw_prior is not None:
            self.prior_calibration.learn_one({"z": _logit(float(raw_prior))}, y)
            self.prior_labels += 1
        return True, drifted

    def calibrated_prior(self, p: float) -> float:
        """The points prior's probability, Platt-scaled on the labels seen so far."""
        if not self.prior_labels:
            return p
        return float(self.prior_calibration.predict_proba_one({"z": _logit(p)}).get(True, p))

    def dumps(self) -> bytes:
        state = dict(self.__dict__)
        return pickle.dumps(
            {**state, "models": {k: m.dumps() for k, m in self.models.items()}},
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    @classmethod
    def loads(cls, blob: bytes) -> ModelSet:
        """Rebuild from :meth:`dumps` (trusted: written only by leadpulse into its own Redis)."""
        state: dict[str, Any] = pickle.loads(blob)  # noqa: S301
        models = {k: OnlineModel.loads(b) for k, b in state.pop("models").items()}
        obj = cls.__new__(cls)
        obj.__dict__.update(state)
        obj.models = models
        return obj

    def status(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "labels_seen": self.labels_seen,
            "river_version": river.__version__,
            "segments": {k: m.status() for k, m in self.models.items()},
            "served_score": self.served.snapshot(),
            "model_alone": self.model_only.snapshot(),
        }
