"""Ingest -> webhook receipt and ingest -> hot-list page latency of a live, bounded run.

Runs the real engine (Bytewax, live), the delivery service, the delivery routers on
uvicorn, a loopback webhook receiver and (if Debian's chromium is installed) the
hot-list page in headless Chromium, then appends ``--alerts`` showing requests (one
new lead each) at ``--interval`` seconds and measures, per alert, from its stream
append time (the millisecond part of the stream id, Redis's clock) to

- the receiver reading the signed webhook (``webhook``), and
- the page inserting the card from its SSE stream (``page``, ``window.leadpulseSeen``).

Same machine, same clock. Prints p50/p90/p99/max and writes a JSON result::

    python -m benchmarks.delivery_latency --alerts 200 --interval 0.02
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from engine.app import build_parts
from engine.dataflow import build_flow, run_flow
from engine.delivery.consumer import DeliveryService, run_in_thread
from engine.delivery.web import routers
from engine.redis_client import connect, resolve_url
from engine.settings import load_settings
from engine.streams import Producer, ingest_ms

_SECRET = "bench-secret-0123456789abcdef"
_PREFIX = "lpbench"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values), 1),
        "p90_ms": round(_pct(values, 0.90), 1),
        "p99_ms": round(_pct(values, 0.99), 1),
        "max_ms": round(max(values), 1),
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alerts", type=int, default=200)
    ap.add_argument("--interval", type=float, default=0.02, help="seconds between events")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/delivery_latency.json")
    return ap.parse_args(argv)


def _start_hook(received: dict[str, float]) -> ThreadingHTTPServer:
    """The loopback webhook receiver: first receipt time (ms) per lead id."""

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.setdefault(json.loads(body)["lead_id"], time.time() * 1000)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", _port()), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    return hook


@dataclass
class _Run:
    """The live parts of one run: Redis, engine, delivery service, web server, receiver."""

    client: Any
    server: Any
    producer: Producer
    engine: threading.Thread
    engine_stop: threading.Event
    delivery: threading.Thread
    delivery_stop: threading.Event
    web: uvicorn.Server
    port: int
    hook: ThreadingHTTPServer


def _start(hook: ThreadingHTTPServer) -> _Run:
    """Fresh prefix, the engine and the delivery service live, the routers on uvicorn."""
    hook_url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    settings = load_settings(overrides={
        "redis": {"key_prefix": _PREFIX},
        "streams": {"idle_poll_ms": 5},
        "delivery": {"block_ms": 20, "events_poll_ms": 50, "metrics_port": 0, "tenants": {
            "default": {"webhook_url": hook_url, "secret": _SECRET}}},
    })  # fmt: skip
    url, server = resolve_url(settings.redis_url())
    client = connect(url)
    for key in client.scan_iter(match=f"{{{_PREFIX}}}:*", count=1000):
        client.delete(key)
    parts = build_parts(settings, client)
    producer = Producer(client, parts.names, settings.streams.maxlen)
    engine_stop, delivery_stop = threading.Event(), threading.Event()
    engine = threading.Thread(target=run_flow, args=(build_flow(parts, stop=engine_stop),))
    engine.start()
    svc = DeliveryService(settings, client)
    delivery = run_in_thread(svc, delivery_stop)
    app = FastAPI()
    for router in routers(settings, client):
        app.include_router(router)
    port = _port()
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=web.run, daemon=True).start()
    while not web.started:
        time.sleep(0.01)
    return _Run(client, server, producer, engine, engine_stop, delivery, delivery_stop, web,
                port, hook)  # fmt: skip


def _open_page(args: argparse.Namespace, port: int) -> Any:
    """The hot-list page in headless Chromium, loaded and listening (None without it)."""
    if (
        args.no_browser
        or not shutil.which("chromium")
        or not Path("/usr/bin/chromedriver").exists()
    ):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu",
              "--disable-background-networking", "--disable-dev-shm-usage"):  # fmt: skip
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.get(f"http://127.0.0.1:{port}/hotlist")
    deadline = time.monotonic() + 10
    while driver.execute_script("return document.body.dataset.loaded") != "true":
        if time.monotonic() > deadline:
            raise RuntimeError("page did not load")
        time.sleep(0.05)
    time.sleep(0.3)  # the EventSource connects
    return driver


def _send_and_wait(
    run: _Run, args: argparse.Namespace, received: dict[str, float], driver: Any,
    ingested: dict[str, int],
) -> dict[str, float]:  # fmt: skip
    """Append the showing requests, then wait for the webhooks and the page's cards."""
    for i in range(args.alerts):
        lead = f"bench{i}"
        ev = {"event_id": f"b{i}", "lead_id": lead, "type": "showing_request",
              "ts": time.time(), "property_id": f"P{i}", "area": "02139",
              "source": "portal"}  # fmt: skip
        (sid,) = run.producer.send([ev])
        ingested[lead] = ingest_ms(sid)
        time.sleep(args.interval)
    deadline = time.monotonic() + 30
    while len(received) < args.alerts and time.monotonic() < deadline:
        time.sleep(0.05)
    seen: dict[str, float] = {}
    if driver is not None:
        while time.monotonic() < deadline:
            seen = driver.execute_script("return window.leadpulseSeen") or {}
            if len(seen) >= args.alerts:
                break
            time.sleep(0.1)
    return seen


def _stop(run: _Run, driver: Any) -> None:
    if driver is not None:
        driver.quit()
    run.delivery_stop.set()
    run.engine_stop.set()
    run.delivery.join(15)
    run.engine.join(30)
    run.web.should_exit = True
    run.hook.shutdown()
    if run.server is not None:
        run.server.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    received: dict[str, float] = {}
    run = _start(_start_hook(received))
    driver = _open_page(args, run.port)
    ingested: dict[str, int] = {}
    try:
        seen = _send_and_wait(run, args, received, driver, ingested)
    finally:
        _stop(run, driver)
    webhook = [received[k] - ms for k, ms in ingested.items() if k in received]
    page = [float(seen[k]) - ms for k, ms in ingested.items() if k in seen]
    result = {
        "alerts": args.alerts,
        "interval_s": args.interval,
        "webhook": _summary(webhook),
        "page": _summary(page) if driver is not None else "skipped (no chromium)",
        "redis": "embedded valkey" if run.server is not None else "REDIS_URL",
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if len(webhook) == args.alerts else 1


if __name__ == "__main__":
    raise SystemExit(main())
