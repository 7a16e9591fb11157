"""Benchmark: ``leadpulse report`` over a month of simulator traffic for 10,000 leads.

``python -m engine.reporting.bench [--leads 10000] [--days 30] [--redis-url URL]
[--out benchmarks/results]``: the simulator's month goes through the real engine
(bounded dataflow, one partition, a fresh key prefix deleted afterwards); then

- ``report_cli_s``: ``leadpulse report`` as a user runs it (a new process: start-up,
  one round trip for the month's day hashes, figures, markdown, JSON, PNG plots);
- ``build_s``: reading and computing the figures in process (what the API does);
- ``engine_overhead``: the engine's events/s with and without the reporting counters
  on the first ``--overhead-leads`` leads (interleaved, same server), since the
  counters ride in every batch's transaction.

Writes ``report_bench.json`` and ``report_bench.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgpack

from engine.keys import every_pattern
from features.record import unpack_record

TARGET_S = 2.0


def _run_engine(client: Any, prefix: str, events: list[dict[str, Any]], counters: bool) -> float:
    """Events through the bounded dataflow; seconds for the run (engine start-up included)."""
    import engine.processor as processor
    from benchmarks.fault_crash import load
    from engine.app import build_parts
    from engine.dataflow import build_flow, run_flow
    from engine.settings import load_settings

    load(client, prefix, events)
    settings = load_settings(
        overrides={"redis": {"key_prefix": prefix}, "streams": {"partitions": 1}}, environ={}
    )
    real = processor.report_batch
    if not counters:
        processor.report_batch = lambda *a: None  # type: ignore[assignment]
    try:
        parts = build_parts(settings, client)
        started = time.perf_counter()
        run_flow(build_flow(parts, bounded=True))
        return time.perf_counter() - started
    finally:
        processor.report_batch = real


def _drop(client: Any, prefix: str) -> None:
    keys = list(client.scan_iter(match=every_pattern(prefix), count=2000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])


def _period(events: list[dict[str, Any]]) -> tuple[date, date]:
    tz = ZoneInfo("America/New_York")
    first = datetime.fromtimestamp(events[0]["ts"], tz).date()
    last = datetime.fromtimestamp(events[-1]["ts"], tz).date()
    return first, max(last, first + timedelta(days=29))


def _cli(url: str, prefix: str, since: date, until: date, out: Path, *extra: str) -> float:
    env = {**os.environ, "LEADPULSE__REDIS__KEY_PREFIX": prefix, "REDIS_URL": url}
    cmd = [sys.executable, "-m", "engine.cli", "report", "--tenant", "sim", "--since",
           since.isoformat(), "--until", until.isoformat(), "--out", str(out), *extra]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _marks_bytes(client: Any, prefix: str) -> int:
    """Bytes of the report marks in the lead records (``features/record.py``, schema 2)."""
    total = 0
    for key in client.scan_iter(match=every_pattern(prefix, "{*}:f"), count=1000):
        blob = client.get(key)
        try:
            _, rest = unpack_record(blob) if blob is not None else (None, None)
        except ValueError:
            continue
        if rest is not None and rest.marks is not None:
            total += len(msgpack.packb(rest.marks, use_bin_type=True))
    return total


def _overhead(client: Any, events: list[dict[str, Any]], rounds: int = 2) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(rounds):
        for mode in ("without", "with"):
            p = "rb" + uuid.uuid4().hex[:8]
            try:
                rates[mode].append(len(events) / _run_engine(client, p, events, mode == "with"))
            finally:
                _drop(client, p)
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    return {
        "events": len(events),
        "events_per_s_without": round(med["without"]),
        "events_per_s_with": round(med["with"]),
        "slowdown_pct": round(100 * (1 - med["with"] / med["without"]), 1),
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leads", type=int, default=10_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--overhead-leads", type=int, default=1_000)
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    from benchmarks.simulator import SimConfig, generate
    from engine.redis_client import connect
    from engine.reporting.cli import build_report

    client: Any = connect(args.redis_url)
    events = list(generate(SimConfig(seed=7, leads=args.leads, days=args.days, tenant="sim")))
    prefix = "rb" + uuid.uuid4().hex[:8]
    out = Path(args.out)
    try:
        engine_s = _run_engine(client, prefix, events, counters=True)
        since, until = _period(events)
        cli_s = [_cli(args.redis_url, prefix, since, until, out / "report") for _ in range(3)]
        bare = [_cli(args.redis_url, prefix, since, until, out / "report", "--no-plots")
                for _ in range(3)]  # fmt: skip
        builds = []
        for _ in range(5):
            started = time.perf_counter()
            report = build_report(client, prefix, "sim", since, until)
            builds.append(time.perf_counter() - started)
        fields = sum(
            int(client.hlen(k)) for k in client.scan_iter(match=every_pattern(prefix, "rpt:sim:*"))
        )
        marks_bytes = _marks_bytes(client, prefix)
    finally:
        _drop(client, prefix)
    small = [e for e in events if int(str(e.get("lead_id", "L0"))[1:] or 0) <= args.overhead_leads]
    result = {
        "leads": args.leads, "days": args.days, "events": len(events),
        "period": [since.isoformat(), until.isoformat()],
        "engine_run_s": round(engine_s, 1),
        "report_cli_s": [round(s, 3) for s in cli_s],
        "report_cli_median_s": round(sorted(cli_s)[1], 3),
        "report_cli_no_plots_median_s": round(sorted(bare)[1], 3),
        "build_s_median": round(sorted(builds)[2], 4),
        "target_s": TARGET_S, "within_target": sorted(cli_s)[1] < TARGET_S,
        "day_fields": fields, "lead_marks_bytes_per_lead": round(marks_bytes / args.leads),
        "report_leads": report.total.leads,
        "engine_overhead": _overhead(client, small) if args.overhead_leads else None,
        "load_avg": os.getloadavg(),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "report_bench.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
