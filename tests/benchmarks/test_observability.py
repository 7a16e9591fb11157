"""The Grafana dashboard, the alert rules and the README's metric tables match the metrics
the engine, the gateway and delivery expose."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from engine.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config" / "grafana" / "leadpulse.json"
JOBS = {"leadpulse-engine", "leadpulse-gateway", "leadpulse-delivery"}


def _engine_metrics() -> dict[str, str]:
    """Exposed family name (counters end in _total) -> type."""
    registry = CollectorRegistry()
    Metrics.create(registry)
    out = {}
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        out[name] = family.type
    return out


def _exprs(panels: list[dict]) -> list[str]:
    out = []
    for panel in panels:
        out += [t["expr"] for t in panel.get("targets") or [] if "expr" in t]
        out += _exprs(panel.get("panels", []))
    return out


def test_dashboard_queries_only_metrics_the_services_expose() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exposed = _all_metrics()
    used = set()
    for expr in _exprs(dash["panels"]):
        for name in re.findall(r"\bleadpulse_[a-z0-9_]+", expr):
            used.add(re.sub(r"_(bucket|sum|count)$", "", name))
    assert used, "the dashboard has no queries"
    unknown = used - set(exposed)
    assert not unknown, f"dashboard queries metrics no service exposes: {unknown}"
    titles = " ".join(p["title"].lower() for p in _panels(dash["panels"]))
    for topic in ("events in", "lag", "latency", "alerts", "score distribution", "auc",
                  "services up", "gateway", "requests", "delivery", "webhook", "sla"):  # fmt: skip
        assert topic in titles, topic
    # every service's panels: a metric of each is queried
    for prefix in ("leadpulse_gateway_", "leadpulse_delivery_", "leadpulse_sla_"):
        assert any(n.startswith(prefix) for n in used), prefix


def test_dashboard_job_variable_lists_the_three_scrape_jobs() -> None:
    import yaml

    dash = json.loads(DASHBOARD.read_text())
    (job,) = [v for v in dash["templating"]["list"] if v["name"] == "job"]
    scrape = yaml.safe_load((ROOT / "config" / "prometheus" / "prometheus.yml").read_text())
    assert {c["job_name"] for c in scrape["scrape_configs"]} == JOBS
    selector = re.fullmatch(r'label_values\(up\{job=~"([^"]+)"\}, job\)', job["definition"])
    assert selector, job["definition"]
    assert all(re.fullmatch(selector.group(1), j) for j in JOBS)
    assert all(re.fullmatch(job["allValue"], j) for j in JOBS)


def test_quality_panels_say_why_they_can_be_empty() -> None:
    dash = json.loads(DASHBOARD.read_text())
    quality = [p for p in _panels(dash["panels"]) if "leadpulse_model_quality" in str(p)
               or "leadpulse_model_calibration" in str(p)]  # fmt: skip
    assert quality
    for panel in quality:
        assert "empty until" in panel.get("description", "").lower(), panel["title"]


def test_every_metric_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in _all_metrics() if f"`{name}`" not in readme]
    assert not missing, f"README metric tables lack: {missing}"


def _panels(panels: list[dict]) -> list[dict]:
    out = []
    for panel in panels:
        out.append(panel)
        out += _panels(panel.get("panels", []))
    return out


def _all_metrics() -> dict[str, set[str]]:
    """Every family the engine, the gateway and delivery expose -> its label names."""
    from engine.delivery.metrics import DeliveryMetrics
    from engine.gateway.metrics import GatewayMetrics

    out: dict[str, set[str]] = {}
    for cls in (Metrics, DeliveryMetrics, GatewayMetrics):
        registry = CollectorRegistry()
        cls.create(registry)  # type: ignore[attr-defined]
        for family in registry.collect():
            name = family.name + ("_total" if family.type == "counter" else "")
            out[name] = {label for s in family.samples for label in s.labels}
            out[name] |= set(getattr(registry._names_to_collectors.get(name), "_labelnames", ()))
    return out


def test_alert_rules_use_only_exposed_metrics_and_labels() -> None:
    import yaml

    rules = yaml.safe_load((ROOT / "config" / "prometheus" / "alerts.yml").read_text())
    exposed = _all_metrics()
    names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            names.append(rule["alert"])
            assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule
            assert rule["annotations"]["summary"], rule
            expr = rule["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
            for name, selector in re.findall(r"\b(leadpulse_[a-z0-9_]+)(\{[^}]*\})?", expr):
                assert name in exposed, f"{rule['alert']}: {name} is not exposed"
                for label in re.findall(r"([a-z_]+)\s*!?=~?", selector):
                    assert label in exposed[name], f"{rule['alert']}: {name} has no {label}"
    assert len(names) == len(set(names))
    # the "lag is a metric with an alert threshold", and Redis down is paged
    assert {"LeadpulseStreamLagHigh", "LeadpulseStreamLagSeconds", "LeadpulseRedisDown"} <= set(
        names
    )
    promtool = shutil.which("promtool")  # Debian's prometheus package; .ci/run installs it
    if promtool is None:
        pytest.skip("promtool not installed: PromQL syntax not checked (the rest was)")
    check = subprocess.run(
        [promtool, "check", "rules", str(ROOT / "config" / "prometheus" / "alerts.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(names)} rules found" in check.stdout
    # and they fire when they should (config/prometheus/alerts_test.yml: series -> alerts)
    fire = subprocess.run(
        [promtool, "test", "rules", str(ROOT / "config" / "prometheus" / "alerts_test.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert fire.returncode == 0, fire.stdout + fire.stderr
