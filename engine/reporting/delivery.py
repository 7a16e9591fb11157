"""Delivery's side: SLA misses on delivery's wall clock, per tenant and day.

The engine counts what the events say (speed to lead against each alert's deadline in
event time, escalations from ``assigned`` events). Only delivery sees a miss that moved
no lead (the last escalation step closed the clock) or one while the lead sat in the
pond, so :meth:`DeliveryCounts.missed` adds it to the same day hash, in the pipeline
that already counts the miss for ``GET /v1/sla/report`` (``engine/delivery/sla.py``):
``missed|agent|<owner>`` (``(pond)`` when nobody owned the clock) and
``missed|source|<source>``, on the tenant's local day of the miss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.reporting.aggregates import POND
from engine.reporting.batch import day_of_for, retention_d, tenant_zone
from engine.reporting.keys import day_key, field, tenants_key

if TYPE_CHECKING:
    from engine.settings import Settings

__all__ = ["DeliveryCounts"]


class DeliveryCounts:
    def __init__(self, settings: Settings) -> None:
        self._s = settings
        self._prefix = settings.redis.key_prefix
        self._ttl = retention_d(settings) * 86_400

    def missed(self, pipe: Any, tenant: str, owner: str, source: str, now: float) -> None:
        """Queue one SLA miss (the caller executes the pipeline)."""
        day = day_of_for(tenant_zone(self._s, tenant))(now)
        key = day_key(self._prefix, tenant, day)
        pipe.hincrby(key, field("missed", "agent", owner or POND), 1)
        pipe.hincrby(key, field("missed", "source", source or "unknown"), 1)
        pipe.expire(key, self._ttl)
        pipe.sadd(tenants_key(self._prefix), tenant)
