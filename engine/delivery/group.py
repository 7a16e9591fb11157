"""One stream read in delivery's consumer group (the alerts, the bucket changes).

Its own pending entries come first after a restart (a crash left them read but not
acknowledged), then new ones; an entry is acknowledged (``XACK``) only when the work it
started has finished; entries a dead consumer left pending longer than the idle time
are taken over (:meth:`GroupStream.reclaim`). At-least-once in: what an entry starts
must be idempotent (receipts, per-delivery ids).
"""

from __future__ import annotations

from typing import Any

import redis

__all__ = ["GroupStream", "Row", "stream_id"]

Row = tuple[str, dict[bytes, bytes]]


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def stream_id(sid: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a pair that orders like the stream ("0-0" for anything else)."""
    ms, _, seq = sid.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


class GroupStream:
    """``XREADGROUP`` / ``XACK`` / ``XAUTOCLAIM`` of one stream for one consumer."""

    def __init__(self, client: Any, stream: str, group: str, consumer: str, count: int) -> None:
        self._r = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.count = count
        self.inflight: set[str] = set()  # read, work running: acknowledged when it ends
        self.pending_done = False  # own pending entries (a crash's) have been read again
        self.at_end = False  # the last read reached the end of the stream (then)
        self._pending_from = "0"  # own pending entries are read again after this id

    def ensure(self) -> None:
        try:
            self._r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, block_ms: int | None) -> list[Row]:
        """Own pending entries first (after a restart; each once: the read moves past
        them), then new ones (``block_ms`` None: do not block)."""
        while not self.pending_done:
            reply = self._r.xreadgroup(
                self.group, self.consumer, {self.stream: self._pending_from}, count=self.count
            )
            raw = reply[0][1] if reply else []
            if not raw:
                self.pending_done = True
                break
            self._pending_from = _text(raw[-1][0])
            self.ack([_text(sid) for sid, fields in raw if not fields])  # trimmed meanwhile
            rows = [(_text(sid), fields) for sid, fields in raw if fields]
            if rows:
                self.at_end = False
                return rows
        reply = self._r.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=self.count, block=block_ms
        )
        rows = reply[0][1] if reply else []
        self.at_end = len(rows) < self.count
        return [(_text(sid), fields) for sid, fields in rows]

    def reclaim(self, idle_s: float) -> list[Row]:
        """Entries a dead consumer left pending for ``idle_s``; keeps ours alive."""
        if self.inflight:  # reset the idle time of entries still being worked on here
            self._r.xclaim(
                self.stream, self.group, self.consumer, 0, sorted(self.inflight), justid=True
            )
        reply = self._r.xautoclaim(
            self.stream, self.group, self.consumer, int(idle_s * 1000), "0-0", count=self.count
        )
        rows = [(_text(sid), fields) for sid, fields in reply[1] if fields]
        return [(sid, f) for sid, f in rows if sid not in self.inflight]

    def ack(self, ids: list[str]) -> None:
        if ids:
            self._r.xack(self.stream, self.group, *ids)

    def read_up_to(self, sid: str) -> bool:
        """Has the group read every entry up to ``sid``? (its ``last-delivered-id`` is
        there, or nothing is left unread: ``sid`` was trimmed, or the stream is new)."""
        try:
            groups = self._r.xinfo_groups(self.stream)
        except redis.ResponseError:
            return True  # no stream: nothing to read
        for g in groups:
            if _text(g["name"]) == self.group:
                if stream_id(_text(g["last-delivered-id"])) >= stream_id(sid):
                    return True
                return g.get("lag") == 0
        return False

    def lag(self) -> int | None:
        """Entries not read by the group yet (Redis 7), None when unknown."""
        try:
            for g in self._r.xinfo_groups(self.stream):
                if _text(g["name"]) == self.group and g.get("lag") is not None:
                    return int(g["lag"])
        except redis.ResponseError:
            pass
        return None
