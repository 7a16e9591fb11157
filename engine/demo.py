"""``leadpulse demo``: the whole engine on a laptop, in seconds.

Starts a private embedded Valkey (unless REDIS_URL is set, in which case it uses
that server under its own ``lpdemo`` key prefix), generates seeded IDX traffic for a
few dozen leads with the benchmark simulator, sends it open-loop over the demo's
duration (a month of event time compressed into seconds), runs the real dataflow on
a background thread, and prints alerts as the engine emits them and the hot list as
it changes. Exits cleanly when the time is up.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO, cast

from benchmarks.simulator import SimConfig, generate
from engine.delivery.scripts import bucket_label, local_time, why_now
from engine.keys import every_pattern
from engine.records import RecordReader
from engine.redis_client import connect, redact_url, resolve_url
from engine.settings import load_settings
from engine.shards import dead_letter_streams
from engine.streams import Producer
from engine.views import read_hot_list

__all__ = ["run_demo", "format_alert"]

_PREFIX = "lpdemo"


def format_alert(alert: dict[str, Any], tz: str = "UTC") -> str:
    """One alert as an agent would want to read it in a terminal: the bucket (and the
    rule that set it, "P1 · hand-raise"), what the lead did naming the home, times with
    their date in the tenant's zone ``tz``."""
    event = alert.get("event") if isinstance(alert.get("event"), dict) else {}
    sla = alert.get("sla") if isinstance(alert.get("sla"), dict) else {}
    before = alert.get("score_before")
    after = alert.get("score_after")
    move = f"{before}->{after}" if before is not None else f"{after}"
    label = bucket_label(alert.get("bucket"), alert.get("bucket_by", "score"))
    blocked = alert.get("blocked_channels") or []
    shown = f" | blocked: {','.join(map(str, blocked))}" if blocked else ""
    reasons = "; ".join(map(str, alert.get("reasons") or []))
    return (
        f"ALERT {alert.get('lead_id')!s:>7} {move:>7} {label:<15} {alert.get('tier')!s:<9} "
        f"[{', '.join(map(str, alert.get('triggers') or []))}] {why_now(alert)}\n"
        f"        at {local_time((event or {}).get('ts'), tz)} -> {alert.get('first_touch')} "
        f"by {local_time((sla or {}).get('deadline_ts'), tz)}{shown}\n"
        f"        why: {reasons}"
    )


def _print_hot(out: TextIO, client: Any, reader: RecordReader, tenant: str) -> None:
    rows = read_hot_list(client, reader, tenant, limit=5)
    if not rows:
        return
    print(
        "  HOT LIST  " + "  ".join(f"{r['lead_id']}:{r['score']}({r['bucket']})" for r in rows),
        file=out,
    )


def _send_paced(
    producer: Producer, events: list[dict[str, Any]], send_for: float, every_2s: Callable[[], None]
) -> int:
    """Send ``events`` spread evenly over ``send_for`` seconds, calling ``every_2s`` every
    two seconds on the way; the number sent."""
    start = time.monotonic()
    sent = 0
    next_call = start + 2.0
    while sent < len(events):
        due = min(len(events), int(len(events) * (time.monotonic() - start) / send_for) + 1)
        if due > sent:
            producer.send(events[sent:due])
            sent = due
        if time.monotonic() >= next_call:
            every_2s()
            next_call += 2.0
        time.sleep(0.05)
    return sent


def run_demo(
    config: str | None, duration: float, leads: int, seed: int, out: TextIO = sys.stdout
) -> int:
    settings = load_settings(config, overrides={"redis": {"key_prefix": _PREFIX}})
    url, server = resolve_url(settings.redis_url())
    where = "embedded valkey at " + url if server else redact_url(url)
    print(f"leadpulse demo: {leads} simulated leads on {where}, {duration:.0f} s", file=out)
    try:
        client = connect(url, settings.redis.retries, settings.redis.socket_timeout_s)
        for key in client.scan_iter(match=every_pattern(_PREFIX), count=1000):
            client.delete(key)
        from engine.app import build_parts  # bytewax and river: only once Redis answered
        from engine.dataflow import build_flow, run_flow

        parts = build_parts(settings, client)
        producer = Producer(client, parts.names, settings.streams.maxlen)
        sim = SimConfig(seed=seed, leads=leads, days=30.0, tenant="demo")
        tz = settings.delivery.tenant(sim.tenant).timezone or settings.alerts.timezone
        reader = RecordReader(settings)
        events = list(generate(sim))
        alerts_seen: list[dict[str, Any]] = []
        lock = threading.Lock()

        def on_alerts(batch: list[dict[str, Any]]) -> None:
            with lock:
                for alert in batch:
                    alerts_seen.append(alert)
                    print(format_alert(alert, tz), file=out, flush=True)

        stop = threading.Event()
        flow = build_flow(parts, stop=stop, on_alerts=on_alerts)
        worker = threading.Thread(target=run_flow, args=(flow,), name="dataflow", daemon=True)
        worker.start()

        def print_hot() -> None:
            with lock:
                _print_hot(out, client, reader, sim.tenant)

        start = time.monotonic()
        sent = _send_paced(producer, events, max(0.5, duration * 0.8), print_hot)
        remaining = duration - (time.monotonic() - start)
        if remaining > 0:
            time.sleep(remaining)
        stop.set()
        worker.join(timeout=30)
        print_hot()
        dead = sum(cast(int, client.xlen(key)) for key in dead_letter_streams(parts.names))
        print(
            f"done: {sent} events sent, {len(alerts_seen)} alerts, {dead} rejected",
            file=out,
        )
        return 0
    finally:
        if server is not None:
            server.stop()
