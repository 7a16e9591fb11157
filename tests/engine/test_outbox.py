"""The partition layout's outbox when a batch's commit lands but its reply is lost: the
batch is not applied again (``Processor.process_retrying``), and what it left in its
partition's outbox (labels for the trainer, hand-overs) still goes on at once."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest
import redis

from benchmarks.simulator import SimConfig, generate
from engine.app import build_parts
from engine.events import partition_of
from engine.keys import ModelKeys, outbox_key
from engine.sinks import Committer


def test_a_batch_whose_reply_was_lost_still_sends_its_outbox(
    client: redis.Redis, make_settings: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = {"key_prefix": prefix, "key_layout": "partition", "outage_backoff_cap_s": 0.05}
    settings = make_settings(streams={"partitions": 2}, redis=layout)
    parts = build_parts(settings, client)
    events = list(generate(SimConfig(seed=5, leads=30, days=30.0, tenant="sim")))
    assert any(e["type"] == "appointment_set" for e in events)  # outcomes: labels
    base = int(time.time() * 1000)
    entries = [
        (partition_of("sim", e["lead_id"], 2), f"{base}-{i}".encode(),
         {b"e": msgpack.packb(e, use_bin_type=True)})
        for i, e in enumerate(events)
    ]  # fmt: skip
    real, lost = Committer._after_sharded, []

    def reply_lost(self: Committer, fx: Any, names: Any, sent: bool) -> None:
        if fx.labels and not lost:  # committed; the reply never came back
            lost.append(len(fx.labels))
            raise redis.ConnectionError("connection lost after EXEC")
        real(self, fx, names, sent)

    monkeypatch.setattr(Committer, "_after_sharded", reply_lost)
    names = parts.names
    for lo in range(0, len(entries), 500):
        parts.processor.process_retrying(entries[lo : lo + 500])
        if lost:  # right after the batch whose reply was lost: its outbox went on
            assert all(client.xlen(outbox_key(names.of(p))) == 0 for p in range(2))
            break
    assert lost  # the lost reply happened, to a batch with labels
    ids = [msgpack.unpackb(f[b"l"], raw=False)["id"]
           for _, f in client.xrange(ModelKeys(prefix).labels)]  # fmt: skip
    assert ids and len(ids) == len(set(ids))  # every label once
