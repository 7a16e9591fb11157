"""The agent hot-list page and its actions (claim, acknowledge, log contact).

- ``GET /hotlist`` the page (``static/hotlist.html``, plain HTML/CSS/JS, no build step);
  ``?agent=<id>`` shows that agent's leads, the offers to them and the pond. The page
  and its assets are static and need no key; under the gateway the script asks for an
  API key once (an agent key, or a server key for the back office) and sends it as
  ``Authorization: Bearer`` on every call. With an agent key the server decides who
  the agent is (``deps.current_agent``): the board names it and the page adopts it.
- ``GET /hotlist/hotlist.js``, ``/hotlist/hotlist.css`` its assets; ``report.js`` the
  *Weekly report* view (``GET /v1/reports/weekly``, shown where the gateway mounts it).
- ``GET /v1/board`` the leads by bucket P1 -> P5 as JSON (``board.read_board``),
  with the feed id it was read at: the page's SSE stream resumes from there. (Not
  ``/v1/hotlist``: that is the gateway's top-leads read.)
- ``GET /v1/tasks?agent=`` today's follow-up tasks (cadence steps an agent does), in the
  tenant's day and zone: the agent's and those of leads with no agent yet (no ``agent``
  with a server key: every configured agent's). An agent key sees only its own (another
  ``agent`` is 403), like the board.
- ``POST /v1/leads/{lead_id}/claim | ack | contact`` with ``{"agent_id": ...}``: each
  becomes an event on the lead's partition (``assigned``, ``alert_ack``,
  ``agent_contact``); the delivery service reads ack and contact events and stops
  the SLA clock, and the page sees that on its stream. With an agent key, ``agent_id``
  must be the key's agent and the lead one the board shows that agent (else 403).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import NoMatchFound

from engine.delivery.board import read_board, redact_board
from engine.delivery.consent import ConsentBook, blocked_reasons
from engine.delivery.deps import IDENT, current_agent, current_tenant, require_visible, scope_view
from engine.delivery.feed import Feed, agent_names
from engine.delivery.keys import DeliveryKeys
from engine.delivery.metrics import DeliveryMetrics
from engine.delivery.routing import Assigner, stream_emitter
from engine.delivery.sla import SlaClocks
from engine.delivery.tasks import today_tasks
from engine.records import RecordReader
from engine.settings import Settings
from engine.streams import Producer, stream_names

__all__ = ["Action", "page_router"]

_ASSETS = {
    "hotlist.js": "text/javascript",
    "hotlist.css": "text/css",
    "report.js": "text/javascript",
}
_LEAD = r"^[^\x00-\x1f]{1,128}$"
_BAD_BODY: dict[int | str, dict[str, Any]] = {400: {"description": "the body is not JSON"}}


class Action(BaseModel):
    """Body of claim / ack / contact."""

    model_config = ConfigDict(extra="forbid")
    agent_id: str = Field(pattern=IDENT)
    alert_id: str = Field("", max_length=64)
    channel: Literal["call", "sms", "email", "chat"] = "call"
    note: str = Field("", max_length=200)


def _asset(name: str) -> str:
    return resources.files("engine.delivery").joinpath("static", name).read_text()


def _report_url(request: Request) -> str:
    """``GET /v1/reports/weekly`` where the app mounts it (the gateway), else ""."""
    try:
        return request.url_for("reports_weekly").path
    except NoMatchFound:
        return ""


@dataclass(frozen=True)
class _Desk:
    """What the page's routes share: the settings, Redis and the delivery parts they use."""

    settings: Settings
    client: Any
    keys: DeliveryKeys
    producer: Producer
    feed: Feed
    assigner: Assigner
    clocks: SlaClocks
    consent: ConsentBook
    clock: Callable[[], float]

    @classmethod
    def build(
        cls, settings: Settings, client: Any, metrics: DeliveryMetrics, clock: Callable[[], float]
    ) -> _Desk:
        d = settings.delivery
        keys = DeliveryKeys(settings.redis.key_prefix)
        names = stream_names(settings)
        producer = Producer(client, names, settings.streams.maxlen)
        ttl = int(settings.features.idle_expire_d * 86_400)
        assigner = Assigner(
            client, keys, d.tenant, stream_emitter(producer), claim_timeout_s=d.claim_timeout_s,
            ttl_s=ttl, clock=clock,
        )  # fmt: skip
        return cls(
            settings=settings,
            client=client,
            keys=keys,
            producer=producer,
            feed=Feed(client, keys, d.feed_maxlen, metrics),
            assigner=assigner,
            clocks=SlaClocks(
                client, keys, metrics, ttl_s=ttl, report_keep=d.report_keep, clock=clock
            ),
            consent=ConsentBook(client, keys, ttl),
            clock=clock,
        )

    def tz(self, tenant: str) -> str:
        return self.settings.delivery.tenant(tenant).timezone or self.settings.alerts.timezone

    def may_act(self, tenant: str, lead: str, me: str, body: Action) -> None:
        """An agent key acts only as its agent, and only on a lead the board shows it."""
        if me and body.agent_id != me:
            raise HTTPException(403, f"this key is agent {me}'s: it cannot act as {body.agent_id}")
        require_visible(self.client, self.keys, tenant, lead, me)

    def event(
        self, tenant: str, lead: str, etype: str, body: Action, **extra: Any
    ) -> dict[str, Any]:
        """The action as an event on the lead's partition."""
        props: dict[str, Any] = {"via": "hotlist"}
        if body.alert_id:
            props["alert_id"] = body.alert_id
        if body.note:
            props["note"] = body.note
        ev = {
            "event_id": f"ui-{etype}-{uuid.uuid4().hex}",
            "lead_id": lead,
            "tenant": tenant,
            "type": etype,
            "ts": self.clock(),
            "agent_id": body.agent_id,
            "props": props,
            **extra,
        }
        sid = self.producer.send([ev])[0]
        return {"event_id": ev["event_id"], "stream_id": sid.decode(), "type": etype}

    def claim(self, tenant: str, lead: str, agent: str) -> JSONResponse:
        won, assignment, message = self.assigner.claim(tenant, lead, agent)
        view = assignment.as_dict() if assignment else None
        if not won:
            return JSONResponse({"claimed": False, "detail": message, "assignment": view}, 409)
        if assignment is not None and assignment.how == "claim":
            self.clocks.assign(tenant, lead, agent)
            self.feed.publish(tenant, "assignment", assignment.as_dict(), ["*"], assignment.group)
        return JSONResponse({"claimed": True, "detail": message, "assignment": view})

    def contact(self, tenant: str, lead: str, body: Action) -> dict[str, Any]:
        out = self.event(tenant, lead, "agent_contact", body, channel=body.channel)
        reasons = self.consent.reasons(tenant, lead)
        why = blocked_reasons((), reasons, self.tz(tenant)).get(body.channel)
        if why:  # recorded as it happened, but flagged: the channel is closed
            out["warning"] = f"{body.channel} is blocked for this lead: {why}"
        return out


def page_router(
    settings: Settings, client: Any, metrics: DeliveryMetrics, clock: Any = time.time
) -> APIRouter:
    """The page, its assets, the board and the claim / ack / contact actions."""
    desk = _Desk.build(settings, client, metrics, clock)
    router = APIRouter(tags=["delivery"])
    _add_page(router)
    _add_board(router, desk)
    _add_tasks(router, desk)
    _add_actions(router, desk)
    return router


def _add_page(router: APIRouter) -> None:
    """``GET /hotlist`` and its assets: static, no key."""

    @router.get("/hotlist", response_class=HTMLResponse, name="delivery_page")
    def page(request: Request) -> HTMLResponse:
        html = _asset("hotlist.html")
        claim_url = request.url_for("delivery_claim", lead_id="LEAD").path
        urls = {
            "BOARD_URL": request.url_for("delivery_board").path,
            "TASKS_URL": request.url_for("delivery_tasks").path,
            "STREAM_URL": request.url_for("delivery_stream").path,
            "LEADS_URL": claim_url.rsplit("/LEAD/", 1)[0],
            "REPORT_URL": _report_url(request),  # the weekly report view, where it is mounted
        }
        for k, v in urls.items():
            html = html.replace("{{" + k + "}}", v)
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    @router.get(
        "/hotlist/{name}",
        name="delivery_asset",
        response_class=Response,
        responses={
            200: {"content": {t: {"schema": {"type": "string"}} for t in _ASSETS.values()}},
            404: {"description": "no such asset"},
        },
    )
    def asset(name: str) -> Response:
        if name not in _ASSETS:
            raise HTTPException(404, "no such asset")
        return Response(_asset(name), media_type=_ASSETS[name])


def _add_board(router: APIRouter, desk: _Desk) -> None:
    """``GET /v1/board``: the leads by bucket, for an agent, a team or the tenant."""
    settings, d = desk.settings, desk.settings.delivery

    @router.get("/v1/board", name="delivery_board")
    def board(
        tenant: str = Depends(current_tenant),
        me: str = Depends(current_agent),
        agent: str = Query("", pattern=r"^$|" + IDENT),
        team: str = Query("", pattern=r"^$|" + IDENT),
    ) -> dict[str, Any]:
        agent, team = scope_view(settings, tenant, me, agent, team)
        feed_id = desk.feed.last_id(tenant)  # first: the stream resumes from here, nothing lost
        board = read_board(
            desk.client, settings.redis.key_prefix, tenant, agent=agent, team=team,
            limit=d.page_limit, feed_id=feed_id, now=desk.clock(), tz=desk.tz(tenant),
            reader=RecordReader(settings),
        )  # fmt: skip
        if me:  # an agent key: colleagues' names stay hidden, as on the feed
            redact_board(board, me, agent_names(d.tenant(tenant)))
        return board


def _add_tasks(router: APIRouter, desk: _Desk) -> None:
    """``GET /v1/tasks``: today's follow-up tasks (engine/cadence) in the tenant's day."""
    settings = desk.settings

    @router.get("/v1/tasks", name="delivery_tasks")
    def tasks(
        tenant: str = Depends(current_tenant),
        me: str = Depends(current_agent),
        agent: str = Query("", pattern=r"^$|" + IDENT),
    ) -> dict[str, Any]:
        agent, _ = scope_view(settings, tenant, me, agent, "")
        whose = [agent] if agent else sorted(agent_names(settings.delivery.tenant(tenant)))
        now, tz = desk.clock(), desk.tz(tenant)
        rows = today_tasks(desk.client, desk.keys, tenant, [*whose, ""], now, tz)
        day = datetime.fromtimestamp(now, ZoneInfo(tz)).date().isoformat()
        return {"tenant": tenant, "agent": agent or None, "timezone": tz, "day": day,
                "tasks": rows}  # fmt: skip


def _add_actions(router: APIRouter, desk: _Desk) -> None:
    """``POST /v1/leads/{lead_id}/claim | ack | contact``."""

    @router.post(
        "/v1/leads/{lead_id}/claim",
        name="delivery_claim",
        responses={**_BAD_BODY, 409: {"description": "another agent holds or won the lead"}},
    )
    def claim(
        body: Action,
        lead_id: str = Path(pattern=_LEAD),
        tenant: str = Depends(current_tenant),
        me: str = Depends(current_agent),
    ) -> JSONResponse:
        desk.may_act(tenant, lead_id, me, body)
        return desk.claim(tenant, lead_id, body.agent_id)

    @router.post(
        "/v1/leads/{lead_id}/ack", status_code=202, name="delivery_ack", responses=_BAD_BODY
    )
    def ack(
        body: Action,
        lead_id: str = Path(pattern=_LEAD),
        tenant: str = Depends(current_tenant),
        me: str = Depends(current_agent),
    ) -> dict[str, Any]:
        desk.may_act(tenant, lead_id, me, body)
        return desk.event(tenant, lead_id, "alert_ack", body)

    @router.post(
        "/v1/leads/{lead_id}/contact", status_code=202, name="delivery_contact",
        responses=_BAD_BODY,
    )  # fmt: skip
    def contact(
        body: Action,
        lead_id: str = Path(pattern=_LEAD),
        tenant: str = Depends(current_tenant),
        me: str = Depends(current_agent),
    ) -> dict[str, Any]:
        desk.may_act(tenant, lead_id, me, body)
        return desk.contact(tenant, lead_id, body)
