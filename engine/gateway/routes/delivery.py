"""Alert delivery and the weekly report, mounted on the gateway and keyed by its API keys.

Delivery's routers (``engine.delivery.routers``: the hot-list page, ``GET /v1/board``,
the SSE feed, ``POST /v1/leads/{id}/claim|ack|contact`` and delivery's reads) and
``GET /v1/reports/weekly`` take their tenant from ``engine.delivery.deps.current_tenant``
and who may act from ``current_agent``; here those are the key's tenant and, for an agent
key, its agent (header only: ``reader`` never looks at the URL). The page and its assets
are static and need no key.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import APIRouter, Depends, FastAPI

from engine.delivery import deps as delivery_deps
from engine.delivery.web import routers as delivery_routers
from engine.errors import StoreError
from engine.gateway import reports
from engine.gateway.routes.deps import KEYED_ERRORS, current_agent, current_tenant, reader
from engine.redis_client import connect
from engine.settings import Settings

__all__ = ["delivery_client", "include_delivery"]

log = logging.getLogger(__name__)

#: Delivery routes served without a key: the hot-list page and its script and style.
_KEYLESS = frozenset({"delivery_page", "delivery_asset"})


def delivery_client(settings: Settings, redis_url: str) -> redis.Redis:
    """The sync client delivery's routes read with. Redis down at start: serve all the
    same (as the gateway's store does) and answer 503 until it is back."""
    timeout_s = settings.redis.socket_timeout_s
    try:
        return connect(redis_url, min(settings.redis.retries, 3), timeout_s)
    except StoreError as exc:
        log.warning("delivery routes started without Redis: %s", exc)
        return redis.Redis.from_url(
            redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )


def include_delivery(app: FastAPI, settings: Settings, client: Any) -> None:
    """Mount delivery's routes and the weekly report, and key them by the API key."""
    keyed, keyless = APIRouter(), APIRouter()
    for router in delivery_routers(settings, client):
        for route in router.routes:  # the page and its assets are static: no key
            (keyless if getattr(route, "name", "") in _KEYLESS else keyed).routes.append(route)
    # Depends(reader) puts the key schemes in /openapi.json; FastAPI runs it once per
    # request all the same (dependencies are cached), so a request is rate-limited once.
    app.include_router(keyed, responses=KEYED_ERRORS, dependencies=[Depends(reader)])
    app.include_router(keyless)
    app.include_router(
        reports.router(settings, client), responses=KEYED_ERRORS, dependencies=[Depends(reader)]
    )
    app.dependency_overrides[delivery_deps.current_tenant] = current_tenant
    app.dependency_overrides[delivery_deps.current_agent] = current_agent
