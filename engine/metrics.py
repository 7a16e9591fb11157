"""Prometheus metrics, built from a registry (never import-time globals).

``Metrics.create(registry)`` makes every instrument once; tests pass a fresh
``CollectorRegistry``. Children with fixed labels are pre-bound (calling
``.labels()`` per event costs ~2 us more, DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics", "serve"]

# Event -> alert latency: the SLA is minutes, the target well under a second; buckets
# resolve 1 ms .. 10 s so p99 under load is visible without a thousand series.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Scores are 0-100: one bucket per decile, edges at the P-bucket floors included.
_SCORE_BUCKETS = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
# Batches are 1 .. read_count x partitions events.
_BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000)
# One batch through Redis and the model: ~ms for hundreds of events.
_BATCH_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    events_in: Counter
    rejected: Counter
    duplicates: Counter
    late: Counter
    batch_size: Histogram
    batch_seconds: Histogram
    alert_latency: Histogram
    alerts: Counter
    scores: Histogram
    labels: Counter
    model_labels_seen: Gauge
    stream_lag: Gauge
    model_quality: Gauge
    model_calibration: Gauge
    model_drift: Counter
    model_version: Gauge

    def observe_model(self, status: dict[str, Any], serving_version: int | None) -> None:
        """Publish the model's live quality (``ModelSet.status()``) as gauges."""
        self.model_labels_seen.set(status["labels_seen"])
        self.model_version.set(status["version"] if serving_version is None else serving_version)
        for scope in ("served_score", "model_alone"):
            q = status[scope]
            for name in ("auc", "log_loss", "precision_top15", "ece"):
                if q.get(name) is not None:
                    self.model_quality.labels(scope, name).set(q[name])
            for band in q["calibration"]:
                if band["n"]:
                    self.model_calibration.labels(scope, band["band"], "predicted").set(
                        band["mean_p"]
                    )
                    self.model_calibration.labels(scope, band["band"], "observed").set(band["rate"])
                    self.model_calibration.labels(scope, band["band"], "n").set(band["n"])

    @classmethod
    def create(
        cls, registry: CollectorRegistry | None = None, prefix: str = "leadpulse"
    ) -> Metrics:
        r = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=r,
            events_in=Counter(f"{prefix}_events_in", "Stream entries read", registry=r),
            rejected=Counter(
                f"{prefix}_events_rejected", "Invalid events sent to the dead letter, by reason",
                ["reason"], registry=r,
            ),
            duplicates=Counter(
                f"{prefix}_events_duplicate", "Events whose event_id was already applied",
                registry=r,
            ),
            late=Counter(
                f"{prefix}_events_late", "Events older than the dedup horizon of their lead",
                registry=r,
            ),
            batch_size=Histogram(
                f"{prefix}_batch_size", "Events per processed batch", buckets=_BATCH_BUCKETS,
                registry=r,
            ),
            batch_seconds=Histogram(
                f"{prefix}_batch_seconds", "Wall time to process one batch",
                buckets=_BATCH_SECONDS, registry=r,
            ),
            alert_latency=Histogram(
                f"{prefix}_event_to_alert_seconds",
                "Ingest (stream append) to alert written on the alerts stream",
                buckets=_LATENCY_BUCKETS, registry=r,
            ),
            alerts=Counter(
                f"{prefix}_alerts", "Alerts emitted, by trigger", ["reason"], registry=r
            ),
            scores=Histogram(
                f"{prefix}_score", "Scores computed (0-100)", buckets=_SCORE_BUCKETS, registry=r
            ),
            labels=Counter(
                f"{prefix}_labels", "Labelled examples learned, by label", ["label"], registry=r
            ),
            model_labels_seen=Gauge(
                f"{prefix}_model_labels_seen", "Labels the online model has learned from",
                registry=r,
            ),
            stream_lag=Gauge(
                f"{prefix}_stream_lag_entries",
                "Entries appended to a partition and not yet committed by the dataflow",
                ["partition"], registry=r,
            ),
            model_quality=Gauge(
                f"{prefix}_model_quality",
                "Rolling progressive quality (scored before learning): auc, log_loss, "
                "precision_top15, ece; scope served_score (what agents see) or model_alone",
                ["scope", "metric"], registry=r,
            ),
            model_calibration=Gauge(
                f"{prefix}_model_calibration",
                "Calibration by score band over the rolling window: predicted vs observed rate",
                ["scope", "band", "stat"], registry=r,
            ),
            model_drift=Counter(
                f"{prefix}_model_drift", "ADWIN drift alarms on the served score's log loss",
                registry=r,
            ),
            model_version=Gauge(
                f"{prefix}_model_version", "Model version scoring (0: unpublished live copy)",
                registry=r,
            ),
        )  # fmt: skip


def serve(metrics: Metrics, port: int, addr: str = "127.0.0.1") -> None:
    """Expose ``/metrics`` over HTTP on a daemon thread."""
    start_http_server(port, addr=addr, registry=metrics.registry)
