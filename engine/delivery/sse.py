"""``GET /v1/alerts/stream``: Server-Sent Events of a tenant's feed, per agent or team.

Query: ``agent`` (only what that agent should see: their leads, offers to them, the
pond), ``team`` (one group), neither (the whole tenant). Resumable: each event's
``id`` is its feed stream id; a reconnecting ``EventSource`` sends ``Last-Event-ID``
and gets everything after it that the feed still holds (``feed_maxlen``). The
``last_event_id`` query parameter does the same for a first connection (the page
passes the ``feed_id`` it loaded the hot list at, so nothing falls in between).
Without either, the stream starts with what comes next. A comment line every
``sse_keepalive_s`` keeps proxies from closing an idle connection. With an agent key
(``deps.current_agent``) ``agent`` is the key's agent and ``team`` a group that lists
it (``deps.scope_view``, 403 otherwise).

One :class:`FeedHub` per process reads each tenant's feed with a single blocking
``XREAD`` (one Redis connection per feed being watched) and fans the entries out to
every open stream from a bounded in-memory tail; a stream that resumes from further back
than the tail catches up with a short ``XRANGE``. So 1,000 open streams
hold a handful of Redis connections, and none holds a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import redis
import redis.asyncio as aredis
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from engine.delivery.deps import IDENT, current_agent, current_tenant, scope_view
from engine.delivery.feed import agent_names, redact_for_agent, visible
from engine.delivery.keys import DeliveryKeys
from engine.delivery.metrics import DeliveryMetrics
from engine.settings import Settings

__all__ = ["FeedHub", "async_client_like", "sse_router"]

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


Row = tuple[str, dict[bytes, bytes]]


def _key(sid: str) -> tuple[int, int]:
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _Tail:
    """The newest entries of one feed, as the hub read them."""

    floor: str  # every entry after this id and up to ``last`` is in ``rows``
    last: str
    rows: deque[tuple[tuple[int, int], str, dict[bytes, bytes]]] = field(
        default_factory=lambda: deque(maxlen=2_000)
    )
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reading: asyncio.Lock = field(default_factory=asyncio.Lock)
    conn: aredis.Redis | None = None  # the feed's one blocking connection
    users: int = 0


class FeedHub:
    """One blocking read per watched feed per process, fanned out to every open stream.

    There is no background task: the first stream that finds nothing new and nobody
    reading becomes the reader for one ``XREAD BLOCK`` on the feed's connection, and the
    others wait for what it brings. The last stream to leave closes the connection, in
    its own request, so nothing outlives the streams.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._tails: dict[str, _Tail] = {}

    async def latest(self, feed: str) -> str:
        async with async_client_like(self._client) as r:  # a short call: its own connection
            rows = await r.xrevrange(feed, count=1)
        return rows[0][0].decode() if rows else "0-0"

    async def join(self, feed: str) -> None:
        if feed not in self._tails:
            start = await self.latest(feed)
            self._tails.setdefault(feed, _Tail(floor=start, last=start))
        self._tails[feed].users += 1

    async def leave(self, feed: str) -> None:
        tail = self._tails.get(feed)
        if tail is None:
            return
        tail.users -= 1
        if tail.users <= 0 and tail.conn is not None and not tail.reading.locked():
            conn, tail.conn = tail.conn, None
            await conn.aclose()

    async def read(self, feed: str, after: str, wait_s: float) -> list[Row]:
        """Entries after ``after`` (at most 500), waiting up to ``wait_s`` for new ones."""
        tail = self._tails[feed]
        if _key(after) < _key(tail.floor):  # from before the tail: catch up from Redis
            async with async_client_like(self._client) as r:
                rows = await r.xrange(feed, min=f"({after}", count=500)
            return [(sid.decode(), fields) for sid, fields in rows]
        got = self._after(tail, after)
        if got:
            return got
        if tail.reading.locked():  # another stream is reading: wait for what it brings
            changed = tail.changed
            with anyio.move_on_after(wait_s):
                await changed.wait()
        else:
            async with tail.reading:
                await self._pull(feed, tail, wait_s)
        return self._after(tail, after)

    async def _pull(self, feed: str, tail: _Tail, wait_s: float) -> None:
        if tail.conn is None:
            tail.conn = async_client_like(self._client)
        block = max(1, int(wait_s * 1000))
        try:
            reply = await tail.conn.xread({feed: tail.last}, count=500, block=block)
        except BaseException:  # cancelled mid-read (a hang-up): the connection is spent
            conn, tail.conn = tail.conn, None
            with anyio.CancelScope(shield=True):
                await conn.aclose()
            raise
        for sid, fields in reply[0][1] if reply else ():
            sid_s = sid.decode()
            if len(tail.rows) == tail.rows.maxlen:
                tail.floor = tail.rows[0][1]
            tail.rows.append((_key(sid_s), sid_s, fields))
            tail.last = sid_s
        done, tail.changed = tail.changed, asyncio.Event()
        done.set()  # the waiters look again (new entries, or time for a keepalive)

    @staticmethod
    def _after(tail: _Tail, after: str) -> list[Row]:
        k = _key(after)
        return [(sid, fields) for key, sid, fields in tail.rows if key > k][:500]


@dataclass(frozen=True)
class _View:
    """What one stream may see: an agent's or a team's entries, redacted for an agent key."""

    agent: str
    team: str
    me: str  # the agent key's agent ("" for a server key)
    names: frozenset[str]  # the tenant's agent names, for redaction

    def render(self, sid: str, fields: dict[bytes, bytes]) -> bytes | None:
        if not visible(fields, self.agent, self.team):
            return None
        kind = fields[b"k"].decode()
        data = fields[b"d"].decode()
        if self.me:  # an agent key: colleagues' names stay hidden
            data = json.dumps(redact_for_agent(kind, json.loads(data), self.me, self.names))
        return f"id: {sid}\nevent: {kind}\ndata: {data}\n\n".encode()


async def _events(
    hub: FeedHub,
    feed: str,
    start: str,
    view: _View,
    request: Request,
    metrics: DeliveryMetrics,
    keepalive_s: float,
) -> AsyncIterator[bytes]:
    """One open stream: the hub's entries after ``start`` that ``view`` may see."""
    metrics.sse_clients.inc()
    after = start
    await hub.join(feed)
    try:
        yield b"retry: 2000\n\n"
        while not await request.is_disconnected():
            rows = await hub.read(feed, after, keepalive_s)
            if not rows:
                yield b": keepalive\n\n"
                continue
            for after, fields in rows:
                line = view.render(after, fields)
                if line is not None:
                    yield line
    finally:
        metrics.sse_clients.dec()
        with anyio.CancelScope(shield=True):  # a hang-up cancels the stream's scope
            await hub.leave(feed)


def sse_router(settings: Settings, client: Any, metrics: DeliveryMetrics) -> APIRouter:
    keys = DeliveryKeys(settings.redis.key_prefix)
    keepalive_ms = int(settings.delivery.sse_keepalive_s * 1000)
    hub = FeedHub(client)
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
        if not start:
            start = await hub.latest(feed)

        view = _View(agent, team, me, names)
        return StreamingResponse(
            _events(hub, feed, start, view, request, metrics, keepalive_ms / 1000),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
