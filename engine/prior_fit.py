"""Refit the points prior from a tenant's own labels: the same transparent rules, new points.

The prior stays what it is — points per signal, each capped, plus source and timeline
points, through a logistic curve — but its numbers come from the brokerage's outcomes
instead of the seeds: an L2-regularised logistic regression (Newton's method, numpy) on
the capped signal counts and the source / timeline levels of labelled examples. Each
signal keeps its cap *count* (a cap of 24 at 8 points each stays "3 saves at most").
The result is a ``[scoring]`` TOML block to review and put in the config file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.settings import Settings

__all__ = ["Refit", "refit_prior", "to_toml"]

_ENGAGED = (
    "inquiries", "showing_requests", "valuation_requests", "call_requests", "saves", "replies",
    "saved_searches", "email_clicks",
)  # fmt: skip
_UNIT = frozenset({"reply_recency", "reactivated"})


def _count(name: str, x: Mapping[str, float]) -> float:
    """The raw signal value the prior weighs, recovered from the model input ``x``."""
    if name == "views_30d_broad":
        engaged = any(x.get(k, 0.0) > 0 for k in _ENGAGED)
        return 0.0 if engaged else math.expm1(x.get("views_30d", 0.0))
    v = float(x.get(name, 0.0))
    return v if name in _UNIT else math.expm1(v)  # repeat views: already the repeats


@dataclass(frozen=True)
class Refit:
    """The refitted numbers: intercept, points each per signal, source and timeline points."""

    intercept: float
    points: dict[str, tuple[float, float]]
    sources: dict[str, float]
    timelines: dict[str, float]
    examples: int


def _design(
    examples: Sequence[Mapping[str, Any]], settings: Settings
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    sc = settings.scoring
    signals = list(sc.points)
    caps = {k: abs(cap / each) if each else 0.0 for k, (each, cap) in sc.points.items()}
    levels = sorted(
        {k for ex in examples for k in ex["x"] if k.startswith(("source=", "timeline="))}
        - {"source=unknown", "timeline=unknown"}
    )
    cols = signals + levels
    rows = []
    for ex in examples:
        x = ex["x"]
        row = [1.0] + [min(_count(s, x), caps[s]) for s in signals]
        row += [1.0 if x.get(level) else 0.0 for level in levels]
        rows.append(row)
    y = np.array([1.0 if ex["y"] else 0.0 for ex in examples])
    return np.array(rows), y, cols


def _newton(a: np.ndarray, y: np.ndarray, l2: float, steps: int = 50) -> np.ndarray:
    beta = np.zeros(a.shape[1])
    penalty = np.eye(a.shape[1]) * l2
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ beta, -30, 30)))
        grad = a.T @ (p - y) + penalty @ beta
        hess = (a.T * (p * (1 - p))) @ a + penalty + np.eye(a.shape[1]) * 1e-9
        step = np.linalg.solve(hess, grad)
        beta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return beta


def refit_prior(
    examples: Iterable[Mapping[str, Any]], settings: Settings, l2: float = 1.0
) -> Refit | None:
    """Fit on labelled examples (``x``, ``y``); None with fewer than 50 or a single class."""
    rows = [ex for ex in examples if isinstance(ex.get("x"), Mapping)]
    labels = {bool(ex["y"]) for ex in rows}
    if len(rows) < 50 or len(labels) < 2:
        return None
    a, y, cols = _design(rows, settings)
    beta = _newton(a, y, l2)
    per_point = settings.scoring.prior_logit_per_point
    points: dict[str, tuple[float, float]] = {}
    sources: dict[str, float] = {}
    timelines: dict[str, float] = {}
    for name, b in zip(cols, beta[1:], strict=True):
        pts = round(float(b) / per_point, 2)
        if name.startswith("source="):
            sources[name.split("=", 1)[1]] = pts
        elif name.startswith("timeline="):
            timelines[name.split("=", 1)[1]] = pts
        else:
            each, cap = settings.scoring.points[name]
            count = abs(cap / each) if each else 1.0
            points[name] = (pts, round(pts * count, 2))
    return Refit(round(float(beta[0]), 4), points, sources, timelines, len(rows))


def to_toml(fit: Refit) -> str:
    """The refitted prior as config: review it, then put it in your config file."""
    lines = [
        f"# points prior refitted on {fit.examples} labelled examples (leadpulse backtest)",
        "[scoring]",
        f"prior_intercept = {fit.intercept}",
        "",
        "[scoring.points]",
    ]
    lines += [f"{k} = [{each}, {cap}]" for k, (each, cap) in fit.points.items()]
    lines += ["", "[scoring.source_points]"]
    lines += [f"{k} = {v}" for k, v in sorted(fit.sources.items())]
    lines += ["", "[scoring.timeline_points]"]
    lines += [f'"{k}" = {v}' for k, v in sorted(fit.timelines.items())]
    return "\n".join(lines) + "\n"
