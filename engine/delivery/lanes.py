"""Delivery's reads of one shard's streams: alerts, bucket changes and follow-up steps.

In the deployment key layout there is one lane (``{lp}:alerts``, ``{lp}:buckets``,
``{lp}:cadence``); in the slot-per-partition layout one per partition tag (``{lp.N.k}:alerts``
...: ``engine/keys.py``), each read in delivery's consumer group on its own and polled in
turn (:func:`lanes_of`). A lead's alerts and bucket changes are on its partition's lane,
and a change's ``after`` names the last alert of *its* lane's stream, so commit order is
kept lane by lane (:meth:`Lane.read_merged`); an entry is acknowledged on the stream it
came from (the lane's :class:`GroupStream`).
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import msgpack

from engine.delivery.group import GroupStream, Row, stream_id
from engine.delivery.targets import BucketChange, parse_change
from engine.keys import StreamNames
from engine.shards import shard_names

__all__ = ["Lane", "Run", "lanes_of"]

log = logging.getLogger(__name__)

#: A run of alerts (stream id, alert) or of bucket changes, in commit order.
Run = tuple[str, list[Any]]


class Lane:
    """One shard's streams in delivery's group, alerts and changes merged in commit order."""

    def __init__(self, client: Any, names: StreamNames, group: str, consumer: str, count: int):
        self.alerts_in = GroupStream(client, names.alerts, group, consumer, count)
        self.changes_in = GroupStream(client, names.bucket_changes, group, consumer, count)
        # follow-up steps (engine/cadence): tasks to the feed, messages to the webhook and
        # the targets with the cadence trigger
        self.steps_in = GroupStream(client, names.cadence, group, consumer, count)
        self.count = count
        self._held: collections.deque[BucketChange] = collections.deque()
        self._alerts_buf: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._changes_caught_up = False  # changes read to the end since the last alerts read
        self._alerts_to = "0-0"  # the alerts stream has been read (and handled) up to here

    def ensure(self, steps: bool) -> None:
        self.alerts_in.ensure()
        self.changes_in.ensure()
        if steps:
            self.steps_in.ensure()

    def read_alerts(self, block_ms: int | None) -> list[tuple[str, dict[str, Any]]]:
        """Own pending entries first (after a restart), then new ones."""
        rows = self.alerts_in.read(block_ms)
        if rows:  # read in id order: every alert up to the last one has been read
            self._alerts_to = max(self._alerts_to, rows[-1][0], key=stream_id)
        return decode_alerts(rows)

    def reclaim(self, idle_s: float) -> list[tuple[str, dict[str, Any]]]:
        """Alerts a dead consumer left pending for ``idle_s``; keep ours alive."""
        return decode_alerts(self.alerts_in.reclaim(idle_s))

    def read_merged(self, block_ms: int | None) -> list[Run]:
        """Alerts and bucket changes read so far, in the order their batches committed, as
        runs of one kind (``("alerts", [(id, alert)])``, ``("changes", [BucketChange])``).

        A change's ``after`` is the last alert id when its batch committed: an alert goes
        before a change iff its id <= the change's ``after``. What cannot be placed yet
        waits here: a change until the alerts up to its ``after`` have been read, an
        alert until the changes stream has been read to its end after it."""
        if not self._alerts_buf:
            rows = self.read_alerts(block_ms)
            if rows:
                self._alerts_buf.extend(rows)
                self._changes_caught_up = False
        if len(self._held) < self.count:
            self._read_changes()
        return self._runs()

    def _read_changes(self) -> None:
        """Read bucket changes without blocking; entries that are not one are acked."""
        bad = []
        for sid, fields in self.changes_in.read(None):
            change = parse_change(sid, fields)
            if change is None:
                log.warning("bucket-changes entry %s is not one; acknowledged, skipped", sid)
                bad.append(sid)
            else:
                self._held.append(change)
        self.changes_in.ack(bad)
        if self.changes_in.at_end:
            self._changes_caught_up = True

    def _runs(self) -> list[Run]:
        runs: list[Run] = []
        while (kind := self._next_kind()) is not None:
            item = self._alerts_buf.popleft() if kind == "alerts" else self._held.popleft()
            if runs and runs[-1][0] == kind:
                runs[-1][1].append(item)
            else:
                runs.append((kind, [item]))
        return runs

    def _next_kind(self) -> str | None:
        """What goes next: "alerts", "changes", or None (wait for more reads)."""
        alerts, held = self._alerts_buf, self._held
        if alerts and held:
            return "alerts" if stream_id(alerts[0][0]) <= stream_id(held[0].after) else "changes"
        if alerts:
            return "alerts" if self._changes_caught_up else None
        if held:
            return "changes" if self._alerts_read(held[0].after) else None
        return None

    def _alerts_read(self, after: str) -> bool:
        """Has the alerts stream been read up to ``after`` (by this group)? Asks Redis
        only when this consumer's own reads do not tell (another consumer, trimming)."""
        if stream_id(after) <= stream_id(self._alerts_to):
            return True
        if not self.alerts_in.pending_done:
            return False  # our own pending alerts (a crash's) go first
        if self.alerts_in.read_up_to(after):
            self._alerts_to = after
            return True
        return False

    def reclaim_changes(self, idle_s: float) -> list[BucketChange]:
        """Bucket changes a dead consumer left pending for ``idle_s``."""
        rows = self.changes_in.reclaim(idle_s)
        changes = [(sid, parse_change(sid, fields)) for sid, fields in rows]
        self.changes_in.ack([sid for sid, c in changes if c is None])
        return [c for _, c in changes if c is not None]

    def inflight(self) -> int:
        """Alerts and changes read whose work is still running."""
        return len(self.alerts_in.inflight) + len(self.changes_in.inflight)


def lanes_of(client: Any, names: StreamNames, group: str, consumer: str, count: int) -> list[Lane]:
    """One lane per distinct shard of the deployment (one in the deployment layout)."""
    return [Lane(client, shard, group, consumer, count) for shard in shard_names(names)]


def lane_block(block_ms: int | None, lanes: int) -> int | None:
    """How long one lane's read may block when ``lanes`` are polled in turn: a share of
    ``block_ms`` (at least 1 ms: 0 would block for ever), so a round stays within it."""
    if block_ms is None or lanes <= 1:
        return block_ms
    return max(1, block_ms // lanes)


def decode_alerts(rows: list[Row]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for text, fields in rows:
        try:
            out.append((text, msgpack.unpackb(fields[b"a"], raw=False)))
        except (KeyError, ValueError, msgpack.UnpackException):
            log.warning("alerts entry %s is not an alert; acknowledged and skipped", text)
            out.append((text, {}))
    return out
