"""The cadence bench's side-by-side mode (``python -m benchmarks.cadence --side-by-side``):
each round drains the month off and on at once, in two processes, and reports each round's
on/off ratios. Checked: the ratio arithmetic; and on a tiny month against the suite's real
server, both children (one off, one on) drain every event, report their CPU, and leave
nothing under their prefixes, and the command writes its result."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import redis

from benchmarks.cadence import _paired, main, side_by_side


def _run(on: bool, rate: float, cpu: float) -> dict[str, object]:
    return {"on": on, "events_per_s": rate, "cpu_us_per_event": cpu}


def test_paired_ratios_are_each_rounds_on_over_off() -> None:
    runs = [_run(False, 100, 10.0), _run(True, 90, 11.0),
            _run(False, 200, 20.0), _run(True, 190, 21.0),
            _run(False, 50, 40.0), _run(True, 40, 50.0)]  # fmt: skip
    out = _paired(runs)
    assert out["on_vs_off_by_round"] == [-0.1, -0.05, -0.2]
    assert out["on_vs_off_median_of_rounds"] == -0.1
    assert out["on_vs_off_cpu_by_round"] == [0.1, 0.05, 0.25]
    assert out["on_vs_off_cpu_median_of_rounds"] == 0.1
    assert (out["off_cpu_us_per_event"], out["on_cpu_us_per_event"]) == (20.0, 21.0)


def test_side_by_side_drains_both_at_once(redis_url: str, client: redis.Redis,
                                          tmp_path: Path) -> None:  # fmt: skip
    args = argparse.Namespace(leads=30, days=3.0, rounds=1, redis_url=redis_url)
    off, on = side_by_side(args)
    assert (off["on"], on["on"]) == (False, True)
    assert off["events"] == on["events"] > 100
    assert off["cpu_us_per_event"] > 0 and on["cpu_us_per_event"] > 0
    for run in (off, on):  # each child dropped its keys
        assert not list(client.scan_iter(match=f"{{{run['prefix']}}}:*", count=1_000))
    out = tmp_path / "sbs.json"
    assert main(["--side-by-side", "--leads", "20", "--days", "2", "--rounds", "1",
                 "--redis-url", redis_url, "--out", str(out)]) == 0  # fmt: skip
    assert '"side_by_side": true' in out.read_text()


def test_a_child_that_fails_before_its_drain_stops_the_round() -> None:
    args = argparse.Namespace(leads=5, days=1.0, rounds=1, redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(SystemExit, match="failed before its drain"):
        side_by_side(args)  # (no Redis there: both children stop; none is left waiting)
