"""SLA clocks: the first-response deadline of every alerted lead, and what a miss does.

A clock opens when an alert is delivered, with the deadline the engine computed from
the seed-002 source matrix (``alert.sla.deadline_ts``; recomputed with the same
functions when the tenant has its own hours, see ``local.py``). An ``agent_contact``
or ``alert_ack`` event of the lead (read from the events streams) stops it; a
response already seen before the alert arrived stops it at once. A clock still open
at its deadline is a **miss**: it counts (metric and report), and the consumer
escalates it (``routing.Assigner.reassign``: next agent, then the pond) and re-alerts,
giving the new owner a fresh deadline under the same SLA row. With no escalation step
left the clock closes as ``missed``; a later response still records the (late) time.

One clock per lead: a new alert while a clock is open keeps the earlier deadline.
Statuses: ``open`` -> ``met`` (responded by the first deadline) | ``late`` | ``missed``.

Report per lead source and per agent: clocks, responses, within SLA, misses and the
median time to first response (over the last ``report_keep`` responses).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

from engine.delivery.keys import DeliveryKeys, member, split_member
from engine.delivery.metrics import DeliveryMetrics

__all__ = ["SlaClocks"]

#: A response this much before the alert's event still counts (clocks drift a little).
SKEW_S = 5.0

_CAS = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class SlaClocks:
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
        for k in ("start_ts", "deadline_ts", "first_deadline_ts", "stopped_ts", "response_s"):
            if h.get(k):
                out[k] = float(h[k])
        out["misses"] = int(h.get("misses") or 0)
        out["missed_by"] = [x for x in h.get("missed_by", "").split(",") if x]
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
        prefetched: tuple[Any, Any] | None = None,
        pipe: Any = None,
    ) -> dict[str, Any]:
        """Start the lead's clock (or keep the open one, with the earlier deadline).

        With ``prefetched`` (the two replies of :meth:`prefetch`) and ``pipe`` it reads
        nothing and only queues its writes: the caller executes the pipeline."""
        key = self._keys.clock(tenant, lead)
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
            if deadline_ts < current["deadline_ts"]:
                w.hset(key, "deadline_ts", deadline_ts)
                w.zadd(self._keys.due, {member(tenant, lead): deadline_ts})
                current["deadline_ts"] = deadline_ts
            if own:
                w.execute()
            return current
        fields: dict[str, Any] = {
            "tenant": tenant, "lead_id": lead, "alert_id": alert_id, "source": source or "unknown",
            "rule": rule, "agent": agent, "start_ts": start_ts, "deadline_ts": deadline_ts,
            "first_deadline_ts": deadline_ts, "status": "open", "misses": 0, "missed_by": "",
            "stopped_ts": "", "stopped_by": "", "stop_kind": "", "response_s": "",
        }  # fmt: skip
        # a response already seen (events are read before alerts) stops it at once
        if resp and float(resp[b"ts"]) >= start_ts - SKEW_S:
            ts = float(resp[b"ts"])
            who = _s(resp.get(b"agent", b"")) or agent
            response_s = max(0.0, ts - start_ts)
            within = ts <= deadline_ts
            fields.update(
                status="met" if within else "late", stopped_ts=ts, stopped_by=who,
                stop_kind=_s(resp.get(b"kind", b"")), response_s=response_s,
            )  # fmt: skip
        w.delete(key)
        w.hset(key, mapping=fields)
        w.expire(key, self._ttl)
        rep = self._keys.report(tenant)
        w.hincrby(rep, f"source:{fields['source']}:clocks", 1)
        if agent:
            w.hincrby(rep, f"agent:{agent}:clocks", 1)
        if fields["status"] == "open":
            w.zadd(self._keys.due, {member(tenant, lead): deadline_ts})
        else:
            self._count_response(w, tenant, lead, fields["source"], fields["stopped_by"],
                                 fields["response_s"], fields["status"] == "met")  # fmt: skip
        if own:
            w.execute()
        return {**fields, "missed_by": []}

    def assign(self, tenant: str, lead: str, agent: str) -> None:
        """The open clock's owner changed (a claim or a claim timeout)."""
        key = self._keys.clock(tenant, lead)
        if self._cas(keys=[key], args=["open", "agent", agent]) and agent:
            self._r.hincrby(self._keys.report(tenant), f"agent:{agent}:clocks", 1)

    # -- stopping -----------------------------------------------------------------------
    def note_response(
        self, tenant: str, lead: str, ts: float, agent: str, kind: str, event_id: str
    ) -> dict[str, Any] | None:
        """An ``agent_contact`` / ``alert_ack`` event: remember it, stop the clock."""
        rkey = self._keys.response(tenant, lead)
        prev = self._r.hget(rkey, "ts")
        if prev is None or float(prev) < ts:
            self._r.hset(rkey, mapping={"ts": ts, "agent": agent, "kind": kind,
                                        "event_id": event_id})  # fmt: skip
            self._r.expire(rkey, self._ttl)
        return self.stop(tenant, lead, ts, agent, kind, event_id)

    def stop(
        self, tenant: str, lead: str, ts: float, agent: str, kind: str, event_id: str
    ) -> dict[str, Any] | None:
        """Stop an open (or missed) clock with a response at ``ts``; None if none stopped."""
        c = self.read(tenant, lead)
        if c is None or c["status"] not in ("open", "missed") or ts < c["start_ts"] - SKEW_S:
            return None
        response_s = max(0.0, ts - c["start_ts"])
        within = c["misses"] == 0 and ts <= c["first_deadline_ts"]
        status = "met" if within else "late"
        who = agent or c.get("agent", "")
        key = self._keys.clock(tenant, lead)
        won = self._cas(
            keys=[key],
            args=[c["status"], "status", status, "stopped_ts", ts, "stopped_by", who,
                  "stop_kind", kind, "stop_event", event_id, "response_s", response_s],
        )  # fmt: skip
        if not won:
            return None
        pipe = self._r.pipeline(transaction=False)
        self._count_response(pipe, tenant, lead, c["source"], who, response_s, within)
        pipe.execute()
        return self.read(tenant, lead)

    def _count_response(
        self,
        pipe: Any,
        tenant: str,
        lead: str,
        source: str,
        who: str,
        response_s: float,
        within: bool,
    ) -> None:
        """Report commands for one first response (the caller executes the pipeline)."""
        rep = self._keys.report(tenant)
        pipe.zrem(self._keys.due, member(tenant, lead))
        for dim, value in (("source", source), ("agent", who)):
            if not value:
                continue
            pipe.hincrby(rep, f"{dim}:{value}:responses", 1)
            if within:
                pipe.hincrby(rep, f"{dim}:{value}:within", 1)
            rt = self._keys.response_times(tenant, dim, value)
            pipe.lpush(rt, round(response_s, 3))
            pipe.ltrim(rt, 0, self._keep - 1)
        self._m.first_response.observe(response_s)
        if within:
            self._m.sla_met.labels(source).inc()

    # -- misses -------------------------------------------------------------------------
    def due(self, now: float | None = None) -> list[dict[str, Any]]:
        """Open clocks past their deadline, each taken by exactly one caller and counted."""
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
            missed = [*c["missed_by"], c.get("agent") or "unassigned"]
            if not self._cas(
                keys=[self._keys.clock(tenant, lead)],
                args=["open", "misses", c["misses"] + 1, "missed_by", ",".join(missed)],
            ):
                continue
            rep = self._keys.report(tenant)
            pipe = self._r.pipeline(transaction=False)
            if c["misses"] == 0:
                pipe.hincrby(rep, f"source:{c['source']}:missed", 1)
            pipe.hincrby(rep, f"agent:{c.get('agent') or 'unassigned'}:missed", 1)
            pipe.execute()
            self._m.sla_missed.labels(c["source"]).inc()
            out.append({**c, "misses": c["misses"] + 1, "missed_by": missed})
        return out

    def extend(self, tenant: str, lead: str, agent: str, deadline_ts: float) -> None:
        """After an escalation: the new owner's deadline (the clock stays open)."""
        key = self._keys.clock(tenant, lead)
        if self._cas(keys=[key], args=["open", "agent", agent, "deadline_ts", deadline_ts]):
            self._r.zadd(self._keys.due, {member(tenant, lead): deadline_ts})
            if agent:
                self._r.hincrby(self._keys.report(tenant), f"agent:{agent}:clocks", 1)

    def close_missed(self, tenant: str, lead: str) -> None:
        """No escalation step left: the clock closes as missed."""
        self._cas(keys=[self._keys.clock(tenant, lead)], args=["open", "status", "missed"])

    # -- report -------------------------------------------------------------------------
    def report(self, tenant: str) -> dict[str, Any]:
        """Per source and per agent: clocks, responses, within SLA, misses, median response."""
        raw = cast(dict[bytes, bytes], self._r.hgetall(self._keys.report(tenant)))
        table: dict[str, dict[str, dict[str, Any]]] = {"source": {}, "agent": {}}
        for k, v in raw.items():
            dim, _, rest = _s(k).partition(":")
            value, _, metric = rest.rpartition(":")
            if dim in table:
                table[dim].setdefault(value, {})[metric] = int(v)
        out: dict[str, Any] = {"tenant": tenant}
        for dim, rows in table.items():
            pipe = self._r.pipeline(transaction=False)
            names = sorted(rows)
            for value in names:
                pipe.lrange(self._keys.response_times(tenant, dim, value), 0, -1)
            section = {}
            for value, times in zip(names, pipe.execute(), strict=True):
                r = rows[value]
                clocks = r.get("clocks", 0)
                within = r.get("within", 0)
                samples = [float(t) for t in times]
                section[value] = {
                    "clocks": clocks,
                    "responses": r.get("responses", 0),
                    "within_sla": within,
                    "within_sla_rate": round(within / clocks, 4) if clocks else None,
                    "missed": r.get("missed", 0),
                    "median_first_response_s": (
                        round(statistics.median(samples), 3) if samples else None
                    ),
                }
            out[f"by_{dim}"] = section
        return out

    def dumps(self, tenant: str) -> str:
        return json.dumps(self.report(tenant), indent=2, sort_keys=True)
