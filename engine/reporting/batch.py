"""The engine's side: one batch's report increments, committed in the batch's MULTI/EXEC.

``gather(settings, client, events, fx)`` runs after the processor has
gathered the batch's effects (``fx``: which events counted, the alerts they raised,
the labelled examples) and before the commit: the batch's leads' report marks, as
their records hold them (``fx.features``: read with the leads, no round trip here),
then :func:`engine.reporting.aggregates.observe` per counted event in stream order.
The result (:class:`ReportDelta`) is one field of ``BatchEffects``; the committer
applies it in the same transaction as the batch's positions, so a batch's counts land
exactly once (a batch that did not commit is read again and counted from the same marks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import msgpack

from engine.delivery.consent import blocks_from
from engine.events import Event
from engine.records import Alert
from engine.reporting.aggregates import CONSENT, AlertSeen, LeadMark, Seen, observe, quality
from engine.reporting.keys import day_key, tenants_key

if TYPE_CHECKING:
    from engine.settings import Settings
    from engine.sinks import BatchEffects

__all__ = ["DEFAULT_RETENTION_D", "ReportDelta", "day_of_for", "gather", "retention_d"]

DEFAULT_RETENTION_D = 400


#: A batch's report counters in one call: KEYS the day keys; ARGV[1] their TTL, then
#: (key index, field, increment) per counter. Each HINCRBY stands alone as it did as its
#: own command (``pcall``: one that fails does not stop the others; the first error is
#: the reply, so the batch's transaction still reports it).
_INCREMENTS = r"""
local err
for i = 2, #ARGV, 3 do
  local r = redis.pcall('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
  if type(r) == 'table' and r.err and not err then err = r end
end
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
if err then return err end
return #KEYS
"""


@dataclass
class ReportDelta:
    """Counter increments ``(key, field) -> n`` and their TTL; the leads' report marks
    that changed (written in the leads' records by the committer: ``features/record.py``)."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    marks: dict[tuple[str, str], LeadMark] = field(default_factory=dict)
    tenants: set[str] = field(default_factory=set)
    tenants_key: str = ""
    ttl_s: int = DEFAULT_RETENTION_D * 86_400

    def apply(self, pipe: Any) -> None:
        """Queue the writes on the batch's transaction: one script call (:data:`_INCREMENTS`:
        HINCRBY per counter, EXPIRE per day key), not a command per counter."""
        keys: dict[str, int] = {}
        args: list[Any] = [self.ttl_s]
        for (key, name), n in self.counts.items():
            if n:
                args += (keys.get(key) or keys.setdefault(key, len(keys) + 1), name, n)
        if keys:  # EVAL, not EVALSHA: a NOSCRIPT inside MULTI would abort the batch
            pipe.execute_command("EVAL", _INCREMENTS, len(keys), *keys, *args)
        if self.tenants and self.tenants_key:
            pipe.sadd(self.tenants_key, *sorted(self.tenants))


def retention_d(settings: Settings) -> int:
    """``reporting.retention_d``: days a day's counters live after their last write."""
    return settings.reporting.retention_d


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=64)
def day_of_for(zone: str) -> Callable[[float], str]:
    """Event time -> the local date (``YYYY-MM-DD``) in ``zone``; cached per 15 minutes
    (every UTC offset in use is a multiple of 15 minutes)."""
    tz = _zone(zone)

    @lru_cache(maxsize=4_096)
    def quarter(q: int) -> str:
        return datetime.fromtimestamp(q * 900, tz).strftime("%Y-%m-%d")

    return lambda ts: quarter(int(ts // 900))


def tenant_zone(settings: Settings, tenant: str) -> str:
    tz = settings.delivery.tenant(tenant).timezone
    return tz or settings.alerts.timezone


def gather(
    settings: Settings, client: Any, events: Sequence[Event], fx: BatchEffects, prefix: str = ""
) -> ReportDelta:
    """The batch's report increments; the leads' marks from their records, as the batch
    holds them (``fx.features``; none are read here). ``prefix``: the batch's own
    partition's in the slot-per-partition layout (the counters are its shard)."""
    prefix = prefix or settings.redis.key_prefix
    delta = ReportDelta(tenants_key=tenants_key(prefix), ttl_s=retention_d(settings) * 86_400)
    counted = _counted(events, fx)
    leads = sorted({(ev.tenant, ev.lead_id) for ev in counted})
    marks: dict[tuple[str, str], LeadMark] = {}
    if leads:
        if fx.features is None:
            raise ValueError("report marks live in the lead records: the batch holds none")
        held = fx.features.hold(leads)
        for who in leads:
            h = held.get(who)
            marks[who] = LeadMark.from_list(h.rest.marks if h is not None else None)
    alerts = {(a.tenant, a.event.event_id): a for a in fx.alerts}
    days: dict[str, Callable[[float], str]] = {}
    changed: set[tuple[str, str]] = set()
    for ev in counted:
        day_of = days.get(ev.tenant) or days.setdefault(
            ev.tenant, day_of_for(tenant_zone(settings, ev.tenant))
        )
        who = (ev.tenant, ev.lead_id)
        mark = marks[who]
        before = None if who in changed else _state(mark)  # a changed lead stays changed
        for day, name, n in observe(mark, _seen(ev, alerts), day_of):
            key = (day_key(prefix, ev.tenant, day), name)
            delta.counts[key] = delta.counts.get(key, 0) + n
        if before is not None and _state(mark) != before:
            changed.add(who)
        delta.tenants.add(ev.tenant)
    for tenant, lead in changed:
        delta.marks[(tenant, lead)] = marks[(tenant, lead)]
    _quality(settings, fx, delta, days, prefix)
    return delta


def _state(mark: LeadMark) -> tuple[Any, ...]:
    """A mark's fields, to tell whether an event changed it (what comparing ``to_hash``
    told, without building its strings: the times are event times, SLA deadlines or 0.0,
    never -0.0 or NaN; ``done`` and ``blocked`` only grow, so a set changed iff its
    joined text did)."""
    m = mark
    return (m.day, m.source, m.bucket, m.agent, m.clock_ts, m.clock_deadline, m.clock_day,
            m.clock_kind, frozenset(m.done), frozenset(m.blocked))  # fmt: skip


def _counted(events: Sequence[Event], fx: BatchEffects) -> list[Event]:
    """The events that counted (the processor listed them in ``fx.done``), in stream
    order, each once; visitor-level leads (``~`` ids) are not leads yet."""
    todo = set(fx.done)
    out = []
    for ev in events:
        key = (ev.tenant, ev.lead_id, ev.event_id)
        if key in todo:
            todo.discard(key)
            if not ev.lead_id.startswith("~"):
                out.append(ev)
    return out


def _seen(ev: Event, alerts: dict[tuple[str, str], Alert]) -> Seen:
    """The event with the alert it raised and the channels it closed (the feature
    script's consent rules, as delivery applies them)."""
    alert = alerts.get((ev.tenant, ev.event_id))
    seen_alert = None
    if alert is not None and alert.lead_id == ev.lead_id:
        hand = any(t.startswith("hand_raise") for t in alert.triggers)
        seen_alert = AlertSeen(alert.bucket, float(alert.sla.deadline_ts or 0), hand)
    closed = tuple(b.channel for b in blocks_from(ev)) if ev.type in CONSENT else ()
    return Seen(event=ev, source=ev.source, agent="", blocked=closed, alert=seen_alert)


def _quality(
    settings: Settings, fx: BatchEffects, delta: ReportDelta,
    days: dict[str, Callable[[float], str]], prefix: str,
) -> None:  # fmt: skip
    for blob in fx.labels:
        ex = msgpack.unpackb(blob, raw=False)
        tenant = str(ex.get("tenant") or "")
        if not tenant:
            continue
        day_of = days.get(tenant) or days.setdefault(
            tenant, day_of_for(tenant_zone(settings, tenant))
        )
        for day, name, n in quality(ex, day_of):
            key = (day_key(prefix, tenant, day), name)
            delta.counts[key] = delta.counts.get(key, 0) + n
        delta.tenants.add(tenant)
