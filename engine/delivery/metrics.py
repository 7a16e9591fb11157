"""Prometheus instruments of alert delivery, built from a registry (never import-time globals).

The only module of ``engine/delivery`` that imports prometheus-client. Children with
fixed labels are pre-bound where the label set is closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from engine.events import SOURCES
from engine.metrics import zero

__all__ = ["DeliveryMetrics", "serve"]

# Ingest -> delivered: the target is well under a second, retries stretch it to minutes;
# buckets from 5 ms to 10 min show both without thousands of series.
_DELIVERY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 600.0,
)  # fmt: skip
# One HTTP attempt: local receivers answer in ms, a slow one hits the timeout (5 s).
_ATTEMPT_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# First response: the SLA rows are 5, 15 and 60 minutes; next-morning rows reach ~14 h.
_RESPONSE_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14_400, 28_800, 86_400)
# Known label values: each series exists at 0 from the start, so rate() sees the first
# increment and the SLA-miss ratio evaluates before any SLA was met or missed.
_LABELS = {
    "attempts": ("ok", "error", "retry", "failed"),
    "deliveries": ("delivered", "dead"),
    "feed_published": ("alert", "assignment", "sla", "escalated"),
    "assignments": ("rule", "default", "sticky", "claim", "claim_timeout", "escalation",
                    "event", "pond"),
    "escalations": ("next_agent", "pond"),
    "sla_met": (*sorted(SOURCES), "unknown"),
    "sla_missed": (*sorted(SOURCES), "unknown"),
}  # fmt: skip


@dataclass(frozen=True)
class DeliveryMetrics:
    registry: CollectorRegistry
    alerts_read: Counter
    alerts_skipped: Counter
    attempts: Counter
    deliveries: Counter
    dead_letters: Counter
    attempt_seconds: Histogram
    ingest_to_delivered: Histogram
    feed_published: Counter
    sse_clients: Gauge
    assignments: Counter
    sla_met: Counter
    sla_missed: Counter
    escalations: Counter
    first_response: Histogram
    events_read: Counter
    consumer_lag: Gauge
    cadence_steps: Counter

    @classmethod
    def create(
        cls, registry: CollectorRegistry | None = None, prefix: str = "leadpulse"
    ) -> DeliveryMetrics:
        r = registry if registry is not None else CollectorRegistry()
        m = cls(registry=r, **_sending(prefix, r), **_people(prefix, r))
        for name, values in _LABELS.items():
            zero(getattr(m, name), values)
        zero(m.cadence_steps, ("task", "message"), ("sent", "blocked", "no_target"))
        return m


def _sending(prefix: str, r: CollectorRegistry) -> dict[str, Any]:
    """Alerts read, webhooks, the feed, assignments."""
    p = f"{prefix}_delivery"
    return dict(
        alerts_read=Counter(
            f"{p}_alerts_read", "Alerts read from the alerts stream", registry=r
        ),
        alerts_skipped=Counter(
            f"{p}_alerts_skipped", "Alerts not sent (older than skip_older_than_s)", registry=r
        ),
        attempts=Counter(
            f"{p}_webhook_attempts", "Webhook HTTP attempts by outcome", ["outcome"], registry=r
        ),
        deliveries=Counter(
            f"{p}_webhooks", "Webhook deliveries finished, by status", ["status"], registry=r
        ),
        dead_letters=Counter(
            f"{p}_dead_letters", "Webhook deliveries sent to the dead letter", registry=r
        ),
        attempt_seconds=Histogram(
            f"{p}_webhook_attempt_seconds", "Wall time of one webhook attempt",
            buckets=_ATTEMPT_BUCKETS, registry=r,
        ),
        ingest_to_delivered=Histogram(
            f"{p}_ingest_to_delivered_seconds",
            "Event ingest (stream append) to webhook acknowledged by the receiver",
            buckets=_DELIVERY_BUCKETS, registry=r,
        ),
        feed_published=Counter(
            f"{p}_feed_published", "Entries published to the SSE feed, by kind", ["kind"],
            registry=r,
        ),
        sse_clients=Gauge(f"{p}_sse_clients", "Open SSE connections", registry=r),
        assignments=Counter(
            f"{p}_assignments", "Leads assigned, by how", ["how"], registry=r
        ),
    )  # fmt: skip


def _people(prefix: str, r: CollectorRegistry) -> dict[str, Any]:
    """SLA clocks and first responses, the event and consumer reads, follow-up steps."""
    p = f"{prefix}_delivery"
    return dict(
        sla_met=Counter(
            f"{prefix}_sla_met", "First responses within the SLA, by lead source", ["source"],
            registry=r,
        ),
        sla_missed=Counter(
            f"{prefix}_sla_missed", "SLA deadlines missed (escalated), by lead source",
            ["source"], registry=r,
        ),
        escalations=Counter(
            f"{prefix}_sla_escalations", "Escalations after a miss, by action", ["action"],
            registry=r,
        ),
        first_response=Histogram(
            f"{prefix}_first_response_seconds", "Alert (event time) to first agent response",
            buckets=_RESPONSE_BUCKETS, registry=r,
        ),
        events_read=Counter(
            f"{p}_events_read", "Event-stream entries read for SLA clocks and consent",
            registry=r,
        ),
        consumer_lag=Gauge(
            f"{p}_consumer_lag", "Alerts not yet read by the delivery consumer group",
            registry=r,
        ),
        cadence_steps=Counter(
            f"{p}_cadence_steps", "Follow-up steps handled by delivery, by kind (task, "
            "message) and outcome (sent: on the feed or handed to the webhook / targets; "
            "blocked: a closed channel; no_target: a message with nowhere to go)",
            ["kind", "outcome"], registry=r,
        ),
    )  # fmt: skip


def serve(metrics: DeliveryMetrics, port: int, addr: str = "127.0.0.1") -> None:
    """Expose ``/metrics`` over HTTP on a daemon thread."""
    start_http_server(port, addr=addr, registry=metrics.registry)
