"""Score reads: ``GET /v1/leads/{lead_id}`` and ``GET /v1/hotlist``.

A lead's score record, feature counters and follow-up plan (plan, step, next due time
and why; engine/cadence): server keys for any lead of their tenant,
agent keys only for a lead assigned or offered to them or in the pond. The hot list (the
tenant's top leads by score) is a tenant-wide read: server keys only.

No ``from __future__ import annotations``: FastAPI reads the routes' ``Annotated``
metadata (limits from the settings) at run time.
"""

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from starlette.concurrency import run_in_threadpool

from engine.cadence.plans import Book, compile_book
from engine.cadence.runner import describe
from engine.delivery.deps import lead_visible
from engine.gateway.auth import Principal
from engine.gateway.models import CadenceOut, ErrorOut, HotListOut, LeadOut, ScoreOut
from engine.gateway.routes.deps import (
    E401,
    E403,
    E422,
    E429,
    E503,
    ApiError,
    GatewayState,
    manager,
    reader,
    state,
)
from engine.keys import lead_key
from engine.settings import Settings
from engine.streams import stream_names
from engine.views import score_record

__all__ = ["leads_router"]

log = logging.getLogger(__name__)

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


def leads_router(settings: Settings) -> APIRouter:
    router = APIRouter()
    max_id_len = settings.validation.max_id_len
    book = compile_book(settings.cadence)  # the follow-up plans, for the lead's plan view
    names = stream_names(settings)  # a lead's plan lives at its home (redis.key_layout)

    @router.get(
        "/v1/leads/{lead_id}",
        response_model=LeadOut,
        summary="A lead's score and feature counters",
        responses={401: E401, 403: E403, 404: {"model": ErrorOut}, 422: E422, 429: E429,
                   503: E503},
    )  # fmt: skip
    async def get_lead(
        lead_id: Annotated[str, Path(min_length=1, max_length=max_id_len)],
        who: Annotated[Principal, Depends(reader)],
        g: Annotated[GatewayState, Depends(state)],
    ) -> LeadOut:
        if who.is_agent and not await run_in_threadpool(
            lead_visible, g.delivery_client, g.delivery_keys, who.tenant, lead_id, who.agent
        ):
            raise ApiError(
                403, "forbidden", f"lead {lead_id} is not assigned or offered to agent "
                f"{who.agent}, nor in the pond",
            )  # fmt: skip
        raw_score, raw_feats = await g.store.lead(who.tenant, lead_id)
        record = _score(raw_score)
        if record is None and not raw_feats:
            raise ApiError(404, "not_found", "no such lead for this key's tenant")
        last = raw_feats.get("last_ts")
        tz = settings.delivery.tenant(who.tenant).timezone or settings.alerts.timezone
        plan = await _plan(g, lead_key(names.home(who.tenant, lead_id), who.tenant, lead_id, "c"),
                           book, tz)  # fmt: skip
        return LeadOut(
            tenant=who.tenant,
            lead_id=lead_id,
            score=record,
            cadence=plan,
            features=_features(raw_feats),
            last_event_ts=_num(last) if last else None,
        )

    @router.get(
        "/v1/hotlist",
        response_model=HotListOut,
        summary="The tenant's top leads by score",
        responses={401: E401, 403: E403, 422: E422, 429: E429, 503: E503},
    )
    async def get_hotlist(
        who: Annotated[Principal, Depends(manager)],
        g: Annotated[GatewayState, Depends(state)],
        limit: Annotated[int, Query(ge=1, le=settings.gateway.hotlist_max)] = 10,
    ) -> HotListOut:
        rows = await g.store.hot_list(who.tenant, limit)
        leads = [r for r in (_score(row) for row in rows) if r is not None]
        return HotListOut(tenant=who.tenant, leads=leads)

    return router


async def _plan(g: GatewayState, key: str, book: Book, tz: str) -> CadenceOut | None:
    """The lead's follow-up plan as the lead view shows it (``key``: its ``:c`` at its
    home), or None outside any plan."""
    plan = describe(await run_in_threadpool(g.delivery_client.get, key), book, tz)
    return CadenceOut.model_validate(plan) if plan else None


def _features(raw: dict[str, str]) -> dict[str, float | str]:
    """The counters, dwell in minutes and the profile, from the lead's feature hash."""
    features: dict[str, float | str] = {}
    for field, name in _COUNTERS.items():
        features[name] = _num(raw.get(field))
    features["dwell_min"] = _num(raw.get("dwell_s")) / 60
    for name in _PROFILE:
        features[name] = raw.get(name) or "unknown"
    return features


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
