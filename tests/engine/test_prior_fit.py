"""Refitting the points prior from a tenant's own labels."""

from __future__ import annotations

import math
import random
import tomllib
from typing import Any

import pytest

from engine.prior_fit import refit_prior, to_toml
from engine.scoring import prior
from engine.settings import load_settings

S = load_settings(environ={})


def _examples(n: int, seed: int) -> list[dict[str, Any]]:
    """Leads whose replies predict *against* conversion (the seeds say the opposite)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        replies, saves = rng.randint(0, 3), rng.randint(0, 3)
        referral = rng.random() < 0.3
        z = -1.0 - 0.9 * replies + 0.6 * saves + (1.2 if referral else 0.0)
        x = {"replies": math.log1p(replies), "saves": math.log1p(saves),
             "source=referral" if referral else "source=website": 1.0}  # fmt: skip
        out.append({"x": x, "y": rng.random() < 1 / (1 + math.exp(-z))})
    return out


def test_refit_learns_the_tenants_signs_and_loads_as_config() -> None:
    fit = refit_prior(_examples(3_000, 1), S)
    assert fit is not None
    assert fit.points["replies"][0] < 0 < fit.points["saves"][0]
    assert fit.sources["referral"] > fit.sources["website"]
    text = to_toml(fit)
    overrides = tomllib.loads(text)
    refitted = load_settings(overrides=overrides, environ={})  # valid config, caps kept
    each, cap = refitted.scoring.points["saves"]
    assert abs(cap / each) == pytest.approx(3.0)  # the cap count: 3 saves at most, as before
    # the refitted prior ranks the tenant's leads the right way round
    lead_good = {"saves": 3, "replies": 0, "source": "referral"}
    lead_bad = {"saves": 0, "replies": 3, "source": "website"}
    assert prior(lead_good, refitted)[0] > prior(lead_bad, refitted)[0]


def test_too_few_or_one_class_is_refused() -> None:
    assert refit_prior(_examples(20, 2), S) is None
    assert refit_prior([{"x": {"saves": 1.0}, "y": True}] * 100, S) is None
