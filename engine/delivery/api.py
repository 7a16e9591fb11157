"""Read API of delivery: a lead's assignment (and why), receipts, SLA report, consent.

- ``GET /v1/leads/{lead_id}/delivery``  assignment + history of reasons, SLA clock,
  consent per channel, the last delivered alert
- ``GET /v1/alerts/{alert_id}/receipts`` webhook receipts (attempts, status, latency)
- ``GET /v1/sla/report``               per source and agent: median first response,
  contact within SLA, misses
- ``GET /v1/delivery/dead``            the newest dead-lettered deliveries

An agent key (``deps.current_agent``) may read a lead's delivery only for a lead the
board shows it (assigned or offered to it, or in the pond); receipts, the SLA report
and dead letters are manager views, refused to agent keys (403).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from engine.delivery.consent import ConsentBook
from engine.delivery.deps import current_agent, current_tenant, require_visible, unrestricted_only
from engine.delivery.feed import agent_names, redact_lead
from engine.delivery.keys import DeliveryKeys
from engine.delivery.metrics import DeliveryMetrics
from engine.delivery.routing import Assigner
from engine.delivery.sla import SlaClocks
from engine.delivery.webhooks import Receipts, read_dead_letters
from engine.settings import Settings

__all__ = ["api_router"]


@dataclass(frozen=True)
class _Books:
    """What the read routes share: Redis and the delivery parts they read."""

    settings: Settings
    client: Any
    keys: DeliveryKeys
    assigner: Assigner
    clocks: SlaClocks
    consent: ConsentBook
    receipts: Receipts

    @classmethod
    def build(cls, settings: Settings, client: Any, metrics: DeliveryMetrics) -> _Books:
        d = settings.delivery
        keys = DeliveryKeys(settings.redis.key_prefix)
        ttl = int(settings.features.idle_expire_d * 86_400)
        return cls(
            settings=settings,
            client=client,
            keys=keys,
            assigner=Assigner(
                client, keys, d.tenant, None, claim_timeout_s=d.claim_timeout_s, ttl_s=ttl
            ),
            clocks=SlaClocks(client, keys, metrics, ttl_s=ttl, report_keep=d.report_keep),
            consent=ConsentBook(client, keys, ttl),
            receipts=Receipts(client, keys, int(d.receipt_ttl_d * 86_400)),
        )

    def lead(self, tenant: str, lead_id: str, me: str) -> dict[str, Any]:
        """A lead's delivery: assignment and its history, clock, consent, last alert."""
        a = self.assigner.read(tenant, lead_id)
        card = self.client.get(self.keys.card(tenant, lead_id))
        alert = json.loads(card) if card else None
        blocked = alert.get("blocked_channels", []) if alert else []
        out = {
            "tenant": tenant,
            "lead_id": lead_id,
            "assignment": a.as_dict() if a else None,
            "history": self.assigner.history(tenant, lead_id),
            "clock": self.clocks.read(tenant, lead_id),
            "consent": self.consent.state(tenant, lead_id, blocked),
            "alert": alert,
        }
        names = agent_names(self.settings.delivery.tenant(tenant))
        return redact_lead(out, me, names) if me else out


def api_router(settings: Settings, client: Any, metrics: DeliveryMetrics) -> APIRouter:
    books = _Books.build(settings, client, metrics)
    keys = books.keys
    router = APIRouter(tags=["delivery"])

    @router.get("/v1/leads/{lead_id}/delivery", name="delivery_lead")
    def lead(
        lead_id: str = Path(pattern=r"^[^\x00-\x1f]{1,128}$"),
        tenant: str = Depends(current_tenant),
        me: str = Depends(current_agent),
    ) -> dict[str, Any]:
        require_visible(client, keys, tenant, lead_id, me)
        return books.lead(tenant, lead_id, me)

    manager = [Depends(unrestricted_only)]

    @router.get("/v1/alerts/{alert_id}/receipts", name="delivery_receipts", dependencies=manager)
    def alert_receipts(
        alert_id: str = Path(pattern=r"^[0-9a-f]{1,64}$"),
        tenant: str = Depends(current_tenant),
    ) -> dict[str, Any]:
        rows = books.receipts.read(alert_id)
        route = client.get(keys.route(alert_id))
        if route is not None and json.loads(route).get("tenant") != tenant:
            raise HTTPException(404, "no such alert")
        return {"alert_id": alert_id, "receipts": rows}

    @router.get("/v1/sla/report", name="delivery_sla_report", dependencies=manager)
    def sla_report(tenant: str = Depends(current_tenant)) -> dict[str, Any]:
        return books.clocks.report(tenant)

    @router.get("/v1/delivery/dead", name="delivery_dead", dependencies=manager)
    def dead(
        tenant: str = Depends(current_tenant), count: int = Query(50, ge=1, le=1000)
    ) -> dict[str, Any]:
        rows = []
        for row in read_dead_letters(client, keys, count * 4):
            body = json.loads(row["body"] or "{}")
            if body.get("tenant") == tenant:
                rows.append(row)
        return {"dead": rows[:count]}

    return router
