"""Metrics are built from a registry and move when the engine works."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from engine.app import build_parts
from engine.dataflow import build_flow, run_flow
from engine.metrics import Metrics, observe_all
from engine.streams import Producer

T0 = 1_767_225_600.0


def test_two_metric_sets_do_not_collide() -> None:
    a, b = Metrics.create(CollectorRegistry()), Metrics.create(CollectorRegistry())
    a.events_in.inc(3)
    assert b.registry.get_sample_value("leadpulse_events_in_total") == 0.0
    assert a.registry.get_sample_value("leadpulse_events_in_total") == 3.0


def test_observing_a_batch_at_once_reports_what_one_by_one_does() -> None:
    one, batch = Metrics.create(CollectorRegistry()), Metrics.create(CollectorRegistry())
    values = [0, 10, 11, 55, 100, 100, 37, 90, 9, 10, 70, 71]
    for v in values:
        one.scores.observe(v)
    observe_all(batch.scores, values[:5])
    observe_all(batch.scores, values[5:6])  # one value: the public call
    observe_all(batch.scores, values[6:])
    observe_all(batch.scores, [])

    def samples(m: Metrics) -> list[tuple[str, dict[str, str], float]]:
        family = next(f for f in m.registry.collect() if f.name == "leadpulse_score")
        return [(s.name, s.labels, s.value) for s in family.samples if "created" not in s.name]

    assert samples(batch) == samples(one)
    assert one.registry.get_sample_value("leadpulse_score_bucket", {"le": "10.0"}) == 4.0


def test_processing_moves_the_metrics(client: Any, make_settings: Any) -> None:
    settings = make_settings(streams={"partitions": 2})
    metrics = Metrics.create(CollectorRegistry())
    parts = build_parts(settings, client, metrics)
    producer = Producer(client, parts.names, settings.streams.maxlen)
    producer.send(
        [
            {"event_id": "1", "lead_id": "L", "type": "showing_request", "ts": T0},
            {"event_id": "1", "lead_id": "L", "type": "showing_request", "ts": T0},
            {"event_id": "2", "lead_id": "L", "type": "nonsense", "ts": T0},
        ]
    )
    run_flow(build_flow(parts, bounded=True))
    get = metrics.registry.get_sample_value
    assert get("leadpulse_events_in_total") == 3
    assert get("leadpulse_events_duplicate_total") == 1
    assert get("leadpulse_events_rejected_total", {"reason": "unknown_type"}) == 1
    assert get("leadpulse_alerts_total", {"reason": "hand_raise"}) == 1
    assert get("leadpulse_event_to_alert_seconds_count") == 1
    assert 0 <= get("leadpulse_event_to_alert_seconds_sum") < 5
    assert get("leadpulse_score_count") == 1
    assert get("leadpulse_batch_size_count") >= 1


def test_metrics_bind_where_the_setting_says() -> None:
    """`metrics.host`: 127.0.0.1 by default; another address (all interfaces) on request."""
    import json
    import socket
    import urllib.request

    from engine.metrics import serve
    from engine.settings import load_settings

    assert load_settings(environ={}).metrics.host == "127.0.0.1"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve(Metrics.create(CollectorRegistry()), port, "0.0.0.0")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
        assert reply.status == 200 and "ok" in json.dumps(json.loads(reply.read()))


def test_labelled_counters_start_at_zero_in_all_three_services() -> None:
    """rate() sees the first increment, and sums over a family are never empty."""
    from engine.delivery.metrics import DeliveryMetrics
    from engine.events import SOURCES
    from engine.gateway.metrics import GatewayMetrics
    from engine.metrics import ALERT_REASONS, REJECT_REASONS

    engine = Metrics.create(CollectorRegistry()).registry
    for reason in ALERT_REASONS:
        assert engine.get_sample_value("leadpulse_alerts_total", {"reason": reason}) == 0.0
    for kind in ("task", "message"):
        assert engine.get_sample_value("leadpulse_cadence_steps_total", {"kind": kind}) == 0.0
    for reason in REJECT_REASONS:
        assert engine.get_sample_value("leadpulse_events_rejected_total", {"reason": reason}) == 0
    gateway = GatewayMetrics.create(CollectorRegistry()).registry
    labels = {"route": "/v1/events", "method": "POST", "status": "503"}
    assert gateway.get_sample_value("leadpulse_gateway_requests_total", labels) == 0.0
    assert (
        gateway.get_sample_value(
            "leadpulse_gateway_events_rejected_total", {"reason": "unknown_type"}
        )
        == 0.0
    )
    delivery = DeliveryMetrics.create(CollectorRegistry()).registry
    for source in (*SOURCES, "unknown"):
        for name in ("leadpulse_sla_met_total", "leadpulse_sla_missed_total"):
            assert delivery.get_sample_value(name, {"source": source}) == 0.0, (name, source)
    for outcome in ("ok", "error", "retry", "failed"):
        assert (
            delivery.get_sample_value(
                "leadpulse_delivery_webhook_attempts_total", {"outcome": outcome}
            )
            == 0.0
        )


def test_model_gauges_are_computed_at_the_scrape_not_in_the_batch(
    client: Any, make_settings: Any
) -> None:
    """The model's quality (``status()``, milliseconds with full windows) is off the batch
    path: a batch that learns only marks it; the next /metrics scrape computes it."""
    import socket
    import urllib.request

    from engine.metrics import serve

    settings = make_settings(streams={"partitions": 1})
    metrics = Metrics.create(CollectorRegistry())
    parts = build_parts(settings, client, metrics)
    Producer(client, parts.names, settings.streams.maxlen).send(
        [
            {"event_id": "1", "lead_id": "L", "type": "property_view", "ts": T0,
             "property_id": "P1"},
            {"event_id": "2", "lead_id": "L", "type": "appointment_set", "ts": T0 + 60},
            {"event_id": "3", "lead_id": "M", "type": "property_view", "ts": T0 + 90,
             "property_id": "P2"},
            {"event_id": "4", "lead_id": "M", "type": "lost", "ts": T0 + 120},
        ]
    )  # fmt: skip
    run_flow(build_flow(parts, bounded=True))
    get = metrics.registry.get_sample_value
    assert get("leadpulse_labels_total", {"label": "negative"}) == 1  # learned at once
    assert get("leadpulse_model_labels_seen") == 0.0  # learned, but not computed yet
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve(metrics, port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    assert "leadpulse_model_labels_seen 1.0" in text  # the scrape computed it
