"""``leadpulse import``: a CRM export (CSV) into contract-v1 events, so history warms the model.

A small TOML mapping (``config/crm/*.toml``) says which column holds what::

    [import]
    timezone = "America/New_York"    # for dates written without a zone
    date_order = "mdy"               # 01/02/2026 is 2 January ("dmy": 1 February)
    lead_prefix = "fub-"             # lead id = prefix + the id column

    [fields]                         # contract field -> column (ids and profile only)
    lead_id = "ID"
    source = "Source"

    [[events]]                       # each row makes these events (those with a time)
    type = "lead_created"
    ts = "Created"

    [[events]]
    type_from = "Stage"              # the type is the column's value, through [values.Stage]
    ts = "Last Activity"

    [values.Stage]                   # a CRM word -> a contract value
    "Closed" = "closed"

One row per lead (a people export: ``lead_created`` and the stage's outcome) or one row
per activity (``type_from`` the activity column) are the same mapping. Dates in any
common format (ISO-8601, ``01/05/2026 3:04 PM``, ``5 Jan 2026 15:04``, RFC 2822, epoch
seconds or milliseconds), with a zone (``Z``, ``+05:00``, ``-0500``, ``EST``, ``UTC``) or
in ``timezone``. Event ids are stable (``imp:<lead>:<type>:<epoch>``), so importing the
same export twice changes nothing. Fields outside :data:`FIELDS` (names, emails, phones,
notes) can never be mapped: nothing but ids, times and profile words leaves the CSV.

Every row the engine would refuse is rejected with its line number and reason (the
contract's codes, plus ``bad_date:<column>``, ``missing:<column>``); the output is sorted
by event time, ready for ``leadpulse backtest`` or ``replay``; ``--to-streams`` appends
to the streams instead (``Producer``, the engine's partitioning).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import LeadpulseError
from engine.events import EVENT_TYPES, SIDES, SOURCES, TIMELINES

__all__ = ["FIELDS", "ImportError_", "Mapping", "Rejected", "convert", "load_mapping", "parse_when"]

#: Contract fields a column may fill: ids, the profile, numbers. Never contact data.
FIELDS = frozenset(
    {"lead_id", "source", "side", "timeline", "area", "price", "property_id", "channel",
     "agent_id", "dwell_s"}
)  # fmt: skip
_CHOICES = {"source": (SOURCES, "other"), "side": (SIDES, "unknown"),
            "timeline": (TIMELINES, "unknown")}  # fmt: skip
_ZONES = {"UTC": 0, "GMT": 0, "Z": 0, "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7,
          "MDT": -6, "PST": -8, "PDT": -7, "AKST": -9, "AKDT": -8, "HST": -10}  # fmt: skip
_TRAILING_ZONE = re.compile(r"\s*(?:\b([A-Z]{1,4})|([+-]\d{2}):?(\d{2}))$")
_RFC2822 = re.compile(
    r"^(?:[A-Za-z]{3}, )?\d{1,2} [A-Za-z]{3} \d{4} \d{2}:\d{2}(?::\d{2})? [+-]\d{4}$"
)
_FORMATS = (
    "{md}/%Y %I:%M:%S %p", "{md}/%Y %I:%M %p", "{md}/%Y %H:%M:%S", "{md}/%Y %H:%M", "{md}/%Y",
    "{md}/%y %I:%M %p", "{md}/%y %H:%M", "{md}/%y", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
    "%Y/%m/%d", "%d %b %Y %H:%M:%S", "%d %b %Y %H:%M", "%d %b %Y", "%b %d, %Y %I:%M %p",
    "%b %d, %Y %H:%M", "%b %d, %Y", "%B %d, %Y %I:%M %p", "%B %d, %Y", "{md_dot}.%Y %H:%M",
    "{md_dot}.%Y", "%Y-%m-%d %I:%M %p",
)  # fmt: skip


class ImportError_(LeadpulseError):  # noqa: N801 (ImportError is Python's own)
    """A mapping or input the import cannot use: one line, exit code 2."""


@dataclass(frozen=True)
class EventRule:
    """One event a row makes: a fixed ``type`` or one read from ``type_from``; its time."""

    ts: str
    type: str = ""
    type_from: str = ""


@dataclass(frozen=True)
class Mapping:
    fields: dict[str, str]
    events: tuple[EventRule, ...]
    values: dict[str, dict[str, str]]
    zone: tzinfo
    day_first: bool
    lead_prefix: str = ""


@dataclass(frozen=True)
class Rejected:
    """A row that makes no event: its line (1-based, the header is line 1) and why."""

    line: int
    reason: str


@dataclass
class Result:
    events: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    rows: int = 0
    notes: Counter[str] = field(default_factory=Counter)


# -- the mapping -------------------------------------------------------------------------
def _zone(name: Any) -> tzinfo:
    if name in (None, "", "UTC"):
        return UTC
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ImportError_(f"mapping: import.timezone {name!r} is not an IANA zone") from None


def _rules(raw: Any) -> tuple[EventRule, ...]:
    if not isinstance(raw, list) or not raw:
        raise ImportError_("mapping: give at least one [[events]] table (type or type_from, ts)")
    rules = []
    for i, r in enumerate(raw):
        if not isinstance(r, dict) or not isinstance(r.get("ts"), str):
            raise ImportError_(f"mapping: events[{i}] needs ts = the column of its time")
        kind, source = r.get("type", ""), r.get("type_from", "")
        if bool(kind) == bool(source) or set(r) - {"ts", "type", "type_from"}:
            raise ImportError_(f"mapping: events[{i}] needs type or type_from (one), and ts")
        if kind and kind not in EVENT_TYPES:
            raise ImportError_(f"mapping: events[{i}].type {kind!r} is not a contract type")
        rules.append(EventRule(r["ts"], str(kind), str(source)))
    return tuple(rules)


def load_mapping(path: str | Path) -> Mapping:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ImportError_(f"cannot read mapping {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ImportError_(f"mapping {path} is not TOML: {exc}") from None
    unknown = set(data) - {"import", "fields", "events", "values"}
    opts, fields = data.get("import", {}), data.get("fields", {})
    if unknown or not isinstance(opts, dict) or not isinstance(fields, dict):
        raise ImportError_(f"mapping: tables are [import], [fields], [[events]], [values.*]; "
                           f"not {', '.join(sorted(unknown)) or 'this shape'}")  # fmt: skip
    bad = sorted(set(fields) - FIELDS)
    if bad:
        allowed = ", ".join(sorted(FIELDS))
        raise ImportError_(f"mapping: fields.{bad[0]} cannot be imported (allowed: {allowed}; "
                           "never names, emails or phones)")  # fmt: skip
    if "lead_id" not in fields:
        raise ImportError_("mapping: fields.lead_id = the column of the lead's CRM id")
    values = data.get("values", {})
    if not isinstance(values, dict) or any(not isinstance(v, dict) for v in values.values()):
        raise ImportError_("mapping: [values.<column>] tables map a CRM word to a contract value")
    order = opts.get("date_order", "mdy")
    if order not in ("mdy", "dmy"):
        raise ImportError_(f"mapping: import.date_order must be mdy or dmy, not {order!r}")
    return Mapping(
        fields={k: str(v) for k, v in fields.items()}, events=_rules(data.get("events")),
        values={c: {str(k).strip().lower(): str(v) for k, v in t.items()}
                for c, t in values.items()},
        zone=_zone(opts.get("timezone")), day_first=order == "dmy",
        lead_prefix=str(opts.get("lead_prefix", "")),
    )  # fmt: skip


# -- dates ---------------------------------------------------------------------------------
def _split_zone(text: str) -> tuple[str, tzinfo | None]:
    m = _TRAILING_ZONE.search(text)
    if m is None:
        return text, None
    if m[1]:
        if m[1] not in _ZONES:
            return text, None
        return text[: m.start()], timezone(timedelta(hours=_ZONES[m[1]]))
    sign = -1 if m[2].startswith("-") else 1
    hours, minutes = int(m[2][1:]), int(m[3])
    return text[: m.start()], timezone(sign * timedelta(hours=hours, minutes=minutes))


def parse_when(text: str, zone: tzinfo = UTC, day_first: bool = False) -> float | None:
    """Epoch seconds of a date in any common format, or None; naive dates are in ``zone``."""
    text = text.strip()
    if not text:
        return None
    if re.fullmatch(r"\d{9,13}(\.\d+)?", text):
        value = float(text)
        return value / 1000 if value > 1e11 else value
    rfc = _RFC2822.match(text)
    for attempt in (lambda: datetime.fromisoformat(text.replace("Z", "+00:00")),
                    lambda: parsedate_to_datetime(text) if rfc else None):  # fmt: skip
        try:
            parsed = attempt()
        except (ValueError, TypeError, IndexError):
            continue
        if parsed is not None:
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).timestamp()
    body, tz = _split_zone(text)
    md, md_dot = ("%d/%m", "%d.%m") if day_first else ("%m/%d", "%m.%d")
    for fmt in _FORMATS:
        try:
            parsed = datetime.strptime(body.strip(), fmt.format(md=md, md_dot=md_dot))
        except ValueError:
            continue
        return parsed.replace(tzinfo=tz or zone).timestamp()
    return None


# -- rows -> events -------------------------------------------------------------------------
def _choice(name: str, raw: str, m: Mapping, res: Result) -> str:
    """A profile word through the column's [values] table; unknown words count as a note."""
    allowed, fallback = _CHOICES[name]
    word = raw.strip()
    mapped = m.values.get(m.fields[name], {}).get(word.lower())
    if mapped in allowed:
        return mapped
    if word.lower() in allowed:
        return word.lower()
    if word:
        res.notes[f"{name} {word[:40]!r} not mapped: {fallback}"] += 1
    return fallback


def _profile(row: dict[str, str], m: Mapping, res: Result) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, column in m.fields.items():
        raw = (row.get(column) or "").strip()
        if name == "lead_id" or not raw:
            continue
        if name in _CHOICES:
            out[name] = _choice(name, raw, m, res)
        elif name in ("price", "dwell_s"):
            try:
                out[name] = float(re.sub(r"[$,\s]", "", raw))
            except ValueError:
                res.notes[f"{name} not a number: dropped"] += 1
        elif name == "channel":
            out[name] = m.values.get(column, {}).get(raw.lower(), raw.lower())
        else:
            out[name] = raw
    return out


def _type_of(rule: EventRule, row: dict[str, str], m: Mapping, res: Result) -> str:
    if rule.type:
        return rule.type
    word = (row.get(rule.type_from) or "").strip()
    mapped = m.values.get(rule.type_from, {}).get(word.lower(), word)
    if mapped in EVENT_TYPES:
        return mapped
    if word:
        res.notes[f"{rule.type_from} {word[:40]!r} makes no event (not mapped)"] += 1
    return ""


def row_events(
    row: dict[str, str], line: int, m: Mapping, validator: Any, tenant: str, res: Result
) -> list[dict[str, Any]] | Rejected:
    """The events of one CSV row, each checked by the engine's validator, or why not."""
    from engine.validate import Rejection

    lead_col = m.fields["lead_id"]
    lead = (row.get(lead_col) or "").strip()
    if not lead:
        return Rejected(line, f"missing:{lead_col} (the lead id)")
    base = {"tenant": tenant, "lead_id": m.lead_prefix + lead, **_profile(row, m, res)}
    out = []
    for rule in m.events:
        raw = (row.get(rule.ts) or "").strip()
        kind = _type_of(rule, row, m, res)
        if not raw or not kind:
            continue
        ts = parse_when(raw, m.zone, m.day_first)
        if ts is None:
            return Rejected(line, f"bad_date:{rule.ts} {raw[:40]!r} is not a date")
        event = {**base, "event_id": f"imp:{base['lead_id']}:{kind}:{int(ts)}", "type": kind,
                 "ts": ts}  # fmt: skip
        checked = validator.check(event)
        if isinstance(checked, Rejection):
            return Rejected(line, checked.reason)
        out.append(checked.to_wire())
    if not out:
        res.notes["rows with no event (no time, or an unmapped type)"] += 1
    return out


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames
            yield 1, {h: h for h in header or ()}  # the header, for the mapping's check
            for row in reader:
                yield reader.line_num, {k: v for k, v in row.items() if isinstance(k, str)}
    except UnicodeDecodeError:
        raise ImportError_(f"{path} is not UTF-8 text (save the export as CSV UTF-8)") from None
    except csv.Error as exc:
        raise ImportError_(f"{path}: not a readable CSV: {exc}") from None


def convert(path: str | Path, m: Mapping, validator: Any, tenant: str = "default") -> Result:
    """Every row of the export through the mapping; events sorted by time."""
    res = Result()
    rows = _rows(Path(path))
    _, header = next(rows, (1, {}))
    needed = set(m.fields.values()) | {r.ts for r in m.events} | {
        r.type_from for r in m.events if r.type_from}  # fmt: skip
    missing = sorted(needed - set(header))
    if not header:
        raise ImportError_(f"{path} is empty (no header line)")
    if missing:
        raise ImportError_(f"{path}: no column {missing[0]!r} (the mapping names it); columns: "
                           f"{', '.join(list(header)[:12])}")  # fmt: skip
    for line, row in rows:
        res.rows += 1
        made = row_events(row, line, m, validator, tenant, res)
        if isinstance(made, Rejected):
            res.rejected.append(made)
        else:
            res.events.extend(made)
    res.events.sort(key=lambda e: e["ts"])
    return res


# -- the command ------------------------------------------------------------------------------
def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "import",
        help="turn a CRM export (CSV) into contract-v1 events, for backtest, replay or the streams",
        description="Read FILE.csv (a CRM export: one row per lead or per activity) through "
        "the columns named in --map (TOML; samples in config/crm/) and write contract-v1 "
        "JSONL sorted by event time, or append the events to the streams. Rows the engine "
        "would refuse are rejected with their line number and reason.",
    )
    p.add_argument("csv", help="the export, CSV with a header line (UTF-8)")
    p.add_argument("--map", required=True, dest="mapping", help="the column mapping (TOML)")
    p.add_argument("--out", help="output JSONL (default: FILE.jsonl beside the CSV)")
    p.add_argument("--to-streams", action="store_true", help="append to the streams instead")
    p.add_argument("--tenant", default="default", help="the tenant of every event")
    p.add_argument("--rejects-out", help="one JSON line per rejected row: line and reason")
    p.add_argument("--config", help="TOML file overriding config/default.toml")
    p.add_argument("--redis-url", default="", help="with --to-streams: this server")
    from engine.up import add_data_dir

    add_data_dir(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    try:
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n")
    except OSError as exc:
        raise ImportError_(f"cannot write {path}: {exc.strerror or exc}") from None


def _to_streams(args: argparse.Namespace, settings: Any, events: list[dict[str, Any]]) -> str:
    from engine.redis_client import connect, redis_for
    from engine.streams import Producer, stream_names

    url, local = redis_for(args.redis_url or settings.redis_url(), args.data_dir, create=False)
    try:
        client = connect(url, settings.redis.retries)
        names = stream_names(settings)
        producer = Producer(client, names, settings.streams.maxlen)
        for i in range(0, len(events), 500):
            producer.send(events[i : i + 500])
    finally:
        if local is not None:
            local.release()
    return "the streams"


def run(args: argparse.Namespace) -> int:
    from engine.settings import load_settings
    from engine.validate import Validator

    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", args.tenant):
        raise ImportError_(f"--tenant {args.tenant[:70]!r}: use 1-64 of A-Z a-z 0-9 _ . -")
    settings = load_settings(args.config)
    mapping = load_mapping(args.mapping)
    result = convert(args.csv, mapping, Validator(settings.validation), args.tenant)
    if args.to_streams:
        where = _to_streams(args, settings, result.events)
    else:
        out = Path(args.out) if args.out else Path(args.csv).with_suffix(".jsonl")
        _write_jsonl(out, result.events)
        where = str(out)
    if args.rejects_out:
        _write_jsonl(Path(args.rejects_out), [{"line": r.line, "reason": r.reason}
                                              for r in result.rejected])  # fmt: skip
    print(f"{result.rows} rows: {len(result.events)} events to {where}, "
          f"{len(result.rejected)} rows rejected", file=sys.stderr)  # fmt: skip
    for r in result.rejected[:20]:
        print(f"  line {r.line}: {r.reason}", file=sys.stderr)
    if len(result.rejected) > 20:
        more = len(result.rejected) - 20
        print(f"  … {more} more (every one in --rejects-out)", file=sys.stderr)
    for note, n in result.notes.most_common(10):
        print(f"  note: {n} × {note}", file=sys.stderr)
    return 0 if result.events or not result.rows else 2
