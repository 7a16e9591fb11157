"""``serve``: the subcommand's parser, --new-key, start-up errors, and a real uvloop server."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from engine.errors import ConfigError, StoreError
from engine.gateway import cli
from engine.gateway.auth import key_digest
from engine.settings import load_settings
from tests.engine.gateway.conftest import SECRET, free_port

_RUN = (
    "import argparse, sys\n"
    "from engine.gateway import cli\n"
    "p = argparse.ArgumentParser(prog='leadpulse')\n"
    "sub = p.add_subparsers(dest='command', required=True)\n"
    "cli.add_parser(sub)\n"
    "sys.exit(cli.run(p.parse_args(sys.argv[1:])))\n"
)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="leadpulse")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(sub)
    return parser.parse_args(["serve", *argv])


def test_parser_defaults_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse()
    assert (args.command, args.host, args.port, args.new_key, args.role) == (
        "serve", None, None, None, "server",
    )  # fmt: skip
    assert args.config is None and args.verbose is False
    with pytest.raises(SystemExit):
        _parse("--help")
    assert "--new-key" in capsys.readouterr().out


def test_new_key_prints_a_key_and_config_that_loads(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse("--new-key", "acme", "--role", "tracker", "--origin", "https://a.example")
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    key = re.search(r"^\s+(lpk_trk_\S+)$", out, re.M)
    assert key is not None
    digest = key_digest(key.group(1))
    line = next(x.strip() for x in out.splitlines() if x.strip().startswith(f'"{digest}"'))
    entry = tomllib.loads(f"[gateway.api_keys]\n{line}\n")["gateway"]["api_keys"]
    s = load_settings(overrides={"gateway": {"api_keys": entry}}, environ={})
    assert s.gateway.api_keys[digest].origins == ("https://a.example",)
    env = re.search(r"(LEADPULSE__GATEWAY__API_KEYS__\w+)='(.*)'", out)
    assert env is not None
    s = load_settings(environ={env.group(1): env.group(2)})
    assert s.gateway.api_keys[digest].role == "tracker"


def test_new_key_refuses_a_bad_tenant() -> None:
    with pytest.raises(ConfigError, match="tenant"):
        cli.run(_parse("--new-key", "no spaces"))


def test_serve_without_a_redis_url_uses_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(ConfigError, match="cannot create data dir"):
        cli.run(_parse("--data-dir", str(not_a_dir / "data")))


def test_serve_says_when_redis_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADPULSE__REDIS__RETRIES", "0")
    with pytest.raises(StoreError, match="cannot reach Redis"):
        cli.run(_parse("--redis-url", f"redis://127.0.0.1:{free_port()}/0"))


def test_serve_refuses_to_start_without_secret_or_keys(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    for name in [n for n in os.environ if n.startswith("LEADPULSE")]:
        monkeypatch.delenv(name)
    with pytest.raises(ConfigError, match="gateway.contact_hash_key"):
        cli.run(_parse("--redis-url", redis_url))
    monkeypatch.setenv("LEADPULSE__GATEWAY__CONTACT_HASH_KEY", SECRET)
    with pytest.raises(ConfigError, match="gateway.api_keys"):
        cli.run(_parse("--redis-url", redis_url))


def test_serve_runs_on_uvloop_until_sigterm(redis_url: str, prefix: str) -> None:
    port = free_port()
    key = "lpk_cli_test_key_0123456789"
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "LEADPULSE__REDIS__KEY_PREFIX": prefix,
        "LEADPULSE__GATEWAY__CONTACT_HASH_KEY": SECRET,
        f"LEADPULSE__GATEWAY__API_KEYS__{key_digest(key)}": '{ tenant = "acme" }',
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN, "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1].decode()
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        r = httpx.post(
            f"{base}/v1/events", headers={"Authorization": f"Bearer {key}"},
            json=[{"event_id": "c1", "lead_id": "L1", "type": "page_view", "ts": time.time()}],
        )  # fmt: skip
        assert r.json()["accepted"] == 1
        assert "server" not in r.headers  # no server banner
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    code = proc.returncode
    assert code in (0, -signal.SIGTERM), err.decode()  # uvicorn shuts down, re-raises the signal
