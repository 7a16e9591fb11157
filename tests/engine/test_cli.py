"""The ``leadpulse`` command line, as a user runs it (subprocesses, real servers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LEADPULSE = [sys.executable, "-m", "engine.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADPULSE")}
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["demo"],
        ["run"],
        ["replay"],
        ["model"],
        ["model", "status"],
        ["merge"],
        ["migrate"],
        ["serve"],
        ["deliver"],
        ["bench"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    out = subprocess.run([*LEADPULSE, *command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "usage: leadpulse" in out.stdout


@pytest.mark.slow
def test_demo_runs_on_the_embedded_server_and_prints_alerts() -> None:
    out = subprocess.run(
        [*LEADPULSE, "demo", "--duration", "10"],
        capture_output=True, text=True, env=_env(), timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "embedded valkey" in out.stdout
    assert out.stdout.count("ALERT ") >= 1
    assert "HOT LIST" in out.stdout
    assert "done:" in out.stdout.splitlines()[-1]


def test_replay_cli_writes_scores_and_reports_its_rate(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text(
        json.dumps({"event_id": "1", "lead_id": "L", "type": "showing_request", "ts": 1767225600})
        + "\n"
        + json.dumps({"event_id": "2", "type": "property_view", "ts": 1767225601})
        + "\n"
    )
    scores, alerts = tmp_path / "s.jsonl", tmp_path / "a.jsonl"
    args = ["replay", str(events), "--scores-out", str(scores), "--alerts-out", str(alerts)]
    out = subprocess.run(
        [*LEADPULSE, *args], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "replayed 2 events (1 rejected: 1 missing_field:lead_id;" in out.stderr
    assert "events/s" in out.stderr
    (record,) = [json.loads(line) for line in scores.read_text().splitlines()]
    assert record["lead_id"] == "L" and record["tier"] == "hot"
    (alert,) = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert alert["triggers"][0] == "hand_raise:showing_request"


def test_a_bad_setting_is_refused_at_start_naming_the_key() -> None:
    out = subprocess.run(
        [*LEADPULSE, "run"], capture_output=True, text=True, timeout=60,
        env=_env(LEADPULSE__ALERTS__JUMP_POINTZ="3", REDIS_URL="redis://127.0.0.1:1"),
    )  # fmt: skip
    assert out.returncode == 2
    assert "alerts.jump_pointz: unknown setting" in out.stderr


def test_run_without_a_redis_url_wants_a_usable_data_dir(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    out = subprocess.run(
        [*LEADPULSE, "run", "--data-dir", str(not_a_dir / "data")],
        capture_output=True, text=True, env=_env(), timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "cannot create data dir" in out.stderr


def test_run_reports_an_unreachable_server_clearly() -> None:
    out = subprocess.run(
        [*LEADPULSE, "run"], capture_output=True, text=True, timeout=120,
        env=_env(REDIS_URL="redis://127.0.0.1:1/0", LEADPULSE__REDIS__RETRIES="0"),
    )  # fmt: skip
    assert out.returncode == 2
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in out.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from engine import __version__
    from engine.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"leadpulse {__version__}"
