"""The quality benchmark (issue 3, section 7): its metric code, its split, its small mode.

The small mode replays a few hundred simulated leads and a quarter of the DIGINETICA
sample through the real engine on the test server. It asserts structure and sanity,
never the targets: at this size the figures are noise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import diginetica, online_shoppers
from benchmarks import quality as q

# -- the metric code on hand-made cases -----------------------------------------------------


def test_perfect_ranking_gives_auc_one_and_full_precision_at_the_top() -> None:
    y = [False] * 17 + [True] * 3  # n = 20 -> the top 15 % is 3 examples
    p = [i / 20 for i in range(20)]
    assert q.auc(y, p) == 1.0
    assert q.precision_at_top(y, p) == 1.0
    assert q.auc(y, p[::-1]) == 0.0
    assert q.precision_at_top(y, p[::-1]) == 0.0


def test_constant_predictions() -> None:
    y = [True] * 25 + [False] * 75
    p = [0.3] * 100
    assert q.ece(y, p) == pytest.approx(abs(0.3 - 0.25))
    assert q.auc(y, p) == 0.5
    assert q.precision_at_top(y, p) == pytest.approx(0.25)  # ties count by expectation
    assert q.brier(y, p) == pytest.approx(0.25 * 0.7**2 + 0.75 * 0.3**2)


def test_ece_by_hand_and_perfect_calibration() -> None:
    # bin [0.1, 0.2): 4 at 0.1, one positive (rate 0.25); bin [0.9, 1]: 4 at 0.9, all positive
    y = [True, False, False, False, True, True, True, True]
    p = [0.1] * 4 + [0.9] * 4
    assert q.ece(y, p) == pytest.approx(0.5 * 0.15 + 0.5 * 0.1)
    assert q.ece([True, False], [1.0, 0.0]) == 0.0  # p = 1.0 falls in the last bin


def test_auc_matches_sklearn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.2
    p = np.round(rng.random(500) * 0.5 + 0.3 * y, 1)  # coarse: many ties
    assert q.auc(y, p) == pytest.approx(roc_auc_score(y, p))


def test_undefined_cases() -> None:
    assert q.auc([True, True], [0.1, 0.2]) is None
    assert q.ece([], []) is None
    assert q.precision_at_top([], []) is None
    with pytest.raises(ValueError):
        q.auc([True], [0.1, 0.2])


def test_reliability_is_by_decile_in_score_order() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(1_000)
    y = rng.random(1_000) < p
    curve = q.reliability(y, p)
    assert len(curve) == 10 and sum(c["n"] for c in curve) == 1_000
    means = [c["mean_p"] for c in curve]
    assert means == sorted(means)
    assert all(abs(c["rate"] - c["mean_p"]) < 0.12 for c in curve)  # calibrated by design


# -- the forward-in-time split ----------------------------------------------------------------


def _example(i: int, ts_d: float, at_d: float, y: bool, lead: str) -> dict[str, Any]:
    day = q.DAY
    return {
        "id": f"e{i}",
        "seg": "all",
        "x": {"views_7d": float(i % 5) + (2.0 if y else 0.0), "source=portal": 1.0},
        "y": y,
        "ts": ts_d * day,
        "at": at_d * day,
        "pb": 0.6 if y else 0.2,
        "pp": 0.5,
        "pm": 0.6 if y else 0.2,
        "tenant": "t",
        "lead": lead,
        "proc": 0,
    }


def test_compare_trains_only_on_labels_known_before_the_split_and_drops_censored() -> None:
    rows = []
    for i in range(200):
        ts = i * 0.5  # scored over days 0 .. 99.5
        y = i % 4 == 0
        at = ts + (2.0 if y else 31.0)  # positives come fast, expiry after the horizon
        rows.append(_example(i, ts, at, y, f"L{i % 40}"))
    rows.append(_example(999, 100.0, 140.0, False, diginetica.FLUSH_LEAD))
    out = q.compare(
        rows, end_ts=100.0 * q.DAY, horizon_d=30.0, exclude_leads=[diginetica.FLUSH_LEAD]
    )
    # evaluable: ts <= day 70 -> i <= 140; the dummy lead is never counted
    assert out["labels"]["total"] == 200
    assert out["labels"]["evaluable"] == 141
    assert out["labels"]["censored_dropped"] == 59
    split_d = 0.7 * 70.0  # 49.0
    test = [r for r in rows[:141] if r["ts"] >= split_d * q.DAY]
    known = [r for r in rows[:141] if r["at"] < split_d * q.DAY]
    matured = [r for r in known if r["ts"] <= (split_d - 31.0) * q.DAY]
    assert out["split"]["test"] == len(test)
    assert out["split"]["train"] == len(known)
    assert out["split"]["train_matured"] == len(matured)
    # the early-positive bias the matured set avoids: more positives among known labels
    assert out["split"]["train_positives"] / len(known) > sum(r["y"] for r in matured) / len(
        matured
    )
    served = out["models"]["online_served"]
    assert served["auc"] == 1.0 and served["n"] == len(test)
    assert out["targets"]["online_served_ece"]["measured"] == pytest.approx(served["ece"], abs=1e-4)


# -- DIGINETICA as events --------------------------------------------------------------------


def test_diginetica_events_are_time_ordered_with_a_flush_at_the_end() -> None:
    data = diginetica.load(sessions=diginetica.session_ids()[::10])
    ts = [e["ts"] for e in data.events]
    assert ts == sorted(ts)
    views = [e for e in data.events if e["type"] == "property_view"]
    buys = [e for e in data.events if e["type"] == "appointment_set"]
    assert len(views) == data.views and len(buys) == data.orders > 0
    assert all(e["lead_id"].startswith("s") and e["property_id"].startswith("i") for e in views)
    flush = data.events[-1]
    assert flush["lead_id"] == diginetica.FLUSH_LEAD and flush["type"] == "page_view"
    assert flush["ts"] - ts[-2] == pytest.approx(diginetica.FLUSH_AFTER_D * q.DAY)
    assert len({e["event_id"] for e in data.events}) == len(data.events)


# -- Online Shoppers as events ----------------------------------------------------------------


def test_online_shoppers_sessions_become_leads_in_time_order() -> None:
    from engine.settings import load_settings
    from engine.validate import Rejection, Validator

    rows = online_shoppers.read_rows()
    data = online_shoppers.load(every=40)
    events = data.events
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert len({e["event_id"] for e in events}) == len(events)
    chosen = rows[::40]
    assert data.sessions == len(chosen) and data.purchases == sum(
        r["Revenue"] == "YES" for r in chosen
    )
    validator = Validator(load_settings(environ={}).validation)
    assert not [e for e in events if isinstance(validator.check(e), Rejection)]
    by_lead: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_lead.setdefault(e["lead_id"], []).append(e)
    for i, row in enumerate(chosen):
        got = by_lead[f"os{40 * i:05d}"]
        first, *pages, last = got
        assert first["type"] == "lead_created" and "page_value" not in first["props"]
        assert first["props"] == {
            "traffic": f"t{row['TrafficType']}",
            "visitor": row["VisitorType"],
        }
        kinds = [e["type"] for e in pages]
        assert kinds.count("property_view") == int(row["ProductRelated"])
        assert kinds.count("page_view") == int(row["Administrative"]) + int(row["Informational"])
        views = [e["property_id"] for e in pages if e["type"] == "property_view"]
        assert len(set(views)) == len(views)  # every product page its own property
        dwell = sum(e["dwell_s"] for e in pages if e["type"] == "property_view")
        rounding = 0.0005 * len(views) + 1e-6  # each page's dwell is rounded to 1 ms
        assert dwell == pytest.approx(float(row["ProductRelated_Duration"]), abs=rounding)
        assert last["type"] == ("appointment_set" if row["Revenue"] == "YES" else "lost")
        assert all(last["ts"] > e["ts"] for e in got[:-1])  # the outcome follows every page
    # months in calendar order, sessions spread inside their month
    months = [online_shoppers.MONTHS[r["Month"]] for r in chosen]
    starts = [by_lead[f"os{40 * i:05d}"][0]["ts"] for i in range(len(chosen))]
    for k in range(1, len(chosen)):
        if months[k - 1] == months[k]:
            assert starts[k - 1] < starts[k]  # file order within the month
        else:
            assert (starts[k - 1] < starts[k]) == (months[k - 1] < months[k])


def test_online_shoppers_page_values_and_no_lost_modes() -> None:
    data = online_shoppers.load(every=200, page_values=True, lost=False)
    created = [e for e in data.events if e["type"] == "lead_created"]
    assert all(e["props"]["page_value"] in ("0", "0-10", "10-50", "50+") for e in created)
    assert not any(e["type"] == "lost" for e in data.events)
    flush = data.events[-1]
    assert flush["lead_id"] == online_shoppers.FLUSH_LEAD
    assert flush["ts"] - data.last_ts == pytest.approx(online_shoppers.FLUSH_AFTER_D * q.DAY)


def test_online_shoppers_config_declares_the_profile_fields() -> None:
    import tomllib

    config = tomllib.loads(online_shoppers.CONFIG_FILE.read_text())
    assert config["features"]["profile"] == ["props.traffic", "props.visitor"]


def test_online_shoppers_profile_fields_reach_the_model(redis_url: str, tmp_path: Path) -> None:
    data = online_shoppers.load(every=150)
    got = q.replay_labels(data.events, redis_url, tmp_path, config=online_shoppers.CONFIG_FILE)
    own = [ex for ex in got.examples if ex["lead"] != online_shoppers.FLUSH_LEAD]
    assert len(own) == data.sessions  # one labelled example a session (its outcome)
    assert all(any(k.startswith("props.traffic=t") for k in ex["x"]) for ex in own)
    assert all(any(k.startswith("props.visitor=") for k in ex["x"]) for ex in own)
    assert not any("page_value" in k for ex in own for k in ex["x"])


# -- the small mode end to end ----------------------------------------------------------------


def _unit(x: Any) -> bool:
    return isinstance(x, float) and math.isfinite(x) and 0.0 <= x <= 1.0


def test_small_mode_writes_every_model_for_every_dataset(redis_url: str, tmp_path: Path) -> None:
    result = q.run_quality("small", tmp_path, redis_url)
    saved = json.loads((tmp_path / "quality_small.json").read_text())
    assert saved["mode"] == "small"
    assert saved["datasets"].keys() == {"simulator", "diginetica", "online_shoppers"}
    assert (tmp_path / "quality_small.md").read_text().startswith("# Quality benchmark (small")
    png = tmp_path / "quality_small_reliability.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert saved == json.loads(json.dumps(result))
    for name, data in saved["datasets"].items():
        labels = data["labels"]
        assert labels["total"] > 0, name
        assert 0 < labels["positives"] < labels["total"], name  # both classes
        assert labels["duplicate_snapshot_labels"] == 0, name
        split = data["split"]
        assert 0 < split["test_positives"] < split["test"], name
        for model in q.MODELS:
            row = data["models"][model]
            assert row is not None, (name, model)
            assert row["n"] > 0 and _unit(row["auc"]), (name, model)
            for key in ("precision_top15", "ece", "brier"):
                assert _unit(row[key]), (name, model, key)
            assert len(data["reliability"][model]) == 10
        assert set(data["targets"]) == {
            "online_auc_minus_batch_lr",
            "online_auc_minus_points_prior",
            "online_served_ece",
        }
        for target in data["targets"].values():
            assert isinstance(target["met"], bool)
        # the engine's progressive ECE of the served score is there too
        assert data["engine_live_quality"]["labels"] > 0
        # train/serve: relearning the labels stream predicts every served `pm` again
        ts = data["train_serve"]
        assert ts["compared"] > 0 and ts["ready_mismatches"] == 0, (name, ts)
        assert ts["over_1e_6"] == 0 and ts["max_abs_diff"] < 1e-6, (name, ts)


def test_ece_floor_is_the_noise_of_a_perfectly_calibrated_score() -> None:
    """Few examples with spread-out probabilities: even outcomes drawn from the score
    itself measure a clearly non-zero ECE; many examples bring it near zero."""
    rng = np.random.default_rng(3)
    small = q.ece_floor(rng.uniform(0.0, 0.8, 500), rounds=50)
    large = q.ece_floor(rng.uniform(0.0, 0.8, 50_000), rounds=20)
    assert 0.02 < small["median"] <= small["p90"] < 0.1
    assert large["p90"] < 0.01 < small["median"]
    target = q.targets({"online_served": {"ece": 0.05, "auc": 0.7}}, None, small)
    assert target["online_served_ece"]["if_calibrated"] == [small["median"], small["p90"]]


def test_recalibration_bound_tells_a_base_rate_miss_from_a_shape_miss() -> None:
    """A score off by a constant in log-odds (what late negatives do to a model that learns
    positives at once) is fixed by the oracle intercept shift; a score whose top saturates
    (the true rate levels off while the score keeps rising) is not: only a slope helps."""
    rng = np.random.default_rng(5)
    p = rng.uniform(0.01, 0.6, 20_000)
    y = rng.random(20_000) < p
    z = np.log(p / (1 - p))
    inflated = 1 / (1 + np.exp(-(z + 0.5)))
    bound = q.recalibration_bound(y, inflated)
    assert q.ece(y, inflated) > 0.05
    assert bound["shift"]["shift"] == pytest.approx(-0.5, abs=0.06)
    assert bound["shift"]["ece"] < 0.015  # back to the noise of 20,000 examples
    assert bound["platt"]["slope"] == pytest.approx(1.0, abs=0.08)
    served = 1 / (1 + np.exp(-2 * z))  # over-confident: rising where the truth levels off
    saturating = rng.random(20_000) < 0.1 + 0.4 * p
    bound = q.recalibration_bound(saturating, served)
    assert bound["shift"]["ece"] > 0.08  # no intercept shift can fix a shape
    assert bound["platt"]["slope"] < 0.6 and bound["platt"]["ece"] < bound["shift"]["ece"]
    assert q.recalibration_bound([True, True], [0.2, 0.3]) == {}  # one class: no fit


def test_compare_reports_the_recalibration_bound_and_findings_say_it() -> None:
    rows = [_example(i, i * 0.5, i * 0.5 + (2.0 if i % 4 == 0 else 31.0), i % 4 == 0,
                     f"L{i % 40}") for i in range(200)]  # fmt: skip
    out = q.compare(rows, end_ts=100.0 * q.DAY, horizon_d=30.0)
    bound = out["ece_after_oracle_recalibration"]
    assert set(bound) == {"shift", "platt"} and bound["shift"]["slope"] == 1.0
    text = " ".join(q.findings({"datasets": {"simulator": out}}))
    assert f"gives an ECE of {bound['shift']['ece']:.3f}" in text
