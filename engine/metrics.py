"""Prometheus metrics, built from a registry (never import-time globals).

``Metrics.create(registry)`` makes every instrument once; tests pass a fresh
``CollectorRegistry``. Children with fixed labels are pre-bound (calling
``.labels()`` per event costs ~2 us more, DESIGN.md).

The same HTTP server answers ``/healthz`` (:class:`RedisHealth`): the engine keeps
running through a Redis outage, so something has to say it is not making progress.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from engine.errors import ConfigError
from engine.redact import redact_text

__all__ = [
    "ALERT_REASONS",
    "REJECT_REASONS",
    "Metrics",
    "RedisHealth",
    "serve",
    "observe_all",
    "serve_http",
    "zero",
]

log = logging.getLogger(__name__)

# Event -> alert latency: the SLA is minutes, the target well under a second; buckets
# resolve 1 ms .. 10 s so p99 under load is visible without a thousand series.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Scores are 0-100: one bucket per decile, edges at the P-bucket floors included.
_SCORE_BUCKETS = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
# Batches are 1 .. read_count x partitions events.
_BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000)
# One batch through Redis and the model: ~ms for hundreds of events.
_BATCH_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# Known label values of the labelled counters: each series is exported at 0 from the
# start, so rate()/increase() see the first increment and sums over them are never empty.
ALERT_REASONS = ("hand_raise", "entered", "jump", "reactivation")  # engine/alerts.py
CADENCE_KINDS = ("task", "message")  # engine/cadence: agent tasks, automatic messages
# the contract's rejection codes (engine/validate.py), plus the engine's own
REJECT_REASONS = (
    "malformed_json", "malformed_msgpack", "not_a_map", "missing_field", "wrong_type",
    "bad_value", "unknown_type", "too_large", "too_long", "too_many", "too_deep",
    "late", "malformed_entry",
)  # fmt: skip


def zero(counter: Counter, *values: Iterable[str]) -> None:
    """Create ``counter``'s child for every combination of ``values`` (one iterable per
    label), so each series exists at 0 before its first increment."""
    combos: list[tuple[str, ...]] = [()]
    for options in values:
        combos = [(*c, v) for c in combos for v in options]
    for combo in combos:
        counter.labels(*combo)


class RedisHealth:
    """Whether the engine's last Redis round trip succeeded (``/healthz``, ``redis_up``).

    The dataflow reports every read and batch: ``ok()`` (cheap: a no-op unless Redis was
    down) or ``failed(reason)``. While Redis is unreachable the dataflow keeps retrying
    instead of dying, so this is how an orchestrator or an alert learns that it is not
    making progress, and why.
    """

    def __init__(self, up: Gauge, clock: Callable[[], float] = time.monotonic) -> None:
        self._up = up
        self._clock = clock
        self._lock = threading.Lock()
        self._reason = ""  # empty: the last round trip succeeded
        self._since = clock()
        up.set(1)  # the engine starts only after connect() reached Redis

    def ok(self) -> None:
        if not self._reason:
            return
        with self._lock:
            if self._reason:
                log.warning("Redis reachable again after %.1f s", self._clock() - self._since)
                self._reason, self._since = "", self._clock()
                self._up.set(1)

    def failed(self, reason: str) -> None:
        reason = redact_text(reason)  # /healthz and the log line may quote a server's URL
        with self._lock:
            if not self._reason:
                log.warning("Redis unreachable (%s): retrying with backoff", reason)
                self._since = self._clock()
            self._reason = reason
            self._up.set(0)

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, the JSON body of ``/healthz``)."""
        with self._lock:
            reason, age = self._reason, round(self._clock() - self._since, 3)
        if reason:
            return False, {"status": "unavailable", "redis": reason, "failing_for_s": age}
        return True, {"status": "ok", "redis": "ok", "up_for_s": age}


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
    cadence_steps: Counter
    scores: Histogram
    labels: Counter
    model_labels_seen: Gauge
    stream_lag: Gauge
    model_quality: Gauge
    model_calibration: Gauge
    model_drift: Counter
    model_version: Gauge
    redis_up: Gauge
    health: RedisHealth
    #: called before each /metrics scrape is rendered: gauges too costly to keep current
    #: on every batch (the model's quality) are computed here, off the batch path
    scrape_hooks: list[Callable[[], None]] = field(default_factory=list)

    def before_scrape(self) -> None:
        """Run the scrape hooks; one that fails is logged, the scrape still answers."""
        for hook in self.scrape_hooks:
            try:
                hook()
            except Exception as exc:  # noqa: BLE001 - a gauge must not break /metrics
                log.warning("metrics: refreshing gauges failed: %s", redact_text(str(exc)))

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
        redis_up = Gauge(
            f"{prefix}_redis_up", "1 if the last Redis round trip succeeded, 0 while failing",
            registry=r,
        )  # fmt: skip
        m = cls(
            registry=r, redis_up=redis_up, health=RedisHealth(redis_up),
            **_pipeline_instruments(prefix, r), **_model_instruments(prefix, r),
        )  # fmt: skip
        zero(m.alerts, ALERT_REASONS)
        zero(m.cadence_steps, CADENCE_KINDS)
        zero(m.rejected, REJECT_REASONS)
        return m


def observe_all(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for each of ``values`` (an unlabelled histogram), as one
    increment per bucket and one of the sum: the same counts and sum (exact for integer
    values) for a fraction of the calls, e.g. the scores of a batch."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(values) < 2:
        for value in values:  # another prometheus-client layout: the public call
            histogram.observe(value)
        return
    histogram._raise_if_not_observable()
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bound >= value, as observe()
    for bucket, n in zip(buckets, counts, strict=True):
        if n:
            bucket.inc(n)
    total.inc(sum(values))


def _pipeline_instruments(prefix: str, r: CollectorRegistry) -> dict[str, Any]:
    """Events in, batches, alerts, follow-up steps, stream lag."""
    return dict(
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
        cadence_steps=Counter(
            f"{prefix}_cadence_steps", "Follow-up steps emitted (committed), by kind",
            ["kind"], registry=r,
        ),
        stream_lag=Gauge(
            f"{prefix}_stream_lag_entries",
            "Entries appended to a partition and not yet committed by the dataflow",
            ["partition"], registry=r,
        ),
    )  # fmt: skip


def _model_instruments(prefix: str, r: CollectorRegistry) -> dict[str, Any]:
    """Scores, labels and the online model's quality, calibration, drift and version."""
    return dict(
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


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    timeout = 10  # seconds per read: a client that stalls cannot hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds
        pass


def serve(metrics: Metrics, port: int, addr: str = "127.0.0.1") -> None:
    """Expose ``/metrics`` and ``/healthz`` over HTTP on a daemon thread.

    ``/healthz``: 200 while the last Redis round trip succeeded, 503 with the reason (and
    ``Retry-After``) while it is failing. Any other path is the Prometheus text.
    """
    serve_http(metrics.registry, port, metrics.health.report, addr, what="metrics.port",
               before=metrics.before_scrape)  # fmt: skip


def serve_http(
    registry: CollectorRegistry,
    port: int,
    health: Callable[[], tuple[bool, dict[str, Any]]],
    addr: str = "127.0.0.1",
    what: str = "metrics.port",
    before: Callable[[], None] | None = None,
) -> None:
    """``/healthz`` (JSON from ``health()``: 200 or 503) and Prometheus text on any other
    path, on a daemon thread (``before()`` first, if given). A busy port is a
    :class:`ConfigError` naming the setting."""
    prometheus = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            if before is not None:
                before()
            return prometheus(environ, start_response)
        healthy, body = health()
        headers = [("Content-Type", "application/json")]
        if not healthy:
            headers.append(("Retry-After", "1"))
        start_response("200 OK" if healthy else "503 Service Unavailable", headers)
        return [json.dumps(body).encode()]

    try:
        httpd = make_server(addr, port, app, _Server, handler_class=_QuietHandler)
    except OSError as exc:
        why = (
            "is in use (another leadpulse process?)"
            if exc.errno == 98
            else (f"cannot be listened on ({exc.strerror})")
        )
        raise ConfigError(
            f"{what}: {addr}:{port} {why}; set another port "
            f"(LEADPULSE__{what.upper().replace('.', '__')}) or 0 for none"
        ) from None
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
