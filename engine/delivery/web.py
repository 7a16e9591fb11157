"""What the gateway mounts: ``routers(settings, client)`` -> SSE, hot-list page, actions, API.

::

    from engine.delivery import routers
    for router in routers(settings, client):        # client: a sync redis.Redis
        app.include_router(router)
    app.dependency_overrides[current_tenant] = tenant_from_api_key   # gateway auth
    app.dependency_overrides[current_agent] = agent_of_api_key       # "" = unrestricted

``current_tenant`` and ``current_agent`` live in :mod:`engine.delivery.deps` (with the
rules on what an agent key may see). This module only assembles the routers: it imports
``api``, ``page`` and ``sse``, and none of them (nor ``deps``) imports it back.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from engine.delivery.api import api_router
from engine.delivery.metrics import DeliveryMetrics
from engine.delivery.page import page_router
from engine.delivery.sse import sse_router
from engine.settings import Settings

__all__ = ["routers"]


def routers(
    settings: Settings, client: Any, metrics: DeliveryMetrics | None = None
) -> list[APIRouter]:
    """The SSE stream, the hot-list page with its claim / ack / contact actions, the API."""
    m = metrics or DeliveryMetrics.create()
    return [
        sse_router(settings, client, m),
        page_router(settings, client, m),
        api_router(settings, client, m),
    ]
