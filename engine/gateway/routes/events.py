"""``POST /v1/events``: a JSON or msgpack array of events; a result per event.

Accepted events are in Redis (their lead's stream partition) before the response is
sent; a duplicate ``event_id`` within the idempotency window is not appended again; a
rejected event says why. The key decides the tenant.

No ``from __future__ import annotations``: FastAPI reads the route's ``Annotated``
metadata at run time.
"""

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from engine.gateway.auth import Principal
from engine.gateway.ingest import BodyError, Outcome, body_format, decode_body, lead_candidates
from engine.gateway.metrics import GatewayMetrics
from engine.gateway.models import ErrorOut, IngestOut
from engine.gateway.routes.deps import (
    E401,
    E403,
    E422,
    E429,
    E503,
    GatewayState,
    state,
    writer,
)
from engine.settings import GatewaySettings, Settings

__all__ = ["events_router", "read_body"]

log = logging.getLogger(__name__)


def events_router(settings: Settings) -> APIRouter:
    gw = settings.gateway
    router = APIRouter()

    @router.post("/v1/events", **_openapi(gw))
    async def post_events(
        request: Request,
        who: Annotated[Principal, Depends(writer)],
        g: Annotated[GatewayState, Depends(state)],
    ) -> Response:
        fmt = body_format(request.headers.get("content-type"))
        body = await read_body(request, gw.max_body_bytes, gw.body_timeout_s)
        items = decode_body(body, fmt, gw.max_events)
        g.metrics.events_per_request.observe(len(items))
        candidates = lead_candidates(items)
        aliases = await g.store.resolve_aliases(who.tenant, candidates)
        bound: set[str] = set()
        if who.is_tracker:  # which of the leads it names a server key has vouched for
            targets = {aliases.get(c, c) for c in candidates}
            bound = await g.store.bound(who.tenant, [t for t in targets if not t.startswith("~")])
        ready, outcomes = g.ingestor.prepare(items, who, aliases, bound)
        ids = await g.store.append(who.tenant, ready)
        for prepared, sid in zip(ready, ids, strict=True):
            if sid is None:
                outcomes[prepared.index] = Outcome(prepared.index, "duplicate", prepared.event_id)
        return JSONResponse(_summary(outcomes, g.metrics))

    return router


def _summary(outcomes: list[Outcome | None], m: GatewayMetrics) -> dict[str, Any]:
    """The response body: counts by status and one row per event, counted in metrics."""
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
    return {**counts, "results": results}


def _openapi(gw: GatewaySettings) -> dict[str, Any]:
    """The route's documentation: limits from the settings, the body's three formats."""
    event_array = {
        "type": "array",
        "maxItems": gw.max_events,
        "items": {"$ref": "#/components/schemas/Event"},
    }
    return {
        "response_model": IngestOut,
        "summary": "Append a batch of events",
        "description": (
            "A JSON array (`application/json`, or `text/plain` as browsers' sendBeacon "
            "sends it) or a msgpack array (`application/msgpack`) of contract-v1 events, "
            f"at most {gw.max_events} and {gw.max_body_bytes} bytes. Every event gets a "
            "result: accepted (appended to its lead's stream partition before this response "
            "is sent), duplicate (its event_id was seen within "
            f"{gw.idempotency_window_h:g} h; not appended again) or rejected (with a reason "
            "code). The key decides the tenant; an event naming another tenant is rejected."
        ),
        "responses": {
            400: {"model": ErrorOut, "description": "the body is not an array of events"},
            401: E401,
            403: E403,
            413: {"model": ErrorOut, "description": "body too large, or too many events"},
            415: {"model": ErrorOut, "description": "unsupported Content-Type"},
            422: E422,
            429: E429,
            503: E503,
        },
        "openapi_extra": {
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
    }


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
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
