"""``leadpulse replay``: a JSONL file through the same dataflow as ``run``.

Public contract: events are appended to the streams in file order (each lead's
events keep their order on the lead's partition), the bounded dataflow processes
everything present, then one JSON line per lead (``lead_id``, ``score``,
``probability``, ``bucket``, ``tier``, ``reasons`` ...) and one per alert are written.
Event time comes from each event's ``ts``; wall time plays no part in any result.
A line that is not valid JSON is still appended (raw) so it is rejected with a
reason in the dead letter like any other bad input.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import msgpack

from engine.app import build_parts
from engine.dataflow import build_flow, run_flow
from engine.errors import ConfigError
from engine.redis_client import connect, resolve_url
from engine.settings import Settings, load_settings
from engine.streams import Producer, StreamNames
from engine.views import read_alerts, read_scores

__all__ = ["replay_file", "load_events"]

_CHUNK = 2_000


def load_events(
    client: Any, producer: Producer, path: str | Path
) -> tuple[int, set[tuple[str, str]]]:
    """Append every line of ``path`` to the streams; returns (lines, (tenant, lead) seen)."""
    leads: set[tuple[str, str]] = set()
    count = 0
    pipe = client.pipeline(transaction=False)
    with open(path, "rb") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            count += 1
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                payload = msgpack.packb(obj, use_bin_type=True)
                producer.send_raw(payload, producer.partition(obj), pipe)
                lead = obj.get("lead_id") or (
                    f"~{obj['visitor_id']}" if obj.get("visitor_id") else None
                )
                if isinstance(lead, str | int) and lead != "":
                    leads.add((str(obj.get("tenant") or "default"), str(lead)))
            else:
                producer.send_json(line, pipe)
            if count % _CHUNK == 0:
                pipe.execute()
    pipe.execute()
    return count, leads


def replay_file(
    events_path: str,
    scores_out: str,
    *,
    alerts_out: str | None = None,
    redis_url: str = "",
    config: str | None = None,
    workers: int = 1,
    settings: Settings | None = None,
) -> int:
    """Replay ``events_path``; returns the process exit code (0 on success)."""
    settings = settings or load_settings(config)
    url, server = resolve_url(redis_url)
    try:
        client = connect(url, settings.redis.retries, settings.redis.socket_timeout_s)
        names = StreamNames(settings.redis.key_prefix, settings.streams.partitions)
        if client.exists(names.positions) or client.exists(names.events(0)):
            raise ConfigError(
                f"redis.key_prefix: {settings.redis.key_prefix!r} already holds leadpulse data "
                f"at {url}; replay into an empty database or another prefix "
                "(LEADPULSE__REDIS__KEY_PREFIX)"
            )
        parts = build_parts(settings, client)
        producer = Producer(client, parts.names, maxlen=max(settings.streams.maxlen, 10**9))
        t0 = time.perf_counter()
        count, leads = load_events(client, producer, events_path)
        t1 = time.perf_counter()
        run_flow(build_flow(parts, bounded=True), workers=workers)
        t2 = time.perf_counter()
        scores = read_scores(client, settings.redis.key_prefix, sorted(leads))
        with open(scores_out, "w") as out:
            for record in scores:
                out.write(json.dumps(record, sort_keys=True) + "\n")
        alerts = read_alerts(client, parts.names)
        if alerts_out:
            with open(alerts_out, "w") as out:
                for alert in alerts:
                    out.write(json.dumps(alert, sort_keys=True) + "\n")
        rejected = client.xlen(parts.names.dead_letter)
        rate = count / (t2 - t1) if t2 > t1 else 0.0
        print(
            f"replayed {count} events ({rejected} rejected) for {len(scores)} leads: "
            f"{len(alerts)} alerts; dataflow {t2 - t1:.2f} s = {rate:,.0f} events/s "
            f"(loading the streams took {t1 - t0:.2f} s)",
            file=sys.stderr,
        )
        return 0
    finally:
        if server is not None:
            server.stop()
