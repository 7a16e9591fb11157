"""How good a score is, on labelled examples: pure metrics (numpy only, no scikit-learn).

Used by ``leadpulse backtest`` (``engine/backtest.py``) and the quality benchmark
(``benchmarks/quality.py``). Every function takes the labels ``y`` (truthy = converted)
and the scores ``p`` (probabilities in [0, 1]) as any 1-d sequences of equal length and
returns plain Python numbers; a figure that is undefined on the data (an AUC without
both classes, anything on no examples) is ``None``, never a misleading number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BUCKETS",
    "ECE_BINS",
    "TOP_SHARE",
    "auc",
    "brier",
    "bucket_of_probability",
    "calibration_bins",
    "ece",
    "lift_by_bucket",
    "log_loss",
    "metrics",
    "precision_at_top",
    "reliability",
]

TOP_SHARE = 0.15  # precision in the top 15 % of scores
ECE_BINS = 10
BUCKETS = ("P1", "P2", "P3", "P4", "P5")

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


def _arrays(y: Iterable[Any], p: Iterable[Any]) -> tuple[Bools, Floats]:
    ya = np.asarray(list(y) if not isinstance(y, np.ndarray) else y, dtype=bool)
    pa = np.asarray(list(p) if not isinstance(p, np.ndarray) else p, dtype=np.float64)
    if ya.shape != pa.shape or ya.ndim != 1:
        raise ValueError(f"y and p must be 1-d and the same length: {ya.shape} vs {pa.shape}")
    return ya, pa


def _average_ranks(p: Floats) -> Floats:
    """1-based ranks, ties sharing their average rank."""
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts).astype(np.float64)  # rank of the last member of each value
    return (upper - (counts - 1) / 2.0)[inverse]


def auc(y: Iterable[Any], p: Iterable[Any]) -> float | None:
    """ROC AUC (Mann-Whitney, ties count half); None without both classes."""
    ya, pa = _arrays(y, p)
    pos = int(ya.sum())
    neg = len(ya) - pos
    if pos == 0 or neg == 0:
        return None
    ranks = _average_ranks(pa)
    return float((ranks[ya].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def precision_at_top(y: Iterable[Any], p: Iterable[Any], share: float = TOP_SHARE) -> float | None:
    """Share of positives among the top ``share`` of scores (``max(1, floor(n*share))``).

    Ties at the cut count by expectation (as if broken at random), so a constant
    score gets the base rate whatever order the examples come in.
    """
    ya, pa = _arrays(y, p)
    n = len(ya)
    if n == 0:
        return None
    k = max(1, int(n * share))
    cut = np.sort(pa)[::-1][k - 1]
    above = pa > cut
    tied = pa == cut
    n_above = int(above.sum())
    hits = float(ya[above].sum()) + (k - n_above) * float(ya[tied].mean())
    return hits / k


def _bin_index(p: Floats, bins: int) -> npt.NDArray[np.int64]:
    """Equal-width bin of each probability; 1.0 falls in the last bin."""
    return np.minimum((np.clip(p, 0.0, 1.0) * bins).astype(np.int64), bins - 1)


def ece(y: Iterable[Any], p: Iterable[Any], bins: int = ECE_BINS) -> float | None:
    """Expected calibration error: sum over equal-width bins of n_b/n * |mean p - rate|."""
    ya, pa = _arrays(y, p)
    if len(ya) == 0:
        return None
    pa = np.clip(pa, 0.0, 1.0)
    idx = _bin_index(pa, bins)
    err = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            err += mask.mean() * abs(pa[mask].mean() - ya[mask].mean())
    return float(err)


def calibration_bins(
    y: Iterable[Any], p: Iterable[Any], bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """The bins :func:`ece` sums over (equal width, only the non-empty ones).

    Each: ``lo``, ``hi`` (the bin's edges), ``mean_p``, ``rate`` (observed positive
    rate) and ``n``. The ECE is ``sum(n * |mean_p - rate|) / sum(n)`` over them.
    """
    ya, pa = _arrays(y, p)
    pa = np.clip(pa, 0.0, 1.0)
    idx = _bin_index(pa, bins)
    out = []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            out.append(
                {
                    "lo": b / bins,
                    "hi": (b + 1) / bins,
                    "mean_p": float(pa[mask].mean()),
                    "rate": float(ya[mask].mean()),
                    "n": int(mask.sum()),
                }
            )
    return out


def brier(y: Iterable[Any], p: Iterable[Any]) -> float | None:
    ya, pa = _arrays(y, p)
    return None if len(ya) == 0 else float(np.mean((pa - ya) ** 2))


def log_loss(y: Iterable[Any], p: Iterable[Any]) -> float | None:
    ya, pa = _arrays(y, p)
    if len(ya) == 0:
        return None
    pa = np.clip(pa, 1e-6, 1 - 1e-6)
    return float(-np.mean(np.where(ya, np.log(pa), np.log(1 - pa))))


def reliability(y: Iterable[Any], p: Iterable[Any], groups: int = 10) -> list[dict[str, float]]:
    """Predicted vs observed by decile of the score (equal-count groups, in score order)."""
    ya, pa = _arrays(y, p)
    if len(ya) == 0:
        return []
    order = np.argsort(pa, kind="stable")
    out = []
    for part in np.array_split(order, min(groups, len(ya))):
        out.append(
            {
                "mean_p": float(pa[part].mean()),
                "rate": float(ya[part].mean()),
                "n": int(len(part)),
            }
        )
    return out


def metrics(y: Iterable[Any], p: Iterable[Any]) -> dict[str, Any]:
    """Every figure of one model on one set of examples."""
    ya, pa = _arrays(y, p)
    return {
        "n": int(len(ya)),
        "positives": int(ya.sum()),
        "auc": auc(ya, pa),
        "precision_top15": precision_at_top(ya, pa),
        "ece": ece(ya, pa),
        "brier": brier(ya, pa),
        "log_loss": log_loss(ya, pa),
        "mean_p": float(pa.mean()) if len(pa) else None,
    }


def bucket_of_probability(p: float, floors: Mapping[str, float]) -> str:
    """P1-P4 of a probability as the engine buckets a score: ``round(p * 100)`` against
    the floors ``p1``, ``p2``, ``p3`` (``[buckets]``). P5 (clean-up: not interested,
    invalid contact, every channel blocked) cannot be told from a probability."""
    score = round(float(p) * 100)
    for name in ("p1", "p2", "p3"):
        if score >= floors[name]:
            return name.upper()
    return "P4"


def lift_by_bucket(
    y: Iterable[Any], buckets: Sequence[str], order: Sequence[str] = BUCKETS
) -> list[dict[str, Any]]:
    """Conversion rate and lift (rate / overall rate) of every bucket, in ``order``.

    Each row: ``bucket``, ``n``, ``share`` (of all examples), ``positives``, ``rate``
    (None when the bucket is empty) and ``lift`` (None when empty or nothing converted).
    """
    ya = np.asarray(list(y) if not isinstance(y, np.ndarray) else y, dtype=bool)
    ba = np.asarray(list(buckets), dtype=object)
    if ya.shape != ba.shape:
        raise ValueError(f"y and buckets must be the same length: {ya.shape} vs {ba.shape}")
    base = float(ya.mean()) if len(ya) else 0.0
    out = []
    for name in order:
        mask = ba == name
        n = int(mask.sum())
        rate = float(ya[mask].mean()) if n else None
        out.append(
            {
                "bucket": name,
                "n": n,
                "share": n / len(ya) if len(ya) else 0.0,
                "positives": int(ya[mask].sum()),
                "rate": rate,
                "lift": rate / base if rate is not None and base > 0 else None,
            }
        )
    return out
