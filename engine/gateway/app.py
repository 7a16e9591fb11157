"""The gateway app: ``create_app(settings, redis_url)`` -> a FastAPI (ASGI) app.

Routes (all errors are ``{"error": code, "detail": text}``, see ``/openapi.json``):

- ``POST /v1/events``          a JSON or msgpack array of events; per-event result;
                               accepted events are in Redis before the response
- ``GET /v1/leads/{lead_id}``  score record and feature counters (server keys; agent
                               keys only for a lead assigned / offered to them or in
                               the pond)
- ``GET /v1/hotlist``          the tenant's top leads (server keys only)
- ``GET /healthz``             Redis reachable, stream lag per partition (503 when down)
- ``GET /metrics``             Prometheus text
- ``GET /tracker.js``          the IDX tracker script
- alert delivery (``engine.delivery.routers``): ``GET /hotlist`` the agents' page (static,
  no key), ``GET /v1/board``, ``GET /v1/alerts/stream`` (SSE), ``POST /v1/leads/{id}/
  claim|ack|contact`` and delivery's reads, all scoped to the tenant of the server or
  agent key sent in ``Authorization: Bearer`` / ``X-Api-Key`` (never a key in the URL);
  an agent key also to its agent (``engine.delivery.web.current_agent``)
- ``GET /openapi.json``        this API

Per request on ``/v1/*``: authenticate (401), origin check for tracker keys (403),
rate limit (429 + ``Retry-After``), role check (403: trackers only post events, agent
keys never do, see ``engine.gateway.auth``), then the route. Redis trouble is a 503 with
``Retry-After``, never a 500; nothing the caller sends is logged.

No ``from __future__ import annotations`` here: FastAPI reads the route signatures'
``Annotated`` metadata at run time, and those refer to names local to ``create_app``.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from engine.errors import ConfigError, StoreError
from engine.gateway.actions import ActionGuard
from engine.gateway.auth import KeyRing, Principal
from engine.gateway.edges import SecurityHeaders, SplitCors
from engine.gateway.identify import verify_identify_token
from engine.gateway.ingest import (
    BodyError,
    Ingestor,
    Outcome,
    body_format,
    decode_body,
    lead_candidates,
)
from engine.gateway.metrics import GatewayMetrics
from engine.gateway.models import (
    ErrorOut,
    EventIn,
    HealthOut,
    HotListOut,
    IngestOut,
    LeadOut,
    PartitionOut,
    ScoreOut,
)
from engine.gateway.privacy import ContactHasher
from engine.gateway.ratelimit import limit_for
from engine.gateway.store import GatewayStore
from engine.gateway.streams import StreamGuard, Streams
from engine.records import RecordReader
from engine.settings import Settings
from engine.streams import StreamNames
from engine.views import score_record

__all__ = ["ApiError", "create_app"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

#: Feature-hash fields the lead read exposes, and the feature names they carry.
_COUNTERS = {
    name: name
    for name in (
        "saves", "unsaves", "searches", "saved_searches", "shares", "mortgage_calcs",
        "valuation_views", "inquiries", "showing_requests", "valuation_requests",
        "call_requests", "email_opens", "email_clicks", "replies", "unsubscribes", "bounces",
        "opt_outs",
    )
} | {"unanswered": "agent_contacts_unanswered"}  # fmt: skip
_PROFILE = ("source", "side", "timeline")
#: Delivery routes served without a key: the hot-list page and its script and style.
_KEYLESS = frozenset({"delivery_page", "delivery_asset"})

_E401 = {"model": ErrorOut, "description": "no API key, or not a known one"}
_E403 = {"model": ErrorOut, "description": "the key may not do this (role or page origin)"}
_E422 = {"model": ErrorOut, "description": "a path or query parameter is invalid"}
_E429 = {
    "model": ErrorOut,
    "description": "rate limited: retry after the given seconds",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}
_E503 = {
    "model": ErrorOut,
    "description": "Redis unavailable: nothing was stored; retry",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}


class ApiError(Exception):
    """An error response: HTTP status, stable code, words, optional headers."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


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
    names = StreamNames(settings.redis.key_prefix, settings.streams.partitions)
    store = GatewayStore(
        redis_url,
        names,
        maxlen=settings.streams.maxlen,
        idempotency_ms=int(gw.idempotency_window_h * 3_600_000),
        contact_ttl_s=int(settings.features.idle_expire_d * 86_400),
        retries=min(settings.redis.retries, 3),
        socket_timeout_s=settings.redis.socket_timeout_s,
        records=RecordReader(settings),
    )
    hasher = ContactHasher(secret.encode(), gw.default_country_code)

    def vouch(tenant: str, lead: str, token: object) -> bool:
        return verify_identify_token(keys.server_digests(tenant), tenant, lead, token)

    ingestor = Ingestor(settings.validation, hasher, settings.streams.partitions, vouch)
    m = metrics if metrics is not None else GatewayMetrics.create()
    tracker_js = resources.files("engine.gateway").joinpath("tracker.js").read_bytes()

    streams = Streams(keys, per_key=gw.sse_max_per_key, total=gw.sse_max_streams)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await store.ping()
        except StoreError as exc:  # keep serving: /healthz says 503 until Redis is back
            log.warning("gateway started but %s", exc)
        streams.watch_signals()  # SIGTERM ends the open alert streams: serve exits at once
        yield
        streams.close_all()
        await store.close()
        app.state.delivery_client.close()

    app = FastAPI(
        title="leadpulse gateway",
        version="1",
        summary="Ingest IDX events, read scores and the hot list, serve the tracker.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        redirect_slashes=False,  # a redirect would take its Location from the Host header
    )
    app.state.store = store
    app.state.metrics = m
    app.state.streams = streams
    app.add_middleware(StreamGuard, streams=streams)
    app.add_middleware(
        ActionGuard, keys=keys, hasher=hasher, max_id_len=settings.validation.max_id_len,
        timeout_s=gw.body_timeout_s,
    )  # fmt: skip
    app.add_middleware(SplitCors, origins=gw.cors_origins)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(_MetricsMiddleware, metrics=m)

    # -- errors: one shape everywhere ---------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return _error(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(BodyError)
    async def _body_error(request: Request, exc: BodyError) -> Response:
        return _error(exc.status, exc.code, exc.detail)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> Response:
        log.warning("503: %s", exc)
        return _error(503, "unavailable", str(exc), {"Retry-After": "1"})

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_down(request: Request, exc: Exception) -> Response:
        log.warning("503: Redis: %s", exc.__class__.__name__)  # delivery's sync reads
        return _error(503, "unavailable", "Redis unavailable; retry", {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()))
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return _error(422, "bad_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {403: "forbidden", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        log.error("internal error on %s: %s", request.url.path, exc.__class__.__name__)
        return _error(500, "internal", "internal error")

    # -- auth + rate limit ---------------------------------------------------------------
    bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
    header_key = APIKeyHeader(name="X-Api-Key", auto_error=False)
    query_key = APIKeyQuery(
        name="key", auto_error=False, description="tracker keys only (sendBeacon sets no headers)"
    )

    async def _admit(request: Request, presented: str | None, from_query: bool) -> Principal:
        if not presented:
            raise ApiError(
                401, "unauthorized", "send the API key as Authorization: Bearer <key> or X-Api-Key",
                {"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        who = keys.authenticate(presented)
        if who is None:
            raise ApiError(401, "unauthorized", "unknown API key", {"WWW-Authenticate": "Bearer"})
        if from_query and not who.is_tracker:
            raise ApiError(
                401, "unauthorized", "server and agent keys must be sent in a header, never in "
                "the URL (rotate this key: URLs end up in logs)", {"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        if who.is_tracker and who.origins:
            origin = request.headers.get("origin", "")
            if origin not in who.origins:
                raise ApiError(403, "forbidden", "this tracker key is not allowed from this origin")
        client = request.client.host if request.client else "unknown"
        bucket, limit = limit_for(who, gw, client)
        decision = await store.rate_limit(bucket, limit)
        if not decision.allowed:
            m.rate_limited.inc()
            raise ApiError(
                429, "rate_limited", f"over {limit.rate:g} requests/s (burst {limit.burst}); "
                f"retry in {decision.retry_after_s} s",
                {"Retry-After": str(decision.retry_after_s)},
            )  # fmt: skip
        return who

    async def writer(
        request: Request,
        auth: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        api_key: Annotated[str | None, Security(header_key)],
        key: Annotated[str | None, Security(query_key)],
    ) -> Principal:
        presented = auth.credentials if auth else api_key
        who = await _admit(request, presented or key, from_query=not presented and bool(key))
        if who.is_agent:  # an agent acts through its actions, never with raw events
            raise ApiError(
                403, "forbidden", "agent keys cannot post events; use the hot list's claim, "
                "ack and contact actions, or a server key",
            )  # fmt: skip
        return who

    async def reader(
        request: Request,
        auth: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        api_key: Annotated[str | None, Security(header_key)],
    ) -> Principal:
        who = await _admit(request, auth.credentials if auth else api_key, from_query=False)
        if who.is_tracker:
            raise ApiError(403, "forbidden", "tracker keys cannot read leads; use a server key")
        return who

    async def manager(who: Annotated[Principal, Depends(reader)]) -> Principal:
        """Tenant-wide reads: server keys only."""
        if who.is_agent:
            raise ApiError(
                403, "forbidden", "agent keys cannot read the whole tenant; use /v1/board"
            )
        return who

    async def current_tenant(who: Annotated[Principal, Depends(reader)]) -> str:
        """The tenant of a server or agent key (401/403/429 as for the reads): for routers
        mounted on this app, e.g. ``app.dependency_overrides[delivery.web.current_tenant]
        = app.state.current_tenant``."""
        return who.tenant

    async def current_agent(who: Annotated[Principal, Depends(reader)]) -> str:
        """The agent of an agent key, ``""`` (unrestricted) for a server key: overrides
        ``delivery.web.current_agent``, which scopes the board, feed, lead reads and
        actions to that agent."""
        return who.agent if who.is_agent else ""

    app.state.current_tenant = current_tenant
    app.state.current_agent = current_agent

    # -- alert delivery: the hot-list page, its board, SSE feed and actions ---------------
    # Each delivery route takes its tenant from delivery's ``current_tenant`` and who may
    # act from ``current_agent``; here those are the key's tenant and, for an agent key,
    # its agent (header only: ``reader`` never looks at the URL).
    from engine.delivery import web as delivery_web
    from engine.delivery.keys import DeliveryKeys
    from engine.redis_client import connect

    try:
        delivery_client = connect(
            redis_url, min(settings.redis.retries, 3), settings.redis.socket_timeout_s
        )
    except StoreError as exc:  # as for the store: serve, and answer 503 until Redis is back
        log.warning("delivery routes started without Redis: %s", exc)
        delivery_client = redis.Redis.from_url(
            redis_url, socket_timeout=settings.redis.socket_timeout_s,
            socket_connect_timeout=settings.redis.socket_timeout_s,
        )  # fmt: skip
    app.state.delivery_client = delivery_client
    shared: dict[int | str, dict[str, Any]] = {
        401: _E401,
        403: _E403,
        422: _E422,
        429: _E429,
        503: _E503,
    }
    keyed, keyless = APIRouter(), APIRouter()
    for router in delivery_web.routers(settings, delivery_client):
        for route in router.routes:  # the page and its assets are static: no key
            (keyless if getattr(route, "name", "") in _KEYLESS else keyed).routes.append(route)
    # Depends(reader) puts the key schemes in /openapi.json; FastAPI runs it once per
    # request all the same (dependencies are cached), so a request is rate-limited once.
    app.include_router(keyed, responses=shared, dependencies=[Depends(reader)])
    app.include_router(keyless)
    from engine.gateway import reports  # GET /v1/reports/weekly (engine/reporting)

    app.include_router(
        reports.router(settings, delivery_client), responses=shared, dependencies=[Depends(reader)]
    )
    app.dependency_overrides[delivery_web.current_tenant] = current_tenant
    app.dependency_overrides[delivery_web.current_agent] = current_agent
    delivery_keys = DeliveryKeys(settings.redis.key_prefix)
    from engine.gateway.crm import crm_router  # CRM webhooks in: signed by the CRM, no key

    app.include_router(crm_router(settings, redis_url, store))

    # -- routes --------------------------------------------------------------------------
    event_array = {
        "type": "array",
        "maxItems": gw.max_events,
        "items": {"$ref": "#/components/schemas/Event"},
    }

    @app.post(
        "/v1/events",
        response_model=IngestOut,
        summary="Append a batch of events",
        description=(
            "A JSON array (`application/json`, or `text/plain` as browsers' sendBeacon "
            "sends it) or a msgpack array (`application/msgpack`) of contract-v1 events, "
            f"at most {gw.max_events} and {gw.max_body_bytes} bytes. Every event gets a "
            "result: accepted (appended to its lead's stream partition before this response "
            "is sent), duplicate (its event_id was seen within "
            f"{gw.idempotency_window_h:g} h; not appended again) or rejected (with a reason "
            "code). The key decides the tenant; an event naming another tenant is rejected."
        ),
        responses={
            400: {"model": ErrorOut, "description": "the body is not an array of events"},
            401: _E401,
            403: _E403,
            413: {"model": ErrorOut, "description": "body too large, or too many events"},
            415: {"model": ErrorOut, "description": "unsupported Content-Type"},
            422: _E422,
            429: _E429,
            503: _E503,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": event_array},
                    "application/msgpack": {"schema": event_array},
                    "text/plain": {
                        "schema": {"type": "string", "description": "a JSON array of events"}
                    },
                },
            }
        },
    )
    async def post_events(request: Request, who: Annotated[Principal, Depends(writer)]) -> Response:
        fmt = body_format(request.headers.get("content-type"))
        body = await _read_body(request, gw.max_body_bytes, gw.body_timeout_s)
        items = decode_body(body, fmt, gw.max_events)
        m.events_per_request.observe(len(items))
        candidates = lead_candidates(items)
        aliases = await store.resolve_aliases(who.tenant, candidates)
        bound: set[str] = set()
        if who.is_tracker:  # which of the leads it names a server key has vouched for
            targets = {aliases.get(c, c) for c in candidates}
            bound = await store.bound(who.tenant, [t for t in targets if not t.startswith("~")])
        ready, outcomes = ingestor.prepare(items, who, aliases, bound)
        ids = await store.append(who.tenant, ready)
        for prepared, sid in zip(ready, ids, strict=True):
            if sid is None:
                outcomes[prepared.index] = Outcome(prepared.index, "duplicate", prepared.event_id)
        counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
        results = []
        for out in outcomes:
            assert out is not None  # every slot is filled: rejected, or accepted/duplicate above
            counts[out.status] += 1
            row: dict[str, Any] = {"index": out.index, "status": out.status}
            if out.event_id is not None:
                row["event_id"] = out.event_id
            if out.reason is not None:
                row["reason"] = out.reason
                m.rejected.labels(out.reason.split(":", 1)[0][:40]).inc()
            if out.notes:
                row["notes"] = list(out.notes)
            results.append(row)
        m.accepted.inc(counts["accepted"])
        m.duplicate.inc(counts["duplicate"])
        return JSONResponse({**counts, "results": results})

    @app.get(
        "/v1/leads/{lead_id}",
        response_model=LeadOut,
        summary="A lead's score and feature counters",
        responses={401: _E401, 403: _E403, 404: {"model": ErrorOut}, 422: _E422, 429: _E429,
                   503: _E503},
    )  # fmt: skip
    async def get_lead(
        lead_id: Annotated[str, Path(min_length=1, max_length=settings.validation.max_id_len)],
        who: Annotated[Principal, Depends(reader)],
    ) -> LeadOut:
        if who.is_agent and not await run_in_threadpool(
            delivery_web.lead_visible, delivery_client, delivery_keys, who.tenant, lead_id,
            who.agent,
        ):  # fmt: skip
            raise ApiError(
                403, "forbidden", f"lead {lead_id} is not assigned or offered to agent "
                f"{who.agent}, nor in the pond",
            )  # fmt: skip
        raw_score, raw_feats = await store.lead(who.tenant, lead_id)
        record = _score(raw_score)
        if record is None and not raw_feats:
            raise ApiError(404, "not_found", "no such lead for this key's tenant")
        features: dict[str, float | str] = {}
        for field, name in _COUNTERS.items():
            features[name] = _num(raw_feats.get(field))
        features["dwell_min"] = _num(raw_feats.get("dwell_s")) / 60
        for name in _PROFILE:
            features[name] = raw_feats.get(name) or "unknown"
        last = raw_feats.get("last_ts")
        return LeadOut(
            tenant=who.tenant,
            lead_id=lead_id,
            score=record,
            features=features,
            last_event_ts=_num(last) if last else None,
        )

    @app.get(
        "/v1/hotlist",
        response_model=HotListOut,
        summary="The tenant's top leads by score",
        responses={401: _E401, 403: _E403, 422: _E422, 429: _E429, 503: _E503},
    )
    async def get_hotlist(
        who: Annotated[Principal, Depends(manager)],
        limit: Annotated[int, Query(ge=1, le=gw.hotlist_max)] = 10,
    ) -> HotListOut:
        rows = await store.hot_list(who.tenant, limit)
        leads = [r for r in (_score(row) for row in rows) if r is not None]
        return HotListOut(tenant=who.tenant, leads=leads)

    @app.get(
        "/healthz",
        response_model=HealthOut,
        summary="Redis reachable, and stream lag per partition",
        responses={503: {"model": HealthOut, "description": "Redis unreachable"}},
    )
    async def healthz() -> Response:
        try:
            lags = await store.stream_lag()
        except StoreError as exc:
            body = HealthOut(status="unavailable", redis=str(exc))
            return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "1"})
        parts = [
            PartitionOut(
                partition=p.partition, committed=p.committed, lag=p.lag, lag_capped=p.capped,
                oldest_age_s=p.oldest_age_s,
            )
            for p in lags
        ]  # fmt: skip
        body = HealthOut(status="ok", redis="ok", lag=sum(p.lag for p in lags), partitions=parts)
        return JSONResponse(body.model_dump())

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics_text() -> Response:
        data, content_type = m.render()
        return Response(data, media_type=content_type)

    @app.get(
        "/tracker.js",
        summary="The IDX tracker script",
        response_class=Response,
        responses={200: {"content": {"application/javascript": {"schema": {"type": "string"}}}}},
    )
    async def tracker() -> Response:
        return Response(
            tracker_js,
            media_type="application/javascript",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["Event"] = EventIn.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            # delivery's default tenant dependency reads ?tenant=; here the key decides
            # (dependency_overrides), so that parameter is not part of this API
            for ops in schema.get("paths", {}).values():
                for op in ops.values():
                    if "delivery" in op.get("tags", ()) and "parameters" in op:
                        op["parameters"] = [
                            p for p in op["parameters"]
                            if (p.get("in"), p.get("name")) != ("query", "tenant")
                        ]  # fmt: skip
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, refusing more than ``limit`` bytes (413) before reading them all, and a
    client that stops sending for ``timeout_s`` (408). A client that goes away mid-body
    is a 400 ``aborted`` (logged at debug: it is the client's doing, not a fault)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyError(413, "too_large", f"body of {declared} bytes > {limit}")
    chunks: list[bytes] = []
    size = 0
    stream = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                chunk = await anext(stream)
        except StopAsyncIteration:
            return b"".join(chunks)
        except TimeoutError:
            raise BodyError(408, "timeout", f"no body data for {timeout_s:g} s") from None
        except ClientDisconnect:
            log.debug("client went away during its upload")
            raise BodyError(400, "aborted", "the client closed the connection mid-body") from None
        size += len(chunk)
        if size > limit:
            raise BodyError(413, "too_large", f"body over {limit} bytes")
        chunks.append(chunk)


def _score(raw: dict[str, str]) -> ScoreOut | None:
    """The engine's score record, or None if there is none or it is not readable (a record
    half-written by another version is skipped, not a 500)."""
    if not raw:
        return None
    try:
        record = score_record(raw)
        return ScoreOut(**record) if record else None
    except (KeyError, ValueError, TypeError):
        log.warning("unreadable score record skipped")
        return None


def _num(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0
