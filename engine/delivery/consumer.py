"""The delivery service: alerts stream -> routing, consent, script -> feed + webhooks; SLA.

One asyncio loop (``leadpulse deliver``) runs four things:

1. **alerts**: ``XREADGROUP`` on ``{lp}:alerts`` in the consumer group (its own pending
   entries first after a restart, then new ones; entries a dead consumer left pending
   longer than ``reclaim_idle_s`` are taken over). Each alert is routed, gets its
   consent reasons, tenant-local deadline and first touch, and script; its SLA clock
   opens; it is published to the tenant's feed (SSE, page) and sent to its webhooks.
   The entry is acknowledged (``XACK``) only when every webhook delivery finished
   (delivered or dead-lettered): a crash before that delivers it again after restart,
   and receipts keep a finished delivery from being sent twice.
2. **events**: the events partitions are read with delivery's own cursor (one
   ``XREAD`` over all partitions, positions in ``dlv:pos``): ``agent_contact`` and
   ``alert_ack`` stop SLA clocks; ``opt_out``, ``unsubscribe``, STOP replies, ``bounce``
   and ``invalid_contact`` record why a channel is blocked. Events are drained right
   before each batch of alerts is handled, so a block or response that came before
   an alert is always known when the alert goes out.
3. **tick**: claim timeouts (first-to-claim offers nobody took) and SLA misses
   (escalation: next agent, then the pond; a re-alert goes out to the new owner).
   **bucket changes**: ``XREADGROUP`` on ``{lp}:buckets`` in the same group, like the
   alerts (own pending entries first, acknowledged only when every write-back finished,
   a dead consumer's taken over): the engine appends an entry per lead whose bucket
   moved in the transaction that commits the batch, so a change is never missed and,
   through the write-back's idempotency key (lead, new bucket, entry id) and its
   receipts, written once. A change is written only once the alerts up to its batch
   have been read (its ``after``), so one lead's alert and bucket writes keep their
   order; a target that gets the batch's alert of the same bucket is not written twice.
4. **webhooks**: one task per delivery with retries (``webhooks.py``); one lead's
   deliveries to one URL go one at a time in stream order, so a retried alert is never
   overtaken by the lead's next one. At most ``max_in_flight * 8`` alerts are held
   (retrying or queued behind one); beyond that reading stops and the backlog waits
   in the stream, so memory stays bounded however long a receiver is down.

In the slot-per-partition key layout (``redis.key_layout``) each partition tag has its own
alerts, buckets and cadence streams: each shard is a **lane** (``engine/delivery/lanes.py``)
read in the group on its own, the lanes polled in turn, commit order kept within a lane
(a lead's entries are all on its partition's), an entry acknowledged on its own stream.

The synchronous parts (:meth:`DeliveryService.drain_events`, :meth:`handle`,
:meth:`tick`) take the time from an injected clock, so tests drive them directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import redis

from engine.delivery.consent import ConsentBook, blocked_reasons
from engine.delivery.feed import Feed
from engine.delivery.group import GroupStream, Row
from engine.delivery.keys import DeliveryKeys
from engine.delivery.lanes import Lane, Run, lane_block, lanes_of
from engine.delivery.leads import LeadProfile, parse_profile, queue_reads
from engine.delivery.local import LocalRules
from engine.delivery.metrics import DeliveryMetrics
from engine.delivery.routing import Assigner, Assignment, stream_emitter
from engine.delivery.scripts import alert_text, bucket_label, pick_script, why_now
from engine.delivery.sla import SlaClocks
from engine.delivery.targets import BucketChange, TargetJobs
from engine.delivery.tasks import StepDelivery, decode_step
from engine.delivery.webhooks import Job, Receipts, RetryPolicy, WebhookSender
from engine.events import Event
from engine.reporting.delivery import DeliveryCounts
from engine.settings import Settings, TenantDelivery
from engine.streams import Producer, stream_names
from engine.validate import Validator

__all__ = ["DeliveryService", "Prepared", "Run", "run_in_thread"]

log = logging.getLogger(__name__)

RESPONSES = frozenset({"agent_contact", "alert_ack"})
_EVENT_BATCHES = 20  # per partition per drain: bounded, the next drain continues


@dataclass
class Prepared:
    """What handling one alert produced: the payload and the webhook jobs to run."""

    payload: dict[str, Any] | None
    jobs: list[Job] = field(default_factory=list)


class DeliveryService:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        metrics: DeliveryMetrics | None = None,
        *,
        consumer: str = "deliver-0",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.d = settings.delivery
        self._r: Any = client
        self.names = stream_names(settings)
        self.keys = DeliveryKeys(settings.redis.key_prefix)
        self.metrics = metrics or DeliveryMetrics.create()
        self.consumer = consumer
        self.clock = clock
        ttl = int(settings.features.idle_expire_d * 86_400)
        self._ttl = ttl
        self.producer = Producer(client, self.names, settings.streams.maxlen)
        self.consent = ConsentBook(client, self.keys, ttl)
        self.clocks = SlaClocks(
            client, self.keys, self.metrics, ttl_s=ttl, report_keep=self.d.report_keep,
            clock=clock,
        )  # fmt: skip
        self.clocks.daily = DeliveryCounts(settings)  # SLA misses in the brokerage report
        self.assigner = Assigner(
            client, self.keys, self.d.tenant, stream_emitter(self.producer),
            claim_timeout_s=self.d.claim_timeout_s, ttl_s=ttl, clock=clock,
        )  # fmt: skip
        self.feed = Feed(client, self.keys, self.d.feed_maxlen, self.metrics)
        self.receipts = Receipts(client, self.keys, int(self.d.receipt_ttl_d * 86_400))
        self._validator = Validator(settings.validation)
        self._local: dict[str, LocalRules] = {}
        self._targets = TargetJobs()
        # the alerts, bucket-change and follow-up-step streams of each shard (one in the
        # deployment key layout), each read in the group on its own (engine/delivery/lanes.py)
        self.lanes = lanes_of(
            client, self.names, self.d.consumer_group, consumer, self.d.read_count
        )
        self.steps = StepDelivery(
            settings, client, self.keys, self.feed, self.consent, self._targets, self.metrics
        )

    # -- tenant rules ---------------------------------------------------------------------
    def local(self, tenant: str) -> LocalRules:
        rules = self._local.get(tenant)
        if rules is None:
            rules = self._local[tenant] = LocalRules(self.settings, self.d.tenant(tenant))
        return rules

    # -- the alerts stream ------------------------------------------------------------------
    def ensure_group(self) -> None:
        for lane in self.lanes:
            lane.ensure(self.settings.cadence.enabled)

    def read_alerts(self, block_ms: int | None, lane: int = 0) -> list[tuple[str, dict[str, Any]]]:
        """Own pending entries first (after a restart), then new ones (of one lane)."""
        return self.lanes[lane].read_alerts(block_ms)

    def reclaim(self, lane: int = 0) -> list[tuple[str, dict[str, Any]]]:
        """Alerts a dead consumer left pending for ``reclaim_idle_s``; keep ours alive."""
        return self.lanes[lane].reclaim(self.d.reclaim_idle_s)

    def ack(self, ids: list[str], lane: int = 0) -> None:
        self.lanes[lane].alerts_in.ack(ids)

    def handle_steps(self, rows: list[Row]) -> list[tuple[str, list[Job]]]:
        """Follow-up steps read from ``lp:cadence``: (entry id, webhook jobs) each; entries
        that are not a step are acknowledged at once (no jobs)."""
        self.drain_events()  # a block that came before the step is known when it goes out
        out = []
        for sid, fields in rows:
            step = decode_step(fields)
            out.append((sid, self.steps.handle(step, self.clock()) if step else []))
        return out

    # -- alerts and bucket changes, in commit order -----------------------------------------
    def read_merged(self, block_ms: int | None, lane: int | None = None) -> list[Run]:
        """Alerts and bucket changes of a lane (None: of every lane in turn, each blocking
        a share of ``block_ms``), in commit order: :meth:`Lane.read_merged`."""
        if lane is not None:
            return self.lanes[lane].read_merged(block_ms)
        block = lane_block(block_ms, len(self.lanes))
        return [run for one in self.lanes for run in one.read_merged(block)]

    def reclaim_changes(self, lane: int = 0) -> list[BucketChange]:
        """Bucket changes a dead consumer left pending for ``reclaim_idle_s``."""
        return self.lanes[lane].reclaim_changes(self.d.reclaim_idle_s)

    def handle_changes(self, changes: list[BucketChange]) -> list[tuple[str, list[Job]]]:
        """(entry id, write-back jobs) per change. The batch's alert of the same bucket
        was handled first (``after``); it went out unless it was older than
        ``skip_older_than_s`` when read, and then this change is written instead."""
        now = self.clock()
        out = []
        for c in changes:
            targets = self.d.tenant(c.tenant).targets
            sent = bool(c.alert_id) and now - c.emit_ms / 1000 <= self.d.skip_older_than_s
            out.append((c.entry_id, self._targets.change_jobs(c, targets, sent) if targets else []))
        return out

    # -- the events streams -----------------------------------------------------------------
    def drain_events(self) -> int:
        """Read every partition to its end: responses stop clocks, blocks are recorded.

        One ``XREAD`` over all partitions per round trip, from delivery's own cursor."""
        pos_raw = cast(dict[bytes, bytes], self._r.hgetall(self.keys.positions))
        positions = {self.names.events(p): "0-0" for p in range(self.names.partitions)}
        for k, v in pos_raw.items():
            positions[self.names.events(int(k))] = v.decode()
        index = {self.names.events(p): p for p in range(self.names.partitions)}
        n = 0
        for _ in range(_EVENT_BATCHES):
            reply = self._r.xread(positions, count=self.settings.streams.read_count)
            if not reply:
                break
            events: list[tuple[Event, float]] = []
            moved = {}
            for stream, rows in reply:
                name = stream.decode() if isinstance(stream, bytes) else str(stream)
                for sid, fields in rows:
                    raw = fields.get(b"e")
                    if raw is not None:
                        checked = self._validator.check_bytes(raw, "msgpack")
                        if isinstance(checked, Event):
                            events.append((checked, _arrival(sid)))
                n += len(rows)
                last = rows[-1][0]
                positions[name] = last.decode() if isinstance(last, bytes) else str(last)
                moved[str(index[name])] = positions[name]
            self._apply_events(events)
            self._r.hset(self.keys.positions, mapping=moved)
        if n:
            self.metrics.events_read.inc(n)
        return n

    def _apply_events(self, events: list[tuple[Event, float]]) -> None:
        """Consent blocks; responses stop clocks (``at``: the entry's arrival, wall time)."""
        self.consent.record([ev for ev, _ in events])
        for ev, at in events:
            if ev.type not in RESPONSES:
                continue
            stopped = self.clocks.note_response(
                ev.tenant, ev.lead_id, ev.ts, ev.agent_id, ev.type, ev.event_id, at=at
            )
            if stopped is not None:
                self.feed.publish(ev.tenant, "sla", _clock_view(stopped), ["*"])

    # -- one alert ----------------------------------------------------------------------
    def _queue_reads(self, pipe: Any, alert: dict[str, Any]) -> None:
        tenant, lead = str(alert["tenant"]), str(alert["lead_id"])
        queue_reads(pipe, self.names, alert)
        self.consent.prefetch(pipe, tenant, lead)
        self.assigner.prefetch(pipe, alert)
        self.clocks.prefetch(pipe, tenant, lead)

    def handle_many(self, alerts: list[dict[str, Any]]) -> list[Prepared]:
        """:meth:`handle` for a batch: every alert's reads in one round trip first.

        A lead's second alert in the same batch reads after the first one's writes."""
        pipe = self._r.pipeline(transaction=False)
        sizes: list[int | None] = []
        leads: set[tuple[str, str]] = set()
        for alert in alerts:
            key = (str(alert.get("tenant")), str(alert.get("lead_id")))
            if not alert.get("alert_id") or key in leads:
                sizes.append(None)
                continue
            leads.add(key)
            before = len(pipe)
            self._queue_reads(pipe, alert)
            sizes.append(len(pipe) - before)
        replies = pipe.execute() if len(pipe) else []
        out, i = [], 0
        for alert, n in zip(alerts, sizes, strict=True):
            if n is None:
                out.append(self.handle(alert))
            else:
                out.append(self.handle(alert, replies[i : i + n]))
                i += n
        return out

    def handle(self, alert: dict[str, Any], prefetched: list[Any] | None = None) -> Prepared:
        """Route, gate, script, open the clock, publish; returns the webhook jobs.

        Two round trips (reads, then one transaction of writes), plus one for a
        round-robin turn; ``prefetched`` (from :meth:`handle_many`) saves the first."""
        if not alert.get("alert_id"):
            return Prepared(None)
        self.metrics.alerts_read.inc()
        now = self.clock()
        emitted = float(alert.get("emit_ms") or now * 1000) / 1000
        if now - emitted > self.d.skip_older_than_s:
            self.metrics.alerts_skipped.inc()
            return Prepared(None)
        tenant, lead = str(alert["tenant"]), str(alert["lead_id"])
        cfg = self.d.tenant(tenant)
        if prefetched is None:
            reads = self._r.pipeline(transaction=False)
            self._queue_reads(reads, alert)
            prefetched = reads.execute()
        n = len(prefetched) - 5  # the profile's replies, then consent 1, route 2, clock 2
        profile = parse_profile(alert, prefetched[:n])
        recorded = self.consent.parse(prefetched[n])
        tz = self.local(tenant).alerts.timezone
        reasons = blocked_reasons(alert.get("blocked_channels") or (), recorded, tz)
        blocked = tuple(sorted(reasons))
        payload = dict(alert)
        payload["event"] = _event_view(alert, profile)
        hand = any(str(t).startswith("hand_raise:") for t in alert.get("triggers") or ())
        arrival = self.local(tenant).arrival(alert, now)
        self.local(tenant).localize(payload, blocked, hand or profile.repeat_views >= 3, arrival)
        payload["blocked_channels"] = list(blocked)
        payload["blocked_reasons"] = reasons
        writes = self._r.pipeline(transaction=True)
        assignment = self.assigner.route(
            alert, profile, prefetched=(prefetched[n + 1], prefetched[n + 2]), pipe=writes
        )
        self._count_assignment(assignment)
        sla = payload["sla"]
        clock = self.clocks.open(
            tenant=tenant, lead=lead, alert_id=alert["alert_id"], source=profile.source,
            rule=str(sla.get("rule", "default")), agent=assignment.agent,
            start_ts=arrival.start_ts, deadline_ts=arrival.deadline_ts,
            event_ts=arrival.event_ts, late_on_arrival=arrival.late_on_arrival,
            prefetched=(prefetched[n + 3], prefetched[n + 4]), pipe=writes,
        )  # fmt: skip
        payload.update(
            type="alert",
            delivery_id=alert["alert_id"],
            lead=_profile_view(profile),
            assignment=assignment.as_dict(),
            script=pick_script(payload, profile).as_dict(),
            clock=_clock_view(clock),
            sent_ms=int(self.clock() * 1000),
        )
        self._texts(payload, profile)
        self._publish(payload, assignment, "alert", writes)
        writes.execute()
        return Prepared(payload, self._jobs(payload, assignment, cfg))

    def _texts(self, payload: dict[str, Any], profile: LeadProfile) -> None:
        """The agent-facing words: the bucket and the rule that set it, why now (naming
        the home), one alert line with the deadline in the tenant's time zone."""
        tz = self.local(str(payload["tenant"])).alerts.timezone
        by = payload.get("bucket_by")
        payload["bucket_by"] = by if isinstance(by, str) and by else "score"
        payload["bucket_label"] = bucket_label(payload.get("bucket"), payload["bucket_by"])
        payload["why_now"] = why_now(payload)
        payload["sla"] = {**payload["sla"], "timezone": tz}
        payload["text"] = alert_text(payload, tz)

    def _publish(self, payload: dict[str, Any], a: Assignment, kind: str, pipe: Any = None) -> None:
        tenant, lead = a.tenant, a.lead_id
        own = pipe is None
        p = self._r.pipeline(transaction=False) if own else pipe
        # Both expire with the lead (features.idle_expire_d): a brokerage gets new leads
        # every day, and a per-tenant hash of every lead's card grew for ever (the soak).
        now = self.clock()
        p.set(self.keys.card(tenant, lead), json.dumps(payload), ex=self._ttl)
        p.zadd(self.keys.leads(tenant), {lead: now})
        p.zremrangebyscore(self.keys.leads(tenant), "-inf", f"({now - self._ttl}")
        self.feed.publish(tenant, kind, payload, a.audience, a.group, pipe=p)
        if own:
            p.execute()

    def _jobs(self, payload: dict[str, Any], a: Assignment, cfg: TenantDelivery) -> list[Job]:
        secret = cfg.secret.get_secret_value()
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        base = dict(
            alert_id=str(payload["alert_id"]),
            delivery_id=str(payload["delivery_id"]),
            secret=secret,
            body=body,
            ingest_ms=int(payload.get("ingest_ms") or 0),
            order_key=f"{payload['tenant']}/{payload['lead_id']}",  # per-lead order
        )
        jobs = []
        if cfg.webhook_url:
            jobs.append(Job(target="tenant", url=cfg.webhook_url, **base))  # type: ignore[arg-type]
        for agent in a.audience:
            hook = cfg.agents.get(agent)
            if hook is not None and hook.webhook_url:
                jobs.append(Job(target=f"agent:{agent}", url=hook.webhook_url, **base))  # type: ignore[arg-type]
        if cfg.targets:
            ids = {k: v for k, v in base.items() if k not in ("body", "secret")}
            jobs += self._targets.jobs(payload, cfg.targets, ids)
        return jobs

    def _count_assignment(self, a: Assignment) -> None:
        self.metrics.assignments.labels(a.how if a.state != "pond" else "pond").inc()

    # -- timers -------------------------------------------------------------------------
    def tick(self) -> list[Job]:
        """Claim timeouts and SLA misses; returns the re-alert webhook jobs."""
        jobs: list[Job] = []
        for a in self.assigner.claim_timeouts(self.clock()):
            self._count_assignment(a)
            self.clocks.assign(a.tenant, a.lead_id, a.agent)
            self.feed.publish(a.tenant, "assignment", a.as_dict(), ["*"], a.group)
            jobs += self._realert(a, None)
        for clock in self.clocks.due(self.clock()):
            jobs += self._escalate(clock)
        return jobs

    def _escalate(self, clock: dict[str, Any]) -> list[Job]:
        tenant, lead = clock["tenant"], clock["lead_id"]
        steps = self.d.tenant(tenant).escalation
        n = int(clock["misses"])
        missed = str(clock.get("agent") or "")
        if n > len(steps):
            self.clocks.close_missed(tenant, lead)
            closed = self.clocks.read(tenant, lead) or clock
            self.feed.publish(tenant, "sla", _clock_view(closed), ["*"])
            return []
        step = steps[n - 1]
        a = self.assigner.reassign(tenant, lead, step, missed)
        if a is None:
            self.clocks.close_missed(tenant, lead)
            return []
        self.metrics.escalations.labels(step if a.state != "pond" else "pond").inc()
        self._count_assignment(a)
        deadline, _ = self.local(tenant).deadline(self.clock(), str(clock.get("rule")))
        self.clocks.extend(tenant, lead, a.agent, deadline)
        self.feed.publish(tenant, "assignment", a.as_dict(), ["*"], a.group)
        return self._realert(a, {"step": step, "misses": n, "missed_by": missed})

    def _realert(self, a: Assignment, escalation: dict[str, Any] | None) -> list[Job]:
        """Send the lead's last alert again to its new owner(s)."""
        raw = self._r.get(self.keys.card(a.tenant, a.lead_id))
        if raw is None:
            return []
        payload = json.loads(raw)
        clock = self.clocks.read(a.tenant, a.lead_id)
        n = int(clock["misses"]) if clock else 0
        kind = "escalated" if escalation else "alert"
        payload.update(
            type="alert.escalated" if escalation else "alert.assigned",
            delivery_id=f"{payload['alert_id']}.{'e' if escalation else 'a'}{n}",
            assignment=a.as_dict(),
            escalation=escalation,
            clock=_clock_view(clock) if clock else payload.get("clock"),
            sent_ms=int(self.clock() * 1000),
        )
        if clock:
            payload["sla"] = {**payload["sla"], "deadline_ts": clock["deadline_ts"]}
            payload["text"] = alert_text(payload, payload["sla"].get("timezone", "UTC"))
        self._publish(payload, a, kind)
        jobs = self._jobs(payload, a, self.d.tenant(a.tenant))
        return [j for j in jobs if escalation or j.target != "tenant"]

    # -- the loop -----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, http: httpx.AsyncClient | None = None) -> None:
        """Run until ``stop`` is set; unfinished deliveries stay pending for the next run."""
        self.ensure_group()
        own_http = http is None
        http = http or httpx.AsyncClient()
        policy = RetryPolicy(
            self.d.max_attempts, self.d.backoff_base_s, self.d.backoff_cap_s, self.d.timeout_s
        )
        sender = WebhookSender(
            http, self.receipts, self._r, self.keys, policy, self.metrics,
            max_in_flight=self.d.max_in_flight, dead_letter_maxlen=self.d.dead_letter_maxlen,
            clock=self.clock,
        )  # fmt: skip
        runner = _Runner(self, sender, stop)
        loops = [asyncio.create_task(f()) for f in runner.loops()]
        try:
            await stop.wait()
        finally:
            await asyncio.gather(*loops, return_exceptions=True)
            await runner.finish_tasks(self.d.timeout_s)
            if own_http:
                await http.aclose()

    def _lag(self) -> None:
        lags = [lag for lane in self.lanes if (lag := lane.alerts_in.lag()) is not None]
        if lags:
            self.metrics.consumer_lag.set(sum(lags))


class _Runner:
    """The loops of :meth:`DeliveryService.run` and the delivery tasks they start."""

    def __init__(self, svc: DeliveryService, sender: WebhookSender, stop: asyncio.Event) -> None:
        self.svc = svc
        self.d = svc.d
        self.sender = sender
        self.stop = stop
        self.tasks: set[asyncio.Task[None]] = set()

    def loops(self) -> list[Callable[[], Any]]:
        steps = [self.steps_loop] if self.svc.settings.cadence.enabled else []
        return [self.alerts_loop, self.events_loop, self.tick_loop, *steps]

    async def steps_loop(self) -> None:
        """Follow-up steps: tasks to the feed at once, messages through the webhook (each
        lane's stream in turn, acknowledged on it)."""
        svc = self.svc
        block = lane_block(self.d.block_ms, len(svc.lanes))
        while not self.stop.is_set():
            for lane in svc.lanes:
                rows = await asyncio.to_thread(lane.steps_in.read, block)
                done = []
                for sid, jobs in svc.handle_steps(rows):
                    if jobs:
                        self.spawn(sid, jobs, lane.steps_in)
                    else:
                        done.append(sid)
                lane.steps_in.ack(done)

    async def _finish(self, sid: str | None, jobs: list[Job], source: GroupStream) -> None:
        try:
            await asyncio.gather(*(self.sender.deliver(j) for j in jobs))
            if sid is not None:
                source.ack([sid])
        finally:
            if sid is not None:
                source.inflight.discard(sid)

    def spawn(self, sid: str | None, jobs: list[Job], source: GroupStream) -> None:
        """Deliver ``jobs``; then acknowledge entry ``sid`` of ``source`` (None: nothing)."""
        if sid is not None:
            source.inflight.add(sid)
        task = asyncio.create_task(self._finish(sid, jobs, source))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def handle_batch(self, batch: list[tuple[str, dict[str, Any]]], lane: Lane) -> None:
        """Alerts read from ``lane``: handled, then acknowledged on its stream."""
        svc = self.svc
        svc.drain_events()
        done = []
        try:
            prepared_all: list[Prepared | None] = list(svc.handle_many([a for _, a in batch]))
        except Exception:  # e.g. one malformed alert: handle them one by one
            log.exception("batch of %d alerts failed; handling one by one", len(batch))
            prepared_all = [None] * len(batch)
        for (sid, alert), prepared in zip(batch, prepared_all, strict=True):
            if prepared is None:
                try:
                    prepared = svc.handle(alert)
                except Exception:  # one bad alert must not stop delivery
                    log.exception("alert %s could not be handled; left pending", sid)
                    continue
            if prepared.jobs:
                self.spawn(sid, prepared.jobs, lane.alerts_in)
            else:
                done.append(sid)
        lane.alerts_in.ack(done)

    def handle_changes(self, changes: list[BucketChange], lane: Lane) -> None:
        done = []
        for sid, jobs in self.svc.handle_changes(changes):
            if jobs:
                self.spawn(sid, jobs, lane.changes_in)
            else:
                done.append(sid)
        lane.changes_in.ack(done)

    def busy(self) -> bool:
        return sum(lane.inflight() for lane in self.svc.lanes) >= self.d.max_in_flight * 8

    async def alerts_loop(self) -> None:
        """Alerts, then the bucket changes their batches made (in that order), lane by
        lane (each lane blocks a share of ``block_ms``)."""
        block = lane_block(self.d.block_ms, len(self.svc.lanes))
        while not self.stop.is_set():
            for lane in self.svc.lanes:
                if self.busy():
                    await asyncio.sleep(self.d.block_ms / 1000)  # receivers are slow: wait
                    break
                runs = await asyncio.to_thread(lane.read_merged, block)
                for kind, items in runs:
                    if kind == "alerts":
                        self.handle_batch(items, lane)
                    else:
                        self.handle_changes(items, lane)

    async def events_loop(self) -> None:
        while not self.stop.is_set():
            self.svc.drain_events()
            await _wait(self.stop, self.d.events_poll_ms / 1000)

    async def tick_loop(self) -> None:
        svc, next_reclaim = self.svc, 0.0
        while not self.stop.is_set():
            for job in svc.tick():
                self.spawn(None, [job], svc.lanes[0].alerts_in)  # no entry to acknowledge
            if time.monotonic() >= next_reclaim:
                next_reclaim = time.monotonic() + self.d.reclaim_idle_s / 2
                for lane in svc.lanes:
                    stale = lane.reclaim(self.d.reclaim_idle_s)
                    if stale:
                        self.handle_batch(stale, lane)
                    self.handle_changes(lane.reclaim_changes(self.d.reclaim_idle_s), lane)
                svc._lag()
            await _wait(self.stop, self.d.tick_ms / 1000)

    async def finish_tasks(self, timeout_s: float) -> None:
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=timeout_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


def _arrival(sid: Any) -> float:
    """Wall time (s) a stream entry was appended: the millisecond part of its id."""
    text = sid.decode() if isinstance(sid, bytes) else str(sid)
    try:
        return int(text.split("-", 1)[0]) / 1000
    except ValueError:
        return time.time()


def _profile_view(p: LeadProfile) -> dict[str, Any]:
    return {
        "side": p.side, "source": p.source, "timeline": p.timeline, "area": p.area,
        "property_id": p.property_id, "price": p.price or None, "address": p.address,
        "title": p.title,
    }  # fmt: skip


def _event_view(alert: dict[str, Any], p: LeadProfile) -> dict[str, Any]:
    """The alert's event with the home's address and title (the engine's copy, else the
    triggering event's props), so scripts, the page and webhooks can name the home."""
    event = dict(alert["event"]) if isinstance(alert.get("event"), dict) else {}
    for key, value in (("address", p.address), ("title", p.title)):
        if not isinstance(event.get(key), str) or not event.get(key):
            event[key] = value
    return event


def _clock_view(c: dict[str, Any]) -> dict[str, Any]:
    keys = ("tenant", "lead_id", "alert_id", "status", "agent", "start_ts", "deadline_ts",
            "first_deadline_ts", "stopped_ts", "stopped_by", "stop_kind", "response_s", "misses",
            "missed_by", "rule", "source", "event_ts", "late_on_arrival",
            "arrival_delay_s")  # fmt: skip
    return {k: c.get(k) for k in keys}


def run_in_thread(service: DeliveryService, stop: threading.Event) -> threading.Thread:
    """Run the service on its own thread and event loop until ``stop`` is set (tests, demo)."""

    async def main() -> None:
        done = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.02)
            done.set()

        watcher = asyncio.create_task(watch())
        await service.run(done)
        await watcher

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="delivery", daemon=True)
    thread.start()
    return thread
