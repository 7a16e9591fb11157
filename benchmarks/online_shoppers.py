"""The Online Shoppers Purchasing Intention data as contract-v1 events: sessions as leads.

``benchmarks/data/online_shoppers/`` (README there: provenance, columns, licence CC BY
4.0) holds 12,330 real web sessions of an online retailer over one year, 1,908 of which
ended in a purchase (``Revenue``). Each row summarises one session as a page tracker
records it; it stands in for an IDX visitor in the quality benchmark
(``benchmarks/quality.py``):

- every row is a lead (``lead_id`` = ``os<row>``, tenant ``shoppers``), created with a
  ``lead_created`` at the session's start carrying ``props.traffic`` (``t`` + the
  ``TrafficType`` code) and ``props.visitor`` (``VisitorType``), which the benchmark's
  config (``leadpulse.toml`` there) declares as profile fields (``features.profile``);
- ``Administrative`` and ``Informational`` pages are ``page_view`` events,
  ``ProductRelated`` pages are ``property_view`` events, each with its own property id;
  every page's ``dwell_s`` is its kind's duration divided by its kind's count, and the
  pages follow each other in that rhythm (the kinds interleaved evenly: the data give
  counts, not the order);
- a purchase is an ``appointment_set`` one second after the last page; a session
  without one ends in ``lost`` (or, with ``lost=False``, in no outcome at all, so the
  engine's horizon expiry labels it);
- a dummy lead's ``page_view`` ``FLUSH_AFTER_D`` days after the last event moves event
  time past the label horizon, so the daily sweep labels what is still open at the end
  (an engine that emits labelled examples when the horizon passes needs it for the last
  month); its own examples are not part of any comparison;
- event time: the file names months only (Feb-Dec, no January or April). Each month
  is placed in ``YEAR`` and its sessions, in file order, are spread evenly over it, so
  sessions are ordered in time and the benchmark can split forward by month.

Not sent: ``BounceRates`` and ``ExitRates`` (averages the analytics tool computes over
every visitor of the pages), ``SpecialDay`` and ``Weekend`` (the synthetic dates would
contradict them), ``OperatingSystems`` and ``Browser`` (device fingerprints, not
intent) and ``Region`` (a location: a fair-housing proxy the engine must never see).

``PageValues`` **leaks the outcome**: it is the average value of the pages visited
before a *completed transaction*, computed by the analytics tool after the fact, so
it is non-zero almost only for buying sessions. ``page_values=True`` adds it, binned,
as ``props.page_value`` on ``lead_created`` (``PAGE_VALUE_BINS``) for a diagnostic
run only; no tracker could know it while the visitor is still browsing.

Run ``python -m benchmarks.online_shoppers --out shoppers.jsonl [--page-values]
[--no-lost] [--every N]`` to write the events; ``leadpulse backtest shoppers.jsonl
--config benchmarks/data/online_shoppers/leadpulse.toml`` judges the score on them.
"""

from __future__ import annotations

import argparse
import calendar
import csv
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_FILE",
    "DATA_DIR",
    "FLUSH_AFTER_D",
    "FLUSH_LEAD",
    "MONTHS",
    "PAGE_VALUE_BINS",
    "ShopperEvents",
    "load",
    "main",
    "month_start",
    "session_events",
]

#: A copy of the UCI file ships with its README (provenance, licence) so a fresh clone can
#: run the benchmark and its tests (override: LEADPULSE_ONLINE_SHOPPERS).
DATA_DIR = Path(
    os.environ.get("LEADPULSE_ONLINE_SHOPPERS")
    or Path(__file__).resolve().parent / "data" / "online_shoppers"
)
CSV_FILE = "online_shoppers_intention.csv"
CONFIG_FILE = DATA_DIR / "leadpulse.toml"  # features.profile: props.traffic, props.visitor
TENANT = "shoppers"
YEAR = 2013  # the data's year is not stated; any non-leap year gives the same event times
FLUSH_LEAD = "flush-expiry"
FLUSH_AFTER_D = 40.0  # label horizon 30 d + margin
DAY = 86_400.0
#: The file's month names -> month number.
MONTHS = {"Feb": 2, "Mar": 3, "Apr": 4, "May": 5, "June": 6, "Jul": 7, "Aug": 8,
          "Sep": 9, "Oct": 10, "Nov": 11, "Dec": 12, "Jan": 1}  # fmt: skip
#: ``props.page_value`` (leaky diagnostic only): upper bounds of the bins, then "50+".
PAGE_VALUE_BINS = ((0.0, "0"), (10.0, "0-10"), (50.0, "10-50"))
KINDS = (  # column, event type, page label
    ("Administrative", "page_view", "administrative"),
    ("Informational", "page_view", "informational"),
    ("ProductRelated", "property_view", "product"),
)


@dataclass(frozen=True)
class ShopperEvents:
    """Contract-v1 events of the sessions, and what went into them."""

    events: list[dict[str, Any]]
    sessions: int
    purchases: int
    pages: int
    first_ts: float
    last_ts: float  # the last real event (a page or an outcome)
    by_month: dict[str, int]
    page_values: bool
    lost: bool

    def summary(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "purchases": self.purchases,
            "pages": self.pages,
            "events": len(self.events),
            "first": _iso(self.first_ts),
            "last": _iso(self.last_ts),
            "sessions_by_month": self.by_month,
            "page_values": self.page_values,
            "non_purchase_outcome": "lost" if self.lost else "none (horizon expiry)",
        }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def month_start(month: str, year: int = YEAR) -> tuple[float, float]:
    """(start, length in seconds) of a month named as in the file."""
    number = MONTHS[month]
    start = datetime(year, number, 1, tzinfo=UTC).timestamp()
    return start, calendar.monthrange(year, number)[1] * DAY


def _number(row: dict[str, str], column: str) -> float:
    try:
        return max(0.0, float(row[column]))
    except (KeyError, ValueError):
        return 0.0


def _page_value_bin(value: float) -> str:
    for upper, name in PAGE_VALUE_BINS:
        if value <= upper:
            return name
    return "50+"


def _pages(row: dict[str, str]) -> list[tuple[str, str, float]]:
    """(event type, page label, dwell) of every page, the kinds interleaved evenly."""
    keyed = []
    for order, (column, etype, label) in enumerate(KINDS):
        count = int(_number(row, column))
        dwell = _number(row, f"{column}_Duration") / count if count else 0.0
        for j in range(count):
            keyed.append(((j + 0.5) / count, order, (etype, label, round(dwell, 3))))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [k[2] for k in keyed]


def session_events(
    row: dict[str, str], index: int, start: float, page_values: bool = False, lost: bool = True
) -> list[dict[str, Any]]:
    """Every event of one session (row ``index`` of the file), the first at ``start``."""
    lead = f"os{index:05d}"
    base = {"lead_id": lead, "tenant": TENANT}
    props = {"traffic": f"t{row['TrafficType']}", "visitor": row["VisitorType"]}
    if page_values:
        props["page_value"] = _page_value_bin(_number(row, "PageValues"))
    events = [{"event_id": f"{lead}-0", **base, "type": "lead_created", "ts": round(start, 3),
               "channel": "web", "props": props}]  # fmt: skip
    t = start + 1.0
    for k, (etype, label, dwell) in enumerate(_pages(row), start=1):
        event = {"event_id": f"{lead}-{k}", **base, "type": etype, "ts": round(t, 3),
                 "dwell_s": dwell, "props": {"page": label}}  # fmt: skip
        if etype == "property_view":
            event["property_id"] = f"{lead}-p{k}"
        events.append(event)
        t += max(dwell, 1.0)
    bought = row["Revenue"].strip().upper() in ("YES", "TRUE", "1")
    if bought or lost:
        outcome = "appointment_set" if bought else "lost"
        events.append({"event_id": f"{lead}-o", **base, "type": outcome, "ts": round(t, 3)})
    return events


def read_rows(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, str]]:
    root = Path(data_dir) if data_dir is not None else DATA_DIR
    with open(root / CSV_FILE, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load(
    data_dir: str | os.PathLike[str] | None = None,
    every: int = 1,
    page_values: bool = False,
    lost: bool = True,
) -> ShopperEvents:
    """Every ``every``-th session as events, sorted by event time (ties: session, order)."""
    rows = read_rows(data_dir)
    chosen = [(i, row) for i, row in enumerate(rows) if i % every == 0]
    if not chosen:
        raise ValueError("no sessions chosen")
    by_month: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
    for i, row in chosen:
        by_month[row["Month"]].append((i, row))
    keyed: list[tuple[float, int, int, dict[str, Any]]] = []
    for month, sessions in by_month.items():
        start, span = month_start(month)
        for k, (i, row) in enumerate(sessions):  # file order within the month
            first = start + (k + 0.5) * span / len(sessions)
            for seq, event in enumerate(session_events(row, i, first, page_values, lost)):
                keyed.append((event["ts"], i, seq, event))
    keyed.sort(key=lambda r: (r[0], r[1], r[2]))
    events = [r[3] for r in keyed]
    last = keyed[-1][0]
    flush = round(last + FLUSH_AFTER_D * DAY, 3)
    events.append(
        {"event_id": f"{FLUSH_LEAD}-0", "lead_id": FLUSH_LEAD, "tenant": TENANT,
         "type": "page_view", "ts": flush}
    )  # fmt: skip
    order = sorted(by_month, key=lambda m: MONTHS[m])
    return ShopperEvents(
        events=events,
        sessions=len(chosen),
        purchases=sum(1 for e in events if e["type"] == "appointment_set"),
        pages=sum(1 for e in events if e["type"] in ("page_view", "property_view")),
        first_ts=keyed[0][0],
        last_ts=last,
        by_month={m: len(by_month[m]) for m in order},
        page_values=page_values,
        lost=lost,
    )


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.simulator import write_jsonl

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.online_shoppers",
        description=(__doc__ or "").split("\n\n", 1)[0],
    )
    p.add_argument("--out", required=True, help="output JSONL file")
    p.add_argument("--every", type=int, default=1, help="every n-th session only (default 1)")
    p.add_argument(
        "--page-values",
        action="store_true",
        help="add the leaky PageValues as props.page_value (diagnostic only)",
    )
    p.add_argument(
        "--no-lost",
        action="store_true",
        help="no outcome without a purchase (horizon expiry labels those sessions)",
    )
    args = p.parse_args(argv)
    data = load(every=max(1, args.every), page_values=args.page_values, lost=not args.no_lost)
    count = write_jsonl(args.out, data.events)
    print(f"{count} events, {data.sessions} sessions, {data.purchases} purchases -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
