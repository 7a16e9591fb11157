"""The hot list as an agent sees it: one read model for the page's JSON and tests.

Leads: those delivery alerted on (newest first) plus, for the whole-tenant view, the
engine's hot list (top scores). For each: the engine's current score record
(``engine.views``), the last delivered alert (its script, first touch, SLA), the
assignment, the SLA clock and why channels are blocked, grouped by bucket P1 -> P5.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any, cast

from engine.delivery.consent import blocked_reasons
from engine.delivery.feed import redact_for_agent
from engine.delivery.keys import DeliveryKeys
from engine.delivery.scripts import bucket_label
from engine.records import RecordReader
from engine.settings import load_settings
from engine.shards import read_hot
from engine.views import read_scores

__all__ = ["BUCKETS", "read_board", "redact_board"]

BUCKETS = ("P1", "P2", "P3", "P4", "P5")


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _sees(assignment: dict[str, Any] | None, agent: str, team: str) -> bool:
    if assignment is None:
        return not agent and not team
    state = assignment.get("state")
    if team and assignment.get("group") != team and state != "pond":
        return False
    if not agent:
        return True
    if state == "assigned":
        return assignment.get("agent") == agent
    if state == "offered":
        return agent in str(assignment.get("offered_to", "")).split(",")
    return True  # the pond: anyone may claim


@functools.lru_cache(maxsize=8)
def _default_reader(prefix: str) -> RecordReader:
    return RecordReader(load_settings(environ={}), prefix)


def read_board(
    client: Any,
    prefix: str,
    tenant: str,
    *,
    agent: str = "",
    team: str = "",
    limit: int = 200,
    feed_id: str = "0-0",
    now: float = 0.0,
    tz: str = "UTC",
    reader: RecordReader | None = None,
) -> dict[str, Any]:
    """The board; ``tz``: the tenant's time zone (times in words, and for the page);
    ``reader``: how score records are read (default: the default settings' words and key
    layout); its key names find the hot list's shards (``engine/shards.py``)."""
    keys = DeliveryKeys(prefix)
    reader = reader or _default_reader(prefix)
    leads = [_s(x) for x in client.zrevrange(keys.leads(tenant), 0, limit - 1)]
    if not agent and not team:
        for lead in read_hot(client, reader.names, tenant, limit):
            if lead not in leads:
                leads.append(lead)
    buckets: dict[str, list[dict[str, Any]]] = {b: [] for b in BUCKETS}
    board = {"tenant": tenant, "agent": agent, "team": team, "now": now, "feed_id": feed_id,
             "timezone": tz, "buckets": buckets}  # fmt: skip
    if not leads:
        return board
    pipe = client.pipeline(transaction=False)
    pipe.mget([keys.card(tenant, lead) for lead in leads])
    for lead in leads:
        pipe.hgetall(keys.assignment(tenant, lead))
        pipe.hgetall(keys.clock(tenant, lead))
        pipe.hgetall(keys.consent(tenant, lead))
    replies = pipe.execute()
    cards = cast(list[Any], replies[0])
    records = {r["lead_id"]: r for r in read_scores(client, reader, [(tenant, x) for x in leads])}
    for i, lead in enumerate(leads):
        asg = {_s(k): _s(v) for k, v in replies[1 + 3 * i].items()} or None
        if not _sees(asg, agent, team):
            continue
        clock = {_s(k): _s(v) for k, v in replies[2 + 3 * i].items()} or None
        consent = {_s(k): json.loads(v) for k, v in replies[3 + 3 * i].items()}
        card = json.loads(cards[i]) if cards[i] else {}
        record = records.get(lead)
        if record is None and not card:
            continue
        by = record["bucket_by"] if record is not None else card.get("bucket_by", "score")
        row = _row(lead, record, card, consent, tz)
        row.update(assignment=_assignment_view(asg), clock=_clock_view(clock), bucket_by=by,
                   bucket_label=bucket_label(row["bucket"], by))  # fmt: skip
        buckets.setdefault(str(row["bucket"]), []).append(row)
    for rows in buckets.values():
        rows.sort(key=lambda r: (-(r["score"] or 0), r["lead_id"]))
    return board


_CARD = ("alert_id", "triggers", "first_touch", "sla", "event", "script", "lead", "why_now",
         "text", "bucket_label")  # fmt: skip


def _row(
    lead: str,
    record: dict[str, Any] | None,
    card: dict[str, Any],
    consent: dict[str, Any],
    tz: str,
) -> dict[str, Any]:
    """A lead's row: the engine's record (else the last alert's), consent in words."""
    blocked = (record or {}).get("blocked_channels") or card.get("blocked_channels") or []
    return {
        "lead_id": lead,
        "score": record["score"] if record else card.get("score_after"),
        "bucket": record["bucket"] if record else card.get("bucket"),
        "tier": record["tier"] if record else card.get("tier"),
        "reasons": record["reasons"] if record else card.get("reasons", []),
        "blocked_channels": sorted(set(blocked) | set(consent)),
        "blocked_reasons": blocked_reasons(blocked, consent, tz),
        "alert": {k: card.get(k) for k in _CARD} if card else None,
    }


def redact_board(board: dict[str, Any], me: str, names: Iterable[str] = ()) -> None:
    """In place, for an agent key: colleagues' names in every row's owner and clock
    (pond rows too: who missed the lead before), as on the feed."""
    for rows in board.get("buckets", {}).values():
        for row in rows:
            for field, kind in (("assignment", "assignment"), ("clock", "sla")):
                if row.get(field):
                    row[field] = redact_for_agent(kind, row[field], me, names)


def _assignment_view(h: dict[str, str] | None) -> dict[str, Any] | None:
    if h is None:
        return None
    return {
        "state": h.get("state"), "agent": h.get("agent", ""), "group": h.get("group", ""),
        "how": h.get("how", ""), "reason": h.get("reason", ""),
        "offered_to": [x for x in h.get("offered_to", "").split(",") if x],
        "missed_by": [x for x in h.get("missed_by", "").split(",") if x],
        "claim_deadline": float(h.get("claim_deadline") or 0),
    }  # fmt: skip


def _clock_view(h: dict[str, str] | None) -> dict[str, Any] | None:
    if h is None:
        return None
    out: dict[str, Any] = {k: h.get(k, "") for k in ("status", "agent", "stopped_by", "rule")}
    for k in ("start_ts", "deadline_ts", "first_deadline_ts", "stopped_ts", "response_s"):
        out[k] = float(h[k]) if h.get(k) else None
    out["misses"] = int(h.get("misses") or 0)
    out["late_on_arrival"] = h.get("late_on_arrival") == "1"
    return out
