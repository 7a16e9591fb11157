"""Bounds of every probability leadpulse serves: never exactly 0 or 1.

Kept apart from ``engine/model.py`` so that what only needs the bounds (the score stage's
blend, the CLI's early checks through it) does not import River, which takes a second or
two to import (it loads SciPy).
"""

from __future__ import annotations

import math

__all__ = ["P_MAX", "P_MIN", "clamp", "sigmoid"]

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
