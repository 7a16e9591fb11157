"""The DIGINETICA sample as contract-v1 events: sessions as leads, purchases as outcomes.

``benchmarks/data/diginetica/`` (README there) holds a real e-commerce click log from
the CIKM Cup 2016: 12,391 item views in 2,986 sessions and the full purchase file.
It stands in for an IDX click stream in the quality benchmark (``benchmarks/quality.py``):

- every session is a lead (``lead_id`` = ``s<session id>``, tenant ``diginetica``);
- every item view is a ``property_view`` (``property_id`` = ``i<item id>``);
- every order of a sampled session (purchase rows joined on the session id, one
  event per order number) is an ``appointment_set``, the positive outcome;
- sessions without a purchase get no outcome: the engine's horizon expiry labels
  their scored moments 0. So that expiry really happens for the last sessions too, a
  synthetic ``page_view`` of a dummy lead (``FLUSH_LEAD``) is appended
  ``FLUSH_AFTER_D`` days after the last event (event time moves on, the daily sweep
  runs); its own examples are not part of any comparison.

Event time. ``timeframe`` is the millisecond offset from the *session's start*, and the
data show it: a purchase's ``eventdate`` equals the session's first ``eventdate`` plus
its ``timeframe`` (212 of the 256 joined rows; one day later for the other 44), and the
two sessions that cross midnight have views dated the next day whose ``timeframe`` is
only minutes after the first view. So every event of a session, view or purchase, is
placed at the session's first ``eventdate`` (midnight UTC) + ``timeframe``. Adding
``timeframe`` to each row's own ``eventdate`` instead would move the 44 later-dated
purchases by their delay a second time (a 34-day purchase to 68 days, out of the
label horizon) and the cross-midnight views by a day. The log has no time of day, so a
session's events sit in the first minutes after midnight; nothing the engine computes
depends on the time of day except quiet hours for alerts, which play no part here.

Events are returned sorted by event time (ties: session, then the row order), which
is also the order a live site would have sent them in.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

__all__ = ["DATA_DIR", "FLUSH_AFTER_D", "FLUSH_LEAD", "DigineticaEvents", "load"]

#: The sample ships in ``benchmarks/data/diginetica`` (1.1 MB, with its README:
#: provenance and licence) so a fresh clone, wherever it sits, can run
#: the benchmark and its tests (override: LEADPULSE_DIGINETICA).
DATA_DIR = Path(
    os.environ.get("LEADPULSE_DIGINETICA")
    or Path(__file__).resolve().parent / "data" / "diginetica"
)
VIEWS_FILE = "sample_train-item-views.csv"
PURCHASES_FILE = "train-purchases.csv"
TENANT = "diginetica"
FLUSH_LEAD = "flush-expiry"  # the dummy lead whose late page_view lets horizon expiry run
FLUSH_AFTER_D = 40.0  # days after the last event (label horizon 30 d + margin)
DAY = 86_400.0


@dataclass(frozen=True)
class DigineticaEvents:
    """Contract-v1 events of the sample, and what went into them."""

    events: list[dict[str, Any]]
    sessions: int
    views: int
    orders: int  # appointment_set events (distinct order numbers of sampled sessions)
    buying_sessions: int
    first_ts: float
    last_ts: float  # last real event (view or purchase)
    last_view_ts: float  # end of the view log: outcomes are observed at least until here
    flush_ts: float  # the dummy lead's page_view

    def summary(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "views": self.views,
            "orders": self.orders,
            "buying_sessions": self.buying_sessions,
            "events": len(self.events),
            "first": _iso(self.first_ts),
            "last": _iso(self.last_ts),
            "last_view": _iso(self.last_view_ts),
            "flush_page_view": _iso(self.flush_ts),
        }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _midnight(day: str) -> float:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC).timestamp()


def _read_views(root: Path, keep: set[str] | None) -> dict[str, list[tuple[str, int, str]]]:
    """The item views of each kept session: session id -> (date, ms, item), in row order."""
    views: dict[str, list[tuple[str, int, str]]] = defaultdict(list)  # sid -> (date, ms, item)
    with open(root / VIEWS_FILE, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter=";"):
            sid = row["session_id"]
            if keep is None or sid in keep:
                views[sid].append((row["eventdate"], int(row["timeframe"]), row["item_id"]))
    if not views:
        raise ValueError(f"no views in {root / VIEWS_FILE} for the sessions asked for")
    return views


def _read_orders(root: Path, views: dict[str, Any]) -> dict[str, dict[str, int]]:
    """The orders of the sessions in ``views``: session id -> order number -> first ms."""
    orders: dict[str, dict[str, int]] = defaultdict(dict)  # sid -> order number -> ms
    with open(root / PURCHASES_FILE, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter=";"):
            sid = row["sessionId"]
            if sid in views:
                ms = int(row["timeframe"])
                prev = orders[sid].get(row["ordernumber"])
                orders[sid][row["ordernumber"]] = ms if prev is None else min(prev, ms)
    return orders


def _session_rows(
    sid: str, start: float, seen: list[tuple[str, int, str]], orders: dict[str, int], rank: int
) -> list[tuple[float, int, int, dict[str, Any]]]:
    """One session's views and orders as (ts, session order, row order, event)."""
    rows: list[tuple[float, int, int, dict[str, Any]]] = []
    lead = f"s{sid}"
    for i, (_, ms, item) in enumerate(seen):
        ts = round(start + ms / 1000.0, 3)
        event = {
            "event_id": f"{lead}-v{i}",
            "lead_id": lead,
            "type": "property_view",
            "ts": ts,
            "tenant": TENANT,
            "property_id": f"i{item}",
        }
        rows.append((ts, rank, i, event))
    for j, (number, ms) in enumerate(sorted(orders.items())):
        ts = round(start + ms / 1000.0, 3)
        event = {
            "event_id": f"{lead}-o{number}",
            "lead_id": lead,
            "type": "appointment_set",
            "ts": ts,
            "tenant": TENANT,
        }
        rows.append((ts, rank, len(seen) + j, event))
    return rows


def load(
    data_dir: str | os.PathLike[str] | None = None, sessions: Sequence[str] | None = None
) -> DigineticaEvents:
    """Read the sample and build its events (``sessions``: only these session ids)."""
    root = Path(data_dir) if data_dir is not None else DATA_DIR
    keep = None if sessions is None else set(sessions)
    views = _read_views(root, keep)
    start = {sid: _midnight(min(d for d, _, _ in rows)) for sid, rows in views.items()}
    orders = _read_orders(root, views)
    # (ts, session order, row order, event)
    rows: list[tuple[float, int, int, dict[str, Any]]] = []
    order_of = {sid: k for k, sid in enumerate(sorted(views, key=int))}
    for sid, seen in views.items():
        rows += _session_rows(sid, start[sid], seen, orders.get(sid, {}), order_of[sid])
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    events = [r[3] for r in rows]
    first_ts, last_ts = rows[0][0], rows[-1][0]
    last_view = max(r[0] for r in rows if r[3]["type"] == "property_view")
    flush_ts = round(last_ts + FLUSH_AFTER_D * DAY, 3)
    events.append(
        {
            "event_id": f"{FLUSH_LEAD}-0",
            "lead_id": FLUSH_LEAD,
            "type": "page_view",
            "ts": flush_ts,
            "tenant": TENANT,
        }
    )
    return DigineticaEvents(
        events=events,
        sessions=len(views),
        views=sum(len(v) for v in views.values()),
        orders=sum(len(o) for o in orders.values()),
        buying_sessions=sum(1 for o in orders.values() if o),
        first_ts=first_ts,
        last_ts=last_ts,
        last_view_ts=last_view,
        flush_ts=flush_ts,
    )


def session_ids(data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Every session id of the view sample, in numeric order."""
    root = Path(data_dir) if data_dir is not None else DATA_DIR
    with open(root / VIEWS_FILE, newline="", encoding="utf-8") as fh:
        ids = {row["session_id"] for row in csv.DictReader(fh, delimiter=";")}
    return sorted(ids, key=int)


__all__ += ["session_ids"]
