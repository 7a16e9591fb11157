"""Alert delivery served by the gateway (``create_app``, i.e. ``leadpulse serve``).

The page and its assets need no key; the board, the SSE feed and the actions need a
server key in a header (401 without one, or with one in the URL) and see only that
key's tenant.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engine.delivery.consumer import DeliveryService
from engine.gateway.app import create_app
from engine.settings import load_settings
from tests.engine.delivery.conftest import handle_all, run_engine, send, tenant_config
from tests.engine.delivery.test_web import _sse
from tests.engine.gateway.conftest import ACME, BETA, Gateway, gateway_overrides, live_server


@pytest.fixture
def served(prefix: str, redis_url: str, client: Any) -> Iterator[tuple[str, DeliveryService]]:
    overrides = gateway_overrides(prefix)
    rules = [{"group": "north", "areas": ["02139"]}]
    overrides["delivery"] = {
        "sse_keepalive_s": 0.3,
        "tenants": {"acme": tenant_config(rules=rules), "beta": tenant_config(rules=rules)},
    }
    settings = load_settings(overrides=overrides, environ={})
    svc = DeliveryService(settings, client)
    send(settings, client, [
        {"event_id": f"h-{lead}", "lead_id": lead, "tenant": tenant, "type": "showing_request",
         "ts": time.time() - 1, "area": "02139", "property_id": f"P-{lead}", "source": "portal"}
        for lead, tenant in (("A1", "acme"), ("B1", "beta"))
    ])  # fmt: skip
    run_engine(settings, client)
    handle_all(svc)
    with live_server(create_app(settings, redis_url)) as url:
        yield url, svc


def _leads(board: dict[str, Any]) -> set[str]:
    return {r["lead_id"] for rows in board["buckets"].values() for r in rows}


def test_serve_has_the_page_and_scopes_delivery_by_the_key_in_a_header(
    served: tuple[str, DeliveryService],
) -> None:
    url, _ = served
    page = httpx.get(f"{url}/hotlist?agent=cy")  # static: no key
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'data-board-url="/v1/board"' in page.text
    assert 'data-stream-url="/v1/alerts/stream"' in page.text
    assert httpx.get(f"{url}/hotlist/hotlist.js").status_code == 200

    for path in ("/v1/board", "/v1/alerts/stream", "/v1/sla/report", "/v1/leads/A1/delivery"):
        assert httpx.get(f"{url}{path}").status_code == 401, path
        # a server key in the URL is refused, as everywhere on the gateway
        assert httpx.get(f"{url}{path}?key={ACME}").status_code == 401, path
    claim = httpx.post(f"{url}/v1/leads/A1/claim", json={"agent_id": "dee"})
    assert claim.status_code == 401 and claim.json()["error"] == "unauthorized"

    acme = {"Authorization": f"Bearer {ACME}"}
    beta = {"X-Api-Key": BETA}
    assert _leads(httpx.get(f"{url}/v1/board", headers=acme).json()) == {"A1"}
    assert _leads(httpx.get(f"{url}/v1/board", headers=beta).json()) == {"B1"}
    # ?tenant= (the gateway-less default) does not get around the key
    assert _leads(httpx.get(f"{url}/v1/board?tenant=beta", headers=acme).json()) == {"A1"}
    assert httpx.get(f"{url}/v1/leads/B1/delivery", headers=acme).json()["alert"] is None
    assert httpx.get(f"{url}/v1/leads/B1/delivery", headers=beta).json()["alert"] is not None
    # the gateway's own top-leads read keeps its route and shape
    top = httpx.get(f"{url}/v1/hotlist", headers=acme).json()
    assert top["tenant"] == "acme" and [x["lead_id"] for x in top["leads"]] == ["A1"]

    (a,) = _sse(f"{url}/v1/alerts/stream?last_event_id=0-0&tenant=beta", acme)
    assert a["event"] == "alert" and a["data"]["lead_id"] == "A1"
    (b,) = _sse(f"{url}/v1/alerts/stream", {**beta, "Last-Event-ID": "0-0"})
    assert b["event"] == "alert" and b["data"]["lead_id"] == "B1"

    taken = httpx.post(f"{url}/v1/leads/A1/claim", json={"agent_id": "dee"}, headers=acme)
    assert taken.status_code in (200, 409)


def test_openapi_documents_delivery_with_the_key_not_a_tenant_parameter(
    served: tuple[str, DeliveryService],
) -> None:
    url, _ = served
    spec = httpx.get(f"{url}/openapi.json").json()
    board = spec["paths"]["/v1/board"]["get"]
    assert "tenant" not in {p["name"] for p in board.get("parameters", [])}
    assert {"401", "403", "429"} <= set(board["responses"]) and board["security"]
    assert "security" not in spec["paths"]["/hotlist"]["get"]
    stream = spec["paths"]["/v1/alerts/stream"]["get"]["responses"]["200"]["content"]
    assert set(stream) == {"text/event-stream"}


def test_a_delivery_request_is_rate_limited_once(prefix: str, redis_url: str) -> None:
    """The key check runs once per request although routes depend on it twice (the
    router's Depends(reader) for the docs, and the tenant override)."""
    overrides = gateway_overrides(prefix, rate_per_s=0.001, rate_burst=2)
    gw = Gateway(load_settings(overrides=overrides, environ={}), redis_url)
    try:
        assert [gw.get("/v1/board").status_code for _ in range(3)] == [200, 200, 429]
    finally:
        gw.close()
