"""What the gateway's routes share: the state ``create_app`` builds, and who is asking.

:class:`GatewayState` lives on ``app.state.gateway``; a route takes it with
``Depends(state)``. The key dependencies run per request on ``/v1/*``: authenticate
(401), origin check for tracker keys (403), rate limit (429 + ``Retry-After``), then the
role check (403: trackers only post events, agent keys never do, see
``engine.gateway.auth``). FastAPI caches a dependency within a request, so a request that
needs ``reader`` twice (a route's own and a router's) is rate-limited once.

No ``from __future__ import annotations``: FastAPI reads these signatures' ``Annotated``
metadata at run time.
"""

from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from engine.delivery.keys import DeliveryKeys
from engine.gateway.auth import KeyRing, Principal
from engine.gateway.ingest import Ingestor
from engine.gateway.metrics import GatewayMetrics
from engine.gateway.models import ErrorOut
from engine.gateway.ratelimit import limit_for
from engine.gateway.store import GatewayStore
from engine.settings import Settings

__all__ = [
    "KEYED_ERRORS",
    "ApiError",
    "GatewayState",
    "current_agent",
    "current_tenant",
    "manager",
    "reader",
    "state",
    "writer",
]


@dataclass(frozen=True)
class GatewayState:
    """One gateway's parts, built once by ``create_app``."""

    settings: Settings
    keys: KeyRing
    store: GatewayStore  # async: ingest, scores, rate limits
    ingestor: Ingestor
    metrics: GatewayMetrics
    delivery_client: Any  # a sync redis.Redis: delivery's reads and actions
    delivery_keys: DeliveryKeys


async def state(request: Request) -> GatewayState:
    """The app's :class:`GatewayState` (async: FastAPI would run a plain function in a
    worker thread)."""
    return cast(GatewayState, request.app.state.gateway)


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


E401 = {"model": ErrorOut, "description": "no API key, or not a known one"}
E403 = {"model": ErrorOut, "description": "the key may not do this (role or page origin)"}
E422 = {"model": ErrorOut, "description": "a path or query parameter is invalid"}
E429 = {
    "model": ErrorOut,
    "description": "rate limited: retry after the given seconds",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}
E503 = {
    "model": ErrorOut,
    "description": "Redis unavailable: nothing was stored; retry",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}
#: The errors of any keyed route, for ``responses=`` in /openapi.json.
KEYED_ERRORS: dict[int | str, dict[str, Any]] = {
    401: E401,
    403: E403,
    422: E422,
    429: E429,
    503: E503,
}

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
header_key = APIKeyHeader(name="X-Api-Key", auto_error=False)
query_key = APIKeyQuery(
    name="key", auto_error=False, description="tracker keys only (sendBeacon sets no headers)"
)
_BEARER = {"WWW-Authenticate": "Bearer"}


def _known(gw: GatewayState, presented: str | None, from_query: bool) -> Principal:
    """The key's principal: 401 without a key, for an unknown one, or a non-tracker key
    sent in the URL."""
    if not presented:
        raise ApiError(
            401, "unauthorized", "send the API key as Authorization: Bearer <key> or X-Api-Key",
            _BEARER,
        )  # fmt: skip
    who = gw.keys.authenticate(presented)
    if who is None:
        raise ApiError(401, "unauthorized", "unknown API key", _BEARER)
    if from_query and not who.is_tracker:
        raise ApiError(
            401, "unauthorized", "server and agent keys must be sent in a header, never in "
            "the URL (rotate this key: URLs end up in logs)", _BEARER,
        )  # fmt: skip
    return who


async def _admit(request: Request, presented: str | None, from_query: bool) -> Principal:
    """Authenticate, check a tracker key's page origin, then rate-limit the key."""
    gw = await state(request)
    who = _known(gw, presented, from_query)
    if who.is_tracker and who.origins:
        origin = request.headers.get("origin", "")
        if origin not in who.origins:
            raise ApiError(403, "forbidden", "this tracker key is not allowed from this origin")
    client = request.client.host if request.client else "unknown"
    bucket, limit = limit_for(who, gw.settings.gateway, client)
    decision = await gw.store.rate_limit(bucket, limit)
    if not decision.allowed:
        gw.metrics.rate_limited.inc()
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
    """Who may post events: server and tracker keys (a tracker key also in ``?key=``)."""
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
    """Who may read: server and agent keys, in a header only."""
    who = await _admit(request, auth.credentials if auth else api_key, from_query=False)
    if who.is_tracker:
        raise ApiError(403, "forbidden", "tracker keys cannot read leads; use a server key")
    return who


async def manager(who: Annotated[Principal, Depends(reader)]) -> Principal:
    """Tenant-wide reads: server keys only."""
    if who.is_agent:
        raise ApiError(403, "forbidden", "agent keys cannot read the whole tenant; use /v1/board")
    return who


async def current_tenant(who: Annotated[Principal, Depends(reader)]) -> str:
    """The tenant of a server or agent key (401/403/429 as for the reads): for routers
    mounted on this app, e.g. ``app.dependency_overrides[delivery.deps.current_tenant]
    = app.state.current_tenant``."""
    return who.tenant


async def current_agent(who: Annotated[Principal, Depends(reader)]) -> str:
    """The agent of an agent key, ``""`` (unrestricted) for a server key: overrides
    ``delivery.deps.current_agent``, which scopes the board, feed, lead reads and
    actions to that agent."""
    return who.agent if who.is_agent else ""
