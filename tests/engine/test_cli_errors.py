"""Every CLI command, given each bad input a user can give, says so in one line.

Each case runs ``leadpulse`` as a user would (a subprocess, real servers: the test Redis
or the embedded Valkey) and asserts: exit code 2, exactly one line on stderr, no
traceback, and never the password from the URL. The cases run concurrently (a pool of
four) once per module; each test then checks its own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.gateway.auth import key_digest

pytestmark = pytest.mark.slow

LEADPULSE = [sys.executable, "-m", "engine.cli"]
SECRET = "s3cretPW"
KEY = "lpk_cli_errors_test_key_0123456789abcdef"

#: bad Redis URLs: (name, URL, what the one line must say)
BAD_URLS = {
    "no_scheme": ("127.0.0.1:6379", "must start with redis://"),
    "http": (f"http://:{SECRET}@127.0.0.1:6379/0", "must start with redis://"),
    "bad_port": (f"redis://:{SECRET}@127.0.0.1:99999/0", "port must be a number"),
    "unreachable": (f"redis://:{SECRET}@127.0.0.1:1/0", "cannot reach Redis at redis://:***@"),
}

#: every command that talks to Redis, as a user types it (the URL in REDIS_URL)
COMMANDS = {
    "up": ["up", "--port", "0"],
    "serve": ["serve"],
    "run": ["run"],
    "deliver": ["deliver"],
    "model": ["model", "status"],
    "merge": ["merge", "acme", "--keep", "A", "--other", "B"],
    "demo": ["demo", "--duration", "1"],
    "bench": ["bench", "--quick", "--only", "profile", "--no-progress"],
    "replay": ["replay", "EVENTS", "--scores-out", "OUT"],
}


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    expect: str


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def _busy_port() -> Generator[int, None, None]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


def _cases(tmp: Path, redis_url: str, busy: int) -> dict[str, Case]:
    events = tmp / "events.jsonl"
    events.write_text('{"event_id": "1", "lead_id": "L", "type": "page_view", "ts": 1}\n')
    out = str(tmp / "scores.jsonl")
    cases: dict[str, Case] = {}
    for cmd, argv in COMMANDS.items():
        argv = [str(events) if a == "EVENTS" else out if a == "OUT" else a for a in argv]
        if cmd == "bench":
            argv += ["--out", str(tmp / "bench")]
        for name, (url, expect) in BAD_URLS.items():
            # replay and bench take a server only on the command line
            flag = ("--redis-url", url) if cmd in ("replay", "bench") else ()
            env = (("LEADPULSE__REDIS__RETRIES", "0"),) + (() if flag else (("REDIS_URL", url),))
            cases[f"{cmd}-{name}"] = Case((*argv, *flag), env, expect)
    good = (("REDIS_URL", redis_url), ("LEADPULSE__REDIS__KEY_PREFIX", "tclierr"))
    gateway = (
        ("LEADPULSE__GATEWAY__CONTACT_HASH_KEY", "k" * 40),
        (f"LEADPULSE__GATEWAY__API_KEYS__{key_digest(KEY)}", '{ tenant = "acme" }'),
    )
    busy_s = str(busy)
    cases.update({
        "replay-missing-file": Case(
            ("replay", str(tmp / "nope.jsonl"), "--scores-out", out), (),
            "cannot read events file"),
        "replay-directory": Case(
            ("replay", str(tmp), "--scores-out", out), (), "cannot read events file"),
        "replay-unwritable-scores": Case(
            ("replay", str(events), "--scores-out", str(tmp / "no" / "dir" / "s.jsonl")), (),
            "--scores-out"),
        "replay-unwritable-rejects": Case(
            ("replay", str(events), "--scores-out", out, "--rejects-out", str(tmp)), (),
            "--rejects-out"),
        "run-missing-config": Case(
            ("run", "--config", str(tmp / "nope.toml")), good, "cannot read config file"),
        "model-no-data-dir": Case(
            ("model", "--data-dir", str(tmp / "nothing-here"), "status"), (),
            "no leadpulse data in"),
        "merge-no-data-dir": Case(
            ("merge", "acme", "--keep", "A", "--other", "B", "--data-dir", str(tmp / "none")),
            (), "no leadpulse data in"),
        "run-busy-metrics-port": Case(
            ("run",), (*good, ("LEADPULSE__METRICS__PORT", busy_s)), "metrics.port"),
        "deliver-busy-metrics-port": Case(
            ("deliver",), (*good, ("LEADPULSE__DELIVERY__METRICS_PORT", busy_s)),
            "delivery.metrics_port"),
        "serve-busy-port": Case(("serve", "--port", busy_s), (*good, *gateway), "in use"),
        "up-busy-port": Case(
            ("up", "--port", busy_s, "--data-dir", str(tmp / "up")), good, "in use"),
        "replay-usage": Case(("replay", str(events)), (), "required: --scores-out"),
        "run-usage": Case(("run", "--workers", "many"), (), "invalid int value"),
        "unknown-command": Case(("nope",), (), "invalid choice"),
    })  # fmt: skip
    return cases


def _run(case: Case, home: Path) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADPULSE")}
    env.pop("REDIS_URL", None)
    env.update(case.env)
    env["LEADPULSE_DATA_DIR"] = str(home / "data")  # never the checkout's ./leadpulse-data
    out = subprocess.run(
        [*LEADPULSE, *case.argv], capture_output=True, text=True, env=env, timeout=120,
        cwd=home,
    )  # fmt: skip
    return Result(out.returncode, out.stdout, out.stderr)


@pytest.fixture(scope="module")
def outcomes(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[Case, Result]]]:
    tmp = tmp_path_factory.mktemp("cli-errors")
    busy = _busy_port()
    port = next(busy)
    cases = _cases(tmp, redis_url, port)
    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(cases, pool.map(lambda c: _run(c, tmp), cases.values()), strict=True))
    yield {name: (cases[name], results[name]) for name in cases}
    busy.close()


def _static_names() -> list[str]:
    names = [f"{cmd}-{url}" for cmd in COMMANDS for url in BAD_URLS]
    return names + [
        "replay-missing-file", "replay-directory", "replay-unwritable-scores",
        "replay-unwritable-rejects", "run-missing-config", "model-no-data-dir",
        "merge-no-data-dir", "run-busy-metrics-port", "deliver-busy-metrics-port",
        "serve-busy-port", "up-busy-port", "replay-usage", "run-usage", "unknown-command",
    ]  # fmt: skip


@pytest.mark.parametrize("name", _static_names())
def test_one_line_exit_2_no_traceback_no_secret(
    name: str, outcomes: dict[str, tuple[Case, Result]]
) -> None:
    case, result = outcomes[name]
    lines = result.stderr.splitlines()
    assert result.code == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("leadpulse")
    assert case.expect in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert SECRET not in result.stderr + result.stdout
    if "--data-dir" in case.argv:  # keys are made only when they can be printed and used
        data = Path(case.argv[case.argv.index("--data-dir") + 1])
        assert not (data / "keys.toml").exists()
        assert "lpk_" not in result.stdout


def test_every_case_is_checked(outcomes: dict[str, tuple[Case, Result]]) -> None:
    assert sorted(outcomes) == sorted(_static_names())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cretPW@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://user:s3cretPW@h:6380/1", "rediss://user:***@h:6380/1"),
        ("redis://s3cretPW@h/0", "redis://***@h/0"),
        ("redis://:s3cret/PW@h:1/0", "redis://:***@h:1/0"),  # a password holding "/"
        ("http://h/hook?token=s3cretPW&a=1", "http://h/hook?token=***&a=1"),
        (":s3cretPW@127.0.0.1:6379", ":***@127.0.0.1:6379"),  # no scheme
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    from engine.redact import redact_text, redact_url

    assert redact_url(url) == shown
    assert redact_text(f"cannot reach {url}: refused") == f"cannot reach {shown}: refused"


def test_replay_names_rejected_lines_and_reasons(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    lines = [
        '{"event_id": "1", "lead_id": "L", "type": "showing_request", "ts": 1767225600}',
        "not json",
        "",
        '{"event_id": "2", "type": "property_view", "ts": 1767225601}',
        '{"event_id": "3", "lead_id": "M", "type": "teleport", "ts": 1767225601}',
        '{"event_id": "4", "type": "page_view", "ts": 1767225602}',
    ]
    events.write_text("\n".join(lines) + "\n")
    rejects = tmp_path / "r.jsonl"
    argv = ["replay", str(events), "--scores-out", str(tmp_path / "s.jsonl"),
            "--rejects-out", str(rejects)]  # fmt: skip
    out = _run(Case(tuple(argv), (), ""), tmp_path)
    assert out.code == 0, out.stderr
    assert "(4 rejected: 2 missing_field:lead_id, 1 malformed_json, 1 unknown_type:teleport)" in (
        out.stderr
    )
    rows = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert [(r["line"], r["reason"].split(" ")[0].rstrip(":")) for r in rows] == [
        (2, "malformed_json"), (4, "missing_field:lead_id"), (5, "unknown_type:teleport"),
        (6, "missing_field:lead_id"),
    ]  # fmt: skip
    assert [r["raw"] for r in rows] == [lines[1], lines[3], lines[4], lines[5]]


def test_deliver_healthz_says_why_redis_is_unavailable(redis_url: str) -> None:
    import redis

    from engine.delivery.cli import health

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = redis.Redis(port=port, socket_connect_timeout=1)
    assert health(down)() == (False, {"status": "unavailable", "redis": "ConnectionError"})
    up = redis.Redis.from_url(redis_url)
    assert health(up)() == (True, {"status": "ok", "redis": "ok"})
    up.close()
