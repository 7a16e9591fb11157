"""Event -> alert latency of a live ``leadpulse run``, measured from its own metrics.

Starts ``leadpulse run`` as a separate process against a real server (``--redis-url``,
``REDIS_URL``, else an embedded Valkey) under a fresh key prefix, sends seeded simulator
traffic open loop at ``--rate`` events/s for ``--seconds`` (events go out on schedule
whether or not the engine keeps up), waits until everything sent is committed, then
reads ``leadpulse_event_to_alert_seconds`` from the engine's ``/metrics`` and the exact
per-alert latencies (``emit_ms - ingest_ms``) from the alerts stream.

    python -m benchmarks.live_latency --rate 1000 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import redis

from benchmarks.simulator import events_for_count, generate
from engine.redis_client import connect, resolve_url
from engine.streams import Producer, StreamNames, committed_positions
from engine.views import read_alerts

RESULTS = Path(__file__).resolve().parent / "results"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _histogram(text: str, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[le] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count") or line.startswith(f"{name}_sum"):
            key, value = line.rsplit(" ", 1)
            out[key[len(name) + 1 :]] = float(value)
    return out


def _bucket_quantile(hist: dict[str, float], q: float) -> str:
    """The upper bound of the first bucket holding the q-th quantile (Prometheus style)."""
    total = hist.get("count", 0.0)
    for le, count in sorted(
        ((k, v) for k, v in hist.items() if k not in ("count", "sum")),
        key=lambda kv: float(kv[0]),
    ):
        if total and count >= q / 100 * total:
            return le
    return "+Inf"


def _wait_metrics(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait (at most 30 s) until the engine's ``/metrics`` answers."""
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("leadpulse run did not start") from None
            time.sleep(0.1)


def _send_open_loop(producer: Producer, events: list[dict[str, Any]], rate: float) -> float:
    """Send ``events`` on schedule at ``rate`` events/s; the seconds it took."""
    start = time.monotonic()
    sent = 0
    while sent < len(events):
        due = min(len(events), int((time.monotonic() - start) * rate) + 1)
        if due > sent:
            producer.send(events[sent:due])
            sent = due
        time.sleep(0.005)
    return time.monotonic() - start


def _wait_committed(client: redis.Redis, names: StreamNames, partitions: int) -> None:
    """Wait (at most 120 s) until every partition is committed up to its last entry."""
    last = {p: "0-0" for p in range(partitions)}
    for p in range(partitions):
        if client.exists(names.events(p)):
            info: dict[str, Any] = client.xinfo_stream(names.events(p))  # type: ignore[assignment]
            last[p] = info["last-generated-id"].decode()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pos = committed_positions(client, names)
        if all(pos[p] == last[p] for p in range(partitions)):
            break
        time.sleep(0.05)


def _latency_report(hist: dict[str, float], alerts: list[Any]) -> dict[str, Any]:
    """Exact per-alert latencies and the engine's own histogram, summarised."""
    lat = [float(a["emit_ms"] - a["ingest_ms"]) for a in alerts]
    return {
        "alert_latency_ms": {
            "p50": _percentile(lat, 50),
            "p95": _percentile(lat, 95),
            "p99": _percentile(lat, 99),
            "max": max(lat) if lat else float("nan"),
        },
        "metrics_histogram": {
            "count": hist.get("count"),
            "mean_ms": 1000 * hist["sum"] / hist["count"] if hist.get("count") else None,
            "p50_bucket_le_s": _bucket_quantile(hist, 50),
            "p99_bucket_le_s": _bucket_quantile(hist, 99),
        },
    }


def measure(rate: float, seconds: float, redis_url: str, partitions: int) -> dict[str, Any]:
    url, server = resolve_url(redis_url)
    prefix = "lat" + uuid.uuid4().hex[:6]
    port = _free_port()
    env = {
        **os.environ,
        "REDIS_URL": url,
        "LEADPULSE__REDIS__KEY_PREFIX": prefix,
        "LEADPULSE__STREAMS__PARTITIONS": str(partitions),
        "LEADPULSE__METRICS__PORT": str(port),
    }
    client = connect(url)
    names = StreamNames(prefix, partitions)
    producer = Producer(client, names, maxlen=10**9)
    events = list(generate(events_for_count(int(rate * seconds), seed=7)))
    events = events[: int(rate * seconds)]
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run"], env=env)
    try:
        _wait_metrics(port, proc)
        start = time.monotonic()
        send_s = _send_open_loop(producer, events, rate)
        _wait_committed(client, names, partitions)
        drain_s = time.monotonic() - start - send_s
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        hist = _histogram(text, "leadpulse_event_to_alert_seconds")
        alerts = read_alerts(client, names)
        report = _latency_report(hist, alerts)
        result = {
            "offered_rate": rate,
            "events": len(events),
            "partitions": partitions,
            "send_seconds": round(send_s, 2),
            "drain_after_send_seconds": round(drain_s, 2),
            "alerts": len(alerts),
            "alert_latency_ms": report["alert_latency_ms"],
            "metrics_histogram": report["metrics_histogram"],
            "server": "embedded valkey" if server else url,
        }
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        for key in client.scan_iter(match=f"{{{prefix}}}:*", count=1000):
            client.delete(key)
        if server is not None:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="offered events/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of traffic")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    parser.add_argument("--out", default=str(RESULTS / "live_latency.json"))
    args = parser.parse_args(argv)
    result = measure(args.rate, args.seconds, args.redis_url, args.partitions)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
