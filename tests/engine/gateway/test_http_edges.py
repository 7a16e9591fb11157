"""HTTP edges (issue 16, item 7): no redirect built from the Host header, security headers,
CORS only where a browser needs it, and the README's webhook verify() never raising."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.delivery.webhooks import sign
from engine.gateway.edges import PAGE_CSP
from tests.engine.gateway.conftest import ACME, ACME_TRACKER, Gateway, ev

README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.mark.parametrize("path", ["/v1/hotlist/", "/v1/board/", "/hotlist/", "/healthz/"])
def test_a_trailing_slash_is_not_redirected_to_the_host_header(gateway: Gateway, path: str) -> None:
    r = gateway.get(path, headers={"Host": "evil.example"})
    assert r.status_code == 404, (r.status_code, r.headers)
    assert "location" not in r.headers and r.json()["error"] == "not_found"


def test_the_hotlist_page_and_the_api_carry_security_headers(gateway: Gateway) -> None:
    page = gateway.get("/hotlist", key=None)
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == PAGE_CSP
    assert "frame-ancestors 'none'" in PAGE_CSP and "script-src 'self'" in PAGE_CSP
    for r in (page, gateway.get("/v1/hotlist"), gateway.get("/nope"), gateway.get("/healthz")):
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" in r.headers
    api = gateway.get("/v1/hotlist").headers["content-security-policy"]
    assert api.startswith("default-src 'none'")
    tracker = gateway.get("/tracker.js", key=None)  # embedded by other sites' pages
    assert "content-security-policy" not in tracker.headers
    assert "x-frame-options" not in tracker.headers


def _preflight(gw: Gateway, path: str, origin: str, headers: str = "content-type") -> Any:
    return gw.request("OPTIONS", path, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": headers,
    })  # fmt: skip


def test_cors_is_open_on_the_tracker_route_only(gateway: Gateway) -> None:
    page = "https://any-idx-site.example"
    body = gateway.post_events([ev("c1")], key=ACME_TRACKER, headers={"Origin": page})
    assert body.status_code == 200 and body.headers["access-control-allow-origin"] == "*"
    assert _preflight(gateway, "/v1/events", page).status_code == 200
    for path in ("/v1/hotlist", "/v1/board", "/v1/leads/L1", "/v1/sla/report"):
        r = gateway.get(path, headers={"Origin": page})
        assert "access-control-allow-origin" not in r.headers, path
        pre = _preflight(gateway, path, page, "authorization")
        assert "access-control-allow-origin" not in pre.headers, path
    r = gateway.request("POST", "/v1/leads/L1/ack", json={"agent_id": "cy"},
                        headers={"Origin": page, "Authorization": f"Bearer {ACME}"})  # fmt: skip
    assert "access-control-allow-origin" not in r.headers


def test_configured_origins_may_call_the_other_routes(
    make_gateway: Callable[..., Gateway],
) -> None:
    office = "https://office.acme.example"
    gw = make_gateway(cors_origins=[office])
    r = gw.get("/v1/hotlist", headers={"Origin": office})
    assert r.headers["access-control-allow-origin"] == office
    assert _preflight(gw, "/v1/board", office, "authorization").status_code == 200
    other = gw.get("/v1/hotlist", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def _readme_verify() -> Callable[[str, bytes, str, str], bool]:
    text = README.read_text()
    (code,) = [
        block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify(" in block
    ]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README verify()", "exec"), namespace)  # the README's own example
    return namespace["verify"]  # type: ignore[no-any-return]


def test_the_readmes_verify_example_returns_false_instead_of_raising() -> None:
    verify = _readme_verify()
    body, ts = b'{"alert_id":"a1"}', int(time.time())
    good = sign("s3cret", ts, body)
    assert verify("s3cret", body, str(ts), good) is True
    assert verify("s3cret", body + b" ", str(ts), good) is False
    assert verify("s3cret", body, str(ts - 3_600), sign("s3cret", ts - 3_600, body)) is False
    for timestamp in ("", "12a", "1e9", " 1", "٣٣", "9" * 400, "-5", "1.5"):
        assert verify("s3cret", body, timestamp, good) is False, timestamp
    for signature in ("v1=ä", "v1=\ud800", "", "v1=" + "0" * 64, "🙂"):
        assert verify("s3cret", body, str(ts), signature) is False, signature
