"""Quality benchmark (issue 3, section 7): the online model against the rules and batch models.

Three datasets, each replayed through the real engine (``engine.replay.replay_file``:
the same Bytewax dataflow as ``leadpulse run``, event time from ``ts``):

- ``simulator``: the seeded IDX simulator (``benchmarks/simulator.py``), whose leads
  convert with a known latent intent;
- ``diginetica``: the real DIGINETICA click log (``benchmarks/diginetica.py``),
  sessions as leads, views as property views, purchases as ``appointment_set``;
- ``online_shoppers``: 12,330 real web sessions with a purchase outcome
  (``benchmarks/online_shoppers.py``): sessions as leads, product pages as property
  views, other pages as page views, a purchase as ``appointment_set``, no purchase as
  ``lost``; traffic and visitor type as declared profile fields
  (``benchmarks/data/online_shoppers/leadpulse.toml``); ``PageValues`` (computed from
  later transactions: it leaks the outcome) left out. Split by month: the test set is
  October to December.

Every labelled example the engine produced is read back from the ``<prefix>:labels``
stream: the model input ``x`` at the scored moment ``ts``, the label ``y`` known at
``at`` (outcome, ``lost`` or horizon expiry) and what was served at ``ts``: ``pb``
(the prior/model blend an agent saw), ``pp`` (the points prior alone) and ``pm`` (the
online model alone). The engine scores before it learns, so ``pb`` and ``pm`` are
honest forward predictions (progressive validation).

The comparison, on one forward-in-time split per dataset:

- *evaluable* examples are those whose whole label horizon H lies inside the data
  (``ts <= end - H``); later ones are censored (an outcome could still come; only the
  ones that got one would be labelled, which would inflate the positive rate), so they
  are dropped. A synthetic ``page_view`` of a dummy lead ``FLUSH_AFTER_D`` days after
  the last event lets the daily expiry sweep label every open snapshot.
- *test*: evaluable examples whose scored moment is in the last ``TEST_SHARE`` (30 %)
  of their event-time range (Online Shoppers: from October 1st).
- *train* (batch models only): examples whose label was known before the split
  (``at < split``), i.e. what a batch job run at the split time could have used.
- models: ``points_prior`` (the seeds' rule-based points score, ``pp``),
  ``online_served`` (``pb``), ``online_model`` (``pm``, where the model was ready),
  ``batch_lr`` (scikit-learn ``StandardScaler`` + ``LogisticRegression``) and
  ``batch_gbm`` (``HistGradientBoostingClassifier``) trained on the same ``x``; and,
  as a diagnostic only, ``batch_lr_matured``: the same LR trained only on examples
  whose horizon was over by the split (every label final, none missing), which shows
  how much the early arrival of positives biases what is learnt before the split.
- metrics: ROC AUC, precision in the top 15 % of scores, expected calibration error
  (10 equal-width bins), Brier score, log loss; a lead-clustered bootstrap interval
  for the AUC differences the targets are about; for the served score, the ECE a
  perfectly calibrated score would measure on the same test set (its noise floor) and
  the ECE after the best intercept shift or Platt map refitted on the test set itself
  (an oracle bound on what any affine recalibration, e.g. a base-rate correction for
  late negatives, could reach).

Targets (issue 3): online AUC within 0.02 of the batch logistic regression, ahead of
the rule-based score by at least 0.05, ECE <= 0.05 — judged on ``online_served``.

Run: ``python -m benchmarks.quality [--small] [--out DIR] [--redis-url URL]``, or
``run(quick=...)`` from ``leadpulse bench``. Writes ``quality.json``, ``quality.md``
and ``quality_reliability.png`` (``quality_small*`` in small mode) to ``--out``
(default ``benchmarks/results``). Without ``--redis-url``/``REDIS_URL`` a private
embedded Valkey is started; on a shared server each replay uses a fresh key prefix
and deletes its keys afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import msgpack
import numpy as np
import numpy.typing as npt

from benchmarks import diginetica, online_shoppers
from benchmarks.simulator import SimConfig, generate, write_jsonl
from engine.evaluation import (
    ECE_BINS,
    TOP_SHARE,
    auc,
    brier,
    ece,
    log_loss,
    metrics,
    precision_at_top,
    reliability,
)

__all__ = [
    "MODELS",
    "RESULTS",
    "add_parser",
    "auc",
    "brier",
    "ece",
    "log_loss",
    "main",
    "precision_at_top",
    "reliability",
    "run",
    "run_args",
    "run_quality",
]

RESULTS = Path(__file__).resolve().parent / "results"
TEST_SHARE = 0.30  # the last 30 % of event time is the test split
FLUSH_AFTER_D = diginetica.FLUSH_AFTER_D
DAY = 86_400.0

#: Model key -> what it is, in table order.
MODELS: dict[str, str] = {
    "points_prior": "rule-based points score (seeds), `pp`",
    "online_served": "online model as served (prior/model blend), `pb`",
    "online_model": "online model alone, `pm` (where ready)",
    "online_forest": 'online forest as served (`scoring.model = "forest"`, a second replay)',
    "batch_lr": "batch StandardScaler + LogisticRegression",
    "batch_gbm": "batch HistGradientBoostingClassifier",
    "batch_lr_matured": "diagnostic: batch LR on matured labels only (horizon over by the split)",
}
#: Rows the targets are judged on or compared with; the others are diagnostics.
TARGET_ROWS = ("points_prior", "online_served", "batch_lr")

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


# -- metrics: engine/evaluation.py (re-exported: auc, ece, precision_at_top, ...) -----------


# -- replay through the engine ---------------------------------------------------------------


@dataclass
class Replayed:
    """The labelled examples of one replay, and how it went."""

    examples: list[dict[str, Any]]
    events: int
    seconds: float
    duplicates: int  # the same snapshot labelled more than once (should be 0)
    horizon_d: float  # the label horizon H the engine ran with
    live_quality: dict[str, Any] = field(default_factory=dict)
    train_serve: dict[str, Any] = field(default_factory=dict)  # see :func:`train_serve`


def _settings(
    prefix: str, overrides: Mapping[str, Mapping[str, Any]], config: Path | None = None
) -> Any:
    from engine.settings import load_settings

    sections: dict[str, Any] = {
        "redis": {"key_prefix": prefix},
        # one stream partition: every event, label and sweep in event-time order, so the
        # model that scores an event has learned exactly the labels known before it
        "streams": {"partitions": 1},
    }
    for name, values in overrides.items():
        sections[name] = {**sections.get(name, {}), **values}
    return load_settings(config, overrides=sections, environ={})


def replay_labels(
    events: Sequence[dict[str, Any]],
    redis_url: str,
    work_dir: Path,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    config: Path | None = None,
    check: bool = True,
) -> Replayed:
    """Write ``events`` as contract-v1 JSONL, replay it (with the override file ``config``,
    if any), return the labelled examples (and, with ``check``, the :func:`train_serve`
    check of the replay)."""
    from engine.model import ModelSet
    from engine.model_store import ModelStore
    from engine.redis_client import connect
    from engine.replay import replay_file

    prefix = "qb" + uuid.uuid4().hex[:10]
    settings = _settings(prefix, overrides or {}, config)
    path = work_dir / f"{prefix}.jsonl"
    count = write_jsonl(path, events)
    client = connect(redis_url)
    try:
        started = time.perf_counter()
        code = replay_file(
            str(path), str(work_dir / f"{prefix}.scores.jsonl"), redis_url=redis_url,
            settings=settings,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"replay of {path} failed with exit code {code}")
        store = ModelStore(client, prefix)
        examples, duplicates = _read_examples(client, store.keys.labels)
        blob = store.working_copy()
        live = ModelSet.loads(blob).status()["served_score"] if blob else {}
        horizon = float(settings.scoring.label_horizon_d)
        sc = settings.scoring
        fresh = ModelSet(sc.segments, sc.learning_rate, sc.model, sc.evidence_window)
        learned = _read_examples(client, store.keys.labels, every=True)[0] if check else []
        return Replayed(examples, count, seconds, duplicates, horizon, live,
                        train_serve(learned, fresh) if check else {})  # fmt: skip
    finally:
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1_000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()
        for leftover in work_dir.glob(f"{prefix}*"):
            leftover.unlink()


def with_forest(
    examples: list[dict[str, Any]],
    events: Sequence[dict[str, Any]],
    redis_url: str,
    work_dir: Path,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    config: Path | None = None,
) -> list[dict[str, Any]]:
    """The same events replayed with ``scoring.model = "forest"``: each example gets the
    forest's served probability as ``pf`` (same moments and labels: joined by moment)."""
    sections = {k: dict(v) for k, v in (overrides or {}).items()}
    sections["scoring"] = {**sections.get("scoring", {}), "model": "forest"}
    forest = replay_labels(events, redis_url, work_dir, sections, config, check=False)
    served = {(ex["tenant"], ex["lead"], ex["ts"]): ex["pb"] for ex in forest.examples}
    return [dict(ex, pf=served.get((ex["tenant"], ex["lead"], ex["ts"]))) for ex in examples]


def relearned(
    examples: Sequence[Mapping[str, Any]], models: Any
) -> list[tuple[float | None, float | None]]:
    """(served ``pm``, ``pm`` predicted again) for every example, in event-time order.

    ``models`` (a fresh ``ModelSet`` with the replay's settings) learns the labels
    stream's examples in stream order; each moment is predicted once it has learned what
    the engine had learned when it scored that moment: the examples labelled before its
    event, and the daily sweep's, which settles at the first event of a new day *before*
    that event is scored (same ``at`` as the moment's ``ts``).
    """
    pairs: list[tuple[float | None, float | None]] = []
    learned = 0
    for ex in sorted(examples, key=lambda e: e["ts"]):
        while learned < len(examples):
            nxt = examples[learned]
            swept_first = nxt["at"] == ex["ts"] and str(nxt["id"]).startswith("settled:")
            if not (nxt["at"] < ex["ts"] or swept_first):
                break
            models.learn(nxt)
            learned += 1
        pairs.append((ex.get("pm"), models.model(ex["seg"]).probability(ex["x"])))
    return pairs


def train_serve(examples: Sequence[Mapping[str, Any]], models: Any) -> dict[str, Any]:
    """Train/serve check: does relearning the labels stream reproduce every served ``pm``?

    ``ready_mismatches`` counts moments where only one of the two had a model ready;
    ``max_abs_diff`` is over the others (``pm`` is stored rounded to 6 places, so
    anything above ~5e-7 means the model learned from something it did not score).
    """
    pairs = relearned(examples, models)
    both = [abs(a - b) for a, b in pairs if a is not None and b is not None]
    return {
        "moments": len(pairs),
        "compared": len(both),
        "ready_mismatches": sum((a is None) != (b is None) for a, b in pairs),
        "max_abs_diff": max(both) if both else None,
        "over_1e_6": sum(d > 1e-6 for d in both),
    }


def _read_examples(client: Any, key: str, every: bool = False) -> tuple[list[dict[str, Any]], int]:
    """The labels stream's examples, once per id, and how many repeated a scored moment
    (with ``every``, those too: all the engine learned, in stream order)."""
    examples: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    ids: set[str] = set()
    duplicates = 0
    position = "-"
    while True:
        rows = cast(list[Any], client.xrange(key, min=position, count=5_000))
        if not rows:
            return examples, duplicates
        for _sid, fields in rows:
            ex = msgpack.unpackb(fields[b"l"], raw=False)
            if ex["id"] in ids:
                continue  # the same example appended twice: one label
            ids.add(ex["id"])
            snap = (ex["tenant"], ex["lead"], ex["seg"], ex["ts"])
            if snap in seen and not every:
                duplicates += 1
                continue
            seen.add(snap)
            examples.append(ex)
        position = "(" + rows[-1][0].decode()  # exclusive: after the last one read


# -- the comparison ------------------------------------------------------------------------


def _kind(ex: Mapping[str, Any]) -> str:
    if ex["y"]:
        return "positive_outcome"
    return "lost" if ex.get("outcome") == "lost" else "expired"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _matrix(rows: Sequence[Mapping[str, float]], columns: Sequence[str]) -> Floats:
    out = np.zeros((len(rows), len(columns)), dtype=np.float64)
    where = {c: j for j, c in enumerate(columns)}
    for i, x in enumerate(rows):
        for k, v in x.items():
            j = where.get(k)
            if j is not None:
                out[i, j] = float(v)
    return out


def _lr() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5_000))


def _gbm() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        learning_rate=0.05,
        max_iter=200,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=0,
    )


#: Batch model -> (constructor, which training set: "known" or "matured").
BATCH: dict[str, tuple[Callable[[], Any], str]] = {
    "batch_lr": (_lr, "known"),
    "batch_gbm": (_gbm, "known"),
    "batch_lr_matured": (_lr, "matured"),
}


def _fit_batch(
    train: Mapping[str, Sequence[Mapping[str, Any]]],
    test: Sequence[Mapping[str, Any]],
    notes: list[str],
) -> dict[str, Floats | None]:
    """Train each batch model on its training set's ``x`` and score ``test``."""
    from threadpoolctl import threadpool_limits

    out: dict[str, Floats | None] = {}
    for name, (make, which) in BATCH.items():
        rows = train[which]
        ys = np.array([bool(ex["y"]) for ex in rows], dtype=bool)
        if len(rows) == 0 or ys.all() or not ys.any():
            notes.append(f"{name} not trained: its training set lacks one of the classes")
            out[name] = None
            continue
        columns = sorted({k for ex in rows for k in ex["x"]})
        x_train = _matrix([ex["x"] for ex in rows], columns)
        x_test = _matrix([ex["x"] for ex in test], columns)
        # one thread: OpenMP threads fighting over 2 busy cores made the GBM 10x slower;
        # warnings are recorded with the result, not silenced
        with threadpool_limits(limits=1), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = make().fit(x_train, ys)
            out[name] = model.predict_proba(x_test)[:, 1].astype(np.float64)
        for w in caught:
            notes.append(f"{name}: {w.category.__name__}: {w.message}")
    return out


def _bootstrap(
    leads: Sequence[str],
    y: Bools,
    scores: Mapping[str, Floats],
    pairs: Mapping[str, tuple[str, str]],
    rounds: int,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Lead-clustered bootstrap of AUC differences: 2.5 / 50 / 97.5 percentiles."""
    by_lead: dict[str, list[int]] = {}
    for i, lead in enumerate(leads):
        by_lead.setdefault(lead, []).append(i)
    groups = [np.array(ix) for ix in by_lead.values()]
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {name: [] for name in pairs}
    for _ in range(rounds):
        pick = rng.integers(0, len(groups), len(groups))
        ix = np.concatenate([groups[g] for g in pick])
        for name, (a, b) in pairs.items():
            auc_a, auc_b = auc(y[ix], scores[a][ix]), auc(y[ix], scores[b][ix])
            if auc_a is not None and auc_b is not None:
                diffs[name].append(auc_a - auc_b)
    out = {}
    for name, values in diffs.items():
        if values:
            lo, mid, hi = np.percentile(values, [2.5, 50, 97.5])
            out[name] = {"p2_5": float(lo), "median": float(mid), "p97_5": float(hi)}
    return out


def _evaluable(
    own: Sequence[Mapping[str, Any]], until: float
) -> tuple[dict[str, Any], list[Mapping[str, Any]]]:
    """Label counts, and the examples whose whole horizon lies inside the data."""
    kinds: dict[str, int] = {}
    for ex in own:
        kinds[_kind(ex)] = kinds.get(_kind(ex), 0) + 1
    evaluable = sorted(
        (ex for ex in own if ex["ts"] <= until), key=lambda e: (e["ts"], e["lead"], e["id"])
    )
    labels = {
        "total": len(own),
        "positives": sum(bool(ex["y"]) for ex in own),
        "by_kind": dict(sorted(kinds.items())),
        "censored_dropped": len(own) - len(evaluable),
        "evaluable": len(evaluable),
        "evaluable_positives": sum(bool(ex["y"]) for ex in evaluable),
    }
    if not evaluable:
        raise ValueError("no evaluable labelled examples: is the data longer than the horizon?")
    return labels, evaluable


def _score_models(
    test: Sequence[Mapping[str, Any]], batch: Mapping[str, Floats | None], notes: list[str]
) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]], dict[str, Floats]]:
    """Every model's figures and reliability curve on ``test``; the scores by model."""
    y = np.array([bool(ex["y"]) for ex in test])
    scores: dict[str, Floats] = {
        # the seeds' points score as such (`pr`); `pp` is the same after online calibration
        "points_prior": np.array([float(ex.get("pr") or ex["pp"]) for ex in test]),
        "online_served": np.array([float(ex["pb"]) for ex in test]),
    }
    if test and all(ex.get("pf") is not None for ex in test):
        scores["online_forest"] = np.array([float(ex["pf"]) for ex in test])
    ready = np.array([ex.get("pm") is not None for ex in test], dtype=bool)
    results: dict[str, Any] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    for name in MODELS:
        if name == "online_model":
            p = np.array([float(ex["pm"]) if ex.get("pm") is not None else 0.0 for ex in test])
            yy, pp = y[ready], p[ready]
            if not ready.all():
                notes.append(
                    f"online_model: {int((~ready).sum())} test examples scored before the "
                    "model had seen both classes are left out of its row"
                )
        elif name in scores:
            yy, pp = y, scores[name]
        else:
            got = batch.get(name)
            if got is None:
                results[name] = None
                continue
            scores[name] = got
            yy, pp = y, got
        results[name] = metrics(yy, pp)
        curves[name] = reliability(yy, pp)
    return results, curves, scores


def _split_info(
    until: float,
    lo: float,
    split: float,
    hi: float,
    test: Sequence[Mapping[str, Any]],
    train: Sequence[Mapping[str, Any]],
    matured: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    return {
        "evaluable_until": _iso(until),
        "first_scored": _iso(lo),
        "split": _iso(split),
        "last_scored": _iso(hi),
        "test": len(test),
        "test_positives": sum(bool(ex["y"]) for ex in test),
        "test_leads": len({ex["lead"] for ex in test}),
        "train": len(train),
        "train_positives": sum(bool(ex["y"]) for ex in train),
        "train_leads": len({ex["lead"] for ex in train}),
        "train_matured": len(matured),
        "train_matured_positives": sum(bool(ex["y"]) for ex in matured),
    }


def compare(
    examples: Sequence[Mapping[str, Any]],
    end_ts: float,
    horizon_d: float,
    exclude_leads: Iterable[str] = (),
    bootstrap_rounds: int = 200,
    split_ts: float | None = None,
) -> dict[str, Any]:
    """Forward-in-time comparison of every model on one dataset's labelled examples.

    ``split_ts``: where the test set starts (default: the last ``TEST_SHARE`` of the
    evaluable examples' event-time range).
    """
    notes: list[str] = []
    skip = set(exclude_leads)
    own = [ex for ex in examples if ex["lead"] not in skip]
    until = end_ts - horizon_d * DAY
    labels, evaluable = _evaluable(own, until)
    lo, hi = evaluable[0]["ts"], evaluable[-1]["ts"]
    split = lo + (1.0 - TEST_SHARE) * (hi - lo) if split_ts is None else split_ts
    test = [ex for ex in evaluable if ex["ts"] >= split]
    # known by the split: an outcome (or `lost`) is known when it happens; a snapshot with
    # neither is known to be negative once its horizon is over (when the engine learns it)
    train = [ex for ex in evaluable if (ex.get("outcome_at") or ex["at"]) < split]
    # matured: the whole horizon (and the next daily sweep) was over by the split, so
    # every label is final and none is missing: no early-positive bias, but older data
    matured = [ex for ex in train if ex["ts"] <= split - (horizon_d + 1.0) * DAY]
    batch = _fit_batch({"known": train, "matured": matured}, test, notes)
    results, curves, scores = _score_models(test, batch, notes)
    pairs = {
        "online_served_minus_batch_lr": ("online_served", "batch_lr"),
        "online_served_minus_points_prior": ("online_served", "points_prior"),
        "batch_lr_minus_points_prior": ("batch_lr", "points_prior"),
    }
    pairs = {k: v for k, v in pairs.items() if v[0] in scores and v[1] in scores}
    y = np.array([bool(ex["y"]) for ex in test])
    boot = _bootstrap([ex["lead"] for ex in test], y, scores, pairs, bootstrap_rounds)
    floor = ece_floor(scores["online_served"], bootstrap_rounds) if test else None
    bound = recalibration_bound(y, scores["online_served"]) if test else {}
    ys = [ex["y"] for ex in evaluable]
    progressive = {
        "points_prior": metrics(ys, [float(ex["pp"]) for ex in evaluable]),
        "online_served": metrics(ys, [float(ex["pb"]) for ex in evaluable]),
    }
    return {
        "labels": labels,
        "split": _split_info(until, lo, split, hi, test, train, matured),
        "models": results,
        "auc_differences_bootstrap": boot,
        "progressive_all_evaluable": progressive,
        "reliability": curves,
        "targets": targets(results, boot, floor),
        "ece_if_calibrated": floor,
        "ece_after_oracle_recalibration": bound,
        "notes": notes,
    }


def ece_floor(p: Floats, rounds: int = 200, seed: int = 0) -> dict[str, float]:
    """The ECE a *perfectly calibrated* score with these probabilities would measure on
    this many examples (outcomes drawn as Bernoulli(p)): the sampling noise of the ECE
    itself. A measured ECE inside this band is not evidence of miscalibration, and a
    threshold below its median cannot be met reliably by any score on this test set."""
    rng = np.random.default_rng(seed)
    values = [ece(rng.random(len(p)) < p, p) or 0.0 for _ in range(max(20, rounds))]
    median, p90 = np.percentile(np.array(values, dtype=np.float64), [50, 90])
    return {"median": round(float(median), 4), "p90": round(float(p90), 4)}


def _sigmoid(z: Floats) -> Floats:
    return cast(Floats, 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0))))


def _fit_logit_map(z: Floats, y: Floats, slope: bool, rounds: int = 100) -> tuple[float, float]:
    """Maximum-likelihood ``(a, b)`` of ``P(y) = sigmoid(a * z + b)`` (``a`` fixed at 1
    without ``slope``): Newton's method from the identity (1, 0), each step at most 1 long
    (the log-likelihood is concave: damped steps converge from anywhere)."""
    theta = np.array([1.0, 0.0])
    u = np.stack([z, np.ones_like(z)], axis=1) if slope else np.ones((len(z), 1))
    offset = np.zeros_like(z) if slope else z
    if not slope:
        theta = np.array([0.0])
    for _ in range(rounds):
        q = _sigmoid(u @ theta + offset)
        g = u.T @ (y - q)
        h = (u * (q * (1.0 - q))[:, None]).T @ u + 1e-9 * np.eye(len(theta))
        step = np.linalg.solve(h, g)
        size = float(np.abs(step).max())
        theta = theta + (step / size if size > 1.0 else step)
        if size < 1e-10:
            break
    return (float(theta[0]), float(theta[1])) if slope else (1.0, float(theta[0]))


def recalibration_bound(y: Sequence[bool] | Bools, p: Sequence[float] | Floats) -> dict[str, Any]:
    """The ECE the served score would have after the *best* affine recalibration of its
    log-odds, fitted on the test set itself (an oracle: no online method can do better):
    an intercept shift (what a base-rate or delayed-feedback correction can change) and a
    Platt map (shift and slope). If even these stay above the target, the miscalibration
    is in the shape of the score (e.g. a saturating top), not in its base rate."""
    ya = np.asarray(y, dtype=np.float64)
    pa = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    if len(ya) == 0 or ya.min() == ya.max():
        return {}
    z = np.log(pa / (1.0 - pa))
    out: dict[str, Any] = {}
    for name, slope in (("shift", False), ("platt", True)):
        a, b = _fit_logit_map(z, ya, slope)
        fitted = _sigmoid(a * z + b)
        out[name] = {"slope": round(a, 4), "shift": round(b, 4), "ece": ece(ya, fitted)}
    return out


def targets(
    results: Mapping[str, Any],
    boot: Mapping[str, Mapping[str, float]] | None = None,
    floor: Mapping[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """The targets of "Scores that rank real leads", judged on the served online score
    (point estimates): within 0.01 of the batch LR, 0.05 above the seeds' points score
    (the issue asks it of the simulator; reported for every dataset), ECE <= 0.03.

    ``interval`` is the bootstrap's 95 % interval of the AUC difference, when there is
    one: a target "met" whose interval reaches far past the threshold is not settled.
    ``if_calibrated`` (the ECE row, from :func:`ece_floor`): the median and 90th
    percentile of the ECE a perfectly calibrated score would show on the same test set.
    """
    boot = boot or {}

    def get(name: str, key: str) -> float | None:
        row = results.get(name)
        return None if not row else row.get(key)

    online, lr, rules = (
        get("online_served", "auc"),
        get("batch_lr", "auc"),
        get("points_prior", "auc"),
    )
    served_ece = get("online_served", "ece")

    def row(
        value: float | None, need: str, ok: Callable[[float], bool], pair: str = ""
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "measured": None if value is None else round(value, 4),
            "target": need,
            "met": None if value is None else bool(ok(value)),
        }
        if pair in boot:
            out["interval"] = [round(boot[pair]["p2_5"], 4), round(boot[pair]["p97_5"], 4)]
        return out

    return {
        "online_auc_minus_batch_lr": row(
            None if online is None or lr is None else online - lr,
            ">= -0.01",
            lambda v: v >= -0.01,
            "online_served_minus_batch_lr",
        ),
        "online_auc_minus_points_prior": row(
            None if online is None or rules is None else online - rules,
            ">= 0.05",
            lambda v: v >= 0.05,
            "online_served_minus_points_prior",
        ),
        "online_served_ece": {
            **row(served_ece, "<= 0.03", lambda v: v <= 0.03),
            **({"if_calibrated": [floor["median"], floor["p90"]]} if floor else {}),
        },
    }


# -- datasets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one mode runs."""

    sim: SimConfig
    diginetica_every: int  # use every n-th session of the sample (1: all)
    bootstrap_rounds: int
    shoppers_every: int = 1  # every n-th Online Shoppers session (1: all 12,330)


PLANS = {
    # 6,000 simulated leads (lead i is the same whatever the count: a superset of the
    # earlier 2,000): ~2,600 test moments, so the ECE can tell a miss from its own noise
    "full": Plan(SimConfig(seed=7, leads=6_000, days=150.0), 1, 500, 1),
    "small": Plan(SimConfig(seed=7, leads=160, days=90.0), 4, 100, 25),
}

#: Online Shoppers is split by month: the test set is the last quarter (October to
#: December: 5,274 of 12,330 sessions), trained on February to September.
SHOPPERS_TEST_FROM = "Oct"

#: DIGINETICA sessions last minutes (median ~4 min, 90 % under 17): with the default
#: snapshot cadence (one per lead per hour) every session would give one example, taken
#: at its first view, when nothing tells buyers apart. Every view is a scored moment there.
DIGINETICA_OVERRIDES: dict[str, dict[str, Any]] = {}


def _flush_event(last_ts: float, tenant: str) -> dict[str, Any]:
    return {
        "event_id": f"{diginetica.FLUSH_LEAD}-0",
        "lead_id": diginetica.FLUSH_LEAD,
        "type": "page_view",
        "ts": round(last_ts + FLUSH_AFTER_D * DAY, 3),
        "tenant": tenant,
    }


def _horizon_d() -> float:
    from engine.settings import load_settings

    return float(load_settings(environ={}).scoring.label_horizon_d)


def run_simulator(plan: Plan, redis_url: str, work_dir: Path) -> dict[str, Any]:
    cfg = plan.sim
    events = list(generate(cfg))
    end = cfg.start_ts + cfg.days * DAY  # the simulator cuts every event at or after this
    events.append(_flush_event(max(end, events[-1]["ts"]), cfg.tenant))
    got = replay_labels(events, redis_url, work_dir)
    examples = with_forest(got.examples, events, redis_url, work_dir)
    out = compare(examples, end, got.horizon_d, {diginetica.FLUSH_LEAD}, plan.bootstrap_rounds)
    out["source"] = {
        "simulator": {"seed": cfg.seed, "leads": cfg.leads, "days": cfg.days},
        "events": got.events,
        "replay_seconds": round(got.seconds, 1),
        "settings_overrides": {"streams": {"partitions": 1}},
        "flush_page_view": _iso(events[-1]["ts"]),
    }
    out["labels"]["duplicate_snapshot_labels"] = got.duplicates
    out["engine_live_quality"] = _live(got.live_quality)
    out["train_serve"] = got.train_serve
    return out


def run_diginetica(plan: Plan, redis_url: str, work_dir: Path) -> dict[str, Any]:
    ids = diginetica.session_ids()
    chosen = ids[:: plan.diginetica_every] if plan.diginetica_every > 1 else None
    data = diginetica.load(sessions=chosen)
    got = replay_labels(data.events, redis_url, work_dir, DIGINETICA_OVERRIDES)
    examples = with_forest(got.examples, data.events, redis_url, work_dir, DIGINETICA_OVERRIDES)
    # outcomes are observed (the purchase file runs past the view log) at least until the
    # last view: a scored moment is evaluable if its horizon ends before that
    out = compare(
        examples, data.last_view_ts, got.horizon_d, {diginetica.FLUSH_LEAD},
        plan.bootstrap_rounds,
    )  # fmt: skip
    out["source"] = {
        "data": str(diginetica.DATA_DIR),
        "sessions_used": "all" if chosen is None else f"every {plan.diginetica_every}th",
        **data.summary(),
        "replay_seconds": round(got.seconds, 1),
        "settings_overrides": {"streams": {"partitions": 1}, **DIGINETICA_OVERRIDES},
    }
    out["labels"]["duplicate_snapshot_labels"] = got.duplicates
    out["engine_live_quality"] = _live(got.live_quality)
    out["train_serve"] = got.train_serve
    return out


def run_online_shoppers(plan: Plan, redis_url: str, work_dir: Path) -> dict[str, Any]:
    data = online_shoppers.load(every=plan.shoppers_every)
    got = replay_labels(data.events, redis_url, work_dir, config=online_shoppers.CONFIG_FILE)
    examples = with_forest(
        got.examples, data.events, redis_url, work_dir, config=online_shoppers.CONFIG_FILE
    )
    # every session ends in its outcome (purchase or `lost`) right after its last page:
    # nothing is censored, so the evaluable range runs to the end of the data
    split, _ = online_shoppers.month_start(SHOPPERS_TEST_FROM)
    out = compare(
        examples, data.last_ts + got.horizon_d * DAY, got.horizon_d,
        {online_shoppers.FLUSH_LEAD}, plan.bootstrap_rounds, split_ts=split,
    )  # fmt: skip
    out["source"] = {
        "data": str(online_shoppers.DATA_DIR),
        "sessions_used": "all" if plan.shoppers_every == 1 else f"every {plan.shoppers_every}th",
        **data.summary(),
        "test_from": _iso(split),
        "replay_seconds": round(got.seconds, 1),
        "settings_overrides": {"streams": {"partitions": 1}},
        "config_file": online_shoppers.CONFIG_FILE.name,
    }
    out["labels"]["duplicate_snapshot_labels"] = got.duplicates
    out["engine_live_quality"] = _live(got.live_quality)
    out["train_serve"] = got.train_serve
    return out


def _live(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's own rolling view of the served score (what `model status` shows)."""
    keep = ("labels", "window", "auc", "log_loss", "precision_top15", "ece", "drifts")
    return {k: snapshot.get(k) for k in keep}


# -- report ------------------------------------------------------------------------------------

DATASETS = {
    "simulator": "Seeded simulator",
    "diginetica": "DIGINETICA (real)",
    "online_shoppers": "Online Shoppers (real)",
}


def _f(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _dataset_lines(title: str, data: Mapping[str, Any]) -> list[str]:
    """One dataset's section of the report."""
    s, lab = data["split"], data["labels"]
    lines = [
        f"## {title}",
        "",
        f"{lab['total']} labelled examples ({lab['positives']} positive; "
        + ", ".join(f"{k} {v}" for k, v in lab["by_kind"].items())
        + f"); {lab['censored_dropped']} censored (horizon past the data) dropped. "
        f"Test: {s['test']} examples of {s['test_leads']} leads, "
        f"{s['test_positives']} positive, scored {s['split'][:10]} .. "
        f"{s['last_scored'][:10]}; batch training: {s['train']} examples "
        f"({s['train_positives']} positive).",
        "",
        "| model | n | positives | AUC | precision top 15 % | ECE | Brier |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, what in MODELS.items():
        row = data["models"].get(name)
        if not row:
            lines.append(f"| {what} | – | – | – | – | – | – |")
            continue
        lines.append(
            f"| {what} | {row['n']} | {row['positives']} | {_f(row['auc'])} | "
            f"{_f(row['precision_top15'])} | {_f(row['ece'])} | {_f(row['brier'])} |"
        )
    lines += [
        "",
        "| target (on the served online score) | measured | 95 % interval | met |",
        "|---|---:|---:|:---:|",
    ]
    for name, t in data["targets"].items():
        met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
        iv, cal = t.get("interval"), t.get("if_calibrated")
        span = f"{_f(iv[0])} .. {_f(iv[1])}" if iv else "–"
        if cal:
            span = f"if calibrated: {_f(cal[0])} (90 %: {_f(cal[1])})"
        lines.append(
            f"| {name.replace('_', ' ')} {t['target']} | {_f(t['measured'])} | {span} | {met} |"
        )
    boot = data.get("auc_differences_bootstrap", {})
    if boot:
        lines += ["", "AUC differences, lead-clustered bootstrap (2.5 % / median / 97.5 %):", ""]
        for name, b in boot.items():
            lines.append(
                f"- {name.replace('_', ' ')}: {_f(b['p2_5'])} / {_f(b['median'])} / "
                f"{_f(b['p97_5'])}"
            )
    lines += [f"- note: {note}" for note in data.get("notes", [])]
    ts = data.get("train_serve")
    if ts and ts.get("compared"):
        lines.append(
            f"- train/serve: a fresh model relearning the labels stream predicts the served "
            f"model probability again for {ts['compared'] - ts['over_1e_6']} of "
            f"{ts['compared']} moments (max |difference| {ts['max_abs_diff']:.1e}; "
            f"{ts['ready_mismatches']} where only one was ready)"
        )
    return lines + [""]


def markdown(result: Mapping[str, Any]) -> str:
    lines = [
        f"# Quality benchmark ({result['mode']} mode)",
        "",
        "Online model vs the rule-based points score and offline batch models, on a "
        "forward-in-time split (test: scored moments in the last 30 % of event time, for "
        "Online Shoppers the sessions from October on; batch "
        "models trained on examples whose label was known before the split). Generated by "
        "`python -m benchmarks.quality` — see its docstring for the method.",
        "",
        f"Commit `{result.get('commit', '?')}`, {result.get('seconds', '?')} s.",
        "",
    ]
    if result["mode"] == "small":
        lines += [
            "Small mode is the test suite's smoke run: far too few examples for these "
            "figures to judge the targets (see the intervals). The full run is "
            "`quality.md`.",
            "",
        ]
    for key, title in DATASETS.items():
        data = result["datasets"].get(key)
        if data:
            lines += _dataset_lines(title, data)
    for para in result.get("findings", []):
        lines += [para, ""]
    return "\n".join(lines)


def plot(result: Mapping[str, Any], path: Path) -> None:
    """Reliability: predicted vs observed by decile of each model's score, per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [k for k in DATASETS if result["datasets"].get(k)]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(6.0 * max(1, len(present)), 5.2))
    axes_list = list(np.atleast_1d(axes))
    for ax, key in zip(axes_list, present, strict=False):
        curves = result["datasets"][key]["reliability"]
        top = 0.0
        for name, points in curves.items():
            if not points:
                continue
            xs = [pt["mean_p"] for pt in points]
            ys = [pt["rate"] for pt in points]
            top = max(top, *xs, *ys)
            style = "--" if name in ("online_model", "batch_lr_matured") else "-"
            ax.plot(xs, ys, style, marker="o", markersize=3.5, linewidth=1.4, label=name)
        top = min(1.0, top * 1.05 + 0.02)
        ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="perfect")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_title(f"{DATASETS[key]}: test split, deciles of each score")
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed positive rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- entry points --------------------------------------------------------------------------------


def _commit() -> str:
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
            check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "engine", "features"],
            cwd=here, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+engine-changes" if dirty else "")


def _recalibration_text(bound: Mapping[str, Any]) -> list[str]:
    """The finding of :func:`recalibration_bound`, in words (nothing when it was not run)."""
    if not bound:
        return []
    shift, platt = bound["shift"], bound["platt"]
    return [
        f"Refitted on this test set itself (an oracle, the best any affine recalibration "
        f"of the served log-odds could do), an intercept shift of {shift['shift']:+.3f} "
        f"gives an ECE of {shift['ece']:.3f} and a Platt map (slope {platt['slope']:.3f}, "
        f"shift {platt['shift']:+.3f}) {platt['ece']:.3f}."
    ]


def findings(result: Mapping[str, Any]) -> list[str]:
    """What the figures say, per dataset, computed from them (no hand-written verdicts)."""
    out = []
    for key, title in DATASETS.items():
        data = result["datasets"].get(key)
        if not data:
            continue
        t, models = data["targets"], data["models"]
        met = [k for k, v in t.items() if v["met"]]
        missed = [k for k, v in t.items() if v["met"] is False]
        text = [
            f"**{title}** — targets met: {', '.join(met) or 'none'}; "
            f"missed: {', '.join(missed) or 'none'}."
        ]
        ranked = sorted(
            ((row["auc"], name) for name, row in models.items() if row and row["auc"] is not None),
            reverse=True,
        )
        if ranked:
            text.append(
                "AUC order: " + ", ".join(f"{name} {value:.3f}" for value, name in ranked) + "."
            )
        served, rules = models.get("online_served"), models.get("points_prior")
        if served and rules and rules["auc"] is not None:
            bar = rules["auc"] + 0.05
            over = [name for value, name in ranked if value >= bar]
            text.append(f"Rules + 0.05 = {bar:.3f} is reached by: {', '.join(over) or 'no model'}.")
        if served and served["mean_p"] is not None and served["n"]:
            rate = served["positives"] / served["n"]
            text.append(
                f"Served score: mean predicted {served['mean_p']:.3f} against an observed "
                f"rate of {rate:.3f} (ECE {served['ece']:.3f})."
            )
            cal = t.get("online_served_ece", {}).get("if_calibrated")
            if cal:
                text.append(
                    f"A perfectly calibrated score with the same probabilities would measure "
                    f"an ECE of {cal[0]:.3f} on this test set (90 % of draws below "
                    f"{cal[1]:.3f}): the sampling noise of the ECE at this size."
                )
            text += _recalibration_text(data.get("ece_after_oracle_recalibration") or {})
        known, matured = models.get("batch_lr"), models.get("batch_lr_matured")
        if known and matured and known["ece"] is not None and matured["ece"] is not None:
            known_rate = data["split"]["train_positives"] / max(1, data["split"]["train"])
            mat_rate = data["split"]["train_matured_positives"] / max(
                1, data["split"]["train_matured"]
            )
            text.append(
                f"Labels known by the split are {known_rate:.3f} positive, matured ones "
                f"{mat_rate:.3f} (positives arrive with the outcome, negatives only when the "
                f"horizon expires); batch LR ECE {known['ece']:.3f} on the former, "
                f"{matured['ece']:.3f} on the latter."
            )
        out.append(" ".join(text))
    return out


def run_quality(
    mode: str = "full", out_dir: str | os.PathLike[str] | None = None, redis_url: str | None = None
) -> dict[str, Any]:
    """Run both datasets; write the JSON, markdown and reliability plot; return the result."""
    if mode not in PLANS:
        raise ValueError(f"mode must be one of {sorted(PLANS)}, got {mode!r}")
    from engine.redis_client import resolve_url

    plan = PLANS[mode]
    out = Path(out_dir) if out_dir is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    stem = "quality" if mode == "full" else "quality_small"
    began = time.perf_counter()
    url, server = resolve_url(
        redis_url if redis_url is not None else os.environ.get("REDIS_URL", "")
    )
    try:
        with tempfile.TemporaryDirectory(prefix="leadpulse-quality-") as tmp:
            work = Path(tmp)
            datasets = {
                "simulator": run_simulator(plan, url, work),
                "diginetica": run_diginetica(plan, url, work),
                "online_shoppers": run_online_shoppers(plan, url, work),
            }
    finally:
        if server is not None:
            server.stop()
    result: dict[str, Any] = {
        "mode": mode,
        "commit": _commit(),
        "generated": _iso(time.time()),
        "method": {
            "test_share": TEST_SHARE,
            "top_share": TOP_SHARE,
            "ece_bins": ECE_BINS,
            "label_horizon_d": _horizon_d(),
            "flush_after_d": FLUSH_AFTER_D,
            "online_shoppers_test_from": SHOPPERS_TEST_FROM,
            "models": MODELS,
        },
        "datasets": datasets,
    }
    result["findings"] = findings(result)
    result["seconds"] = round(time.perf_counter() - began, 1)
    plot(result, out / f"{stem}_reliability.png")
    result["files"] = {
        "json": f"{stem}.json",
        "markdown": f"{stem}.md",
        "plot": f"{stem}_reliability.png",
    }
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    return result


def run(
    quick: bool = False, out_dir: str | os.PathLike[str] | None = None, redis_url: str | None = None
) -> dict[str, Any]:
    """The ``leadpulse bench`` hook: small mode when ``quick``."""
    return run_quality("small" if quick else "full", out_dir, redis_url)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--small", action="store_true", help="small mode (the test suite's, < 1 min)")
    p.add_argument("--out", default=str(RESULTS), help="output directory (benchmarks/results)")
    p.add_argument("--redis-url", default=None, help="server to use (default REDIS_URL, else "
                   "a private embedded Valkey)")  # fmt: skip


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``quality`` to an ``add_subparsers()`` object; dispatch to :func:`run_args`."""
    p = subparsers.add_parser(
        "quality",
        help="online model vs rules and batch models on the simulator and DIGINETICA",
        description=(__doc__ or "").split("\n\n", 1)[0],
    )
    _arguments(p)
    return p


def run_args(args: argparse.Namespace) -> int:
    result = run_quality("small" if args.small else "full", args.out, args.redis_url)
    print(markdown(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _arguments(parser)
    return run_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
