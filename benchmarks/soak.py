"""Soak: the whole product (serve -> run -> deliver -> webhook) at half its measured
maximum for ``--minutes``, sampling memory and backlog so growth shows.

Real processes on loopback: ``leadpulse serve``, ``leadpulse run`` and
``leadpulse deliver`` against a private ``redis-server`` (no persistence, so ``INFO``
sees nothing but this run), and a webhook receiver in this process.

1. **Calibrate**: ``--calibrate-events`` are posted as fast as the gateway takes them;
   the engine's drain rate (events / time from first post to all committed) is the
   maximum. ``--load`` (0.5) of it is the soak rate, unless ``--rate`` is given.
2. **Soak**: events are posted open loop (on schedule, whether or not the engine
   keeps up) in batches of ``--batch``. Every ``--sample-s`` the RSS of each process
   and of redis-server, Redis ``used_memory``, the engine's lag (appended minus
   committed) and the delivery group's pending entries are recorded.
3. **Verdict**: over the part after ``--warmup-min``, the least-squares slope of each
   series per 10 minutes, and the growth from the first to the last fifth of it.

The workload is a bounded population: one simulator window (``--window-events`` over
``--window-days`` of event time) replayed again and again, each pass shifted forward
in event time with fresh event ids, so leads return and event time moves on as in
production. State that Redis keeps for a *wall-clock* window (gateway idempotency
markers, delivery receipts, per-alert routes and SLA clocks, idle lead keys) grows
until its window is full; the soak shortens those windows (``--window-min``) so they
fill during warm-up, and the report gives the formula for the defaults.

    python -m benchmarks.soak --minutes 30          # the documented run
    python -m benchmarks.soak --minutes 2 --warmup-min 1   # a smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgpack

from benchmarks.harness import DedicatedServer, free_port, machine_info, rss_kb, wait_http
from benchmarks.simulator import events_for_count, generate
from engine.streams import StreamNames, stream_lag

RESULTS = Path(__file__).resolve().parent / "results"
TENANT = "soak"
PREFIX = "lp"
PARTITIONS = 4


def workload(
    window_events: int,
    window_days: float,
    seed: int,
    events_total: float,
    tag: str,
    end_ts: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Endless events: new leads arrive, behave for ``window_days``, go quiet.

    One simulator window is replayed pass after pass with fresh event and lead ids: the
    leads of a pass are new leads, as a brokerage gets every day, and those of earlier
    passes go idle (their keys expire after ``features.idle_expire_d``). Event time runs
    at simulator speed, ``window_days`` per pass, so every event-time window (48 h
    repeats, 30-day dedup horizon, the label horizon, the daily sweep) turns over many
    times during the soak. The passes are placed so that the ``events_total``-th event
    is at ``end_ts``: by default about a day before now (the validator refuses the
    future). Event time must not go backwards between workloads: a partition sweeps
    learning snapshots at each new event-time day, so events older than what it has
    seen would wait for the next new day (and then be settled all at once).
    """
    config = events_for_count(window_events, seed=seed, days=window_days, tenant=TENANT)
    window = list(generate(config))
    span = window_days * 86_400
    planned = int(events_total // max(1, len(window))) + 2
    end_ts = time.time() - 86_400 if end_ts is None else end_ts
    first = end_ts - planned * span  # where pass 0 starts
    origin = config.start_ts
    passes = 0
    while True:
        shift = first + passes * span - origin
        for ev in window:
            out = dict(ev)
            out["ts"] = round(ev["ts"] + shift, 3)
            out["event_id"] = f"{ev['event_id']}.{tag}{passes}"
            for field_name in ("lead_id", "visitor_id"):  # new leads every pass
                if field_name in out:
                    out[field_name] = f"{out[field_name]}.{tag}{passes}"
            yield out
        passes += 1


@dataclass
class Receiver:
    """A loopback webhook endpoint that counts what arrives (ids, duplicates)."""

    ids: set[str] = field(default_factory=set)
    received: int = 0
    duplicates: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> tuple[ThreadingHTTPServer, str]:
        outer = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                payload = json.loads(body)  # a re-alert is the same alert, a new delivery
                alert_id = str(payload.get("delivery_id") or payload.get("alert_id"))
                with outer.lock:
                    outer.received += 1
                    if alert_id in outer.ids:
                        outer.duplicates += 1
                    outer.ids.add(alert_id)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", free_port()), Hook)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}/hook"


def _config(
    path: Path, api_key: str, hook_url: str, ports: dict[str, int], window_min: float
) -> None:
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    window_d = window_min / 1_440
    path.write_text(
        f"""
[redis]
key_prefix = "{PREFIX}"
[streams]
partitions = {PARTITIONS}
alerts_maxlen = 5_000
retain_processed_s = {window_min * 60}
[features]
idle_expire_d = {window_d}
[metrics]
port = {ports["run"]}
[gateway]
rate_per_s = 100_000
rate_burst = 1_000_000
idempotency_window_h = {window_min / 60}
contact_hash_key = "{secrets.token_hex(24)}"
[gateway.api_keys]
"{digest}" = {{ tenant = "{TENANT}", role = "server" }}
[delivery]
metrics_port = {ports["deliver"]}
receipt_ttl_d = {window_d}
skip_older_than_s = 1e12
feed_maxlen = 2_000
[delivery.tenants.{TENANT}]
webhook_url = "{hook_url}"
secret = "{secrets.token_hex(16)}"
"""
    )


def _spawn(command: list[str], config: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": url}
    env.pop("LEADPULSE_CONFIG", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli", *command, "--config", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


class Sender:
    """Posts msgpack batches to the gateway; counts what it acknowledged."""

    def __init__(self, base: str, api_key: str, events: Iterator[dict[str, Any]], batch: int):
        self._http = httpx.Client(
            base_url=base,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/msgpack"},
            timeout=30,
        )
        self.events = events
        self._batch = batch
        self.sent = 0
        self.accepted = 0
        self.errors: dict[str, int] = {}

    def post(self, n: int) -> None:
        while n > 0:
            size = min(n, self._batch)
            batch = [next(self.events) for _ in range(size)]
            n -= size
            self.sent += size
            try:
                reply = self._http.post("/v1/events", content=msgpack.packb(batch))
            except httpx.HTTPError as exc:
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
                continue
            if reply.status_code >= 300:
                key = str(reply.status_code)
                self.errors[key] = self.errors.get(key, 0) + 1
                continue
            self.accepted += int(reply.json()["accepted"])

    def close(self) -> None:
        self._http.close()


def _committed(client: Any, names: StreamNames) -> int:
    raw = client.hmget(f"{{{PREFIX}}}:processed", [str(p) for p in range(PARTITIONS)])
    return sum(int(v or 0) for v in raw)


def _pending(client: Any, names: StreamNames) -> int:
    try:
        info = client.xpending(names.alerts, "delivery")
    except Exception:  # noqa: BLE001 (the group exists once deliver has started)
        return 0
    return int(info["pending"])


def memory_by_family(client: Any, sample: int = 200) -> dict[str, dict[str, int]]:
    """Keys and estimated bytes per key family (ids replaced by ``*``), largest first."""
    families: dict[str, list[bytes]] = {}
    counts: dict[str, int] = {}
    for key in client.scan_iter(count=5_000):
        text = key.decode(errors="replace")
        if "{" in text:
            family = re.sub(r"\{[^}]*\}", "{*}", text)
        else:
            parts = text.split(":")
            family = ":".join(parts[:3]) + (":*" if len(parts) > 3 else "")
        counts[family] = counts.get(family, 0) + 1
        keys = families.setdefault(family, [])
        if len(keys) < sample:
            keys.append(key)
    out = {}
    for family, keys in families.items():
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
        sizes = [int(v or 0) for v in pipe.execute()]
        out[family] = {
            "keys": counts[family],
            "bytes": int(statistics.fmean(sizes) * counts[family]),
        }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["bytes"]))


def _slope_per_10min(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 3 or len(set(xs)) < 2:
        return float("nan")
    return statistics.linear_regression(xs, ys).slope * 600


def analyse(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """Slope per 10 min and first-fifth -> last-fifth growth after warm-up, per series."""
    after = [s for s in samples if s["t"] >= warmup_s]
    out: dict[str, Any] = {"samples_after_warmup": len(after)}
    if len(after) < 5:
        return out
    fifth = max(1, len(after) // 5)
    for key in ("rss_run_kb", "rss_serve_kb", "rss_deliver_kb", "rss_redis_kb",
                "redis_used_kb", "lag", "pending"):  # fmt: skip
        xs = [s["t"] for s in after]
        ys = [float(s[key]) for s in after]
        first = statistics.fmean(ys[:fifth])
        last = statistics.fmean(ys[-fifth:])
        out[key] = {
            "first_fifth": round(first, 1),
            "last_fifth": round(last, 1),
            "growth_pct": round(100 * (last - first) / first, 1) if first else None,
            "slope_per_10min": round(_slope_per_10min(xs, ys), 1),
            "max": max(ys),
        }
    return out


def plot(samples: list[dict[str, Any]], warmup_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for key, label in (("rss_run_kb", "run"), ("rss_serve_kb", "serve"),
                       ("rss_deliver_kb", "deliver"), ("rss_redis_kb", "redis-server RSS"),
                       ("redis_used_kb", "Redis used_memory")):  # fmt: skip
        axes[0 if key.startswith("rss_") and key != "rss_redis_kb" else 1].plot(
            t, [s[key] / 1024 for s in samples], label=label
        )
    axes[0].set_ylabel("process RSS (MiB)")
    axes[1].set_ylabel("Redis (MiB)")
    axes[2].plot(t, [s["lag"] for s in samples], label="engine lag (entries)")
    axes[2].plot(t, [s["pending"] for s in samples], label="delivery pending (entries)")
    axes[2].set_ylabel("backlog")
    axes[2].set_xlabel("minutes")
    for ax in axes:
        ax.axvline(warmup_s / 60, color="grey", linestyle=":", linewidth=1)
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("leadpulse soak: serve -> run -> deliver at half of max load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    a = result["analysis"]
    lines = [
        "# Soak",
        "",
        f"`{result['command']}` — {result['minutes']} min at {result['rate']:.0f} events/s "
        f"({result['load']:.0%} of the calibrated maximum {result['max_rate']:.0f} events/s), "
        f"warm-up {result['warmup_min']} min. Machine: {result['machine']['nproc']} cores, "
        f"{result['machine']['cpu_model']}, load average at start "
        f"{result['machine']['loadavg_at_start']}, commit {result['machine']['commit']}.",
        "",
        f"Posted {result['sent']:,} events; the gateway accepted {result['accepted']:,}; "
        f"the engine committed {result['committed']:,}; {result['alerts']:,} alerts were "
        f"appended and {result['webhooks_received']:,} webhooks received "
        f"({result['webhook_duplicates']} duplicates by alert id). Errors: "
        f"{result['errors'] or 'none'}.",
        "",
        "| series (after warm-up) | first fifth | last fifth | growth | slope / 10 min | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    series = (
        ("rss_run_kb", "`run` RSS", "KiB"),
        ("rss_serve_kb", "`serve` RSS", "KiB"),
        ("rss_deliver_kb", "`deliver` RSS", "KiB"),
        ("rss_redis_kb", "redis-server RSS", "KiB"),
        ("redis_used_kb", "Redis used_memory", "KiB"),
        ("lag", "engine lag", "entries"),
        ("pending", "delivery pending", "entries"),
    )
    for key, label, unit in series:
        s = a.get(key)
        if not s:
            continue
        growth = "—" if s["growth_pct"] is None else f"{s['growth_pct']:+.1f} %"
        lines.append(
            f"| {label} ({unit}) | {s['first_fifth']:,.0f} | {s['last_fifth']:,.0f} | {growth} "
            f"| {s['slope_per_10min']:+,.0f} | {s['max']:,.0f} |"
        )
    lines += [
        "",
        "Redis memory at the end, by key family (estimated from up to 200 keys each):",
        "",
        "| key family | keys | MiB |",
        "|---|---:|---:|",
    ]
    for family, v in list(result["redis_memory_by_key_family"].items())[:12]:
        lines.append(f"| `{family}` | {v['keys']:,} | {v['bytes'] / 2**20:.1f} |")
    lines += ["", "![soak](soak.png)", ""]
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup-min", type=float, default=10.0)
    ap.add_argument("--load", type=float, default=0.5, help="fraction of the calibrated max")
    ap.add_argument("--rate", type=float, help="events/s (skips calibration)")
    ap.add_argument("--calibrate-events", type=int, default=30_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--window-events", type=int, default=100_000)
    ap.add_argument("--window-days", type=float, default=14.0)
    ap.add_argument(
        "--window-min",
        type=float,
        default=6.0,
        help="wall-clock windows (idempotency, receipts, idle keys) in minutes",
    )
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", default=str(RESULTS / "soak"))
    return ap.parse_args(argv)


@dataclass
class _Soak:
    """The live parts of one soak: Redis, the three processes, receiver and sender."""

    server: DedicatedServer
    client: Any
    names: StreamNames
    receiver: Receiver
    hook: ThreadingHTTPServer
    ports: dict[str, int]
    tmp: Path
    redis_pid: int
    procs: dict[str, subprocess.Popen[bytes]]
    machine: dict[str, Any]
    sender: Sender
    samples: list[dict[str, Any]] = field(default_factory=list)


def _start(args: argparse.Namespace) -> _Soak:
    """A private redis-server, the receiver, ``serve``, ``run`` and ``deliver`` spawned."""
    server = DedicatedServer()
    client: Any = server.client
    names = StreamNames(PREFIX, PARTITIONS)
    receiver = Receiver()
    hook, hook_url = receiver.start()
    ports = {"serve": free_port(), "run": free_port(), "deliver": free_port()}
    tmp = Path(tempfile.mkdtemp(prefix="leadpulse-soak-"))
    api_key = "lp_" + secrets.token_urlsafe(24)
    config = tmp / "soak.toml"
    _config(config, api_key, hook_url, ports, args.window_min)
    redis_pid = int(client.info("server")["process_id"])
    procs = {
        "run": _spawn(["run", "--redis-url", server.url], config, server.url, tmp / "run.log"),
        "serve": _spawn(
            ["serve", "--port", str(ports["serve"]), "--redis-url", server.url],
            config,
            server.url,
            tmp / "serve.log",
        ),  # fmt: skip
        "deliver": _spawn(
            ["deliver", "--redis-url", server.url], config, server.url, tmp / "deliver.log"
        ),  # fmt: skip
    }
    machine = machine_info(client, server.url, [("redis_kind", server.kind)])
    base = f"http://127.0.0.1:{ports['serve']}"
    # calibration first in event time too: four years back, well before the soak's passes
    warm = workload(args.window_events, args.window_days, args.seed, args.calibrate_events, "c",
                    end_ts=time.time() - 1_500 * 86_400)  # fmt: skip
    sender = Sender(base, api_key, warm, args.batch)
    return _Soak(server, client, names, receiver, hook, ports, tmp, redis_pid, procs, machine,
                 sender)  # fmt: skip


def _calibrate(soak: _Soak, args: argparse.Namespace) -> tuple[float, float]:
    """The soak rate and the measured maximum (NaN when ``--rate`` skips calibration)."""
    rate = args.rate
    max_rate = float("nan")
    if rate is None:
        plist = list(soak.procs.values())
        t0 = time.monotonic()
        soak.sender.post(args.calibrate_events)
        target = soak.sender.accepted
        while _committed(soak.client, soak.names) < target:
            if time.monotonic() - t0 > 600 or any(p.poll() is not None for p in plist):
                raise RuntimeError("calibration did not drain")
            time.sleep(0.02)
        max_rate = target / (time.monotonic() - t0)
        rate = args.load * max_rate
        print(f"calibrated max {max_rate:.0f} events/s -> soak at {rate:.0f}", flush=True)
    return rate, max_rate


def _sample(soak: _Soak, now: float, posted: int) -> dict[str, Any]:
    """RSS of each process and of redis-server, Redis memory, lag, pending, counters."""
    client, procs = soak.client, soak.procs
    lag = sum(stream_lag(client, soak.names, range(PARTITIONS)).values())
    mem = client.info("memory")
    return {
        "t": round(now, 1),
        "rss_run_kb": rss_kb(procs["run"].pid),
        "rss_serve_kb": rss_kb(procs["serve"].pid),
        "rss_deliver_kb": rss_kb(procs["deliver"].pid),
        "rss_redis_kb": rss_kb(soak.redis_pid),
        "redis_used_kb": int(mem["used_memory"]) // 1024,
        "lag": lag,
        "pending": _pending(client, soak.names),
        "posted": posted,
        "webhooks": soak.receiver.received,
    }


def _soak(soak: _Soak, args: argparse.Namespace, rate: float) -> None:
    """Post open loop at ``rate`` for ``--minutes``, sampling every ``--sample-s``."""
    plist = list(soak.procs.values())
    start = time.monotonic()
    duration = args.minutes * 60
    posted = 0
    next_sample = 0.0
    while (now := time.monotonic() - start) < duration:
        due = int(now * rate) - posted
        if due >= args.batch:
            soak.sender.post(due)
            posted += due
        if now >= next_sample:
            sample = _sample(soak, now, posted)
            soak.samples.append(sample)
            next_sample += args.sample_s
            if len(soak.samples) % 12 == 1:
                print(json.dumps(sample), flush=True)
            if any(p.poll() is not None for p in plist):
                raise RuntimeError("a process died; see " + str(soak.tmp))
        time.sleep(0.01)


def _drain(soak: _Soak) -> tuple[int, int, dict[str, dict[str, int]]]:
    """Committed events, alerts and Redis memory by key family once drained."""
    client, names = soak.client, soak.names
    # drain: everything accepted is committed, everything appended delivered
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if _committed(client, names) >= soak.sender.accepted + 0 and _pending(client, names) == 0:
            break
        time.sleep(0.2)
    committed = _committed(client, names)
    alerts = int(client.xinfo_stream(names.alerts)["entries-added"])
    families = memory_by_family(client)
    time.sleep(2)
    return committed, alerts, families


def _stop(soak: _Soak) -> None:
    soak.sender.close()
    for p in soak.procs.values():
        p.send_signal(signal.SIGTERM)
    for p in soak.procs.values():
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
    soak.hook.shutdown()
    soak.server.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    soak = _start(args)
    try:
        plist = list(soak.procs.values())
        wait_http(f"http://127.0.0.1:{soak.ports['serve']}/healthz", plist)
        wait_http(f"http://127.0.0.1:{soak.ports['run']}/metrics", plist)
        wait_http(f"http://127.0.0.1:{soak.ports['deliver']}/metrics", plist)
        rate, max_rate = _calibrate(soak, args)
        total = rate * args.minutes * 60
        soak.sender.events = workload(args.window_events, args.window_days, args.seed, total, "s")
        _soak(soak, args, rate)
        committed, alerts, families = _drain(soak)
    finally:
        _stop(soak)

    warmup_s = args.warmup_min * 60
    sender, receiver, samples = soak.sender, soak.receiver, soak.samples
    result = {
        "command": "python -m benchmarks.soak "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "minutes": args.minutes,
        "warmup_min": args.warmup_min,
        "load": args.load if args.rate is None else float("nan"),
        "max_rate": max_rate,
        "rate": rate,
        "window_min": args.window_min,
        "sent": sender.sent,
        "accepted": sender.accepted,
        "committed": committed,
        "alerts": alerts,
        "webhooks_received": receiver.received,
        "webhook_duplicates": receiver.duplicates,
        "errors": sender.errors,
        "analysis": analyse(samples, warmup_s),
        "redis_memory_by_key_family": families,
        "machine": soak.machine,
        "samples": samples,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    plot(samples, warmup_s, out.with_suffix(".png"))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
