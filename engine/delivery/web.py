"""What the gateway mounts: ``routers(settings, client)`` -> SSE, hot-list page, actions, API.

::

    from engine.delivery import routers
    for router in routers(settings, client):        # client: a sync redis.Redis
        app.include_router(router)
    app.dependency_overrides[current_tenant] = tenant_from_api_key   # gateway auth

Every route takes the tenant from the :func:`current_tenant` dependency: by default
the ``tenant`` query parameter (for a gateway-less test app); the gateway overrides it
with its API-key lookup, so one tenant never reads another's leads.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from engine.delivery.metrics import DeliveryMetrics
from engine.settings import Settings

__all__ = ["IDENT", "current_tenant", "routers"]

IDENT = r"^[A-Za-z0-9_.-]{1,64}$"


def current_tenant(tenant: str = Query("default", pattern=IDENT)) -> str:
    """The caller's tenant. The gateway replaces this dependency with its API-key lookup."""
    return tenant


def routers(
    settings: Settings, client: Any, metrics: DeliveryMetrics | None = None
) -> list[APIRouter]:
    """The SSE stream, the hot-list page with its claim / ack / contact actions, the API."""
    from engine.delivery.api import api_router
    from engine.delivery.page import page_router
    from engine.delivery.sse import sse_router

    m = metrics or DeliveryMetrics.create()
    return [
        sse_router(settings, client, m),
        page_router(settings, client, m),
        api_router(settings, client, m),
    ]
