"""Bounds of every probability leadpulse serves: never exactly 0 or 1.

Kept apart from ``engine/model.py`` so that what only needs the bounds (the score stage's
blend, the CLI's early checks through it) does not import River, which takes a second or
two to import (it loads SciPy).
"""

from __future__ import annotations

import math

__all__ = ["P_MAX", "P_MIN", "clamp", "log_odds_blend", "logit", "sigmoid"]

P_MIN, P_MAX = 0.001, 0.999  # no probability is ever exactly 0 or 1


def clamp(p: float) -> float:
    """``p`` within [P_MIN, P_MAX]: ``min(P_MAX, max(P_MIN, p))`` without the two calls
    (per event, several times): the same value, NaN included (it gives P_MIN)."""
    p = p if p > P_MIN else P_MIN
    return p if p < P_MAX else P_MAX


def sigmoid(z: float) -> float:
    """The logistic function, without overflow for a large negative ``z``."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


def logit(p: float) -> float:
    """The log-odds of ``p``, taken inside [P_MIN, P_MAX]."""
    p = clamp(p)
    return math.log(p / (1.0 - p))


def log_odds_blend(p_prior: float, p_model: float | None, w: float) -> float:
    """The served probability: prior and model blended in log-odds, weight ``w`` on the model.

    ``w`` = 0 (or no model) gives the prior, 1 the model; always inside [P_MIN, P_MAX].
    """
    if p_model is None or w <= 0.0:
        return clamp(p_prior)
    if w >= 1.0:
        return clamp(p_model)
    z = (1.0 - w) * logit(p_prior) + w * logit(p_model)
    return clamp(sigmoid(z))
