"""Gateway metrics, built from a registry (the engine's pattern, ``engine/metrics.py``).

The only gateway module that imports prometheus-client. Route labels are route
templates (``/v1/leads/{lead_id}``), never raw paths, and rejection reasons are
their stable code (``unknown_type``), never the free text after it, so series stay
few and no caller-supplied value ever reaches a label.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from engine.metrics import REJECT_REASONS, zero

__all__ = ["GatewayMetrics"]

# A request is one Redis round trip plus validation: ~1 ms for a batch of 100 on
# loopback; buckets resolve 0.5 ms .. 5 s so a slow Redis shows.
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# Events per request: the tracker sends 1-20, integrations up to max_events.
_EVENTS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
# Series that exist at 0 from the start (rate() sees the first 503; rules on 5xx and the
# dashboard's reject panel always have data): the ingest route's answers and the reasons.
_INGEST = ("/v1/events",)
_INGEST_STATUSES = ("200", "400", "401", "403", "413", "415", "422", "429", "500", "503")
_REJECT_REASONS = (
    *(r for r in REJECT_REASONS if r not in ("late", "malformed_entry")),
    "forbidden",
)


@dataclass(frozen=True)
class GatewayMetrics:
    registry: CollectorRegistry
    requests: Counter
    seconds: Histogram
    events_per_request: Histogram
    accepted: Counter
    duplicate: Counter
    rejected: Counter
    rate_limited: Counter

    @classmethod
    def create(
        cls, registry: CollectorRegistry | None = None, prefix: str = "leadpulse_gateway"
    ) -> GatewayMetrics:
        r = registry if registry is not None else CollectorRegistry()
        m = cls(
            registry=r,
            requests=Counter(
                f"{prefix}_requests", "HTTP requests, by route template, method and status",
                ["route", "method", "status"], registry=r,
            ),
            seconds=Histogram(
                f"{prefix}_request_seconds", "Wall time per request, by route template",
                ["route"], buckets=_SECONDS, registry=r,
            ),
            events_per_request=Histogram(
                f"{prefix}_events_per_request", "Events in one POST /v1/events body",
                buckets=_EVENTS, registry=r,
            ),
            accepted=Counter(
                f"{prefix}_events_accepted", "Events appended to the stream", registry=r
            ),
            duplicate=Counter(
                f"{prefix}_events_duplicate", "Events whose event_id was seen in the window",
                registry=r,
            ),
            rejected=Counter(
                f"{prefix}_events_rejected", "Events refused, by reason code", ["reason"],
                registry=r,
            ),
            rate_limited=Counter(
                f"{prefix}_rate_limited", "Requests refused with 429", registry=r
            ),
        )  # fmt: skip
        zero(m.requests, _INGEST, ("POST",), _INGEST_STATUSES)
        zero(m.rejected, _REJECT_REASONS)
        return m

    def render(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
