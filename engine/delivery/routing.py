"""Routing: who gets a lead, and why (seed 002: "routing needs to be boring").

Pure rules (:func:`match_rule`, :func:`next_in_turn`) decide from config and the lead:

1. **sticky**: a lead already assigned to an agent stays with that agent (two agents
   following up on one lead is the failure seed 002 opens with);
2. the **first rule** of ``[[delivery.tenants.<t>.rules]]`` whose conditions all hold
   names a group: seller leads to listing specialists, buyers by area or price band;
3. otherwise ``default_group`` (``"pond"``: the shared queue anyone may claim).

Inside a group: **round robin** (a Redis counter per group, so every process shares
one turn order and the split stays even), or **first-to-claim** when the rule says so:
the lead is offered to the whole group and the first claim wins; unclaimed after
``claim_timeout_s`` it goes round robin. An SLA miss moves the lead on
(:meth:`Assigner.reassign`: the next agent in turn who has not missed it, then the pond).

Every change is an ``assigned`` event appended to the lead's partition (the engine
records the agent on the lead), and the reason, in words, is kept per lead with its
history (:meth:`Assigner.read`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

import msgpack

from engine.delivery.keys import DeliveryKeys, member
from engine.delivery.leads import LeadProfile
from engine.settings import POND, RoutingRule, TenantDelivery
from engine.streams import Producer

__all__ = [
    "Assigner", "Assignment", "Match", "assigned_event", "lead_event_time", "match_rule",
    "next_in_turn", "stream_emitter",
]  # fmt: skip

_HISTORY = 50


@dataclass(frozen=True, slots=True)
class Match:
    group: str
    rule: int | None  # index in rules, None: default group
    first_to_claim: bool
    why: str


def _conditions(rule: RoutingRule) -> list[str]:
    out = []
    if rule.sides:
        out.append("side " + "/".join(rule.sides))
    if rule.areas:
        out.append("area " + "/".join(rule.areas))
    if rule.sources:
        out.append("source " + "/".join(rule.sources))
    if rule.buckets:
        out.append("bucket " + "/".join(rule.buckets))
    if rule.price_min or rule.price_max:
        hi = f"{rule.price_max:,.0f}" if rule.price_max else "any"
        out.append(f"price {rule.price_min:,.0f}-{hi}")
    return out


def _holds(rule: RoutingRule, bucket: str, p: LeadProfile) -> bool:
    if rule.sides and p.side not in rule.sides:
        return False
    if rule.areas and p.area.casefold() not in {a.casefold() for a in rule.areas}:
        return False
    if rule.sources and p.source not in rule.sources:
        return False
    if rule.buckets and bucket not in rule.buckets:
        return False
    if rule.price_min or rule.price_max:
        if p.price <= 0:  # unknown price never matches a price band
            return False
        if p.price < rule.price_min or (rule.price_max and p.price > rule.price_max):
            return False
    return True


def match_rule(tenant: TenantDelivery, bucket: str, profile: LeadProfile) -> Match:
    """The first rule whose every condition holds, else the default group."""
    for i, rule in enumerate(tenant.rules):
        if _holds(rule, bucket, profile):
            conds = ", ".join(_conditions(rule)) or "any lead"
            return Match(rule.group, i, rule.first_to_claim, f"rule {i + 1} ({conds})")
    return Match(tenant.default_group, None, False, "no rule matched: default group")


def next_in_turn(members: Sequence[str], turn: int, exclude: set[str]) -> str | None:
    """The member whose turn ``turn`` (0-based) is, skipping excluded ones; None if all are."""
    n = len(members)
    for k in range(n):
        agent = members[(turn + k) % n]
        if agent not in exclude:
            return agent
    return None


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where a lead is now. ``state``: assigned (to ``agent``), offered (to ``offered_to``,
    first to claim wins) or pond (anyone may claim)."""

    tenant: str
    lead_id: str
    state: str
    agent: str
    group: str
    how: str  # rule | default | sticky | claim | claim_timeout | escalation | event
    reason: str
    ts: float
    alert_id: str = ""
    offered_to: tuple[str, ...] = ()
    claim_deadline: float = 0.0
    missed_by: tuple[str, ...] = field(default_factory=tuple)
    # The lead's event time at this assignment (``ts`` is wall time, for SLA clocks): the
    # `assigned` event carries it, so a replay or backfill of old events while delivery
    # runs does not stamp a lead with today's date and make its next events look late.
    event_ts: float = 0.0

    def to_hash(self) -> dict[str, str]:
        d = asdict(self)
        d["offered_to"] = ",".join(self.offered_to)
        d["missed_by"] = ",".join(self.missed_by)
        return {k: str(v) for k, v in d.items()}

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Assignment:
        return cls(
            tenant=h["tenant"],
            lead_id=h["lead_id"],
            state=h["state"],
            agent=h.get("agent", ""),
            group=h.get("group", ""),
            how=h.get("how", ""),
            reason=h.get("reason", ""),
            ts=float(h.get("ts") or 0),
            alert_id=h.get("alert_id", ""),
            offered_to=tuple(x for x in h.get("offered_to", "").split(",") if x),
            claim_deadline=float(h.get("claim_deadline") or 0),
            missed_by=tuple(x for x in h.get("missed_by", "").split(",") if x),
            event_ts=float(h.get("event_ts") or 0),
        )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["offered_to"] = list(self.offered_to)
        d["missed_by"] = list(self.missed_by)
        return d

    @property
    def audience(self) -> list[str]:
        """Who should see this lead on their feed ("*": every agent of the tenant)."""
        if self.state == "assigned":
            return [self.agent]
        if self.state == "offered":
            return list(self.offered_to)
        return ["*"]


_CLAIM = """
local st = redis.call('HGET', KEYS[1], 'state') or ''
local cur = redis.call('HGET', KEYS[1], 'agent') or ''
if st == 'assigned' then
  if cur == ARGV[1] then return {2, cur} end
  return {0, cur}
end
if st == 'offered' then
  local offered = ',' .. (redis.call('HGET', KEYS[1], 'offered_to') or '') .. ','
  if not string.find(offered, ',' .. ARGV[1] .. ',', 1, true) then return {0, 'not_offered'} end
end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZREM', KEYS[2], ARGV[2])
return {1, st}
"""


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class Assigner:
    """Applies routing with its state in Redis and emits ``assigned`` events."""

    def __init__(
        self,
        client: Any,
        keys: DeliveryKeys,
        tenants: Callable[[str], TenantDelivery],
        emit: Callable[[dict[str, Any], Any], Any] | None,
        *,
        claim_timeout_s: float,
        ttl_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._r = client
        self._keys = keys
        self._tenants = tenants
        self._emit = emit
        self._claim_timeout = claim_timeout_s
        self._ttl = ttl_s
        self._clock = clock
        self._claim = client.register_script(_CLAIM)

    # -- reading ----------------------------------------------------------------------
    def read(self, tenant: str, lead: str) -> Assignment | None:
        raw = cast(dict[bytes, bytes], self._r.hgetall(self._keys.assignment(tenant, lead)))
        return Assignment.from_hash({_s(k): _s(v) for k, v in raw.items()}) if raw else None

    def history(self, tenant: str, lead: str) -> list[dict[str, Any]]:
        rows = cast(list[bytes], self._r.lrange(self._keys.history(tenant, lead), 0, -1))
        return [json.loads(r) for r in rows]

    def load(self, tenant: str) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], self._r.hgetall(self._keys.load(tenant)))
        return {_s(k): int(v) for k, v in raw.items()}

    # -- deciding ---------------------------------------------------------------------
    def prefetch(self, pipe: Any, alert: dict[str, Any]) -> None:
        """Queue the reads :meth:`route` needs (two replies) on a batch pipeline."""
        pipe.get(self._keys.route(str(alert["alert_id"])))
        pipe.hgetall(self._keys.assignment(str(alert["tenant"]), str(alert["lead_id"])))

    def route(
        self,
        alert: dict[str, Any],
        profile: LeadProfile,
        *,
        prefetched: tuple[Any, Any] | None = None,
        pipe: Any = None,
    ) -> Assignment:
        """Assign the lead of a new alert (idempotent per alert id).

        With ``prefetched`` (the replies of :meth:`prefetch`) and ``pipe`` the only
        round trip is a round-robin turn; the writes are queued on ``pipe``."""
        alert_id = str(alert["alert_id"])
        tenant, lead = str(alert["tenant"]), str(alert["lead_id"])
        if prefetched is None:
            reads = self._r.pipeline(transaction=False)
            self.prefetch(reads, alert)
            done, raw = reads.execute()
        else:
            done, raw = prefetched
        if done is not None:
            d = json.loads(done)
            d["offered_to"], d["missed_by"] = tuple(d["offered_to"]), tuple(d["missed_by"])
            return Assignment(**d)
        now = self._clock()
        cfg = self._tenants(tenant)
        current = Assignment.from_hash({_s(k): _s(v) for k, v in raw.items()}) if raw else None
        result: Assignment
        if current is not None and current.state in ("assigned", "offered"):
            what = f"assigned to {current.agent}" if current.agent else "offered to its group"
            result = replace(current, how="sticky", reason=f"already {what}: {current.reason}")
            self._remember(alert_id, result, pipe)
            return result
        event_ts = float((alert.get("event") or {}).get("ts") or now)
        if alert.get("agent_id") and current is None:
            agent = str(alert["agent_id"])
            result = Assignment(
                tenant, lead, "assigned", agent, _group_of(cfg, agent), "event",
                f"assigned to {agent} by an earlier event", now, alert_id, event_ts=event_ts,
            )  # fmt: skip
            return self._save(result, emit=False, pipe=pipe)
        result = self._new_assignment(alert, cfg, profile, now, event_ts)
        emit = result.state != "offered"
        return self._save(result, emit=emit, event_id=f"dlv-asg-{alert_id}", pipe=pipe)

    def _new_assignment(
        self,
        alert: dict[str, Any],
        cfg: TenantDelivery,
        profile: LeadProfile,
        now: float,
        event_ts: float,
    ) -> Assignment:
        """A first assignment by the tenant's rules: the pond, an offer, or a round-robin turn."""
        tenant, lead, alert_id = str(alert["tenant"]), str(alert["lead_id"]), str(alert["alert_id"])
        m = match_rule(cfg, str(alert.get("bucket", "")), profile)
        how = "rule" if m.rule is not None else "default"
        members = cfg.groups.get(m.group, ())
        if m.group == POND or not members:
            return Assignment(
                tenant, lead, "pond", "", POND, how, f"{m.why} -> the pond (shared queue)",
                now, alert_id, event_ts=event_ts,
            )  # fmt: skip
        if m.first_to_claim:
            return Assignment(
                tenant, lead, "offered", "", m.group, how,
                f"{m.why} -> offered to {m.group}: first to claim within "
                f"{self._claim_timeout:.0f} s",
                now, alert_id, tuple(members), now + self._claim_timeout, event_ts=event_ts,
            )  # fmt: skip
        agent = self._turn(tenant, m.group, members, set())
        return Assignment(
            tenant, lead, "assigned", agent, m.group, how,
            f"{m.why} -> {m.group}, round robin -> {agent}", now, alert_id, event_ts=event_ts,
        )  # fmt: skip

    def claim(self, tenant: str, lead: str, agent: str) -> tuple[bool, Assignment | None, str]:
        """First to claim wins: (won, assignment now, message)."""
        now = self._clock()
        current = self.read(tenant, lead)
        group = current.group if current and current.group != POND else ""
        group = group or _group_of(self._tenants(tenant), agent)
        was = current.state if current else "unassigned"
        reason = f"claimed by {agent} (first to claim; was {was})"
        new = Assignment(
            tenant, lead, "assigned", agent, group, "claim", reason, now,
            current.alert_id if current else "", event_ts=lead_event_time(current, now),
        )  # fmt: skip
        key = self._keys.assignment(tenant, lead)
        args: list[Any] = [agent, member(tenant, lead)]
        for k, v in new.to_hash().items():
            args += [k, v]
        won, info = self._claim(keys=[key, self._keys.claims], args=args)
        if int(won) == 0:
            holder = _s(info)
            if holder == "not_offered":
                return False, current, f"{lead} is offered to another group"
            return False, current, f"{lead} is already assigned to {holder}"
        if int(won) == 2:
            return True, current, f"{lead} is already yours"
        pipe = self._r.pipeline(transaction=True)
        self._after_save(new, emit=True, event_id=f"dlv-claim-{uuid.uuid4().hex}", pipe=pipe)
        pipe.execute()
        return True, new, reason

    def claim_timeouts(self, now: float | None = None) -> list[Assignment]:
        """Offers nobody claimed in time go round robin within their group."""
        now = self._clock() if now is None else now
        out = []
        for m in cast(list[bytes], self._r.zrangebyscore(self._keys.claims, "-inf", now)):
            if not self._r.zrem(self._keys.claims, m):
                continue  # another process took it
            tenant, lead = _s(m).split(":", 1)
            current = self.read(tenant, lead)
            if current is None or current.state != "offered":
                continue
            members = self._tenants(tenant).groups.get(current.group, ()) or current.offered_to
            agent = self._turn(tenant, current.group, members, set())
            new = replace(
                current, state="assigned", agent=agent, how="claim_timeout", ts=now,
                event_ts=lead_event_time(current, now),
                reason=f"nobody claimed within {self._claim_timeout:.0f} s: {current.group}, "
                f"round robin -> {agent}", offered_to=(), claim_deadline=0.0,
            )  # fmt: skip
            out.append(self._save(new, emit=True, event_id=f"dlv-ct-{uuid.uuid4().hex}"))
        return out

    def reassign(self, tenant: str, lead: str, step: str, missed: str) -> Assignment | None:
        """After an SLA miss: ``next_agent`` (in turn, not one who missed it) or ``pond``."""
        current = self.read(tenant, lead)
        if current is None:
            return None
        now = self._clock()
        missed_by = tuple(dict.fromkeys(current.missed_by + ((missed,) if missed else ())))
        event_ts = lead_event_time(current, now)
        why = _miss_words(current, missed)
        where = "still in" if current.state == POND else "returned to"
        members = self._tenants(tenant).groups.get(current.group, ())
        agent = None
        if step == "next_agent" and members:
            agent = self._turn(tenant, current.group, members, set(missed_by))
        if agent is not None:
            new = replace(
                current, state="assigned", agent=agent, how="escalation", ts=now, event_ts=event_ts,
                reason=f"{why}: reassigned to the next agent in "
                f"{current.group}, {agent}", missed_by=missed_by, offered_to=(),
                claim_deadline=0.0,
            )  # fmt: skip
        else:
            new = replace(
                current, state="pond", agent="", group=POND, how="escalation", ts=now,
                event_ts=event_ts,
                reason=f"{why}: {where} the pond (shared queue)",
                missed_by=missed_by, offered_to=(), claim_deadline=0.0,
            )  # fmt: skip
        return self._save(new, emit=True, event_id=f"dlv-esc-{uuid.uuid4().hex}")

    # -- state ------------------------------------------------------------------------
    def _turn(self, tenant: str, group: str, members: Sequence[str], exclude: set[str]) -> str:
        n = int(self._r.incr(self._keys.round_robin(tenant, group)))
        return next_in_turn(members, n - 1, exclude) or members[(n - 1) % len(members)]

    def _remember(self, alert_id: str, a: Assignment, pipe: Any = None) -> None:
        target = pipe if pipe is not None else self._r
        target.set(self._keys.route(alert_id), json.dumps(a.as_dict()), ex=self._ttl)

    def _save(
        self, a: Assignment, *, emit: bool, event_id: str = "", pipe: Any = None
    ) -> Assignment:
        """Assignment, history, load, claim timer and the ``assigned`` event: one round trip
        (queued on ``pipe`` when given; the caller executes it)."""
        key = self._keys.assignment(a.tenant, a.lead_id)
        own = pipe is None
        if own:
            pipe = self._r.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=a.to_hash())
        if a.state == "offered":
            pipe.zadd(self._keys.claims, {member(a.tenant, a.lead_id): a.claim_deadline})
        else:
            pipe.zrem(self._keys.claims, member(a.tenant, a.lead_id))
        event_id = event_id or f"dlv-asg-{uuid.uuid4().hex}"
        self._after_save(a, emit=emit, event_id=event_id, pipe=pipe)
        if own:
            pipe.execute()
        return a

    def _after_save(self, a: Assignment, *, emit: bool, event_id: str, pipe: Any) -> None:
        key = self._keys.assignment(a.tenant, a.lead_id)
        hist = self._keys.history(a.tenant, a.lead_id)
        pipe.expire(key, self._ttl)
        pipe.lpush(hist, json.dumps(a.as_dict()))
        pipe.ltrim(hist, 0, _HISTORY - 1)
        pipe.expire(hist, self._ttl)
        if a.state == "assigned" and a.how not in ("sticky", "event"):
            pipe.hincrby(self._keys.load(a.tenant), a.agent, 1)
        if a.alert_id:
            pipe.set(self._keys.route(a.alert_id), json.dumps(a.as_dict()), ex=self._ttl)
        if emit and self._emit is not None:
            self._emit(assigned_event(a, event_id), pipe)


def lead_event_time(current: Assignment | None, now: float) -> float:
    """The lead's event time now: its last assignment's, moved on by the wall time since.

    Live, that is about ``now``; while old events are replayed it stays in their era.
    """
    if current is None or not current.event_ts:
        return now
    return current.event_ts + max(0.0, now - current.ts)


def assigned_event(a: Assignment, event_id: str) -> dict[str, Any]:
    """The ``assigned`` event (contract v1) that records an assignment in the stream."""
    ev: dict[str, Any] = {
        "event_id": event_id,
        "lead_id": a.lead_id,
        "tenant": a.tenant,
        "type": "assigned",
        "ts": a.event_ts or a.ts,
        "props": {"reason": a.reason[:250], "group": a.group, "how": a.how, "state": a.state},
    }
    if a.agent:
        ev["agent_id"] = a.agent
    if a.alert_id:
        ev["props"]["alert_id"] = a.alert_id
    return ev


def stream_emitter(producer: Producer) -> Callable[[dict[str, Any], Any], Any]:
    """Append an event to its lead's partition inside the caller's pipeline."""

    def emit(event: dict[str, Any], pipe: Any) -> Any:
        payload = msgpack.packb(event, use_bin_type=True)
        return producer.send_raw(payload, producer.partition(event), pipe)

    return emit


def _miss_words(current: Assignment, missed: str) -> str:
    """Who missed the SLA, in words: an agent, or nobody's (unclaimed) - never "nobody"."""
    if missed:
        return f"SLA missed by {missed}"
    if current.state == "offered":
        return f"SLA missed while offered to {current.group}, unclaimed"
    return "SLA missed while unclaimed in the pond"


def _group_of(cfg: TenantDelivery, agent: str) -> str:
    for group, members in cfg.groups.items():
        if agent in members:
            return group
    return ""
