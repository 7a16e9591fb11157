"""The gateway app: ``create_app(settings, redis_url)`` -> a FastAPI (ASGI) app.

Routes (all errors are ``{"error": code, "detail": text}``, see ``/openapi.json``), one
module per resource under ``engine.gateway.routes``:

- ``POST /v1/events``          a JSON or msgpack array of events; per-event result;
                               accepted events are in Redis before the response
                               (``routes.events``)
- ``GET /v1/leads/{lead_id}``  score record and feature counters (server keys; agent
                               keys only for a lead assigned / offered to them or in
                               the pond) (``routes.leads``)
- ``GET /v1/hotlist``          the tenant's top leads (server keys only) (``routes.leads``)
- ``GET /healthz``             Redis reachable, stream lag per partition (503 when down)
- ``GET /metrics``             Prometheus text (both ``routes.health``)
- ``GET /tracker.js``          the IDX tracker script (``routes.tracker``)
- alert delivery (``engine.delivery.routers``, mounted by ``routes.delivery``): ``GET
  /hotlist`` the agents' page (static, no key), ``GET /v1/board``, ``GET
  /v1/alerts/stream`` (SSE), ``POST /v1/leads/{id}/claim|ack|contact`` and delivery's
  reads, all scoped to the tenant of the server or agent key sent in ``Authorization:
  Bearer`` / ``X-Api-Key`` (never a key in the URL); an agent key also to its agent
  (``engine.delivery.deps.current_agent``); ``GET /v1/reports/weekly`` likewise
- ``POST /v1/crm/{tenant}/{target}`` CRM webhooks in (``engine.gateway.crm``; signed by
  the CRM, no key)
- ``GET /openapi.json``        this API

Per request on ``/v1/*``: authenticate (401), origin check for tracker keys (403),
rate limit (429 + ``Retry-After``), role check (403: trackers only post events, agent
keys never do), then the route (``routes.deps``). Redis trouble is a 503 with
``Retry-After``, never a 500; nothing the caller sends is logged (``routes.errors``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from engine.delivery.keys import DeliveryKeys
from engine.errors import ConfigError, StoreError
from engine.gateway.actions import ActionGuard
from engine.gateway.auth import KeyRing
from engine.gateway.crm import crm_router
from engine.gateway.edges import SecurityHeaders, SplitCors
from engine.gateway.identify import verify_identify_token
from engine.gateway.ingest import Ingestor
from engine.gateway.metrics import GatewayMetrics
from engine.gateway.models import EventIn
from engine.gateway.privacy import ContactHasher
from engine.gateway.routes.delivery import delivery_client, include_delivery
from engine.gateway.routes.deps import GatewayState, current_agent, current_tenant
from engine.gateway.routes.errors import install_error_handlers
from engine.gateway.routes.events import events_router
from engine.gateway.routes.health import health_router
from engine.gateway.routes.leads import leads_router
from engine.gateway.routes.tracker import tracker_router
from engine.gateway.store import GatewayStore
from engine.gateway.streams import StreamGuard, Streams
from engine.records import RecordReader
from engine.settings import Settings
from engine.streams import stream_names

__all__ = ["create_app"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


class _MetricsMiddleware:
    """Counts every request by route template and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self._app = app
        self._m = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, _send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self._m.requests.labels(route, scope.get("method", ""), str(status)).inc()
            self._m.seconds.labels(route).observe(time.perf_counter() - started)


def create_app(
    settings: Settings, redis_url: str, *, metrics: GatewayMetrics | None = None
) -> FastAPI:
    """The gateway for ``settings`` against the Redis at ``redis_url``.

    Raises :class:`ConfigError` (naming the key) without a contact-hash secret or
    without any API key: a gateway that would refuse every request should not start.
    """
    gw = settings.gateway
    keys, hasher = _keys(settings)
    store = _store(settings, redis_url)
    streams = Streams(keys, per_key=gw.sse_max_per_key, total=gw.sse_max_streams)
    app = FastAPI(
        title="leadpulse gateway",
        version="1",
        summary="Ingest IDX events, read scores and the hot list, serve the tracker.",
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        redirect_slashes=False,  # a redirect would take its Location from the Host header
    )
    m = metrics if metrics is not None else GatewayMetrics.create()
    app.add_middleware(StreamGuard, streams=streams)
    app.add_middleware(
        ActionGuard, keys=keys, hasher=hasher, max_id_len=settings.validation.max_id_len,
        timeout_s=gw.body_timeout_s,
    )  # fmt: skip
    app.add_middleware(SplitCors, origins=gw.cors_origins)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(_MetricsMiddleware, metrics=m)
    install_error_handlers(app)
    vouch = partial(_vouch, keys)
    ingestor = Ingestor(settings.validation, hasher, settings.streams.partitions, vouch)
    state = GatewayState(
        settings=settings, keys=keys, store=store, ingestor=ingestor, metrics=m,
        delivery_client=delivery_client(settings, redis_url),
        delivery_keys=DeliveryKeys(settings.redis.key_prefix),
    )  # fmt: skip
    _set_state(app, state, streams)
    include_delivery(app, settings, state.delivery_client)
    app.include_router(crm_router(settings, redis_url, store))  # signed by the CRM, no key
    for router in (events_router(settings), leads_router(settings), health_router(),
                   tracker_router()):  # fmt: skip
        app.include_router(router)
    app.openapi = partial(_openapi, app)  # type: ignore[method-assign]
    return app


def _keys(settings: Settings) -> tuple[KeyRing, ContactHasher]:
    """The API keys and the contact hasher; a ConfigError naming the setting if either
    is missing."""
    gw = settings.gateway
    secret = gw.contact_hash_key.get_secret_value()
    if not secret:
        raise ConfigError(
            "gateway.contact_hash_key: empty; set LEADPULSE__GATEWAY__CONTACT_HASH_KEY to a "
            "random secret of at least 32 characters (emails and phones are stored only as "
            "keyed hashes)"
        )
    keys = KeyRing(gw.api_keys)
    if not len(keys):
        raise ConfigError(
            "gateway.api_keys: no API key configured; `leadpulse serve --new-key TENANT` "
            "prints a key and the line to add"
        )
    return keys, ContactHasher(secret.encode(), gw.default_country_code)


def _store(settings: Settings, redis_url: str) -> GatewayStore:
    return GatewayStore(
        redis_url,
        stream_names(settings),
        maxlen=settings.streams.maxlen,
        idempotency_ms=int(settings.gateway.idempotency_window_h * 3_600_000),
        contact_ttl_s=int(settings.features.idle_expire_d * 86_400),
        retries=min(settings.redis.retries, 3),
        socket_timeout_s=settings.redis.socket_timeout_s,
        records=RecordReader(settings),
    )


def _vouch(keys: KeyRing, tenant: str, lead: str, token: object) -> bool:
    """Whether ``token`` is an identify token a server key of ``tenant`` made for ``lead``."""
    return verify_identify_token(keys.server_digests(tenant), tenant, lead, token)


def _set_state(app: FastAPI, state: GatewayState, streams: Streams) -> None:
    """``app.state.gateway`` for the routes; the rest for the lifespan, tests and routers
    mounted later (``Depends(app.state.current_tenant)`` keys a route by the API key)."""
    app.state.gateway = state
    app.state.store = state.store
    app.state.metrics = state.metrics
    app.state.streams = streams
    app.state.delivery_client = state.delivery_client
    app.state.current_tenant = current_tenant
    app.state.current_agent = current_agent


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: GatewayState = app.state.gateway
    streams: Streams = app.state.streams
    try:
        await state.store.ping()
    except StoreError as exc:  # keep serving: /healthz says 503 until Redis is back
        log.warning("gateway started but %s", exc)
    streams.watch_signals()  # SIGTERM ends the open alert streams: serve exits at once
    yield
    streams.close_all()
    await state.store.close()
    state.delivery_client.close()


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The app's schema, with the event contract as ``Event`` and without delivery's
    ``?tenant=`` (here the key decides the tenant: ``dependency_overrides``)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Event"] = EventIn.model_json_schema(ref_template="#/components/schemas/{model}")
        for ops in schema.get("paths", {}).values():
            for op in ops.values():
                if "delivery" in op.get("tags", ()) and "parameters" in op:
                    op["parameters"] = [
                        p for p in op["parameters"]
                        if (p.get("in"), p.get("name")) != ("query", "tenant")
                    ]  # fmt: skip
        app.openapi_schema = schema
    return app.openapi_schema
