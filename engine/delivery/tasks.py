"""Follow-up steps (``lp:cadence``, engine/cadence) delivered where work happens.

- an agent **task** goes on the tenant's feed (SSE and page) to the lead's agent (every
  agent of the tenant while the lead has none), with one line an agent reads at a
  glance: "call L42 now — day 2 of the 14-day hot cadence: create momentum: offer two
  time options", and into the agent's task list (``dlv:tasks:{tenant}:{agent}``, by due
  time) for the page's "today";
- an automatic **message** goes to the tenant's signed webhook (``webhook_url``) as a
  ``cadence.message`` with the template id and the personalisation fields, and to each
  of the tenant's delivery targets that opted in with the ``cadence`` trigger (an
  ``http`` CRM or sender, a Slack or Teams channel: ``engine/delivery/targets.py``);
  the receiver renders and sends it (leadpulse renders no message it cannot send).

A step whose channel delivery's consent book knows to be closed is not sent (defence in
depth: the engine already skips blocked channels); it is counted and acknowledged.
Entries are acknowledged when their webhook delivery finished, like alerts; the step
id is the delivery id, so a receiver deduplicates a redelivery.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgpack

from engine.delivery.consent import ConsentBook
from engine.delivery.feed import Feed
from engine.delivery.keys import DeliveryKeys
from engine.delivery.metrics import DeliveryMetrics
from engine.delivery.targets import TargetJobs
from engine.delivery.webhooks import Job
from engine.settings import Settings

__all__ = ["StepDelivery", "decode_step", "task_text", "today_tasks"]

VERBS = {"call": "call", "voicemail": "leave a voicemail for", "sms": "text", "email": "email"}


def decode_step(fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    try:
        step = msgpack.unpackb(fields[b"c"], raw=False)
    except (KeyError, ValueError, msgpack.UnpackException):
        return None
    return step if isinstance(step, dict) and step.get("step_id") else None


def task_text(step: dict[str, Any], now: float, tz: str) -> str:
    """The task in one line: "call L42 now — day 2 of the hot track: offer two time options"."""
    verb = VERBS.get(str(step.get("channel")), str(step.get("channel")))
    due = float(step.get("due_ts") or now)
    if due <= now + 60:
        when = "now"
    else:
        when = "at " + datetime.fromtimestamp(due, ZoneInfo(tz)).strftime("%a %H:%M %Z")
    return (f"{verb} {step.get('lead_id')} {when} — day {step.get('day')} of the "
            f"{step.get('plan_label')}: {step.get('goal')}")  # fmt: skip


class StepDelivery:
    """Handles one ``lp:cadence`` entry: feed and task list, or the tenant's webhook."""

    def __init__(
        self,
        settings: Settings,
        client: Any,
        keys: DeliveryKeys,
        feed: Feed,
        consent: ConsentBook,
        targets: TargetJobs | None = None,
        metrics: DeliveryMetrics | None = None,
    ) -> None:
        self._s = settings
        self._r = client
        self._keys = keys
        self._feed = feed
        self._consent = consent
        self._targets = targets or TargetJobs()
        self._metrics = metrics
        self._ttl = int(settings.features.idle_expire_d * 86_400)
        self.counts = {"task": 0, "message": 0, "blocked": 0, "no_target": 0}

    def handle(self, step: dict[str, Any], now: float) -> list[Job]:
        """One step: its jobs (messages), counted by kind and outcome (metrics)."""
        jobs, outcome = self._handle(step, now)
        if self._metrics is not None:
            kind = "task" if step.get("kind") == "task" else "message"
            self._metrics.cadence_steps.labels(kind, outcome).inc()
        return jobs

    def _handle(self, step: dict[str, Any], now: float) -> tuple[list[Job], str]:
        tenant, lead = str(step["tenant"]), str(step["lead_id"])
        channel = "call" if step.get("channel") == "voicemail" else str(step.get("channel"))
        if channel in self._consent.reasons(tenant, lead):
            self.counts["blocked"] += 1
            return [], "blocked"
        cfg = self._s.delivery.tenant(tenant)
        tz = cfg.timezone or self._s.alerts.timezone
        if step.get("kind") == "task":
            self._task(step, now, tz)
            return [], "sent"
        self.counts["message"] += 1
        payload = {**step, "type": "cadence.message", "delivery_id": step["step_id"],
                   "sent_ms": int(now * 1000)}  # fmt: skip
        ids: dict[str, Any] = {
            "alert_id": str(step["step_id"]),
            "delivery_id": str(step["step_id"]),
            "ingest_ms": int(step.get("emit_ms") or 0),
            "order_key": f"{tenant}/{lead}",
        }
        jobs = self._targets.jobs(payload, cfg.targets, ids) if cfg.targets else []
        if cfg.webhook_url:
            body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
            jobs.insert(0, Job(target="tenant", url=cfg.webhook_url, body=body,
                               secret=cfg.secret.get_secret_value(), **ids))  # fmt: skip
        if not jobs:
            self.counts["no_target"] += 1
            return [], "no_target"
        return jobs, "sent"

    def _task(self, step: dict[str, Any], now: float, tz: str) -> None:
        self.counts["task"] += 1
        tenant, agent = str(step["tenant"]), str(step.get("agent_id") or "")
        data = {**step, "type": "cadence.task", "text": task_text(step, now, tz), "timezone": tz}
        pipe = self._r.pipeline(transaction=True)
        key = self._keys.tasks(tenant, agent)
        pipe.zadd(key, {json.dumps(data, sort_keys=True): float(step.get("due_ts") or now)})
        pipe.zremrangebyscore(key, "-inf", f"({now - 7 * 86_400}")  # a week of history
        pipe.expire(key, self._ttl)
        self._feed.publish(tenant, "task", data, [agent] if agent else ["*"], pipe=pipe)
        pipe.execute()

    def today(self, tenant: str, agent: str, now: float, tz: str) -> list[dict[str, Any]]:
        """An agent's tasks due today (tenant's day), oldest first."""
        return today_tasks(self._r, self._keys, tenant, [agent], now, tz)


def _day_start(now: float, tz: str) -> float:
    local = datetime.fromtimestamp(now, ZoneInfo(tz))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def today_tasks(
    client: Any, keys: DeliveryKeys, tenant: str, agents: list[str], now: float, tz: str
) -> list[dict[str, Any]]:
    """The tasks of ``agents`` ("" : the lead has no agent yet) due today in the tenant's
    zone ``tz``, by due time; each once (a redelivered step is one task), with its line
    worded for ``now`` and its due time in the zone (``due_local``)."""
    start = _day_start(now, tz)
    end = _day_start(start + 86_400 + 3_600, tz)  # the next midnight (23 or 25 h days too)
    pipe = client.pipeline(transaction=False)
    for agent in agents:
        pipe.zrangebyscore(keys.tasks(tenant, agent), start, f"({end}")
    seen: dict[str, dict[str, Any]] = {}
    for rows in pipe.execute():
        for raw in rows:
            try:
                task = json.loads(raw)
            except ValueError:
                continue
            if isinstance(task, dict) and task.get("step_id"):
                seen.setdefault(str(task["step_id"]), task)
    out = []
    for task in sorted(seen.values(), key=lambda t: (float(t.get("due_ts") or 0), t["step_id"])):
        due = float(task.get("due_ts") or now)
        out.append({**task, "text": task_text(task, now, tz), "timezone": tz,
                    "due_local": datetime.fromtimestamp(due, ZoneInfo(tz)).strftime("%H:%M %Z"),
                    "unassigned": not task.get("agent_id")})  # fmt: skip
    return out
