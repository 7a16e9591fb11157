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
import re
from collections.abc import Iterable
from typing import Any

from engine.delivery.keys import DeliveryKeys
from engine.delivery.metrics import DeliveryMetrics
from engine.settings import TenantDelivery

__all__ = [
    "OTHER_AGENT", "Feed", "agent_names", "redact_for_agent", "redact_lead", "scrub", "visible",
]  # fmt: skip


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
_NAME_EDGE = r"A-Za-z0-9_.\-"  # agent ids are [A-Za-z0-9_.-]: a name is a whole word of those


def agent_names(cfg: TenantDelivery) -> frozenset[str]:
    """Every agent id a tenant's config names (groups and per-agent webhooks)."""
    names = {a for members in cfg.groups.values() for a in members}
    return frozenset(names | set(cfg.agents))


def _names_in(data: Any, out: set[str]) -> set[str]:
    """Agent ids held in the name fields of ``data`` (any depth)."""
    if isinstance(data, dict):
        for k, v in data.items():
            if k in ("agent", "agent_id", "stopped_by") and isinstance(v, str) and v:
                out.add(v)
            elif k in ("missed_by", "offered_to"):
                items = v.split(",") if isinstance(v, str) else v if isinstance(v, list) else []
                out.update(x for x in items if isinstance(x, str) and x)
            else:
                _names_in(v, out)
    elif isinstance(data, list):
        for item in data:
            _names_in(item, out)
    return out


def scrub(text: str, names: Iterable[str], me: str) -> str:
    """``text`` with every whole-word agent id other than ``me`` replaced by "another agent"."""
    others = sorted({n for n in names if n and n != me}, key=len, reverse=True)
    if not others or not text:
        return text
    alternation = "|".join(re.escape(n) for n in others)
    pattern = rf"(?<![{_NAME_EDGE}])(?:{alternation})(?![{_NAME_EDGE}])"
    return re.sub(pattern, OTHER_AGENT, text)


def _names_list(value: Any, me: str) -> Any:
    if isinstance(value, list):
        return [x if x == me else OTHER_AGENT for x in value]
    if isinstance(value, str) and value:
        return ",".join(x if x == me else OTHER_AGENT for x in value.split(","))
    return value


def _redact_owner(data: dict[str, Any], me: str, names: set[str]) -> dict[str, Any]:
    """An assignment or clock view: colleagues' names, and the reason that names them."""
    out = dict(data)
    if out.get("agent") not in ("", None, me):
        out["agent"] = OTHER_AGENT
        out["reason"] = ""
    elif isinstance(out.get("reason"), str):
        out["reason"] = scrub(out["reason"], names, me)
    if out.get("stopped_by") not in ("", None, me):
        out["stopped_by"] = OTHER_AGENT
    for key in ("missed_by", "offered_to"):
        if key in out:
            out[key] = _names_list(out[key], me)
    return out


def redact_for_agent(
    kind: str, data: dict[str, Any], me: str, names: Iterable[str] = ()
) -> dict[str, Any]:
    """What an agent key may see of an entry: that a lead went to somebody else (so it
    leaves the agent's board), not to whom, why, or who missed it before.

    Assignment and SLA-clock entries go to every agent of the tenant ("*") so boards stay
    current, and a re-alert to the pond carries the lead's past; for a viewer signed in
    with an agent key the other agents' names go: in name fields, and as whole words in
    reasons (``names``: further ids to look for, e.g. :func:`agent_names`). ``kind``:
    ``assignment`` / ``sla`` (an assignment or clock view) or ``alert`` / ``escalated``
    (a delivered payload: its ``assignment``, ``clock``, ``escalation`` and lead's
    ``agent_id``). The entry itself is not changed.
    """
    if not isinstance(data, dict) or not me:
        return data
    every = _names_in(data, set(names))
    if kind in ("assignment", "sla"):
        return _redact_owner(data, me, every)
    out = dict(data)
    for key in ("assignment", "clock"):
        if isinstance(out.get(key), dict):
            out[key] = _redact_owner(out[key], me, every)
    esc = out.get("escalation")
    if isinstance(esc, dict):
        out["escalation"] = {**esc, "missed_by": _names_list(esc.get("missed_by"), me)}
    if out.get("agent_id") not in ("", None, me):
        out["agent_id"] = OTHER_AGENT
    return out


def redact_lead(view: dict[str, Any], me: str, names: Iterable[str] = ()) -> dict[str, Any]:
    """A lead's delivery read (``GET /v1/leads/{id}/delivery``) for agent key ``me``: its
    assignment, every history entry, the clock and the last alert, as on the feed."""
    every = _names_in(view, set(names))
    out = dict(view)
    for key, kind in (("assignment", "assignment"), ("clock", "sla"), ("alert", "alert")):
        if isinstance(out.get(key), dict):
            out[key] = redact_for_agent(kind, out[key], me, every)
    if isinstance(out.get("history"), list):
        out["history"] = [redact_for_agent("assignment", h, me, every) for h in out["history"]]
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
