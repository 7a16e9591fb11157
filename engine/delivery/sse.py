"""``GET /v1/alerts/stream``: Server-Sent Events of a tenant's feed, per agent or team.

Query: ``agent`` (only what that agent should see: their leads, offers to them, the
pond), ``team`` (one group), neither (the whole tenant). Resumable: each event's
``id`` is its feed stream id; a reconnecting ``EventSource`` sends ``Last-Event-ID``
and gets everything after it that the feed still holds (``feed_maxlen``). The
``last_event_id`` query parameter does the same for a first connection (the page
passes the ``feed_id`` it loaded the hot list at, so nothing falls in between).
Without either, the stream starts with what comes next. A comment line every
``sse_keepalive_s`` keeps proxies from closing an idle connection. With an agent key
(``web.current_agent``) ``agent`` is the key's agent and ``team`` a group that lists
it (``web.scope_view``, 403 otherwise).

Each connection blocks on ``XREAD`` with its own asyncio Redis connection, so open
streams never hold a worker thread.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import redis
import redis.asyncio as aredis
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from engine.delivery.feed import agent_names, redact_for_agent, visible
from engine.delivery.keys import DeliveryKeys
from engine.delivery.metrics import DeliveryMetrics
from engine.delivery.web import IDENT, current_agent, current_tenant, scope_view
from engine.settings import Settings

__all__ = ["async_client_like", "sse_router"]

_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def async_client_like(client: Any) -> aredis.Redis:
    """An asyncio client to the same server as a sync one (no read timeout: XREAD blocks)."""
    pool = client.connection_pool
    kw = pool.connection_kwargs
    if issubclass(pool.connection_class, redis.UnixDomainSocketConnection):
        return aredis.Redis(unix_socket_path=kw["path"], db=kw.get("db", 0),
                            username=kw.get("username"), password=kw.get("password"))  # fmt: skip
    return aredis.Redis(
        host=kw.get("host", "localhost"),
        port=kw.get("port", 6379),
        db=kw.get("db", 0),
        username=kw.get("username"),
        password=kw.get("password"),
        ssl=issubclass(pool.connection_class, redis.SSLConnection),
        socket_connect_timeout=5,
    )


def sse_router(settings: Settings, client: Any, metrics: DeliveryMetrics) -> APIRouter:
    keys = DeliveryKeys(settings.redis.key_prefix)
    keepalive_ms = int(settings.delivery.sse_keepalive_s * 1000)
    router = APIRouter(tags=["delivery"])

    @router.get(
        "/v1/alerts/stream",
        name="delivery_stream",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
            400: {"description": "Last-Event-ID is not a feed id"},
        },
    )
    async def stream(
        request: Request,
        tenant: str = Depends(current_tenant),
        me: str = Depends(current_agent),
        agent: str = Query("", pattern=r"^$|" + IDENT),
        team: str = Query("", pattern=r"^$|" + IDENT),
        last_event_id: str = Query("", max_length=41),
    ) -> StreamingResponse:
        agent, team = scope_view(settings, tenant, me, agent, team)
        start = request.headers.get("last-event-id") or last_event_id
        if start and not _ID.match(start):
            raise HTTPException(400, "Last-Event-ID must be a feed id like 1700000000000-0")
        feed = keys.feed(tenant)
        names = agent_names(settings.delivery.tenant(tenant))
        r = async_client_like(client)
        if not start:
            rows = await r.xrevrange(feed, count=1)
            start = rows[0][0].decode() if rows else "0-0"

        async def events() -> AsyncIterator[bytes]:
            metrics.sse_clients.inc()
            after = start
            try:
                yield b"retry: 2000\n\n"
                while not await request.is_disconnected():
                    reply = await r.xread({feed: after}, count=100, block=keepalive_ms)
                    if not reply:
                        yield b": keepalive\n\n"
                        continue
                    for sid, fields in reply[0][1]:
                        after = sid.decode()
                        if not visible(fields, agent, team):
                            continue
                        kind = fields[b"k"].decode()
                        data = fields[b"d"].decode()
                        if me:  # an agent key: colleagues' names stay hidden
                            seen = redact_for_agent(kind, json.loads(data), me, names)
                            data = json.dumps(seen)
                        yield f"id: {after}\nevent: {kind}\ndata: {data}\n\n".encode()
            finally:
                metrics.sse_clients.dec()
                with anyio.CancelScope(shield=True):  # a hang-up cancels the stream's scope
                    await r.aclose()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
