"""Read models: score records, hot lists and alerts, as plain dicts for people and files.

Shared by ``replay`` (files), ``demo`` (terminal) and tests, so every reader sees the
same shape. Reads are pipelined: one round trip for any number of leads (``engine/records.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import msgpack

from engine.records import RecordReader
from engine.shards import alert_streams, read_entries, read_hot
from engine.streams import StreamNames

__all__ = ["read_alerts", "read_hot_list", "read_scores", "score_record"]

_FLOATS = ("probability", "prior_probability", "model_weight", "ts")


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def score_record(raw: dict[Any, Any]) -> dict[str, Any] | None:
    """A lead's stored score hash as typed JSON-ready fields (None if never scored)."""
    h = {_text(k): _text(v) for k, v in raw.items()}
    if "score" not in h:
        return None
    return {
        "tenant": h["tenant"],
        "lead_id": h["lead_id"],
        "score": int(float(h["score"])),
        "probability": float(h["probability"]),
        "bucket": h["bucket"],
        "tier": h["tier"],
        "reasons": json.loads(h["reasons"]),
        "concerns": json.loads(h.get("concerns", "[]")),
        "prior_probability": float(h["prior_probability"]),
        "raw_prior_probability": float(h.get("raw_prior_probability", h["prior_probability"])),
        "model_weight": float(h["model_weight"]),
        "ts": float(h["ts"]),
        "last_event_id": h["last_event_id"],
        "agent_id": h.get("agent_id", ""),
        "blocked_channels": [c for c in h.get("blocked", "").split(",") if c],
        "bucket_by": h.get("bucket_by", "score"),
    }


def read_scores(
    client: Any, reader: RecordReader, leads: Iterable[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Score records of the given (tenant, lead) pairs that have one, in the given order."""
    out = []
    for raw in reader.read(client, list(leads)):
        record = score_record(raw)
        if record is not None:
            out.append(record)
    return out


def read_hot_list(
    client: Any, reader: RecordReader, tenant: str, limit: int = 10
) -> list[dict[str, Any]]:
    """The tenant's top leads by score, with their records (the shards of the hot list
    merged: ``engine/shards.py``)."""
    ids = read_hot(client, reader.names, tenant, limit)
    return read_scores(client, reader, [(tenant, i) for i in ids])


def read_alerts(
    client: Any, names: StreamNames, after: str = "-", count: int | None = None
) -> list[dict[str, Any]]:
    """Alerts on the alerts stream after ``after`` (exclusive unless "-"), oldest first (the
    shards' streams merged by id)."""
    start = after if after == "-" else f"({after}"
    rows = read_entries(client, alert_streams(names), start, "+", count)
    out = []
    for sid, fields in rows:
        alert = msgpack.unpackb(fields[b"a"], raw=False)
        alert["stream_id"] = _text(sid)
        out.append(alert)
    return out
