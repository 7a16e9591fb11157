"""``leadpulse backtest``: its metrics against scikit-learn, its split, the command end to end.

The metrics (``engine/evaluation.py``) are checked against scikit-learn on random data;
the command replays a small simulator file through the real engine on the test server
and must write its report; bad input must end in one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.simulator import SimConfig, generate, write_jsonl
from engine import backtest as bt
from engine import evaluation as ev
from engine.cli import main
from engine.settings import load_settings

DAY = 86_400.0

# -- the metrics against scikit-learn ------------------------------------------------------

labels_and_scores = st.integers(min_value=2, max_value=200).flatmap(
    lambda n: st.tuples(
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.lists(st.integers(min_value=0, max_value=20), min_size=n, max_size=n),
    )
)


@settings(max_examples=150, deadline=None)
@given(labels_and_scores)
def test_auc_matches_sklearn_with_ties(data: tuple[list[bool], list[int]]) -> None:
    from sklearn.metrics import roc_auc_score

    y, grid = data
    p = [g / 20 for g in grid]  # coarse: many ties
    got = ev.auc(y, p)
    if len(set(y)) < 2:
        assert got is None
    else:
        assert got == pytest.approx(roc_auc_score(y, p))


def test_calibration_bins_match_sklearn_calibration_curve_and_sum_to_the_ece() -> None:
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(11)
    for n in (50, 400, 3_000):
        p = rng.random(n) ** 2
        y = rng.random(n) < np.clip(p * 1.3, 0, 1)
        rate, mean_p = calibration_curve(y, p, n_bins=10, strategy="uniform")
        bins = ev.calibration_bins(y, p)
        assert [b["rate"] for b in bins] == pytest.approx(list(rate))
        assert [b["mean_p"] for b in bins] == pytest.approx(list(mean_p))
        assert sum(b["n"] for b in bins) == n
        by_hand = sum(b["n"] * abs(b["mean_p"] - b["rate"]) for b in bins) / n
        assert ev.ece(y, p) == pytest.approx(by_hand)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.floats(min_value=0, max_value=1, allow_nan=False)),
        min_size=1,
        max_size=120,
        unique_by=lambda t: t[1],  # distinct scores: the top k is one set
    )
)
def test_precision_at_top_is_the_rate_among_the_k_highest(rows: list[tuple[bool, float]]) -> None:
    y = [r[0] for r in rows]
    p = [r[1] for r in rows]
    k = max(1, int(len(rows) * 0.15))
    top = sorted(rows, key=lambda r: r[1], reverse=True)[:k]
    assert ev.precision_at_top(y, p) == pytest.approx(sum(r[0] for r in top) / k)


def test_precision_at_top_counts_ties_by_expectation() -> None:
    y = [True] * 10 + [False] * 30
    assert ev.precision_at_top(y, [0.5] * 40) == pytest.approx(0.25)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(ev.BUCKETS)), min_size=1, max_size=80))
def test_lift_by_bucket(rows: list[tuple[bool, str]]) -> None:
    y = [r[0] for r in rows]
    got = {row["bucket"]: row for row in ev.lift_by_bucket(y, [r[1] for r in rows])}
    assert list(got) == list(ev.BUCKETS)
    assert sum(row["n"] for row in got.values()) == len(rows)
    base = sum(y) / len(y)
    for name, row in got.items():
        mine = [r[0] for r in rows if r[1] == name]
        assert row["n"] == len(mine) and row["positives"] == sum(mine)
        if not mine:
            assert row["rate"] is None and row["lift"] is None
            continue
        assert row["rate"] == pytest.approx(sum(mine) / len(mine))
        if base:
            assert row["lift"] == pytest.approx(row["rate"] / base)
        else:
            assert row["lift"] is None


def test_bucket_of_probability_uses_the_configured_floors() -> None:
    floors = {"p1": 90, "p2": 70, "p3": 50}
    got = [ev.bucket_of_probability(p, floors) for p in (0.95, 0.895, 0.7, 0.55, 0.494, 0.0)]
    assert got == ["P1", "P1", "P2", "P3", "P4", "P4"]  # round(p * 100), as the engine scores
    assert ev.bucket_of_probability(0.4, {"p1": 60, "p2": 40, "p3": 20}) == "P2"


# -- the split and the evaluation (pure) -------------------------------------------------------


def _example(i: int, ts_d: float, at_d: float, y: bool, outcome: str | None) -> dict[str, Any]:
    signal = float(i % 7) + (3.0 if y else 0.0)
    return {
        "id": f"e{i}",
        "seg": "all",
        "x": {"views_7d": signal, "source=portal": float(i % 2)},
        "y": y,
        "ts": ts_d * DAY,
        "at": at_d * DAY,
        "pb": min(0.99, 0.1 + 0.08 * signal),
        "pp": 0.3,
        "pr": 0.3,
        "pm": None,
        "tenant": "t",
        "lead": f"L{i % 50}",
        "outcome": outcome,
    }


def _examples(n: int = 400) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        ts = i * 0.25  # scored over days 0 .. 100
        y = i % 5 == 0
        at, outcome = (ts + 2.0, "appointment_set") if y else (ts + 31.0, None)
        rows.append(_example(i, ts, at, y, outcome))
    return rows


def test_split_is_forward_in_time_and_drops_censored_when_expiry_labels_exist() -> None:
    rows = _examples()
    last = 100.0 * DAY
    parts = bt.split(rows, 0.7, horizon_d=30.0, last_ts=last)
    usable = [r for r in rows if r["ts"] <= last - 30 * DAY]
    assert parts.censored == len(rows) - len(usable) > 0
    at = np.quantile([r["ts"] for r in usable], 0.7)
    assert parts.split_ts == pytest.approx(at)
    assert all(r["ts"] > at for r in parts.test)
    assert len(parts.test) == sum(r["ts"] > at for r in usable)
    assert parts.train and all(r["at"] < at for r in parts.train)  # known by the split
    assert parts.kinds == {"expired": 320, "positive": 80}
    # outcome labels only (no expiry): nothing is censored
    outcomes = [{**r, "outcome": r["outcome"] or "lost"} for r in rows]
    assert bt.split(outcomes, 0.7, horizon_d=30.0, last_ts=last).censored == 0


def test_evaluate_gives_every_score_and_the_buckets() -> None:
    rows = _examples()
    rows[-1]["bucket"] = "P5"  # the engine's bucket wins over the derived one
    out = bt.evaluate(rows, 0.5, 30.0, {"p1": 90, "p2": 70, "p3": 50}, last_ts=None)
    assert "too_few" not in out and out["censored_dropped"] == 0
    for name in bt.SCORES:
        row = out["scores"][name]
        assert row["n"] == out["split"]["test"] and 0.0 <= row["auc"] <= 1.0
        assert [b["bucket"] for b in row["buckets"]] == list(ev.BUCKETS)
        assert sum(b["n"] for b in row["buckets"]) == row["n"]
    assert out["scores"]["served"]["buckets"][4]["n"] == 1  # P5 only from the engine
    assert out["scores"]["prior"]["auc"] == 0.5  # a constant prior ranks nothing
    assert out["scores"]["served"]["auc"] > 0.75
    text = bt.markdown(out)
    assert "| served score (`pb`) |" in text and "| P5 |" in text


def test_too_few_examples_gives_no_figures() -> None:
    few = _examples(60)  # test ~18 examples after a 0.7 split
    out = bt.evaluate(few, 0.7, 30.0, None, last_ts=None)
    assert out["too_few"].startswith("too few examples:") and out["scores"] == {}
    assert "AUC" not in bt.markdown(out) and "too few examples" in bt.markdown(out)
    negatives = [{**r, "y": False, "outcome": "lost"} for r in _examples()]
    out = bt.evaluate(negatives, 0.7, 30.0, None, last_ts=None)
    assert "are negative (need both classes)" in out["too_few"]
    short = bt.evaluate(_examples(), 0.7, 30.0, None, last_ts=20.0 * DAY)  # all censored
    assert short["censored_dropped"] == 400 and "(censored)" in short["too_few"]


def test_batch_model_needs_enough_training_examples() -> None:
    rows = _examples()
    probs, why = bt.batch_lr(rows[:10], rows[100:])
    assert probs is None and why is not None and "too few examples" in why


def test_without_the_bench_extra_the_batch_model_and_plot_say_which_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    rows = _examples()
    out = bt.evaluate(rows, 0.5, 30.0, None, last_ts=None)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn... raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    probs, why = bt.batch_lr(rows[:200], rows[200:])
    assert probs is None and why is not None and "pip install 'leadpulse[bench]'" in why
    why = bt.plot(out, tmp_path / "p.png")
    assert why is not None and "matplotlib" in why and "leadpulse[bench]" in why
    assert not (tmp_path / "p.png").exists()
    without = bt.evaluate(rows, 0.5, 30.0, None, last_ts=None)
    assert without["scores"]["batch_lr"] is None and without["scores"]["served"]
    assert "| batch logistic regression | – |" in bt.markdown(without)


# -- the command end to end ------------------------------------------------------------------------


def _prefixes(client: redis.Redis) -> set[str]:
    return {k.decode().split(":", 1)[0] for k in client.scan_iter(match="bt*", count=1_000)}


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("backtest") / "sim.jsonl"
    write_jsonl(path, generate(SimConfig(seed=7, leads=200, days=90.0)))
    return path


def test_backtest_command_end_to_end(
    sim_file: Path, tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(redis_url)
    before = _prefixes(client)
    out = tmp_path / "report"
    code = main(["backtest", str(sim_file), "--out", str(out), "--redis-url", redis_url,
                 "--refit-prior"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    refitted = tomllib.loads((out / "prior.toml").read_text())  # a config the engine accepts
    assert load_settings(overrides=refitted, environ={}).scoring.points
    assert _prefixes(client) == before  # its keys are gone
    client.close()
    saved = json.loads((out / "backtest.json").read_text())
    assert saved["examples"] > 0 and saved["rejected"] == 0
    assert saved["split"]["test"] >= bt.MIN_EXAMPLES and "too_few" not in saved
    for name in ("prior", "served", "batch_lr"):
        row = saved["scores"][name]
        for key in ("auc", "precision_top15", "ece"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), (name, key)
        assert len(row["buckets"]) == 5
    report = (out / "backtest.md").read_text()
    assert report.startswith("# Backtest of sim.jsonl") and report in captured.out
    png = out / "backtest_reliability.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Traceback" not in captured.err


# -- bad input: one line ------------------------------------------------------------------------


def _one_line(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    assert err.startswith("leadpulse: ")
    return err


def test_missing_empty_and_bad_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    assert "no such file" in _one_line(capsys, main(["backtest", str(missing)]))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert "no events" in _one_line(capsys, main(["backtest", str(empty)]))
    assert "is a directory" in _one_line(capsys, main(["backtest", str(tmp_path)]))
    code = main(["backtest", str(empty), "--split", "1.5"])
    assert "--split must be between 0 and 1" in _one_line(capsys, code)


def test_no_outcomes_and_rejected_files_say_why(
    sim_file: Path, tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [json.loads(line) for line in sim_file.read_text().splitlines()[:3_000]]
    quiet = tmp_path / "no_outcomes.jsonl"
    write_jsonl(quiet, (e for e in events if e["type"] not in bt.OUTCOMES))
    code = main(["backtest", str(quiet), "--redis-url", redis_url, "--out", str(tmp_path)])
    assert "no outcome event" in _one_line(capsys, code)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('not json\n{"type": "lost"}\n[1, 2]\n')
    code = main(["backtest", str(garbage), "--redis-url", redis_url, "--out", str(tmp_path)])
    err = _one_line(capsys, code)
    assert "all 3 events were rejected" in err and "malformed_json" in err
    garbage.write_text("not json\n[1, 2]\n")
    assert "is a JSON object" in _one_line(capsys, main(["backtest", str(garbage)]))
