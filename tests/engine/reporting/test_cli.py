"""``leadpulse report`` as a user runs it: the report and its files, and every bad input
in one line on stderr, exit code 2, no traceback, no password."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.reporting.render import PLOTS_EXTRA, plots
from tests.engine.reporting.conftest import SimRun

LEADPULSE = [sys.executable, "-m", "engine.cli", "report"]
PERIOD = ["--since", "2025-12-01", "--until", "2026-02-28"]


def _run(args: list[str], url: str, prefix: str = "lp") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": url, "LEADPULSE__REDIS__KEY_PREFIX": prefix}
    return subprocess.run([*LEADPULSE, *args], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_report_writes_markdown_json_and_plots(
    sim_run: SimRun, redis_url: str, tmp_path: Path
) -> None:
    done = _run([*PERIOD, "--out", str(tmp_path)], redis_url, sim_run.prefix)
    assert done.returncode == 0, done.stderr
    assert "# Weekly report: tenant sim, 2025-12-01 to 2026-02-28" in done.stdout
    assert "By bucket at first alert" in done.stdout and "too few" in done.stdout
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["total"]["leads"] == 150
    assert (tmp_path / "report.md").read_text().startswith("# Weekly report")
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert {"conversion_by_bucket.png", "sla_by_agent.png"} <= set(pngs)
    bare = _run([*PERIOD, "--out", str(tmp_path / "bare"), "--no-plots"], redis_url, sim_run.prefix)
    assert bare.returncode == 0 and not list((tmp_path / "bare").glob("*.png"))


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--since", "2026-13-01"], "--since '2026-13-01' is not a date (YYYY-MM-DD)"),
        (["--since", "2026-02-01", "--until", "2026-01-01"], "is after --until 2026-01-01"),
        (["--since", "2020-01-01", "--until", "2026-01-01"], "at most 800"),
    ],
)
def test_a_bad_period_is_one_line(args: list[str], said: str, redis_url: str) -> None:
    done = _run(args, redis_url)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"leadpulse: {done.stderr.strip()[11:]}"]
    assert said in done.stderr and "Traceback" not in done.stderr


def test_no_tenant_unreachable_redis_and_unwritable_out_are_one_line(
    redis_url: str, tmp_path: Path
) -> None:
    cases = [
        (_run([], redis_url, "tnodata"), "no tenant has report data yet"),
        (_run([], "redis://:s3cretPW@127.0.0.1:1/0"), "cannot reach Redis at redis://:***@"),
        (_run(["--out", "/proc/nope"], redis_url), "cannot write to /proc/nope"),
    ]
    for done, said in cases:
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and said in done.stderr
        assert "s3cretPW" not in done.stderr and "Traceback" not in done.stderr


def test_without_matplotlib_the_plots_say_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # also what earlier tests imported
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert plots(None, Path(".")) == PLOTS_EXTRA  # type: ignore[arg-type]
    assert "pip install 'leadpulse[bench]'" in PLOTS_EXTRA
