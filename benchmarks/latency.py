"""Event -> alert latency of a live ``leadpulse run`` under a fixed open-loop load.

For each offered load a fresh engine process (one worker, fresh key prefix) starts;
the benchmark sends seeded simulator events straight to the streams on a fixed
schedule (:func:`benchmarks.simulator.open_loop`: events go out on time whether or
not the engine keeps up), waits until everything sent is committed, then reads

- every alert's ``emit_ms - ingest_ms`` from the alerts stream (``ingest_ms`` is the
  millisecond part of the event's stream id, given by Redis on XADD; ``emit_ms`` is
  the engine's clock just before the batch's commit) into an HdrHistogram, and
- the engine's own ``leadpulse_event_to_alert_seconds`` histogram from ``/metrics``
  as a cross-check (its quantiles are interpolated inside Prometheus buckets).

A/B in one sitting (``python -m benchmarks.latency --arm old=PATH --arm new=PATH``):
each arm is a checkout (a git worktree) whose engine code ``leadpulse run`` runs; the
arms' 1-worker maxima are measured first, then every round runs the latency level of
every arm at the same offered rate, in A B / B A order, so drift in the machine's load
falls on both arms alike. Written to ``--out`` (JSON) and printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import msgpack
import redis
from hdrh.histogram import HdrHistogram

from benchmarks.harness import (
    PARTITIONS,
    DedicatedServer,
    Loaded,
    Workload,
    delete_prefix,
    free_port,
    machine_info,
    new_prefix,
)
from benchmarks.simulator import open_loop
from benchmarks.throughput import EngineProcesses, engine_env, engine_file, measure_drain
from engine.streams import StreamNames

__all__ = ["compare_arms", "main", "measure_latency", "prometheus_histogram", "histogram_quantile"]

_METRIC = "leadpulse_event_to_alert_seconds"


def prometheus_histogram(text: str, name: str) -> dict[str, float]:
    """Cumulative buckets (``le`` -> count) plus ``count`` and ``sum`` of one histogram."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[le] = float(line.rsplit(" ", 1)[1])
        elif line.startswith((f"{name}_count ", f"{name}_sum ")):
            key, value = line.rsplit(" ", 1)
            out[key[len(name) + 1 :]] = float(value)
    return out


def histogram_quantile(hist: dict[str, float], q: float) -> float | None:
    """Prometheus ``histogram_quantile``: linear interpolation inside the bucket."""
    total = hist.get("count", 0.0)
    if not total:
        return None
    buckets = sorted(
        ((float(k), v) for k, v in hist.items() if k not in ("count", "sum")),
        key=lambda kv: kv[0],
    )
    rank = q * total
    lo_edge, lo_count = 0.0, 0.0
    for edge, count in buckets:
        if count >= rank:
            if edge == float("inf"):
                return lo_edge
            span = count - lo_count
            return lo_edge + (edge - lo_edge) * ((rank - lo_count) / span if span else 1.0)
        lo_edge, lo_count = edge, count
    return lo_edge


def _wait_metrics(port: int, engine: EngineProcesses, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
            return
        except OSError:
            engine.check()
            if time.monotonic() > deadline:
                raise RuntimeError("leadpulse run did not serve /metrics in time") from None
            time.sleep(0.05)


def _alert_latencies(client: redis.Redis, names: StreamNames) -> list[int]:
    out: list[int] = []
    last = "-"
    while True:
        rows = cast(list[Any], client.xrange(names.alerts, min=last, max="+", count=10_000))
        if last != "-":
            rows = rows[1:]
        if not rows:
            return out
        for _sid, fields in rows:
            alert = msgpack.unpackb(fields[b"a"], raw=False)
            out.append(int(alert["emit_ms"]) - int(alert["ingest_ms"]))
        last = rows[-1][0].decode()


def measure_latency(
    client: redis.Redis,
    url: str,
    work: Workload,
    rate: float,
    seconds: float,
    progress: Callable[[int, int], object] | None = None,
    cwd: str | None = None,
) -> dict[str, Any]:
    """Offer ``rate`` events/s for ``seconds`` to a fresh ``leadpulse run`` (the code of
    checkout ``cwd`` if given); latencies, and the engine's CPU from the first event
    sent to the last one committed."""
    n = min(len(work), max(1, int(rate * seconds)))
    prefix = new_prefix("lt")
    names = StreamNames(prefix, PARTITIONS)
    port = free_port()
    loaded = Loaded(names)
    try:
        with EngineProcesses(engine_env(url, prefix, metrics_port=port), cwd=cwd) as engine:
            _wait_metrics(port, engine)
            cpu_at_start = engine.cpu_seconds()

            def send(chunk: Sequence[int]) -> None:
                loaded.append(client, work, chunk[0], chunk[-1] + 1)

            stats = open_loop(
                range(n), rate, send, on_progress=(lambda k: progress(k, n)) if progress else None
            )
            lag_at_end = n - loaded.committed(client)
            drain_s = _drain(client, loaded, engine, n, max(30.0, 3 * seconds), rate)
            cpu_s = engine.cpu_seconds() - cpu_at_start
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        lat = _alert_latencies(client, names)
        return {
            "offered_per_s": round(rate, 1),
            "events": n,
            "sent_per_s": round(stats.achieved_rate, 1),
            "producer_max_behind_ms": round(1000 * stats.max_behind_s, 1),
            "lag_events_at_end_of_send": lag_at_end,
            "drain_after_send_s": round(drain_s, 2),
            "engine_cpu_s": round(cpu_s, 2),
            "engine_cpu_us_per_event": round(1e6 * cpu_s / n, 1),
            "alerts": len(lat),
            "latency_ms": _percentiles(lat),
            **_engine_side(text.decode(), len(lat)),
        }
    finally:
        delete_prefix(client, prefix)


def _drain(
    client: redis.Redis,
    loaded: Loaded,
    engine: EngineProcesses,
    n: int,
    limit_s: float,
    rate: float,
) -> float:
    """Wait until the engine has committed all ``n`` events; the seconds it took."""
    drained_at = time.perf_counter()
    deadline = drained_at + limit_s
    while loaded.committed(client) < n:
        engine.check()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"engine did not catch up at {rate:.0f} events/s")
        time.sleep(0.01)
    return time.perf_counter() - drained_at


def _percentiles(lat: Sequence[int]) -> dict[str, Any]:
    """Event -> alert latencies (ms) through an HDR histogram: p50/p95/p99/max/mean."""
    hdr = HdrHistogram(1, 3_600_000, 3)
    for v in lat:
        hdr.record_value(max(0, v))
    return {
        "p50": hdr.get_value_at_percentile(50) if lat else None,
        "p95": hdr.get_value_at_percentile(95) if lat else None,
        "p99": hdr.get_value_at_percentile(99) if lat else None,
        "max": hdr.get_max_value() if lat else None,
        "mean": round(hdr.get_mean_value(), 2) if lat else None,
    }


def _engine_side(text: str, alerts: int) -> dict[str, Any]:
    """What the engine's own metrics say: its alert-latency histogram and batch times."""
    prom = prometheus_histogram(text, _METRIC)
    batches = prometheus_histogram(text, "leadpulse_batch_seconds")
    slow = {le: batches.get("count", 0.0) - batches[le] for le in ("0.1", "0.25") if le in batches}
    count = prom.get("count", 0.0)

    def prom_ms(q: float) -> float | None:
        value = histogram_quantile(prom, q)
        return None if value is None else round(1000 * value, 2)

    batch_p99 = histogram_quantile(batches, 0.99)
    return {
        "engine_histogram": {
            "count": count,
            "mean_ms": round(1000 * prom["sum"] / count, 2) if count else None,
            "p50_ms": prom_ms(0.50),
            "p95_ms": prom_ms(0.95),
            "p99_ms": prom_ms(0.99),
            "agrees_on_count": int(count) == alerts,
        },
        "engine_batches": {
            "count": batches.get("count"),
            "p99_ms": None if batch_p99 is None else round(1000 * batch_p99, 1),
            "over_100ms": slow.get("0.1"),
            "over_250ms": slow.get("0.25"),
        },
    }


def _arms(specs: Sequence[str]) -> dict[str, str]:
    """``NAME=PATH`` pairs, each PATH checked to be where its engine imports from."""
    arms: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--arm wants NAME=PATH, got {spec!r}")
        tree = str(Path(path).resolve())
        found = engine_file(engine_env("", "x"), tree)
        if not found.startswith(tree + os.sep):
            raise SystemExit(f"arm {name}: engine imports from {found}, not from {tree}")
        arms[name] = tree
    return arms


def compare_arms(
    client: redis.Redis,
    url: str,
    arms: dict[str, str],
    *,
    load: float,
    seconds: float,
    rounds: int,
    max_rate: float | None,
    rate_from: str,
    drain_events: int,
) -> dict[str, Any]:
    """The A/B run: maxima (unless ``max_rate``), then ``rounds`` of every arm's level."""
    names = list(arms)
    maxima: dict[str, list[float]] = {a: [] for a in names}
    if max_rate is None:
        work = Workload.build(drain_events)
        for r in range(rounds):
            for arm in names if r % 2 == 0 else names[::-1]:
                drain = measure_drain(client, url, work, 1, 1, cwd=arms[arm])
                maxima[arm].append(round(drain.events_per_s, 1))
                print(f"max {arm}: {drain.events_per_s:,.0f} events/s", flush=True)
        max_rate = statistics.median(maxima[rate_from])
    rate = load * max_rate
    work = Workload.build(int(rate * seconds) + 1)
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        for arm in names if r % 2 == 0 else names[::-1]:
            row = measure_latency(client, url, work, rate, seconds, cwd=arms[arm])
            runs.append({"arm": arm, "round": r, **row, "loadavg_1m_after": os.getloadavg()[0]})
            lat, cpu = row["latency_ms"], row["engine_cpu_us_per_event"]
            print(f"{arm} round {r}: p50/p95/p99 {lat['p50']}/{lat['p95']}/{lat['p99']} ms, "
                  f"{cpu} us CPU/event", flush=True)  # fmt: skip
    summary = {arm: _summary([x for x in runs if x["arm"] == arm]) for arm in names}
    commits = {arm: _tree_commit(tree) for arm, tree in arms.items()}
    return {"arms": arms, "arm_commits": commits, "load": load,
            "max_events_per_s": max_rate, "max_from": rate_from,
            "maxima_events_per_s": maxima, "offered_per_s": round(rate, 1),
            "seconds_per_run": seconds, "rounds": rounds, "runs": runs,
            "summary": summary}  # fmt: skip


def _tree_commit(tree: str) -> str:
    """``git describe --always --dirty`` of an arm's checkout: the code it measured."""
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=tree, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.stdout.strip() or "unknown"


def _summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians over one arm's runs (a run without alerts has no latencies)."""

    def med(get: Callable[[dict[str, Any]], float | None]) -> float | None:
        values = [v for v in map(get, runs) if v is not None]
        return round(statistics.median(values), 2) if values else None

    return {
        "p50_ms": med(lambda x: x["latency_ms"]["p50"]),
        "p95_ms": med(lambda x: x["latency_ms"]["p95"]),
        "p99_ms": med(lambda x: x["latency_ms"]["p99"]),
        "max_ms": med(lambda x: x["latency_ms"]["max"]),
        "engine_cpu_us_per_event": med(lambda x: x["engine_cpu_us_per_event"]),
        "p99_each_run_ms": [x["latency_ms"]["p99"] for x in runs],
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="event -> alert latency, A/B over code trees")
    ap.add_argument("--arm", action="append", required=True, metavar="NAME=PATH",
                    help="a checkout to run the engine from (repeat: one per arm)")  # fmt: skip
    ap.add_argument("--load", type=float, default=0.5, help="fraction of the 1-worker maximum")
    ap.add_argument("--max-rate", type=float, help="events/s taken as the maximum (else measured)")
    ap.add_argument("--rate-from", help="the arm whose measured maximum sets the rate (last)")
    ap.add_argument("--drain-events", type=int, default=30_000, help="backlog of a max run")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of traffic per run")
    ap.add_argument("--rounds", type=int, default=2, help="rounds (A B, then B A, ...)")
    ap.add_argument("--redis-url", help="default: a private redis-server on a free port")
    ap.add_argument("--out", type=Path, help="JSON result")
    args = ap.parse_args(argv)
    arms = _arms(args.arm)
    rate_from = args.rate_from or list(arms)[-1]
    if rate_from not in arms:
        raise SystemExit(f"--rate-from {rate_from}: no such arm")
    server = None if args.redis_url else DedicatedServer()
    url = args.redis_url or server.url  # type: ignore[union-attr]
    client = redis.Redis.from_url(url, socket_timeout=60)
    try:
        ab = compare_arms(
            client, url, arms, load=args.load, seconds=args.seconds, rounds=args.rounds,
            max_rate=args.max_rate, rate_from=rate_from, drain_events=args.drain_events,
        )  # fmt: skip
        result = {"machine": machine_info(client, url), **ab}
    finally:
        client.close()
        if server is not None:
            server.stop()
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
