"""The per-tenant feed behind the SSE stream and the hot-list page.

One Redis stream per tenant (``dlv:feed:{tenant}``, capped at ``feed_maxlen``). Each
entry is one thing an agent's screen should show at once:

==============  ===========================================================
``alert``       a delivered alert (the webhook payload)
``escalated``   a re-alert after an SLA miss (payload with ``escalation``)
``assignment``  a lead's owner changed (claim, claim timeout, escalation)
``sla``         a lead's SLA clock changed (stopped by an ack or a contact)
==============  ===========================================================

Fields: ``k`` kind, ``to`` who should see it (comma-separated agent ids, ``*`` for
everyone), ``g`` the group, ``d`` the JSON data. The stream id is the SSE event id, so
a client resumes exactly where it left off with ``Last-Event-ID``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from engine.delivery.keys import DeliveryKeys
from engine.delivery.metrics import DeliveryMetrics

__all__ = ["Feed", "visible"]


def visible(fields: dict[bytes, bytes], agent: str, team: str) -> bool:
    """Whether an entry is for this viewer (no agent and no team: the whole tenant)."""
    to = fields.get(b"to", b"*").decode()
    group = fields.get(b"g", b"").decode()
    if team and group != team and to != "*":
        return False
    if agent:
        return to == "*" or agent in to.split(",")
    return True


class Feed:
    def __init__(
        self, client: Any, keys: DeliveryKeys, maxlen: int, metrics: DeliveryMetrics
    ) -> None:
        self._r = client
        self._keys = keys
        self._maxlen = maxlen
        self._m = metrics

    def publish(
        self,
        tenant: str,
        kind: str,
        data: dict[str, Any],
        audience: Iterable[str] = ("*",),
        group: str = "",
        pipe: Any = None,
    ) -> Any:
        target = pipe if pipe is not None else self._r
        self._m.feed_published.labels(kind).inc()
        return target.xadd(
            self._keys.feed(tenant),
            {"k": kind, "to": ",".join(audience) or "*", "g": group, "d": json.dumps(data)},
            maxlen=self._maxlen,
            approximate=True,
        )

    def last_id(self, tenant: str) -> str:
        rows = self._r.xrevrange(self._keys.feed(tenant), count=1)
        return rows[0][0].decode() if rows else "0-0"
