"""`leadpulse bench --quick`: the whole benchmark run, small, on the test server.

Asserts structure and sanity (positive, finite, consistent), never speed: the machine
is shared and noisy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import cli
from benchmarks.latency import histogram_quantile, prometheus_histogram
from benchmarks.simulator import open_loop


def _positive(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_bench_writes_every_figure(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "results"
    # every step but `quality`: that one is the learning issue's, with its own tests and time
    steps = "throughput,baselines,latency,memory,profile"
    args = ["--quick", "--no-progress", "--out", str(out), "--redis-url", redis_url]
    code = cli.main([*args, "--only", steps])
    assert code == 0
    result = json.loads((out / "bench-quick.json").read_text())
    assert (out / "bench-quick.md").read_text().startswith("# leadpulse bench (quick)")
    for name in result["files"]["plots"]:
        assert (out / name).stat().st_size > 1_000
    assert {"latency.png", "throughput.png"} <= {p.split("/")[-1] for p in result["files"]["plots"]}

    m = result["machine"]
    assert m["nproc"] >= 1 and m["python"] and m["redis_version"] and m["cpu_model"]

    tp = result["throughput"]["configs"]
    assert set(tp) == {"1 worker", "2 workers", "2 processes"}
    for row in tp.values():
        assert row["events"] == result["workload"]["throughput_events"]
        assert _positive(row["events_per_s"]) and _positive(row["seconds"])

    base = result["baselines"]
    assert _positive(base["floor"]["events_per_s"]) and base["floor"]["predictions"] > 0
    assert _positive(base["naive"]["events_per_s"]) and base["naive"]["events"] > 0
    assert _positive(result["ratios"]["engine_over_floor"])
    assert _positive(result["ratios"]["engine_over_naive"])

    levels = result["latency"]["levels"]
    assert [lv["load"] for lv in levels] == [0.25, 0.5, 0.8]
    for lv in levels:
        assert lv["offered_per_s"] < levels[-1]["offered_per_s"] * 1.01
        assert lv["alerts"] > 0
        q = lv["latency_ms"]
        assert 0 <= q["p50"] <= q["p95"] <= q["p99"] <= q["max"]
        assert lv["engine_histogram"]["count"] == lv["alerts"]  # the engine saw the same alerts

    points = result["memory"]["points"]
    assert len(points) == 2
    for p in points:
        assert _positive(p["bytes_per_lead"]) and p["used_memory_delta"] > 0
        assert _positive(p["sample"]["memory_usage_bytes_per_lead"])
        # one key a lead: the lead record holds features, score record, moments and marks
        assert set(p["sample"]["bytes_per_lead_by_part"]) == {"f"}
        assert p["sample"]["keys_per_lead"] == 1.0
        split = p["sample"]["record_bytes_per_lead"]
        assert _positive(split["features"]) and _positive(split["score"])
        parts = ("features", "score", "moments", "marks")
        assert sum(split[k] for k in parts) < split["value"]  # + the array head and schema

    prof = result["profile"]
    assert _positive(prof["us_per_event"]) and _positive(prof["server"]["exec_us_per_event"])
    stages = prof["stages_us_per_event"]
    assert _positive(stages["features (Python state; one read per batch for uncached leads)"])
    assert _positive(stages["decode+validate"]) and _positive(stages["commit (MULTI/EXEC)"])
    # the stages account for the plain run's time per event (within sampling noise)
    assert sum(v for v in stages.values() if v) == pytest.approx(prof["us_per_event"], rel=0.35)

    assert set(result["targets"]) >= {"engine >= 0.7x floor", "engine >= 4x naive"}


def test_peers_step_runs_engine_and_both_peers_on_one_file(
    redis_url: str, client: Any, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    before = set(client.scan_iter(match="bn*", count=1000))
    args = ["--quick", "--no-progress", "--out", str(out), "--redis-url", redis_url]
    assert cli.main([*args, "--only", "peers", "--peer-events", "500"]) == 0
    result = json.loads((out / "bench-quick.json").read_text())
    peers = result["peers"]
    assert peers["file"]["events"] == 500 and peers["file"]["leads"] > 1
    for side in ("engine", "inmemory", "naive"):
        row = peers[side]
        assert row["events"] == 500, side  # every line of the one file, by every side
        assert _positive(row["events_per_s"]) and _positive(row["seconds"])
        assert row["alerts"] > 0, side
    assert peers["inmemory"]["detail"]["predictions"] == 500  # River predicts every event
    assert peers["naive"]["detail"]["predictions"] == 500
    assert peers["inmemory"]["detail"]["learned"] == peers["naive"]["detail"]["learned"] > 0
    # 5 round trips an event, plus an XADD per alert
    trips = peers["naive"]["detail"]["redis_round_trips_per_event"]
    assert trips == pytest.approx(5 + peers["naive"]["alerts"] / 500, abs=1e-3)
    one = peers["rounds"][0]
    ratio = one["engine"]["events_per_s"] / one["inmemory"]["events_per_s"]
    assert peers["engine_over_inmemory"] == pytest.approx(ratio, rel=1e-3)
    ratio = one["engine"]["events_per_s"] / one["naive"]["events_per_s"]
    assert peers["engine_over_naive"] == pytest.approx(ratio, rel=1e-3)
    # the engine's and the naive peer's keys are gone (private prefixes, deleted after)
    assert set(client.scan_iter(match="bn*", count=1000)) <= before

    targets = result["targets"]
    assert (
        targets["engine >= 0.12x in-memory Bytewax peer"]["measured"]
        == (peers["engine_over_inmemory"])
    )
    assert targets["engine >= 8x naive peer (5 round trips)"]["met"] is not None
    text = (out / "bench-quick.md").read_text()
    assert "## Engine vs in-memory Bytewax peer and naive peer (one file: 500 events" in text
    assert "| in-memory Bytewax peer |" in text and "| naive peer (5 unpipelined" in text


def test_open_loop_keeps_the_schedule_whatever_the_consumer_does() -> None:
    now = [0.0]
    calls: list[tuple[float, int]] = []

    def send(chunk: Any) -> None:
        calls.append((now[0], len(chunk)))
        now[0] += 0.05  # a slow consumer: each send takes 50 ms

    stats = open_loop(range(100), 1_000.0, send, clock=lambda: now[0], sleep=lambda s: None)
    assert stats.sent == 100 == sum(n for _, n in calls)
    # nothing waits for the consumer: later sends carry everything that fell due meanwhile
    assert calls[0][1] == 1 and max(n for _, n in calls) >= 40
    assert stats.max_behind_s == pytest.approx(0.05, abs=0.002)


def test_open_loop_rejects_a_bad_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        open_loop([1], 0.0, lambda chunk: None)


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    text = "\n".join(
        [
            'x_bucket{le="0.01"} 50.0',
            'x_bucket{le="0.1"} 90.0',
            'x_bucket{le="+Inf"} 100.0',
            "x_count 100.0",
            "x_sum 3.0",
        ]
    )
    hist = prometheus_histogram(text, "x")
    assert hist["count"] == 100.0 and hist["sum"] == 3.0
    assert histogram_quantile(hist, 0.5) == pytest.approx(0.01)
    assert histogram_quantile(hist, 0.7) == pytest.approx(0.055)
    assert histogram_quantile(hist, 0.99) == pytest.approx(0.1)  # +Inf: the last finite edge
    assert histogram_quantile({}, 0.5) is None


def test_bench_subcommand_plugs_into_an_argparse_cli() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="leadpulse")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(sub)
    args = parser.parse_args(["bench", "--quick", "--only", "memory", "--out", "x"])
    assert args.command == "bench" and args.quick and args.only == "memory" and args.out == "x"
    assert callable(cli.run)
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--no-such-flag"])


def test_leadpulse_bench_is_wired_into_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    assert main(["bench", "--only", "no-such-step"]) == 2  # refused before any work
    assert "no-such-step" in capsys.readouterr().err


def test_latency_ab_runs_every_arm_from_its_own_tree(redis_url: str, tmp_path: Path) -> None:
    from benchmarks import latency

    here = str(Path(__file__).resolve().parents[2])
    with pytest.raises(SystemExit, match="engine imports from"):
        latency.main(["--arm", f"elsewhere={tmp_path}", "--redis-url", redis_url])
    out = tmp_path / "ab.json"
    argv = ["--arm", f"a={here}", "--arm", f"b={here}", "--max-rate", "800", "--seconds", "2",
            "--rounds", "2", "--redis-url", redis_url, "--out", str(out)]  # fmt: skip
    assert latency.main(argv) == 0
    result = json.loads(out.read_text())
    assert [(r["arm"], r["round"]) for r in result["runs"]] == [
        ("a", 0), ("b", 0), ("b", 1), ("a", 1)
    ]  # fmt: skip
    assert result["offered_per_s"] == 400.0
    for run in result["runs"]:
        assert run["events"] == 800
        assert run["alerts"] > 0
        assert run["engine_cpu_us_per_event"] > 0
        assert run["engine_histogram"]["agrees_on_count"]
    assert set(result["summary"]) == {"a", "b"}
    assert result["arm_commits"]["a"] == result["arm_commits"]["b"] != "unknown"


def test_the_p99_target_is_judged_only_at_a_measured_maximum() -> None:
    level = {"load": 0.5, "latency_ms": {"p99": 16.0}}
    measured = {"latency": {"max_from": "throughput: 1 worker", "levels": [level]}}
    assumed = {"latency": {"max_from": "assumed (throughput not run)", "levels": [level]}}
    name = "p99 <= 50 ms at 50 % of max (ms)"
    assert cli._targets(measured)[name] == {"measured": 16.0, "met": True}
    assert cli._targets(assumed)[name] == {"measured": None, "met": None}
