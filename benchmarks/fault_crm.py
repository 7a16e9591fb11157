"""CRM write-back through a receiver outage: every alert reaches a local Follow Up Boss.

The fault harness of ``fault_webhook.py`` with a CRM target instead of the signed
webhook: the real engine (live, in this process) and a real ``leadpulse deliver``
process whose tenant has only a ``kind = "fub"`` target pointed at a loopback receiver
that checks what Follow Up Boss checks (Basic auth with the API key, ``X-System`` /
``X-System-Key``, ``PUT /v1/people/<id>`` with custom fields only: else 401/404/400).
Hand-raises arrive at ``--rate`` per second over ``--leads`` leads; beside them, at
``--changes-rate`` per second, a new lead views a home three times and saves it (its
bucket goes from nothing to P4, no alert), and the one before it says it is not
interested (P4 -> P5): bucket changes without an alert, drops included (two writes per
lead: keep 20 alerts/s + 2 x ``--changes-rate`` under the 24/s FUB pacing). The receiver
is up (``--warm-s``), then down for ``--outage-s`` (port closed for half, 503 for the
rest), then up again (``--after-s``), then traffic stops and the run waits until every
alert and bucket change is acknowledged. Figures: ingest (stream id) -> write-back
received, p50/p99 while the receiver was up (alerts appended outside the outage), lost,
duplicated, out of order, dead letters, time to drain the backlog; for bucket changes
(the engine's ``<prefix>:buckets`` entries that need a write: not the ones the batch's
alert wrote) lost, duplicated (the idempotency key seen twice) and leads whose CRM
field does not end at the lead's last bucket::

    python -m benchmarks.fault_crm --rate 20 --outage-s 60
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

from benchmarks.fault_webhook import Arrival, analyse, pending, stream_alerts
from benchmarks.harness import delete_prefix

__all__ = ["FubReceiver", "main"]

_PREFIX = "lpfaultcrm"
FUB_KEY = "fka_bench_0123456789abcdef"
SYSTEM_KEY = "sys-bench-0123456789abcdef"


class FubReceiver:
    """Loopback Follow Up Boss: ``up`` checks and records, ``503`` refuses, ``down`` closed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mode = "down"
        self.got: list[Arrival] = []
        self.buckets: list[tuple[str, str, str]] = []  # (delivery id, person id, bucket)
        self.refused: dict[int, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode == "down" and self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        elif mode != "down" and self._server is None:
            self._open()

    def _status(self, method: str, path: str, h: Any, body: bytes) -> int:
        from base64 import b64encode

        if self.mode != "up":
            return 503
        auth = "Basic " + b64encode(f"{FUB_KEY}:".encode()).decode()
        if h.get("Authorization") != auth or h.get("X-System-Key") != SYSTEM_KEY:
            return 401
        if method != "PUT" or not path.startswith("/v1/people/") or not path[11:].isdigit():
            return 404
        data = json.loads(body)
        return 200 if data and all(k.startswith("custom") for k in data) else 400

    def _open(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver._status("PUT", self.path, self.headers, body)
                with receiver._lock:
                    if status == 200:
                        receiver.buckets.append((self.headers["X-Leadpulse-Delivery-Id"],
                                                 self.path[11:], _bucket_of(body)))  # fmt: skip
                        receiver.got.append(Arrival(
                            self.headers["X-Leadpulse-Alert-Id"],
                            self.headers["X-Leadpulse-Delivery-Id"], self.path[11:], "alert",
                            int(self.headers.get("X-Leadpulse-Attempt", "0")), time.time(),
                        ))  # fmt: skip
                    else:
                        receiver.refused[status] = receiver.refused.get(status, 0) + 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()


def _bucket_of(body: bytes) -> str:
    return str(json.loads(body).get("customLeadpulseBucket", ""))


def _spawn(url: str, fub_url: str, log: str, rate_limit: float) -> subprocess.Popen[bytes]:
    import os

    t = "LEADPULSE__DELIVERY__TENANTS__DEFAULT__TARGETS__FUB__"
    env = {
        **os.environ, "REDIS_URL": url, "LEADPULSE__REDIS__KEY_PREFIX": _PREFIX,
        "LEADPULSE__DELIVERY__METRICS_PORT": "0", f"{t}KIND": '"fub"', f"{t}URL": f'"{fub_url}"',
        f"{t}SECRET": f'"{FUB_KEY}"', f"{t}SYSTEM_KEY": f'"{SYSTEM_KEY}"',
    }  # fmt: skip
    if rate_limit:
        env[f"{t}RATE_PER_S"] = str(rate_limit)
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "deliver", "--consumer", "crm-0"],
            env=env, stdout=f, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _changes_traffic(producer: Any, rate: float, stop: threading.Event) -> None:
    """Lead n views a home three times and saves it (-> P4, no alert); lead n-1 says it is
    not interested (-> P5). Person ids from 900000 on (never a hand-raise lead)."""
    n, next_at = 0, time.monotonic()
    while rate and not stop.is_set():
        lead, now = str(900_000 + n), time.time()
        events = [{"event_id": f"v{n}-{i}", "lead_id": lead, "type": t, "ts": now,
                   "property_id": f"P{lead}", "source": "portal", "side": "buyer"}
                  for i, t in enumerate(["property_view"] * 3 + ["property_save"])]  # fmt: skip
        if n:
            events.append({"event_id": f"x{n}", "lead_id": str(900_000 + n - 1),
                           "type": "not_interested", "ts": now})  # fmt: skip
        producer.send(events)
        n += 1
        next_at += 1 / rate
        stop.wait(max(0.0, next_at - time.monotonic()))


def _changes(client: Any, stream: str) -> list[Any]:
    """The bucket changes the engine emitted (``engine.delivery.targets.BucketChange``)."""
    from engine.delivery.targets import parse_change

    out = [parse_change(sid.decode(), f) for sid, f in client.xrange(stream)]
    return [c for c in out if c is not None]


def _bucket_figures(client: Any, stream: str, got: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Lost, duplicated and wrong-final counts of the bucket changes that need a write."""
    changes = _changes(client, stream)
    need = {c.delivery_id: c for c in changes if not c.alert_id}
    last = {c.lead_id: c.bucket for c in changes}
    seen: dict[str, int] = {}
    final: dict[str, str] = {}
    for key, lead, bucket in got:
        seen[key] = seen.get(key, 0) + 1
        final[lead] = bucket
    return {
        "bucket_changes": len(changes), "bucket_writes_needed": len(need),
        "bucket_writes_received": sum(1 for k in need if k in seen),
        "bucket_lost": sum(1 for k in need if k not in seen),
        "bucket_duplicated": sum(n - 1 for k, n in seen.items() if k in need),
        "bucket_drops_to_p5": sum(1 for c in need.values() if c.bucket == "P5"),
        "leads_whose_crm_field_is_not_their_bucket": sum(
            1 for lead, b in last.items() if final.get(lead, "") != b
        ),
    }  # fmt: skip


def _traffic(producer: Any, rate: float, leads: int, stop: threading.Event) -> None:
    n, next_at = 0, time.monotonic()
    while not stop.is_set():
        lead = 5000 + n % leads
        producer.send([{"event_id": f"c{n}", "lead_id": str(lead), "type": "showing_request",
                        "ts": time.time(), "property_id": f"P{lead}", "source": "portal",
                        "side": "buyer"}])  # fmt: skip
        n += 1
        next_at += 1 / rate
        stop.wait(max(0.0, next_at - time.monotonic()))


def _figures(
    client: Any, alerts: str, got: list[Arrival], marks: dict[str, float]
) -> dict[str, Any]:
    sent = stream_alerts(client, alerts)
    counts = analyse(sent, got)
    first: dict[str, float] = {}
    for a in got:
        first.setdefault(a.alert_id, a.at)
    warm, down, up = (marks[k] * 1000 for k in ("warm", "down", "up"))
    windows: dict[str, list[float]] = {"before_outage": [], "during_outage": [], "after": []}
    for sid, aid, _ in sent:
        ms = int(sid.split("-")[0])
        if aid in first and ms >= warm:
            name = "before_outage" if ms < down else "during_outage" if ms < up else "after"
            windows[name].append(first[aid] * 1000 - ms)

    def stats(xs: list[float]) -> dict[str, float] | None:
        return {"n": len(xs), "p50": round(statistics.median(xs)), "p99": round(_pct(xs, 0.99)),
                "max": round(max(xs))} if xs else None  # fmt: skip

    return {**counts, "ingest_to_crm_ms": {k: stats(v) for k, v in windows.items()}}


def _wait_for_group(client: Any, alerts: str, group: str, proc: Any, log: str) -> None:
    """Traffic starts once deliver has made its consumer group (it is reading)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            names = [g["name"] for g in client.xinfo_groups(alerts)]
        except Exception:  # noqa: BLE001 - no stream yet
            names = []
        if group in names or group.encode() in names:
            return
        time.sleep(0.1)
    raise RuntimeError(f"deliver did not start; log: {log}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=20.0, help="hand-raises (alerts) per second")
    ap.add_argument("--leads", type=int, default=200)
    ap.add_argument("--changes-rate", type=float, default=0.5,
                    help="new leads per second whose bucket moves without an alert")  # fmt: skip
    ap.add_argument("--warm-s", type=float, default=15.0)
    ap.add_argument("--outage-s", type=float, default=60.0)
    ap.add_argument("--after-s", type=float, default=20.0)
    ap.add_argument("--rate-limit", type=float, default=0.0, help="target pacing (0: FUB's 24/s)")
    ap.add_argument("--drain-timeout-s", type=float, default=600.0)
    ap.add_argument("--out", default="benchmarks/results/fault_crm.json")
    return ap.parse_args(argv)


@dataclass
class _Run:
    """What the steps of one run share: Redis, the engine thread, deliver, the receiver."""

    client: Any
    server: Any
    alerts: str
    group: str
    buckets: str
    producer: Any
    engine: threading.Thread
    engine_stop: threading.Event
    traffic_stop: threading.Event
    fub: FubReceiver
    log: str
    proc: subprocess.Popen[bytes]


def _start(args: argparse.Namespace) -> _Run:
    """Fresh prefix, the engine live in a thread, the receiver up and deliver reading."""
    from engine.app import build_parts
    from engine.dataflow import build_flow, run_flow
    from engine.redis_client import connect, resolve_url
    from engine.settings import load_settings
    from engine.streams import Producer

    settings = load_settings(overrides={"redis": {"key_prefix": _PREFIX},
                                        "streams": {"idle_poll_ms": 5}})  # fmt: skip
    url, server = resolve_url(settings.redis_url())
    client = connect(url)
    delete_prefix(client, _PREFIX)
    parts = build_parts(settings, client)
    alerts, group = parts.names.alerts, settings.delivery.consumer_group
    buckets = parts.names.bucket_changes
    engine_stop, traffic_stop = threading.Event(), threading.Event()
    engine = threading.Thread(target=run_flow, args=(build_flow(parts, stop=engine_stop),))
    engine.start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    fub = FubReceiver(port)
    fub.set_mode("up")
    log = tempfile.NamedTemporaryFile(prefix="fault_crm_", suffix=".log", delete=False).name
    proc = _spawn(url, fub.url, log, args.rate_limit)
    producer = Producer(client, parts.names, settings.streams.maxlen)
    run = _Run(client, server, alerts, group, buckets, producer, engine, engine_stop,
               traffic_stop, fub, log, proc)  # fmt: skip
    _wait_for_group(client, alerts, group, proc, log)
    return run


def _drive(run: _Run, args: argparse.Namespace, marks: dict[str, float]) -> bool:
    """Traffic through warm, outage (closed, then 503) and after; then wait for the drain."""
    fub, proc = run.fub, run.proc
    deadline = time.monotonic() + 60
    while not fub.got:  # the first write-back also proves deliver is up
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"deliver wrote nothing back; log: {run.log}")
        time.sleep(0.05)
    marks["warm"] = time.time()
    time.sleep(args.warm_s)
    marks["down"] = time.time()
    fub.set_mode("down")
    time.sleep(args.outage_s / 2)
    fub.set_mode("503")
    time.sleep(args.outage_s / 2)
    marks["up"] = time.time()
    fub.set_mode("up")
    time.sleep(args.after_s)
    run.traffic_stop.set()
    marks["traffic_stopped"] = time.time()
    time.sleep(1.0)
    drained = False
    end = time.monotonic() + args.drain_timeout_s
    while time.monotonic() < end and not drained:
        drained = (
            pending(run.client, run.alerts, run.group)
            == (0, 0)
            == pending(run.client, run.buckets, run.group)
        )
        time.sleep(0.5)
    marks["drained"] = time.time()
    return drained


def _stop(run: _Run) -> None:
    """Stop traffic, deliver (SIGTERM, then kill), the engine and the receiver."""
    run.traffic_stop.set()
    run.proc.send_signal(signal.SIGTERM)
    try:
        run.proc.wait(20)
    except subprocess.TimeoutExpired:
        run.proc.kill()
    run.engine_stop.set()
    run.engine.join(30)
    run.fub.set_mode("down")


def _result(
    run: _Run, args: argparse.Namespace, argv: list[str] | None, marks: dict[str, float],
    drained: bool,
) -> dict[str, Any]:  # fmt: skip
    client, fub = run.client, run.fub
    keys = {c.delivery_id for c in _changes(client, run.buckets)}  # the bucket write-backs
    return {
        "command": "python -m benchmarks.fault_crm " + " ".join(argv or sys.argv[1:]),
        "params": {
            k: getattr(args, k)
            for k in (
                "rate",
                "leads",
                "changes_rate",
                "warm_s",
                "outage_s",
                "after_s",
                "rate_limit",
            )
        },  # fmt: skip
        "pacing_per_s": args.rate_limit or 24.0,
        **_figures(client, run.alerts, [a for a in fub.got if a.delivery_id not in keys], marks),
        **_bucket_figures(client, run.buckets, fub.buckets),
        "refused_by_status": fub.refused,
        "dead_letters": int(cast(int, client.xlen(f"{{{_PREFIX}}}:dlv:dead"))),
        "drained": drained,
        "drain_after_receiver_up_s": round(marks["drained"] - marks["up"], 1),
        "deliver_log": run.log,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    run = _start(args)
    sender = threading.Thread(target=_traffic, args=(run.producer, args.rate, args.leads,
                                                     run.traffic_stop), daemon=True)  # fmt: skip
    mover = threading.Thread(target=_changes_traffic, daemon=True,
                             args=(run.producer, args.changes_rate, run.traffic_stop))  # fmt: skip
    marks: dict[str, float] = {"start": time.time()}
    drained = False
    try:
        sender.start()
        mover.start()
        drained = _drive(run, args, marks)
    finally:
        _stop(run)
    result = _result(run, args, argv, marks, drained)
    delete_prefix(run.client, _PREFIX)
    if run.server is not None:
        run.server.stop()
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    bad = result["lost"] or result["duplicated"] or result["out_of_order_leads"]
    bad = bad or result["bucket_lost"] or result["bucket_duplicated"]
    bad = bad or result["leads_whose_crm_field_is_not_their_bucket"]
    return 0 if drained and not bad and not result["dead_letters"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
