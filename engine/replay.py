"""``leadpulse replay``: a JSONL file through the same dataflow as ``run``.

Public contract: events are appended to the streams in file order (each lead's
events keep their order on the lead's partition), the bounded dataflow processes
everything present, then one JSON line per lead (``lead_id``, ``score``,
``probability``, ``bucket``, ``tier``, ``reasons`` ...) and one per alert are written.
Event time comes from each event's ``ts``; wall time plays no part in any result.
A line that is not valid JSON is still appended (raw) so it is rejected with a
reason in the dead letter like any other bad input; the summary names the most common
reasons and ``--rejects-out`` lists every rejected line (line number, reason, raw line).
A missing input or an unwritable output is refused in one line before any work.
"""

from __future__ import annotations

import json
import sys
import time
from array import array
from bisect import bisect_left
from collections import Counter
from pathlib import Path
from typing import IO, Any

import msgpack

from engine.errors import ConfigError
from engine.records import RecordReader
from engine.redis_client import connect, redact_url, resolve_url
from engine.settings import Settings, load_settings
from engine.shards import dead_letter_streams, read_entries, shard_names
from engine.streams import Producer, StreamNames, stream_names
from engine.views import read_alerts, read_scores

__all__ = ["LineIndex", "load_events", "replay_file"]

_CHUNK = 2_000


class LineIndex:
    """Which input line each stream entry came from: per partition, the entries' ids in
    append order (as ``ms * 2**20 + seq``, sorted) and their line numbers, 16 bytes a line."""

    def __init__(self) -> None:
        self._ids: dict[int, tuple[array[int], array[int]]] = {}

    @staticmethod
    def _key(sid: bytes | str) -> int:
        ms, _, seq = (sid.decode() if isinstance(sid, bytes) else sid).partition("-")
        return int(ms) * 2**20 + int(seq or 0)

    def add(self, partition: int, sid: bytes | str, line: int) -> None:
        keys, lines = self._ids.setdefault(partition, (array("q"), array("q")))
        keys.append(self._key(sid))
        lines.append(line)

    def line_of(self, partition: int, sid: bytes | str) -> int | None:
        keys, lines = self._ids.get(partition, (array("q"), array("q")))
        key = self._key(sid)
        i = bisect_left(keys, key)
        return lines[i] if i < len(keys) and keys[i] == key else None


def load_events(
    client: Any, producer: Producer, path: str | Path, index: LineIndex | None = None
) -> tuple[int, set[tuple[str, str]]]:
    """Append every line of ``path`` to the streams; returns (lines, (tenant, lead) seen).

    With ``index``, records which line (1-based, blank lines counted) each entry is."""
    leads: set[tuple[str, str]] = set()
    count = 0
    pending: list[tuple[int, int]] = []  # (partition, line) per queued XADD
    pipe = client.pipeline(transaction=False)

    def flush() -> None:
        ids = pipe.execute()
        if index is not None:
            for (partition, number), sid in zip(pending, ids, strict=True):
                index.add(partition, sid, number)
        pending.clear()

    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line:
                continue
            count += 1
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                partition = producer.partition(obj)
                payload = msgpack.packb(obj, use_bin_type=True)
                producer.send_raw(payload, partition, pipe)
                lead = obj.get("lead_id") or (
                    f"~{obj['visitor_id']}" if obj.get("visitor_id") else None
                )
                if isinstance(lead, str | int) and lead != "":
                    leads.add((str(obj.get("tenant") or "default"), str(lead)))
            else:
                partition = 0
                producer.send_json(line, pipe)
            pending.append((partition, number))
            if count % _CHUNK == 0:
                flush()
    flush()
    return count, leads


def _open_outputs(events_path: str, outputs: dict[str, str | None]) -> dict[str, IO[str]]:
    """Check the input is readable and open every output now, so a typo costs nothing."""
    try:
        with open(events_path, "rb") as src:
            src.read(1)
    except OSError as exc:
        raise ConfigError(f"cannot read events file {events_path}: {exc.strerror}") from None
    opened: dict[str, IO[str]] = {}
    for flag, path in outputs.items():
        if not path:
            continue
        try:
            opened[flag] = open(path, "w")  # noqa: SIM115 - closed by replay_file
        except OSError as exc:
            for out in opened.values():
                out.close()
            raise ConfigError(f"{flag} {path}: cannot write ({exc.strerror})") from None
    return opened


def _rejects(
    client: Any, names: StreamNames, index: LineIndex | None, events_path: str, out: IO[str] | None
) -> Counter[str]:
    """Reasons of every dead letter; with ``out``, one JSON line per rejected input line."""
    reasons: Counter[str] = Counter()
    found: dict[int, str] = {}
    for _, fields in read_entries(client, dead_letter_streams(names)):  # every shard's
        reason = (fields.get(b"reason") or b"?").decode(errors="replace")
        reasons[reason.split(" ", 1)[0].rstrip(":")] += 1  # the code, without its detail
        if index is not None:
            partition = int(fields.get(b"partition") or 0)
            number = index.line_of(partition, fields.get(b"id") or b"0-0")
            if number is not None:
                found[number] = reason
    if out is not None and found:
        with open(events_path, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                if number in found:
                    text = raw.rstrip(b"\r\n").decode(errors="replace")
                    row = {"line": number, "reason": found[number], "raw": text}
                    out.write(json.dumps(row) + "\n")
    return reasons


def replay_file(
    events_path: str,
    scores_out: str,
    *,
    alerts_out: str | None = None,
    rejects_out: str | None = None,
    redis_url: str = "",
    config: str | None = None,
    workers: int = 1,
    settings: Settings | None = None,
) -> int:
    """Replay ``events_path``; returns the process exit code (0 on success)."""
    settings = settings or load_settings(config)
    outs = _open_outputs(
        events_path,
        {"--scores-out": scores_out, "--alerts-out": alerts_out, "--rejects-out": rejects_out},
    )
    url, server = resolve_url(redis_url)
    try:
        return _replay(settings, url, events_path, outs, workers)
    finally:
        for fh in outs.values():
            fh.close()
        if server is not None:
            server.stop()


def _replay(
    settings: Settings, url: str, events_path: str, outs: dict[str, IO[str]], workers: int
) -> int:
    client = connect(url, settings.redis.retries, settings.redis.socket_timeout_s)
    from engine.app import build_parts  # bytewax and river: only once Redis answered
    from engine.dataflow import run_bounded

    names = stream_names(settings)
    used = [*(shard.positions for shard in shard_names(names)), names.events(0)]
    if client.exists(*used):
        raise ConfigError(
            f"redis.key_prefix: {settings.redis.key_prefix!r} already holds leadpulse data "
            f"at {redact_url(url)}; replay into an empty database or another prefix "
            "(LEADPULSE__REDIS__KEY_PREFIX)"
        )
    parts = build_parts(settings, client)
    producer = Producer(client, parts.names, maxlen=max(settings.streams.maxlen, 10**9))
    index = LineIndex() if "--rejects-out" in outs else None
    t0 = time.perf_counter()
    count, leads = load_events(client, producer, events_path, index)
    t1 = time.perf_counter()
    run_bounded(parts, workers=workers)  # identity hand-overs included
    t2 = time.perf_counter()
    scores = read_scores(client, RecordReader(settings), sorted(leads))
    for record in scores:
        outs["--scores-out"].write(json.dumps(record, sort_keys=True) + "\n")
    alerts = read_alerts(client, parts.names)
    if "--alerts-out" in outs:
        for alert in alerts:
            outs["--alerts-out"].write(json.dumps(alert, sort_keys=True) + "\n")
    reasons = _rejects(client, parts.names, index, events_path, outs.get("--rejects-out"))
    rate = count / (t2 - t1) if t2 > t1 else 0.0
    print(
        f"replayed {count} events ({_rejected(reasons, '--rejects-out' in outs)}) for "
        f"{len(scores)} leads: {len(alerts)} alerts; dataflow {t2 - t1:.2f} s = "
        f"{rate:,.0f} events/s (loading the streams took {t1 - t0:.2f} s)",
        file=sys.stderr,
    )
    return 0


def _rejected(reasons: Counter[str], listed: bool) -> str:
    """``5 rejected: 3 missing_field:lead_id, 2 malformed_json`` (the top three)."""
    total = sum(reasons.values())
    if not total:
        return "0 rejected"
    top = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common(3))
    more = ", ..." if len(reasons) > 3 else ""
    where = "" if listed else "; --rejects-out FILE lists them"
    return f"{total} rejected: {top}{more}{where}"
