"""``GET /v1/reports/weekly``: the brokerage report's figures as JSON (issue 15).

The same figures as ``leadpulse report`` (``engine/reporting``), read from the per-day
counters in one round trip. A server key gets the whole tenant; an agent key gets only
its own rows (speed to lead, funnel and SLA for that agent; nothing team-wide, no
colleague). ``since`` / ``until`` are the tenant's local days (``YYYY-MM-DD``); the
default is the seven days ending today. A bad or backwards period is 422 with the
reason; Redis unreachable is 503.

Mounted by the gateway (``app.include_router(reports.router(settings, client))``);
the tenant and agent come from delivery's ``current_tenant`` / ``current_agent``
dependencies, which the gateway overrides with the API key's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis
from fastapi import APIRouter, Depends, HTTPException, Query

from engine.delivery.deps import current_agent, current_tenant
from engine.errors import LeadpulseError
from engine.reporting.batch import tenant_zone
from engine.reporting.cli import build_report, parse_period
from engine.settings import Settings
from engine.streams import stream_names

__all__ = ["router"]

_DAY = r"^\d{4}-\d{2}-\d{2}$"


def router(settings: Settings, client: Any) -> APIRouter:
    r = APIRouter(tags=["reports"])
    names = stream_names(settings)  # the key layout: which shards hold the counters

    @r.get(
        "/v1/reports/weekly",
        name="reports_weekly",
        summary="The week's numbers: speed to lead, rates by bucket, source and agent",
    )
    def weekly(
        tenant: str = Depends(current_tenant),
        me: str = Depends(current_agent),
        since: str = Query("", pattern=f"{_DAY}|^$", description="first day (YYYY-MM-DD)"),
        until: str = Query("", pattern=f"{_DAY}|^$", description="last day (YYYY-MM-DD)"),
    ) -> dict[str, Any]:
        today = datetime.now(ZoneInfo(tenant_zone(settings, tenant))).date()
        try:
            start, end = parse_period(since, until, today, dash="")
        except LeadpulseError as exc:
            raise HTTPException(422, str(exc)) from None
        try:
            report = build_report(client, names, tenant, start, end)
        except redis.RedisError as exc:
            raise HTTPException(503, f"Redis unavailable: {exc.__class__.__name__}") from None
        return (report.for_agent(me) if me else report).to_dict()

    return r
