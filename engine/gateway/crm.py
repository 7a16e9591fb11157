"""CRM events in: Follow Up Boss webhooks become contract-v1 events (README "Integrations").

``POST /v1/crm/{tenant}/{target}``, for a target ``kind = "fub"`` with ``receive = true``
(``[delivery.tenants.<tenant>.targets.<target>]``). Per request:

1. **verify**: ``FUB-Signature`` must be the hex HMAC-SHA256, under the system key, of
   the base64 of the body (Follow Up Boss's scheme), compared in constant time: else 401;
2. **parse** ``{eventId, event, resourceIds, uri}``: else 400 / 422; an event type
   leadpulse does not use is answered 200 ``ignored`` (the CRM should not retry it);
3. **once**: the CRM's ``eventId`` is claimed in Redis (``CrmKeys.seen``, 7 days): a
   replay is answered 200 ``duplicate`` and nothing is fetched or stored again;
4. **fetch** the resource from ``uri``, only under the target's API base (never another
   host), with the API key and ``X-System`` headers: a resource the CRM no longer has
   (404) is 200 ``gone``; the CRM down is 502 and the claim is released so its retry works;
5. **map** calls, texts, emails, appointments, deals and stage changes to events
   (``agent_contact``, ``call_answered``, ``reply``, ``appointment_set``,
   ``agreement_signed``, ``closed``, ``lost``, ...) on lead ``lead_prefix + personId``,
   with ids stable per resource (``fub:call:123:agent_contact``), and append them through
   the gateway's own ingest (validation, the privacy scrubber, aliases, idempotency).

Nothing the CRM sends about a person is kept but ids, times, the channel and the outcome:
no name, email, phone or message text (a text reply keeps only an opt-out word, which
closes the channel).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from base64 import b64encode
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis.asyncio as aioredis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from engine.delivery.target_settings import TargetSettings
from engine.delivery.targets import fub_headers
from engine.errors import StoreError
from engine.gateway.auth import Principal
from engine.gateway.ingest import Ingestor
from engine.gateway.privacy import ContactHasher
from engine.gateway.store import GatewayStore
from engine.keys import CrmKeys
from engine.redis_client import async_client
from engine.settings import Settings

__all__ = ["CrmEvent", "CrmKeys", "crm_router", "map_resource", "fub_signature"]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
SEEN_TTL_S = 7 * 86_400
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
#: FUB webhook event -> the resource kind it names (others are ignored).
EVENTS = {
    "callsCreated": "call",
    "textMessagesCreated": "text",
    "emailsCreated": "email",
    "appointmentsCreated": "appointment",
    "dealsCreated": "deal",
    "dealsUpdated": "deal",
    "peopleStageUpdated": "person",
}
_COLLECTIONS = {"call": "calls", "text": "textmessages", "email": "emails",
                "appointment": "appointments", "deal": "deals", "person": "people"}  # fmt: skip
ANSWERED_S = 30  # a call this long (or with a talked outcome) was answered


@dataclass(frozen=True)
class CrmEvent:
    """One contract-v1 event made from a CRM resource (before the gateway's checks)."""

    event_id: str
    lead_id: str
    type: str
    ts: str | float
    channel: str = ""
    agent_id: str = ""
    props: dict[str, Any] = field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id, "lead_id": self.lead_id, "type": self.type, "ts": self.ts,
        }  # fmt: skip
        if self.channel:
            out["channel"] = self.channel
        if self.agent_id:
            out["agent_id"] = self.agent_id
        if self.props:
            out["props"] = self.props
        return out


def fub_signature(system_key: str, body: bytes) -> str:
    """Follow Up Boss: hex HMAC-SHA256(system key, base64(body))."""
    return hmac.new(system_key.encode(), b64encode(body), hashlib.sha256).hexdigest()


# -- resources -> events (pure) ------------------------------------------------------------
@dataclass(frozen=True)
class Mapper:
    """How one tenant's CRM ids and words become leadpulse's."""

    lead_prefix: str
    stages: dict[str, str]
    users: dict[str, str]

    def lead(self, person: Any) -> str:
        text = str(person) if isinstance(person, int | str) and str(person) else ""
        return self.lead_prefix + text if _ID.fullmatch(text) else ""

    def agent(self, user: Any) -> str:
        if not isinstance(user, int | str) or not _ID.fullmatch(str(user)):
            return ""
        return self.users.get(str(user), f"fub-{user}")


def _ts(r: dict[str, Any], fallback: str | float) -> str | float:
    for key in ("created", "updated", "start"):
        value = r.get(key)
        if isinstance(value, str) and value:
            return value
    return fallback


def _calls(r: dict[str, Any]) -> list[tuple[str, str]]:
    """(type, channel) per event a call makes."""
    outcome = str(r.get("outcome") or "").lower()
    d = r.get("duration")
    duration = float(d) if isinstance(d, int | float) and not isinstance(d, bool) else 0.0
    out: list[tuple[str, str]] = []
    if not r.get("isIncoming"):
        out.append(("agent_contact", "call"))
    if duration >= ANSWERED_S or outcome in ("interested", "not interested", "talked"):
        out.append(("call_answered", "call"))
    if outcome == "not interested":
        out.append(("not_interested", ""))
    if outcome == "bad number":
        out.append(("invalid_contact", "call"))
    return out


def _messages(r: dict[str, Any], channel: str) -> list[tuple[str, str]]:
    return [("reply" if r.get("isIncoming") else "agent_contact", channel)]


def _list(x: Any) -> list[dict[str, Any]]:
    return [i for i in x if isinstance(i, dict)] if isinstance(x, list) else []


def map_resource(kind: str, r: dict[str, Any], m: Mapper, at: str | float) -> list[CrmEvent]:
    """The events one CRM resource makes (none for what leadpulse does not use)."""
    rid = str(r.get("id", ""))
    if not _ID.fullmatch(rid):
        return []
    ts = _ts(r, at)
    agent = m.agent(r.get("userId"))
    people: list[Any] = [r.get("personId")]
    kinds: list[tuple[str, str]] = []
    if kind == "call":
        kinds = _calls(r)
    elif kind in ("text", "email"):
        kinds = _messages(r, "sms" if kind == "text" else "email")
    elif kind == "appointment":
        people = [i.get("personId") for i in _list(r.get("invitees")) if i.get("personId")]
        kinds = [("appointment_set", "")]
    elif kind == "deal":
        people = [p.get("id") for p in _list(r.get("people"))]
        stage = m.stages.get(str(r.get("stageName") or ""), "")
        kinds = [(stage, "")] if stage else []
    elif kind == "person":
        people = [r.get("id")]
        stage = m.stages.get(str(r.get("stage") or ""), "")
        kinds = [(stage, "")] if stage else []
    props = _stop_word(r) if kind == "text" and r.get("isIncoming") else {}
    out = []
    for person in people:
        lead = m.lead(person)
        for etype, channel in kinds if lead else []:
            eid = f"fub:{kind}:{rid}:{etype}" + (f":{person}" if len(people) > 1 else "")
            who = agent if etype == "agent_contact" else ""
            out.append(CrmEvent(eid, lead, etype, ts, channel, who, props))
    return out


def _stop_word(r: dict[str, Any]) -> dict[str, Any]:
    """A text reply keeps only an opt-out word (it closes texts); never the message."""
    text = str(r.get("message") or "").strip().upper()
    return {"text": text} if text in _STOP_WORDS else {}


def resources_of(kind: str, data: Any) -> list[dict[str, Any]]:
    """A single resource, or FUB's list shape ``{"calls": [...], "_metadata": ...}``."""
    if not isinstance(data, dict):
        return []
    if "id" in data:
        return [data]
    for key, value in data.items():
        if key.lower() == _COLLECTIONS[kind] and isinstance(value, list):
            return [x for x in value if isinstance(x, dict)]
    return []


# -- the route ---------------------------------------------------------------------------
def _answer(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    if status >= 400:
        return JSONResponse({"error": code, "detail": detail}, status_code=status)
    return JSONResponse({"status": code, "detail": detail, **extra}, status_code=status)


@dataclass(frozen=True)
class Notice:
    """A parsed CRM webhook: ``{eventId, event, resourceIds, uri}``."""

    event_id: str
    event: str
    uri: str
    created: str | float


def parse_notice(body: bytes) -> Notice | JSONResponse:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _answer(400, "malformed_json", "the body is not JSON")
    if not isinstance(data, dict):
        return _answer(422, "bad_request", "the body must be an object {eventId, event, uri}")
    event_id, event, uri = data.get("eventId"), data.get("event"), data.get("uri")
    if not isinstance(event_id, str | int) or not _ID.fullmatch(str(event_id)):
        return _answer(422, "bad_request", "eventId: missing, or not an id of A-Z a-z 0-9 _ . : -")
    if not isinstance(event, str) or not event:
        return _answer(422, "bad_request", "event: missing")
    created = data.get("eventCreated")
    at: str | float = created if isinstance(created, str) and created else time.time()
    return Notice(str(event_id), event, uri if isinstance(uri, str) else "", at)


class CrmInbox:
    """Verify, claim once, fetch, map and append one CRM webhook."""

    def __init__(self, settings: Settings, redis_url: str, store: GatewayStore) -> None:
        self._s = settings
        self._url = redis_url
        self._store = store
        self._keys = CrmKeys(settings.redis.key_prefix)
        secret = settings.gateway.contact_hash_key.get_secret_value()
        self._ingest = Ingestor(
            settings.validation,
            ContactHasher((secret or "x" * 32).encode(), settings.gateway.default_country_code),
            settings.streams.partitions,
        )

    async def _claim(self, key: str, claim: bool) -> bool:
        """Claim the CRM's event id (True: first time), or release it. One short connection:
        CRM webhooks are few, and nothing is left open when the app stops."""
        timeout = self._s.redis.socket_timeout_s
        async with async_client(self._url, socket_timeout=timeout) as r:
            if claim:
                return bool(await r.set(key, "1", nx=True, ex=SEEN_TTL_S))
            await r.delete(key)
            return False

    def target(self, tenant: str, name: str) -> TargetSettings | None:
        t = self._s.delivery.tenants.get(tenant)
        found = t.targets.get(name) if t is not None else None
        return found if found is not None and found.receive else None

    async def handle(self, tenant: str, name: str, body: bytes, signature: str) -> JSONResponse:
        t = self.target(tenant, name)
        if t is None:
            return _answer(404, "not_found", f"no CRM receiver {name!r} for tenant {tenant!r}")
        expected = fub_signature(t.system_key.get_secret_value(), body)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            return _answer(401, "bad_signature", "FUB-Signature does not match this body")
        notice = parse_notice(body)
        if isinstance(notice, JSONResponse):
            return notice
        kind = EVENTS.get(notice.event)
        if kind is None:
            return _answer(200, "ignored", f"event {notice.event[:60]!r} is not used by leadpulse")
        if not notice.uri.startswith(t.api_base + "/v1/"):
            return _answer(422, "bad_uri", f"uri must be under {t.api_base}/v1/")
        key = self._keys.seen(tenant, name, notice.event_id)
        try:
            if not await self._claim(key, True):
                return _answer(200, "duplicate", f"event {notice.event_id} was received before")
        except aioredis.RedisError:
            return _answer(503, "unavailable", "Redis unavailable: nothing stored; retry")
        try:
            return await self._process(tenant, t, kind, notice)
        except (StoreError, aioredis.RedisError, _CrmDown) as exc:
            await self._release(key)
            status, code = (502, "crm_unavailable") if isinstance(exc, _CrmDown) else (
                503, "unavailable")  # fmt: skip
            return _answer(status, code, f"{exc}; nothing stored, retry")

    async def _release(self, key: str) -> None:
        try:
            await self._claim(key, False)
        except aioredis.RedisError:
            log.warning("CRM event claim %s not released (Redis); it expires", key[-40:])

    async def _process(
        self, tenant: str, t: TargetSettings, kind: str, notice: Notice
    ) -> JSONResponse:
        data = await _fetch(t, notice.uri, self._s.delivery.timeout_s)
        if data is None:
            return _answer(200, "gone", "the CRM no longer has this resource; nothing stored")
        mapper = Mapper(t.lead_prefix, t.fub_stages, dict(t.users))
        events = [
            e
            for r in resources_of(kind, data)
            for e in map_resource(kind, r, mapper, notice.created)
        ]
        if not events:
            return _answer(200, "ignored", "nothing in this resource changes a score or a clock")
        who = Principal(tenant=tenant, role="server", key_id=f"crm:{kind}")
        items = [e.wire() for e in events]
        aliases = await self._store.resolve_aliases(tenant, [e.lead_id for e in events])
        ready, outcomes = self._ingest.prepare(items, who, aliases)
        ids = await self._store.append(tenant, ready)
        results: list[dict[str, Any]] = []
        for prepared, sid in zip(ready, ids, strict=True):
            status = "accepted" if sid is not None else "duplicate"
            results.append({"event_id": prepared.event_id, "lead_id": prepared.lead_id,
                            "status": status})  # fmt: skip
        for out in outcomes:
            if out is not None and out.status == "rejected":
                results.append({"index": out.index, "status": "rejected", "reason": out.reason})
        return _answer(200, "accepted", f"{len(ready)} event(s) from {notice.event}",
                       events=results)  # fmt: skip


class _CrmDown(Exception):
    """The CRM could not be asked (network, 5xx, 429): its retry will come."""


async def _fetch(t: TargetSettings, uri: str, timeout_s: float) -> Any:
    """The resource as JSON; None if the CRM no longer has it (404 / 410)."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as http:
            resp = await http.get(uri, headers=dict(fub_headers(t)))
    except httpx.HTTPError as exc:
        raise _CrmDown(f"CRM unreachable: {type(exc).__name__}") from None
    if resp.status_code in (404, 410):
        return None
    if resp.status_code != 200:
        raise _CrmDown(f"CRM answered HTTP {resp.status_code}")
    try:
        return resp.json()
    except ValueError:
        raise _CrmDown("CRM answered with something that is not JSON") from None


def crm_router(settings: Settings, redis_url: str, store: GatewayStore) -> APIRouter:
    """``POST /v1/crm/{tenant}/{target}``: CRM webhooks, authenticated by their signature."""
    inbox = CrmInbox(settings, redis_url, store)
    router = APIRouter(tags=["crm"])

    @router.post(
        "/v1/crm/{tenant}/{target}",
        summary="A CRM webhook (Follow Up Boss) becoming contract-v1 events",
        responses={401: {"description": "bad signature"}, 404: {"description": "no receiver"},
                   413: {"description": "body too large"}, 502: {"description": "CRM down"}},
    )  # fmt: skip
    async def crm_webhook(tenant: str, target: str, request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            return _answer(413, "too_large", f"body over {MAX_BODY} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _answer(413, "too_large", f"body over {MAX_BODY} bytes")
        return await inbox.handle(tenant, target, body, request.headers.get("fub-signature", ""))

    return router
