"""Webhook outage: the receiver is down, then answers 503, then comes back slow.

Runs the real engine (Bytewax, live, in this process) and a real ``leadpulse deliver``
process against a loopback webhook receiver, and appends one hand-raise event every
``1/--rate`` seconds, spread over ``--leads`` leads (so every lead gets many alerts).
The receiver goes through four phases:

1. ``up``      answers 204 at once (``--warm-s``: the RSS baseline);
2. ``down``    port closed, connections refused (the first ``--refused-fraction`` of
               ``--outage-s``);
3. ``503``     reads each request and answers 503 (the rest of the outage);
4. ``slow``    answers 204 after ``--slow-ms`` ± ``--slow-jitter-ms`` (traffic goes on for
               ``--after-s``, then stops; the run ends when nothing is left pending or after
               ``--drain-timeout-s``).

Every second it samples the deliver process's RSS (``VmRSS`` in ``/proc/<pid>/status``),
the alerts group's pending entries (read, not yet acknowledged) and lag (not read yet).
It checks, against the alerts stream, that every alert arrived (lost), none twice by
``delivery_id`` (duplicated), per lead in stream order (out of order), and that nothing
was dead-lettered; the recovery time is from the receiver's return to the moment every
alert appended before it had arrived. Writes JSON and Markdown::

    python -m benchmarks.fault_webhook --outage-s 60 --slow-ms 300

``tests/engine/delivery/test_outage.py`` runs the same receiver and checks at small size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import msgpack

from benchmarks.harness import delete_prefix, rss_kb
from engine.delivery.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

__all__ = [
    "Arrival", "FaultyReceiver", "analyse", "pending", "spawn_deliver",
    "stream_alerts",
]  # fmt: skip

SECRET = "fault-secret-0123456789abcdef"
_PREFIX = "lpfault"


@dataclass(frozen=True)
class Arrival:
    """One accepted (2xx) webhook request, in the order the receiver read them."""

    alert_id: str
    delivery_id: str
    lead_id: str
    type: str
    attempt: int
    at: float


@dataclass
class FaultyReceiver:
    """A loopback webhook receiver whose behaviour changes on command.

    Modes: ``down`` (no listening socket: connection refused), ``503`` (reads the request,
    answers 503), ``up`` (204 at once), ``slow`` (204 after a random delay in ``slow_s``).
    Only 2xx answers are recorded as arrivals; rejected requests are counted."""

    port: int
    slow_s: tuple[float, float] = (0.2, 0.4)
    secret: str = SECRET
    mode: str = "down"
    got: list[Arrival] = field(default_factory=list)
    rejected: int = 0
    bad_signatures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def set_mode(self, mode: str) -> None:
        if mode not in ("down", "503", "up", "slow"):
            raise ValueError(mode)
        self.mode = mode
        if mode == "down":
            self._close()
        elif self._server is None:
            self._open()

    def arrivals(self) -> list[Arrival]:
        with self._lock:
            return list(self.got)

    def _open(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                mode = receiver.mode
                if mode not in ("up", "slow"):
                    with receiver._lock:
                        receiver.rejected += 1
                    self._answer(503)
                    return
                receiver._record(self.headers, body)
                if mode == "slow":
                    time.sleep(random.uniform(*receiver.slow_s))
                self._answer(204)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def _record(self, headers: Any, body: bytes) -> None:
        payload = json.loads(body)
        ok = verify(
            self.secret, body, headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
        )
        arrival = Arrival(
            str(payload["alert_id"]), str(payload["delivery_id"]), str(payload["lead_id"]),
            str(payload.get("type")), int(headers.get("X-Leadpulse-Attempt", "0")), time.time(),
        )  # fmt: skip
        with self._lock:
            self.got.append(arrival)
            if not ok:
                self.bad_signatures += 1

    def _close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        self._close()


def spawn_deliver(
    redis_url: str, prefix: str, hook_url: str, log_path: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``leadpulse deliver`` as its own process, the tenant ``default`` posting to ``hook_url``."""
    full = {
        **os.environ,
        "REDIS_URL": redis_url,
        "LEADPULSE__REDIS__KEY_PREFIX": prefix,
        "LEADPULSE__DELIVERY__METRICS_PORT": "0",
        "LEADPULSE__DELIVERY__TENANTS__DEFAULT__WEBHOOK_URL": f'"{hook_url}"',
        "LEADPULSE__DELIVERY__TENANTS__DEFAULT__SECRET": f'"{SECRET}"',
        **(env or {}),
    }
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "deliver", "--consumer", "fault-0"],
            env=full, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def pending(client: Any, stream: str, group: str) -> tuple[int, int]:
    """(pending entries, lag: entries not read yet) of the group; (0, 0) before it exists."""
    try:
        groups = client.xinfo_groups(stream)
    except Exception:  # noqa: BLE001 - no stream yet
        return 0, 0
    for g in groups:
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name == group:
            return int(g["pending"]), int(g.get("lag") or 0)
    return 0, 0


def stream_alerts(client: Any, stream: str) -> list[tuple[str, str, str]]:
    """(stream id, alert id, lead id) of every alert on the stream, in stream order."""
    out = []
    for sid, fields in client.xrange(stream):
        alert = msgpack.unpackb(fields[b"a"], raw=False)
        out.append((sid.decode(), str(alert["alert_id"]), str(alert["lead_id"])))
    return out


def analyse(sent: list[tuple[str, str, str]], got: list[Arrival]) -> dict[str, Any]:
    """Lost, duplicated and out-of-order counts of the first deliveries (``type`` alert)."""
    first = [a for a in got if a.type == "alert"]
    ids = {alert_id for _, alert_id, _ in sent}
    seen: dict[str, int] = defaultdict(int)
    for a in first:
        seen[a.delivery_id] += 1
    expected: dict[str, list[str]] = defaultdict(list)
    for _, alert_id, lead in sent:
        expected[lead].append(alert_id)
    arrived: dict[str, list[str]] = defaultdict(list)
    done: set[str] = set()
    for a in first:
        if a.alert_id in ids and a.alert_id not in done:
            done.add(a.alert_id)
            arrived[a.lead_id].append(a.alert_id)
    ooo_leads, inversions = 0, 0
    for lead, order in arrived.items():
        rank = {alert_id: i for i, alert_id in enumerate(expected[lead])}
        ranks = [rank[x] for x in order]
        bad = sum(1 for x, y in zip(ranks, ranks[1:], strict=False) if y < x)
        inversions += bad
        ooo_leads += bad > 0
    return {
        "sent": len(sent),
        "received": len(done),
        "lost": len(ids - done),
        "duplicated": sum(n - 1 for n in seen.values()),
        "out_of_order_leads": ooo_leads,
        "out_of_order_pairs": inversions,
        "unexpected": sum(1 for a in first if a.alert_id not in ids),
        "other_deliveries": len(got) - len(first),  # re-alerts (claim timeout, SLA miss)
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outage-s", type=float, default=60.0, help="receiver down, then 503")
    ap.add_argument("--refused-fraction", type=float, default=0.5,
                    help="part of the outage with the port closed (then 503)")  # fmt: skip
    ap.add_argument("--slow-ms", type=float, default=300.0, help="mean answer time after it")
    ap.add_argument("--slow-jitter-ms", type=float, default=100.0)
    ap.add_argument("--rate", type=float, default=10.0, help="hand-raise events (alerts) per s")
    ap.add_argument("--leads", type=int, default=100)
    ap.add_argument("--warm-s", type=float, default=15.0, help="healthy receiver first")
    ap.add_argument("--after-s", type=float, default=30.0, help="traffic after the outage")
    ap.add_argument("--drain-timeout-s", type=float, default=300.0)
    ap.add_argument("--out", default="benchmarks/results/fault_webhook.json")
    return ap.parse_args(argv)


@dataclass
class _Run:
    """What the steps of one run share: Redis, the engine thread, deliver, the receiver."""

    settings: Any
    client: Any
    server: Any
    alerts_key: str
    group: str
    producer: Any
    engine: threading.Thread
    engine_stop: threading.Event
    receiver: FaultyReceiver
    slow_s: tuple[float, float]
    log_path: str
    proc: subprocess.Popen[bytes]
    samples: list[dict[str, Any]] = field(default_factory=list)
    phase: dict[str, str] = field(default_factory=lambda: {"name": "warm"})
    appended: list[tuple[float, int]] = field(default_factory=list)  # (wall, ingest ms) per event
    marks: dict[str, float] = field(default_factory=dict)


def _start(args: argparse.Namespace) -> _Run:
    """Fresh prefix, the engine live in a thread, the receiver up and deliver spawned."""
    from engine.app import build_parts
    from engine.dataflow import build_flow, run_flow
    from engine.redis_client import connect, resolve_url
    from engine.settings import load_settings
    from engine.streams import Producer

    settings = load_settings(overrides={
        "redis": {"key_prefix": _PREFIX}, "streams": {"idle_poll_ms": 5},
        "delivery": {"metrics_port": 0},
    })  # fmt: skip
    url, server = resolve_url(settings.redis_url())
    client = connect(url)
    delete_prefix(client, _PREFIX)
    parts = build_parts(settings, client)
    producer = Producer(client, parts.names, settings.streams.maxlen)
    engine_stop = threading.Event()
    engine = threading.Thread(target=run_flow, args=(build_flow(parts, stop=engine_stop),))
    engine.start()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    lo = max(0.0, args.slow_ms - args.slow_jitter_ms) / 1000
    hi = (args.slow_ms + args.slow_jitter_ms) / 1000
    receiver = FaultyReceiver(port, slow_s=(lo, hi))
    receiver.set_mode("up")
    with tempfile.NamedTemporaryFile(prefix="fault_deliver_", suffix=".log", delete=False) as f:
        log_path = f.name
    proc = spawn_deliver(url, _PREFIX, receiver.url, log_path)
    return _Run(settings, client, server, parts.names.alerts, settings.delivery.consumer_group,
                producer, engine, engine_stop, receiver, (lo, hi), log_path, proc)  # fmt: skip


def _sample(run: _Run, t0: float, sampling: threading.Event) -> None:
    """Once a second: deliver's RSS, the group's pending and lag, alerts received."""
    while not sampling.is_set():
        p, lag = pending(run.client, run.alerts_key, run.group)
        run.samples.append({
            "t": round(time.time() - t0, 2), "phase": run.phase["name"],
            "rss_kb": rss_kb(run.proc.pid), "pending": p, "lag": lag,
            "received": len(run.receiver.got),
        })  # fmt: skip
        sampling.wait(1.0)


def _traffic(run: _Run, args: argparse.Namespace, traffic_stop: threading.Event) -> None:
    from engine.streams import ingest_ms

    n = 0
    next_at = time.monotonic()
    while not traffic_stop.is_set():
        lead = n % args.leads
        ev = {"event_id": f"f{n}", "lead_id": f"fl{lead}", "type": "showing_request",
              "ts": time.time(), "property_id": f"P{lead}", "area": "02139",
              "source": "portal", "side": "buyer"}  # fmt: skip
        (sid,) = run.producer.send([ev])
        run.appended.append((time.time(), ingest_ms(sid)))
        n += 1
        next_at += 1 / args.rate
        traffic_stop.wait(max(0.0, next_at - time.monotonic()))


def _set_phase(run: _Run, name: str, mode: str | None = None) -> None:
    run.marks[name] = time.time()
    run.phase["name"] = name
    if mode is not None:
        run.receiver.set_mode(mode)


def _drive(
    run: _Run, args: argparse.Namespace, sender: threading.Thread, traffic_stop: threading.Event
) -> bool:
    """Warm, down, 503, slow; stop traffic and wait until every alert is acknowledged."""
    deadline = time.monotonic() + 30
    while not run.receiver.got:  # the first alert also proves the process is up
        if time.monotonic() > deadline or run.proc.poll() is not None:
            raise RuntimeError(f"deliver did not deliver; log: {run.log_path}")
        time.sleep(0.05)
    run.marks["warm"] = time.time()
    time.sleep(args.warm_s)
    _set_phase(run, "down", "down")
    time.sleep(args.outage_s * args.refused_fraction)
    _set_phase(run, "503", "503")
    time.sleep(args.outage_s * (1 - args.refused_fraction))
    _set_phase(run, "slow", "slow")
    time.sleep(args.after_s)
    traffic_stop.set()
    sender.join(5)
    run.marks["traffic_stopped"] = time.time()
    run.phase["name"] = "drain"
    time.sleep(1.0)  # the engine turns the last events into alerts
    ok = False
    end = time.monotonic() + args.drain_timeout_s
    while time.monotonic() < end:  # every alert read and acknowledged: all finished
        if pending(run.client, run.alerts_key, run.group) == (0, 0):  # (delivered or dead letter)
            ok = True
            break
        time.sleep(0.5)
    run.marks["drained"] = time.time()
    time.sleep(3.0)  # settle: the RSS after
    run.phase["name"] = "after"
    time.sleep(1.1)
    return ok


def _stop(run: _Run, stops: list[threading.Event], sampler: threading.Thread) -> None:
    """Stop traffic and sampling, deliver (SIGTERM, then kill), the engine, the receiver."""
    for stop in stops:
        stop.set()
    sampler.join(5)
    run.proc.send_signal(signal.SIGTERM)
    try:
        run.proc.wait(20)
    except subprocess.TimeoutExpired:
        run.proc.kill()
    run.engine_stop.set()
    run.engine.join(30)
    run.receiver.close()


def _timing(
    run: _Run, sent: list[tuple[str, str, str]], got: list[Arrival]
) -> tuple[float | None, dict[str, int] | None]:
    """Recovery (receiver back -> every earlier alert received) and ingest -> received."""
    marks = run.marks
    arrival: dict[str, float] = {}
    for a in got:
        if a.type == "alert":
            arrival.setdefault(a.alert_id, a.at)
    up_ms = marks["slow"] * 1000
    backlog = [aid for sid, aid, _ in sent if int(sid.split("-")[0]) < up_ms]
    recovery = (
        max(arrival[a] for a in backlog) - marks["slow"]
        if backlog and all(a in arrival for a in backlog)
        else None
    )
    lat = [arrival[aid] * 1000 - int(sid.split("-")[0]) for sid, aid, _ in sent if aid in arrival]
    return recovery, {
        "p50": round(statistics.median(lat)),
        "p99": round(_pct(lat, 0.99)),
        "max": round(max(lat)),
    } if lat else None  # fmt: skip


def _memory(run: _Run) -> tuple[dict[str, int], dict[str, int]]:
    """Deliver's RSS and the group's pending entries over the phases."""
    samples = run.samples

    def phase_rss(name: str) -> list[int]:
        return [s["rss_kb"] for s in samples if s["phase"] == name and s["rss_kb"]]

    warm = phase_rss("warm")
    rss_before = int(statistics.median(warm[len(warm) // 2 :])) if warm else 0
    rss_all = [s["rss_kb"] for s in samples if s["rss_kb"]]
    outage = [s for s in samples if s["phase"] in ("down", "503")]
    rss = {
        "before_outage": rss_before,
        "max_during_outage": max((s["rss_kb"] for s in outage), default=0),
        "max": max(rss_all, default=0),
        "after": phase_rss("after")[-1] if phase_rss("after") else 0,
    }
    pend = {
        "max": max((s["pending"] for s in samples), default=0),
        "max_lag": max((s["lag"] for s in samples), default=0),
        "final": pending(run.client, run.alerts_key, run.group)[0],
    }
    return rss, pend


def _params(run: _Run, args: argparse.Namespace) -> dict[str, Any]:
    lo, hi = run.slow_s
    return {
        "outage_s": args.outage_s,
        "refused_s": round(args.outage_s * args.refused_fraction, 1),
        "503_s": round(args.outage_s * (1 - args.refused_fraction), 1),
        "slow_ms": [round(lo * 1000), round(hi * 1000)],
        "rate_per_s": args.rate,
        "leads": args.leads,
        "warm_s": args.warm_s,
        "after_s": args.after_s,
        "delivery": {
            k: getattr(run.settings.delivery, k)
            for k in (
                "max_attempts",
                "backoff_base_s",
                "backoff_cap_s",
                "timeout_s",
                "max_in_flight",
            )
        },
    }  # fmt: skip


def _result(
    run: _Run, args: argparse.Namespace, argv: list[str] | None, ok: bool
) -> dict[str, Any]:
    marks, receiver = run.marks, run.receiver
    sent = stream_alerts(run.client, run.alerts_key)
    got = receiver.arrivals()
    counts = analyse(sent, got)
    recovery, latency = _timing(run, sent, got)
    rss, pend = _memory(run)
    return {
        "command": "python -m benchmarks.fault_webhook " + " ".join(argv or sys.argv[1:]),
        "redis": "embedded valkey" if run.server is not None else "REDIS_URL",
        "params": _params(run, args),
        **counts,
        "dead_letters": int(cast(int, run.client.xlen(f"{{{_PREFIX}}}:dlv:dead"))),
        "bad_signatures": receiver.bad_signatures,
        "rejected_during_outage": receiver.rejected,
        "sent_during_outage": sum(
            1 for at, _ in run.appended if marks["down"] <= at < marks["slow"]
        ),
        "drained": ok,
        "recovery_s": None if recovery is None else round(recovery, 2),
        "drain_after_traffic_stopped_s": round(marks["drained"] - marks["traffic_stopped"], 2),
        "ingest_to_received_ms": latency,
        "rss_kb": rss,
        "pending": pend,
        "phases_s": {k: round(v - marks["warm"], 2) for k, v in marks.items()},
        "samples": run.samples,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    run = _start(args)
    sampling = threading.Event()
    sampler = threading.Thread(target=_sample, args=(run, time.time(), sampling), daemon=True)
    sampler.start()
    traffic_stop = threading.Event()
    sender = threading.Thread(target=_traffic, args=(run, args, traffic_stop), daemon=True)
    ok = False
    sender.start()
    try:
        ok = _drive(run, args, sender, traffic_stop)
    finally:
        _stop(run, [traffic_stop, sampling], sampler)

    result = _result(run, args, argv, ok)
    if run.server is not None:
        run.server.stop()
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(result))
    good = ok and not (
        result["lost"] or result["duplicated"] or result["out_of_order_leads"]
        or result["dead_letters"] or result["bad_signatures"]
    )  # fmt: skip
    return 0 if good else 1


def _markdown(r: dict[str, Any]) -> str:
    p, rss, pend = r["params"], r["rss_kb"], r["pending"]
    lat = r["ingest_to_received_ms"] or {}
    lines = [
        "# Webhook outage",
        "",
        f"`{r['command']}` ({r['redis']}; engine live in the harness, `leadpulse deliver` as "
        "its own process, loopback receiver)",
        "",
        f"Receiver healthy {p['warm_s']:g} s, then connection refused {p['refused_s']:g} s, then "
        f"503 {p['503_s']:g} s, then 204 after {p['slow_ms'][0]}-{p['slow_ms'][1]} ms; "
        f"{p['rate_per_s']:g} hand-raise alerts/s over {p['leads']} leads throughout, "
        f"{p['after_s']:g} s more after the outage. Delivery settings: {p['delivery']}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| alerts sent (on the alerts stream) | {r['sent']} |",
        f"| ... appended during the outage | {r['sent_during_outage']} |",
        f"| received (distinct alert ids) | {r['received']} |",
        f"| lost | {r['lost']} |",
        f"| duplicated (same delivery id twice) | {r['duplicated']} |",
        f"| leads out of order (adjacent inversions) | {r['out_of_order_leads']} "
        f"({r['out_of_order_pairs']}) |",
        f"| dead letters | {r['dead_letters']} |",
        f"| bad signatures | {r['bad_signatures']} |",
        f"| requests answered 503 | {r['rejected_during_outage']} |",
        "| recovery (receiver back -> every earlier alert received) | "
        + (f"{r['recovery_s']} s |" if r["recovery_s"] is not None else "never (some lost) |"),
        f"| drain after traffic stopped | {r['drain_after_traffic_stopped_s']} s |",
        f"| ingest -> received p50 / p99 / max | {lat.get('p50')} / {lat.get('p99')} / "
        f"{lat.get('max')} ms |",
        f"| deliver RSS before outage / max during / max / after | {rss['before_outage']} / "
        f"{rss['max_during_outage']} / {rss['max']} / {rss['after']} kB |",
        f"| pending entries max / final (max lag) | {pend['max']} / {pend['final']} "
        f"({pend['max_lag']}) |",
        "",
        "Per-second samples (RSS, pending, lag, received) are in `fault_webhook.json`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
