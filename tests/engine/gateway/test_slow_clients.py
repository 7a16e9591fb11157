"""Slow, aborted and long-lived clients (issue 16, items 5 and 8): an aborted upload is no
500, a stalled body times out, alert streams are capped per key, and SIGTERM ends open
streams so ``serve`` exits at once."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest

from engine.gateway.app import create_app
from engine.gateway.auth import key_digest
from engine.settings import load_settings
from tests.engine.gateway.conftest import ACME, SECRET, free_port, gateway_overrides, live_server
from tests.engine.gateway.test_cli import _RUN

_HEAD = (
    "POST /v1/events HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
    "Content-Type: application/json\r\nContent-Length: {n}\r\n\r\n"
)


@contextmanager
def served(prefix: str, redis_url: str, **gateway: Any) -> Iterator[str]:
    settings = load_settings(overrides=gateway_overrides(prefix, **gateway), environ={})
    with live_server(create_app(settings, redis_url)) as url:
        yield url


def _raw(url: str, data: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(data)
    return sock


def test_an_aborted_upload_is_not_a_server_error(
    prefix: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with served(prefix, redis_url) as url, caplog.at_level(logging.DEBUG):
        for _ in range(3):
            sock = _raw(url, _HEAD.format(key=ACME, n=100_000).encode() + b'[{"event_id":')
            time.sleep(0.1)
            sock.close()
        time.sleep(0.3)
        assert httpx.get(f"{url}/healthz").status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert not any(r.exc_info for r in caplog.records)
    # the 500 series exists at 0 from the start; it must still be 0
    assert not re.search(r'_requests_total\{[^}]*status="500"\} (?!0\.0$)', metrics, re.M)


def test_a_stalled_body_times_out_with_408(prefix: str, redis_url: str) -> None:
    with served(prefix, redis_url, body_timeout_s=0.5) as url:
        started = time.monotonic()
        sock = _raw(url, _HEAD.format(key=ACME, n=1_000).encode() + b"[")
        answer = sock.recv(4096)
        sock.close()
        took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"timeout"' in answer and took < 3
        # the same for a hot-list action
        head = _HEAD.replace("/v1/events", "/v1/leads/L1/ack").format(key=ACME, n=500)
        sock = _raw(url, head.encode() + b"{")
        assert sock.recv(4096).startswith(b"HTTP/1.1 408")
        sock.close()


def _open_stream(stack: ExitStack, client: httpx.Client, url: str) -> httpx.Response:
    return stack.enter_context(
        client.stream("GET", f"{url}/v1/alerts/stream", headers={"X-Api-Key": ACME})
    )


def test_alert_streams_are_capped_per_key(prefix: str, redis_url: str) -> None:
    with served(prefix, redis_url, sse_max_per_key=2) as url, httpx.Client(timeout=5) as c:
        with ExitStack() as stack:
            first = [_open_stream(stack, c, url) for _ in range(2)]
            assert [r.status_code for r in first] == [200, 200]
            third = c.get(f"{url}/v1/alerts/stream", headers={"X-Api-Key": ACME})
            assert third.status_code == 429 and third.json()["error"] == "rate_limited"
            assert third.headers["retry-after"] == "5"
            nokey = c.get(f"{url}/v1/alerts/stream", headers={"X-Api-Key": "nope"})
            assert nokey.status_code == 401  # the route's own answer, not the cap's
        deadline = time.monotonic() + 5  # closed: the slots come back
        while True:
            with ExitStack() as stack:
                if _open_stream(stack, c, url).status_code == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)


def _start_serve(redis_url: str, prefix: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "LEADPULSE__REDIS__KEY_PREFIX": prefix,
        "LEADPULSE__GATEWAY__CONTACT_HASH_KEY": SECRET,
        f"LEADPULSE__GATEWAY__API_KEYS__{key_digest(ACME)}": '{ tenant = "acme" }',
    }
    return subprocess.Popen(
        [sys.executable, "-c", _RUN, "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _wait_up(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            return
        except httpx.TransportError:
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_ends_open_streams_and_serve_exits_at_once(redis_url: str, prefix: str) -> None:
    port = free_port()
    proc = _start_serve(redis_url, prefix, port)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base, proc)
        with httpx.Client(timeout=10) as c, ExitStack() as stack:
            streams = [_open_stream(stack, c, base) for _ in range(2)]
            assert all(r.status_code == 200 for r in streams)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            for r in streams:  # each answer ends (EventSource would reconnect elsewhere)
                for _ in r.iter_bytes():
                    pass
            _, err = proc.communicate(timeout=10)
            took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()
    assert took < 3, f"serve took {took:.1f} s to exit after SIGTERM"
