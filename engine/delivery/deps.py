"""Who is asking: the dependencies every delivery route shares, and the rules they enforce.

Every route takes the tenant from the :func:`current_tenant` dependency: by default
the ``tenant`` query parameter (for a gateway-less test app); the gateway overrides it
with its API-key lookup, so one tenant never reads another's leads.

Every route also takes :func:`current_agent`: ``""`` (the default, and a server key
under the gateway) means unrestricted; an agent id (an agent key under the gateway)
means the caller *is* that agent and nobody else:

- views (board, SSE feed): ``agent`` is that agent (empty is filled in, another id is
  403); ``team`` only a group of the tenant's ``delivery.tenants.<t>.groups`` that
  lists the agent, or ``pond`` (:func:`scope_view`);
- a lead (its delivery read, claim, ack, contact): only one the board shows the agent,
  i.e. assigned to it, offered to it, or in the pond (:func:`lead_visible`), and an
  action's ``agent_id`` must be the agent (403 ``forbidden`` otherwise);
- manager views (SLA report, webhook receipts, dead letters): refused
  (:func:`unrestricted_only`).

The route modules (``api``, ``page``, ``sse``) and the gateway import these; this module
imports none of them, so the delivery web modules form no import cycle.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, HTTPException, Query

from engine.delivery.keys import DeliveryKeys
from engine.settings import POND, Settings

__all__ = [
    "IDENT",
    "current_agent",
    "current_tenant",
    "forbidden",
    "lead_visible",
    "require_visible",
    "scope_view",
    "unrestricted_only",
]

IDENT = r"^[A-Za-z0-9_.-]{1,64}$"


def current_tenant(tenant: str = Query("default", pattern=IDENT)) -> str:
    """The caller's tenant. The gateway replaces this dependency with its API-key lookup."""
    return tenant


def current_agent() -> str:
    """The one agent the caller may act as, or ``""``: unrestricted (back office). The
    gateway replaces this dependency: an agent key's agent, ``""`` for a server key."""
    return ""


def forbidden(detail: str) -> HTTPException:
    return HTTPException(403, detail)


def unrestricted_only(me: str = Depends(current_agent)) -> None:
    """For manager views: 403 for an agent key."""
    if me:
        raise forbidden("agent keys cannot read this manager view; use a server key")


def scope_view(settings: Settings, tenant: str, me: str, agent: str, team: str) -> tuple[str, str]:
    """The (agent, team) a caller bound to agent ``me`` may view (``me`` empty: as asked).

    ``agent`` becomes ``me`` (another id is 403); ``team`` must be a group of the tenant
    that lists ``me``, or the pond (anyone may claim from it), else 403.
    """
    if not me:
        return agent, team
    if agent and agent != me:
        raise forbidden(f"this key is agent {me}'s: it cannot view agent {agent}")
    if team and team != POND and me not in settings.delivery.tenant(tenant).groups.get(team, ()):
        raise forbidden(f"agent {me} is not in team {team}")
    return me, team


def lead_visible(client: Any, keys: DeliveryKeys, tenant: str, lead: str, me: str) -> bool:
    """Whether agent ``me`` may see and act on ``lead``: it is assigned to ``me``, offered
    to ``me`` or in the pond (the board's rule). ``me`` empty: always. A lead with no
    assignment is nobody's yet: not visible to an agent."""
    if not me:
        return True
    state, agent, offered = (
        x.decode() if isinstance(x, bytes) else (x or "")
        for x in client.hmget(keys.assignment(tenant, lead), ["state", "agent", "offered_to"])
    )
    if state == "assigned":
        return bool(agent == me)
    if state == "offered":
        return me in offered.split(",")
    return state == "pond"


def require_visible(client: Any, keys: DeliveryKeys, tenant: str, lead: str, me: str) -> None:
    """403 unless agent ``me`` (if any) may see and act on ``lead``."""
    if not lead_visible(client, keys, tenant, lead, me):
        raise forbidden(f"lead {lead} is not assigned or offered to agent {me}, nor in the pond")
