"""Delivery targets beside the signed webhook: CRM write-back, Slack and Teams messages.

Each alert a tenant's targets want (``target_settings.py``: ``alert``, and for chat
``escalated`` too), and for a CRM each bucket change (``bucket``: an entry the engine
appends to ``<prefix>:buckets`` in the transaction that commits the batch, a drop to P5
or to lost included; :class:`BucketChange`), becomes one
:class:`~engine.delivery.webhooks.Job` per target, so it shares the webhook's retries,
receipts, dead letter, per-lead order and ``Retry-After``:

- ``http``   the method, auth, URL template and body template the CRM needs;
- ``fub``    Follow Up Boss: ``PUT /v1/people/{crm_id}`` with the score, bucket and top
             reason in custom fields, Basic auth (the API key), ``X-System`` and
             ``X-System-Key``, paced under FUB's 250 requests per 10 s;
- ``slack``  an incoming-webhook message in Block Kit;
- ``teams``  an incoming-webhook message holding an Adaptive Card.

A target with the ``cadence`` trigger also gets the automatic messages of follow-up
plans (``engine/delivery/tasks.py``): the step id, template id, channel, goal and the
personalisation fields (property, address, area, timeline), never contact details.

What leaves leadpulse (README "Integrations"): ids, scores, bucket, tier, the reason
words, why now (naming the listing as the event named it), the first touch (never a
blocked channel) and the deadline; never an email address, a phone number or a name:
leadpulse never holds them in clear (the gateway hashes them at ingest).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from engine.delivery.scripts import bucket_label, local_time, why_now
from engine.delivery.target_settings import TargetSettings
from engine.delivery.webhooks import Job
from engine.redact import public_url

__all__ = [
    "STEP_BODY", "BucketChange", "Pacer", "TargetJobs", "Values", "fub_headers", "parse_change",
    "render", "step_lines", "values_of",
]  # fmt: skip

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_TOUCH = {"call": "call", "sms": "text", "email": "email", "chat": "chat"}


@dataclass(frozen=True)
class Values:
    """What a template may say about one alert: ids, scores and words, no contact data."""

    tenant: str
    lead_id: str
    crm_id: str
    alert_id: str
    delivery_id: str
    type: str
    score: int | float | None
    score_before: int | float | None
    probability: float | None
    bucket: str
    bucket_label: str
    tier: str
    top_reason: str
    why_now: str
    first_touch: str
    deadline: str  # ISO-8601 UTC ("" without one)
    deadline_local: str  # "Mon 5 Jan 2026, 10:05 CST" in the tenant's zone
    agent_id: str
    lead_url: str
    bucket_before: str = ""  # a bucket change's old bucket ("" for an alert, a new lead)
    # a follow-up step's automatic message (``cadence``, engine/delivery/tasks.py)
    step_id: str = ""
    template: str = ""
    channel: str = ""
    goal: str = ""
    plan_label: str = ""
    day: int | None = None
    property_id: str = ""
    address: str = ""
    area: str = ""
    timeline: str = ""

    def get(self, name: str) -> Any:
        return getattr(self, name) if name in self.__dataclass_fields__ else None


def _num(x: Any) -> int | float | None:
    return x if isinstance(x, int | float) and not isinstance(x, bool) else None


def _map(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _first_touch(payload: dict[str, Any]) -> str:
    """The recommended first touch, or "" when it is blocked (never an opted-out channel)."""
    touch = str(payload.get("first_touch") or "")
    if touch in set(map(str, payload.get("blocked_channels") or ())):
        return ""
    return _TOUCH.get(touch, "")


def values_of(payload: dict[str, Any], t: TargetSettings) -> Values:
    lead = str(payload.get("lead_id", ""))
    sla = _map(payload.get("sla"))
    deadline = _num(sla.get("deadline_ts"))
    tz = str(sla.get("timezone") or "UTC")
    assignment = _map(payload.get("assignment"))
    agent = str(assignment.get("agent") or payload.get("agent_id") or "")
    reasons = payload.get("reasons") if isinstance(payload.get("reasons"), list) else []
    url = ""
    if t.page_url:
        query = f"?agent={quote(agent, safe='')}" if agent else ""
        url = f"{t.page_url}{query}#lead-{quote(lead, safe='')}"
    return Values(
        tenant=str(payload.get("tenant", "")), lead_id=lead,
        crm_id=lead.removeprefix(t.lead_prefix) if t.lead_prefix else lead,
        alert_id=str(payload.get("alert_id", "")),
        delivery_id=str(payload.get("delivery_id") or payload.get("alert_id", "")),
        type=str(payload.get("type") or "alert"), score=_num(payload.get("score_after")),
        score_before=_num(payload.get("score_before")),
        probability=_num(payload.get("probability")), bucket=str(payload.get("bucket") or ""),
        bucket_label=str(payload.get("bucket_label") or bucket_label(payload.get("bucket"))),
        tier=str(payload.get("tier") or ""), top_reason=str(reasons[0]) if reasons else "",
        why_now=str(payload.get("why_now") or why_now(payload)),
        first_touch=_first_touch(payload),
        deadline=datetime.fromtimestamp(deadline, UTC).isoformat() if deadline else "",
        deadline_local=local_time(deadline, tz) if deadline else "", agent_id=agent,
        lead_url=url, bucket_before=str(payload.get("bucket_before") or ""),
        **_step_values(payload),
    )  # fmt: skip


def _step_values(payload: dict[str, Any]) -> dict[str, Any]:
    """A step's template id, channel, goal and personalisation fields (no contact data)."""
    if not str(payload.get("type") or "").startswith("cadence"):
        return {}
    f = _map(payload.get("fields"))
    day = payload.get("day")
    return {
        **{k: str(payload.get(k) or "") for k in ("step_id", "template", "channel", "goal",
                                                  "plan_label")},
        "day": day if isinstance(day, int) and not isinstance(day, bool) else None,
        **{k: str(f.get(k) or "") for k in ("property_id", "address", "area", "timeline")},
    }  # fmt: skip


def render(template: Any, v: Values, *, quote_values: bool = False) -> Any:
    """A template with ``{name}`` placeholders filled: a string that is exactly one
    placeholder keeps the value's type (a number stays a number); unknown names stay."""
    if isinstance(template, dict):
        return {k: render(x, v, quote_values=quote_values) for k, x in template.items()}
    if isinstance(template, list):
        return [render(x, v, quote_values=quote_values) for x in template]
    if not isinstance(template, str):
        return template
    whole = _PLACEHOLDER.fullmatch(template)
    if whole and not quote_values and v.get(whole[1]) is not None:
        return v.get(whole[1])

    def one(m: re.Match[str]) -> str:
        value = v.get(m[1])
        if value is None:
            return m[0] if m[1] not in v.__dataclass_fields__ else ""
        return quote(str(value), safe="") if quote_values else str(value)

    return _PLACEHOLDER.sub(one, template)


class Pacer:
    """At most ``rate`` sends per second to one target (a CRM's rate limit), FIFO."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._gap = 1.0 / rate
        self._next = 0.0
        self._clock = clock

    async def __call__(self) -> None:
        now = self._clock()
        at = max(now, self._next)
        self._next = at + self._gap
        if at > now:
            await asyncio.sleep(at - now)


@dataclass(frozen=True)
class Request:
    """One HTTP call a target wants: method, URL, headers and JSON body."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _auth(t: TargetSettings) -> list[tuple[str, str]]:
    secret = t.secret.get_secret_value()
    if t.kind == "fub" or t.auth == "basic":
        user, password = (secret, "") if t.kind == "fub" else (t.username, secret)
        token = b64encode(f"{user}:{password}".encode()).decode()
        return [("Authorization", f"Basic {token}")]
    if t.auth == "bearer":
        return [("Authorization", f"Bearer {secret}")]
    return []


def http_request(t: TargetSettings, v: Values) -> Request:
    """A CRM call of the tenant's own shape (``kind = "http"``)."""
    body = t.body or {"lead_id": "{lead_id}", "score": "{score}", "bucket": "{bucket}",
                      "top_reason": "{top_reason}"}  # fmt: skip
    return _http(t, v, body)


#: What an ``http`` target gets for an automatic message unless ``cadence_body`` says.
STEP_BODY: dict[str, Any] = {
    "type": "cadence.message", "step_id": "{step_id}", "tenant": "{tenant}",
    "lead_id": "{lead_id}", "crm_id": "{crm_id}", "template": "{template}",
    "channel": "{channel}", "goal": "{goal}", "plan": "{plan_label}", "day": "{day}",
    "fields": {"property_id": "{property_id}", "address": "{address}", "area": "{area}",
               "timeline": "{timeline}"},
}  # fmt: skip


def http_step_request(t: TargetSettings, v: Values) -> Request:
    """An automatic message to the tenant's sender or CRM (``kind = "http"``)."""
    return _http(t, v, t.cadence_body or STEP_BODY)


def _http(t: TargetSettings, v: Values, body: dict[str, Any]) -> Request:
    secret = t.secret.get_secret_value()
    headers = _auth(t) + [(k, x.replace("{secret}", secret)) for k, x in t.headers.items()]
    url = str(render(t.url, v, quote_values=True))
    return Request(t.method, url, tuple(headers), _json(render(body, v)))


def fub_request(t: TargetSettings, v: Values) -> Request:
    """Follow Up Boss: the person's custom fields, ``PUT /v1/people/{id}``."""
    fields = t.fub_fields
    body = {fields[k]: getattr(v, k) for k in ("score", "bucket", "top_reason") if k in fields}
    url = f"{t.api_base}/v1/people/{quote(v.crm_id, safe='')}"
    return Request("PUT", url, fub_headers(t), _json(body))


def fub_headers(t: TargetSettings) -> tuple[tuple[str, str], ...]:
    """Basic auth with the API key, and the registered system's ``X-System`` headers."""
    headers = _auth(t) + [("X-System", t.system)]
    if t.system_key.get_secret_value():
        headers.append(("X-System-Key", t.system_key.get_secret_value()))
    return tuple(headers)


def _move(v: Values) -> str:
    return (
        f"{v.score_before:g} → {v.score:g}"
        if v.score_before is not None and v.score is not None
        else f"{v.score}"
    )


def chat_lines(v: Values) -> list[tuple[str, str]]:
    """The facts a chat message shows, in order (title first)."""
    who = f"Lead {v.lead_id}" + (f" · agent {v.agent_id}" if v.agent_id else "")
    lines = [
        ("title", f"{v.bucket_label or v.bucket} · {who}"),
        ("Score", _move(v)),
        ("Why now", v.why_now),
        ("First touch", v.first_touch or "no channel open"),
    ]
    if v.deadline_local:
        lines.append(("Respond by", v.deadline_local))
    if v.top_reason:
        lines.append(("Top reason", v.top_reason))
    if v.type == "alert.escalated":
        lines[0] = ("title", "Escalated: " + lines[0][1])
    return lines


def step_lines(v: Values) -> list[tuple[str, str]]:
    """The facts a chat message about an automatic message shows (title first)."""
    who = f"Lead {v.lead_id}" + (f" · agent {v.agent_id}" if v.agent_id else "")
    lines = [
        ("title", f"Automatic {_TOUCH.get(v.channel, v.channel)} · {who}"),
        ("Step", f"day {v.day} of the {v.plan_label}"),
        ("Template", v.template),
        ("Goal", v.goal),
    ]
    named = (("Property", v.address or v.property_id), ("Area", v.area), ("Timeline", v.timeline))
    return lines + [(k, x) for k, x in named if x]


def slack_request(t: TargetSettings, v: Values) -> Request:
    """Slack incoming webhook, Block Kit: a header, the facts, a button to the lead."""
    return _slack(t, v, chat_lines(v), f"{_move(v)} · {v.why_now}")


def slack_step_request(t: TargetSettings, v: Values) -> Request:
    return _slack(t, v, step_lines(v), f"{v.template} ({v.goal})")


def _slack(t: TargetSettings, v: Values, lines: list[tuple[str, str]], gist: str) -> Request:
    title = lines[0][1]
    facts = [{"type": "mrkdwn", "text": f"*{k}*\n{_slack_escape(x)}"} for k, x in lines[1:]]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "fields": facts[:10]},
    ]
    if v.lead_url:
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "text": {"type": "plain_text", "text": "Open the lead"},
            "url": v.lead_url,
        }]})  # fmt: skip
    text = f"{title}: {gist}"
    return Request("POST", t.url, (), _json({"text": _slack_escape(text), "blocks": blocks}))


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def teams_request(t: TargetSettings, v: Values) -> Request:
    """Microsoft Teams incoming webhook / workflow: one message with an Adaptive Card."""
    return _teams(t, v, chat_lines(v))


def teams_step_request(t: TargetSettings, v: Values) -> Request:
    return _teams(t, v, step_lines(v))


def _teams(t: TargetSettings, v: Values, lines: list[tuple[str, str]]) -> Request:
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": lines[0][1], "weight": "Bolder", "size": "Medium",
             "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": x} for k, x in lines[1:]]},
        ],
    }  # fmt: skip
    if v.lead_url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open the lead", "url": v.lead_url}]
    message = {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }
    return Request("POST", t.url, (), _json(message))


_BUILDERS: dict[str, Callable[[TargetSettings, Values], Request]] = {
    "http": http_request, "fub": fub_request, "slack": slack_request, "teams": teams_request,
}  # fmt: skip
#: An automatic message of a follow-up plan (trigger ``cadence``; never ``fub``).
_STEP_BUILDERS: dict[str, Callable[[TargetSettings, Values], Request]] = {
    "http": http_step_request, "slack": slack_step_request, "teams": teams_step_request,
}  # fmt: skip


def _shown(t: TargetSettings, url: str) -> str:
    """What receipts show: chat webhook URLs are secrets (host only); CRM URLs without
    query or credentials."""
    if t.kind in ("slack", "teams"):
        return public_url(url, path=False) + "/…"
    return public_url(url)


def _writable(t: TargetSettings, v: Values) -> bool:
    """A CRM holds identified leads only: never a visitor-level lead (``~<visitor>``), and
    in Follow Up Boss only a person id (digits), or every call would be a 404."""
    if t.kind in ("slack", "teams"):
        return True
    if v.lead_id.startswith("~"):
        return False
    return t.kind != "fub" or v.crm_id.isdigit()


class TargetJobs:
    """Builds the target jobs of one alert payload, and of one bucket change
    (:class:`BucketChange`); one :class:`Pacer` per target."""

    def __init__(self) -> None:
        self._pacers: dict[tuple[str, str], Pacer] = {}

    def pacer(self, tenant: str, name: str, t: TargetSettings) -> Pacer | None:
        if not t.pace_per_s:
            return None
        key = (tenant, name)
        if key not in self._pacers:
            self._pacers[key] = Pacer(t.pace_per_s)
        return self._pacers[key]

    def jobs(
        self, payload: dict[str, Any], targets: dict[str, TargetSettings], body_base: dict[str, Any]
    ) -> list[Job]:
        """One job per target that wants this payload's type (``alert``, ``escalated``,
        ``bucket``; ``cadence.message``: ``cadence``)."""
        kind = str(payload.get("type") or "alert").removeprefix("alert.")
        kind = "cadence" if kind.startswith("cadence") else kind
        builders = _STEP_BUILDERS if kind == "cadence" else _BUILDERS
        out = []
        for name, t in sorted(targets.items()):
            if kind not in t.triggers or t.kind not in builders:
                continue
            v = values_of(payload, t)
            if not _writable(t, v):
                continue
            req = builders[t.kind](t, v)
            out.append(Job(
                target=f"{t.kind}:{name}", url=req.url, method=req.method, headers=req.headers,
                body=req.body, secret="", signed=False, shown_url=_shown(t, req.url),
                pace=self.pacer(v.tenant, name, t), **body_base,
            ))  # fmt: skip
        return out

    def change_jobs(
        self, change: BucketChange, targets: dict[str, TargetSettings], alert_sent: bool
    ) -> list[Job]:
        """The write-backs of one bucket change: every target with the ``bucket``
        trigger, except those that get the batch's alert of the same bucket
        (``alert_sent``: that alert went out, so one call, not two)."""
        wanted = {
            name: t for name, t in targets.items()
            if "bucket" in t.triggers and not (alert_sent and "alert" in t.triggers)
        }  # fmt: skip
        if not wanted:
            return []
        base = {
            "alert_id": change.delivery_id, "delivery_id": change.delivery_id, "ingest_ms": 0,
            "order_key": f"{change.tenant}/{change.lead_id}",  # the alerts' per-lead order
        }  # fmt: skip
        return self.jobs(change.payload(), wanted, base)


# -- bucket changes ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BucketChange:
    """One entry of ``<prefix>:buckets``: the engine saw a lead's bucket move when it
    committed a batch (``engine/sinks.py``, same transaction), a drop to P5 or to lost
    included. ``alert_id``: the batch's alert that carries the same bucket ("" if none);
    ``after``: the alerts stream id delivery must have read before writing this one."""

    entry_id: str
    tenant: str
    lead_id: str
    bucket_before: str
    by_before: str
    bucket: str
    bucket_by: str
    score: int | float | None
    probability: float | None
    top_reason: str
    ts: float
    alert_id: str
    emit_ms: int
    after: str

    @property
    def delivery_id(self) -> str:
        """The write-back's idempotency key (``X-Leadpulse-Delivery-Id``, receipts): the
        lead, its new bucket and the entry id; the same on every retry and replay."""
        key = f"{self.tenant}\x1f{self.lead_id}\x1f{self.bucket}\x1f{self.entry_id}"
        return "b" + hashlib.blake2b(key.encode(), digest_size=12).hexdigest()

    def payload(self) -> dict[str, Any]:
        """The change as the payload templates read (no alert: no deadline, no touch)."""
        before = bucket_label(self.bucket_before, self.by_before) if self.bucket_before else "none"
        label = bucket_label(self.bucket, self.bucket_by)
        return {
            "type": "bucket", "tenant": self.tenant, "lead_id": self.lead_id,
            "alert_id": self.delivery_id, "delivery_id": self.delivery_id,
            "score_after": self.score, "score_before": None, "probability": self.probability,
            "bucket": self.bucket, "bucket_by": self.bucket_by, "bucket_label": label,
            "bucket_before": self.bucket_before, "tier": "",
            "reasons": [self.top_reason] if self.top_reason else [],
            "why_now": f"Bucket {before} → {label}", "first_touch": "", "blocked_channels": [],
        }  # fmt: skip


def parse_change(sid: str, fields: dict[bytes, bytes]) -> BucketChange | None:
    """A ``<prefix>:buckets`` entry, or None when it is not one (logged, acknowledged)."""
    f = {_text(k): _text(v) for k, v in fields.items()}
    try:
        return BucketChange(
            entry_id=sid, tenant=f["t"], lead_id=f["l"], bucket_before=f.get("from", ""),
            by_before=f.get("from_by", ""), bucket=f["to"], bucket_by=f.get("by", "score"),
            score=_number(f.get("s")), probability=_number(f.get("p")),
            top_reason=f.get("r", ""), ts=float(f.get("ts") or 0),
            alert_id=f.get("alert", ""), emit_ms=int(float(f.get("emit_ms") or 0)),
            after=f.get("after") or "0-0",
        )  # fmt: skip
    except (KeyError, ValueError):
        return None


def _number(x: str | None) -> int | float | None:
    if not x:
        return None
    try:
        n = float(x)
    except ValueError:
        return None
    return int(n) if n.is_integer() and "." not in x else n


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
