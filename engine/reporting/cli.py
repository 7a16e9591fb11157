"""``leadpulse report``: the week's numbers, from the per-day counters (never a scan).

``leadpulse report [--tenant T] [--since DATE] [--until DATE] [--out DIR]`` reads the
period's day hashes in one round trip, prints the markdown report, and writes
``report.md``, ``report.json`` and PNG plots to ``--out`` (default ``./report``).
Without ``--tenant`` it reports the only tenant there is (several: it names them).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path
from typing import Any

from engine.errors import LeadpulseError
from engine.keys import StreamNames
from engine.redis_client import connect, redis_for
from engine.reporting.figures import MIN_N, Report, compute, read_counts, weekly
from engine.reporting.keys import tenants_key
from engine.reporting.render import markdown, plots
from engine.settings import load_settings
from engine.shards import report_prefixes
from engine.streams import stream_names
from engine.up import add_data_dir

__all__ = ["add_parser", "build_report", "known_tenants", "parse_period", "run"]

MAX_DAYS = 800


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="the week's numbers: speed to lead, contact, appointments, conversion by "
        "bucket, source and agent, SLA misses, opt-outs, model quality",
        description="Brokerage report from the per-day counters the engine keeps as events "
        "flow (REDIS_URL, else the data dir's embedded server). Dates are the tenant's "
        f"local days, YYYY-MM-DD; the default period is the last 7 days. Rates over fewer "
        f"than {MIN_N} leads say 'too few' instead of a number.",
    )
    p.add_argument("--tenant", default="", help="tenant (default: the only one there is)")
    p.add_argument("--since", default="", help="first day, YYYY-MM-DD (default: until - 6)")
    p.add_argument("--until", default="", help="last day, YYYY-MM-DD (default: today)")
    p.add_argument("--out", default="report", help="directory for report.md/.json and PNGs")
    p.add_argument("--no-plots", action="store_true", help="markdown and JSON only")
    p.add_argument("--config", help="TOML file overriding config/default.toml")
    p.add_argument("--redis-url", default="", help="overrides REDIS_URL")
    add_data_dir(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise LeadpulseError(f"{name} {text!r} is not a date (YYYY-MM-DD)") from None


def parse_period(since: str, until: str, today: date, dash: str = "--") -> tuple[date, date]:
    """The period asked for (one clear error for a bad or backwards one)."""
    end = _day(until, f"{dash}until") if until else today
    try:
        start = _day(since, f"{dash}since") if since else weekly(end)[0]
    except OverflowError:
        raise LeadpulseError(f"{dash}until {end} leaves no week before it") from None
    if start > end:
        raise LeadpulseError(f"{dash}since {start} is after {dash}until {end}")
    if (end - start).days >= MAX_DAYS:
        raise LeadpulseError(f"the period is {(end - start).days + 1} days; at most {MAX_DAYS}")
    return start, end


def known_tenants(client: Any, names: StreamNames | str) -> list[str]:
    """Tenants with report data: the union of the report prefixes' tenant sets (one round
    trip; ``names`` as :func:`read_counts` takes it)."""
    prefixes = report_prefixes(names) if isinstance(names, StreamNames) else [names]
    pipe = client.pipeline(transaction=False)
    for prefix in prefixes:
        pipe.smembers(tenants_key(prefix))
    return sorted({_s(t) for found in pipe.execute() for t in found})


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _tenant(client: Any, names: StreamNames, asked: str) -> str:
    if asked:
        return asked
    known = known_tenants(client, names)
    if len(known) == 1:
        return known[0]
    if not known:
        raise LeadpulseError("no tenant has report data yet (has the engine run?)")
    raise LeadpulseError(f"several tenants have report data; pick one with --tenant: {known}")


def build_report(
    client: Any, names: StreamNames | str, tenant: str, since: date, until: date
) -> Report:
    """The period's report of ``tenant`` (``names`` as :func:`read_counts` takes it)."""
    counts, days = read_counts(client, names, tenant, since, until)
    return compute(counts, tenant, since, until, days)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    since, until = parse_period(args.since, args.until, date.today())
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LeadpulseError(f"cannot write to {out}: {exc.strerror or exc}") from None
    url, local = redis_for(args.redis_url or settings.redis_url(), args.data_dir, create=False)
    try:
        client = connect(url, settings.redis.retries)
        started = time.perf_counter()
        names = stream_names(settings)  # the key layout: which shards hold the counters
        tenant = _tenant(client, names, args.tenant)
        report = build_report(client, names, tenant, since, until)
        took = time.perf_counter() - started
    finally:
        if local is not None:
            local.release()
    text = markdown(report)
    try:
        (out / "report.md").write_text(text)
        (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    except OSError as exc:
        raise LeadpulseError(f"cannot write to {out}: {exc.strerror or exc}") from None
    print(text)
    drawn = [] if args.no_plots else plots(report, out)
    if isinstance(drawn, str):
        print(drawn)
    else:
        print(f"wrote {out / 'report.md'}, report.json and {len(drawn)} plots in {took:.2f} s")
    return 0
