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

__all__ = ["OTHER_AGENT", "Feed", "redact_for_agent", "visible"]


def visible(fields: dict[bytes, bytes], agent: str, team: str) -> bool:
    """Whether an entry is for this viewer (no agent and no team: the whole tenant)."""
    to = fields.get(b"to", b"*").decode()
    group = fields.get(b"g", b"").decode()
    if team and group != team and to != "*":
        return False
    if agent:
        return to == "*" or agent in to.split(",")
    return True


#: What an agent key sees instead of a colleague's name.
OTHER_AGENT = "another agent"


def redact_for_agent(kind: str, data: dict[str, Any], me: str) -> dict[str, Any]:
    """What an agent key may see of a tenant-wide entry: that a lead went to somebody
    else (so it leaves the agent's board), not to whom, why, or who missed it before.

    Assignment and SLA-clock entries go to every agent of the tenant ("*") so boards stay
    current; for a viewer signed in with an agent key the other agents' names go.
    """
    if kind not in ("assignment", "sla"):
        return data
    out = dict(data)
    if out.get("agent") not in ("", None, me):
        out["agent"] = OTHER_AGENT
        out["reason"] = ""
    if out.get("stopped_by") not in ("", None, me):
        out["stopped_by"] = OTHER_AGENT
    for names in ("missed_by", "offered_to"):
        value = out.get(names)
        if isinstance(value, list):
            out[names] = [x if x == me else OTHER_AGENT for x in value]
        elif isinstance(value, str) and value:
            out[names] = ",".join(x if x == me else OTHER_AGENT for x in value.split(","))
    return out


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
