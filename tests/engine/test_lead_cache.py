"""The worker's lead cache: trusted because its worker is the only writer of its leads.

- ``leadpulse merge`` between two batches only queues a merge entry; the worker folds it
  in its own cache, so the merged history is kept and nothing is overwritten.
- A batch that fails before its commit leaves the cache empty: what Redis committed is
  what the next batch starts from.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from engine.app import build_parts
from engine.merge_cli import queue_merge
from features.state import read_record
from features.store import lead_key

T0 = 1_767_225_600.0


def _entries(events: list[dict[str, Any]], start: int) -> list[Any]:
    return [
        (0, f"{start + i}-0".encode(), {b"e": msgpack.packb(e, use_bin_type=True)})
        for i, e in enumerate(events)
    ]


def ev(eid: str, lead: str, etype: str, ts: float) -> dict[str, Any]:
    return {"event_id": eid, "lead_id": lead, "type": etype, "ts": ts, "tenant": "t"}


def _saves(client: Any, prefix: str, lead: str) -> int:
    return read_record(client.get(lead_key(prefix, "t", lead, "f"))).counts["saves"]


def test_a_merge_is_folded_by_the_worker_that_caches_the_leads(
    client: Any, make_settings: Any, prefix: str
) -> None:
    settings = make_settings(streams={"partitions": 1})
    parts = build_parts(settings, client)
    parts.processor.process_retrying(
        _entries([ev("a1", "A", "property_save", T0), ev("b1", "B", "property_save", T0)], 1)
    )
    _, _, sid = queue_merge(client, parts.names, "t", "A", "B")  # `leadpulse merge`
    assert _saves(client, prefix, "A") == 1  # queued only
    (merge,) = client.xrange(parts.names.events(0), min=sid, max=sid)
    parts.processor.process_retrying([(0, merge[0], merge[1])])
    assert _saves(client, prefix, "A") == 2
    parts.processor.process_retrying(_entries([ev("a2", "A", "property_save", T0 + 60)], 10**13))
    assert _saves(client, prefix, "A") == 3  # 1 + B's 1 + the new one
    assert client.exists(lead_key(prefix, "t", "B", "f")) == 0


def test_a_failed_batch_leaves_only_what_redis_committed(
    client: Any, make_settings: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(streams={"partitions": 1})
    parts = build_parts(settings, client)
    parts.processor.process(_entries([ev("a1", "A", "property_save", T0)], 1))

    def boom(fx: Any) -> None:
        raise RuntimeError("the commit never happened")

    monkeypatch.setattr(parts.processor._commit, "commit", boom)
    with pytest.raises(RuntimeError):
        parts.processor.process(_entries([ev("a2", "A", "property_save", T0 + 1)], 2))
    monkeypatch.undo()
    assert _saves(client, prefix, "A") == 1
    parts.processor.process(_entries([ev("a2", "A", "property_save", T0 + 1)], 2))
    assert _saves(client, prefix, "A") == 2  # applied once, on the committed state
