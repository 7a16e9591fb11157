"""``leadpulse import``: CRM exports (CSV + a TOML mapping) into contract-v1 events that
``backtest`` replays; dates in any common format with a zone; every bad row named."""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.cli import main
from engine.importer import load_mapping, parse_when
from engine.settings import load_settings
from engine.streams import StreamNames

ROOT = Path(__file__).resolve().parents[2]
FUB_MAP = ROOT / "config" / "crm" / "fub_people.toml"
GENERIC_MAP = ROOT / "config" / "crm" / "generic_leads.toml"
FUB_COLUMNS = ["ID", "First Name", "Last Name", "Email 1", "Phone 1", "Stage", "Source", "Type",
               "Timeframe", "Price", "Created", "Last Activity", "Background"]  # fmt: skip


def _utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-05T15:04:00Z", _utc(2026, 1, 5, 15, 4)),
        ("2026-01-05 10:04:00-05:00", _utc(2026, 1, 5, 15, 4)),
        ("01/05/2026 10:04 AM EST", _utc(2026, 1, 5, 15, 4)),
        ("01/05/2026 10:04 -0500", _utc(2026, 1, 5, 15, 4)),
        ("5 Jan 2026 15:04 UTC", _utc(2026, 1, 5, 15, 4)),
        ("Mon, 05 Jan 2026 15:04:00 +0000", _utc(2026, 1, 5, 15, 4)),
        ("Jan 5, 2026 3:04 PM GMT", _utc(2026, 1, 5, 15, 4)),
        ("1767625440", _utc(2026, 1, 5, 15, 4)),
        ("1767625440000", _utc(2026, 1, 5, 15, 4)),
        ("2026/01/05 15:04:00 Z", _utc(2026, 1, 5, 15, 4)),
    ],
)
def test_dates_in_common_formats_with_their_zone(text: str, expected: float) -> None:
    assert parse_when(text) == expected


def test_naive_dates_are_in_the_mapping_zone_and_day_order() -> None:
    from zoneinfo import ZoneInfo

    ny = ZoneInfo("America/New_York")
    assert parse_when("01/05/2026 10:04", ny) == _utc(2026, 1, 5, 15, 4)
    assert parse_when("05/01/2026", UTC, day_first=True) == _utc(2026, 1, 5)
    assert parse_when("05.01.2026 15:04", UTC, day_first=True) == _utc(2026, 1, 5, 15, 4)
    for bad in ("", "soon", "13/45/2026", "2026-02-30", "01/05/2026 10:04 XYZT"):
        assert parse_when(bad) is None, bad


def _fub_csv(path: Path, n: int, seed: int = 7, bad: bool = True) -> Path:
    """A Follow Up Boss people export: contact columns included (never imported); the
    portal leads convert more often, so a backtest has something to find."""
    rng = random.Random(seed)
    start = _utc(2025, 1, 1)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(FUB_COLUMNS)
        for i in range(n):
            created = start + rng.uniform(0, 300) * 86_400
            source = rng.choice(["Zillow", "Website", "Facebook", "Referral", "Open House"])
            p = {"Zillow": 0.45, "Referral": 0.6}.get(source, 0.12)
            stage = rng.choice(["Closed", "Appointment Set"]) if rng.random() < p else rng.choice(
                ["Trash", "Lost", "Lead", "Attempted Contact"])  # fmt: skip
            when = datetime.fromtimestamp(created + rng.uniform(1, 40) * 86_400, UTC)
            w.writerow([
                1000 + i, "Jo", "Smith", f"jo{i}@mail.example", f"(555) 201-{i % 10000:04d}",
                stage, source, rng.choice(["Buyer", "Seller", "Renter"]), "0-3 Months",
                f"${rng.randint(200, 900)},000",
                datetime.fromtimestamp(created, UTC).strftime("%m/%d/%Y %I:%M %p"),
                when.strftime("%Y-%m-%d %H:%M:%S"), "call me at (555) 123-4567",
            ])  # fmt: skip
        if bad:
            w.writerow(["", "No", "Id", "", "", "Lead", "Zillow", "", "", "", "01/02/2025", "", ""])
            w.writerow(["77 88", "", "", "", "", "Lead", "", "", "", "", "01/02/2025", "", ""])
            w.writerow(["99", "", "", "", "", "Closed", "", "", "", "", "not a date", "", ""])
    return path


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_fub_people_export_becomes_events_and_every_bad_row_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _fub_csv(tmp_path / "people.csv", 40)
    out, rejects = tmp_path / "h.jsonl", tmp_path / "rejects.jsonl"
    code = main(["import", str(src), "--map", str(FUB_MAP), "--out", str(out),
                 "--rejects-out", str(rejects)])  # fmt: skip
    assert code == 0
    events = _read(out)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)  # forward in time
    assert {e["type"] for e in events} <= {"lead_created", "closed", "appointment_set", "lost"}
    assert sum(e["type"] == "lead_created" for e in events) == 40
    raw = out.read_text()
    assert "@" not in raw and "555" not in raw and "Smith" not in raw  # no contact data
    first = next(e for e in events if e["lead_id"] == "1000")
    assert first["source"] in ("portal", "website", "social", "referral", "open_house")
    assert {(r["line"], r["reason"].split(":")[0]) for r in _read(rejects)} == {
        (42, "missing"), (43, "bad_value"), (44, "bad_date")}  # fmt: skip
    err = capsys.readouterr().err
    assert "43 rows: " in err and "3 rows rejected" in err and "line 44: bad_date:Created" in err


def test_imported_export_replays_through_backtest(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _fub_csv(tmp_path / "people.csv", 600, bad=False)
    out = tmp_path / "h.jsonl"
    assert main(["import", str(src), "--map", str(FUB_MAP), "--out", str(out)]) == 0
    report = tmp_path / "bt"
    code = main(["backtest", str(out), "--out", str(report), "--redis-url", redis_url])
    assert code == 0, capsys.readouterr().err
    result = json.loads((report / "backtest.json").read_text())
    assert result["events"] == len(_read(out)) and result["rejected"] == 0
    assert result["scores"], result.get("notes")


def test_generic_activity_sheet_and_a_second_import_give_the_same_ids(tmp_path: Path) -> None:
    src = tmp_path / "acts.csv"
    src.write_text(
        "Lead ID,Activity,Date,Source,Side,Listing\n"
        "L1,New lead,2026-01-05 09:00 -05:00,Zillow,buyer,\n"
        "L1,Viewed listing,01/05/2026 10:00 AM EST,,,MLS123\n"
        "L1,Requested showing,2026-01-05T15:30:00Z,,,MLS123\n"
        "L2,Bought a boat,2026-01-06,,,\n"
        "L1,Closed,1767800000,,,\n"
    )
    out1, out2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["import", str(src), "--map", str(GENERIC_MAP), "--out", str(out1)]) == 0
    assert main(["import", str(src), "--map", str(GENERIC_MAP), "--out", str(out2)]) == 0
    events = _read(out1)
    assert [e["type"] for e in events] == [
        "lead_created", "property_view", "showing_request", "closed"]  # fmt: skip
    assert events[0]["source"] == "portal" and events[1]["property_id"] == "MLS123"
    assert out1.read_text() == out2.read_text()


def test_to_streams_appends_on_the_engine_partitions(
    tmp_path: Path, redis_url: str, client: redis.Redis, prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("LEADPULSE__REDIS__KEY_PREFIX", prefix)
    src = _fub_csv(tmp_path / "people.csv", 5, bad=False)
    code = main(["import", str(src), "--map", str(FUB_MAP), "--to-streams", "--tenant", "acme",
                 "--redis-url", redis_url])  # fmt: skip
    assert code == 0
    names = StreamNames(prefix, load_settings(environ={}).streams.partitions)
    total = sum(int(client.xlen(names.events(p))) for p in range(names.partitions))
    assert total >= 5


@pytest.mark.parametrize(
    ("mapping", "words"),
    [
        ('[fields]\nlead_id = "ID"\nemail = "Email 1"\n[[events]]\ntype = "lead_created"\n'
         'ts = "Created"\n', "fields.email cannot be imported"),
        ('[fields]\nlead_id = "Nope"\n[[events]]\ntype = "lead_created"\nts = "Created"\n',
         "no column 'Nope'"),
        ('[fields]\nlead_id = "ID"\n[[events]]\ntype = "teleport"\nts = "Created"\n',
         "not a contract type"),
        ('[fields]\nlead_id = "ID"\n', "at least one [[events]]"),
        ("fields = [", "is not TOML"),
        ('[import]\ntimezone = "Mars/Olympus"\n[fields]\nlead_id = "ID"\n[[events]]\n'
         'type = "lead_created"\nts = "Created"\n', "not an IANA zone"),
    ],
)  # fmt: skip
def test_bad_mappings_and_inputs_end_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mapping: str, words: str
) -> None:
    src = _fub_csv(tmp_path / "people.csv", 2, bad=False)
    m = tmp_path / "m.toml"
    m.write_text(mapping)
    code = main(["import", str(src), "--map", str(m), "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and "\n" not in err and "Traceback" not in err


def test_a_missing_csv_or_a_non_utf8_one_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(tmp_path / "none.csv"), "--map", str(FUB_MAP)]) == 2
    assert "none.csv" in capsys.readouterr().err
    latin = tmp_path / "latin.csv"
    latin.write_bytes("ID,Created\n1,\xe9t\xe9\n".encode("latin-1"))
    assert main(["import", str(latin), "--map", str(GENERIC_MAP)]) == 2
    assert "UTF-8" in capsys.readouterr().err


def test_the_sample_mappings_load() -> None:
    assert load_mapping(FUB_MAP).fields["lead_id"] == "ID"
    assert load_mapping(GENERIC_MAP).events[0].type_from == "Activity"
