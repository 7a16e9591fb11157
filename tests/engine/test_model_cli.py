"""`leadpulse model status` as text: what the trainer's live model says of itself."""

from __future__ import annotations

import random

import pytest

from engine.model import ModelSet
from engine.model_cli import _print_live


def test_status_text_shows_the_score_calibration_map(capsys: pytest.CaptureFixture[str]) -> None:
    models, rng = ModelSet(), random.Random(4)
    _print_live(models.status())
    assert "score calibration" not in capsys.readouterr().out  # no label yet: the identity
    for i in range(60):
        y = rng.random() < 0.3
        models.learn({"id": f"e{i}", "seg": "all", "x": {"saves": float(y)}, "y": y,
                      "pb": 0.5, "pr": 0.2})  # fmt: skip
    _print_live(models.status())
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "score calibration" in ln)
    assert "(60 labels)" in line and "0.5 -> " in line
    mapped = models.score_calibration.snapshot()["map"]["0.5"]
    assert abs(mapped - models.calibrated_score(0.5)) < 1e-4
    assert f"0.5 -> {mapped:.3f}" in line
