"""The online model: River, learning one labelled example at a time.

Two families behind one interface, chosen with ``scoring.model``:

- ``logistic`` (default): numeric inputs standardised by River's ``StandardScaler``
  (with a variance floor and clipping, so a near-constant feature cannot saturate a
  probability), profile levels (``source=referral``) passed unscaled as one-hots, into
  River's ``LogisticRegression``. Linear, so every score decomposes exactly into
  per-input contributions an agent can read. River learns; an event is scored (and
  explained) from the features by a function compiled per feature list and the model's
  state by input, refreshed after each label: River's arithmetic in River's order, the
  same floats, without building the input dicts (:meth:`OnlineModel.probability_of`).
- ``forest``: River's adaptive random forest (``ARFClassifier``) on the same inputs,
  Platt-calibrated online; its contributions are measured by perturbation (each
  input set back to "no activity"), only for scores someone reads.

The model is scored before it learns from an example (progressive validation), and
learning is idempotent: each example has an id and an id already learned is skipped,
so an outcome replayed after a crash never teaches the model twice. Probabilities are
kept inside [0.001, 0.999]: never a certainty.
"""

from __future__ import annotations

import functools
import math
import pickle
import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import river
from river import drift, forest, linear_model, metrics, optim, preprocessing, utils

from engine.probability import P_MAX, P_MIN, log_odds_blend, sigmoid
from engine.probability import clamp as _clamp
from features.definitions import InputPlan, input_source, model_input

__all__ = ["ModelSet", "OnlineModel", "Quality", "ScoreCalibration", "P_MIN", "P_MAX"]


_REMEMBERED_IDS = 20_000  # learned-example ids kept for idempotency (far more than a replay window)
_VAR_FLOOR = 0.05  # on log1p counts: a feature seen once in 1,000 leads is not a 30-sigma event
_CLIP = 4.0  # standardised inputs are clipped to +-4 sd
_PRIOR_MEMO = 4_096  # calibrated priors remembered between two labels
_KNOTS = (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)  # ScoreCalibration: where g may bend
_RIDGE = 1.0  # each knot's change of slope is held towards 0 with this precision
_RIDGE_MATRIX = np.diag([0.0, 0.0] + [_RIDGE] * len(_KNOTS))
_MIN_SLOPE = 0.05  # the least slope served: the map never flattens an order away


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def is_level(name: str) -> bool:
    """``field=level`` inputs are profile one-hots; everything else is numeric."""
    return "=" in name


def baseline_of(name: str) -> str | None:
    """The "no activity" counterpart of an input: ``source=unknown`` for a level, else None."""
    return name.split("=", 1)[0] + "=unknown" if is_level(name) else None


#: (features, per numeric input: mean, 1 / floored sd, weight, term at 0, standardised 0;
#: weights) -> the sum of weight x standardised input over ``model_input(features)`` in
#: its order, from 0.0 (``dot``), or each input's contribution (``contrib``)
_Dot = Callable[[Mapping[str, Any], tuple[float, ...], Mapping[str, float]], float]
_Contrib = Callable[[Mapping[str, Any], tuple[float, ...], Mapping[str, float]], dict[str, float]]


_CLIPPED = f"({_CLIP!r} if z > {_CLIP!r} else {-_CLIP!r} if z < {-_CLIP!r} else z)"  # as _z


def _dot_source(inputs: tuple[tuple[str, tuple[str, ...] | None], ...]) -> list[str]:
    """``dot``: River's sum, an input whose feature is 0 adding its term at 0 (``t``)."""
    body, n = ["def dot(f, coef, W):", "    g = f.get", "    s = 0.0"], 0
    for name, src in inputs:
        if src is None:  # a profile field: its level's weight x 1.0, nothing at unknown
            body += [f"    lv = g({name!r}) or 'unknown'", "    if lv != 'unknown':",
                     f"        s += W.get({name + '='!r} + format(lv), 0.0) * 1.0"]  # fmt: skip
            continue
        body += [f"    v = f[{name!r}]", "    if v:", *(f"        {line}" for line in src),
                 f"        z = (v - m{n}) * i{n}", f"        s += w{n} * {_CLIPPED}",
                 "    else:", f"        s += t{n}"]  # fmt: skip
        n += 1
    return body + ["    return s"]


def _contrib_source(inputs: tuple[tuple[str, tuple[str, ...] | None], ...]) -> list[str]:
    """``contrib``: :meth:`_Logistic.contributions` (an input at 0 contributes 0: none)."""
    body, n = ["def contrib(f, coef, W):", "    g = f.get", "    out = {}"], 0
    for name, src in inputs:
        if src is None:  # against the field's baseline level, unknown (baseline_of)
            body += [f"    lv = g({name!r}) or 'unknown'", "    if lv != 'unknown':",
                     f"        k = {name + '='!r} + format(lv)",
                     f"        c = W.get(k, 0.0) - W.get({name + '=unknown'!r}, 0.0)",
                     "        if c:", "            out[k] = c"]  # fmt: skip
            continue
        body += [f"    v = f[{name!r}]", "    if v:", *(f"        {line}" for line in src),
                 f"        z = (v - m{n}) * i{n}", f"        c = w{n} * ({_CLIPPED} - o{n})",
                 "        if c:", f"            out[{name!r}] = c"]  # fmt: skip
        n += 1
    return body + ["    return out"]


@functools.lru_cache(maxsize=16)
def _compiled(plan: InputPlan) -> tuple[_Dot, _Contrib] | None:
    """The logistic model's dot product with ``model_input(features, plan)`` and its
    contributions, compiled for ``plan`` (once per feature list) without building the
    input: straight lines per input, and an input whose feature is 0 adds its term at
    0, known in advance (it contributes nothing).

    River's ``predict_proba_one`` adds weight x value over the input dict in its order,
    from 0.0; the compiled sum adds the same terms, made by the same operations
    (``features.definitions.input_source``, :meth:`_Logistic.transform`), in the same
    order, so it is the same float (the contributions likewise). None for a plan it
    cannot mirror (an input twice, or a numeric name that reads as a level).
    """
    inputs = input_source(plan)
    names = [name for name, _ in inputs]
    if len(set(names)) < len(names) or any(is_level(n) for n, src in inputs if src):
        return None
    n = sum(1 for _, src in inputs if src is not None)
    unpack = f"    ({''.join(f'm{i}, i{i}, w{i}, t{i}, o{i}, ' for i in range(n))}) = coef"
    dot, contrib = _dot_source(inputs), _contrib_source(inputs)
    source = "\n".join([*dot[:1], unpack, *dot[1:], *contrib[:1], unpack, *contrib[1:]])
    space: dict[str, Any] = {"log1p": math.log1p}
    exec(compile(source, f"<model of {n} numeric inputs>", "exec"), space)  # noqa: S102
    return cast(_Dot, space["dot"]), cast(_Contrib, space["contrib"])


def _river_sigmoid(z: float) -> float:
    """``river.utils.math.sigmoid`` (the logistic regression's mean function), as it computes."""
    if z < -30:
        return 0.0
    if z > 30:
        return 1.0
    return 1 / (1 + math.exp(-z))


@dataclass(frozen=True, slots=True)
class _Served:
    """What :meth:`_Logistic.proba_of` reads: one model state, for one input plan."""

    plan: InputPlan
    code: tuple[_Dot, _Contrib] | None  # _compiled(plan)
    coef: tuple[float, ...]  # per numeric input: mean, 1 / sd, weight, term at 0, z at 0
    weights: dict[str, float]
    intercept: float


class _Logistic:
    """Scaled numeric inputs + unscaled one-hots -> logistic regression."""

    def __init__(self, learning_rate: float) -> None:
        self.scaler = preprocessing.StandardScaler()
        self.lr = linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), l2=1e-4, intercept_lr=learning_rate
        )
        self._coef: dict[str, tuple[float, float]] = {}  # name -> (mean, 1 / floored sd)
        self._zero: dict[str, float] = {}  # name -> _z(name, 0.0) under the current _coef
        self._served: _Served | None = None  # what predictions from features read

    def __getstate__(self) -> dict[str, Any]:  # caches are not stored
        return {k: v for k, v in self.__dict__.items() if k not in ("_zero", "_served")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._zero = {}
        self._served = None

    def proba_of(self, features: Mapping[str, Any], plan: InputPlan) -> float | None:
        """:meth:`proba` of ``model_input(features, plan)``, to the bit, through the plan's
        compiled dot product (:func:`_compiled`) and the state it reads, made once per
        model state (after each label), not per event. None for a plan that does not
        compile; raises KeyError when ``features`` lacks a numeric input."""
        served = self._serving(plan)
        if served.code is None:
            return None
        dot = served.code[0](features, served.coef, served.weights)
        return _river_sigmoid(dot + served.intercept)

    def contributions_of(
        self, features: Mapping[str, Any], plan: InputPlan
    ) -> dict[str, float] | None:
        """:meth:`contributions` of ``model_input(features, plan)``, likewise compiled."""
        served = self._serving(plan)
        if served.code is None:
            return None
        return served.code[1](features, served.coef, served.weights)

    def _serving(self, plan: InputPlan) -> _Served:
        served = self._served
        if served is not None and served.plan is plan:
            return served
        weights = dict(self.lr.weights)
        default = (0.0, 1.0 / math.sqrt(_VAR_FLOOR))
        coef: list[float] = []
        for name, src in input_source(plan):
            if src is not None:
                w, z0 = weights.get(name, 0.0), self._z(name, 0.0)
                coef += [*self._coef.get(name, default), w, w * z0, z0]
        served = _Served(plan, _compiled(plan), tuple(coef), weights, self.lr.intercept)
        self._served = served
        return served

    def _z(self, name: str, v: float) -> float:
        mean, inv = self._coef.get(name, (0.0, 1.0 / math.sqrt(_VAR_FLOOR)))
        z = (v - mean) * inv
        return _CLIP if z > _CLIP else -_CLIP if z < -_CLIP else z

    def transform(self, x: Mapping[str, float]) -> dict[str, float]:
        coef, default = self._coef, (0.0, 1.0 / math.sqrt(_VAR_FLOOR))
        out: dict[str, float] = {}
        for k, v in x.items():  # the hot path: inlined _z
            if "=" in k:
                out[k] = v
                continue
            mean, inv = coef.get(k, default)
            z = (v - mean) * inv
            out[k] = _CLIP if z > _CLIP else -_CLIP if z < -_CLIP else z
        return out

    def proba(self, x: Mapping[str, float]) -> float:
        return float(self.lr.predict_proba_one(self.transform(x)).get(True, 0.0))

    def learn(self, x: Mapping[str, float], y: bool) -> None:
        numeric = {k: v for k, v in x.items() if not is_level(k)}
        self.scaler.learn_one(numeric)
        means, variances = self.scaler.means, self.scaler.vars
        for k in numeric:  # the scaler's statistics, read once per label, not per prediction
            self._coef[k] = (means[k], 1.0 / math.sqrt(max(variances[k], _VAR_FLOOR)))
        self._zero.clear()  # the scaler moved: the zero baselines are worked out again
        self._served = None  # and the state predictions read
        self.lr.learn_one(self.transform(x), y)

    def contributions(self, x: Mapping[str, float]) -> dict[str, float]:
        """Log-odds of each input against a lead with no activity (exact for a linear model)."""
        w, zero = self.lr.weights, self._zero
        out: dict[str, float] = {}
        for k, v in x.items():
            base = baseline_of(k)
            if base is not None:
                c = w.get(k, 0.0) - w.get(base, 0.0) if k != base else 0.0
            else:
                z0 = zero.get(k)
                if z0 is None:  # once per input and scaler state, not per explained score
                    z0 = zero[k] = self._z(k, 0.0)
                c = w.get(k, 0.0) * (self._z(k, v) - z0)
            if c:
                out[k] = c
        return out


class _Forest:
    """River's adaptive random forest, Platt-calibrated online; contributions by perturbation."""

    def __init__(self, seed: int = 42) -> None:
        self.forest = forest.ARFClassifier(n_models=10, seed=seed)
        self.platt = linear_model.LogisticRegression(
            optimizer=optim.SGD(0.02), initializer=optim.initializers.Constant(1.0), l2=0.0
        )

    def _raw(self, x: Mapping[str, float]) -> float:
        return float(self.forest.predict_proba_one(dict(x)).get(True, 0.0))

    def proba(self, x: Mapping[str, float]) -> float:
        z = _logit(_clamp(self._raw(x)))
        return float(self.platt.predict_proba_one({"z": z}).get(True, 0.0))

    def learn(self, x: Mapping[str, float], y: bool) -> None:
        self.platt.learn_one({"z": _logit(_clamp(self._raw(x)))}, y)
        self.forest.learn_one(dict(x), y)

    def contributions(self, x: Mapping[str, float]) -> dict[str, float]:
        full = _logit(_clamp(self.proba(x)))
        out: dict[str, float] = {}
        for k, v in x.items():
            base = baseline_of(k)
            if (base is None and not v) or k == base:
                continue
            moved = {n: val for n, val in x.items() if n != k}
            if base is not None:
                moved[base] = 1.0
            else:
                moved[k] = 0.0
            c = full - _logit(_clamp(self.proba(moved)))
            if c:
                out[k] = c
        return out


class OnlineModel:
    """Thread-safe wrapper around one model family, with its progressive metrics."""

    def __init__(self, learning_rate: float = 0.05, family: str = "logistic") -> None:
        self.family = family
        self._impl: _Logistic | _Forest = (
            _Forest() if family == "forest" else _Logistic(learning_rate)
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
        """P(positive outcome), or None before the model is ready (the hot path)."""
        if not self.ready:
            return None
        with self._lock:
            return _clamp(self._impl.proba(x))

    def probability_of(self, features: Mapping[str, Any], plan: InputPlan) -> float | None:
        """:meth:`probability` of ``model_input(features, plan)``, the same float; the
        per-event hot path: the logistic model does not build the input (:func:`_compiled`)."""
        if not self.ready:
            return None
        impl = self._impl
        if isinstance(impl, _Logistic):
            try:
                with self._lock:
                    p = impl.proba_of(features, plan)
                if p is not None:
                    return _clamp(p)
            except KeyError:  # a numeric feature missing (model_input reads it as 0)
                pass
        return self.probability(model_input(features, plan))

    def contributions_of(self, features: Mapping[str, Any], plan: InputPlan) -> dict[str, float]:
        """:meth:`contributions` of ``model_input(features, plan)``, the same floats, the
        logistic model without building the input (for the scores that are explained)."""
        if not self.ready:
            return {}
        impl = self._impl
        if isinstance(impl, _Logistic):
            try:
                with self._lock:
                    out = impl.contributions_of(features, plan)
                if out is not None:
                    return out
            except KeyError:  # a numeric feature missing (model_input reads it as 0)
                pass
        return self.contributions(model_input(features, plan))

    def contributions(self, x: Mapping[str, float]) -> dict[str, float]:
        """Log-odds contribution of each input against a lead with no activity."""
        if not self.ready:
            return {}
        with self._lock:
            return self._impl.contributions(x)

    def learn(self, example_id: str, x: Mapping[str, float], y: bool) -> bool:
        """Score, update metrics, then learn; False if this example was already learned."""
        with self._lock:
            if example_id in self._learned_set:
                return False
            if self.ready:
                p = _clamp(self._impl.proba(x))
                self.log_loss.update(y, {True: p, False: 1 - p})
                self.auc.update(y, {True: p, False: 1 - p})
            self._impl.learn(x, y)
            self.labels_seen += 1
            self.positives += int(y)
            if len(self._learned) == self._learned.maxlen:
                self._learned_set.discard(self._learned[0])
            self._learned.append(example_id)
            self._learned_set.add(example_id)
            self.dirty = True
            return True

    def dumps(self) -> bytes:
        """The whole model, metrics and learned ids, for Redis. The ids once (the deque,
        in learning order): the set is the same ids, rebuilt by :meth:`loads`."""
        with self._lock:
            skip = ("_lock", "dirty", "_learned_set")
            state = {k: v for k, v in self.__dict__.items() if k not in skip}
            return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def loads(cls, blob: bytes) -> OnlineModel:
        """Rebuild from :meth:`dumps` (trusted: written only by leadpulse into its own Redis);
        also a blob written before the ids were stored once (it holds the set too)."""
        model = cls.__new__(cls)
        state: dict[str, Any] = pickle.loads(blob)  # noqa: S301
        model.__dict__.update(state)
        if "_learned_set" not in state:
            model._learned_set = set(model._learned)
        model._lock = threading.Lock()
        model.dirty = False
        return model

    def status(self) -> dict[str, float | int | str | None]:
        with self._lock:
            return {
                "family": self.family,
                "labels_seen": self.labels_seen,
                "positives": self.positives,
                "log_loss": self.log_loss.get() if self.labels_seen else None,
                "auc": self.auc.get() if self.labels_seen else None,
            }


class Evidence:
    """Which scorer to trust, from prequential log loss on the last ``window`` labels.

    Each label adds the loss of the (calibrated) points prior and of the model, both
    predicted before the label was learned. ``weight`` (``model_weight``: 0 = the prior
    alone, 1 = the model alone) is proportional to ``exp(-total recent loss)``:
    exponential weights over two experts. The served score blends the two in log-odds
    with it (``engine.probability.log_odds_blend``). A model that is better on the recent
    window takes over; one that is worse hands back to the prior, whatever the label count.
    """

    def __init__(self, window: int = 500) -> None:
        self.losses: deque[tuple[float, float]] = deque(maxlen=window)
        self.weight = 0.0
        self._diff = 0.0  # running sum of (prior loss - model loss) over the window

    def update(self, p_prior: float, p_model: float, y: bool) -> None:
        def loss(p: float) -> float:
            p = _clamp(p)
            return -math.log(p if y else 1 - p)

        if len(self.losses) == self.losses.maxlen:
            old_prior, old_model = self.losses[0]
            self._diff -= old_prior - old_model
        pair = (loss(p_prior), loss(p_model))
        self.losses.append(pair)
        self._diff += pair[0] - pair[1]  # > 0: the model has lost less
        self.weight = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, self._diff))))

    def snapshot(self) -> dict[str, Any]:
        n = len(self.losses)
        return {
            "window": n,
            "model_weight": round(self.weight, 4),
            "prior_log_loss": sum(a for a, _ in self.losses) / n if n else None,
            "model_log_loss": sum(b for _, b in self.losses) / n if n else None,
        }


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
        self._snapshot: tuple[tuple[int, int], dict[str, Any]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_snapshot"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._snapshot = None

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
        """The figures above, kept until the next :meth:`update`, so the publication's
        metadata and the model gauges of the same labels are computed once (callers only
        read it). Kept under the (labels, drifts) it was computed after: :meth:`update`
        moves ``labels`` after the windows, so a snapshot taken while another thread
        updates is recomputed next time instead of kept."""
        key = (self.labels, self.drifts)
        memo = self._snapshot
        if memo is not None and memo[0] == key:
            return memo[1]
        snap = self._compute_snapshot()
        self._snapshot = (key, snap)
        return snap

    def _compute_snapshot(self) -> dict[str, Any]:
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


class Platt:
    """Online Platt scaling of the points prior: ``P(y) = sigmoid(w * logit(p) + b)``, from
    the identity (w 1, b 0), one Newton step a label on a 2x2 precision matrix whose old
    labels fade (``forget``), the usual online logistic regression of two parameters
    (an extended Kalman filter). Deterministic; where one SGD step a label with a free
    intercept wanders (a prior 4x too low came out 2x too high the other way), this
    settles on the maximum-likelihood map of the recent labels. ``strength``: how many
    labels' worth the identity weighs at the start."""

    __slots__ = ("w", "b", "h", "forget")

    def __init__(self, strength: float = 10.0, forget: float = 1.0 - 1.0 / 2_000) -> None:
        self.w, self.b = 1.0, 0.0
        self.h = (strength, 0.0, strength)  # precision: (ww, wb, bb)
        self.forget = forget

    def __getstate__(self) -> tuple[float, float, tuple[float, float, float], float]:
        return self.w, self.b, self.h, self.forget

    def __setstate__(self, state: tuple[float, float, tuple[float, float, float], float]) -> None:
        self.w, self.b, self.h, self.forget = state

    def probability(self, z: float) -> float:
        """The calibrated probability of prior log-odds ``z``."""
        return sigmoid(self.w * z + self.b)

    def learn(self, z: float, y: bool) -> None:
        q = self.probability(z)
        s = max(q * (1.0 - q), 1e-9)
        f, (hww, hwb, hbb) = self.forget, self.h
        hww, hwb, hbb = f * hww + s * z * z, f * hwb + s * z, f * hbb + s
        r = float(y) - q
        det = hww * hbb - hwb * hwb
        if det > 1e-12:
            self.w += (hbb * r * z - hwb * r) / det
            self.b += (hww * r - hwb * r * z) / det
        self.h = (hww, hwb, hbb)


class ScoreCalibration:
    """A monotone map of the served log-odds ``z``: ``P(y) = sigmoid(g(z))``, ``g`` piecewise
    linear with a knot at each whole log-odds from -4 to 3 (probabilities 0.02 to 0.95).

    A linear model keeps adding log-odds where the true rate levels off (leads with many
    intent signals), and an affine map (Platt) cannot bend: ``g`` can. It starts as the
    identity and learns like :class:`Platt`, one Newton step a label on a precision
    matrix whose old labels fade (``forget``), ``z`` re-scored by the current scorers, so
    it maps today's model. Each knot's change of slope is held towards 0 (``_RIDGE``), and
    every segment's slope is served at least ``_MIN_SLOPE``: the map never reverses an
    order (rank, and so AUC at one moment, is unchanged). ``probability`` is the hot path:
    the map is kept as (knot, value, slope) rows, rebuilt after each label.
    """

    __slots__ = ("theta", "h", "forget", "labels", "_rows")

    def __init__(self, strength: float = 10.0, forget: float = 1.0 - 1.0 / 2_000) -> None:
        n = 2 + len(_KNOTS)
        self.theta = np.zeros(n)
        self.theta[1] = 1.0  # g(z) = z
        self.h = np.eye(n) * strength
        self.forget = forget
        self.labels = 0
        self._rows = self._map()

    def __getstate__(self) -> tuple[list[float], list[list[float]], float, int]:
        return self.theta.tolist(), self.h.tolist(), self.forget, self.labels

    def __setstate__(self, state: tuple[list[float], list[list[float]], float, int]) -> None:
        theta, h, self.forget, self.labels = state
        self.theta, self.h = np.array(theta), np.array(h)
        self._rows = self._map()

    @staticmethod
    def _inputs(z: float) -> npt.NDArray[np.float64]:
        return np.array([1.0, z, *(z - k if z > k else 0.0 for k in _KNOTS)])

    def _map(self) -> tuple[tuple[float, float, float], ...]:
        """(knot, g at the knot, slope right of it), the slopes floored; row 0 is left of
        the first knot (its slope extends leftwards)."""
        b, slope = float(self.theta[0]), float(self.theta[1])
        value = b + slope * _KNOTS[0]
        rows = [(_KNOTS[0], value, max(slope, _MIN_SLOPE))]
        for i, knot in enumerate(_KNOTS):
            slope += float(self.theta[2 + i])
            if i:  # g at this knot: the last row's slope over the last segment
                value += rows[-1][2] * (knot - _KNOTS[i - 1])
            rows.append((knot, value, max(slope, _MIN_SLOPE)))
        return tuple(rows)

    def probability(self, p: float) -> float:
        """The calibrated probability of a served probability ``p`` (``p`` itself before
        the first label)."""
        if not self.labels:
            return p
        z = _logit(p)
        rows = self._rows
        knot, value, slope = rows[bisect_right(_KNOTS, z)]
        return _clamp(sigmoid(value + slope * (z - knot)))

    def learn(self, p: float, y: bool) -> None:
        """One label for a served probability ``p`` (as the current scorers give it)."""
        x = self._inputs(_logit(p))
        q = sigmoid(float(self.theta @ x))
        s = max(q * (1.0 - q), 1e-9)
        self.h = self.forget * self.h + s * np.outer(x, x)
        self.theta += np.linalg.solve(self.h + _RIDGE_MATRIX, x * (float(y) - q))
        self.labels += 1
        self._rows = self._map()

    def snapshot(self) -> dict[str, Any]:
        """Labels learned, and the map at a few served probabilities."""
        at = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
        return {"labels": self.labels, "map": {str(p): round(self.probability(p), 4) for p in at}}


class ModelSet:
    """The models a deployment scores with: one per segment (e.g. buyer / seller).

    Learning goes through :meth:`learn`, which first measures the served probability
    (recorded when the moment was taken), the calibrated prior and the model's own
    prediction, then learns, exactly once per example id. The prior and the model are
    both scored prequentially; :attr:`model_weight` (from :class:`Evidence`) is how much
    the served score follows the model. ``position`` is how far this model has consumed
    the labels stream (so the trainer resumes exactly), ``version`` the last published
    version.
    """

    def __init__(
        self,
        segments: tuple[str, ...] = ("all",),
        learning_rate: float = 0.05,
        family: str = "logistic",
        evidence_window: int = 500,
    ) -> None:
        self.models = {seg: OnlineModel(learning_rate, family) for seg in segments}
        # Platt scaling of the points prior: starts as the identity and learns from every
        # label, so the prior's probabilities become honest long before the model carries
        # the score; ranking (AUC) is unchanged by it while its slope stays positive.
        self.prior_calibration = Platt()
        self.prior_labels = 0
        # the served score's own calibration: a monotone map that can level off the top
        self.score_calibration = ScoreCalibration()
        self._prior_memo: dict[float, float] = {}  # raw prior -> calibrated, until it learns
        self.evidence = {seg: Evidence(evidence_window) for seg in segments}
        self.served = Quality()
        self.model_only = Quality()
        self.prior_only = Quality()
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

    def model_weight(self, segment: str) -> float:
        """How much the served score follows the model (0 until it has beaten the prior)."""
        ev = self.evidence.get(segment) or next(iter(self.evidence.values()))
        return ev.weight if self.model(segment).ready else 0.0

    @property
    def labels_seen(self) -> int:
        return sum(m.labels_seen for m in self.models.values())

    def learn(self, example: Mapping[str, Any]) -> tuple[bool, bool]:
        """Learn one labelled example; returns (learned, drift detected)."""
        seg = example["seg"] if example["seg"] in self.models else next(iter(self.models))
        model = self.model(seg)
        y = bool(example["y"])
        x = example["x"]
        p_model = model.probability(x)
        raw_prior = example.get("pr", example.get("pp"))
        p_prior = self.calibrated_prior(float(raw_prior)) if raw_prior is not None else None
        weight = self.model_weight(seg)  # what serving would blend with, before this label
        if not model.learn(example["id"], x, y):
            return False, False
        if p_prior is not None:  # the blend re-scored now, so the map fits today's scorers
            self.score_calibration.learn(log_odds_blend(p_prior, p_model, weight), y)
        drifted = self.served.update(float(example["pb"]), y)
        if p_model is not None:
            self.model_only.update(p_model, y)
        if p_prior is not None:
            self.prior_only.update(p_prior, y)
            if p_model is not None:
                self.evidence[seg].update(p_prior, p_model, y)
            self.prior_calibration.learn(_logit(float(raw_prior)), y)
            self.prior_labels += 1
            self._prior_memo.clear()
        return True, drifted

    def calibrated_prior(self, p: float) -> float:
        """The points prior's probability, Platt-scaled on the labels seen so far."""
        if not self.prior_labels:
            return _clamp(p)
        memo = self._prior_memo  # the per-event hot path: leads share their raw priors
        q = memo.get(p)
        if q is None:
            if len(memo) >= _PRIOR_MEMO:
                memo.clear()
            q = memo[p] = _clamp(self.prior_calibration.probability(_logit(p)))
        return q

    def calibrated_score(self, p: float) -> float:
        """The served probability after the score's own calibration (:class:`ScoreCalibration`)."""
        return self.score_calibration.probability(p)

    def dumps(self) -> bytes:
        state = {k: v for k, v in self.__dict__.items() if k != "_prior_memo"}
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
        obj._prior_memo = {}  # a cache
        if not isinstance(obj.prior_calibration, Platt):  # River's SGD Platt, before 2026-12-07
            old, obj.prior_calibration = obj.prior_calibration, Platt()
            obj.prior_calibration.w = float(old.weights.get("z", 1.0))
            obj.prior_calibration.b = float(old.intercept)
        obj.__dict__.pop("_platt", None)
        if "score_calibration" not in state:  # a blob from before 2026-12-07: the identity
            obj.score_calibration = ScoreCalibration()
        return obj

    def publication_status(self) -> dict[str, Any]:
        """What a published version's metadata records: the served score's and the model's
        quality (the figures :meth:`status` gives for them, from the same snapshots)."""
        return {
            "river_version": river.__version__,
            "labels_seen": self.labels_seen,
            "served_score": self.served.snapshot(),
            "model_alone": self.model_only.snapshot(),
        }

    def status(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "labels_seen": self.labels_seen,
            "river_version": river.__version__,
            "segments": {k: m.status() for k, m in self.models.items()},
            "evidence": {k: e.snapshot() for k, e in self.evidence.items()},
            "served_score": self.served.snapshot(),
            "model_alone": self.model_only.snapshot(),
            "prior_alone": self.prior_only.snapshot(),
            "score_calibration": self.score_calibration.snapshot(),
        }
