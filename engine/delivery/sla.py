"""SLA clocks: the first-response deadline of every alerted lead, and what a miss does.

Clocks run on the **wall clock of arrival**, never on the event's own timestamp: a clock
starts when the engine emitted the alert (``alert.emit_ms``), and its deadline comes
from the seed-002 row (``alert.sla.rule``) applied at that moment in the tenant's hours
(``local.py``). If delivery itself only gets the alert after that deadline (a delivery
backlog), the clock starts when delivery handles it. An alert about an event whose own
deadline had already passed when it arrived (a late upload, a replay, a stalled IDX
feed) is flagged **late on arrival** and counted per source; the agent still gets the
full window from arrival, so no agent is charged for time lost before it.

An ``agent_contact`` or ``alert_ack`` event of the lead (read from the events streams)
stops the clock when it came after the alert: it arrived after the clock started, or
its own timestamp is after the alert's event. Its time on the clock is its timestamp
when that lies between the start and its arrival (a contact logged after the fact),
else its arrival. A response seen before the alert arrived stops the clock at once. A
clock still open at its deadline is a **miss**: it counts (metric and report), and the
consumer escalates it (``routing.Assigner.reassign``: next agent, then the pond) and
re-alerts, giving the new owner a fresh deadline under the same SLA row. With no
escalation step left the clock closes as ``missed``; a later response still records
the (late) time.

One clock per lead: a new alert while a clock is open keeps the clock (the lead has
been waiting since it started) with the earlier of the two deadlines. Statuses:
``open`` -> ``met`` (responded by the first deadline) | ``late`` | ``missed``.

Report per lead source and per agent: clocks, responses, within SLA, misses and the
median time to first response (over the last ``report_keep`` responses). The agent
rows only ever hold an agent's own clocks: a miss while the lead sat in the pond is
counted for the source (``pond_missed``), never for an agent, and a response is judged
for its agent against that agent's own deadline, from when the lead became theirs.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

from engine.delivery.keys import DeliveryKeys, member, split_member
from engine.delivery.metrics import DeliveryMetrics

__all__ = ["SlaClocks", "response_time"]

#: A response this much before the alert still counts (clocks drift a little).
SKEW_S = 5.0

_CAS = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""
_FLOATS = (
    "start_ts", "deadline_ts", "first_deadline_ts", "stopped_ts", "response_s", "event_ts",
    "owner_since_ts", "arrival_delay_s",
)  # fmt: skip


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _f(x: Any, default: float = 0.0) -> float:
    try:
        return float(_s(x)) if x not in (None, b"", "") else default
    except ValueError:
        return default


def response_time(clock: dict[str, Any], ts: float, at: float | None) -> float | None:
    """When a response (its own timestamp ``ts``, arrived at wall time ``at``) answered
    this clock, on the clock's wall time; None if it came before the alert.

    It answers the alert when it arrived after the clock started, or its own timestamp
    is after the alert's event. Its time is ``ts`` when that lies between the start and
    its arrival (logged after the fact), else its arrival; never before the start."""
    start = float(clock["start_ts"])
    event_ts = float(clock.get("event_ts") or start)
    arrived = ts if at is None else at
    if arrived < start - SKEW_S and ts < event_ts - SKEW_S:
        return None
    when = ts if start <= ts <= arrived else arrived
    return max(start, when)


class SlaClocks:
    #: per-day miss counters for the brokerage report (engine/reporting/delivery.py)
    daily: Any = None

    def __init__(
        self,
        client: Any,
        keys: DeliveryKeys,
        metrics: DeliveryMetrics,
        *,
        ttl_s: int,
        report_keep: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._r = client
        self._keys = keys
        self._m = metrics
        self._ttl = ttl_s
        self._keep = report_keep
        self._clock = clock
        self._cas = client.register_script(_CAS)

    def read(self, tenant: str, lead: str) -> dict[str, Any] | None:
        return self._parse(
            cast(dict[bytes, bytes], self._r.hgetall(self._keys.clock(tenant, lead)))
        )

    @staticmethod
    def _parse(raw: dict[bytes, bytes]) -> dict[str, Any] | None:
        if not raw:
            return None
        h = {_s(k): _s(v) for k, v in raw.items()}
        out: dict[str, Any] = dict(h)
        for k in _FLOATS:
            if h.get(k):
                out[k] = _f(h[k])
        out["start_ts"] = _f(h.get("start_ts"))
        out["deadline_ts"] = _f(h.get("deadline_ts"))
        out["first_deadline_ts"] = _f(h.get("first_deadline_ts"), out["deadline_ts"])
        out["misses"] = int(_f(h.get("misses")))
        out["missed_by"] = [x for x in h.get("missed_by", "").split(",") if x]
        out["late_on_arrival"] = h.get("late_on_arrival") == "1"
        out["status"] = h.get("status", "open")
        return out

    def read_many(self, tenant: str, leads: list[str]) -> dict[str, dict[str, Any]]:
        pipe = self._r.pipeline(transaction=False)
        for lead in leads:
            pipe.exists(self._keys.clock(tenant, lead))
        present = [lead for lead, ok in zip(leads, pipe.execute(), strict=True) if ok]
        return {lead: c for lead in present if (c := self.read(tenant, lead)) is not None}

    # -- opening ------------------------------------------------------------------------
    def prefetch(self, pipe: Any, tenant: str, lead: str) -> None:
        """Queue the reads :meth:`open` needs (two replies) on a batch pipeline."""
        pipe.hgetall(self._keys.clock(tenant, lead))
        pipe.hgetall(self._keys.response(tenant, lead))

    def open(
        self,
        *,
        tenant: str,
        lead: str,
        alert_id: str,
        source: str,
        rule: str,
        agent: str,
        start_ts: float,
        deadline_ts: float,
        event_ts: float | None = None,
        late_on_arrival: bool = False,
        prefetched: tuple[Any, Any] | None = None,
        pipe: Any = None,
    ) -> dict[str, Any]:
        """Start the lead's clock at ``start_ts`` (wall time of arrival), or keep the open
        one with the earlier deadline. ``event_ts``: the alert's event time (a response
        after it answers the alert); ``late_on_arrival``: the event's own deadline had
        passed when it arrived (counted per source, never for an agent).

        With ``prefetched`` (the two replies of :meth:`prefetch`) and ``pipe`` it reads
        nothing and only queues its writes: the caller executes the pipeline."""
        if prefetched is None:
            reads = self._r.pipeline(transaction=False)
            self.prefetch(reads, tenant, lead)
            prefetched = tuple(reads.execute())
        assert prefetched is not None
        raw, resp = prefetched
        own = pipe is None
        w = self._r.pipeline(transaction=True) if own else pipe
        current = self._parse(raw)
        if current is not None and current["status"] == "open":
            self._keep_open(w, tenant, lead, current, deadline_ts)
        else:
            fields: dict[str, Any] = {
                "tenant": tenant, "lead_id": lead, "alert_id": alert_id,
                "source": source or "unknown", "rule": rule, "agent": agent,
                "start_ts": start_ts, "deadline_ts": deadline_ts,
                "first_deadline_ts": deadline_ts, "owner_since_ts": start_ts,
                "event_ts": start_ts if event_ts is None else event_ts,
                "late_on_arrival": "1" if late_on_arrival else "",
                "arrival_delay_s": max(0.0, start_ts - (event_ts or start_ts)),
                "status": "open", "misses": 0, "missed_by": "", "stopped_ts": "",
                "stopped_by": "", "stop_kind": "", "response_s": "",
            }  # fmt: skip
            current = self._start(w, fields, resp)
        if own:
            w.execute()
        return current

    def _keep_open(
        self, w: Any, tenant: str, lead: str, current: dict[str, Any], deadline_ts: float
    ) -> None:
        if deadline_ts < current["deadline_ts"]:
            w.hset(self._keys.clock(tenant, lead), "deadline_ts", deadline_ts)
            w.zadd(self._keys.due, {member(tenant, lead): deadline_ts})
            current["deadline_ts"] = deadline_ts

    def _start(self, w: Any, fields: dict[str, Any], resp: Any) -> dict[str, Any]:
        """Queue a new clock's writes; a response already seen that answers it stops it."""
        tenant, lead, agent = fields["tenant"], fields["lead_id"], fields["agent"]
        key = self._keys.clock(tenant, lead)
        when = None
        if resp and resp.get(b"ts") is not None:
            at = resp.get(b"at")
            when = response_time(fields, _f(resp[b"ts"]), _f(at) if at is not None else None)
        stop: dict[str, Any] | None = None
        if when is not None:
            who = _s(resp.get(b"agent", b"")) or agent
            kind = _s(resp.get(b"kind", b""))
            stop = self._judge(fields, when, who)
            fields.update(status=stop["status"], stopped_ts=when, stopped_by=who,
                          stop_kind=kind, response_s=stop["response_s"])  # fmt: skip
        w.delete(key)
        w.hset(key, mapping=fields)
        w.expire(key, self._ttl)
        rep = self._keys.report(tenant)
        w.hincrby(rep, f"source:{fields['source']}:clocks", 1)
        if fields["late_on_arrival"]:
            w.hincrby(rep, f"source:{fields['source']}:late_on_arrival", 1)
        if agent:
            w.hincrby(rep, f"agent:{agent}:clocks", 1)
        if stop is None:
            w.zadd(self._keys.due, {member(tenant, lead): fields["deadline_ts"]})
        else:
            self._count_response(w, tenant, lead, fields["source"], stop)
        return self._parse({k.encode(): str(v).encode() for k, v in fields.items()}) or {}

    def assign(self, tenant: str, lead: str, agent: str) -> None:
        """The open clock's owner changed (a claim or a claim timeout)."""
        key = self._keys.clock(tenant, lead)
        args = ["open", "agent", agent, "owner_since_ts", self._clock()]
        if self._cas(keys=[key], args=args) and agent:
            self._r.hincrby(self._keys.report(tenant), f"agent:{agent}:clocks", 1)

    # -- stopping -----------------------------------------------------------------------
    def note_response(
        self,
        tenant: str,
        lead: str,
        ts: float,
        agent: str,
        kind: str,
        event_id: str,
        at: float | None = None,
    ) -> dict[str, Any] | None:
        """An ``agent_contact`` / ``alert_ack`` event (timestamp ``ts``, arrived at wall
        time ``at``): remember it, stop the clock."""
        rkey = self._keys.response(tenant, lead)
        arrived = ts if at is None else at
        prev = self._r.hget(rkey, "at") or self._r.hget(rkey, "ts")
        if prev is None or _f(prev) < arrived:
            self._r.hset(rkey, mapping={"ts": ts, "at": arrived, "agent": agent, "kind": kind,
                                        "event_id": event_id})  # fmt: skip
            self._r.expire(rkey, self._ttl)
        return self.stop(tenant, lead, ts, agent, kind, event_id, at=at)

    def stop(
        self,
        tenant: str,
        lead: str,
        ts: float,
        agent: str,
        kind: str,
        event_id: str,
        at: float | None = None,
    ) -> dict[str, Any] | None:
        """Stop an open (or missed) clock with a response; None if none stopped."""
        c = self.read(tenant, lead)
        if c is None or c["status"] not in ("open", "missed"):
            return None
        when = response_time(c, ts, at)
        if when is None:
            return None
        who = agent or c.get("agent", "")
        verdict = self._judge(c, when, who)
        won = self._cas(
            keys=[self._keys.clock(tenant, lead)],
            args=[c["status"], "status", verdict["status"], "stopped_ts", when,
                  "stopped_by", who, "stop_kind", kind, "stop_event", event_id,
                  "response_s", verdict["response_s"]],
        )  # fmt: skip
        if not won:
            return None
        pipe = self._r.pipeline(transaction=False)
        self._count_response(pipe, tenant, lead, c["source"], verdict)
        pipe.execute()
        return self.read(tenant, lead)

    @staticmethod
    def _judge(c: dict[str, Any], when: float, who: str) -> dict[str, Any]:
        """The verdict on a response at ``when``: for the lead (met by the first deadline,
        no miss) and, only if ``who`` owns the clock, for that agent (by its own deadline,
        timed from when the lead became its)."""
        start = float(c["start_ts"])
        misses = int(c.get("misses") or 0)
        within = misses == 0 and when <= float(c["first_deadline_ts"])
        owner = str(c.get("agent") or "")
        mine = bool(who) and who == owner
        since = float(c.get("owner_since_ts") or start)
        return {
            "status": "met" if within else "late",
            "response_s": round(max(0.0, when - start), 3),
            "within": within,
            "agent": who if mine else "",
            "agent_s": round(max(0.0, when - since), 3),
            "agent_within": mine and when <= float(c["deadline_ts"]),
        }

    def _count_response(
        self, pipe: Any, tenant: str, lead: str, source: str, v: dict[str, Any]
    ) -> None:
        """Report commands for one first response (the caller executes the pipeline)."""
        rep = self._keys.report(tenant)
        pipe.zrem(self._keys.due, member(tenant, lead))
        rows = [("source", source, v["response_s"], v["within"])]
        if v["agent"]:
            rows.append(("agent", v["agent"], v["agent_s"], v["agent_within"]))
        for dim, value, seconds, within in rows:
            if not value:
                continue
            pipe.hincrby(rep, f"{dim}:{value}:responses", 1)
            if within:
                pipe.hincrby(rep, f"{dim}:{value}:within", 1)
            rt = self._keys.response_times(tenant, dim, value)
            pipe.lpush(rt, seconds)
            pipe.ltrim(rt, 0, self._keep - 1)
        self._m.first_response.observe(v["response_s"])
        if v["within"]:
            self._m.sla_met.labels(source).inc()

    # -- misses -------------------------------------------------------------------------
    def due(self, now: float | None = None) -> list[dict[str, Any]]:
        """Open clocks past their deadline, each taken by exactly one caller and counted.

        A miss is charged to the agent who owned the clock; a miss while the lead sat in
        the pond (no owner) is counted for the source only (``pond_missed``)."""
        now = self._clock() if now is None else now
        out = []
        for m in cast(list[bytes], self._r.zrangebyscore(self._keys.due, "-inf", now)):
            if not self._r.zrem(self._keys.due, m):
                continue
            tenant, lead = split_member(m)
            c = self.read(tenant, lead)
            if c is None or c["status"] != "open":
                continue
            if c["deadline_ts"] > now:  # extended meanwhile: put it back
                self._r.zadd(self._keys.due, {m: c["deadline_ts"]})
                continue
            owner = str(c.get("agent") or "")
            missed = [*c["missed_by"], owner] if owner else list(c["missed_by"])
            if not self._cas(
                keys=[self._keys.clock(tenant, lead)],
                args=["open", "misses", c["misses"] + 1, "missed_by", ",".join(missed)],
            ):
                continue
            rep = self._keys.report(tenant)
            pipe = self._r.pipeline(transaction=False)
            if c["misses"] == 0:
                pipe.hincrby(rep, f"source:{c['source']}:missed", 1)
            if owner:
                pipe.hincrby(rep, f"agent:{owner}:missed", 1)
            else:
                pipe.hincrby(rep, f"source:{c['source']}:pond_missed", 1)
            if self.daily is not None:
                self.daily.missed(pipe, tenant, owner, c["source"], now)
            pipe.execute()
            self._m.sla_missed.labels(c["source"]).inc()
            out.append({**c, "misses": c["misses"] + 1, "missed_by": missed})
        return out

    def extend(self, tenant: str, lead: str, agent: str, deadline_ts: float) -> None:
        """After an escalation: the new owner's deadline (the clock stays open)."""
        key = self._keys.clock(tenant, lead)
        args = ["open", "agent", agent, "deadline_ts", deadline_ts,
                "owner_since_ts", self._clock()]  # fmt: skip
        if self._cas(keys=[key], args=args):
            self._r.zadd(self._keys.due, {member(tenant, lead): deadline_ts})
            if agent:
                self._r.hincrby(self._keys.report(tenant), f"agent:{agent}:clocks", 1)

    def close_missed(self, tenant: str, lead: str) -> None:
        """No escalation step left: the clock closes as missed."""
        self._cas(keys=[self._keys.clock(tenant, lead)], args=["open", "status", "missed"])

    # -- report -------------------------------------------------------------------------
    def report(self, tenant: str) -> dict[str, Any]:
        """Per source and per agent: clocks, responses, within SLA, misses, median response;
        per source also alerts late on arrival and misses while in the pond."""
        raw = cast(dict[bytes, bytes], self._r.hgetall(self._keys.report(tenant)))
        table: dict[str, dict[str, dict[str, Any]]] = {"source": {}, "agent": {}}
        for k, v in raw.items():
            dim, _, rest = _s(k).partition(":")
            value, _, metric = rest.rpartition(":")
            if dim in table and value:
                table[dim].setdefault(value, {})[metric] = int(v)
        out: dict[str, Any] = {"tenant": tenant}
        for dim, rows in table.items():
            pipe = self._r.pipeline(transaction=False)
            names = sorted(rows)
            for value in names:
                pipe.lrange(self._keys.response_times(tenant, dim, value), 0, -1)
            section = {}
            for value, times in zip(names, pipe.execute(), strict=True):
                section[value] = _row(dim, rows[value], [float(t) for t in times])
            out[f"by_{dim}"] = section
        return out

    def dumps(self, tenant: str) -> str:
        return json.dumps(self.report(tenant), indent=2, sort_keys=True)


def _row(dim: str, r: dict[str, int], samples: list[float]) -> dict[str, Any]:
    clocks = r.get("clocks", 0)
    within = r.get("within", 0)
    row: dict[str, Any] = {
        "clocks": clocks,
        "responses": r.get("responses", 0),
        "within_sla": within,
        "within_sla_rate": round(within / clocks, 4) if clocks else None,
        "missed": r.get("missed", 0),
        "median_first_response_s": round(statistics.median(samples), 3) if samples else None,
    }
    if dim == "source":
        row["late_on_arrival"] = r.get("late_on_arrival", 0)
        row["pond_missed"] = r.get("pond_missed", 0)
    return row
