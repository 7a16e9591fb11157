"""Security review, gateway side: no key, secret or contact detail in logs or in Redis.

Everything the gateway logs at DEBUG while it takes events with contact details, wrong
keys and a server key in a URL is captured, and every value under the test's key prefix
is read back: the API key, the contact-hash secret and the raw email and phone appear in
neither. The real ``serve`` process with ``--access-log`` redacts query strings.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.harness import wait_http
from engine.app import build_parts
from engine.dataflow import build_flow, run_flow
from engine.gateway.auth import key_digest
from tests.engine.gateway.conftest import ACME, ACME_TRACKER, SECRET, Gateway, ev, free_port

EMAIL = "Jane.Doe+house@Example.com"
PHONE = "+1 (617) 555-0199"


def _redis_dump(client: Any, prefix: str) -> str:
    """Every key name and value under ``prefix``, as one searchable text."""
    parts: list[str] = []
    for key in client.scan_iter(match=f"{{{prefix}}}:*", count=1000):
        kind = client.type(key).decode()
        parts.append(key.decode(errors="replace"))
        if kind == "string":
            parts.append(repr(client.get(key)))
        elif kind == "hash":
            parts.append(repr(client.hgetall(key)))
        elif kind == "list":
            parts.append(repr(client.lrange(key, 0, -1)))
        elif kind == "set":
            parts.append(repr(client.smembers(key)))
        elif kind == "zset":
            parts.append(repr(client.zrange(key, 0, -1)))
        elif kind == "stream":
            parts.append(repr(client.xrange(key)))
    return "\n".join(parts)


def _forms(text: str) -> list[str]:
    """The ways a secret could show up: as is, lower-cased, and its digits run together."""
    digits = "".join(c for c in text if c.isdigit())
    return [text, text.lower()] + ([digits] if len(digits) >= 7 else [])


def test_no_key_secret_or_contact_detail_in_logs_or_redis(
    gateway: Gateway, client: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    events = [
        ev("s1", "L1", props={"email": EMAIL, "phone": PHONE}),
        ev("s2", "L1", "inquiry", props={"message": f"call me on {PHONE} or mail {EMAIL}"}),
    ]
    assert gateway.post_events(events).status_code == 200
    assert gateway.post_events(events, key=ACME + "x").status_code == 401
    assert gateway.post_events(events, key=None).status_code == 401
    in_url = gateway.request("GET", f"/v1/hotlist?key={ACME}")
    assert in_url.status_code in (401, 403)
    run_flow(build_flow(build_parts(gateway.settings, client), bounded=True))  # the engine too
    assert gateway.get("/v1/leads/L1").status_code == 200
    # (the test's own HTTP client logs its URLs; everything else is leadpulse and its stack)
    logs = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    stored = _redis_dump(client, prefix)
    assert "L1" in stored and "email_hash" in stored  # the events are there, hashed
    for secret in [ACME, SECRET, *_forms(EMAIL), *_forms(PHONE)]:
        assert secret not in logs, f"{secret!r} was logged"
        assert secret not in stored, f"{secret!r} is stored in Redis"


def test_serve_access_log_redacts_query_strings(
    tmp_path: Path, prefix: str, redis_url: str
) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[redis]\nkey_prefix = "{prefix}"\n[gateway]\ncontact_hash_key = "{SECRET}"\n'
        "[gateway.api_keys]\n"
        f'"{key_digest(ACME)}" = {{ tenant = "acme", role = "server" }}\n'
        f'"{key_digest(ACME_TRACKER)}" = {{ tenant = "acme", role = "tracker", '
        'origins = ["https://acme-homes.com"] }\n'
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LEADPULSE_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve", "--config", str(config), "--port",
         str(port), "--redis-url", redis_url, "--access-log", "-v"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", [proc], timeout_s=30)
        refused = httpx.get(f"{base}/v1/hotlist?key={ACME}", timeout=5)
        assert refused.status_code in (401, 403)
        beacon = httpx.post(
            f"{base}/v1/events?key={ACME_TRACKER}",
            content=b"[]",
            headers={"Content-Type": "text/plain", "Origin": "https://acme-homes.com"},
            timeout=5,
        )
        assert beacon.status_code < 500
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    text = out.decode(errors="replace")
    assert "/v1/hotlist?[redacted]" in text  # the access log is on, and redacted
    for secret in (ACME, ACME_TRACKER, hashlib.sha256(ACME.encode()).hexdigest()):
        assert secret not in text
